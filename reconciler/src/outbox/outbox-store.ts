/**
 * Every outbox write of the reconciler, each a transaction fenced by the account's lease: only the
 * current owner (lease holder at its epoch) moves a message, and every move re-reads the document,
 * so a listener's stale view can never move a message backwards or send it twice. Claims are one
 * transaction per account and round; everything after a claim is batched fleet-wide (`settleMany`).
 */
import { buildQuery, Collections, OUTBOX_PROGRESS, type ClaimOwner, type OutboxDoc, type OutboxStatus, type Owner } from '@wafleet/contract';
import { FieldValue, Timestamp, type Firestore } from 'firebase-admin/firestore';
import { StaleOwnerError, type LeaseManager } from '../lease/lease-manager.ts';
import { waMessageId } from './message-id.ts';
import type { SendFailure } from './send-errors.ts';

export type ClaimResult =
  | { kind: 'claimed'; attempt: number; waId: string; doc: OutboxDoc; resend: boolean }
  | { kind: 'skip'; status: OutboxStatus | 'missing'; nextAttemptAt: number | null };

export type ReceiptKind = 'delivered' | 'read';

/** What happened to a claimed message, to be recorded by the account's writer. */
export type OutboxOp =
  /** The server's ack (`sentAtMs`) and/or receipts; each time is kept once, the status only moves forward. */
  | { kind: 'progress'; messageId: string; sentAtMs?: number; deliveredAtMs?: number; readAtMs?: number; sentToJid?: string }
  /** A retryable failure: back to `queued`, due at `nextAttemptAtMs`, with the last error for people. */
  | { kind: 'requeue'; messageId: string; nextAttemptAtMs: number; failure: SendFailure }
  /** Final failure, from `queued` or `sending` only (a message WhatsApp accepted is never failed). */
  | { kind: 'fail'; messageId: string; failure: SendFailure }
  /** Our claim of a message we did not send after all: back to `queued` as it was, no attempt counted. */
  | { kind: 'unclaim'; messageId: string };

export interface OpResult {
  changed: boolean;
  /** The message's status after the op (null: no such message of this account). */
  status: OutboxStatus | null;
  createdAtMs: number | null;
}

/**
 * Whether a claim (`claimedBy`) is the given claimant's: same instance, lease epoch and process
 * incarnation (an adopted lease keeps instance and epoch across a kill -9; see ClaimOwnerSchema).
 */
export const sameOwner = (a: ClaimOwner | null | undefined, b: ClaimOwner | null) =>
  !!a && !!b && a.instanceId === b.instanceId && a.epoch === b.epoch && (a.incarnation ?? null) === (b.incarnation ?? null);
const millis = (t: unknown): number | null => (t instanceof Timestamp ? t.toMillis() : null);

export class OutboxStore {
  constructor(
    private readonly db: Firestore,
    private readonly leases: LeaseManager,
    /** How long a claim holds before another attempt (or owner) may resolve the message. */
    private readonly claimTtlMs: number,
  ) {}

  /** The claim identity of this process under `owner`'s lease. */
  claimant(owner: Owner): ClaimOwner {
    return { ...owner, incarnation: this.leases.identity.incarnation };
  }

  private ref(messageId: string) {
    return this.db.collection(Collections.outbox).doc(messageId);
  }

  /**
   * `queued` (and due) → `sending`, for each of `messageIds` in one transaction (every commit is
   * paid for, by Firestore and by every listener on the outbox). A message left `sending` by an
   * earlier owner or an expired claim is claimed again to be resent under the same WhatsApp id
   * (`resend`): whether the first attempt reached WhatsApp is unknown, and the same id makes a
   * repeat harmless.
   */
  claim(accountId: string, messageIds: readonly string[]): Promise<ClaimResult[]> {
    return this.leases.fencedGetAll(
      accountId,
      messageIds.map((id) => this.ref(id)),
      (tx, lease, snaps) => {
        const owner = this.claimant(lease);
        const now = Date.now();
        return messageIds.map((messageId, i): ClaimResult => {
          const doc = snaps[i]!.data() as OutboxDoc | undefined;
          if (!doc || doc.accountId !== accountId) return { kind: 'skip', status: 'missing', nextAttemptAt: null };
          const due = millis(doc.nextAttemptAt);
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
      },
    );
  }

  /**
   * Applies batches of outcomes of several accounts in one transaction (leases and documents in
   * one read), in order per message, each account fenced by its own lease: an account whose lease
   * is gone gets a StaleOwnerError and nothing written. The fleet's writer is the only caller after
   * a claim, so no two transactions of this process ever contend for one message (the emulator
   * resolves that by a multi-second lock timeout; production by aborts and retries).
   */
  async settleMany(groups: ReadonlyMap<string, readonly OutboxOp[]>): Promise<Map<string, OpResult[] | StaleOwnerError>> {
    const ids = [...new Set([...groups.values()].flatMap((ops) => ops.map((o) => o.messageId)))];
    const { result, stale } = await this.leases.fencedGetAllMany(
      [...groups.keys()],
      ids.map((id) => this.ref(id)),
      (tx, owners, snaps) => {
        const stored = new Map(ids.map((id, i) => [id, snaps[i]!.data() as OutboxDoc | undefined]));
        const out = new Map<string, OpResult[] | StaleOwnerError>();
        for (const [accountId, ops] of groups) {
          const lease = owners.get(accountId);
          if (!lease) continue;
          const owner = this.claimant(lease);
          const docs = new Map<string, OutboxDoc | null>();
          for (const op of ops) {
            const data = stored.get(op.messageId);
            if (!docs.has(op.messageId)) docs.set(op.messageId, data && data.accountId === accountId ? { ...data } : null);
          }
          const patches = new Map<string, Record<string, unknown>>();
          out.set(
            accountId,
            ops.map((op) => {
              const doc = docs.get(op.messageId);
              if (!doc) return { changed: false, status: null, createdAtMs: null };
              const patch = applyOp(doc, op, owner);
              if (patch) {
                Object.assign(doc, patch);
                patches.set(op.messageId, { ...patches.get(op.messageId), ...patch });
              }
              return { changed: !!patch, status: doc.status, createdAtMs: millis(doc.createdAt) };
            }),
          );
          for (const [id, patch] of patches) tx.update(this.ref(id), patch);
        }
        return out;
      },
    );
    for (const [accountId, err] of stale) result.set(accountId, err);
    return result;
  }

  /** `settleMany` for one account; throws StaleOwnerError when its lease is gone. */
  async settle(accountId: string, ops: readonly OutboxOp[]): Promise<OpResult[]> {
    const result = (await this.settleMany(new Map([[accountId, ops]]))).get(accountId)!;
    if (result instanceof StaleOwnerError) throw result;
    return result;
  }

  /** The outbox message a receipt refers to, when this process does not remember sending it. */
  async findByWaId(accountId: string, waId: string): Promise<string | null> {
    const snap = await buildQuery(this.db.collection(Collections.outbox), 'outboxByProviderId', [accountId, waId]).limit(1).get();
    return snap.docs[0]?.id ?? null;
  }
}

/** The patch `op` makes to `doc`, or null when it changes nothing. */
function applyOp(doc: OutboxDoc, op: OutboxOp, owner: ClaimOwner): Record<string, unknown> | null {
  switch (op.kind) {
    case 'progress': {
      if (doc.status === 'failed' || doc.status === 'cancelled') return null;
      const patch: Record<string, unknown> = {};
      // A receipt proves WhatsApp took the message, even if the ack never came or was not recorded.
      const acceptedAt = op.sentAtMs ?? op.deliveredAtMs ?? op.readAtMs;
      if (!doc.sentAt && acceptedAt !== undefined) patch['sentAt'] = Timestamp.fromMillis(acceptedAt);
      if (op.deliveredAtMs !== undefined && !doc.deliveredAt) patch['deliveredAt'] = Timestamp.fromMillis(op.deliveredAtMs);
      if (op.readAtMs !== undefined && !doc.readAt) patch['readAt'] = Timestamp.fromMillis(op.readAtMs);
      if (op.sentToJid !== undefined && doc.sentToJid !== op.sentToJid) patch['sentToJid'] = op.sentToJid;
      const target: OutboxStatus = op.readAtMs !== undefined ? 'read' : op.deliveredAtMs !== undefined ? 'delivered' : 'sent';
      if (OUTBOX_PROGRESS[doc.status] < OUTBOX_PROGRESS[target]) {
        if (doc.status === 'queued' || doc.status === 'sending') Object.assign(patch, { leaseUntil: null, nextAttemptAt: null, error: null });
        patch['status'] = target;
      }
      return Object.keys(patch).length > 0 ? patch : null;
    }
    case 'requeue':
      if (doc.status !== 'sending' || !sameOwner(doc.claimedBy, owner)) return null;
      return {
        status: 'queued',
        nextAttemptAt: Timestamp.fromMillis(op.nextAttemptAtMs),
        leaseUntil: null,
        error: { code: op.failure.code, message: op.failure.message },
      };
    case 'unclaim':
      if (doc.status !== 'sending' || !sameOwner(doc.claimedBy, owner)) return null;
      return { status: 'queued', leaseUntil: null, nextAttemptAt: null, attemptCount: Math.max(0, (doc.attemptCount ?? 1) - 1) };
    case 'fail':
      if (doc.status !== 'queued' && doc.status !== 'sending') return null;
      return {
        status: 'failed',
        leaseUntil: null,
        nextAttemptAt: null,
        error: { code: op.failure.code, message: op.failure.message },
        failedAt: FieldValue.serverTimestamp(),
      };
  }
}
