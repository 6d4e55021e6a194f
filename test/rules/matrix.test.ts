/**
 * The access matrix of firestore.rules: every collection × every principal × get, list,
 * create, update and delete. The table below is the whole policy; each cell expands into one
 * test per principal. Writes use well-formed documents (valid ones where a write is allowed),
 * so a denial here is about who asks, not about what they send; the validation of allowed
 * writes is tested in accounts.test.ts and outbox.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertFails, assertSucceeds, type RulesTestEnvironment } from '@firebase/rules-unit-testing';
import {
  collection,
  deleteDoc,
  doc,
  documentId,
  getDoc,
  getDocs,
  query,
  serverTimestamp,
  setDoc,
  Timestamp,
  updateDoc,
  where,
  type DocumentData,
  type Firestore,
} from 'firebase/firestore';
import { Collections, Subcollections, threadId } from '@wafleet/contract';
import { clientsFor, PRINCIPALS, runPrefix, seed, startRulesEnv, type Principal } from './support.ts';

type Least = 'viewer' | 'operator' | 'admin' | null; // null: nobody
const OPS = ['get', 'list', 'create', 'update', 'delete'] as const;
type Op = (typeof OPS)[number];

// ------------------------------------------------------------------------------------------
// THE MATRIX: the least role allowed each operation (null = nobody). "read" is get and list.
// Roles order admin > operator > viewer; signed-out, no-role and bogus-role callers rank below
// viewer, so they get nothing anywhere. Accounts are created only by the createAccount
// callable (it enforces MAX_ACCOUNTS), so nobody creates them directly.
//
//   target                         read         create       update       delete
const ACCESS = {
  accounts:                       ['viewer',   null,        'operator',  null],
  accountStatus:                  ['viewer',   null,        null,        null],
  accountQr:                      ['operator', null,        null,        null],
  outbox:                         ['operator', 'operator',  null,        null],
  incidents:                      ['viewer',   null,        null,        null],
  reconcilers:                    ['viewer',   null,        null,        null],
  auditLog:                       ['admin',    null,        null,        null],
  fleetConfig:                    ['admin',    null,        null,        null],
  threads:                        ['operator', null,        null,        null],
  'threads/*/messages':           ['operator', null,        null,        null],
  leases:                         [null,       null,        null,        null],
  sessionBackups:                 [null,       null,        null,        null],
  locks:                          [null,       null,        null,        null],
  'widgets (unknown collection)': [null,       null,        null,        null],
  'accounts/*/secrets':           [null,       null,        null,        null],
  'leases/*/history':             [null,       null,        null,        null],
  'sessionBackups/*/chunks':      [null,       null,        null,        null],
  'fleetConfig/*/history':        [null,       null,        null,        null],
  'locks/*/holders':              [null,       null,        null,        null],
} as const satisfies Record<string, readonly [Least, Least, Least, Least]>;
// ------------------------------------------------------------------------------------------

type TargetName = keyof typeof ACCESS;

const RANK = { viewer: 1, operator: 2, admin: 3 } as const;

function rankOf(p: Principal): number {
  const claims: { role?: string } | null = p.claims;
  const role = claims?.role;
  return role === 'viewer' || role === 'operator' || role === 'admin' ? RANK[role] : 0;
}

function allowed(target: TargetName, op: Op, p: Principal): boolean {
  const [read, create, update, del] = ACCESS[target];
  const least: Least = { get: read, list: read, create, update, delete: del }[op];
  return least !== null && rankOf(p) >= RANK[least];
}

// ---------- the documents each target is exercised with ----------

const RUN = runPrefix('m');
const ACCOUNT = `${RUN}-acct`;
const now = Timestamp.now();
const owner = { instanceId: 'reconciler-1', epoch: 3 };
const CHAT = '14155550123@s.whatsapp.net';
const THREAD = threadId(ACCOUNT, CHAT);
const INBOUND_ID = `3A${RUN.toUpperCase()}`; // a WhatsApp message id, as the document id
const expireAt = Timestamp.fromMillis(now.toMillis() + 90 * 86_400_000);

interface Fixture {
  /** Where documents are listed and created. */
  collection: string;
  /**
   * Seeded twice with rules disabled: as `seedId` for get and list, and as `${seedId}-w` for
   * update and delete, so no read ever watches a document that is being written.
   */
  seedId: string;
  seed: DocumentData;
  /** What the caller tries to create (a new id per principal). */
  create: (uid: string) => DocumentData;
  /** What the caller tries to change on the seeded document. */
  update: (uid: string) => DocumentData;
}

const accountDoc = (uid: string) => ({
  displayName: 'Matrix account',
  desiredState: 'connected',
  createdAt: serverTimestamp(),
  updatedAt: serverTimestamp(),
  updatedBy: uid,
});

const FIXTURES: Record<TargetName, Fixture> = {
  accounts: {
    collection: 'accounts',
    seedId: ACCOUNT,
    seed: { displayName: 'Seeded', desiredState: 'connected', createdAt: now, updatedAt: now, updatedBy: 'uid-seed' },
    create: accountDoc,
    update: (uid) => ({ displayName: `Renamed by ${uid}`, updatedAt: serverTimestamp(), updatedBy: uid }),
  },
  accountStatus: {
    collection: 'accountStatus',
    seedId: ACCOUNT,
    seed: {
      phase: 'connected', reason: 'Connected', message: '', since: now, observedSpecTime: now, owner,
      linkedPhoneMasked: '+1415•••••23', lastConnectedAt: now, lastDisconnect: null, reconnectAttempt: 0,
      nextRetryAt: null, updatedAt: now,
    },
    create: () => ({ phase: 'connected', reason: 'Connected', message: '', updatedAt: serverTimestamp() }),
    update: () => ({ phase: 'banned', reason: 'Banned' }),
  },
  accountQr: {
    collection: 'accountQr',
    seedId: ACCOUNT,
    seed: { kind: 'qr', qr: '2@abc', qrPng: null, pairingCode: null, sequence: 0, expiresAt: now, owner, updatedAt: now },
    create: () => ({ kind: 'qr', qr: '2@forged', qrPng: null, pairingCode: null, sequence: 0, updatedAt: serverTimestamp() }),
    update: () => ({ qr: '2@forged' }),
  },
  outbox: {
    collection: 'outbox',
    seedId: `${RUN}-msg`,
    seed: {
      accountId: ACCOUNT, to: '+14155550123', text: 'seeded', createdAt: now, createdBy: 'uid-operator',
      status: 'queued', attemptCount: 0,
    },
    create: (uid) => ({
      accountId: ACCOUNT, to: '+14155550123', text: 'hello', createdAt: serverTimestamp(), createdBy: uid, status: 'queued',
    }),
    // What cancelMessage does; clients must call it instead.
    update: (uid) => ({ status: 'cancelled', cancelledAt: serverTimestamp(), cancelledBy: uid }),
  },
  incidents: {
    collection: 'incidents',
    seedId: `${RUN}-inc`,
    seed: {
      accountId: ACCOUNT, type: 'QrExpired', severity: 'warning', message: 'QR expired', open: true, count: 1,
      firstSeenAt: now, lastSeenAt: now, resolvedAt: null, acknowledgedBy: null, acknowledgedAt: null,
    },
    create: () => ({ accountId: null, type: 'Forged', severity: 'critical', message: 'x', open: true, count: 1 }),
    // What acknowledgeIncident does; clients must call it instead.
    update: (uid) => ({ acknowledgedBy: uid, acknowledgedAt: serverTimestamp() }),
  },
  reconcilers: {
    collection: 'reconcilers',
    seedId: `${RUN}-rec`,
    seed: {
      instanceId: `${RUN}-rec`, version: '0.1.0', host: 'host-1', startedAt: now, heartbeatAt: now, uptimeSec: 60,
      accountsOwned: 3, storagePath: '/var/lib/wafleet', storageFreeBytes: 1e9,
    },
    create: () => ({ instanceId: 'forged', version: '0.1.0', heartbeatAt: serverTimestamp() }),
    update: () => ({ heartbeatAt: serverTimestamp() }),
  },
  auditLog: {
    collection: 'auditLog',
    seedId: `${RUN}-audit`,
    seed: {
      action: 'createAccount', actorUid: 'uid-operator', actorRole: 'operator',
      target: { collection: 'accounts', id: ACCOUNT }, details: {}, at: now,
    },
    create: (uid) => ({ action: 'forged', actorUid: uid, actorRole: null, target: null, details: {}, at: serverTimestamp() }),
    update: () => ({ action: 'rewritten' }),
  },
  fleetConfig: {
    collection: Collections.fleetConfig,
    // Shaped like fleetConfig/whatsapp; the run prefix keeps other test files' documents apart.
    seedId: `${RUN}-whatsapp`,
    seed: { waWebVersion: [2, 3000, 1043857760], updatedAt: now, note: 'seeded' },
    // Console writes use the Admin SDK; a client write (even an admin's, even a valid one) is refused.
    create: () => ({ waWebVersion: [2, 3000, 1], updatedAt: serverTimestamp() }),
    update: () => ({ waWebVersion: null, updatedAt: serverTimestamp() }),
  },
  threads: {
    collection: Collections.threads,
    seedId: THREAD,
    seed: { accountId: ACCOUNT, chatJid: CHAT, lastMessageAt: now, lastMessageId: INBOUND_ID, updatedAt: now, expireAt },
    create: () => ({
      accountId: ACCOUNT, chatJid: '14155550199@s.whatsapp.net', lastMessageAt: serverTimestamp(), lastMessageId: 'forged',
      updatedAt: serverTimestamp(), expireAt: null,
    }),
    // Hiding a conversation, or keeping it past its retention.
    update: () => ({ lastMessageAt: serverTimestamp(), expireAt: null }),
  },
  'threads/*/messages': {
    collection: `${Collections.threads}/${THREAD}/${Subcollections.threadMessages}`,
    seedId: INBOUND_ID,
    seed: {
      accountId: ACCOUNT, chatJid: CHAT, waMessageId: INBOUND_ID, direction: 'inbound', from: CHAT, fromName: 'Ana',
      text: 'seeded', sentAt: now, receivedAt: now, expireAt,
    },
    create: () => ({
      accountId: ACCOUNT, chatJid: CHAT, waMessageId: 'forged', direction: 'inbound', from: CHAT, fromName: null,
      text: 'forged', sentAt: serverTimestamp(), receivedAt: serverTimestamp(), expireAt: null,
    }),
    update: () => ({ text: 'rewritten' }),
  },
  leases: {
    collection: 'leases',
    seedId: ACCOUNT,
    seed: { holder: 'reconciler-1', epoch: 3, expiresAt: now, acquiredAt: now, renewedAt: now },
    create: (uid) => ({ holder: uid, epoch: 1, expiresAt: serverTimestamp(), acquiredAt: serverTimestamp(), renewedAt: serverTimestamp() }),
    update: (uid) => ({ holder: uid, epoch: 99 }),
  },
  sessionBackups: {
    collection: 'sessionBackups',
    seedId: ACCOUNT,
    seed: { creds: 'c2VjcmV0LWtleXM=', updatedAt: now },
    create: () => ({ creds: 'Zm9yZ2Vk', updatedAt: serverTimestamp() }),
    update: () => ({ creds: 'Zm9yZ2Vk' }),
  },
  locks: {
    collection: Collections.locks,
    // Shaped like locks/userRoles, which setUserRole holds while it changes a role.
    seedId: `${RUN}-userRoles`,
    seed: { entryId: `${RUN}-audit`, holderUid: 'uid-admin', until: now },
    // Taking the lock (or stealing a held one) would block role changes or let two run at once.
    create: (uid) => ({ entryId: 'forged', holderUid: uid, until: serverTimestamp() }),
    update: (uid) => ({ holderUid: uid, until: Timestamp.fromMillis(now.toMillis() + 3_600_000) }),
  },
  'widgets (unknown collection)': {
    collection: 'widgets',
    seedId: `${RUN}-w`,
    seed: { name: 'seeded' },
    create: () => ({ name: 'new' }),
    update: () => ({ name: 'changed' }),
  },
  'accounts/*/secrets': {
    collection: `accounts/${ACCOUNT}/secrets`,
    seedId: 'creds',
    seed: { token: 'seeded' },
    create: () => ({ token: 'new' }),
    update: () => ({ token: 'changed' }),
  },
  'leases/*/history': {
    collection: `leases/${ACCOUNT}/history`,
    seedId: `${RUN}-h`,
    seed: { holder: 'reconciler-1', epoch: 2 },
    create: (uid) => ({ holder: uid, epoch: 1 }),
    update: () => ({ epoch: 99 }),
  },
  'sessionBackups/*/chunks': {
    collection: `sessionBackups/${ACCOUNT}/chunks`,
    seedId: 'app-state-sync-key-1',
    seed: { data: 'c2VjcmV0' },
    create: () => ({ data: 'Zm9yZ2Vk' }),
    update: () => ({ data: 'Zm9yZ2Vk' }),
  },
  'fleetConfig/*/history': {
    collection: `${Collections.fleetConfig}/${RUN}-whatsapp/history`,
    seedId: `${RUN}-h`,
    seed: { waWebVersion: [2, 3000, 1] },
    create: () => ({ waWebVersion: [2, 3000, 2] }),
    update: () => ({ waWebVersion: null }),
  },
  'locks/*/holders': {
    collection: `${Collections.locks}/${RUN}-userRoles/holders`,
    seedId: `${RUN}-holder`,
    seed: { holderUid: 'uid-admin' },
    create: (uid) => ({ holderUid: uid }),
    update: (uid) => ({ holderUid: uid }),
  },
};

// ---------- the tests ----------

let env: RulesTestEnvironment;
let client: (name: Principal['name']) => Firestore;

beforeAll(async () => {
  env = await startRulesEnv();
  client = clientsFor(env);
  const docs: Record<string, DocumentData> = {};
  for (const f of Object.values(FIXTURES)) {
    docs[`${f.collection}/${f.seedId}`] = f.seed;
    docs[`${f.collection}/${writeId(f)}`] = f.seed;
  }
  await seed(env, docs);
});

afterAll(async () => {
  await env?.cleanup();
});

const writeId = (f: Fixture) => `${f.seedId}-w`;

function attempt(op: Op, f: Fixture, p: Principal, db: Firestore): Promise<unknown> {
  const uid = p.uid ?? 'nobody';
  switch (op) {
    case 'get':
      return getDoc(doc(db, f.collection, f.seedId)).then((snap) => {
        // A permitted read must see the seeded document, not an empty result.
        expect(snap.exists()).toBe(true);
      });
    case 'list':
      // A query (rules evaluate it as "list"), narrowed to the seeded document: the emulator's
      // watch stream can corrupt when it carries documents that are being written at the same
      // time (firebase-tools#8654), and the other rules test files write to these collections.
      return getDocs(query(collection(db, f.collection), where(documentId(), '==', f.seedId))).then((snap) => {
        expect(snap.docs.map((d) => d.id)).toEqual([f.seedId]);
      });
    case 'create':
      return setDoc(doc(db, f.collection, `${RUN}-new-${p.name}`), f.create(uid));
    case 'update':
      return updateDoc(doc(db, f.collection, writeId(f)), f.update(uid));
    case 'delete':
      return deleteDoc(doc(db, f.collection, writeId(f)));
  }
}

describe.concurrent.each(Object.keys(ACCESS) as TargetName[])('%s', (target) => {
  const cases = OPS.flatMap((op) => PRINCIPALS.map((p) => ({ op, p, ok: allowed(target, op, p) })));
  it.each(cases.map((c) => [`${c.op} as ${c.p.name}: ${c.ok ? 'allowed' : 'denied'}`, c] as const))('%s', async (_, c) => {
    const run = attempt(c.op, FIXTURES[target], c.p, client(c.p.name));
    if (c.ok) await assertSucceeds(run);
    else await assertFails(run);
  });
});

describe('the matrix itself', () => {
  it('covers every collection of the contract', () => {
    for (const name of Object.values(Collections)) expect(Object.keys(ACCESS)).toContain(name);
  });

  it('covers every subcollection of the contract', () => {
    for (const name of Object.values(Subcollections)) {
      expect(Object.keys(ACCESS).filter((t) => t.endsWith(`/*/${name}`))).not.toEqual([]);
    }
  });
});
