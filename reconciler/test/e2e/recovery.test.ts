/**
 * Issue 16 item 8 (kick loops slow down) and issue 10 item 3 (the reconciler never drives more
 * than MAX_ACCOUNTS), against the real Baileys and the simulator.
 */
import { Timestamp } from 'firebase-admin/firestore';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers.ts';
import { scanPublishedQr, startHarness, type Harness } from './harness.ts';

const numberOf = (id: string) => `1555000${7700 + Number(id.slice(-2))}`;
const logins = (h: Harness, id: string) => h.sim.deviceStats().filter((d) => d.deviceJid.startsWith(`${numberOf(id)}:`)).reduce((n, d) => n + d.logins, 0);

let h: Harness;
let kick: Awaited<ReturnType<Harness['startReconciler']>> | null = null;
beforeAll(async () => {
  h = await startHarness('recovery');
}, 60_000);
afterAll(() => h.close());

describe('kick loops', () => {
  it('a session kicked right after every login backs off further each time instead of starting over', async () => {
    kick = await h.startReconciler({ instanceId: 'kick' });
    await h.createAccount('k-01');
    await scanPublishedQr(h, 'k-01', numberOf('k-01'));
    await h.waitForPhase('k-01', 'connected');
    // Each time the session has opened, WhatsApp ends it with a 500: open, kicked, open, kicked…
    const attempts: number[] = [];
    let openedAt = 0;
    for (let i = 0; i < 4; i++) {
      const opened = await h.waitForPhase('k-01', (st) => st.phase === 'connected' && (st.lastConnectedAt as Timestamp).toMillis() > openedAt, 60_000);
      openedAt = (opened.lastConnectedAt as Timestamp).toMillis();
      h.sim.injectFault({ kind: 'stream-error', code: 500, target: numberOf('k-01') });
      const kicked = await h.waitForPhase('k-01', (st) => st.phase === 'reconnecting' && (st.lastDisconnect as { at: Timestamp } | null)!.at.toMillis() > openedAt, 30_000);
      attempts.push(kicked.reconnectAttempt as number);
      if (i === 3) {
        const wait = (kicked.nextRetryAt as Timestamp).toMillis() - (kicked.lastDisconnect as { at: Timestamp }).at.toMillis();
        // The fourth retry waits at least half of 2 s × 2³ (equal jitter).
        expect(wait).toBeGreaterThanOrEqual(8_000);
      }
    }
    // Today's code started over at every open: 1, 1, 1, 1.
    expect(attempts).toEqual([1, 2, 3, 4]);
    const flapping = await waitFor(async () => (await h.db.doc('incidents/k-01__FlappingConnection').get()).data(), { timeoutMs: 15_000, label: 'flapping incident' });
    expect(flapping.open).toBe(true);
    await h.waitForPhase('k-01', (st) => st.phase === 'connected' && (st.lastConnectedAt as Timestamp).toMillis() > openedAt, 60_000);
  }, 120_000);

  it('endless restart requests (515) stop being answered at once', async () => {
    await h.createAccount('k-02');
    await scanPublishedQr(h, 'k-02', numberOf('k-02'));
    await h.waitForPhase('k-02', 'connected');
    const before = logins(h, 'k-02');
    const fault = h.sim.injectFault({ kind: 'stream-error', code: 515, target: numberOf('k-02'), persist: true });
    try {
      const s = await h.waitForPhase('k-02', (st) => st.phase === 'reconnecting' && (st.reconnectAttempt as number) >= 1, 30_000);
      expect(s.message).toMatch(/restart \d+ times in a row/);
      // Three answered at once, then backoff: not the dozens a loop of immediate restarts makes.
      expect(logins(h, 'k-02') - before).toBeLessThanOrEqual(6);
    } finally {
      h.sim.clearFaults(fault);
    }
    await h.waitForPhase('k-02', 'connected', 60_000);
  }, 120_000);
});

describe('MAX_ACCOUNTS', () => {
  it('drives at most MAX_ACCOUNTS accounts; the rest wait with NoCapacity and a fleet incident until a slot frees', async () => {
    // This reconciler alone, with the project's accounts to itself.
    await kick?.stop('next test');
    await Promise.all(['k-01', 'k-02'].map((id) => h.db.doc(`accounts/${id}`).delete()));
    const rec = await h.startReconciler({ instanceId: 'cap', env: { MAX_ACCOUNTS: '2' } });
    await Promise.all(['c-01', 'c-02', 'c-03'].map((id) => h.createAccount(id)));
    // Two accounts get a slot (a QR to scan); the third waits and says why.
    const waiting = await waitFor(
      async () => {
        const st = await Promise.all(['c-01', 'c-02', 'c-03'].map(async (id) => [id, await h.status(id)] as const));
        const blocked = st.filter(([, s]) => s?.reason === 'NoCapacity');
        const linking = st.filter(([, s]) => s?.phase === 'awaitingScan');
        return blocked.length === 1 && linking.length === 2 ? blocked[0]![0] : undefined;
      },
      { timeoutMs: 45_000, label: 'two linking, one waiting for capacity' },
    );
    const s = (await h.status(waiting))!;
    expect(s).toMatchObject({ phase: 'pending', reason: 'NoCapacity' });
    expect(s.message).toMatch(/maximum of 2 accounts/);
    expect((await h.db.doc('accountQr/' + waiting).get()).exists).toBe(false);
    const incident = await waitFor(async () => (await h.db.doc('incidents/fleet__CapacityExceeded').get()).data(), { timeoutMs: 15_000, label: 'capacity incident' });
    expect(incident.open).toBe(true);
    // One account goes away: the waiting one gets its slot, and the incident resolves.
    const other = ['c-01', 'c-02', 'c-03'].find((id) => id !== waiting)!;
    await h.db.doc(`accounts/${other}`).delete();
    await h.waitForPhase(waiting, 'awaitingScan', 30_000);
    await waitFor(async () => (await h.db.doc('incidents/fleet__CapacityExceeded').get()).get('open') === false, { timeoutMs: 15_000, label: 'capacity incident resolved' });
    await rec.stop('test over');
  }, 120_000);
});
