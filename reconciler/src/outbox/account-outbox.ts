/**
 * One account's outbox: sends its messages one at a time, in order per recipient, while the
 * account is connected and this process owns it.
 *
 *   claim (fenced tx: queued → sending) → recipient on WhatsApp? → send with the derived id →
 *   wait for the server's ack frame → sent | nack → failed | no ack / connection lost → queued
 *   again with backoff (the same id next time) | too many attempts → failed.
 *
 * One message in flight per account keeps per-recipient order without bookkeeping, and a
 * message to one recipient that is backing off does not hold up messages to others.
 * Baileys resolves sendMessage once the bytes are written, not when WhatsApp accepted them, so
 * "sent" waits for the `<ack class="message">` frame itself (Baileys ignores a plain ack).
 */
import { recipientToJid, type OutboxDoc, type OutboxStatus, type ClaimOwner } from '@wafleet/contract';
import { isPnUser, type BinaryNode, type WAMessageUpdate, type WASocket } from '@whiskeysockets/baileys';
import { Timestamp } from 'firebase-admin/firestore';
import type { Logger } from 'pino';
import { StaleOwnerError } from '../lease/lease-manager.ts';
import { backoffDelay } from '../util/backoff.ts';
import { withTimeout } from '../util/deadline.ts';
import { sameOwner, type ClaimResult, type OutboxOp, type OutboxStore, type ReceiptKind } from './outbox-store.ts';
import { WriterStoppedError, type OutboxWriter, type WriterPort } from './outbox-writer.ts';
import { classifySendError, failures, SendFailureError, type SendFailure } from './send-errors.ts';

export interface OutboxMetricsSink {
  sent(latencyMs: number | null): void;
  failed(code: string): void;
  retried(code: string): void;
  receipt(kind: ReceiptKind): void;
}

export interface AccountOutboxDeps {
  accountId: string;
  store: OutboxStore;
  log: Logger;
  metrics: OutboxMetricsSink;
  maxAttempts: number;
  ackTimeoutMs: number;
  /** Most messages claimed in one transaction (each commit costs; pacing bounds how many are useful). */
  claimBatch: number;
  /** The fleet's writer of send results, receipts and failures. */
  writer: OutboxWriter;
  /** Runs one send under the account's and the fleet's pacing. */
  pace: (send: () => Promise<void>) => Promise<void>;
  /** This process's claim identity under its lease on the account, or null when it does not own it. */
  owner: () => ClaimOwner | null;
}

type Claimed = Extract<ClaimResult, { kind: 'claimed' }>;
type AckResult = { ok: true; atMs: number; sentToJid?: string } | { ok: false; failure: SendFailure };

/** Baileys' WAMessageStatus values for receipts of our own messages. */
const DELIVERY_ACK = 3;
const READ = 4;
const PLAYED = 5;
const REMEMBERED_IDS = 20_000;
/** A write that was refused because the lease is gone or sending stopped: expected, not worth a warning. */
const writeRefused = (err: unknown) => err instanceof StaleOwnerError || err instanceof WriterStoppedError;

/** Statuses of a message WhatsApp took. */
const ACCEPTED = new Set<OutboxStatus | null>(['sent', 'delivered', 'read']);

export class AccountOutbox {
  /** Messages still to send as the listener sees them (queued, or sending with an unresolved claim). */
  private readonly pending = new Map<string, OutboxDoc>();
  private readonly ackWaiters = new Map<string, (r: AckResult) => void>();
  /** Acked messages whose `sent` is still being written: the listener's older view must not bring them back. */
  private readonly settling = new Set<string>();
  /** WhatsApp id → outbox id of messages sent by this process (for receipts). */
  private readonly sentIds = new Map<string, string>();
  /** Recipients known to be on WhatsApp, per socket. */
  private onWhatsApp = new Set<string>();
  private sock: WASocket | null = null;
  private connected = false;
  private stopped = false;
  private loop: Promise<void> | null = null;
  private wakeTimer: NodeJS.Timeout | null = null;
  private receiptChain: Promise<void> = Promise.resolve();
  private readonly writer: WriterPort;

  constructor(private readonly d: AccountOutboxDeps) {
    this.writer = d.writer.port(d.accountId, () => this.lostOwnership());
  }

  get accountId(): string {
    return this.d.accountId;
  }

  /** Queued messages and the oldest one's creation time, for metrics and the stuck check. */
  backlog(): { queued: number; sending: number; oldestQueuedMs: number | null } {
    let queued = 0;
    let sending = 0;
    let oldest: number | null = null;
    for (const doc of this.pending.values()) {
      if (doc.status === 'sending') sending++;
      else queued++;
      const created = doc.createdAt.toMillis();
      if (oldest === null || created < oldest) oldest = created;
    }
    return { queued, sending, oldestQueuedMs: oldest };
  }

  /** A send in flight (or its result being recorded, or a claim of ours unresolved): the account must not move now. */
  get busy(): boolean {
    if (this.loop || this.settling.size > 0 || this.ackWaiters.size > 0) return true;
    const owner = this.d.owner();
    for (const doc of this.pending.values()) if (doc.status === 'sending' && sameOwner(doc.claimedBy, owner)) return true;
    return false;
  }

  /** Whether this WhatsApp id is one of our outbox sends (inbound capture skips those). */
  isOwnSend(waId: string): boolean {
    return this.sentIds.has(waId);
  }

  // ------------------------------------------------------------------ inputs

  upsert(messageId: string, doc: OutboxDoc): void {
    if (this.settling.has(messageId)) return;
    // Our own claims enter `pending` through claim() only. The listener lags our writes (seconds,
    // under load), so a snapshot of our claim can arrive after the ack, requeue or hand-back was
    // recorded; taken in, it blocked the recipient's later messages until the claim expired
    // (measured: 40 s stalls in the throughput bench).
    if (doc.status === 'sending' && sameOwner(doc.claimedBy, this.d.owner()) && this.pending.get(messageId)?.status !== 'sending') return;
    this.pending.set(messageId, doc);
    this.kick();
  }

  remove(messageId: string): void {
    // A message that was blocking its recipient may be gone: look again.
    if (this.pending.delete(messageId)) this.kick();
  }

  /** A new socket: listen for acks and receipts before anything is sent on it. */
  attach(sock: WASocket): void {
    this.sock = sock;
    this.onWhatsApp = new Set();
    sock.ws.on('CB:ack,class:message', (node: BinaryNode) => this.onAckFrame(node));
    sock.ev.on('messages.update', (updates) => this.onUpdates(updates));
    // Baileys merges a receipt that beats the upsert of our own message into that upsert.
    sock.ev.on('messages.upsert', ({ messages }) => this.onUpdates(messages.filter((m) => m.key.fromMe).map((m) => ({ key: m.key, update: { status: m.status } }))));
  }

  opened(sock: WASocket): void {
    if (this.sock !== sock) this.attach(sock);
    this.connected = true;
    this.kick();
  }

  closed(): void {
    this.connected = false;
    this.sock = null;
    for (const resolve of this.ackWaiters.values()) resolve({ ok: false, failure: failures.connectionLost() });
    this.ackWaiters.clear();
  }

  /** Stops taking messages; resolves once the message in flight (if any) is settled and recorded (bounded). */
  async stop(timeoutMs: number): Promise<void> {
    this.stopped = true;
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    const deadline = Date.now() + timeoutMs;
    await withTimeout(this.loop ?? Promise.resolve(), timeoutMs, 'outbox send in flight').catch(() => undefined);
    await this.writer.drain(Math.max(0, deadline - Date.now()));
  }

  /** Fails every waiting message for good (banned or deleted account); the writer groups them into few commits. */
  async failAll(failure: SendFailure): Promise<number> {
    const results = await Promise.all(
      [...this.pending.keys()].map((id) =>
        this.failForGood(id, failure).then(
          (changed) => {
            this.pending.delete(id);
            return changed;
          },
          (err: unknown) => (this.d.log.warn({ messageId: id, err }, 'failing a message failed'), false),
        ),
      ),
    );
    return results.filter(Boolean).length;
  }

  /** A document that is not a valid message (written around the rules): failed, visibly. */
  reject(messageId: string, failure: SendFailure): Promise<boolean> {
    this.pending.delete(messageId);
    return this.failForGood(messageId, failure);
  }

  private async failForGood(messageId: string, failure: SendFailure): Promise<boolean> {
    const { changed } = await this.writer.submit({ kind: 'fail', messageId, failure });
    if (changed) this.d.metrics.failed(failure.code);
    return changed;
  }

  // ------------------------------------------------------------------ the send loop

  kick(): void {
    if (this.loop || this.stopped || !this.connected || !this.d.owner()) return;
    this.loop = this.run().finally(() => {
      this.loop = null;
    });
  }

  private async run(): Promise<void> {
    // Let the rest of a listener snapshot arrive first, so a round claims all of it.
    await Promise.resolve();
    while (!this.stopped && this.connected && this.d.owner()) {
      const next = this.pick(Date.now());
      if (!next) return;
      if ('wakeAt' in next) {
        this.wakeAt(next.wakeAt);
        return;
      }
      await this.sendBatch(next.ids);
    }
  }

  /**
   * The oldest due messages, up to a claim batch, in order per recipient: a recipient whose
   * oldest waiting message is not due (backing off, or claimed) waits as a whole (order first).
   */
  private pick(now: number): { ids: string[] } | { wakeAt: number } | null {
    const ordered = [...this.pending.entries()].sort(([a, x], [b, y]) => x.createdAt.toMillis() - y.createdAt.toMillis() || (a < b ? -1 : 1));
    const blocked = new Set<string>();
    const ids: string[] = [];
    let wakeAt: number | null = null;
    for (const [id, doc] of ordered) {
      if (blocked.has(doc.to)) continue;
      const due = doc.status === 'sending' ? (doc.leaseUntil?.toMillis() ?? 0) : (doc.nextAttemptAt?.toMillis() ?? 0);
      // A claim of another owner (an earlier process) is resolved at once: we hold the lease now.
      const foreignClaim = doc.status === 'sending' && !sameOwner(doc.claimedBy, this.d.owner());
      if (foreignClaim || due <= now) {
        ids.push(id);
        if (ids.length >= this.d.claimBatch) break;
        continue;
      }
      blocked.add(doc.to);
      wakeAt = wakeAt === null ? due : Math.min(wakeAt, due);
    }
    if (ids.length > 0) return { ids };
    return wakeAt === null ? null : { wakeAt };
  }

  private wakeAt(at: number): void {
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = null;
      this.kick();
    }, Math.max(0, at - Date.now()) + 5);
    this.wakeTimer.unref();
  }

  /**
   * Claims `ids` in one transaction, then sends them one by one under pacing. Once a recipient's
   * message goes back to the queue, that recipient's later messages in the batch are handed back
   * unsent (order first); so is the rest of the batch when the socket closes or sending stops.
   */
  private async sendBatch(ids: string[]): Promise<void> {
    const sock = this.sock;
    if (!sock || !this.connected || this.stopped) return;
    const { accountId, store, log } = this.d;
    let claims: ClaimResult[];
    try {
      claims = await withTimeout(store.claim(accountId, ids), 15_000, 'outbox claim');
    } catch (err) {
      if (err instanceof StaleOwnerError) return this.lostOwnership();
      log.warn({ messages: ids.length, err }, 'claiming messages failed; retrying shortly');
      return this.pauseFor(1_000);
    }
    const claimed: Array<{ messageId: string; claim: Claimed }> = [];
    claims.forEach((claim, i) => {
      const messageId = ids[i]!;
      if (claim.kind === 'claimed') {
        this.pending.set(messageId, { ...claim.doc, status: 'sending', claimedBy: this.d.owner(), attemptCount: claim.attempt });
        if (claim.resend) log.info({ messageId, attempt: claim.attempt }, 'resending a message whose earlier attempt is unresolved (same WhatsApp id)');
        claimed.push({ messageId, claim });
        return;
      }
      const doc = this.pending.get(messageId);
      if (claim.status === 'queued' || claim.status === 'sending') {
        if (doc && claim.nextAttemptAt !== null) {
          this.pending.set(messageId, { ...doc, status: claim.status, nextAttemptAt: null, leaseUntil: null, ...this.dueFields(claim.status, claim.nextAttemptAt) });
        }
      } else {
        this.pending.delete(messageId);
      }
    });

    const heldBack = new Set<string>();
    const unsent: string[] = [];
    for (const { messageId, claim } of claimed) {
      if (this.stopped || !this.connected || this.sock !== sock || heldBack.has(claim.doc.to)) {
        unsent.push(messageId);
        continue;
      }
      let requeued = false;
      await this.d.pace(async () => {
        requeued = await this.sendClaimed(sock, messageId, claim);
      });
      if (requeued) heldBack.add(claim.doc.to);
    }
    if (unsent.length > 0) await this.unclaim(unsent);
  }

  /** Sends one claimed message and records the outcome; true when it went back to the queue. */
  private async sendClaimed(sock: WASocket, messageId: string, { attempt, waId, doc }: Claimed): Promise<boolean> {
    let outcome: AckResult;
    try {
      // Known before sending: a receipt may arrive before the ack is recorded.
      this.rememberSent(waId, messageId);
      outcome = await this.attempt(sock, doc, waId);
    } catch (err) {
      outcome = { ok: false, failure: classifySendError(err) };
    }
    try {
      return await this.record(messageId, attempt, outcome);
    } catch (err) {
      if (err instanceof StaleOwnerError) this.lostOwnership();
      // The claim expires and the message is resolved again (same id): nothing is lost.
      else this.d.log.warn({ messageId, err }, 'recording a send result failed; the claim will expire and be resolved');
      return true;
    }
  }

  /** Hands claimed but unsent messages back to the queue, as they were (no attempt counted). */
  private async unclaim(ids: string[]): Promise<void> {
    await Promise.all(
      ids.map(async (messageId) => {
        try {
          await this.writer.submit({ kind: 'unclaim', messageId });
          const doc = this.pending.get(messageId);
          if (doc) this.pending.set(messageId, { ...doc, status: 'queued', leaseUntil: null, nextAttemptAt: null, attemptCount: Math.max(0, (doc.attemptCount ?? 1) - 1) });
        } catch (err) {
          // Left claimed: resolved by a resend under the same id once the claim expires.
          if (!writeRefused(err)) this.d.log.warn({ messageId, err }, 'handing a message back failed');
        }
      }),
    );
  }

  private dueFields(status: 'queued' | 'sending', at: number) {
    return status === 'queued' ? { nextAttemptAt: Timestamp.fromMillis(at) } : { leaseUntil: Timestamp.fromMillis(at) };
  }

  /**
   * The chat to send `to` to. A phone number must be on WhatsApp and is sent to its phone-number
   * JID: Baileys 7 itself encrypts for the LID devices it knows of that person (messages-send.js),
   * and receipts match by message id whichever address they come from. A JID is used as given.
   */
  private async chatFor(sock: WASocket, to: string): Promise<string> {
    const jid = recipientToJid(to);
    if (!isPnUser(jid)) return jid;
    if (!this.onWhatsApp.has(jid)) {
      const [found] = (await withTimeout(sock.onWhatsApp(jid), this.d.ackTimeoutMs, 'recipient lookup')) ?? [];
      if (!found?.exists) throw new SendFailureError(failures.notOnWhatsApp());
      this.onWhatsApp.add(jid);
    }
    return jid;
  }

  private async attempt(sock: WASocket, doc: OutboxDoc, waId: string): Promise<AckResult> {
    const jid = await this.chatFor(sock, doc.to);
    // The waiter exists before the bytes leave: the ack can beat sendMessage's own promise.
    const acked = new Promise<AckResult>((resolve) => this.ackWaiters.set(waId, resolve));
    try {
      await withTimeout(sock.sendMessage(jid, { text: doc.text }, { messageId: waId }), this.d.ackTimeoutMs, 'sendMessage');
      const result = await withTimeout(acked, this.d.ackTimeoutMs, 'server ack').catch(() => ({ ok: false as const, failure: failures.ackTimeout(this.d.ackTimeoutMs) }));
      return result.ok ? { ...result, sentToJid: jid } : result;
    } finally {
      this.ackWaiters.delete(waId);
    }
  }

  private rememberSent(waId: string, messageId: string): void {
    this.sentIds.delete(waId);
    this.sentIds.set(waId, messageId);
    if (this.sentIds.size > REMEMBERED_IDS) this.sentIds.delete(this.sentIds.keys().next().value!);
  }

  /**
   * An ack is recorded in the background: the next message goes out meanwhile (a crash before the
   * write lands leaves a claim that is resolved by a resend under the same id). Failures are
   * awaited, so the message's next attempt never races its requeue.
   */
  private async record(messageId: string, attempt: number, outcome: AckResult): Promise<boolean> {
    const { log, metrics } = this.d;
    if (outcome.ok) {
      const claimed = this.pending.get(messageId);
      this.pending.delete(messageId);
      this.settling.add(messageId);
      this.writer.submit({ kind: 'progress', messageId, sentAtMs: outcome.atMs, ...(outcome.sentToJid ? { sentToJid: outcome.sentToJid } : {}) })
        .then(
          // Counted even when a receipt recorded it first (the ack op then changes nothing).
          (res) => ACCEPTED.has(res.status) && metrics.sent(res.createdAtMs ? Date.now() - res.createdAtMs : null),
          (err: unknown) => {
            // Unrecorded, the document stays `sending` under this claim, and the listener has no
            // change to report: dropped here, it sat in `sending` until the process restarted
            // (seen in a CI soak: the lease was lost to a Firestore cut while the ack's write
            // waited). Kept, it is resolved by a resend under the same id once this process owns
            // the account again, or the listener replaces it with the new owner's view.
            if (claimed && !this.pending.has(messageId)) this.pending.set(messageId, claimed);
            if (!writeRefused(err)) log.warn({ messageId, err }, 'recording an ack failed; the claim will expire and be resolved');
          },
        )
        .finally(() => this.settling.delete(messageId));
      return false;
    }
    const failure = outcome.failure;
    if (!failure.retryable || attempt >= this.d.maxAttempts) {
      const final = failure.retryable ? failures.retriesExhausted(attempt, failure) : failure;
      await this.writer.submit({ kind: 'fail', messageId, failure: final });
      this.pending.delete(messageId);
      metrics.failed(final.code);
      log.warn({ messageId, code: final.code, attempt }, 'message failed');
      return false;
    }
    const delay = backoffDelay(attempt - 1, { baseMs: 2_000, maxMs: 5 * 60_000, jitter: 'equal' });
    const at = Date.now() + delay;
    await this.writer.submit({ kind: 'requeue', messageId, nextAttemptAtMs: at, failure });
    const doc = this.pending.get(messageId);
    if (doc) this.pending.set(messageId, { ...doc, status: 'queued', nextAttemptAt: Timestamp.fromMillis(at), leaseUntil: null });
    metrics.retried(failure.code);
    log.info({ messageId, code: failure.code, attempt, retryInMs: delay }, 'send attempt failed; will retry');
    return true;
  }

  private lostOwnership(): void {
    this.d.log.warn('outbox: no longer the owner; stopping sends for this account');
    this.connected = false;
  }

  private pauseFor(ms: number): Promise<void> {
    return new Promise((r) => setTimeout(r, ms).unref());
  }

  // ------------------------------------------------------------------ acks and receipts

  private onAckFrame(node: BinaryNode): void {
    const id = node.attrs['id'];
    const resolve = id ? this.ackWaiters.get(id) : undefined;
    if (!resolve) return;
    const error = node.attrs['error'];
    const t = Number(node.attrs['t']);
    resolve(error ? { ok: false, failure: failures.rejected(error) } : { ok: true, atMs: Number.isFinite(t) && t > 0 ? t * 1000 : Date.now() });
  }

  private onUpdates(updates: WAMessageUpdate[]): void {
    for (const { key, update } of updates) {
      if (!key.fromMe || !key.id || typeof update.status !== 'number') continue;
      const kind: ReceiptKind | null = update.status === DELIVERY_ACK ? 'delivered' : update.status === READ || update.status === PLAYED ? 'read' : null;
      if (!kind) continue;
      const waId = key.id;
      const at = Date.now();
      // A receipt proves WhatsApp accepted the message, even when its ack never came.
      this.ackWaiters.get(waId)?.({ ok: true, atMs: at });
      // In order per account: a read never lands before its delivery.
      this.receiptChain = this.receiptChain.then(() => this.applyReceipt(waId, kind, at));
    }
  }

  /** Finds the message a receipt is for (in order per account: a read never lands before its delivery) and hands it to the writer. */
  private async applyReceipt(waId: string, kind: ReceiptKind, atMs: number): Promise<void> {
    const { accountId, store, log, metrics } = this.d;
    let messageId = this.sentIds.get(waId);
    for (let attempt = 0; !messageId && attempt < 5 && !this.stopped; attempt++) {
      try {
        messageId = (await withTimeout(store.findByWaId(accountId, waId), 10_000, 'outbox lookup by WhatsApp id')) ?? undefined;
        if (!messageId) return; // not an outbox message (sent from the phone, say)
      } catch (err) {
        log.warn({ waId, kind, err }, 'looking up the message of a receipt failed; retrying');
        await this.pauseFor(backoffDelay(attempt, { baseMs: 500, maxMs: 10_000 }));
      }
    }
    if (!messageId) return;
    const op: OutboxOp = kind === 'delivered' ? { kind: 'progress', messageId, deliveredAtMs: atMs } : { kind: 'progress', messageId, readAtMs: atMs };
    this.writer.submit(op).then(
      (res) => res.changed && metrics.receipt(kind),
      (err: unknown) => {
        if (!writeRefused(err)) log.warn({ waId, kind, err }, 'recording a receipt failed');
      },
    );
  }
}
