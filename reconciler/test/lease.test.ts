/**
 * Leases, fencing and the host lock against the real Firestore emulator and real processes.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { getApps, initializeApp } from 'firebase-admin/app';
import { getFirestore, type Firestore } from 'firebase-admin/firestore';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolatedProjectId } from '../../test/support/emulators.ts';
import { Heartbeat } from '../src/lease/heartbeat.ts';
import { acquireHostLock, HOST_LOCK_NAME, HostLockBusyError } from '../src/lease/host-lock.ts';
import { LeaseManager, StaleOwnerError, type Identity } from '../src/lease/lease-manager.ts';
import { tempDir, waitFor } from './helpers.ts';

let db: Firestore;
const log = pino({ level: 'silent' });
const TTL = 60_000;

beforeAll(() => {
  const app = getApps().find((a) => a.name === 'lease') ?? initializeApp({ projectId: isolatedProjectId('lease') }, 'lease');
  db = getFirestore(app);
});

function identity(instanceId: string, over: Partial<Identity> = {}): Identity {
  return { instanceId, incarnation: randomUUID(), host: 'vm-a', storagePath: '/data/a', ...over };
}

/** A heartbeat that beats once (start) and then only when asked; stop() to end it. */
async function startHeartbeat(id: Identity, { adoptedIncarnations = [] as string[] } = {}): Promise<Heartbeat> {
  const hb = new Heartbeat(db, id, {
    adoptedIncarnations,
    renewMs: 3_600_000,
    ttlMs: TTL,
    version: 'test',
    summary: () => ({ accounts: {}, storageFreeBytes: null, maxAccounts: 30, slotsUsed: 0 }),
    onFence: () => undefined,
    onRecover: () => undefined,
    onIdentityConflict: () => undefined,
    log,
  });
  await hb.start();
  return hb;
}

/**
 * What a killed process leaves behind: a transaction that read the lease and never ended, holding
 * its read lock until `end()`.
 */
async function lockedByUnfinishedTransaction(account: string): Promise<{ end(): Promise<void> }> {
  let never: () => void = () => undefined;
  let locked = false;
  const stuck = db.runTransaction(async (tx) => {
    await tx.get(db.doc(`leases/${account}`));
    locked = true;
    await new Promise<void>((r) => (never = r));
  });
  await waitFor(() => locked, { timeoutMs: 5_000, label: 'the lease locked by an unfinished transaction' });
  return {
    end: async () => {
      never();
      await stuck.catch(() => undefined);
    },
  };
}

describe('leases', () => {
  it('grants a free lease at epoch 1 and keeps it for its holder', async () => {
    const account = `acc-${randomUUID().slice(0, 8)}`;
    const a = identity('inst-a');
    const hb = await startHeartbeat(a);
    const m = new LeaseManager(db, a, { ttlMs: TTL, hostLockHeld: false });
    expect(await m.acquire(account)).toMatchObject({ acquired: true, grant: { epoch: 1 }, tookOverFrom: null });
    expect(await m.acquire(account)).toMatchObject({ acquired: true, grant: { epoch: 1 } });
    expect(m.heldAccounts()).toEqual([account]);
    await hb.stop();
  });

  it('refuses a lease whose holder is alive, then takes it once the holder stays silent for the TTL by its own clock', async () => {
    const account = `acc-${randomUUID().slice(0, 8)}`;
    const a = identity('inst-a2');
    const hbA = await startHeartbeat(a);
    const ma = new LeaseManager(db, a, { ttlMs: TTL, hostLockHeld: false });
    await ma.acquire(account);

    let clock = 1_000_000;
    const b = identity('inst-b2', { host: 'vm-b', storagePath: '/data/b' });
    const mb = new LeaseManager(db, b, { ttlMs: TTL, hostLockHeld: true, now: () => clock });
    const first = await mb.acquire(account);
    expect(first).toEqual({ acquired: false, holder: 'inst-a2', retryAfterMs: TTL });
    clock += TTL - 1;
    expect(await mb.acquire(account)).toMatchObject({ acquired: false, retryAfterMs: 1 });
    clock += 1;
    const taken = await mb.acquire(account);
    expect(taken).toMatchObject({ acquired: true, grant: { epoch: 2, instanceId: 'inst-b2' }, tookOverFrom: 'inst-a2' });

    // The old owner is fenced off: its guarded writes fail and it forgets the grant.
    await expect(ma.fenced(account, (tx) => tx.set(db.doc(`accountStatus/${account}`), { phase: 'connected' }))).rejects.toBeInstanceOf(StaleOwnerError);
    expect(ma.held(account)).toBeUndefined();
    expect((await db.doc(`accountStatus/${account}`).get()).exists).toBe(false);
    await mb.fenced(account, (tx, owner) => tx.set(db.doc(`accountStatus/${account}`), { phase: 'connected', owner }));
    expect((await db.doc(`accountStatus/${account}`).get()).get('owner')).toEqual({ instanceId: 'inst-b2', epoch: 2 });
    await hbA.stop();
  });

  it('hands a lease over: free, reserved for the receiver (by the others\' own clocks), then anyone\'s; the next grant clears the reservation', async () => {
    const reserve = 30_000;
    const account = `acc-${randomUUID().slice(0, 8)}`;
    const a = identity('inst-ho-a');
    const hbA = await startHeartbeat(a);
    const ma = new LeaseManager(db, a, { ttlMs: TTL, hostLockHeld: false, handoverReserveMs: reserve });
    expect(await ma.acquire(account)).toMatchObject({ acquired: true, grant: { epoch: 1 } });
    expect(await ma.handOver(account, 'inst-ho-b')).toBe(true);
    expect(ma.held(account)).toBeUndefined();
    expect((await db.doc(`leases/${account}`).get()).data()).toMatchObject({ holder: null, handoverTo: 'inst-ho-b', epoch: 1 });
    // Not ours any more: a second handover (or any fenced write) is refused.
    expect(await ma.handOver(account, 'inst-ho-c')).toBe(false);

    let clock = 5_000_000;
    const c = identity('inst-ho-c', { host: 'vm-c', storagePath: '/data/c' });
    const mc = new LeaseManager(db, c, { ttlMs: TTL, hostLockHeld: true, handoverReserveMs: reserve, now: () => clock });
    // The giver itself waits like anyone else: it must not take back what it just gave.
    expect(await ma.acquire(account)).toMatchObject({ acquired: false, holder: 'inst-ho-b' });
    expect(await mc.acquire(account)).toEqual({ acquired: false, holder: 'inst-ho-b', retryAfterMs: reserve });
    clock += reserve - 1;
    expect(await mc.acquire(account)).toMatchObject({ acquired: false, retryAfterMs: 1 });
    clock += 1;
    // The receiver never came: anyone may take it now.
    expect(await mc.acquire(account)).toMatchObject({ acquired: true, grant: { epoch: 2, instanceId: 'inst-ho-c' }, tookOverFrom: null });
    expect((await db.doc(`leases/${account}`).get()).get('handoverTo')).toBeUndefined();

    // The receiver takes a lease handed to it at once.
    const other = `acc-${randomUUID().slice(0, 8)}`;
    const hbC = await startHeartbeat(c);
    await mc.acquire(other);
    expect(await mc.handOver(other, 'inst-ho-b')).toBe(true);
    const b = identity('inst-ho-b', { host: 'vm-b', storagePath: '/data/b' });
    const mb = new LeaseManager(db, b, { ttlMs: TTL, hostLockHeld: true, handoverReserveMs: reserve });
    expect(await mb.acquire(other)).toMatchObject({ acquired: true, grant: { epoch: 2, instanceId: 'inst-ho-b' } });
    await Promise.all([hbA.stop(), hbC.stop()]);
  });

  it('a heartbeat that keeps changing keeps the lease alive', async () => {
    const account = `acc-${randomUUID().slice(0, 8)}`;
    const a = identity('inst-a3');
    const hbA = await startHeartbeat(a);
    await new LeaseManager(db, a, { ttlMs: TTL, hostLockHeld: false }).acquire(account);
    let clock = 0;
    const mb = new LeaseManager(db, identity('inst-b3', { host: 'vm-b' }), { ttlMs: TTL, hostLockHeld: false, now: () => clock });
    await mb.acquire(account);
    clock += TTL / 2;
    // A new beat (a new version of the heartbeat document) restarts the observation.
    await (hbA as unknown as { write(first: boolean): Promise<void> }).write(false);
    clock += TTL / 2 + 1;
    expect(await mb.acquire(account)).toMatchObject({ acquired: false, holder: 'inst-a3', retryAfterMs: TTL });
    await hbA.stop();
  });

  it('takes over at once from a holder that released, stopped, or restarted', async () => {
    const released = `acc-${randomUUID().slice(0, 8)}`;
    const stopped = `acc-${randomUUID().slice(0, 8)}`;
    const a = identity('inst-a4');
    const hbA = await startHeartbeat(a);
    const ma = new LeaseManager(db, a, { ttlMs: TTL, hostLockHeld: false });
    await ma.acquire(released);
    await ma.acquire(stopped);
    const mb = new LeaseManager(db, identity('inst-b4', { host: 'vm-b' }), { ttlMs: TTL, hostLockHeld: false });

    await ma.release([released]);
    expect(await mb.acquire(released)).toMatchObject({ acquired: true, grant: { epoch: 2 } });

    await hbA.stop({ markStopped: true });
    expect(await mb.acquire(stopped)).toMatchObject({ acquired: true, grant: { epoch: 2 }, tookOverFrom: 'inst-a4' });

    // Same instance id, new incarnation (a restarted process): the old incarnation's leases are dead.
    const restartedAccount = `acc-${randomUUID().slice(0, 8)}`;
    const c1 = identity('inst-c4');
    const hbC1 = await startHeartbeat(c1);
    await new LeaseManager(db, c1, { ttlMs: TTL, hostLockHeld: false }).acquire(restartedAccount);
    await hbC1.stop();
    const c2 = { ...c1, incarnation: randomUUID() };
    const hbC2 = await startHeartbeat(c2);
    expect(await new LeaseManager(db, c2, { ttlMs: TTL, hostLockHeld: false }).acquire(restartedAccount)).toMatchObject({ acquired: true, grant: { epoch: 2 } });
    await hbC2.stop();
  });

  it('takes over at once from a crashed holder that ran on the same disk, when holding the disk lock', async () => {
    const account = `acc-${randomUUID().slice(0, 8)}`;
    const crashed = identity('inst-crashed', { host: 'vm-z', storagePath: '/data/z' });
    const hb = await startHeartbeat(crashed);
    await new LeaseManager(db, crashed, { ttlMs: TTL, hostLockHeld: true }).acquire(account);
    await hb.stop(); // no markStopped: as after kill -9
    const successor = identity('inst-successor', { host: 'vm-z', storagePath: '/data/z' });
    expect(await new LeaseManager(db, successor, { ttlMs: TTL, hostLockHeld: false }).acquire(account)).toMatchObject({ acquired: false });
    expect(await new LeaseManager(db, successor, { ttlMs: TTL, hostLockHeld: true }).acquire(account)).toMatchObject({ acquired: true, grant: { epoch: 2 } });
  });

  it('after a crash on this disk, adopts the leases its dead predecessor held, even while that process\'s transactions still lock them', async () => {
    // Issue 16, item 7: a kill -9 restart took about a minute, because the takeover write waited
    // for Firestore to expire the locks of the killed process's unfinished transactions.
    const account = `acc-${randomUUID().slice(0, 8)}`;
    const dead = identity('inst-k1');
    const hbDead = await startHeartbeat(dead);
    const md = new LeaseManager(db, dead, { ttlMs: TTL, hostLockHeld: true });
    expect(await md.acquire(account)).toMatchObject({ acquired: true, grant: { epoch: 1 } });
    // The killed process was inside a fenced write: its transaction read the lease and never ended.
    const stuck = await lockedByUnfinishedTransaction(account);

    const next = identity('inst-k1');
    const hbNext = await startHeartbeat(next, { adoptedIncarnations: [dead.incarnation] });
    const mn = new LeaseManager(db, next, { ttlMs: TTL, hostLockHeld: true, adopt: [dead.incarnation] });
    const started = Date.now();
    expect(await mn.acquire(account)).toMatchObject({ acquired: true, grant: { epoch: 1, incarnation: dead.incarnation }, tookOverFrom: null });
    await mn.fenced(account, (tx, owner) => tx.set(db.doc(`accountStatus/${account}`), { phase: 'connected', owner }));
    // Far below the lock timeout a takeover write would have waited for.
    expect(Date.now() - started).toBeLessThan(1_500);
    expect((await db.doc(`leases/${account}`).get()).get('incarnation')).toBe(dead.incarnation);

    // Another instance sees the lease as alive: the heartbeat names the adopted incarnation.
    const other = new LeaseManager(db, identity('inst-k2', { host: 'vm-b', storagePath: '/data/b' }), { ttlMs: TTL, hostLockHeld: true });
    expect(await other.acquire(account)).toMatchObject({ acquired: false, holder: 'inst-k1' });

    await stuck.end();
    await mn.release([account]);
    expect((await db.doc(`leases/${account}`).get()).get('holder')).toBeNull();
    await Promise.all([hbDead.stop(), hbNext.stop()]);
  }, 30_000);

  it('never runs two acquires of one lease at once: a call after a timed-out one waits for that transaction instead of contending with it', async () => {
    const account = `acc-${randomUUID().slice(0, 8)}`;
    await db.doc(`leases/${account}`).set({ holder: null, incarnation: null, epoch: 3, acquiredAt: null, releasedAt: null });
    // An unfinished transaction of a killed process holds a read lock: the takeover write waits.
    const stuck = await lockedByUnfinishedTransaction(account);
    // The real client, counting the transactions it is asked for.
    let transactions = 0;
    const counted = new Proxy(db, {
      get(target, key) {
        if (key === 'runTransaction') return (...args: Parameters<Firestore['runTransaction']>) => (transactions++, target.runTransaction(...args));
        const value = Reflect.get(target, key, target) as unknown;
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const me = identity('inst-sf');
    const hb = await startHeartbeat(me);
    const m = new LeaseManager(counted, me, { ttlMs: TTL, hostLockHeld: false, callTimeoutMs: 300 });
    await expect(m.acquire(account)).rejects.toThrow(/lease acquire/);
    await expect(m.acquire(account)).rejects.toThrow(/lease acquire/);
    expect(transactions).toBe(1);
    await stuck.end();
    const again = await waitFor(async () => {
      const r = await m.acquire(account).catch(() => null);
      return r?.acquired ? r : null;
    }, { timeoutMs: 20_000, intervalMs: 100, label: 'the lease once the lock is gone' });
    expect(again).toMatchObject({ acquired: true, grant: { epoch: 4 } });
    expect(m.held(account)).toMatchObject({ epoch: 4 });
    await hb.stop();
  }, 40_000);

  it('grants a contended free lease to exactly one of several instances', async () => {
    const account = `acc-${randomUUID().slice(0, 8)}`;
    const ids = ['r1', 'r2', 'r3', 'r4'].map((n) => identity(`inst-${n}-${account}`));
    const hbs = await Promise.all(ids.map((id) => startHeartbeat(id)));
    const results = await Promise.all(ids.map((id) => new LeaseManager(db, id, { ttlMs: TTL, hostLockHeld: false }).acquire(account)));
    expect(results.filter((r) => r.acquired)).toHaveLength(1);
    expect((await db.doc(`leases/${account}`).get()).get('epoch')).toBe(1);
    await Promise.all(hbs.map((h) => h.stop()));
  });
});

describe('host lock', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeAll(async () => ({ dir, cleanup } = await tempDir('wafleet-lock-')));
  afterAll(() => cleanup());

  it('admits one holder at a time and hands over on release', async () => {
    const first = await acquireHostLock(dir, { waitMs: 1_000 });
    await expect(acquireHostLock(dir, { waitMs: 300, pollMs: 50 })).rejects.toBeInstanceOf(HostLockBusyError);
    const waiting = acquireHostLock(dir, { waitMs: 10_000, pollMs: 50 });
    await first.release();
    const second = await waiting;
    await second.release();
    expect(existsSync(path.join(dir, HOST_LOCK_NAME))).toBe(false);
  });

  it('is free again at once after its holder is killed with SIGKILL', async () => {
    const script = `
      import { acquireHostLock } from ${JSON.stringify(path.resolve(import.meta.dirname, '../src/lease/host-lock.ts'))};
      await acquireHostLock(process.argv[1], { waitMs: 1000 });
      console.log('locked');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    await waitFor(() => out.includes('locked'), { timeoutMs: 20_000 });
    await expect(acquireHostLock(dir, { waitMs: 200, pollMs: 50 })).rejects.toBeInstanceOf(HostLockBusyError);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(existsSync(path.join(dir, HOST_LOCK_NAME))).toBe(true); // left behind by the dead owner
    const lock = await acquireHostLock(dir, { waitMs: 1_000 });
    await lock.release();
  });
});
