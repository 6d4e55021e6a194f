/**
 * Validation of client writes to outbox/{messageId} (firestore.rules, validOutboxCreate).
 * Every test speaks as an operator, who may queue messages at all, so a denial is about the
 * document. Each rule has a case that breaks it, next to cases that pass. The values of "to",
 * "text" and "attemptCount" are the shared cases of contract/test/field-cases.ts, run by
 * field-cases.test.ts.
 */
import { createHash } from 'node:crypto';
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
const LOGGED_OUT = `${RUN}-loggedout`;
const DISCONNECTED = `${RUN}-disconnected`;
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
    [`accounts/${LOGGED_OUT}`]: { displayName: 'Logged out', desiredState: 'loggedOut', createdAt: now, updatedAt: now, updatedBy: UID },
    [`accounts/${DISCONNECTED}`]: { displayName: 'Paused', desiredState: 'disconnected', createdAt: now, updatedAt: now, updatedBy: UID },
  });
});

afterAll(async () => {
  await env?.cleanup();
});

describe.concurrent('outbox: create', () => {
  it('accepts a queued message', async () => {
    await assertSucceeds(create(message()));
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

  it.each([
    ['does not exist', `${RUN}-missing`],
    ['is being deleted', DELETING],
    ['is to be logged out (desiredState loggedOut)', LOGGED_OUT],
  ])('rejects a message for an account that %s (sendMessage refuses it too)', async (_, accountId) => {
    await assertFails(create({ ...message(), accountId }));
  });

  it('accepts a message for a disconnected account (it waits in the queue)', async () => {
    await assertSucceeds(create({ ...message(), accountId: DISCONNECTED }));
  });

  it.each([
    ['"k-" and a digest, as sendMessage derives it', `k-${createHash('sha256').update(RUN).digest('base64url').slice(0, 40)}`],
    ['"k-" alone', 'k-'],
    ['"k-" and anything', `k-${RUN}`],
  ])('rejects an id of %s (reserved for idempotency keys)', async (_, id) => {
    await assertFails(create(message(), id));
  });

  it.each([
    ['"K-" (the prefix is lowercase)', `K-${RUN}`],
    ['"k" without the dash', `k${RUN}`],
    ['"-k-" inside', `${RUN}-k-1`],
  ])('accepts an id with %s', async (_, id) => {
    await assertSucceeds(create(message(), id));
  });

  it.each([
    ['uppercase', ACCOUNT.toUpperCase()],
    ['a path', `${ACCOUNT}/x`],
    ['a number', 1],
  ])('rejects an accountId that is %s', async (_, accountId) => {
    await assertFails(create({ ...message(), accountId }));
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
