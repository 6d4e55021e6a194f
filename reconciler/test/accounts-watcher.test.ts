/**
 * Issue 16, item 10: the periodic re-read of `accounts` and the listener answer in any order. A
 * re-read answered before a change and delivered after it must not undo the change: not replace
 * a newer spec, not remove an account created since, not bring back one deleted since.
 * Against the real Firestore emulator; only the re-read's answer is held back.
 */
import { getApps, initializeApp } from 'firebase-admin/app';
import { getFirestore, Timestamp, type CollectionReference, type Firestore, type QuerySnapshot } from 'firebase-admin/firestore';
import pino from 'pino';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isolatedProjectId } from '../../test/support/emulators.ts';
import { AccountsWatcher } from '../src/watch/accounts-watcher.ts';
import { waitFor } from './helpers.ts';

let db: Firestore;
const log = pino({ level: 'silent' });
let watcher: AccountsWatcher | null = null;

beforeAll(() => {
  const app = getApps().find((a) => a.name === 'watcher') ?? initializeApp({ projectId: isolatedProjectId('watcher') }, 'watcher');
  db = getFirestore(app);
});
afterEach(() => watcher?.stop());

/**
 * The same Firestore, except that a `get()` of `accounts` reads at once but answers only when the
 * test releases it: the window in which a slow re-read meets newer listener events.
 */
function withHeldReRead(real: Firestore) {
  let release: () => void = () => undefined;
  let held: Promise<void> | null = null;
  let read: () => void = () => undefined;
  const readDone = new Promise<void>((r) => (read = r));
  const proxy = new Proxy(real, {
    get(target, prop) {
      if (prop !== 'collection') return Reflect.get(target, prop, target) as unknown;
      return (name: string) => {
        const ref = target.collection(name);
        if (!held) return ref;
        const gate = held;
        return new Proxy(ref, {
          get(t, p) {
            if (p !== 'get') return Reflect.get(t, p, t) as unknown;
            return async () => {
              const snap: QuerySnapshot = await (t as CollectionReference).get();
              read();
              await gate;
              return snap;
            };
          },
        });
      };
    },
  });
  return {
    db: proxy,
    hold() {
      held = new Promise<void>((r) => (release = r));
    },
    release: () => release(),
    readDone,
  };
}

const account = (desiredState: string) => ({ displayName: 'w', desiredState, createdAt: Timestamp.now(), updatedAt: Timestamp.now(), updatedBy: 'test' });

describe('accounts watcher', () => {
  it('a re-read answered late undoes nothing that changed meanwhile', async () => {
    const changed: string[] = [];
    const held = withHeldReRead(db);
    const w = (watcher = new AccountsWatcher({ db: held.db, log, onChange: (id) => changed.push(id), resyncEveryMs: 3_600_000 }));
    await db.doc('accounts/w-edit').set(account('connected'));
    await db.doc('accounts/w-gone').set(account('connected'));
    await w.start();
    expect(w.get('w-edit').doc?.desiredState).toBe('connected');

    held.hold();
    const reRead = w.resync();
    await held.readDone;
    // While the re-read's answer is on its way: an edit, a create and a delete, all seen by the listener.
    await db.doc('accounts/w-edit').update({ desiredState: 'disconnected', updatedAt: Timestamp.now() });
    await db.doc('accounts/w-new').set(account('connected'));
    await db.doc('accounts/w-gone').delete();
    await waitFor(() => w.get('w-edit').doc?.desiredState === 'disconnected' && w.get('w-new').exists && !w.get('w-gone').exists, {
      timeoutMs: 20_000,
      label: 'the listener saw all three',
    });
    held.release();
    await reRead;

    expect(w.get('w-edit').doc?.desiredState).toBe('disconnected');
    expect(w.get('w-new').exists).toBe(true);
    expect(w.get('w-gone').exists).toBe(false);
    expect(w.ids()).toEqual(['w-edit', 'w-new']);

    // A later re-read, answered in order, agrees and finds nothing missed.
    await w.resync();
    expect(w.ids()).toEqual(['w-edit', 'w-new']);
    expect(w.get('w-edit').doc?.desiredState).toBe('disconnected');
  }, 60_000);
});
