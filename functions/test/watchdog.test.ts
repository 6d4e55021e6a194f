/**
 * Issue 18: the watchdog against the real Firestore emulator, with heartbeats and statuses written
 * as the reconciler writes them (the end-to-end test with a real reconciler that is killed and
 * black-holed is reconciler/test/e2e/watchdog.test.ts). Each test has a project of its own.
 */
import { incidentId, instanceIncidentId, statusLiveness } from '@wafleet/contract';
import { initializeApp } from 'firebase-admin/app';
import { FieldValue, getFirestore, Timestamp, type Firestore } from 'firebase-admin/firestore';
import { describe, expect, it } from 'vitest';
import { isolatedProjectId } from '../../test/support/emulators.ts';
import { runWatchdog } from '../src/watchdog.ts';

let n = 0;
function firestore(): Firestore {
  const projectId = isolatedProjectId(`watchdog-${n++}`);
  return getFirestore(initializeApp({ projectId }, projectId));
}

const TTL = 10_000;
const EXTRA = 1_000;

async function heartbeat(db: Firestore, instanceId: string, accounts: string[], opts: { ageMs?: number; stopped?: boolean } = {}): Promise<void> {
  await db.doc(`reconcilers/${instanceId}`).set({
    instanceId,
    incarnation: `inc-${instanceId}`,
    version: 'test',
    host: 'h',
    startedAt: Timestamp.now(),
    heartbeatAt: opts.ageMs === undefined ? FieldValue.serverTimestamp() : Timestamp.fromMillis(Date.now() - opts.ageMs),
    leaseTtlMs: TTL,
    uptimeSec: 1,
    accountsOwned: accounts.length,
    accounts: Object.fromEntries(accounts.map((a) => [a, 'connected'])),
    storagePath: '/s',
    storageFreeBytes: null,
    stoppedAt: opts.stopped ? Timestamp.now() : null,
  });
}

async function account(db: Firestore, id: string, owner: string | null, opts: { statusAgeMs?: number; noStatus?: boolean } = {}): Promise<void> {
  const now = Timestamp.now();
  await db.doc(`accounts/${id}`).set({ displayName: id, desiredState: 'connected', createdAt: now, updatedAt: now, updatedBy: 'test' });
  if (opts.noStatus) return;
  await db.doc(`accountStatus/${id}`).set({
    phase: 'connected',
    reason: 'Connected',
    message: 'Connected to WhatsApp.',
    since: now,
    observedSpecTime: null,
    owner: owner ? { instanceId: owner, epoch: 1 } : null,
    linkedPhoneMasked: null,
    lastConnectedAt: now,
    lastDisconnect: null,
    reconnectAttempt: 0,
    nextRetryAt: null,
    updatedAt: opts.statusAgeMs === undefined ? FieldValue.serverTimestamp() : Timestamp.fromMillis(Date.now() - opts.statusAgeMs),
  });
}

const stale = async (db: Firestore, id: string) => (await db.doc(`accountStatus/${id}`).get()).get('stale') as Record<string, unknown> | undefined;
const ids = (prefix: string, count: number) => Array.from({ length: count }, (_, i) => `${prefix}-${String(i + 1).padStart(3, '0')}`);

describe('watchdog', () => {
  it('when all is well it writes nothing, and its reads do not grow with the fleet (30 vs 100 accounts)', async () => {
    const costs: Array<{ accounts: number; reads: number; writes: number }> = [];
    for (const count of [30, 100]) {
      const db = firestore();
      const accounts = ids('ok', count);
      await Promise.all(accounts.map((a) => account(db, a, 'rec-a')));
      await heartbeat(db, 'rec-a', accounts);
      const run = await runWatchdog(db, { extraGraceMs: EXTRA });
      expect(run).toMatchObject({ live: ['rec-a'], silent: [], marked: 0, unowned: 0, incidentsRaised: 0 });
      costs.push({ accounts: count, reads: run.reads, writes: run.writes });
    }
    expect(costs[0]!.writes).toBe(0);
    expect(costs[1]!.writes).toBe(0);
    expect(costs[1]!.reads).toBe(costs[0]!.reads);
    // Heartbeats (1), open ReconcilerSilent incidents (1, none), the accounts count (1), the AccountsUnowned incident (1).
    expect(costs[0]!.reads).toBe(4);
  });

  it("marks every status a silent instance owns, once, with one deduplicated incident; leaves a live instance's alone", async () => {
    const db = firestore();
    const silent = ids('s', 3);
    const live = ids('l', 2);
    await Promise.all([...silent.map((a) => account(db, a, 'rec-dead')), ...live.map((a) => account(db, a, 'rec-live'))]);
    await heartbeat(db, 'rec-dead', silent, { ageMs: TTL + EXTRA + 5_000 });
    await heartbeat(db, 'rec-live', live);

    const first = await runWatchdog(db, { extraGraceMs: EXTRA });
    expect(first).toMatchObject({ live: ['rec-live'], silent: ['rec-dead'], marked: 3, unowned: 0, incidentsRaised: 1 });
    for (const a of silent) expect(await stale(db, a)).toMatchObject({ reason: 'ReconcilerSilent', instanceId: 'rec-dead' });
    for (const a of live) expect(await stale(db, a)).toBeUndefined();
    const heartbeatDoc = (await db.doc('reconcilers/rec-dead').get()).data()!;
    expect(heartbeatDoc.silentSince).toBeInstanceOf(Timestamp);
    const incident = (await db.doc(`incidents/${instanceIncidentId('rec-dead', 'ReconcilerSilent')}`).get()).data()!;
    expect(incident).toMatchObject({ accountId: null, instanceId: 'rec-dead', type: 'ReconcilerSilent', severity: 'critical', open: true, count: 1 });
    expect(incident.message).toContain('3 account(s)');

    // Readers come to the same verdict from the documents alone.
    const statusDoc = (await db.doc(`accountStatus/${silent[0]}`).get()).data();
    expect(statusLiveness(statusDoc as never, heartbeatDoc as never, Date.now(), EXTRA)).toMatchObject({ live: false, reason: 'ReconcilerSilent', instanceId: 'rec-dead' });
    const liveDoc = (await db.doc(`accountStatus/${live[0]}`).get()).data();
    const liveHeartbeat = (await db.doc('reconcilers/rec-live').get()).data();
    expect(statusLiveness(liveDoc as never, liveHeartbeat as never, Date.now(), EXTRA)).toEqual({ live: true, instanceId: 'rec-live' });

    const second = await runWatchdog(db, { extraGraceMs: EXTRA });
    expect(second).toMatchObject({ marked: 0, incidentsRaised: 0 });
    expect((await db.doc(`incidents/${instanceIncidentId('rec-dead', 'ReconcilerSilent')}`).get()).get('count')).toBe(1);

    // It beats again: the incident is resolved on the next run.
    await heartbeat(db, 'rec-dead', silent);
    const third = await runWatchdog(db, { extraGraceMs: EXTRA });
    expect(third).toMatchObject({ silent: [], incidentsResolved: 1 });
    expect((await db.doc(`incidents/${instanceIncidentId('rec-dead', 'ReconcilerSilent')}`).get()).get('open')).toBe(false);
  });

  it('a heartbeat that lands between the verdict and the mark wins: nothing is marked', async () => {
    const db = firestore();
    const accounts = ids('race', 2);
    await Promise.all(accounts.map((a) => account(db, a, 'rec-back')));
    await heartbeat(db, 'rec-back', accounts, { ageMs: TTL + EXTRA + 5_000 });
    const run = await runWatchdog(db, {
      extraGraceMs: EXTRA,
      // The instance comes back after the watchdog read its old heartbeat, before it marks.
      beforeMark: () => heartbeat(db, 'rec-back', accounts),
    });
    expect(run.silent).toEqual(['rec-back']);
    expect(run.marked).toBe(0);
    for (const a of accounts) expect(await stale(db, a)).toBeUndefined();
    expect((await db.doc('reconcilers/rec-back').get()).get('silentSince')).toBeUndefined();
  });

  it('marks accounts no live instance owns (stopped owner, no owner) and says how many in one fleet incident', async () => {
    const db = firestore();
    const old = TTL + EXTRA + 5_000;
    await account(db, 'u-stopped', 'rec-stopped', { statusAgeMs: old });
    await account(db, 'u-none', null, { statusAgeMs: old });
    await account(db, 'u-fresh', 'rec-stopped'); // released moments ago: still within the grace
    await account(db, 'u-nostatus', null, { noStatus: true });
    await account(db, 'u-live', 'rec-live');
    await heartbeat(db, 'rec-stopped', [], { stopped: true, ageMs: old });
    await heartbeat(db, 'rec-live', ['u-live']);

    const run = await runWatchdog(db, { extraGraceMs: EXTRA });
    expect(run).toMatchObject({ live: ['rec-live'], stopped: ['rec-stopped'], marked: 2, unowned: 3 });
    expect(await stale(db, 'u-stopped')).toMatchObject({ reason: 'NoOwner', instanceId: 'rec-stopped' });
    expect(await stale(db, 'u-none')).toMatchObject({ reason: 'NoOwner', instanceId: null, lastHeartbeatAt: null });
    expect(await stale(db, 'u-fresh')).toBeUndefined();
    expect(await stale(db, 'u-live')).toBeUndefined();
    const incident = (await db.doc(`incidents/${incidentId(null, 'AccountsUnowned')}`).get()).data()!;
    expect(incident).toMatchObject({ type: 'AccountsUnowned', severity: 'warning', open: true });
    expect(incident.message).toMatch(/^3 account\(s\)/);

    // A live owner takes them all (its status writes replace the documents): resolved.
    for (const a of ['u-stopped', 'u-none', 'u-fresh', 'u-nostatus']) await account(db, a, 'rec-live');
    await heartbeat(db, 'rec-live', ['u-live', 'u-stopped', 'u-none', 'u-fresh', 'u-nostatus']);
    const after = await runWatchdog(db, { extraGraceMs: EXTRA });
    expect(after).toMatchObject({ unowned: 0, incidentsResolved: 1 });
    expect((await db.doc(`incidents/${incidentId(null, 'AccountsUnowned')}`).get()).get('open')).toBe(false);
  });

  it('with no reconciler at all, every account is unowned and the incident is critical', async () => {
    const db = firestore();
    await Promise.all(ids('z', 3).map((a) => account(db, a, 'rec-gone', { statusAgeMs: 10 * 60_000 })));
    const run = await runWatchdog(db, { extraGraceMs: EXTRA });
    expect(run).toMatchObject({ live: [], marked: 3, unowned: 3 });
    expect((await db.doc(`incidents/${incidentId(null, 'AccountsUnowned')}`).get()).get('severity')).toBe('critical');
  });
});
