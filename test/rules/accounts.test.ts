/**
 * Client writes to accounts/{accountId} (firestore.rules): creates are refused (createAccount
 * only), updates are validated by validAccountUpdate. Every test speaks as an operator, who may
 * update accounts at all, so a denial is about the document. Each rule has a case that breaks
 * it, next to cases that pass. The values of each field are the shared cases of
 * contract/test/field-cases.ts, run by field-cases.test.ts.
 */
import { afterAll, beforeAll, describe, it } from 'vitest';
import { assertFails, assertSucceeds, type RulesTestEnvironment } from '@firebase/rules-unit-testing';
import {
  deleteDoc,
  deleteField,
  doc,
  serverTimestamp,
  setDoc,
  Timestamp,
  updateDoc,
  type DocumentData,
  type Firestore,
} from 'firebase/firestore';
import { clientsFor, openSeeder, principal, runPrefix, startRulesEnv } from './support.ts';

const RUN = runPrefix('a');
const OPERATOR = principal('operator');
const UID = OPERATOR.uid;

let env: RulesTestEnvironment;
let db: Firestore;
let adminDb: Firestore;
let seeder: Awaited<ReturnType<typeof openSeeder>>;
let n = 0;

/** A fresh, valid account id for this run. */
function newId(): string {
  n += 1;
  return `${RUN}-${n}`;
}

/** The least account createAccount writes, stamped now by the caller. */
function minimal(): DocumentData {
  return {
    displayName: 'Sales line 1',
    desiredState: 'connected',
    createdAt: serverTimestamp(),
    updatedAt: serverTimestamp(),
    updatedBy: UID,
  };
}

function labels(count: number, value = 'v'): Record<string, string> {
  return Object.fromEntries(Array.from({ length: count }, (_, i) => [`label${i}`, value]));
}

const create = (data: DocumentData, id = newId()) => setDoc(doc(db, 'accounts', id), data);

/** Seeds (rules disabled) an account as the callables would have written it; returns its id. */
async function existing(extra: DocumentData = {}): Promise<string> {
  const id = newId();
  const past = Timestamp.fromMillis(Date.now() - 3_600_000);
  await setDoc(doc(seeder.db, 'accounts', id), {
    displayName: 'Existing',
    desiredState: 'connected',
    createdAt: past,
    updatedAt: past,
    updatedBy: 'uid-someone-else',
    ...extra,
  });
  return id;
}

/** A valid update: the change plus the stamps every update must carry. */
function patch(change: DocumentData): DocumentData {
  return { ...change, updatedAt: serverTimestamp(), updatedBy: UID };
}

const update = (id: string, data: DocumentData) => updateDoc(doc(db, 'accounts', id), data);

beforeAll(async () => {
  env = await startRulesEnv();
  const client = clientsFor(env);
  db = client('operator');
  adminDb = client('admin');
  seeder = await openSeeder(env);
});

afterAll(async () => {
  await seeder?.close();
  await env?.cleanup();
});

describe.concurrent('accounts: create (only through createAccount)', () => {
  // createAccount counts the fleet against MAX_ACCOUNTS in a transaction; rules cannot count,
  // so a direct create would be a way past the cap.
  it.each(['operator', 'admin'] as const)('refuses a valid document from an %s', async (name) => {
    const as = name === 'admin' ? adminDb : db;
    const uid = principal(name).uid;
    await assertFails(setDoc(doc(as, 'accounts', newId()), { ...minimal(), updatedBy: uid }));
  });

  it('refuses every client-writable field at its limits', async () => {
    await assertFails(
      create({
        ...minimal(),
        displayName: 'x'.repeat(80),
        desiredState: 'disconnected',
        phoneNumber: '+14155550123',
        linkMethod: 'pairingCode',
        labels: labels(32),
        qrRequestedAt: serverTimestamp(),
        relinkRequestedAt: serverTimestamp(),
      }),
    );
  });

  it('refuses re-creating an account the reconciler has removed', async () => {
    const id = await existing();
    await deleteDoc(doc(seeder.db, 'accounts', id));
    await assertFails(create(minimal(), id));
  });
});

describe.concurrent('accounts: update', () => {
  it('accepts a rename stamped by the caller', async () => {
    const id = await existing();
    await assertSucceeds(update(id, patch({ displayName: 'Renamed' })));
  });

  it('accepts every client-writable field', async () => {
    const id = await existing();
    await assertSucceeds(
      update(
        id,
        patch({
          displayName: 'y'.repeat(80),
          desiredState: 'loggedOut',
          phoneNumber: '+4930123456',
          linkMethod: 'pairingCode',
          labels: labels(32),
          qrRequestedAt: serverTimestamp(),
          relinkRequestedAt: serverTimestamp(),
        }),
      ),
    );
  });

  it('accepts a full set() that keeps createdAt', async () => {
    const past = Timestamp.fromMillis(Date.now() - 3_600_000);
    const id = await existing({ createdAt: past });
    await assertSucceeds(setDoc(doc(db, 'accounts', id), { ...minimal(), createdAt: past, desiredState: 'disconnected' }));
  });

  it('accepts requesting a QR code or a relink (the timestamps are request.time)', async () => {
    const id = await existing();
    await assertSucceeds(update(id, patch({ qrRequestedAt: serverTimestamp() })));
    await assertSucceeds(update(id, patch({ relinkRequestedAt: serverTimestamp() })));
  });

  it('accepts removing the phone number with null or deleteField()', async () => {
    const a = await existing({ phoneNumber: '+14155550123' });
    await assertSucceeds(update(a, patch({ phoneNumber: null })));
    const b = await existing({ phoneNumber: '+14155550123' });
    await assertSucceeds(update(b, patch({ phoneNumber: deleteField() })));
  });

  it('accepts removing the labels with null', async () => {
    const id = await existing({ labels: { team: 'sales' } });
    await assertSucceeds(update(id, patch({ labels: null })));
  });

  it('leaves fields it does not change alone (server-added fields do not block updates)', async () => {
    const id = await existing({ someFutureServerField: 1, desiredState: 'connected' });
    await assertSucceeds(update(id, patch({ desiredState: 'disconnected' })));
  });

  it('rejects an update without the stamps', async () => {
    const id = await existing();
    await assertFails(update(id, { displayName: 'Renamed' }));
  });

  it.each([
    ['updatedAt in the past', { updatedAt: Timestamp.fromMillis(Date.now() - 60_000) }],
    ['updatedBy someone else', { updatedBy: 'uid-someone-else' }],
    ['updatedAt removed', { updatedAt: deleteField() }],
  ])('rejects %s', async (_, stamps) => {
    const id = await existing();
    await assertFails(update(id, { ...patch({ displayName: 'Renamed' }), ...stamps }));
  });

  it.each([
    ['to request.time', serverTimestamp()],
    ['to another time', Timestamp.fromMillis(0)],
    ['by removing it', deleteField()],
  ])('rejects changing createdAt %s', async (_, value) => {
    const id = await existing();
    await assertFails(update(id, patch({ createdAt: value })));
  });

  it.each(['foo', 'phase', 'owner', 'status'])('rejects writing the key %s', async (key) => {
    const id = await existing();
    await assertFails(update(id, patch({ [key]: 'x' })));
  });

  it('rejects changing a server-added field', async () => {
    const id = await existing({ someFutureServerField: 1 });
    await assertFails(update(id, patch({ someFutureServerField: 2 })));
  });

  it('rejects setting deleteRequestedAt (only deleteAccount may)', async () => {
    const id = await existing();
    await assertFails(update(id, patch({ deleteRequestedAt: serverTimestamp() })));
  });

  it('rejects any update once deleteRequestedAt is set', async () => {
    const id = await existing({ deleteRequestedAt: Timestamp.fromMillis(Date.now() - 1_000) });
    await assertFails(update(id, patch({ displayName: 'Renamed' })));
    await assertFails(update(id, patch({ desiredState: 'connected' })));
    await assertFails(update(id, patch({ deleteRequestedAt: null })));
  });

  it('accepts updates while deleteRequestedAt is null', async () => {
    const id = await existing({ deleteRequestedAt: null });
    await assertSucceeds(update(id, patch({ displayName: 'Renamed' })));
  });

  it('rejects removing the displayName', async () => {
    const value = deleteField();
    const id = await existing();
    await assertFails(update(id, patch({ displayName: value })));
  });

  it('rejects removing the desiredState', async () => {
    const value = deleteField();
    const id = await existing();
    await assertFails(update(id, patch({ desiredState: value })));
  });

  it('rejects linkMethod pairingCode when the account has no phone number', async () => {
    const id = await existing();
    await assertFails(update(id, patch({ linkMethod: 'pairingCode' })));
  });

  it('accepts linkMethod pairingCode when the account already has a phone number', async () => {
    const id = await existing({ phoneNumber: '+14155550123' });
    await assertSucceeds(update(id, patch({ linkMethod: 'pairingCode' })));
  });

  it('rejects removing the phone number of a pairingCode account', async () => {
    const id = await existing({ phoneNumber: '+14155550123', linkMethod: 'pairingCode' });
    await assertFails(update(id, patch({ phoneNumber: null })));
    await assertFails(update(id, patch({ phoneNumber: deleteField() })));
  });

  it.each(['qrRequestedAt', 'relinkRequestedAt'])('rejects %s other than request.time, or removing it', async (key) => {
    const id = await existing({ [key]: Timestamp.fromMillis(Date.now() - 60_000) });
    await assertFails(update(id, patch({ [key]: Timestamp.fromMillis(Date.now() - 1_000) })));
    await assertFails(update(id, patch({ [key]: deleteField() })));
    await assertFails(update(id, patch({ [key]: null })));
  });

  it('rejects deleting an account, even for an admin (deleteAccount does it)', async () => {
    const id = await existing();
    await assertFails(deleteDoc(doc(adminDb, 'accounts', id)));
  });
});
