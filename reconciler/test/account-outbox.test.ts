/**
 * What AccountOutbox takes in from the outbox listener. Pure bookkeeping: the account is not
 * connected, so nothing is claimed or written (the store is never reached).
 */
import type { ClaimOwner, OutboxDoc } from '@wafleet/contract';
import { Timestamp } from 'firebase-admin/firestore';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
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
