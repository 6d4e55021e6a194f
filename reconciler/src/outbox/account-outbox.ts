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
import { recipientToJid, type OutboxDoc, type Owner } from '@wafleet/contract';
import type { BinaryNode, WAMessageUpdate, WASocket } from '@whiskeysockets/baileys';
import { Timestamp } from 'firebase-admin/firestore';
import type { Logger } from 'pino';
import { StaleOwnerError } from '../lease/lease-manager.ts';
import { backoffDelay } from '../util/backoff.ts';
import { withTimeout } from '../util/deadline.ts';
import type { OutboxStore, ReceiptKind } from './outbox-store.ts';
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
  /** Runs one send under the account's and the fleet's pacing. */
  pace: (send: () => Promise<void>) => Promise<void>;
  /** This process's lease on the account (instance and epoch), or null when it does not own it. */
  owner: () => Owner | null;
}

type AckResult = { ok: true; atMs: number } | { ok: false; failure: SendFailure };

/** Baileys' WAMessageStatus values for receipts of our own messages. */
const DELIVERY_ACK = 3;
const READ = 4;
const PLAYED = 5;
const REMEMBERED_IDS = 20_000;

export class AccountOutbox {
  /** Messages still to send as the listener sees them (queued, or sending with an unresolved claim). */
  private readonly pending = new Map<string, OutboxDoc>();
  private readonly ackWaiters = new Map<string, (r: AckResult) => void>();
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

  constructor(private readonly d: AccountOutboxDeps) {}

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

  /** Whether this WhatsApp id is one of our outbox sends (inbound capture skips those). */
  isOwnSend(waId: string): boolean {
    return this.sentIds.has(waId);
  }

  // ------------------------------------------------------------------ inputs

  upsert(messageId: string, doc: OutboxDoc): void {
    this.pending.set(messageId, doc);
    this.kick();
  }

  remove(messageId: string): void {
    this.pending.delete(messageId);
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

  /** Stops taking messages; resolves once the message in flight (if any) is settled. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    await this.loop;
  }

  /** Fails every waiting message for good (banned or deleted account). */
  async failAll(failure: SendFailure): Promise<number> {
    let n = 0;
    for (const id of [...this.pending.keys()]) {
      try {
        if (await this.d.store.fail(this.d.accountId, id, failure)) {
          n++;
          this.d.metrics.failed(failure.code);
        }
        this.pending.delete(id);
      } catch (err) {
        this.d.log.warn({ messageId: id, err: String(err) }, 'failing a message failed');
      }
    }
    return n;
  }

  // ------------------------------------------------------------------ the send loop

  kick(): void {
    if (this.loop || this.stopped || !this.connected || !this.d.owner()) return;
    this.loop = this.run().finally(() => {
      this.loop = null;
    });
  }

  private async run(): Promise<void> {
    while (!this.stopped && this.connected && this.d.owner()) {
      const next = this.pick(Date.now());
      if (!next) return;
      if ('wakeAt' in next) {
        this.wakeAt(next.wakeAt);
        return;
      }
      await this.d.pace(() => this.sendOne(next.id));
    }
  }

  /**
   * The oldest message whose recipient has nothing older still waiting, and that is due. A
   * recipient whose oldest message backs off waits as a whole (order first).
   */
  private pick(now: number): { id: string } | { wakeAt: number } | null {
    const ordered = [...this.pending.entries()].sort(([a, x], [b, y]) => x.createdAt.toMillis() - y.createdAt.toMillis() || (a < b ? -1 : 1));
    const blocked = new Set<string>();
    let wakeAt: number | null = null;
    for (const [id, doc] of ordered) {
      if (blocked.has(doc.to)) continue;
      blocked.add(doc.to);
      const due = doc.status === 'sending' ? (doc.leaseUntil?.toMillis() ?? 0) : (doc.nextAttemptAt?.toMillis() ?? 0);
      // A claim of another owner (an earlier process) is resolved at once: we hold the lease now.
      const foreignClaim = doc.status === 'sending' && !this.claimedByUs(doc);
      if (foreignClaim || due <= now) return { id };
      wakeAt = wakeAt === null ? due : Math.min(wakeAt, due);
    }
    return wakeAt === null ? null : { wakeAt };
  }

  private claimedByUs(doc: OutboxDoc): boolean {
    const o = this.d.owner();
    return !!o && doc.claimedBy?.instanceId === o.instanceId && doc.claimedBy.epoch === o.epoch;
  }

  private wakeAt(at: number): void {
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = null;
      this.kick();
    }, Math.max(0, at - Date.now()) + 5);
    this.wakeTimer.unref();
  }

  private async sendOne(messageId: string): Promise<void> {
    const sock = this.sock;
    if (!sock || !this.connected || this.stopped) return;
    const { accountId, store, log } = this.d;
    let claim;
    try {
      claim = await store.claim(accountId, messageId);
    } catch (err) {
      if (err instanceof StaleOwnerError) return this.lostOwnership();
      log.warn({ messageId, err: String(err) }, 'claiming a message failed; retrying shortly');
      return this.pauseFor(1_000);
    }
    if (claim.kind === 'skip') {
      const doc = this.pending.get(messageId);
      if (claim.status === 'queued' || claim.status === 'sending') {
        if (doc && claim.nextAttemptAt !== null) {
          this.pending.set(messageId, { ...doc, status: claim.status, nextAttemptAt: null, leaseUntil: null, ...this.dueFields(claim.status, claim.nextAttemptAt) });
        }
      } else {
        this.pending.delete(messageId);
      }
      return;
    }
    const { attempt, waId, doc } = claim;
    this.pending.set(messageId, { ...doc, status: 'sending', claimedBy: this.d.owner(), attemptCount: attempt });
    if (claim.resend) log.info({ messageId, attempt }, 'resending a message whose earlier attempt is unresolved (same WhatsApp id)');

    let outcome: AckResult;
    try {
      // Known before sending: a receipt may arrive before the ack is recorded.
      this.rememberSent(waId, messageId);
      outcome = await this.attempt(sock, doc, waId);
    } catch (err) {
      outcome = { ok: false, failure: classifySendError(err) };
    }
    try {
      await this.record(messageId, attempt, waId, outcome);
    } catch (err) {
      if (err instanceof StaleOwnerError) return this.lostOwnership();
      // The claim expires and the message is resolved again (same id): nothing is lost.
      log.warn({ messageId, err: String(err) }, 'recording a send result failed; the claim will expire and be resolved');
      this.pauseFor(1_000);
    }
  }

  private dueFields(status: 'queued' | 'sending', at: number) {
    return status === 'queued' ? { nextAttemptAt: Timestamp.fromMillis(at) } : { leaseUntil: Timestamp.fromMillis(at) };
  }

  private async attempt(sock: WASocket, doc: OutboxDoc, waId: string): Promise<AckResult> {
    const jid = recipientToJid(doc.to);
    if (jid.endsWith('@s.whatsapp.net') && !this.onWhatsApp.has(jid)) {
      const [found] = (await withTimeout(sock.onWhatsApp(jid), this.d.ackTimeoutMs, 'recipient lookup')) ?? [];
      if (!found?.exists) throw new SendFailureError(failures.notOnWhatsApp());
      this.onWhatsApp.add(jid);
    }
    // The waiter exists before the bytes leave: the ack can beat sendMessage's own promise.
    const acked = new Promise<AckResult>((resolve) => this.ackWaiters.set(waId, resolve));
    try {
      await withTimeout(sock.sendMessage(jid, { text: doc.text }, { messageId: waId }), this.d.ackTimeoutMs, 'sendMessage');
      return await withTimeout(acked, this.d.ackTimeoutMs, 'server ack').catch(() => ({ ok: false as const, failure: failures.ackTimeout(this.d.ackTimeoutMs) }));
    } finally {
      this.ackWaiters.delete(waId);
    }
  }

  private rememberSent(waId: string, messageId: string): void {
    this.sentIds.delete(waId);
    this.sentIds.set(waId, messageId);
    if (this.sentIds.size > REMEMBERED_IDS) this.sentIds.delete(this.sentIds.keys().next().value!);
  }

  private async record(messageId: string, attempt: number, waId: string, outcome: AckResult): Promise<void> {
    const { accountId, store, log, metrics } = this.d;
    if (outcome.ok) {
      const res = await store.markSent(accountId, messageId, outcome.atMs);
      this.pending.delete(messageId);
      metrics.sent(res?.createdAtMs ? Date.now() - res.createdAtMs : null);
      return;
    }
    const failure = outcome.failure;
    if (!failure.retryable || attempt >= this.d.maxAttempts) {
      const final = failure.retryable ? failures.retriesExhausted(attempt, failure) : failure;
      await store.fail(accountId, messageId, final);
      this.pending.delete(messageId);
      metrics.failed(final.code);
      log.warn({ messageId, code: final.code, attempt }, 'message failed');
      return;
    }
    const delay = backoffDelay(attempt - 1, { baseMs: 2_000, maxMs: 5 * 60_000, jitter: 'equal' });
    const at = Date.now() + delay;
    await store.requeue(accountId, messageId, at, failure);
    const doc = this.pending.get(messageId);
    if (doc) this.pending.set(messageId, { ...doc, status: 'queued', nextAttemptAt: Timestamp.fromMillis(at), leaseUntil: null });
    metrics.retried(failure.code);
    log.info({ messageId, code: failure.code, attempt, retryInMs: delay }, 'send attempt failed; will retry');
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

  private async applyReceipt(waId: string, kind: ReceiptKind, atMs: number): Promise<void> {
    const { accountId, store, log, metrics } = this.d;
    for (let attempt = 0; attempt < 5 && !this.stopped; attempt++) {
      try {
        const messageId = this.sentIds.get(waId) ?? (await store.findByWaId(accountId, waId));
        if (!messageId) return; // not an outbox message (sent from the phone, say)
        if (await store.markReceipt(accountId, messageId, kind, atMs)) metrics.receipt(kind);
        return;
      } catch (err) {
        if (err instanceof StaleOwnerError) return;
        log.warn({ waId, kind, err: String(err) }, 'recording a receipt failed; retrying');
        await this.pauseFor(backoffDelay(attempt, { baseMs: 500, maxMs: 10_000 }));
      }
    }
  }
}
