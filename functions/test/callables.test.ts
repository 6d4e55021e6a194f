/**
 * The callable admin API over HTTP through the Functions emulator, with ID tokens from the Auth
 * emulator and the real Firestore emulator behind it. One file, run in order: the account quota
 * test counts every account in the project.
 */
import { CALLABLES, type CallableName, type Role } from '@wafleet/contract';
import { getApps, initializeApp } from 'firebase-admin/app';
import { getFirestore, Timestamp } from 'firebase-admin/firestore';
import { beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../reconciler/src/util/deadline.ts';
import { adminAuth, authTimeOf, idTokenFor, signInAs, type TestUser } from '../../test/support/auth.ts';
import { callFunction } from '../../test/support/callables.ts';
import { clearFirestore, FUNCTIONS_PROJECT } from '../../test/support/emulators.ts';
import { idempotentMessageId } from '../src/handlers/messages.ts';

const db = getFirestore(getApps().find((a) => a.name === 'test-db') ?? initializeApp({ projectId: FUNCTIONS_PROJECT }, 'test-db'));

let admin: TestUser;
let operator: TestUser;
let viewer: TestUser;
let noRole: TestUser;
let bogus: TestUser;

beforeAll(async () => {
  await clearFirestore(FUNCTIONS_PROJECT);
  [admin, operator, viewer, noRole, bogus] = await Promise.all([
    signInAs('admin', 'admin'),
    signInAs('operator', 'operator'),
    signInAs('viewer', 'viewer'),
    signInAs(null, 'norole'),
    signInAs('superuser', 'bogus'),
  ]);
});

async function expectError(result: Awaited<ReturnType<typeof callFunction>>, status: string, messagePart?: RegExp | string) {
  expect(result.ok, `expected ${status}, got success`).toBe(false);
  if (result.ok) return;
  expect(result.status).toBe(status);
  if (messagePart) expect(result.message).toMatch(messagePart);
}

async function auditEntries(action: string, targetId: string) {
  const snap = await db.collection('auditLog').where('action', '==', action).where('target.id', '==', targetId).get();
  return snap.docs.map((d) => d.data());
}

const call = <T = Record<string, unknown>>(name: CallableName, data: unknown, user?: TestUser) => callFunction<T>(name, data, user?.idToken);

/**
 * Every callable × every kind of caller × an input that fails validation, against the documented
 * codes (docs/data-model.md, "Callables" and "Security model"): the role is checked before the
 * input, so a caller below the least role learns nothing about what a valid input looks like.
 * The least roles are spelled out here, not read from the contract, so the two cannot drift apart.
 */
describe('the access matrix', () => {
  const LEAST_ROLE: Record<CallableName, Role> = {
    createAccount: 'operator',
    updateAccount: 'operator',
    requestQr: 'operator',
    relinkAccount: 'operator',
    deleteAccount: 'admin',
    sendMessage: 'operator',
    cancelMessage: 'operator',
    acknowledgeIncident: 'operator',
    setUserRole: 'admin',
    drainInstance: 'admin',
  };
  /** A bad input per callable and the field invalid-argument must name. */
  const BAD_INPUT: Record<CallableName, [unknown, string]> = {
    createAccount: [{ accountId: 'Bad Id', displayName: 'x' }, 'accountId'],
    updateAccount: [{ accountId: 'acme-01' }, '(fields)'],
    requestQr: [{ accountId: 'Bad Id' }, 'accountId'],
    relinkAccount: [{}, 'accountId'],
    deleteAccount: [{ accountId: 'a'.repeat(41) }, 'accountId'],
    sendMessage: [{ accountId: 'msg-01', to: '12345', text: 'x' }, 'to'],
    cancelMessage: [{ messageId: 'bad/id' }, 'messageId'],
    acknowledgeIncident: [{ incidentId: 'bad id' }, 'incidentId'],
    setUserRole: [{ uid: 'x', role: 'root' }, 'role'],
    drainInstance: [{ instanceId: 'vm a', drain: true }, 'instanceId'],
  };
  const CALLERS = ['signed out', 'no role', 'unknown role', 'viewer', 'operator', 'admin'] as const;
  type CallerKind = (typeof CALLERS)[number];
  const userFor = (kind: CallerKind): TestUser | undefined =>
    ({ 'signed out': undefined, 'no role': noRole, 'unknown role': bogus, viewer, operator, admin })[kind];
  const RANK: Record<CallerKind, number> = { 'signed out': -2, 'no role': -1, 'unknown role': -1, viewer: 0, operator: 1, admin: 2 };
  const ROLE_RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };

  it('documents the least role of every callable the contract defines', () => {
    expect(Object.fromEntries(Object.entries(CALLABLES).map(([n, s]) => [n, s.role]))).toEqual(LEAST_ROLE);
  });

  const cases = (Object.keys(LEAST_ROLE) as CallableName[]).flatMap((name) => CALLERS.map((kind) => [name, kind] as const));
  it.each(cases)('%s, called by %s with a bad input', async (name, kind) => {
    const [input, field] = BAD_INPUT[name];
    const res = await call(name, input, userFor(kind));
    if (kind === 'signed out') return expectError(res, 'UNAUTHENTICATED', /sign in/);
    if (RANK[kind] < ROLE_RANK[LEAST_ROLE[name]]) {
      const have = kind === 'no role' ? /you have no role/ : kind === 'unknown role' ? /you have role "superuser"/ : new RegExp(`you have role "${kind}"`);
      await expectError(res, 'PERMISSION_DENIED', have);
      return expectError(res, 'PERMISSION_DENIED', new RegExp(`needs role "${LEAST_ROLE[name]}"`));
    }
    await expectError(res, 'INVALID_ARGUMENT', new RegExp(`^${field.replace(/[()]/g, '\\$&')}:`));
    if (!res.ok) expect((res.details as { field: string }).field).toBe(field);
  });
});

describe('createAccount', () => {
  it('creates the desired-state document and audits it', async () => {
    const res = await call('createAccount', { accountId: 'acme-01', displayName: ' Acme support ', phoneNumber: '+1 415 555 0123', labels: { team: 'support' } }, operator);
    expect(res).toEqual({ ok: true, data: { accountId: 'acme-01' } });
    const doc = (await db.doc('accounts/acme-01').get()).data()!;
    expect(doc).toMatchObject({ displayName: 'Acme support', desiredState: 'connected', phoneNumber: '+14155550123', labels: { team: 'support' }, updatedBy: operator.uid });
    expect(doc.createdAt).toBeInstanceOf(Timestamp);
    expect(doc.updatedAt).toBeInstanceOf(Timestamp);
    const audit = await auditEntries('createAccount', 'acme-01');
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ actorUid: operator.uid, actorRole: 'operator', target: { collection: 'accounts', id: 'acme-01' } });
    expect(JSON.stringify(audit[0])).not.toContain('4155550123');
  });

  it('refuses an existing id with already-exists', async () => {
    await expectError(await call('createAccount', { accountId: 'acme-01', displayName: 'again' }, operator), 'ALREADY_EXISTS', /already exists/);
  });

  it.each([
    [{ accountId: 'Bad Id', displayName: 'x' }, 'accountId'],
    [{ accountId: 'a'.repeat(41), displayName: 'x' }, 'accountId'],
    [{ accountId: 'ok-1', displayName: '' }, 'displayName'],
    [{ accountId: 'ok-1', displayName: 'x'.repeat(81) }, 'displayName'],
    [{ accountId: 'ok-1', displayName: 'x', desiredState: 'online' }, 'desiredState'],
    [{ accountId: 'ok-1', displayName: 'x', phoneNumber: '555-1234' }, 'phoneNumber'],
    [{ accountId: 'ok-1', displayName: 'x', linkMethod: 'nfc' }, 'linkMethod'],
    [{ accountId: 'ok-1', displayName: 'x', labels: { '1bad': 'v' } }, 'labels.1bad'],
    [{ accountId: 'ok-1', displayName: 'x', desiredstate: 'connected' }, '(document)'],
    [{ displayName: 'x' }, 'accountId'],
    [{ accountId: 'ok-1', displayName: 'x', linkMethod: 'pairingCode' }, 'phoneNumber'],
  ])('refuses %j with invalid-argument naming %s', async (input, field) => {
    const res = await call('createAccount', input, operator);
    await expectError(res, 'INVALID_ARGUMENT', field === '(document)' ? /desiredstate/ : new RegExp(`^${field.replace('.', '\\.')}:`));
    if (!res.ok && field !== '(document)') expect((res.details as { field: string }).field).toBe(field);
    expect((await db.doc('accounts/ok-1').get()).exists).toBe(false);
  });
});

describe('updateAccount', () => {
  beforeAll(async () => {
    expect((await call('createAccount', { accountId: 'upd-01', displayName: 'Updates', labels: { a: '1' } }, operator)).ok).toBe(true);
  });

  it('changes the named fields and nothing else', async () => {
    const res = await call('updateAccount', { accountId: 'upd-01', desiredState: 'disconnected', labels: null }, operator);
    expect(res.ok).toBe(true);
    const doc = (await db.doc('accounts/upd-01').get()).data()!;
    expect(doc.desiredState).toBe('disconnected');
    expect(doc.displayName).toBe('Updates');
    expect(doc).not.toHaveProperty('labels');
    expect(await auditEntries('updateAccount', 'upd-01')).toHaveLength(1);
  });

  it('requires a phone number for pairing-code linking', async () => {
    await expectError(await call('updateAccount', { accountId: 'upd-01', linkMethod: 'pairingCode' }, operator), 'INVALID_ARGUMENT', /^phoneNumber:/);
    const ok = await call('updateAccount', { accountId: 'upd-01', linkMethod: 'pairingCode', phoneNumber: '+447700900123' }, operator);
    expect(ok.ok).toBe(true);
    // …and then refuses to remove the number while pairing-code linking is chosen.
    await expectError(await call('updateAccount', { accountId: 'upd-01', phoneNumber: null }, operator), 'INVALID_ARGUMENT', /^phoneNumber:/);
  });

  it('refuses an update that names no field, and unknown accounts', async () => {
    await expectError(await call('updateAccount', { accountId: 'upd-01' }, operator), 'INVALID_ARGUMENT', /at least one field/);
    await expectError(await call('updateAccount', { accountId: 'nope', displayName: 'x' }, operator), 'NOT_FOUND');
  });
});

describe('requestQr and relinkAccount', () => {
  beforeAll(async () => {
    expect((await call('createAccount', { accountId: 'qr-01', displayName: 'QR' }, operator)).ok).toBe(true);
  });

  it('requestQr stamps qrRequestedAt', async () => {
    expect((await call('requestQr', { accountId: 'qr-01' }, operator)).ok).toBe(true);
    expect((await db.doc('accounts/qr-01').get()).get('qrRequestedAt')).toBeInstanceOf(Timestamp);
    expect(await auditEntries('requestQr', 'qr-01')).toHaveLength(1);
  });

  it('requestQr refuses when the account is already connected or not meant to be', async () => {
    await db.doc('accountStatus/qr-01').set({ phase: 'connected' });
    await expectError(await call('requestQr', { accountId: 'qr-01' }, operator), 'FAILED_PRECONDITION', /relinkAccount/);
    await db.doc('accountStatus/qr-01').delete();
    expect((await call('updateAccount', { accountId: 'qr-01', desiredState: 'disconnected' }, operator)).ok).toBe(true);
    await expectError(await call('requestQr', { accountId: 'qr-01' }, operator), 'FAILED_PRECONDITION', /desiredState "disconnected"/);
    await expectError(await call('requestQr', { accountId: 'missing' }, operator), 'NOT_FOUND');
  });

  it('relinkAccount stamps relinkRequestedAt', async () => {
    expect((await call('relinkAccount', { accountId: 'qr-01' }, operator)).ok).toBe(true);
    expect((await db.doc('accounts/qr-01').get()).get('relinkRequestedAt')).toBeInstanceOf(Timestamp);
    await expectError(await call('relinkAccount', { accountId: 'missing' }, operator), 'NOT_FOUND');
    await expectError(await call('relinkAccount', { accountId: 'qr-01', extra: 1 }, operator), 'INVALID_ARGUMENT', /extra/);
  });
});

describe('deleteAccount', () => {
  it('marks the account for deletion once, and blocks changes meanwhile', async () => {
    expect((await call('createAccount', { accountId: 'del-01', displayName: 'Doomed' }, operator)).ok).toBe(true);
    expect(await call('deleteAccount', { accountId: 'del-01' }, admin)).toEqual({ ok: true, data: { accountId: 'del-01', alreadyRequested: false } });
    expect((await db.doc('accounts/del-01').get()).get('deleteRequestedAt')).toBeInstanceOf(Timestamp);
    expect(await call('deleteAccount', { accountId: 'del-01' }, admin)).toEqual({ ok: true, data: { accountId: 'del-01', alreadyRequested: true } });
    expect(await auditEntries('deleteAccount', 'del-01')).toHaveLength(1);
    await expectError(await call('updateAccount', { accountId: 'del-01', displayName: 'x' }, operator), 'FAILED_PRECONDITION', /being deleted/);
    await expectError(await call('requestQr', { accountId: 'del-01' }, operator), 'FAILED_PRECONDITION', /being deleted/);
    await expectError(await call('sendMessage', { accountId: 'del-01', to: '+14155550100', text: 'hi' }, operator), 'FAILED_PRECONDITION', /being deleted/);
    await expectError(await call('createAccount', { accountId: 'del-01', displayName: 'again' }, operator), 'ALREADY_EXISTS', /still being deleted/);
    await expectError(await call('deleteAccount', { accountId: 'never-was' }, admin), 'NOT_FOUND');
  });
});

describe('sendMessage and cancelMessage', () => {
  beforeAll(async () => {
    expect((await call('createAccount', { accountId: 'msg-01', displayName: 'Messages' }, operator)).ok).toBe(true);
    expect((await call('createAccount', { accountId: 'msg-02', displayName: 'Other' }, operator)).ok).toBe(true);
  });

  it('queues a message and audits it without its text or number', async () => {
    const res = await call<{ messageId: string; status: string; duplicate: boolean }>('sendMessage', { accountId: 'msg-01', to: '+1 (415) 555-0188', text: 'secret hello' }, operator);
    expect(res.ok).toBe(true);
    if (!res.ok) return;
    expect(res.data).toMatchObject({ status: 'queued', duplicate: false });
    const doc = (await db.doc(`outbox/${res.data.messageId}`).get()).data()!;
    expect(doc).toMatchObject({ accountId: 'msg-01', to: '+14155550188', text: 'secret hello', createdBy: operator.uid, status: 'queued', attemptCount: 0 });
    const [audit] = await auditEntries('sendMessage', res.data.messageId);
    expect(audit).toBeDefined();
    expect(JSON.stringify(audit)).not.toMatch(/secret hello|4155550188/);
  });

  it('returns the first message for a repeated idempotency key, even when the calls race', async () => {
    const input = { accountId: 'msg-01', to: '15550001001@s.whatsapp.net', text: 'once', idempotencyKey: 'order-42' };
    const results = await Promise.all(Array.from({ length: 5 }, () => call<{ messageId: string; duplicate: boolean }>('sendMessage', input, operator)));
    const ids = new Set(results.map((r) => (r.ok ? r.data.messageId : `error:${r.status}`)));
    expect(ids.size).toBe(1);
    expect(results.filter((r) => r.ok && !r.data.duplicate)).toHaveLength(1);
    const docs = await db.collection('outbox').where('idempotencyKey', '==', 'order-42').get();
    expect(docs.size).toBe(1);
    const again = await call<{ messageId: string; duplicate: boolean }>('sendMessage', input, operator);
    expect(again.ok && again.data).toMatchObject({ messageId: [...ids][0], duplicate: true });
  });

  it('refuses a reused key with another payload, and scopes keys to the account', async () => {
    await expectError(
      await call('sendMessage', { accountId: 'msg-01', to: '15550001001@s.whatsapp.net', text: 'different', idempotencyKey: 'order-42' }, operator),
      'ALREADY_EXISTS',
      /different request \(text differ\)/,
    );
    const other = await call<{ duplicate: boolean }>('sendMessage', { accountId: 'msg-02', to: '15550001001@s.whatsapp.net', text: 'once', idempotencyKey: 'order-42' }, operator);
    expect(other.ok && other.data.duplicate).toBe(false);
  });

  it('refuses a key whose document holds another request, whoever wrote it there', async () => {
    // A document at the key's id that sendMessage did not write for this request: the same
    // recipient and text, but another account (a direct write planting the key, or a collision).
    const key = 'planted-7';
    const id = idempotentMessageId('msg-01', key);
    await db.doc(`outbox/${id}`).set({ accountId: 'msg-02', to: '+14155550111', text: 'hello', idempotencyKey: key, status: 'queued', createdBy: 'someone' });
    const res = await call('sendMessage', { accountId: 'msg-01', to: '+14155550111', text: 'hello', idempotencyKey: key }, operator);
    await expectError(res, 'ALREADY_EXISTS', /different request \(accountId differ\)/);
    if (!res.ok) expect(res.details).toEqual({ field: 'idempotencyKey', differs: ['accountId'] });
    // …and one without the key (a direct write of the same id) is no duplicate either.
    await db.doc(`outbox/${idempotentMessageId('msg-01', 'planted-8')}`).set({ accountId: 'msg-01', to: '+14155550111', text: 'hello', status: 'queued' });
    await expectError(await call('sendMessage', { accountId: 'msg-01', to: '+14155550111', text: 'hello', idempotencyKey: 'planted-8' }, operator), 'ALREADY_EXISTS', /idempotencyKey differ/);
  });

  it.each([
    [{ accountId: 'msg-01', to: '12345', text: 'x' }, 'to'],
    [{ accountId: 'msg-01', to: 'someone@example.com', text: 'x' }, 'to'],
    [{ accountId: 'msg-01', to: '+14155550100', text: '' }, 'text'],
    [{ accountId: 'msg-01', to: '+14155550100', text: '   ' }, 'text'],
    [{ accountId: 'msg-01', to: '+14155550100', text: 'x'.repeat(4097) }, 'text'],
    [{ accountId: 'msg-01', to: '+14155550100', text: 'x', idempotencyKey: 'has space' }, 'idempotencyKey'],
  ])('refuses %j with invalid-argument naming %s', async (input, field) => {
    await expectError(await call('sendMessage', input, operator), 'INVALID_ARGUMENT', new RegExp(`^${field}:`));
  });

  it('refuses unknown and logged-out accounts', async () => {
    await expectError(await call('sendMessage', { accountId: 'ghost', to: '+14155550100', text: 'x' }, operator), 'NOT_FOUND');
    expect((await call('updateAccount', { accountId: 'msg-02', desiredState: 'loggedOut' }, operator)).ok).toBe(true);
    await expectError(await call('sendMessage', { accountId: 'msg-02', to: '+14155550100', text: 'x' }, operator), 'FAILED_PRECONDITION', /loggedOut/);
  });

  it('cancels only queued messages', async () => {
    const sent = await call<{ messageId: string }>('sendMessage', { accountId: 'msg-01', to: '+14155550100', text: 'cancel me' }, operator);
    if (!sent.ok) throw new Error(sent.message);
    const id = sent.data.messageId;
    expect(await call('cancelMessage', { messageId: id }, operator)).toEqual({ ok: true, data: { messageId: id, status: 'cancelled' } });
    expect((await db.doc(`outbox/${id}`).get()).data()).toMatchObject({ status: 'cancelled', cancelledBy: operator.uid });
    await expectError(await call('cancelMessage', { messageId: id }, operator), 'FAILED_PRECONDITION', /"cancelled"/);
    await db.doc('outbox/in-flight').set({ accountId: 'msg-01', to: '+14155550100', text: 'x', status: 'sending' });
    await expectError(await call('cancelMessage', { messageId: 'in-flight' }, operator), 'FAILED_PRECONDITION', /"sending"/);
    await expectError(await call('cancelMessage', { messageId: 'nope' }, operator), 'NOT_FOUND');
    await expectError(await call('cancelMessage', { messageId: 'bad/id' }, operator), 'INVALID_ARGUMENT', /^messageId:/);
  });
});

describe('acknowledgeIncident', () => {
  it('records the first acknowledgement', async () => {
    const now = Timestamp.now();
    await db.doc('incidents/inc-1').set({ accountId: 'acme-01', type: 'Banned', severity: 'critical', message: 'banned', open: true, count: 1, firstSeenAt: now, lastSeenAt: now, resolvedAt: null, acknowledgedBy: null, acknowledgedAt: null });
    expect(await call('acknowledgeIncident', { incidentId: 'inc-1' }, operator)).toEqual({ ok: true, data: { incidentId: 'inc-1', acknowledgedBy: operator.uid, alreadyAcknowledged: false } });
    expect((await db.doc('incidents/inc-1').get()).get('acknowledgedAt')).toBeInstanceOf(Timestamp);
    expect(await call('acknowledgeIncident', { incidentId: 'inc-1' }, admin)).toEqual({ ok: true, data: { incidentId: 'inc-1', acknowledgedBy: operator.uid, alreadyAcknowledged: true } });
    expect(await auditEntries('acknowledgeIncident', 'inc-1')).toHaveLength(1);
    await expectError(await call('acknowledgeIncident', { incidentId: 'inc-404' }, operator), 'NOT_FOUND');
  });
});

describe('drainInstance', () => {
  it('sets and clears drainRequestedAt on the heartbeat, keeps the rest, audits each change, and refuses unknown or stopped instances', async () => {
    const now = Timestamp.now();
    const beat = { instanceId: 'vm-1', incarnation: 'inc-1', version: '0.1.0', host: 'vm-1', startedAt: now, heartbeatAt: now, leaseTtlMs: 120_000, uptimeSec: 5, accountsOwned: 1, accounts: { 'acme-01': 'connected' }, storagePath: '/var/lib/wafleet', storageFreeBytes: null, stoppedAt: null };
    await db.doc('reconcilers/vm-1').set(beat);
    expect(await call('drainInstance', { instanceId: 'vm-1', drain: true }, admin)).toEqual({ ok: true, data: { instanceId: 'vm-1', draining: true, changed: true } });
    const drained = (await db.doc('reconcilers/vm-1').get()).data()!;
    expect(drained.drainRequestedAt).toBeInstanceOf(Timestamp);
    expect(drained).toMatchObject({ incarnation: 'inc-1', accounts: { 'acme-01': 'connected' } });
    // Asking again changes nothing and is not audited twice.
    expect(await call('drainInstance', { instanceId: 'vm-1', drain: true }, admin)).toEqual({ ok: true, data: { instanceId: 'vm-1', draining: true, changed: false } });
    expect(await call('drainInstance', { instanceId: 'vm-1', drain: false }, admin)).toEqual({ ok: true, data: { instanceId: 'vm-1', draining: false, changed: true } });
    expect((await db.doc('reconcilers/vm-1').get()).get('drainRequestedAt')).toBeNull();
    expect(await auditEntries('drainInstance', 'vm-1')).toHaveLength(2);
    await expectError(await call('drainInstance', { instanceId: 'vm-404', drain: true }, admin), 'NOT_FOUND', /no heartbeat document/);
    await db.doc('reconcilers/vm-2').set({ ...beat, instanceId: 'vm-2', stoppedAt: now });
    await expectError(await call('drainInstance', { instanceId: 'vm-2', drain: true }, admin), 'FAILED_PRECONDITION', /is stopped/);
    await expectError(await call('drainInstance', { instanceId: 'vm-1', drain: true }, operator), 'PERMISSION_DENIED');
  });
});

describe('setUserRole', () => {
  it('sets, changes and removes a role by email or uid', async () => {
    const target = await signInAs(null, 'target', { emailVerified: true });
    expect(await call('setUserRole', { email: target.email, role: 'operator' }, admin)).toEqual({ ok: true, data: { uid: target.uid, role: 'operator' } });
    expect((await adminAuth().getUser(target.uid)).customClaims).toEqual({ role: 'operator' });
    expect((await call('setUserRole', { uid: target.uid, role: 'viewer' }, admin)).ok).toBe(true);
    expect((await adminAuth().getUser(target.uid)).customClaims).toEqual({ role: 'viewer' });
    expect((await call('setUserRole', { uid: target.uid, role: null }, admin)).ok).toBe(true);
    expect((await adminAuth().getUser(target.uid)).customClaims ?? {}).toEqual({});
    const audit = await auditEntries('setUserRole', target.uid);
    expect(audit.map((a) => a.details.role)).toEqual(expect.arrayContaining(['operator', 'viewer', null]));
  });

  it('refuses bad input, unknown users and self-demotion', async () => {
    await expectError(await call('setUserRole', { email: 'nobody@test.wafleet.local', role: 'viewer' }, admin), 'NOT_FOUND');
    await expectError(await call('setUserRole', { uid: 'x', email: 'a@b.co', role: 'viewer' }, admin), 'INVALID_ARGUMENT', /exactly one/);
    await expectError(await call('setUserRole', { uid: 'x', role: 'root' }, admin), 'INVALID_ARGUMENT', /^role:/);
    await expectError(await call('setUserRole', { email: 'not-an-email', role: 'viewer' }, admin), 'INVALID_ARGUMENT', /^email:/);
    await expectError(await call('setUserRole', { uid: admin.uid, role: 'viewer' }, admin), 'FAILED_PRECONDITION', /another admin/);
  });

  it('audits a change as requested, then applied', async () => {
    const target = await signInAs('viewer', 'audited');
    expect((await call('setUserRole', { uid: target.uid, role: 'operator' }, admin)).ok).toBe(true);
    const [entry] = await auditEntries('setUserRole', target.uid);
    expect(entry).toMatchObject({ status: 'applied', actorUid: admin.uid, actorRole: 'admin', details: { role: 'operator', previousRole: 'viewer' } });
    expect(entry!.settledAt).toBeInstanceOf(Timestamp);
  });
});

describe('roles to verified addresses only (issue 10, item 4)', () => {
  it('refuses to grant a role by an unverified email, and grants it by uid', async () => {
    // Whoever signs up first with a new hire's address must not receive the new hire's role.
    const squatter = await signInAs(null, 'squatter');
    await expectError(await call('setUserRole', { email: squatter.email, role: 'operator' }, admin), 'FAILED_PRECONDITION', /not verified/);
    expect((await adminAuth().getUser(squatter.uid)).customClaims ?? {}).toEqual({});
    expect(await auditEntries('setUserRole', squatter.uid)).toHaveLength(0);
    // By uid the admin names the very user meant.
    expect((await call('setUserRole', { uid: squatter.uid, role: 'viewer' }, admin)).ok).toBe(true);
    // Taking a role away by email needs no proof of the address.
    expect((await call('setUserRole', { email: squatter.email, role: null }, admin)).ok).toBe(true);
    expect((await adminAuth().getUser(squatter.uid)).customClaims ?? {}).toEqual({});
  });
});

describe('access follows the current claims (issue 10, item 1)', () => {
  /** Waits for the clock to pass the token's sign-in second: revocation has second precision. */
  const afterSignInSecond = (user: TestUser) =>
    waitFor(() => Math.floor(Date.now() / 1000) > authTimeOf(user.idToken), { timeoutMs: 3_000, label: 'the next second' });

  it('a removed role is refused at once, though the old ID token still carries it', async () => {
    const former = await signInAs('operator', 'former');
    await expectError(await call('acknowledgeIncident', { incidentId: 'inc-404' }, former), 'NOT_FOUND');
    await adminAuth().setCustomUserClaims(former.uid, null);
    await expectError(await call('acknowledgeIncident', { incidentId: 'inc-404' }, former), 'PERMISSION_DENIED', /you have no role/);
    await adminAuth().setCustomUserClaims(former.uid, { role: 'viewer' });
    await expectError(await call('acknowledgeIncident', { incidentId: 'inc-404' }, former), 'PERMISSION_DENIED', /you have role "viewer"/);
  });

  it('revoked sessions, disabled and deleted users are refused at once', async () => {
    const [revoked, disabled, deleted] = await Promise.all([signInAs('operator', 'revoked'), signInAs('operator', 'disabled'), signInAs('operator', 'deleted')]);
    await afterSignInSecond(revoked);
    await Promise.all([
      adminAuth().revokeRefreshTokens(revoked.uid),
      adminAuth().updateUser(disabled.uid, { disabled: true }),
      adminAuth().deleteUser(deleted.uid),
    ]);
    await expectError(await call('acknowledgeIncident', { incidentId: 'inc-404' }, revoked), 'UNAUTHENTICATED', /revoked/);
    await expectError(await call('acknowledgeIncident', { incidentId: 'inc-404' }, disabled), 'UNAUTHENTICATED', /disabled/);
    await expectError(await call('acknowledgeIncident', { incidentId: 'inc-404' }, deleted), 'UNAUTHENTICATED', /no longer exists/);
    // Signing in again after a revocation works, with the claims of now.
    const fresh = { ...revoked, idToken: await idTokenFor(revoked.email, revoked.password) };
    await expectError(await call('acknowledgeIncident', { incidentId: 'inc-404' }, fresh), 'NOT_FOUND');
  });

  it('a demoted admin cannot make themselves admin again, and their sessions are revoked', async () => {
    const demoted = await signInAs('admin', 'demoted');
    await afterSignInSecond(demoted);
    expect(await call('setUserRole', { uid: demoted.uid, role: 'viewer' }, admin)).toEqual({ ok: true, data: { uid: demoted.uid, role: 'viewer' } });
    const record = await adminAuth().getUser(demoted.uid);
    expect(record.tokensValidAfterTime && Date.parse(record.tokensValidAfterTime)).toBeGreaterThan(authTimeOf(demoted.idToken) * 1000);
    const [entry] = await auditEntries('setUserRole', demoted.uid);
    expect(entry).toMatchObject({ status: 'applied', details: { role: 'viewer', previousRole: 'admin', refreshTokensRevoked: true } });
    // The old token still says admin; the callables no longer believe it.
    const back = await call('setUserRole', { uid: demoted.uid, role: 'admin' }, demoted);
    await expectError(back, 'UNAUTHENTICATED', /revoked/);
    // Signed in again, the token is honest, and the callables agree with it.
    const again = { ...demoted, idToken: await idTokenFor(demoted.email, demoted.password) };
    await expectError(await call('setUserRole', { uid: demoted.uid, role: 'admin' }, again), 'PERMISSION_DENIED', /you have role "viewer"/);
    expect((await adminAuth().getUser(demoted.uid)).customClaims).toEqual({ role: 'viewer' });
  });

  it('nobody changes their own role, not even to the same one', async () => {
    await expectError(await call('setUserRole', { uid: admin.uid, role: 'admin' }, admin), 'FAILED_PRECONDITION', /your own role/);
    await expectError(await call('setUserRole', { email: admin.email, role: null }, admin), 'FAILED_PRECONDITION', /your own role/);
    expect((await adminAuth().getUser(admin.uid)).customClaims).toEqual({ role: 'admin' });
  });

  it('two admins demoting each other cannot leave the project without an admin', async () => {
    const [a, b] = await Promise.all([signInAs('admin', 'admin-a'), signInAs('admin', 'admin-b')]);
    const results = await Promise.all([call('setUserRole', { uid: b.uid, role: null }, a), call('setUserRole', { uid: a.uid, role: null }, b)]);
    expect(results.filter((r) => r.ok)).toHaveLength(1);
    // The loser either found the lock taken or, after the winner, was no admin any more.
    for (const r of results.filter((r) => !r.ok)) expect(['ABORTED', 'PERMISSION_DENIED', 'UNAUTHENTICATED']).toContain(r.ok ? '' : r.status);
    const roles = await Promise.all([a, b].map(async (u) => (await adminAuth().getUser(u.uid)).customClaims?.role));
    expect(roles.filter((r) => r === 'admin')).toHaveLength(1);
    // In turn, too: the demoted one's old token cannot demote the other.
    const [winner, loser] = roles[0] === 'admin' ? [a, b] : [b, a];
    const res = await call('setUserRole', { uid: winner.uid, role: null }, loser);
    expect(res.ok).toBe(false);
    expect((await adminAuth().getUser(winner.uid)).customClaims).toEqual({ role: 'admin' });
  });
});

describe('the account quota', () => {
  it('admits exactly MAX_ACCOUNTS (30) accounts, also when creates race for the last slot', async () => {
    // Filler accounts are seeded directly: what is under test is the callable's count, not 29 creates.
    const existing = (await db.collection('accounts').get()).size;
    const batch = db.batch();
    for (let i = existing; i < 29; i++) batch.set(db.doc(`accounts/fill-${i}`), { displayName: `Fill ${i}`, desiredState: 'connected' });
    await batch.commit();
    expect((await db.collection('accounts').get()).size).toBe(29);
    const racers = await Promise.all(['race-a', 'race-b', 'race-c'].map((id) => call('createAccount', { accountId: id, displayName: id }, operator)));
    expect(racers.filter((r) => r.ok)).toHaveLength(1);
    for (const r of racers.filter((r) => !r.ok)) await expectError(r, 'RESOURCE_EXHAUSTED', /MAX_ACCOUNTS is 30/);
    expect((await db.collection('accounts').get()).size).toBe(30);
  });
});
