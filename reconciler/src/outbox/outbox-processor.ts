/**
 * The reconciler's outbox: one listener on every message still to send, routed to the
 * AccountOutbox of each account this process owns; the pacing that all sends share (per account
 * and fleet-wide, with p-queue); and the stuck-outbox incidents.
 */
import { buildQuery, Collections, formatZodError, OutboxDocSchema, type OutboxDoc } from '@wafleet/contract';
import type { WASocket } from '@whiskeysockets/baileys';
import type { Firestore, QuerySnapshot } from 'firebase-admin/firestore';
import PQueue from 'p-queue';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { LeaseManager } from '../lease/lease-manager.ts';
import type { Metrics } from '../metrics.ts';
import type { IncidentWriter } from '../status/incident-writer.ts';
import { ResilientListener } from '../util/resilient-listener.ts';
import { AccountOutbox } from './account-outbox.ts';
import { OutboxStore } from './outbox-store.ts';
import { OutboxWriter } from './outbox-writer.ts';
import { failures, type SendFailure } from './send-errors.ts';

export const OUTBOX_STUCK = 'OutboxStuck';

export interface OutboxProcessorOptions {
  db: Firestore;
  leases: LeaseManager;
  log: Logger;
  metrics: Metrics;
  incidents: IncidentWriter;
  config: Config['outbox'];
  /** The account's phase, for the stuck incident's message. */
  phaseOf: (accountId: string) => string;
}

export class OutboxProcessor {
  private readonly accounts = new Map<string, AccountOutbox>();
  private readonly store: OutboxStore;
  private readonly writer: OutboxWriter;
  private readonly fleet: PQueue;
  private readonly perAccount = new Map<string, PQueue>();
  private readonly stuck = new Set<string>();
  private readonly checked = new Set<string>();
  private readonly listener: ResilientListener;
  private stuckTimer: NodeJS.Timeout | null = null;

  constructor(private readonly o: OutboxProcessorOptions) {
    // A claim outlives the longest attempt (recipient lookup, send, ack) with room to record it.
    this.store = new OutboxStore(o.db, o.leases, 3 * o.config.ackTimeoutMs + 10_000);
    this.writer = new OutboxWriter({ store: this.store, log: o.log.child({ component: 'outbox' }) });
    this.listener = new ResilientListener({
      name: 'outbox',
      query: () => buildQuery(o.db.collection(Collections.outbox), 'pendingOutbox', [['queued', 'sending']]),
      onSnapshot: (snap) => this.onSnapshot(snap),
      log: o.log,
    });
    this.fleet = o.config.fleetPerSecond > 0 ? new PQueue({ intervalCap: o.config.fleetPerSecond, interval: 1_000 }) : new PQueue();
    o.metrics.outboxBacklog(() => {
      const totals = { queued: 0, sending: 0 };
      for (const a of this.accounts.values()) {
        if (!o.leases.held(a.accountId)) continue;
        const b = a.backlog();
        totals.queued += b.queued;
        totals.sending += b.sending;
      }
      return totals;
    });
  }

  start(): void {
    this.listener.subscribe();
    const every = Math.min(30_000, Math.max(1_000, Math.floor(this.o.config.stuckAfterMs / 4)));
    this.stuckTimer = setInterval(() => this.checkStuck(), every);
    this.stuckTimer.unref();
  }

  account(accountId: string): AccountOutbox {
    let a = this.accounts.get(accountId);
    if (!a) {
      const { config, log, metrics, leases } = this.o;
      a = new AccountOutbox({
        accountId,
        store: this.store,
        writer: this.writer,
        log: log.child({ accountId, component: 'outbox' }),
        metrics: metrics.outbox,
        maxAttempts: config.maxAttempts,
        ackTimeoutMs: config.ackTimeoutMs,
        claimBatch: claimBatchSize(config.perAccountPerMinute),
        pace: (send) => this.pace(accountId, send),
        owner: () => {
          const grant = leases.held(accountId);
          return grant ? this.store.claimant({ instanceId: grant.instanceId, epoch: grant.epoch }) : null;
        },
      });
      this.accounts.set(accountId, a);
    }
    return a;
  }

  // ------------------------------------------------------------------ session hooks

  busy(accountId: string): boolean {
    return this.accounts.get(accountId)?.busy ?? false;
  }

  attach(accountId: string, sock: WASocket): void {
    this.account(accountId).attach(sock);
  }

  opened(accountId: string, sock: WASocket): void {
    this.account(accountId).opened(sock);
  }

  closed(accountId: string): void {
    this.accounts.get(accountId)?.closed();
  }

  /** The account can never send these (banned, deleted): fail them now rather than leave them waiting. */
  async failAll(accountId: string, failure: SendFailure): Promise<void> {
    const n = await this.account(accountId).failAll(failure);
    if (n > 0) this.o.log.warn({ accountId, count: n, code: failure.code }, 'failed the account’s waiting messages');
  }

  banned(accountId: string): Promise<void> {
    return this.failAll(accountId, failures.accountBanned());
  }

  deleted(accountId: string): Promise<void> {
    return this.failAll(accountId, failures.accountDeleted());
  }

  // ------------------------------------------------------------------ pacing

  private pace(accountId: string, send: () => Promise<void>): Promise<void> {
    const perMinute = this.o.config.perAccountPerMinute;
    let q = this.perAccount.get(accountId);
    if (!q) {
      q = perMinute > 0 ? new PQueue({ concurrency: 1, intervalCap: 1, interval: Math.ceil(60_000 / perMinute) }) : new PQueue({ concurrency: 1 });
      this.perAccount.set(accountId, q);
    }
    const fleet = this.fleet;
    return q.add(() => fleet.add(send));
  }

  // ------------------------------------------------------------------ the listener

  private onSnapshot(snap: QuerySnapshot): void {
    for (const change of snap.docChanges()) {
      const id = change.doc.id;
      const accountId = change.doc.get('accountId');
      if (typeof accountId !== 'string') continue;
      if (change.type === 'removed') {
        this.accounts.get(accountId)?.remove(id);
        continue;
      }
      const parsed = OutboxDocSchema.safeParse(change.doc.data());
      if (!parsed.success) {
        this.rejectInvalid(accountId, id, formatZodError(parsed.error));
        continue;
      }
      this.account(accountId).upsert(id, parsed.data as OutboxDoc);
    }
  }

  /** A document written around the rules (console, admin SDK) that is not a message: fail it, visibly. */
  private rejectInvalid(accountId: string, id: string, detail: string): void {
    if (!this.o.leases.held(accountId)) return;
    this.account(accountId)
      .reject(id, failures.invalidMessage(detail))
      .catch((err: unknown) => this.o.log.warn({ accountId, messageId: id, err }, 'failing an invalid outbox document failed'));
  }

  // ------------------------------------------------------------------ stuck outboxes

  private checkStuck(): void {
    const now = Date.now();
    for (const a of this.accounts.values()) {
      const id = a.accountId;
      if (!this.o.leases.held(id)) continue;
      const { queued, sending, oldestQueuedMs } = a.backlog();
      const isStuck = oldestQueuedMs !== null && now - oldestQueuedMs > this.o.config.stuckAfterMs;
      const firstCheck = !this.checked.has(id);
      if (isStuck && !this.stuck.has(id)) {
        this.stuck.add(id);
        const minutes = Math.round((now - oldestQueuedMs) / 60_000);
        void this.o.incidents.raise(
          id,
          id,
          OUTBOX_STUCK,
          'warning',
          `${queued + sending} message(s) waiting; the oldest was queued ${minutes} min ago. The account is ${this.o.phaseOf(id)}.`,
        );
      } else if (!isStuck && (this.stuck.has(id) || firstCheck)) {
        // The first check after taking an account over also closes an incident an earlier owner left open.
        this.stuck.delete(id);
        void this.o.incidents.resolve(id, id, OUTBOX_STUCK);
      }
      if (firstCheck) this.checked.add(id);
    }
  }

  /** Stops taking messages and waits, at most `timeoutMs`, for the ones in flight to settle and be recorded. */
  async stop(timeoutMs: number): Promise<void> {
    this.listener.stop();
    if (this.stuckTimer) clearInterval(this.stuckTimer);
    // Queued sends are not cleared (their callers would wait forever); they return at once now.
    await Promise.all([...this.accounts.values()].map((a) => a.stop(timeoutMs)));
    await this.writer.close();
  }
}

/**
 * How many messages an account claims per transaction: about ten seconds of its pacing, at most
 * 25 (a crash resends at most that many, under their same ids), one when pacing is slow.
 */
export function claimBatchSize(perAccountPerMinute: number): number {
  if (perAccountPerMinute <= 0) return 25;
  return Math.max(1, Math.min(25, Math.floor(perAccountPerMinute / 6)));
}
