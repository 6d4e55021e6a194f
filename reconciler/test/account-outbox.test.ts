/**
 * AccountOutbox's bookkeeping: what it takes in from the outbox listener (not connected, so the
 * store is never reached), and what it keeps when a send's result cannot be recorded (a socket
 * that acks and a writer that refuses stand in for Baileys and Firestore; both are exercised for
 * real by the messaging, outbox-crash and soak e2e tests).
 */
import type { ClaimOwner, OutboxDoc } from '@wafleet/contract';
import { Timestamp } from 'firebase-admin/firestore';
import pino from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { AccountOutbox } from '../src/outbox/account-outbox.ts';
import type { OutboxStore } from '../src/outbox/outbox-store.ts';
import { OutboxWriter } from '../src/outbox/outbox-writer.ts';

const log = pino({ level: 'silent' });
const us: ClaimOwner = { instanceId: 'vm-a', epoch: 3, incarnation: 'inc-now' };

function outbox(): AccountOutbox {
  const unreachable = new Proxy({}, { get: () => () => Promise.reject(new Error('the store must not be used here')) }) as OutboxStore;
  return new AccountOutbox({
    accountId: 'wa-01',
    store: unreachable,
    writer: new OutboxWriter({ store: unreachable, log }),
    log,
    metrics: { sent: () => undefined, failed: () => undefined, retried: () => undefined, receipt: () => undefined },
    maxAttempts: 5,
    ackTimeoutMs: 1_000,
    claimBatch: 25,
    pace: (send) => send(),
    owner: () => us,
  });
}

const doc = (over: Partial<OutboxDoc>): OutboxDoc =>
  ({ accountId: 'wa-01', to: '+15550001111', text: 'hi', createdAt: Timestamp.now(), createdBy: 'uid', status: 'queued', attemptCount: 0, ...over }) as OutboxDoc;

describe('AccountOutbox listener input', () => {
  it('ignores a late snapshot of its own claim (the listener lags the ack), which blocked the recipient until the claim expired', () => {
    const a = outbox();
    const claim = { status: 'sending' as const, claimedBy: us, leaseUntil: Timestamp.fromMillis(Date.now() + 55_000), attemptCount: 1 };
    a.upsert('m-1', doc(claim));
    expect(a.backlog()).toMatchObject({ queued: 0, sending: 0 });
    // A claim of an earlier owner (another epoch) is ours to resolve: taken in.
    a.upsert('m-2', doc({ ...claim, claimedBy: { instanceId: 'vm-a', epoch: 2 } }));
    a.upsert('m-3', doc({}));
    expect(a.backlog()).toMatchObject({ queued: 1, sending: 1 });
    a.remove('m-2');
    a.remove('m-3');
    expect(a.backlog()).toMatchObject({ queued: 0, sending: 0, oldestQueuedMs: null });
  });

  it('takes in a claim of the crashed process whose lease it adopted (same instance and epoch, another incarnation), which otherwise sat in sending forever', () => {
    const a = outbox();
    const leaseUntil = Timestamp.fromMillis(Date.now() + 55_000);
    a.upsert('m-1', doc({ status: 'sending', claimedBy: { instanceId: 'vm-a', epoch: 3, incarnation: 'inc-dead' }, leaseUntil, attemptCount: 1 }));
    // Written before claims named their incarnation: not ours either.
    a.upsert('m-2', doc({ status: 'sending', claimedBy: { instanceId: 'vm-a', epoch: 3 }, leaseUntil, attemptCount: 1 }));
    expect(a.backlog()).toMatchObject({ queued: 0, sending: 2 });
  });
});

describe('AccountOutbox after an ack whose write is refused', () => {
  it('keeps the message to resolve once it owns the account again (it sat in sending until a restart: CI soak, seed 20261203)', async () => {
    const { EventEmitter } = await import('node:events');
    const { StaleOwnerError } = await import('../src/lease/lease-manager.ts');
    let owner: ClaimOwner | null = us;
    const claims: string[][] = [];
    const store = {
      claim: async (_accountId: string, ids: readonly string[]) => {
        claims.push([...ids]);
        return ids.map((id) => ({ kind: 'claimed', attempt: 1, waId: `WA-${id}`, doc: doc({}), resend: false }));
      },
    } as unknown as OutboxStore;
    // The lease is lost while the ack's write waits: the writer refuses it as stale.
    const writer = {
      port: () => ({
        submit: async () => {
          owner = null;
          throw new StaleOwnerError('wa-01', 'no lease held');
        },
        drain: async () => true,
      }),
    } as unknown as OutboxWriter;
    const ws = new EventEmitter();
    const sock = {
      ws,
      ev: new EventEmitter(),
      onWhatsApp: async (jid: string) => [{ jid, exists: true }],
      // WhatsApp takes it: the server's ack frame for the id we sent under.
      sendMessage: async (_jid: string, _content: unknown, opts: { messageId: string }) => {
        setImmediate(() => ws.emit('CB:ack,class:message', { tag: 'ack', attrs: { id: opts.messageId, class: 'message', t: '1' } }));
        return {};
      },
    };
    const a = new AccountOutbox({
      accountId: 'wa-01',
      store,
      writer,
      log,
      metrics: { sent: () => undefined, failed: () => undefined, retried: () => undefined, receipt: () => undefined },
      maxAttempts: 5,
      ackTimeoutMs: 5_000,
      claimBatch: 25,
      pace: (send) => send(),
      owner: () => owner,
    });
    a.upsert('m-1', doc({}));
    a.opened(sock as never);
    await vi.waitFor(() => expect(owner).toBeNull(), { timeout: 5_000 });
    // The document is still `sending` under the lost claim, and no snapshot will say so again.
    await vi.waitFor(() => expect(a.backlog()).toMatchObject({ sending: 1 }), { timeout: 5_000 });
    a.closed();
    owner = { ...us, epoch: us.epoch + 1 };
    a.opened(sock as never);
    await vi.waitFor(() => expect(claims).toEqual([['m-1'], ['m-1']]), { timeout: 5_000 });
  });
});
