/**
 * Validation of client writes to accounts/{accountId} (firestore.rules, validAccountCreate and
 * validAccountUpdate). Every test speaks as an operator, who may write accounts at all, so a
 * denial is about the document. Each rule has a case that breaks it, next to cases that pass.
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

/** The least document a client may create: the required keys, stamped now by the caller. */
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

/** Removes a fixed-id account an earlier run against the same emulator may have left. */
async function vacate(id: string): Promise<void> {
  await deleteDoc(doc(seeder.db, 'accounts', id));
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

describe.concurrent('accounts: create', () => {
  it('accepts the minimal document', async () => {
    await assertSucceeds(create(minimal()));
  });

  it('accepts every client-writable field at its limits', async () => {
    await assertSucceeds(
      create({
        ...minimal(),
        displayName: 'x'.repeat(80),
        desiredState: 'disconnected',
        phoneNumber: '+14155550123',
        linkMethod: 'pairingCode',
        labels: { ...labels(31), ['k'.repeat(63)]: 'v'.repeat(256) },
        qrRequestedAt: serverTimestamp(),
        relinkRequestedAt: serverTimestamp(),
      }),
    );
  });

  it.each(['connected', 'disconnected', 'loggedOut'])('accepts desiredState %s', async (state) => {
    await assertSucceeds(create({ ...minimal(), desiredState: state }));
  });

  it.each(['a', '0', 'wa-01', 'wa_01', '9-lines_x', 'a'.repeat(40)])('accepts the id %s', async (id) => {
    await vacate(id);
    await assertSucceeds(create(minimal(), id));
  });

  it.each(['WA-01', '-wa', '_wa', 'wa.01', 'wa 01', 'wä', 'a'.repeat(41)])('rejects the id "%s"', async (id) => {
    await assertFails(create(minimal(), id));
  });

  it.each(['deleteRequestedAt', 'phase', 'reason', 'owner', 'lastConnectedAt', 'status', 'foo'])(
    'rejects the key %s',
    async (key) => {
      await assertFails(create({ ...minimal(), [key]: key === 'deleteRequestedAt' ? serverTimestamp() : 'x' }));
    },
  );

  it.each(['displayName', 'desiredState', 'createdAt', 'updatedAt', 'updatedBy'])('requires %s', async (key) => {
    const data = minimal();
    delete data[key];
    await assertFails(create(data));
  });

  it.each([
    ['createdAt', Timestamp.fromMillis(Date.now() - 60_000)],
    ['createdAt', Timestamp.fromMillis(Date.now() + 60_000)],
    ['updatedAt', Timestamp.fromMillis(Date.now() - 60_000)],
    ['updatedBy', 'uid-someone-else'],
    ['updatedBy', null],
  ])('rejects %s = %s (must be request.time / the caller)', async (key, value) => {
    await assertFails(create({ ...minimal(), [key]: value }));
  });

  it.each([
    ['empty', ''],
    ['81 characters', 'x'.repeat(81)],
    ['only spaces', '   '],
    ['only Unicode white space', '\u00a0\u3000\ufeff'],
    ['not a string', 42],
    ['null', null],
  ])('rejects a displayName that is %s', async (_, value) => {
    await assertFails(create({ ...minimal(), displayName: value }));
  });

  it.each(['online', 'Connected', '', null, 1])('rejects desiredState %s', async (value) => {
    await assertFails(create({ ...minimal(), desiredState: value }));
  });

  it.each(['+14155550123', '+4930123456', '+1234567', '+123456789012345'])('accepts phoneNumber %s', async (value) => {
    await assertSucceeds(create({ ...minimal(), phoneNumber: value }));
  });

  it.each([
    ['no plus', '14155550123'],
    ['leading zero', '+04155550123'],
    ['too short', '+123456'],
    ['too long', '+1234567890123456'],
    ['formatted', '+1 415 555 0123'],
    ['letters', '+1415555CALL'],
    ['a number', 14155550123],
    ['null on create', null],
  ])('rejects phoneNumber: %s', async (_, value) => {
    await assertFails(create({ ...minimal(), phoneNumber: value }));
  });

  it.each(['sms', 'QR', null])('rejects linkMethod %s', async (value) => {
    await assertFails(create({ ...minimal(), linkMethod: value }));
  });

  it('accepts linkMethod qr without a phone number', async () => {
    await assertSucceeds(create({ ...minimal(), linkMethod: 'qr' }));
  });

  it('rejects linkMethod pairingCode without a phone number', async () => {
    await assertFails(create({ ...minimal(), linkMethod: 'pairingCode' }));
  });

  it('accepts empty labels, and labels with empty values', async () => {
    await assertSucceeds(create({ ...minimal(), labels: {} }));
    await assertSucceeds(create({ ...minimal(), labels: { a: '', b: '', ['b'.repeat(63)]: '' } }));
  });

  it('accepts values with newlines and other white space, counted in full', async () => {
    await assertSucceeds(create({ ...minimal(), labels: { note: `\n${'v'.repeat(254)}\t` } }));
    await assertFails(create({ ...minimal(), labels: { note: `\n${'v'.repeat(255)}\t` } }));
  });

  it('accepts 32 labels and rejects 33', async () => {
    await assertSucceeds(create({ ...minimal(), labels: labels(32) }));
    await assertFails(create({ ...minimal(), labels: labels(33) }));
  });

  it.each([
    ['a key starting with a digit', { '1abc': 'v' }],
    ['a key with a space', { 'has space': 'v' }],
    ['a key of 64 characters', { ['k'.repeat(64)]: 'v' }],
    ['a bad key after 31 good ones', { ...labels(31), 'zz bad': 'v' }],
    ['a value of 257 characters', { team: 'v'.repeat(257) }],
    ['a value of 257 characters after 31 good ones', { ...labels(31), zz: 'v'.repeat(257) }],
    ['a key with a comma (two valid-looking halves)', { 'team,region': 'v' }],
    ['a value containing U+0000 (the rules\' separator)', { team: 'a\u0000b' }],
    ['a value that is not a string', { team: 1 }],
    ['a non-string value after 24 good ones', { ...labels(24), zz: null }],
    ['a map value', { team: { name: 'sales' } }],
    ['a boolean value as the 32nd label', { ...labels(31), zz: true }],
  ])('rejects labels with %s', async (_, value) => {
    await assertFails(create({ ...minimal(), labels: value }));
  });

  it.each([
    ['a list', ['a', 'b']],
    ['a string', 'team=a'],
  ])('rejects labels that are %s', async (_, value) => {
    await assertFails(create({ ...minimal(), labels: value }));
  });

  it.each(['qrRequestedAt', 'relinkRequestedAt'])('rejects %s other than request.time', async (key) => {
    await assertFails(create({ ...minimal(), [key]: Timestamp.fromMillis(Date.now() - 60_000) }));
  });

  it('rejects deleteRequestedAt even as request.time', async () => {
    await assertFails(create({ ...minimal(), deleteRequestedAt: serverTimestamp() }));
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

  it.each([
    ['empty', ''],
    ['81 characters', 'x'.repeat(81)],
    ['only white space', ' \t '],
    ['removed', deleteField()],
  ])('rejects a displayName that is %s', async (_, value) => {
    const id = await existing();
    await assertFails(update(id, patch({ displayName: value })));
  });

  it.each([
    ['"online"', 'online'],
    ['null', null],
    ['removed', deleteField()],
  ])('rejects desiredState %s', async (_, value) => {
    const id = await existing();
    await assertFails(update(id, patch({ desiredState: value })));
  });

  it.each(['14155550123', '+1 415 555 0123', '+123456', ''])('rejects phoneNumber "%s"', async (value) => {
    const id = await existing();
    await assertFails(update(id, patch({ phoneNumber: value })));
  });

  it.each(['sms', null])('rejects linkMethod %s', async (value) => {
    const id = await existing();
    await assertFails(update(id, patch({ linkMethod: value })));
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

  it('rejects 33 labels', async () => {
    const id = await existing();
    await assertFails(update(id, patch({ labels: labels(33) })));
  });

  it('rejects a bad label key', async () => {
    const id = await existing();
    await assertFails(update(id, patch({ labels: { 'no spaces': 'v' } })));
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
