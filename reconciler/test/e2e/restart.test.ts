/**
 * Issue 4, done-when 2: 30 linked accounts survive a graceful restart (SIGTERM) and a crash
 * (kill -9) of the reconciler process: all connected again, no QR, no conflict.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers.ts';
import { scanPublishedQr, startHarness, type Harness } from './harness.ts';
import { spawnReconciler, type ReconcilerProcess } from './process.ts';

const N = 30;
const ids = Array.from({ length: N }, (_, i) => `acc-${String(i + 1).padStart(2, '0')}`);
let h: Harness;
let sessionsPath: string;
let running: ReconcilerProcess | null = null;

beforeAll(async () => {
  h = await startHarness('restart');
  sessionsPath = await h.newSessionsDir();
});
afterAll(async () => {
  running?.kill('SIGKILL');
  await h.close();
});

async function allConnected(sinceMs: number): Promise<void> {
  await waitFor(
    async () => {
      const snap = await h.db.collection('accountStatus').get();
      const ok = snap.docs.filter((d) => d.get('phase') === 'connected' && (d.get('lastConnectedAt')?.toMillis() ?? 0) >= sinceMs);
      return ok.length === N;
    },
    { timeoutMs: 150_000, intervalMs: 250, label: `${N} accounts connected` },
  );
}

async function qrDocs(): Promise<number> {
  return (await h.db.collection('accountQr').get()).size;
}

/**
 * A lease TTL of ten minutes: a takeover within the wait below can only come from the same-disk
 * rule (host lock held), never from waiting out an expiry.
 */
const spawnVm1 = () => spawnReconciler({ projectId: h.projectId, sim: h.sim, sessionsPath, instanceId: 'vm-1', env: { LEASE_TTL_MS: '600000' } });

/** Starts vm-1 again and expects every account back online from its disk: no QR, no conflict. */
async function restartAndExpectAllConnected(): Promise<void> {
  const restartAt = Date.now();
  running = spawnVm1();
  await allConnected(restartAt);
  expect(await qrDocs()).toBe(0);
  expect(h.sim.totalConflicts()).toBe(0);
}

describe(`restarting with ${N} linked accounts`, () => {
  it('links all accounts', async () => {
    running = spawnVm1();
    await Promise.all(ids.map((id) => h.createAccount(id)));
    await Promise.all(ids.map((id, i) => scanPublishedQr(h, id, `1555000${String(4000 + i)}`, 180_000)));
    await allConnected(0);
    // The QR is cleared by its own write after the status one: under load it can land a moment later.
    await waitFor(async () => (await qrDocs()) === 0, { timeoutMs: 15_000, label: 'every QR cleared after linking' });
  }, 300_000);

  it('SIGTERM: exits 0 promptly, releases leases, and a restart reconnects all with no QR', async () => {
    const started = Date.now();
    running!.kill('SIGTERM');
    const exit = await running!.exited;
    expect(exit.code, running!.output().slice(-3000)).toBe(0);
    expect(exit.at - started).toBeLessThan(15_000);
    const leases = await h.db.collection('leases').get();
    expect(leases.docs.every((d) => d.get('holder') === null)).toBe(true);
    await restartAndExpectAllConnected();
  }, 180_000);

  it('kill -9: a restart on the same disk takes over at once and reconnects all with no QR', async () => {
    running!.kill('SIGKILL');
    await running!.exited;
    await restartAndExpectAllConnected();
  }, 180_000);

  it('a phone removing one device logs out only that account; the other 29 stay connected', async () => {
    const victim = ids[6]!;
    const phone = h.sim.phones().find((p) => p.number === '15550004006')!;
    const before = new Map((await h.db.collection('accountStatus').get()).docs.map((d) => [d.id, (d.get('lastConnectedAt') as { toMillis(): number }).toMillis()]));
    phone.removeDevice(phone.linkedDevices()[0]!.deviceJid);
    await h.waitForPhase(victim, 'loggedOut');
    const after = await h.db.collection('accountStatus').get();
    for (const d of after.docs) {
      if (d.id === victim) continue;
      expect(d.get('phase'), d.id).toBe('connected');
      // Not even a reconnect: the same connection as before.
      expect((d.get('lastConnectedAt') as { toMillis(): number }).toMillis(), d.id).toBe(before.get(d.id));
    }
    running!.kill('SIGTERM');
    expect((await running!.exited).code).toBe(0);
    running = null;
  }, 60_000);
});
