/**
 * Validation of client writes to outbox/{messageId} (firestore.rules, validOutboxCreate).
 * Every test speaks as an operator, who may queue messages at all, so a denial is about the
 * document. Each rule has a case that breaks it, next to cases that pass.
 */
import { afterAll, beforeAll, describe, it } from 'vitest';
import { assertFails, assertSucceeds, type RulesTestEnvironment } from '@firebase/rules-unit-testing';
import {
  deleteDoc,
  doc,
  serverTimestamp,
  setDoc,
  Timestamp,
  updateDoc,
  type DocumentData,
  type Firestore,
} from 'firebase/firestore';
import { clientsFor, principal, runPrefix, seed, startRulesEnv } from './support.ts';

const RUN = runPrefix('o');
const ACCOUNT = `${RUN}-acct`;
const DELETING = `${RUN}-deleting`;
const UID = principal('operator').uid;

let env: RulesTestEnvironment;
let db: Firestore;
let n = 0;

function newId(): string {
  n += 1;
  return `${RUN}-${n}`;
}

/** What sendMessage would queue, minus the idempotency key. */
function message(): DocumentData {
  return {
    accountId: ACCOUNT,
    to: '+14155550123',
    text: 'Your order has shipped.',
    createdAt: serverTimestamp(),
    createdBy: UID,
    status: 'queued',
  };
}

const create = (data: DocumentData, id = newId()) => setDoc(doc(db, 'outbox', id), data);

beforeAll(async () => {
  env = await startRulesEnv();
  db = clientsFor(env)('operator');
  const now = Timestamp.now();
  await seed(env, {
    [`accounts/${ACCOUNT}`]: { displayName: 'Outbox tests', desiredState: 'connected', createdAt: now, updatedAt: now, updatedBy: UID },
    [`accounts/${DELETING}`]: {
      displayName: 'Being deleted', desiredState: 'connected', createdAt: now, updatedAt: now, updatedBy: UID, deleteRequestedAt: now,
    },
  });
});

afterAll(async () => {
  await env?.cleanup();
});

describe.concurrent('outbox: create', () => {
  it('accepts a queued message', async () => {
    await assertSucceeds(create(message()));
  });

  it('accepts attemptCount 0', async () => {
    await assertSucceeds(create({ ...message(), attemptCount: 0 }));
  });

  it.each([
    ['an E.164 number', '+4930123456'],
    ['the shortest E.164 number', '+1234567'],
    ['the longest E.164 number', '+123456789012345'],
    ['a user JID', '14155550123@s.whatsapp.net'],
    ['a user JID with a device', '14155550123:12@s.whatsapp.net'],
    ['a LID', '123456789012345@lid'],
    ['a group JID', '120363041234567890@g.us'],
    ['an old-style group JID', '14155550123-1600000000@g.us'],
  ])('accepts "to" as %s', async (_, to) => {
    await assertSucceeds(create({ ...message(), to }));
  });

  it('accepts text of 1 and of 4096 characters', async () => {
    await assertSucceeds(create({ ...message(), text: '.' }));
    await assertSucceeds(create({ ...message(), text: 'x'.repeat(4096) }));
  });

  it.each([
    ['one of 64 characters', `${RUN}-${'A'.repeat(63 - RUN.length)}`],
    ['one with "-" and "_" and capitals', `${RUN}-Msg_01-A`],
  ])('accepts an id: %s', async (_, id) => {
    await assertSucceeds(create(message(), id));
  });

  it.each([
    ['65 characters', `${RUN}-${'x'.repeat(64 - RUN.length)}`],
    ['a dot', `${RUN}.1`],
    ['a space', `${RUN} 1`],
    ['a colon', `${RUN}:1`],
    ['a non-ASCII letter', `${RUN}é`],
  ])('rejects an id with %s', async (_, id) => {
    await assertFails(create(message(), id));
  });

  it.each([
    // What only sendMessage may set: it checks the key against earlier messages.
    ['idempotencyKey', 'key-1'],
    // What only the reconciler and cancelMessage set.
    ['nextAttemptAt', Timestamp.now()],
    ['claimedBy', { instanceId: 'me', epoch: 1 }],
    ['providerMessageId', 'ABCD'],
    ['sentAt', Timestamp.now()],
    ['error', { code: 'X', message: 'y' }],
    ['cancelledAt', Timestamp.now()],
    ['cancelledBy', 'uid-operator'],
    ['foo', 'bar'],
  ])('rejects the key %s', async (key, value) => {
    await assertFails(create({ ...message(), [key]: value }));
  });

  it.each(['accountId', 'to', 'text', 'createdAt', 'createdBy', 'status'])('requires %s', async (key) => {
    const data = message();
    delete data[key];
    await assertFails(create(data));
  });

  it.each(['sending', 'sent', 'delivered', 'read', 'failed', 'cancelled', 'Queued', null])(
    'rejects status %s (must be queued)',
    async (status) => {
      await assertFails(create({ ...message(), status }));
    },
  );

  it('rejects createdBy other than the caller', async () => {
    await assertFails(create({ ...message(), createdBy: 'uid-admin' }));
  });

  it.each([
    ['in the past', Timestamp.fromMillis(Date.now() - 60_000)],
    ['in the future', Timestamp.fromMillis(Date.now() + 60_000)],
    ['a string', '2026-01-01T00:00:00Z'],
  ])('rejects createdAt %s (must be request.time)', async (_, createdAt) => {
    await assertFails(create({ ...message(), createdAt }));
  });

  it('rejects a message for an account that does not exist', async () => {
    await assertFails(create({ ...message(), accountId: `${RUN}-missing` }));
  });

  it('rejects a message for an account that is being deleted', async () => {
    await assertFails(create({ ...message(), accountId: DELETING }));
  });

  it.each([
    ['uppercase', ACCOUNT.toUpperCase()],
    ['a path', `${ACCOUNT}/x`],
    ['a number', 1],
  ])('rejects an accountId that is %s', async (_, accountId) => {
    await assertFails(create({ ...message(), accountId }));
  });

  it.each([
    ['empty', ''],
    ['4097 characters', 'x'.repeat(4097)],
    ['only white space', ' \n\t '],
    ['only Unicode white space', '\u00a0\u2028'],
    ['not a string', 42],
  ])('rejects text that is %s', async (_, text) => {
    await assertFails(create({ ...message(), text }));
  });

  it.each([
    ['a number without "+"', '14155550123'],
    ['a formatted number', '+1 415 555 0123'],
    ['a too short number', '+123456'],
    ['a too long number', '+1234567890123456'],
    ['a number with a leading zero', '+04155550123'],
    ['an e-mail address', 'someone@example.com'],
    ['a JID with a too short user', '1234@s.whatsapp.net'],
    ['a JID of an unknown server', '14155550123@c.us'],
    ['a JID with surrounding space', ' 14155550123@s.whatsapp.net'],
    ['empty', ''],
    ['a number type', 14155550123],
  ])('rejects "to" as %s', async (_, to) => {
    await assertFails(create({ ...message(), to }));
  });

  it.each([1, -1, '0', 0.5, null])('rejects attemptCount %s', async (attemptCount) => {
    await assertFails(create({ ...message(), attemptCount }));
  });
});

describe.concurrent('outbox: after create', () => {
  it('the creator can neither update nor delete a queued message (cancelMessage does it)', async () => {
    const id = newId();
    await assertSucceeds(create(message(), id));
    const ref = doc(db, 'outbox', id);
    await assertFails(updateDoc(ref, { status: 'cancelled', cancelledAt: serverTimestamp(), cancelledBy: UID }));
    await assertFails(updateDoc(ref, { text: 'edited' }));
    await assertFails(deleteDoc(ref));
  });

  it('a second create on an existing id is an update, and denied', async () => {
    const id = newId();
    await assertSucceeds(create(message(), id));
    await assertFails(create(message(), id));
  });
});
