/**
 * setUserRole's audit trail when a write fails half way (issue 10, item 8). The role change runs
 * in-process against the real Auth and Firestore emulators; the fault is real too: the role
 * change reaches Firestore through a TCP proxy that is cut the moment the claim has been set.
 */
import { initializeApp } from 'firebase-admin/app';
import { getFirestore, Timestamp, type Firestore } from 'firebase-admin/firestore';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminAuth, signInAs } from '../../test/support/auth.ts';
import { isolatedProjectId } from '../../test/support/emulators.ts';
import { TcpProxy } from '../../test/support/tcp-proxy.ts';
import { changeUserRole } from '../src/role-change.ts';

let proxy: TcpProxy;
beforeAll(async () => {
  proxy = TcpProxy.forHostPort(process.env.FIRESTORE_EMULATOR_HOST!);
  await proxy.start();
});
afterAll(() => proxy.stop());

// A Firestore project per test (the lock is per project), none shared with callables.test.ts.
let n = 0;
let reader: Firestore;
function firestore(opts: { viaProxy?: boolean } = {}): Firestore {
  const projectId = isolatedProjectId(`role-audit-${n++}`);
  reader = getFirestore(initializeApp({ projectId }, `${projectId}-reader`));
  // The SDK takes the emulator address from the environment when the client is made.
  const direct = process.env.FIRESTORE_EMULATOR_HOST;
  if (opts.viaProxy) process.env.FIRESTORE_EMULATOR_HOST = proxy.address;
  try {
    return getFirestore(initializeApp({ projectId }, projectId));
  } finally {
    process.env.FIRESTORE_EMULATOR_HOST = direct;
  }
}

async function entriesFor(uid: string) {
  const snap = await reader.collection('auditLog').where('target.id', '==', uid).get();
  return snap.docs.map((d) => d.data());
}

describe('every role change is audited', () => {
  it('keeps a "requested" entry when the write after the claim change fails', async () => {
    const [admin, target] = await Promise.all([signInAs('admin', 'audit-admin'), signInAs('viewer', 'audit-target')]);
    const db = firestore({ viaProxy: true });
    const auth = adminAuth();
    // Real Auth; the role change's way to Firestore is cut right after the claim is written.
    const faulty = new Proxy(auth, {
      get(obj, prop, receiver) {
        if (prop === 'setCustomUserClaims') {
          return async (uid: string, claims: object | null) => {
            await obj.setCustomUserClaims(uid, claims);
            proxy.cut();
          };
        }
        const value = Reflect.get(obj, prop, receiver) as unknown;
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(obj) : value;
      },
    });
    const caller = { uid: admin.uid, role: 'admin' as const, email: admin.email };
    // The claim did change, so the call reports success; only its confirmation is lost.
    await expect(changeUserRole({ auth: faulty, db }, caller, { uid: target.uid, role: 'operator' })).resolves.toEqual({ uid: target.uid, role: 'operator' });
    expect((await auth.getUser(target.uid)).customClaims).toEqual({ role: 'operator' });
    const entries = await entriesFor(target.uid);
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ action: 'setUserRole', status: 'requested', actorUid: admin.uid, details: { role: 'operator', previousRole: 'viewer' } });
    expect(entries[0]!.at).toBeInstanceOf(Timestamp);
  });

  it('marks the entry failed when the change is refused under the lock, and releases the lock', async () => {
    const [admin, target] = await Promise.all([signInAs('admin', 'audit-admin2'), signInAs('viewer', 'audit-target2')]);
    const db = firestore();
    // Demoted between its authorization and the lock: the re-read under the lock refuses it.
    await adminAuth().setCustomUserClaims(admin.uid, null);
    const caller = { uid: admin.uid, role: 'admin' as const, email: admin.email };
    await expect(changeUserRole({ auth: adminAuth(), db }, caller, { uid: target.uid, role: 'admin' })).rejects.toMatchObject({ code: 'permission-denied' });
    expect((await adminAuth().getUser(target.uid)).customClaims).toEqual({ role: 'viewer' });
    expect(await entriesFor(target.uid)).toEqual([expect.objectContaining({ status: 'failed', error: 'permission-denied', details: { role: 'admin', previousRole: 'viewer' } })]);
    expect((await reader.doc('locks/userRoles').get()).exists).toBe(false);
  });

  it('refuses a change while another holds the lock, and takes over a lock past its time', async () => {
    const [admin, target] = await Promise.all([signInAs('admin', 'audit-admin3'), signInAs('viewer', 'audit-target3')]);
    const db = firestore();
    const caller = { uid: admin.uid, role: 'admin' as const, email: admin.email };
    await reader.doc('locks/userRoles').set({ entryId: 'other', holderUid: 'x', until: Timestamp.fromMillis(Date.now() + 30_000) });
    await expect(changeUserRole({ auth: adminAuth(), db }, caller, { uid: target.uid, role: 'operator' })).rejects.toMatchObject({ code: 'aborted' });
    expect(await entriesFor(target.uid)).toHaveLength(0);
    // A lock past its time is a dead invocation's.
    await reader.doc('locks/userRoles').set({ entryId: 'other', holderUid: 'x', until: Timestamp.fromMillis(Date.now() - 1) });
    await expect(changeUserRole({ auth: adminAuth(), db }, caller, { uid: target.uid, role: 'operator' })).resolves.toEqual({ uid: target.uid, role: 'operator' });
    expect(await entriesFor(target.uid)).toEqual([expect.objectContaining({ status: 'applied' })]);
    expect((await reader.doc('locks/userRoles').get()).exists).toBe(false);
  });
});
