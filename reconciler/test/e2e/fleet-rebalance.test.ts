/**
 * Issue 13, items 4 and 5: accounts move between reconcilers by graceful handover (socket closed,
 * credentials backed up, lease handed to the receiver, which restores and connects). Real child
 * processes, each with its own sessions directory; the simulator counts connections per device.
 *
 * - A third instance joins two that share 12 accounts: accounts move to it until the spread is
 *   even (4/4/4), each moved account logging in exactly once on the receiver (one handover), with
 *   no QR and never two connections to one device.
 * - An operator drains one (drainRequestedAt on its heartbeat document, as the drainInstance
 *   callable writes it): it ends with none, every account still connected, and says `drained`.
 * - A SIGTERM with DRAIN_ON_SIGTERM hands everything over before the process exits 0.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Timestamp } from 'firebase-admin/firestore';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers.ts';
import { scanPublishedQr, startHarness, type Harness } from './harness.ts';
import { countBy, killAll, spawnReconciler, tails, type ReconcilerProcess } from './process.ts';

const ids = Array.from({ length: 12 }, (_, i) => `rb-${String(i + 1).padStart(2, '0')}`);
const phoneOf = (id: string) => `1555002${id.slice(3).padStart(4, '0')}`;
const deviceOf = (id: string) => `${phoneOf(id)}:`;

let h: Harness;
const dirs = new Map<string, string>();
const running = new Map<string, ReconcilerProcess>();

function start(instanceId: string): ReconcilerProcess {
  const p = spawnReconciler({
    projectId: h.projectId,
    sim: h.sim,
    sessionsPath: dirs.get(instanceId)!,
    instanceId,
    // An account rests 15 s after a move (not ten minutes: the test would wait), and a drain on SIGTERM.
    env: { MAX_ACCOUNTS: '12', REBALANCE_MIN_HOLD_MS: '15000', DRAIN_ON_SIGTERM: 'true', DRAIN_TIMEOUT_MS: '60000', LOG_LEVEL: 'info' },
  });
  running.set(instanceId, p);
  return p;
}

beforeAll(async () => {
  h = await startHarness('fleet-rebalance');
  for (const id of ['vm-a', 'vm-b', 'vm-c']) dirs.set(id, await h.newSessionsDir());
}, 60_000);
afterAll(async () => {
  await killAll(running.values());
  await h.close();
});

const logsOf = () => tails(running, 25);

/** Waits until every account is connected and `ok` holds for who holds what; returns the holders. */
async function settle(label: string, ok: (holders: Map<string, string>) => boolean, timeoutMs = 120_000): Promise<Map<string, string>> {
  let last = '';
  let holders = new Map<string, string>();
  await waitFor(
    async () => {
      const [snap, lease] = await Promise.all([h.db.collection('accountStatus').get(), h.leaseHolders()]);
      holders = lease;
      const connected = snap.docs.filter((d) => ids.includes(d.id) && d.get('phase') === 'connected' && d.get('owner')?.instanceId === lease.get(d.id));
      last = `${JSON.stringify(countBy(lease))} ${snap.docs.filter((d) => d.get('phase') !== 'connected').map((d) => `${d.id}:${d.get('phase')}/${d.get('reason')}`).join(' ')}`;
      return connected.length === ids.length && ok(lease);
    },
    { timeoutMs, intervalMs: 250, label },
  ).catch((err: Error) => {
    throw new Error(`${err.message}; last: ${last}\n${logsOf()}`);
  });
  return holders;
}

const logins = (id: string, since: number) => h.sim.events({ type: 'login' }).filter((e) => e.at >= since && e.deviceJid?.startsWith(deviceOf(id))).length;

describe('rebalancing and drain by graceful handover', () => {
  it('a third instance joins: accounts move to it until the spread is even, one login each, no QR, never two connections', async () => {
    start('vm-a');
    start('vm-b');
    await Promise.all(ids.map((id) => h.createAccount(id)));
    await Promise.all(ids.map((id) => scanPublishedQr(h, id, phoneOf(id), 120_000)));
    await settle('12 accounts connected on vm-a and vm-b', (l) => l.size === ids.length);
    // The receivers restore from the backups: every one must be in first.
    await waitFor(async () => (await Promise.all(ids.map((id) => h.db.doc(`sessionBackups/${id}`).get()))).every((d) => d.get('linked') === true), { timeoutMs: 30_000, label: 'first backups' });
    const before = await settle('6/6 on two', (l) => Object.values(countBy(l)).every((n) => n === 6));

    const joinedAt = Date.now();
    start('vm-c');
    const after = await settle('4/4/4', (l) => {
      const c = countBy(l);
      return ['vm-a', 'vm-b', 'vm-c'].every((i) => c[i] === 4);
    });
    const moved = ids.filter((id) => after.get(id) !== before.get(id));
    // vm-c's four came by handover, and the givers may have evened out between themselves too.
    expect(moved.length).toBeGreaterThanOrEqual(4);
    for (const id of ids.filter((i) => after.get(i) === 'vm-c')) expect(moved).toContain(id);
    // One handover each: the receiver's login, and nothing more; the others did not reconnect.
    for (const id of ids) expect(logins(id, joinedAt), id).toBe(moved.includes(id) ? 1 : 0);
    expect(h.sim.totalConflicts()).toBe(0);
    expect((await h.db.collection('accountQr').get()).size).toBe(0);
    // The giver keeps no copy of credentials it handed over (it would be stale from now on).
    for (const id of moved) expect(existsSync(path.join(dirs.get(before.get(id)!)!, id, 'creds.json')), id).toBe(false);
  }, 300_000);

  it('an operator drains one instance: none left on it, every account still connected, its heartbeat says drained', async () => {
    const before = await h.leaseHolders();
    const on = [...before.entries()].filter(([, i]) => i === 'vm-a').map(([id]) => id);
    const since = Date.now();
    await h.db.doc('reconcilers/vm-a').update({ drainRequestedAt: Timestamp.now() });
    const after = await settle('vm-a drained', (l) => ![...l.values()].includes('vm-a'));
    for (const id of on) expect(['vm-b', 'vm-c']).toContain(after.get(id));
    await waitFor(async () => (await h.db.doc('reconcilers/vm-a').get()).get('drain')?.state === 'drained', { timeoutMs: 15_000, label: 'vm-a says drained' });
    expect((await h.db.doc('reconcilers/vm-a').get()).get('drain')).toEqual({ state: 'drained', accountsLeft: 0, cause: 'operator' });
    for (const id of on) expect(logins(id, since), id).toBe(1);
    expect(h.sim.totalConflicts()).toBe(0);
    expect((await h.db.collection('accountQr').get()).size).toBe(0);
    // Drained, it takes nothing back (a rebalancing peer never gives to a draining one either).
    const c = countBy(after);
    expect(c['vm-a'] ?? 0).toBe(0);
    const p = running.get('vm-a')!;
    p.kill('SIGTERM');
    expect((await p.exited).code).toBe(0);
    running.delete('vm-a');
  }, 240_000);

  it('SIGTERM with DRAIN_ON_SIGTERM: every account is handed over before the process exits 0', async () => {
    const before = await h.leaseHolders();
    const on = [...before.entries()].filter(([, i]) => i === 'vm-b').map(([id]) => id);
    expect(on.length).toBeGreaterThan(0);
    const since = Date.now();
    const p = running.get('vm-b')!;
    p.kill('SIGTERM');
    const exit = await p.exited;
    running.delete('vm-b');
    expect(exit.code, logsOf()).toBe(0);
    expect(p.output()).toContain('"message":"drained"');
    // Handed over before the exit: each already on vm-c, connected once there.
    const after = await settle('everything on vm-c', (l) => [...l.values()].every((i) => i === 'vm-c'));
    for (const id of on) expect(after.get(id)).toBe('vm-c');
    for (const id of on) expect(logins(id, since), id).toBe(1);
    const firstLoginAfter = Math.min(...on.map((id) => h.sim.events({ type: 'login' }).find((e) => e.at >= since && e.deviceJid?.startsWith(deviceOf(id)))!.at));
    expect(firstLoginAfter).toBeLessThan(exit.at);
    expect(h.sim.totalConflicts()).toBe(0);
  }, 180_000);
});
