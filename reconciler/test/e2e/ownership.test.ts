/**
 * Issue 4, done-when 3 and 8: two reconcilers started together and a redeploy overlap never open
 * two connections of one device; a 30 s Firestore outage leaves sessions connected and status
 * catches up.
 */
import { Timestamp } from 'firebase-admin/firestore';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TcpProxy } from '../../../test/support/tcp-proxy.ts';
import { waitFor } from '../helpers.ts';
import { scanPublishedQr, startHarness, type Harness } from './harness.ts';
import { spawnReconciler } from './process.ts';

const ids = ['o-01', 'o-02', 'o-03', 'o-04', 'o-05', 'o-06'];
const numberOf = (id: string) => `155500080${id.slice(-2)}`;

let h: Harness;
beforeAll(async () => {
  h = await startHarness('owner');
  const first = await h.startReconciler({ instanceId: 'vm-a' });
  await Promise.all(ids.map((id) => h.createAccount(id)));
  await Promise.all(ids.map((id) => scanPublishedQr(h, id, numberOf(id), 90_000)));
  await Promise.all(ids.map((id) => h.waitForPhase(id, 'connected', 90_000)));
  await first.stop('handing over to the ownership tests');
}, 240_000);
afterAll(() => h.close());

const openConnections = (id: string) => h.sim.deviceStats().filter((d) => d.deviceJid.startsWith(`${numberOf(id)}:`)).reduce((n, d) => n + d.openConnections, 0);

async function allConnectedAfter(t: number, timeoutMs = 60_000): Promise<void> {
  await Promise.all(ids.map((id) => h.waitForPhase(id, (s) => s.phase === 'connected' && (s.lastConnectedAt as Timestamp).toMillis() >= t, timeoutMs)));
}

describe('one owner per device', () => {
  it('two reconcilers started together split the fleet without a single conflict', async () => {
    const t = Date.now();
    const sessionsA = (await h.db.doc('reconcilers/vm-a').get()).get('storagePath') as string;
    const [a, b] = await Promise.all([
      h.startReconciler({ instanceId: 'vm-a', sessionsPath: sessionsA }),
      h.startReconciler({ instanceId: 'vm-b' }), // another VM: an empty disk, restores from backups
    ]);
    await allConnectedAfter(t);
    for (const id of ids) expect(openConnections(id)).toBe(1);
    const owners = await Promise.all(ids.map(async (id) => ((await h.status(id))!.owner as { instanceId: string }).instanceId));
    expect(new Set(owners).size).toBeGreaterThanOrEqual(1);
    expect(owners.every((o) => o === 'vm-a' || o === 'vm-b')).toBe(true);
    expect(h.sim.totalConflicts()).toBe(0);
    await Promise.all([a.stop('test'), b.stop('test')]);
  }, 120_000);

  it('a redeploy overlap: the new process waits for the old one, then takes over at once', async () => {
    const sessionsPath = await h.newSessionsDir();
    const t0 = Date.now();
    const old = spawnReconciler({ projectId: h.projectId, sim: h.sim, sessionsPath, instanceId: 'deploy-1' });
    await allConnectedAfter(t0);
    // The new process starts while the old one still runs, on the same disk.
    const next = spawnReconciler({ projectId: h.projectId, sim: h.sim, sessionsPath, instanceId: 'deploy-2' });
    await waitFor(() => next.output().includes('another reconciler still uses this sessions directory'), { timeoutMs: 30_000, label: 'new process waiting for the lock' });
    const t1 = Date.now();
    old.kill('SIGTERM');
    expect((await old.exited).code).toBe(0);
    await allConnectedAfter(t1);
    for (const id of ids) expect(((await h.status(id))!.owner as { instanceId: string }).instanceId).toBe('deploy-2');
    expect(h.sim.totalConflicts()).toBe(0);
    next.kill('SIGTERM');
    expect((await next.exited).code).toBe(0);
  }, 180_000);
});

describe('Firestore outage', () => {
  it('sessions stay connected for 30 s without Firestore, and status catches up afterwards', async () => {
    const proxy = TcpProxy.forHostPort(process.env.FIRESTORE_EMULATOR_HOST!);
    await proxy.start();
    const sessionsPath = await h.newSessionsDir();
    const t0 = Date.now();
    const rec = spawnReconciler({
      projectId: h.projectId,
      sim: h.sim,
      sessionsPath,
      instanceId: 'outage',
      env: { FIRESTORE_EMULATOR_HOST: proxy.address, LEASE_TTL_MS: '90000', LEASE_RENEW_MS: '5000', HTTP_PORT: '0' },
    });
    try {
      await allConnectedAfter(t0);
      const logins = h.sim.deviceStats().reduce((n, d) => n + d.logins, 0);
      proxy.cut();
      const cutAt = Date.now();
      // While Firestore is away, one account reconnects: its status cannot be written yet.
      const fault = h.sim.injectFault({ kind: 'stream-error', code: 503, target: numberOf('o-03') });
      await waitFor(() => h.sim.events({ type: 'login' }).some((e) => e.at > cutAt && e.deviceJid?.startsWith(numberOf('o-03'))), { timeoutMs: 20_000, label: 'o-03 logged in again' });
      h.sim.clearFaults(fault);
      // The outage lasts 30 s, measured from the cut.
      await waitFor(() => Date.now() - cutAt >= 30_000, { timeoutMs: 40_000, intervalMs: 250, label: '30 s outage' });
      for (const id of ids) expect(openConnections(id), id).toBe(1);
      expect(rec.child.exitCode).toBeNull();
      proxy.restore();
      await h.waitForPhase('o-03', (s) => s.phase === 'connected' && (s.lastConnectedAt as Timestamp).toMillis() > cutAt, 60_000);
      await h.waitForPhase('o-03', (s) => (s.lastDisconnect as { code: number } | null)?.code === 503, 5_000);
      // Only o-03 logged in again: nobody else was disturbed by the outage.
      expect(h.sim.deviceStats().reduce((n, d) => n + d.logins, 0)).toBe(logins + 1);
      expect(h.sim.totalConflicts()).toBe(0);
    } finally {
      rec.kill('SIGTERM');
      await rec.exited;
      await proxy.stop();
    }
  }, 240_000);
});
