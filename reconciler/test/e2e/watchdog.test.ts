/**
 * Issue 18: the watchdog (functions/src/watchdog.ts) against a real reconciler process, the
 * Firestore emulator and the simulator. The Functions emulator does not fire schedules (and the
 * Pub/Sub emulator that would carry them cannot run offline), so the scheduled function's handler,
 * `runWatchdog`, is called here directly against the real Firestore emulator, as Cloud Scheduler
 * would call it every minute.
 * - kill -9: within one run every account the dead process owned is marked, one ReconcilerSilent
 *   incident is open; restarted on the same disk, its statuses lose the marks and the next run
 *   resolves the incident.
 * - Firestore black-holed while the process lives and WhatsApp stays connected: the marks are
 *   removed by the reconciler's next heartbeat although no status changed.
 */
import { instanceIncidentId, statusLiveness } from '@wafleet/contract';
import type { Timestamp } from 'firebase-admin/firestore';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runWatchdog, type WatchdogOptions, type WatchdogRun } from '../../../functions/src/watchdog.ts';
import { TcpProxy } from '../../../test/support/tcp-proxy.ts';
import { waitFor } from '../helpers.ts';
import { scanPublishedQr, startHarness, type Harness } from './harness.ts';
import { spawnReconciler, type ReconcilerProcess } from './process.ts';

const ids = ['wd-01', 'wd-02'];
const numberOf = (id: string) => `155500092${id.slice(-2)}`;
/** The schedule's minute, shortened: the grace is the heartbeat's TTL plus this. */
const EXTRA_MS = 1_000;

let h: Harness;
beforeAll(async () => {
  h = await startHarness('watchdog');
  const seed = await h.startReconciler({ instanceId: 'wd-seed' });
  await Promise.all(ids.map((id) => h.createAccount(id)));
  await Promise.all(ids.map((id) => scanPublishedQr(h, id, numberOf(id), 90_000)));
  await Promise.all(ids.map((id) => h.waitForPhase(id, 'connected', 90_000)));
  await seed.stop('handing over to the watchdog tests');
}, 240_000);
afterAll(() => h.close());

const ownerOf = (s: Record<string, unknown>) => (s.owner as { instanceId?: string } | null)?.instanceId;
const openConnections = (id: string) => h.sim.deviceStats().filter((d) => d.deviceJid.startsWith(`${numberOf(id)}:`)).reduce((n, d) => n + d.openConnections, 0);

async function allConnected(owner: string, after: number): Promise<void> {
  await Promise.all(
    ids.map((id) => h.waitForPhase(id, (s) => s.phase === 'connected' && ownerOf(s) === owner && !s.stale && (s.lastConnectedAt as Timestamp).toMillis() >= after, 60_000)),
  );
}

/** Runs the watchdog, as its schedule would, until a run marks `instanceId`'s accounts. */
async function runUntilMarked(instanceId: string, opts: WatchdogOptions = {}): Promise<WatchdogRun> {
  return waitFor(
    async () => {
      const run = await runWatchdog(h.db, { extraGraceMs: EXTRA_MS, ...opts });
      return run.silent.includes(instanceId) && run.marked > 0 ? run : undefined;
    },
    { timeoutMs: 45_000, intervalMs: 500, label: `a watchdog run that marks ${instanceId}` },
  );
}

const incident = async (instanceId: string) => (await h.db.doc(`incidents/${instanceIncidentId(instanceId, 'ReconcilerSilent')}`).get()).data();

async function stopChild(rec: ReconcilerProcess, signal: NodeJS.Signals): Promise<void> {
  if (rec.child.exitCode === null && rec.child.signalCode === null) rec.kill(signal);
  await rec.exited;
}

describe('the watchdog', () => {
  it('kill -9: one run marks every owned account and opens one incident; the restart clears them', async () => {
    const sessionsPath = await h.newSessionsDir();
    const spawn = () => spawnReconciler({ projectId: h.projectId, sim: h.sim, sessionsPath, instanceId: 'wd-kill' });
    const t0 = Date.now();
    let rec = spawn();
    try {
      await allConnected('wd-kill', t0);
      expect(await runWatchdog(h.db, { extraGraceMs: EXTRA_MS })).toMatchObject({ live: ['wd-kill'], silent: [], marked: 0, unowned: 0 });

      rec.kill('SIGKILL');
      await rec.exited;
      const run = await runUntilMarked('wd-kill');
      expect(run).toMatchObject({ silent: ['wd-kill'], marked: ids.length, unowned: 0, incidentsRaised: 1 });
      const heartbeat = (await h.db.doc('reconcilers/wd-kill').get()).data();
      for (const id of ids) {
        const status = (await h.status(id))!;
        expect(status.stale, id).toMatchObject({ reason: 'ReconcilerSilent', instanceId: 'wd-kill' });
        // The rest of the document is what the dead process last wrote.
        expect(status.phase, id).toBe('connected');
        expect(statusLiveness(status as never, heartbeat as never, Date.now(), EXTRA_MS)).toMatchObject({ live: false, reason: 'ReconcilerSilent' });
      }
      expect(await incident('wd-kill')).toMatchObject({ open: true, count: 1, instanceId: 'wd-kill', severity: 'critical' });
      // The next run finds nothing new to do: no second incident, no second mark.
      expect(await runWatchdog(h.db, { extraGraceMs: EXTRA_MS })).toMatchObject({ marked: 0, incidentsRaised: 0 });

      const back = Date.now();
      rec = spawn();
      await allConnected('wd-kill', back);
      const after = await runWatchdog(h.db, { extraGraceMs: EXTRA_MS });
      expect(after).toMatchObject({ live: ['wd-kill'], silent: [], marked: 0, incidentsResolved: 1 });
      expect(await incident('wd-kill')).toMatchObject({ open: false, count: 1 });
      for (const id of ids) expect((await h.status(id))!.stale, id).toBeUndefined();
    } catch (err) {
      process.stderr.write(rec.output().slice(-20_000));
      throw err;
    } finally {
      await stopChild(rec, 'SIGTERM');
    }
  }, 240_000);

  it('Firestore black-holed while WhatsApp stays up: marked, then cleared by the next heartbeat though no status changed', async () => {
    const proxy = TcpProxy.forHostPort(process.env.FIRESTORE_EMULATOR_HOST!);
    await proxy.start();
    const sessionsPath = await h.newSessionsDir();
    const ttl = 90_000;
    // A TTL long enough that the process never fences: WhatsApp stays connected and no status
    // changes, so only the heartbeat's reaction can remove the marks. The watchdog is run with its
    // clock a TTL ahead, so that a heartbeat a second old already counts as silent.
    const ahead: WatchdogOptions = { now: () => Date.now() + ttl, extraGraceMs: EXTRA_MS };
    const rec = spawnReconciler({
      projectId: h.projectId,
      sim: h.sim,
      sessionsPath,
      instanceId: 'wd-hole',
      env: { FIRESTORE_EMULATOR_HOST: proxy.address, LEASE_TTL_MS: String(ttl), LEASE_RENEW_MS: '2000' },
    });
    try {
      const t0 = Date.now();
      await allConnected('wd-hole', t0);
      const before = new Map(await Promise.all(ids.map(async (id) => [id, ((await h.status(id))!.lastConnectedAt as Timestamp).toMillis()] as const)));

      proxy.blackhole();
      const run = await runUntilMarked('wd-hole', ahead);
      expect(run.marked).toBe(ids.length);
      for (const id of ids) expect((await h.status(id))!.stale, id).toMatchObject({ reason: 'ReconcilerSilent', instanceId: 'wd-hole' });
      for (const id of ids) expect(openConnections(id), id).toBe(1);

      proxy.heal();
      await Promise.all(
        ids.map((id) =>
          h.waitForPhase(id, (s) => !s.stale, 45_000).then((s) => {
            // The same connection: the mark went because the owner spoke again, not because the status changed.
            expect(s.phase, id).toBe('connected');
            expect((s.lastConnectedAt as Timestamp).toMillis(), id).toBe(before.get(id));
          }),
        ),
      );
      expect((await h.db.doc('reconcilers/wd-hole').get()).get('silentSince')).toBeUndefined();
      expect(rec.output()).toContain('the watchdog had marked this instance silent');
      const after = await runWatchdog(h.db, { extraGraceMs: EXTRA_MS });
      expect(after).toMatchObject({ silent: [], marked: 0, incidentsResolved: 1 });
      expect(h.sim.totalConflicts()).toBe(0);
    } catch (err) {
      process.stderr.write(rec.output().slice(-20_000));
      throw err;
    } finally {
      await stopChild(rec, 'SIGTERM');
      await proxy.stop();
    }
  }, 240_000);
});
