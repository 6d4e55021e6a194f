/**
 * Issue 16, items 2 and 6: a reconciler whose Firestore connection goes silent. The reconciler is
 * a child process whose Firestore traffic goes through a TCP proxy; WhatsApp is the simulator.
 * - Black-holed flows (a NAT entry dropped): after the network returns, the heartbeat, the status
 *   writes and the accounts listener work again within seconds, without a restart.
 * - A Firestore that hangs (accepts, never answers): the owner closes its sockets before its
 *   leases may lapse, so a second reconciler takes over without one moment of two connections.
 */
import { Timestamp } from 'firebase-admin/firestore';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TcpProxy } from '../../../test/support/tcp-proxy.ts';
import { waitFor } from '../helpers.ts';
import { scanPublishedQr, startHarness, type Harness } from './harness.ts';
import { spawnReconciler, type ReconcilerProcess } from './process.ts';

const ids = ['fc-01', 'fc-02'];
const numberOf = (id: string) => `155500091${id.slice(-2)}`;

let h: Harness;
beforeAll(async () => {
  h = await startHarness('fschan');
  const seed = await h.startReconciler({ instanceId: 'fc-seed' });
  await Promise.all(ids.map((id) => h.createAccount(id)));
  await Promise.all(ids.map((id) => scanPublishedQr(h, id, numberOf(id), 90_000)));
  await Promise.all(ids.map((id) => h.waitForPhase(id, 'connected', 90_000)));
  await seed.stop('handing over to the channel tests');
}, 240_000);
afterAll(() => h.close());

const devicePrefix = (id: string) => `${numberOf(id)}:`;
const openConnections = (id: string) => h.sim.deviceStats().filter((d) => d.deviceJid.startsWith(devicePrefix(id))).reduce((n, d) => n + d.openConnections, 0);
const ownerOf = (s: Record<string, unknown>) => (s.owner as { instanceId?: string } | null)?.instanceId;

async function allConnected(owner: string, after: number, timeoutMs = 60_000): Promise<void> {
  await Promise.all(
    ids.map((id) => h.waitForPhase(id, (s) => s.phase === 'connected' && ownerOf(s) === owner && (s.lastConnectedAt as Timestamp).toMillis() >= after, timeoutMs)),
  );
}

async function heartbeatAt(instanceId: string): Promise<number> {
  return (await h.db.doc(`reconcilers/${instanceId}`).get()).updateTime?.toMillis() ?? 0;
}

async function stopChild(rec: ReconcilerProcess, signal: NodeJS.Signals): Promise<void> {
  if (rec.child.exitCode === null && rec.child.signalCode === null) rec.kill(signal);
  await rec.exited;
}

describe('a Firestore connection that goes silent', () => {
  it('black-holed for 25 s: heartbeat, status and listener work again within seconds of healing', async () => {
    const proxy = TcpProxy.forHostPort(process.env.FIRESTORE_EMULATOR_HOST!);
    await proxy.start();
    const sessionsPath = await h.newSessionsDir();
    const t0 = Date.now();
    // A TTL long enough that the outage never fences: this is about the connection, not the lease.
    const rec = spawnReconciler({
      projectId: h.projectId,
      sim: h.sim,
      sessionsPath,
      instanceId: 'fc-blackhole',
      env: { FIRESTORE_EMULATOR_HOST: proxy.address, LEASE_TTL_MS: '90000', LEASE_RENEW_MS: '5000' },
    });
    try {
      await allConnected('fc-blackhole', t0);
      proxy.blackhole();
      const holeAt = Date.now();
      await waitFor(() => Date.now() - holeAt >= 25_000, { timeoutMs: 35_000, intervalMs: 250, label: '25 s black hole' });
      expect(rec.output()).toContain('heartbeat failed');
      // WhatsApp never noticed.
      for (const id of ids) expect(openConnections(id), id).toBe(1);

      // The flows that were black-holed stay dead, as after a NAT entry is gone; new ones work.
      proxy.heal();
      const healAt = Date.now();
      await waitFor(async () => (await heartbeatAt('fc-blackhole')) > healAt, { timeoutMs: 20_000, intervalMs: 200, label: 'a heartbeat after healing' });
      const heartbeatAfterMs = Date.now() - healAt;

      // The listener is attached again: a spec change is seen and acted on.
      await h.db.doc('accounts/fc-01').update({ desiredState: 'disconnected', updatedAt: Timestamp.now() });
      await h.waitForPhase('fc-01', 'disconnected', 20_000);
      const specSeenAfterMs = Date.now() - healAt;
      await waitFor(() => openConnections('fc-01') === 0, { timeoutMs: 10_000, label: 'fc-01 closed' });
      const back = Date.now();
      await h.db.doc('accounts/fc-01').update({ desiredState: 'connected', updatedAt: Timestamp.now() });
      await h.waitForPhase('fc-01', (s) => s.phase === 'connected' && (s.lastConnectedAt as Timestamp).toMillis() >= back, 30_000);
      await h.waitForPhase('fc-02', (s) => s.phase === 'connected' && ownerOf(s) === 'fc-blackhole', 5_000);
      expect(h.sim.totalConflicts()).toBe(0);
      // The harness routes console.* to its (silent) logger.
      process.stderr.write(`black hole healed: heartbeat after ${heartbeatAfterMs} ms, spec change acted on after ${specSeenAfterMs} ms\n`);
    } catch (err) {
      process.stderr.write(rec.output().slice(-20_000));
      throw err;
    } finally {
      await stopChild(rec, 'SIGTERM');
      await proxy.stop();
    }
  }, 240_000);

  it('hangs: the owner closes its sockets before its leases lapse, and a second reconciler takes over without a conflict', async () => {
    const ttl = 14_600;
    // 5 s renewals: a fence checked only when a beat fails came 19 s after the last good beat,
    // after the TTL; the deadline fence comes at 10 s.
    const lease = { LEASE_TTL_MS: String(ttl), LEASE_RENEW_MS: '5000' };
    const proxy = TcpProxy.forHostPort(process.env.FIRESTORE_EMULATOR_HOST!);
    await proxy.start();
    const sessionsPath = await h.newSessionsDir();
    const t0 = Date.now();
    const rec = spawnReconciler({ projectId: h.projectId, sim: h.sim, sessionsPath, instanceId: 'fc-hang', env: { FIRESTORE_EMULATOR_HOST: proxy.address, ...lease } });
    let second: Awaited<ReturnType<Harness['startReconciler']>> | null = null;
    try {
      await allConnected('fc-hang', t0);
      const conflictsBefore = h.sim.totalConflicts();
      // Firestore stops answering right after a beat landed.
      const before = await heartbeatAt('fc-hang');
      const lastBeat = await waitFor(async () => {
        const at = await heartbeatAt('fc-hang');
        return at > before && at;
      }, { timeoutMs: 15_000, intervalMs: 50, label: 'a heartbeat' });
      proxy.hang();
      const hangAt = Date.now();
      const firstConnections = new Map(
        ids.map((id) => {
          const logins = h.sim.events({ type: 'login' }).filter((e) => e.at < hangAt && e.deviceJid?.startsWith(devicePrefix(id)));
          return [id, logins.at(-1)!.connectionId] as const;
        }),
      );

      second = await h.startReconciler({ instanceId: 'fc-takeover', env: lease });
      await allConnected('fc-takeover', hangAt, 90_000);
      expect(h.sim.totalConflicts()).toBe(conflictsBefore);

      for (const id of ids) {
        const closed = h.sim.events({ type: 'close' }).find((e) => e.connectionId === firstConnections.get(id));
        const takeover = h.sim.events({ type: 'login' }).find((e) => e.at > hangAt && e.deviceJid?.startsWith(devicePrefix(id)));
        expect(closed, `${id}: the first owner's connection closed`).toBeDefined();
        expect(takeover, `${id}: the second owner logged in`).toBeDefined();
        expect(closed!.at, `${id}: closed before the takeover`).toBeLessThan(takeover!.at);
        expect(closed!.at - lastBeat, `${id}: closed before the TTL ran out`).toBeLessThan(ttl);
        process.stderr.write(`${id}: closed ${closed!.at - lastBeat} ms after the last beat, taken over after ${takeover!.at - lastBeat} ms\n`);
      }
      expect(rec.output()).toContain('closing every session before the leases may be taken over');
      for (const id of ids) expect(openConnections(id), id).toBe(1);
    } catch (err) {
      process.stderr.write(rec.output().slice(-20_000));
      throw err;
    } finally {
      // It is fenced and its Firestore hangs: a graceful stop would only wait for timeouts.
      await stopChild(rec, 'SIGKILL');
      await second?.stop('test over');
      await proxy.stop();
    }
  }, 240_000);
});
