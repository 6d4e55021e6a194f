/**
 * Every outbox write of the reconciler, each a transaction fenced by the account's lease: only the
 * current owner (lease holder at its epoch) moves a message, and every move re-reads the document,
 * so a listener's stale view can never move a message backwards or send it twice.
 */
import { buildQuery, Collections, OUTBOX_PROGRESS, type OutboxDoc, type OutboxStatus, type Owner } from '@wafleet/contract';
import { FieldValue, Timestamp, type Firestore } from 'firebase-admin/firestore';
import type { LeaseManager } from '../lease/lease-manager.ts';
import { waMessageId } from './message-id.ts';
import type { SendFailure } from './send-errors.ts';

export type ClaimResult =
  | { kind: 'claimed'; attempt: number; waId: string; doc: OutboxDoc; resend: boolean }
  | { kind: 'skip'; status: OutboxStatus | 'missing'; nextAttemptAt: number | null };

export type ReceiptKind = 'delivered' | 'read';

const sameOwner = (a: Owner | null | undefined, b: Owner) => !!a && a.instanceId === b.instanceId && a.epoch === b.epoch;
const millis = (t: unknown): number | null => (t instanceof Timestamp ? t.toMillis() : null);

export class OutboxStore {
  constructor(
    private readonly db: Firestore,
    private readonly leases: LeaseManager,
    /** How long a claim holds before another attempt (or owner) may resolve the message. */
    private readonly claimTtlMs: number,
  ) {}

  private ref(messageId: string) {
    return this.db.collection(Collections.outbox).doc(messageId);
  }

  /**
   * `queued` (and due) → `sending`. A message left `sending` by an earlier owner or an expired
   * claim is claimed again to be resent under the same WhatsApp id (`resend`): whether the first
   * attempt reached WhatsApp is unknown, and the same id makes a repeat harmless.
   */
  claim(accountId: string, messageId: string): Promise<ClaimResult> {
    return this.leases.fenced(accountId, async (tx, owner) => {
      const snap = await tx.get(this.ref(messageId));
      if (!snap.exists) return { kind: 'skip', status: 'missing', nextAttemptAt: null };
      const doc = snap.data() as OutboxDoc;
      const now = Date.now();
      const due = millis(doc.nextAttemptAt);
      if (doc.accountId !== accountId) return { kind: 'skip', status: 'missing', nextAttemptAt: null };
      if (doc.status === 'queued') {
        if (due !== null && due > now) return { kind: 'skip', status: 'queued', nextAttemptAt: due };
      } else if (doc.status === 'sending') {
        const until = millis(doc.leaseUntil) ?? 0;
        if (sameOwner(doc.claimedBy, owner) && until > now) return { kind: 'skip', status: 'sending', nextAttemptAt: until };
      } else {
        return { kind: 'skip', status: doc.status, nextAttemptAt: null };
      }
      const attempt = (doc.attemptCount ?? 0) + 1;
      const waId = doc.providerMessageId ?? waMessageId(messageId);
      tx.update(this.ref(messageId), {
        status: 'sending',
        claimedBy: owner,
        leaseUntil: Timestamp.fromMillis(now + this.claimTtlMs),
        attemptCount: attempt,
        providerMessageId: waId,
        nextAttemptAt: null,
      });
      return { kind: 'claimed', attempt, waId, doc, resend: doc.status === 'sending' };
    });
  }

  /** WhatsApp acked: `sent`. Receipts that raced ahead of this write keep their later status. */
  markSent(accountId: string, messageId: string, sentAtMs: number): Promise<{ createdAtMs: number | null } | null> {
    return this.leases.fenced(accountId, async (tx) => {
      const snap = await tx.get(this.ref(messageId));
      if (!snap.exists) return null;
      const doc = snap.data() as OutboxDoc;
      if (doc.status === 'failed' || doc.status === 'cancelled') return null;
      const patch: Record<string, unknown> = { leaseUntil: null, error: null };
      if (!doc.sentAt) patch['sentAt'] = Timestamp.fromMillis(sentAtMs);
      if (OUTBOX_PROGRESS[doc.status] < OUTBOX_PROGRESS.sent) patch['status'] = 'sent';
      tx.update(this.ref(messageId), patch);
      return { createdAtMs: millis(doc.createdAt) };
    });
  }

  /** A delivery or read receipt; statuses only move forward, and each time is kept once. */
  markReceipt(accountId: string, messageId: string, kind: ReceiptKind, atMs: number): Promise<boolean> {
    return this.leases.fenced(accountId, async (tx) => {
      const snap = await tx.get(this.ref(messageId));
      if (!snap.exists) return false;
      const doc = snap.data() as OutboxDoc;
      if (doc.status === 'failed' || doc.status === 'cancelled') return false;
      const at = Timestamp.fromMillis(atMs);
      const patch: Record<string, unknown> = {};
      if (kind === 'delivered' && !doc.deliveredAt) patch['deliveredAt'] = at;
      if (kind === 'read' && !doc.readAt) patch['readAt'] = at;
      // A receipt proves WhatsApp took the message, even if our own ack write has not landed yet.
      if (!doc.sentAt) patch['sentAt'] = at;
      if (OUTBOX_PROGRESS[doc.status] < OUTBOX_PROGRESS[kind]) {
        patch['status'] = kind;
        patch['leaseUntil'] = null;
      }
      if (Object.keys(patch).length === 0) return false;
      tx.update(this.ref(messageId), patch);
      return true;
    });
  }

  /** A retryable failure: back to `queued`, due at `nextAttemptAt`, with the last error for people. */
  requeue(accountId: string, messageId: string, nextAttemptAtMs: number, failure: SendFailure): Promise<boolean> {
    return this.leases.fenced(accountId, async (tx, owner) => {
      const snap = await tx.get(this.ref(messageId));
      const doc = snap.data() as OutboxDoc | undefined;
      if (!doc || doc.status !== 'sending' || !sameOwner(doc.claimedBy, owner)) return false;
      tx.update(this.ref(messageId), {
        status: 'queued',
        nextAttemptAt: Timestamp.fromMillis(nextAttemptAtMs),
        leaseUntil: null,
        error: { code: failure.code, message: failure.message },
      });
      return true;
    });
  }

  /** Final failure, from `queued` or `sending` only (a message WhatsApp accepted is never failed). */
  fail(accountId: string, messageId: string, failure: SendFailure): Promise<boolean> {
    return this.leases.fenced(accountId, async (tx) => {
      const snap = await tx.get(this.ref(messageId));
      const doc = snap.data() as OutboxDoc | undefined;
      if (!doc || (doc.status !== 'queued' && doc.status !== 'sending')) return false;
      tx.update(this.ref(messageId), {
        status: 'failed',
        leaseUntil: null,
        nextAttemptAt: null,
        error: { code: failure.code, message: failure.message },
        failedAt: FieldValue.serverTimestamp(),
      });
      return true;
    });
  }

  /** The outbox message a receipt refers to, when this process does not remember sending it. */
  async findByWaId(accountId: string, waId: string): Promise<string | null> {
    const snap = await buildQuery(this.db.collection(Collections.outbox), 'outboxByProviderId', [accountId, waId]).limit(1).get();
    return snap.docs[0]?.id ?? null;
  }
}
