/**
 * The outbox's fenced writes against the real Firestore emulator: batch claims, batched outcomes
 * (forward-only, fenced, in order per message) and the fleet's writer that groups them.
 */
import { randomUUID } from 'node:crypto';
import { getApps, initializeApp } from 'firebase-admin/app';
import { getFirestore, Timestamp, type Firestore } from 'firebase-admin/firestore';
import pino from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import { isolatedProjectId } from '../../test/support/emulators.ts';
import { LeaseManager, StaleOwnerError, type Identity } from '../src/lease/lease-manager.ts';
import { waMessageId } from '../src/outbox/message-id.ts';
import { OutboxStore, type OutboxOp } from '../src/outbox/outbox-store.ts';
import { OutboxWriter, WriterStoppedError } from '../src/outbox/outbox-writer.ts';
import { failures } from '../src/outbox/send-errors.ts';

let db: Firestore;
const log = pino({ level: 'silent' });

beforeAll(() => {
  const app = getApps().find((a) => a.name === 'outbox-store') ?? initializeApp({ projectId: isolatedProjectId('outbox-store') }, 'outbox-store');
  db = getFirestore(app);
});

function identity(instanceId: string): Identity {
  return { instanceId, incarnation: randomUUID(), host: 'vm-a', storagePath: '/data/a' };
}

async function owned(): Promise<{ account: string; leases: LeaseManager; store: OutboxStore }> {
  const account = `acc-${randomUUID().slice(0, 8)}`;
  const leases = new LeaseManager(db, identity('inst-a'), { ttlMs: 60_000, hostLockHeld: false });
  expect((await leases.acquire(account)).acquired).toBe(true);
  return { account, leases, store: new OutboxStore(db, leases, 60_000) };
}

async function queue(account: string, over: Record<string, unknown> = {}): Promise<string> {
  const id = `m-${randomUUID().slice(0, 12)}`;
  await db.doc(`outbox/${id}`).set({ accountId: account, to: '+15550001111', text: 'hi', createdAt: Timestamp.now(), createdBy: 'test', status: 'queued', attemptCount: 0, ...over });
  return id;
}

const read = async (id: string) => (await db.doc(`outbox/${id}`).get()).data()!;

describe('OutboxStore.claim', () => {
  it('claims every due message of the account in one go and skips the rest with the reason', async () => {
    const { account, store } = await owned();
    const due = await queue(account);
    const later = await queue(account, { nextAttemptAt: Timestamp.fromMillis(Date.now() + 60_000) });
    const done = await queue(account, { status: 'sent' });
    const other = await queue('someone-else');
    const results = await store.claim(account, [due, later, done, other, 'missing-id']);
    expect(results[0]).toMatchObject({ kind: 'claimed', attempt: 1, waId: waMessageId(due), resend: false });
    expect(results[1]).toMatchObject({ kind: 'skip', status: 'queued' });
    expect(results[2]).toMatchObject({ kind: 'skip', status: 'sent' });
    expect(results[3]).toMatchObject({ kind: 'skip', status: 'missing' });
    expect(results[4]).toMatchObject({ kind: 'skip', status: 'missing' });
    expect(await read(due)).toMatchObject({ status: 'sending', attemptCount: 1, providerMessageId: waMessageId(due), claimedBy: { instanceId: 'inst-a', epoch: 1 } });
    expect((await read(later)).status).toBe('queued');
    // Our own live claim is not taken twice.
    expect((await store.claim(account, [due]))[0]).toMatchObject({ kind: 'skip', status: 'sending' });
  });

  it('after a kill -9, the next process on the disk adopts the lease (same instance and epoch) and resends the dead one\'s live claims at once', async () => {
    const { account, leases, store } = await owned();
    const id = await queue(account);
    expect((await store.claim(account, [id]))[0]).toMatchObject({ kind: 'claimed', attempt: 1 });
    const dead = leases.identity.incarnation;
    const next = new LeaseManager(db, { ...identity('inst-a'), host: leases.identity.host, storagePath: leases.identity.storagePath }, { ttlMs: 60_000, hostLockHeld: true, adopt: [dead] });
    expect(await next.acquire(account)).toMatchObject({ acquired: true, grant: { epoch: 1, incarnation: dead } });
    const results = await new OutboxStore(db, next, 60_000).claim(account, [id]);
    expect(results[0]).toMatchObject({ kind: 'claimed', attempt: 2, resend: true, waId: waMessageId(id) });
    expect((await read(id)).claimedBy).toEqual({ instanceId: 'inst-a', epoch: 1, incarnation: next.identity.incarnation });
  });
});

describe('OutboxStore.settle', () => {
  it('applies an ack and its receipts in one transaction, forward only, each time kept once', async () => {
    const { account, store } = await owned();
    const id = await queue(account);
    await store.claim(account, [id]);
    const t = Date.now();
    const results = await store.settle(account, [
      { kind: 'progress', messageId: id, sentAtMs: t },
      { kind: 'progress', messageId: id, deliveredAtMs: t + 1 },
      { kind: 'progress', messageId: id, readAtMs: t + 2 },
      // Late and out of order: changes nothing.
      { kind: 'progress', messageId: id, sentAtMs: t + 3, deliveredAtMs: t + 4 },
      // A message WhatsApp took is never failed.
      { kind: 'fail', messageId: id, failure: failures.rejected('479') },
    ]);
    expect(results.map((r) => [r.changed, r.status])).toEqual([
      [true, 'sent'],
      [true, 'delivered'],
      [true, 'read'],
      [false, 'read'],
      [false, 'read'],
    ]);
    const doc = await read(id);
    expect(doc).toMatchObject({ status: 'read', leaseUntil: null, error: null });
    expect([doc.sentAt.toMillis(), doc.deliveredAt.toMillis(), doc.readAt.toMillis()]).toEqual([t, t + 1, t + 2]);
  });

  it('takes a receipt as the ack when the ack was never recorded', async () => {
    const { account, store } = await owned();
    const id = await queue(account);
    await store.claim(account, [id]);
    const t = Date.now();
    await store.settle(account, [{ kind: 'progress', messageId: id, deliveredAtMs: t }]);
    const doc = await read(id);
    expect(doc.status).toBe('delivered');
    expect(doc.sentAt.toMillis()).toBe(t);
  });

  it('requeues and hands back only its own claims; an unclaim does not count an attempt', async () => {
    const { account, store } = await owned();
    const a = await queue(account);
    const b = await queue(account);
    const notClaimed = await queue(account);
    await store.claim(account, [a, b]);
    const at = Date.now() + 5_000;
    const results = await store.settle(account, [
      { kind: 'requeue', messageId: a, nextAttemptAtMs: at, failure: failures.ackTimeout(15_000) },
      { kind: 'unclaim', messageId: b },
      { kind: 'requeue', messageId: notClaimed, nextAttemptAtMs: at, failure: failures.ackTimeout(15_000) },
    ]);
    expect(results.map((r) => r.changed)).toEqual([true, true, false]);
    expect(await read(a)).toMatchObject({ status: 'queued', attemptCount: 1, error: { code: 'AckTimeout' } });
    expect((await read(a)).nextAttemptAt.toMillis()).toBe(at);
    expect(await read(b)).toMatchObject({ status: 'queued', attemptCount: 0, leaseUntil: null });
    expect(await read(notClaimed)).toMatchObject({ status: 'queued', attemptCount: 0 });
  });

  it('writes nothing once the lease was taken over, and says so', async () => {
    const { account, store } = await owned();
    const id = await queue(account);
    await store.claim(account, [id]);
    const other = new LeaseManager(db, identity('inst-b'), { ttlMs: 60_000, hostLockHeld: false });
    expect((await other.acquire(account)).acquired).toBe(true);
    await expect(store.settle(account, [{ kind: 'progress', messageId: id, sentAtMs: Date.now() }])).rejects.toBeInstanceOf(StaleOwnerError);
    expect((await read(id)).status).toBe('sending');
  });
});

/** `store`, recording how many accounts each of its transactions carried. */
function countingTransactions(store: OutboxStore): { counting: OutboxStore; transactions: number[] } {
  const transactions: number[] = [];
  const counting = Object.assign(Object.create(store) as OutboxStore, {
    settleMany: (groups: ReadonlyMap<string, readonly OutboxOp[]>) => {
      transactions.push(groups.size);
      return store.settleMany(groups);
    },
  });
  return { counting, transactions };
}

describe('OutboxWriter', () => {
  it('groups what arrives while a transaction runs, across accounts, and resolves each op with its own result', async () => {
    const { account, leases, store } = await owned();
    const second = `acc-${randomUUID().slice(0, 8)}`;
    expect((await leases.acquire(second)).acquired).toBe(true);
    const ids = await Promise.all(Array.from({ length: 40 }, () => queue(account)));
    const ids2 = await Promise.all(Array.from({ length: 40 }, () => queue(second)));
    await store.claim(account, ids);
    await store.claim(second, ids2);
    const { counting, transactions } = countingTransactions(store);
    const writer = new OutboxWriter({ store: counting, log });
    const [a, b] = [writer.port(account, () => undefined), writer.port(second, () => undefined)];
    const t = Date.now();
    const submits = (port: typeof a, list: string[]) => list.flatMap((messageId) => [port.submit({ kind: 'progress', messageId, sentAtMs: t }), port.submit({ kind: 'progress', messageId, deliveredAtMs: t + 1 })]);
    const results = await Promise.all([...submits(a, ids), ...submits(b, ids2)]);
    expect(results.every((r) => r.changed && r.status !== null)).toBe(true);
    // 160 ops of two accounts: a handful of commits, and the two accounts shared them.
    expect(transactions.length).toBeLessThan(10);
    expect(Math.max(...transactions)).toBe(2);
    const docs = await Promise.all([...ids, ...ids2].map(read));
    expect(docs.every((d) => d.status === 'delivered')).toBe(true);
    // One account stopping does not stop the other.
    expect(await a.drain(5_000)).toBe(true);
    await expect(a.submit({ kind: 'progress', messageId: ids[0]!, readAtMs: t })).rejects.toBeInstanceOf(WriterStoppedError);
    expect(await b.submit({ kind: 'progress', messageId: ids2[0]!, readAtMs: t + 2 })).toMatchObject({ changed: true, status: 'read' });
    await writer.close();
    await expect(b.submit({ kind: 'progress', messageId: ids2[1]!, readAtMs: t })).rejects.toBeInstanceOf(WriterStoppedError);
  });

  it('rejects the ops of an account whose lease was taken over and reports it, while another account’s ops in the same commit land', async () => {
    const { account, leases, store } = await owned();
    const kept = `acc-${randomUUID().slice(0, 8)}`;
    expect((await leases.acquire(kept)).acquired).toBe(true);
    const id = await queue(account);
    const keptId = await queue(kept);
    await store.claim(account, [id]);
    await store.claim(kept, [keptId]);
    const other = new LeaseManager(db, identity('inst-b'), { ttlMs: 60_000, hostLockHeld: false });
    await other.acquire(account);
    let stale = 0;
    let keptStale = 0;
    const { counting, transactions: sizes } = countingTransactions(store);
    const writer = new OutboxWriter({ store: counting, log });
    const lost = writer.port(account, () => stale++);
    const fine = writer.port(kept, () => keptStale++);
    const [r1, r2] = await Promise.allSettled([lost.submit({ kind: 'progress', messageId: id, sentAtMs: Date.now() }), fine.submit({ kind: 'progress', messageId: keptId, sentAtMs: Date.now() })]);
    expect(sizes).toEqual([2]);
    expect(r1).toMatchObject({ status: 'rejected', reason: expect.any(StaleOwnerError) });
    expect(r2).toMatchObject({ status: 'fulfilled', value: { changed: true, status: 'sent' } });
    expect([stale, keptStale]).toEqual([1, 0]);
    expect((await read(id)).status).toBe('sending');
    expect((await read(keptId)).status).toBe('sent');
    await writer.close();
  });
});
