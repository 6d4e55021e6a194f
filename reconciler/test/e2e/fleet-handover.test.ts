/**
 * Issue 13: a planned stop of one reconciler in a fleet (a redeploy, VM maintenance) hands its
 * accounts to the others at once: its last backups land, its stopped heartbeat frees its leases,
 * and the others look at those accounts the moment they see it stopped, not when their lease
 * retry comes (LEASE_TTL_MS is a minute here, so waiting for it would fail the deadline below).
 */
import type { Timestamp } from 'firebase-admin/firestore';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers.ts';
import { scanPublishedQr, startHarness, type Harness } from './harness.ts';
import { killAll, spawnReconciler, type ReconcilerProcess } from './process.ts';

const TTL_MS = 60_000;
const ids = Array.from({ length: 6 }, (_, i) => `hv-${i + 1}`);
const phoneOf = (id: string) => `1555003000${id.slice(3)}`;

let h: Harness;
const running = new Map<string, ReconcilerProcess>();

beforeAll(async () => {
  h = await startHarness('handover');
}, 60_000);
afterAll(async () => {
  await killAll(running.values());
  await h.close();
});


/** Every account connected on `on`, each since `since(id)` (the old owner's last status said connected too). */
async function allConnected(since: (id: string) => number, on: string[]): Promise<void> {
  let last = '';
  await waitFor(
    async () => {
      const [snap, lease] = await Promise.all([h.db.collection('accountStatus').get(), h.leaseHolders()]);
      const mine = snap.docs.filter((d) => ids.includes(d.id));
      last = mine.map((d) => `${d.id}:${d.get('phase')}/${d.get('reason')}@${lease.get(d.id) ?? '-'}`).join(' ');
      return mine.length === ids.length && mine.every((d) => d.get('phase') === 'connected' && ((d.get('lastConnectedAt') as Timestamp | null)?.toMillis() ?? 0) >= since(d.id) && on.includes(lease.get(d.id) ?? ''));
    },
    { timeoutMs: 45_000, intervalMs: 250, label: `every account connected on ${on.join(',')}` },
  ).catch((err: Error) => {
    throw new Error(`${err.message}; last: ${last}`);
  });
}

describe('a planned stop in a fleet of two', () => {
  it('hands every account to the other instance within seconds, restored from the last backups: no QR, no 440', async () => {
    for (const id of ['vm-a', 'vm-b']) {
      running.set(id, spawnReconciler({ projectId: h.projectId, sim: h.sim, sessionsPath: await h.newSessionsDir(), instanceId: id, env: { MAX_ACCOUNTS: '6', LEASE_TTL_MS: String(TTL_MS), LEASE_RENEW_MS: '5000', LOG_LEVEL: 'warn' } }));
    }
    await Promise.all(ids.map((id) => h.createAccount(id)));
    await Promise.all(ids.map((id) => scanPublishedQr(h, id, phoneOf(id), 120_000)));
    await allConnected(() => 0, ['vm-a', 'vm-b']);
    await waitFor(async () => (await Promise.all(ids.map((id) => h.db.doc(`sessionBackups/${id}`).get()))).every((d) => d.get('linked') === true), { timeoutMs: 30_000, label: 'first backups' });
    const before = await h.leaseHolders();
    // Stop whichever holds accounts (both, usually); the other takes them all.
    const stopped = [...before.values()].includes('vm-a') ? 'vm-a' : 'vm-b';
    const stays = stopped === 'vm-a' ? 'vm-b' : 'vm-a';
    const stopAt = Date.now();
    running.get(stopped)!.kill('SIGTERM');
    const { code } = await running.get(stopped)!.exited;
    running.delete(stopped);
    expect(code).toBe(0);
    const moved = [...before.entries()].filter(([, holder]) => holder === stopped).map(([id]) => id);
    await allConnected((id) => (moved.includes(id) ? stopAt : 0), [stays]);
    // Well inside the lease TTL: the handover did not wait for the lease to run out.
    expect(Date.now() - stopAt).toBeLessThan(TTL_MS / 2);
    expect((await h.db.collection('accountQr').get()).size).toBe(0);
    expect(h.sim.totalConflicts()).toBe(0);
  }, 240_000);
});
