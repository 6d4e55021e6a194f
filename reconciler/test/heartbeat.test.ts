/**
 * Issue 16 item 6: the heartbeat fences itself on a deadline (lastSuccess + TTL − margin), whatever
 * its beats are doing. Real Firestore emulator, reached through a TCP proxy that makes it hang.
 */
import { randomUUID } from 'node:crypto';
import { getApps, initializeApp } from 'firebase-admin/app';
import { getFirestore, Timestamp, type Firestore } from 'firebase-admin/firestore';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolatedProjectId } from '../../test/support/emulators.ts';
import { TcpProxy } from '../../test/support/tcp-proxy.ts';
import { ReconcilerDocSchema } from '@wafleet/contract';
import { fenceMarginMs, Heartbeat } from '../src/lease/heartbeat.ts';
import { createMetrics } from '../src/metrics.ts';
import { waitFor } from './helpers.ts';

const log = pino({ level: 'silent' });
let proxy: TcpProxy;
let db: Firestore;

beforeAll(async () => {
  proxy = TcpProxy.forHostPort(process.env.FIRESTORE_EMULATOR_HOST!);
  await proxy.start();
  // The SDK takes the emulator address from the environment, when the client is made.
  const direct = process.env.FIRESTORE_EMULATOR_HOST;
  process.env.FIRESTORE_EMULATOR_HOST = proxy.address;
  try {
    const app = getApps().find((a) => a.name === 'heartbeat') ?? initializeApp({ projectId: isolatedProjectId('heartbeat') }, 'heartbeat');
    db = getFirestore(app);
    await db.doc('probe/probe').set({ ok: true });
  } finally {
    process.env.FIRESTORE_EMULATOR_HOST = direct;
  }
});
afterAll(() => proxy.stop());

interface Recorded {
  hb: Heartbeat;
  fencedAt: number[];
  recoveredAt: number[];
  stalls: number[];
  markedSilent: number[];
  instanceId: string;
}

async function startHeartbeat(ttlMs: number, renewMs: number, instanceId = `hb-${randomUUID().slice(0, 8)}`): Promise<Recorded> {
  const r: Omit<Recorded, 'hb'> = { fencedAt: [], recoveredAt: [], stalls: [], markedSilent: [], instanceId };
  const hb = new Heartbeat(db, { instanceId: r.instanceId, incarnation: randomUUID(), host: 'vm-a', storagePath: '/data/a' }, {
    renewMs,
    ttlMs,
    version: 'test',
    summary: () => ({ accounts: {}, storageFreeBytes: null, maxAccounts: 30, slotsUsed: 0, drain: null }),
    onFence: () => r.fencedAt.push(Date.now()),
    onRecover: () => r.recoveredAt.push(Date.now()),
    onIdentityConflict: () => undefined,
    onStall: (n) => r.stalls.push(n),
    onMarkedSilent: () => r.markedSilent.push(Date.now()),
    log,
  });
  await hb.start();
  return { hb, ...r };
}

/** Waits for a beat to land, so the hang starts right after a success. */
async function nextBeat(hb: Heartbeat): Promise<number> {
  const before = hb.lastSuccess;
  // Generous: after a released hang the beat in flight lands when the machine gets to it.
  return waitFor(() => hb.lastSuccess > before && hb.lastSuccess, { timeoutMs: 30_000, label: 'a successful beat' });
}

describe('heartbeat document', () => {
  it('matches the contract, with the capacity other instances place by (issue 13)', async () => {
    const r = await startHeartbeat(10_000, 2_000);
    try {
      const doc = (await db.doc(`reconcilers/${r.instanceId}`).get()).data();
      expect(ReconcilerDocSchema.parse(doc)).toMatchObject({ instanceId: r.instanceId, maxAccounts: 30, slotsUsed: 0, stoppedAt: null });
    } finally {
      await r.hb.stop({ markStopped: true, timeoutMs: 5_000 });
    }
    const stopped = ReconcilerDocSchema.parse((await db.doc(`reconcilers/${r.instanceId}`).get()).data());
    expect(stopped.stoppedAt).not.toBeNull();
    expect(stopped.slotsUsed).toBe(0);
  });
});

describe('heartbeat and what others write on its document', () => {
  it("keeps an operator's drainRequestedAt across beats and a restart, and still drops the watchdog's silentSince", async () => {
    const r = await startHeartbeat(10_000, 500);
    const ref = db.doc(`reconcilers/${r.instanceId}`);
    try {
      await ref.update({ drainRequestedAt: Timestamp.now(), silentSince: Timestamp.now() });
      const before = r.hb.lastSuccess;
      await waitFor(async () => r.hb.lastSuccess > before && (await ref.get()).get('silentSince') === undefined, { timeoutMs: 15_000, label: 'a beat that drops silentSince' });
      expect((await ref.get()).get('drainRequestedAt')).toBeInstanceOf(Timestamp);
    } finally {
      await r.hb.stop({ markStopped: true, timeoutMs: 5_000 });
    }
    // A new process's first write (a plain set) keeps it too: a restart does not cancel a drain.
    const again = await startHeartbeat(10_000, 500, r.instanceId);
    try {
      const doc = ReconcilerDocSchema.parse((await ref.get()).data());
      expect(doc.drainRequestedAt).toBeInstanceOf(Timestamp);
      expect(doc.stoppedAt).toBeNull();
    } finally {
      await again.hb.stop({ markStopped: true, timeoutMs: 5_000 });
    }
  });
});

describe('heartbeat fence', () => {
  it('takes a margin of one renewal, bounded by the next beat and by 10 % of the TTL', () => {
    expect(fenceMarginMs(120_000, 40_000)).toBe(40_000);
    expect(fenceMarginMs(10_000, 2_000)).toBe(2_000);
    expect(fenceMarginMs(10_000, 5_000)).toBe(1_000);
    expect(fenceMarginMs(100_000, 1_000)).toBe(10_000);
  });

  it('fires at lastSuccess + TTL − margin while its beats hang, well before the TTL', async () => {
    // With these numbers a fence checked only when a beat fails came at the TTL: the second
    // hung beat (each may take a second) gave up 4 s after the last success.
    const ttl = 4_000;
    const renew = 1_000;
    const r = await startHeartbeat(ttl, renew);
    try {
      const last = await nextBeat(r.hb);
      proxy.hang();
      await waitFor(() => r.fencedAt.length > 0, { timeoutMs: ttl * 2, intervalMs: 20, label: 'fence' });
      const after = r.fencedAt[0]! - last;
      expect(after).toBeGreaterThanOrEqual(ttl - fenceMarginMs(ttl, renew) - 50);
      expect(after).toBeLessThan(ttl - 500);
      expect(r.hb.healthy).toBe(false);
      // Beats kept timing out meanwhile: the connection is reported as stalled.
      await waitFor(() => r.stalls.length > 0, { timeoutMs: ttl, label: 'stall reported' });
      expect(r.stalls[0]).toBe(2);

      // The partition ends: the next beat lifts the fence, and the timer is armed again.
      proxy.heal({ release: true });
      await waitFor(() => r.recoveredAt.length > 0, { timeoutMs: 10_000, label: 'recovery' });
      expect(r.hb.healthy).toBe(true);
      const again = await nextBeat(r.hb);
      proxy.hang();
      await waitFor(() => r.fencedAt.length > 1, { timeoutMs: ttl * 2, intervalMs: 20, label: 'second fence' });
      expect(r.fencedAt[1]! - again).toBeLessThan(ttl - 500);
    } finally {
      proxy.heal({ release: true });
      await r.hb.stop();
    }
  }, 40_000);

  it('wafleet_heartbeat_age_seconds follows successful beats only: it grows while they hang, and drops once one lands', async () => {
    const r = await startHeartbeat(60_000, 300);
    const m = createMetrics({ phases: () => [], leasesHeld: () => 0, heartbeatLastSuccessAt: () => r.hb.lastSuccess });
    const age = async () => Number((await m.registry.metrics()).split('\n').find((l) => l.startsWith('wafleet_heartbeat_age_seconds '))!.split(' ')[1]);
    try {
      await nextBeat(r.hb);
      expect(await age()).toBeLessThan(5);
      proxy.hang();
      const stuck = r.hb.lastSuccess;
      // Several renewal periods without a landed beat: the age passes them all.
      await waitFor(async () => (await age()) > 3, { timeoutMs: 20_000, intervalMs: 100, label: 'the age growing while beats hang' });
      expect(r.hb.lastSuccess).toBe(stuck);
      proxy.heal({ release: true });
      await nextBeat(r.hb);
      expect(await age()).toBeLessThan(2);
    } finally {
      proxy.heal({ release: true });
      await r.hb.stop();
    }
  }, 40_000);

  it('never fires while beats succeed', async () => {
    const ttl = 3_000;
    const r = await startHeartbeat(ttl, 600);
    try {
      const t = Date.now();
      // Beats for more than twice the TTL.
      await waitFor(() => r.hb.lastSuccess > t + 2 * ttl, { timeoutMs: 4 * ttl, intervalMs: 50, label: 'beats for 2 TTL' });
      expect(r.fencedAt).toEqual([]);
      expect(r.stalls).toEqual([]);
    } finally {
      await r.hb.stop();
    }
  }, 30_000);

  it('stop() disarms the fence', async () => {
    const ttl = 2_000;
    const r = await startHeartbeat(ttl, 500);
    const stoppedAt = Date.now();
    await r.hb.stop();
    proxy.hang();
    try {
      await waitFor(() => Date.now() - stoppedAt > ttl, { timeoutMs: 2 * ttl, intervalMs: 50, label: 'a TTL after stop' });
      expect(r.fencedAt).toEqual([]);
    } finally {
      proxy.heal({ release: true });
    }
  }, 15_000);

  it("the watchdog's silentSince is seen by the next beat, removed, and reported once (issue 18)", async () => {
    const r = await startHeartbeat(60_000, 300);
    try {
      const ref = db.collection('reconcilers').doc(r.instanceId);
      await ref.update({ silentSince: new Date() });
      await waitFor(() => r.markedSilent.length > 0, { timeoutMs: 10_000, intervalMs: 50, label: 'onMarkedSilent' });
      expect((await ref.get()).get('silentSince')).toBeUndefined();
      // Later beats find nothing to report.
      const beatsAfter = (await ref.get()).updateTime!.toMillis();
      await waitFor(async () => (await ref.get()).updateTime!.toMillis() > beatsAfter, { timeoutMs: 10_000, intervalMs: 50, label: 'another beat' });
      expect(r.markedSilent).toHaveLength(1);
    } finally {
      await r.hb.stop();
    }
  }, 30_000);
});
