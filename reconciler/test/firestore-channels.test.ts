/**
 * Issue 16 item 2, at the level of the Firestore client: the reconciler's channels get over a
 * connection that went silent. Real emulator, reached through a TCP proxy that black-holes flows;
 * `heal()` leaves the black-holed flows dead (a NAT entry gone) and lets new ones through.
 */
import { randomUUID } from 'node:crypto';
import { getApps, initializeApp } from 'firebase-admin/app';
import { getFirestore, type Firestore } from 'firebase-admin/firestore';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolatedProjectId } from '../../test/support/emulators.ts';
import { TcpProxy } from '../../test/support/tcp-proxy.ts';
import type { ChannelTuning } from '../src/firestore/channel.ts';
import { openFirestore, type FirestoreConnection } from '../src/firestore/open-firestore.ts';
import { withTimeout } from '../src/util/deadline.ts';
import { waitFor } from './helpers.ts';

const log = pino({ level: 'silent' });
const projectId = isolatedProjectId('fschannel');
let direct: Firestore;
const proxies: TcpProxy[] = [];

beforeAll(() => {
  direct = getFirestore(getApps().find((a) => a.name === 'fschannel-direct') ?? initializeApp({ projectId }, 'fschannel-direct'));
});
afterAll(() => Promise.all(proxies.map((p) => p.stop())));

/** A client of the reconciler's kind whose traffic goes through a proxy of its own. */
async function throughProxy(tuning: ChannelTuning): Promise<FirestoreConnection & { proxy: TcpProxy }> {
  const proxy = TcpProxy.forHostPort(process.env.FIRESTORE_EMULATOR_HOST!);
  await proxy.start();
  proxies.push(proxy);
  // The SDK takes the emulator address from the environment, when the client is made.
  const emulator = process.env.FIRESTORE_EMULATOR_HOST;
  process.env.FIRESTORE_EMULATOR_HOST = proxy.address;
  try {
    return { ...openFirestore(initializeApp({ projectId }, `fschannel-${randomUUID()}`), log, tuning), proxy };
  } finally {
    process.env.FIRESTORE_EMULATOR_HOST = emulator;
  }
}

/** Resolves once a write goes through (each attempt bounded, as the heartbeat's are). */
function writesAgain(db: Firestore, timeoutMs: number): Promise<true> {
  return waitFor(
    async () => {
      await withTimeout(db.doc(`probe/${randomUUID()}`).set({ at: Date.now() }), 1_500, 'probe write');
      return true as const;
    },
    { timeoutMs, intervalMs: 100, label: 'a write through the healed network' },
  );
}

const LONG = 600_000;

describe('Firestore channels', () => {
  it('turn keepalive on: a black-holed connection is dropped and dialled again on its own', async () => {
    const { db, channels, proxy } = await throughProxy({ keepaliveMs: 1_000, keepaliveTimeoutMs: 1_000, connectTimeoutMs: LONG });
    await db.doc('probe/first').set({ ok: true });
    proxy.blackhole();
    proxy.heal();
    const healedAt = Date.now();
    await writesAgain(db, 10_000);
    expect(Date.now() - healedAt).toBeLessThan(8_000);
    expect(channels.resets).toBe(0);
  }, 20_000);

  it('start over when a connection attempt is accepted and never answered', async () => {
    const { db, channels, proxy } = await throughProxy({ keepaliveMs: LONG, keepaliveTimeoutMs: LONG, connectTimeoutMs: 1_000 });
    // The very first connection lands in the black hole, and stays dead after healing.
    proxy.blackhole();
    const pending = db.doc('probe/pending').set({ ok: true }).catch(() => undefined);
    await waitFor(() => proxy.openFlows > 0, { timeoutMs: 5_000, label: 'a connection attempt' });
    proxy.heal();
    await writesAgain(db, 10_000);
    expect(channels.resets).toBeGreaterThanOrEqual(1);
    await pending;
  }, 20_000);

  it('reset() fails what hangs on a silent connection, so a listener is attached again at once', async () => {
    const { db, channels, proxy } = await throughProxy({ keepaliveMs: LONG, keepaliveTimeoutMs: LONG, connectTimeoutMs: LONG });
    const col = `watched-${randomUUID().slice(0, 8)}`;
    const seen = new Set<string>();
    const unsubscribe = db.collection(col).onSnapshot((s) => s.docChanges().forEach((c) => seen.add(c.doc.id)), () => undefined);
    try {
      await direct.doc(`${col}/before`).set({ ok: true });
      // Generous: a loaded CI machine is slow to open a first listen stream; not what is tested here.
      await waitFor(() => seen.has('before'), { timeoutMs: 30_000, label: 'the listener is live' });
      // The listener's stream now sits on a flow that will never carry a byte again.
      proxy.blackhole();
      proxy.heal();
      await direct.doc(`${col}/after`).set({ ok: true });
      channels.reset('test');
      await waitFor(() => seen.has('after'), { timeoutMs: 10_000, label: 'the listener sees a change made after the reset' });
      await writesAgain(db, 5_000);
    } finally {
      unsubscribe();
    }
  }, 60_000);
});
