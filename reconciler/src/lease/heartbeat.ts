/**
 * The instance heartbeat, `reconcilers/{instanceId}`: one write every LEASE_RENEW_MS keeps every
 * lease this instance holds alive, and tells people what the instance runs.
 *
 * Self-fencing runs on a deadline, not on beats: every successful write arms a timer at
 * lastSuccess + TTL − margin (`fenceMarginMs`), and when it fires `onFence` closes every session,
 * whatever the beats are doing. A beat hung on a dead connection therefore never delays the fence
 * past the moment another instance may take the leases over.
 */
import { Collections, type ReconcilerDoc } from '@wafleet/contract';
import { FieldValue, Timestamp, type Firestore } from 'firebase-admin/firestore';
import type { Logger } from 'pino';
import { backoffDelay } from '../util/backoff.ts';
import { TimeoutError, withTimeout } from '../util/deadline.ts';
import type { Identity } from './lease-manager.ts';

export interface HeartbeatSummary {
  accounts: Record<string, string>;
  storageFreeBytes: number | null;
  /** MAX_ACCOUNTS and the slots in use: other instances place accounts by them (placement.ts). */
  maxAccounts: number;
  slotsUsed: number;
  /** Where a drain stands (placement.ts, rebalancer.ts); null when not draining. */
  drain?: ReconcilerDoc['drain'];
}

export interface HeartbeatOptions {
  renewMs: number;
  ttlMs: number;
  version: string;
  summary: () => Promise<HeartbeatSummary> | HeartbeatSummary;
  /** Predecessors on this disk whose leases this process adopted (lease-manager.ts). */
  adoptedIncarnations?: readonly string[];
  /** No successful beat for ttl − margin: stop every session now. */
  onFence: () => void;
  /** A heartbeat succeeded again after a fence. */
  onRecover: () => void;
  /**
   * The watchdog (functions/src/watchdog.ts) had marked this instance silent and some of its
   * accounts' statuses stale; this beat removed the mark. Every owned status must be written again
   * now, or a mark would outlive the silence on an account whose status does not change.
   */
  onMarkedSilent?: () => void;
  /** Another process wrote this instance id's heartbeat: two processes share an INSTANCE_ID. */
  onIdentityConflict: (otherIncarnation: string) => void;
  /**
   * Beats ran into their deadline `timeoutsInRow` times in a row (called from the second on): the
   * Firestore connection has probably gone silent and should start over.
   */
  onStall?: (timeoutsInRow: number) => void;
  log: Logger;
  now?: () => number;
}

/**
 * How long before the TTL runs out the fence fires. Another instance may take a lease over once
 * our heartbeat has looked unchanged for the TTL by its own clock, and that clock starts no earlier
 * than our last successful write; closing the sockets takes a moment and timers run late under
 * load. The margin is one renewal period (what one more beat would have needed), but never so
 * much that the next beat loses its full timeout (ttl − 2·renew), and never under 10 % of the TTL.
 * With the defaults (120 s, 40 s): the sessions close 80 s after the last successful beat.
 */
export function fenceMarginMs(ttlMs: number, renewMs: number): number {
  return Math.max(ttlMs / 10, Math.min(renewMs, ttlMs - 2 * renewMs));
}

/** A write that ran into a deadline (ours, or the SDK's DEADLINE_EXCEEDED): the connection may be dead. */
function isDeadline(err: unknown): boolean {
  return err instanceof TimeoutError || (err as { code?: unknown } | null)?.code === 4;
}

export class IdentityConflictError extends Error {}

export class Heartbeat {
  private timer: NodeJS.Timeout | null = null;
  private fenceTimer: NodeJS.Timeout | null = null;
  private readonly startedAt = Timestamp.now();
  private lastSuccessAt = 0;
  private failuresInRow = 0;
  private timeoutsInRow = 0;
  private fenced = false;
  private stopped = false;
  private inFlight: Promise<void> | null = null;
  private readonly now: () => number;
  readonly fenceMarginMs: number;

  constructor(
    private readonly db: Firestore,
    private readonly identity: Identity,
    private readonly opts: HeartbeatOptions,
  ) {
    this.now = opts.now ?? Date.now;
    this.fenceMarginMs = fenceMarginMs(opts.ttlMs, opts.renewMs);
  }

  private get ref() {
    return this.db.collection(Collections.reconcilers).doc(this.identity.instanceId);
  }

  /** Healthy while not fenced and the last successful beat is younger than the TTL. */
  get healthy(): boolean {
    return !this.fenced && this.now() - this.lastSuccessAt < this.opts.ttlMs;
  }

  /** When the latest successful write was attempted, by this heartbeat's clock (0: none yet). */
  get lastSuccess(): number {
    return this.lastSuccessAt;
  }

  /** When the fence fires unless a beat succeeds first (0 before the first beat). */
  get fenceAt(): number {
    return this.lastSuccessAt === 0 ? 0 : this.lastSuccessAt + this.opts.ttlMs - this.fenceMarginMs;
  }

  /** Claims the instance id for this incarnation. Must succeed before any lease is taken. */
  async start(): Promise<void> {
    // The first call also opens the connection, which takes longer than a beat.
    await withTimeout(this.write(true), Math.max(10_000, this.opts.renewMs), 'first heartbeat');
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    // After a failure, try again sooner (with backoff), so that a short outage ends with a beat
    // soon after the network returns rather than up to a renewal period later.
    const delay = this.failuresInRow === 0 ? this.opts.renewMs : backoffDelay(this.failuresInRow - 1, { baseMs: Math.min(1_000, this.opts.renewMs), maxMs: this.opts.renewMs, jitter: 'equal' });
    this.timer = setTimeout(() => {
      this.inFlight = this.beat().finally(() => {
        this.inFlight = null;
        this.schedule();
      });
    }, delay);
    this.timer.unref();
  }

  private async beat(): Promise<void> {
    try {
      await withTimeout(this.write(false), Math.max(1_000, this.opts.renewMs - 500), 'heartbeat');
    } catch (err) {
      if (err instanceof IdentityConflictError) return;
      this.failuresInRow++;
      this.timeoutsInRow = isDeadline(err) ? this.timeoutsInRow + 1 : 0;
      this.opts.log.warn({ err, silentForMs: this.now() - this.lastSuccessAt, failuresInRow: this.failuresInRow }, 'heartbeat failed');
      if (this.timeoutsInRow >= 2 && !this.stopped) this.opts.onStall?.(this.timeoutsInRow);
    }
  }

  /** A write landed (possibly after its beat gave up on it: it still proves we were alive then). */
  private succeeded(attemptAt: number): void {
    if (attemptAt <= this.lastSuccessAt) return;
    this.lastSuccessAt = attemptAt;
    this.failuresInRow = 0;
    this.timeoutsInRow = 0;
    if (this.stopped) return;
    const left = this.fenceAt - this.now();
    // A write that started too long ago proves nothing about the lease now: stay fenced.
    if (left <= 0) return;
    if (this.fenceTimer) clearTimeout(this.fenceTimer);
    this.fenceTimer = setTimeout(() => this.fence(), left);
    this.fenceTimer.unref();
    if (this.fenced) {
      this.fenced = false;
      this.opts.log.warn('heartbeat recovered; sessions may be taken up again');
      this.opts.onRecover();
    }
  }

  private fence(): void {
    this.fenceTimer = null;
    if (this.stopped || this.fenced) return;
    this.fenced = true;
    this.opts.log.error(
      { silentForMs: this.now() - this.lastSuccessAt, ttlMs: this.opts.ttlMs, marginMs: this.fenceMarginMs },
      'no successful heartbeat for too long: closing every session before the leases may be taken over',
    );
    this.opts.onFence();
  }

  private async write(first: boolean): Promise<void> {
    const summary = await this.opts.summary();
    const doc = {
      instanceId: this.identity.instanceId,
      incarnation: this.identity.incarnation,
      version: this.opts.version,
      host: this.identity.host,
      startedAt: this.startedAt,
      heartbeatAt: FieldValue.serverTimestamp(),
      leaseTtlMs: this.opts.ttlMs,
      uptimeSec: Math.round(process.uptime()),
      accountsOwned: Object.keys(summary.accounts).length,
      accounts: summary.accounts,
      maxAccounts: summary.maxAccounts,
      slotsUsed: summary.slotsUsed,
      storagePath: this.identity.storagePath,
      storageFreeBytes: summary.storageFreeBytes,
      // Leases that still name these are ours: other instances must not count them as dead.
      adoptedIncarnations: [...(this.opts.adoptedIncarnations ?? [])],
      drain: summary.drain ?? null,
      stoppedAt: null,
    };
    // Every field of ours is replaced; an operator's drainRequestedAt is left as it is, and the
    // watchdog's silentSince is dropped (this beat ends the silence).
    const data = { ...doc, silentSince: FieldValue.delete() };
    const fields = { mergeFields: Object.keys(data) };
    const attemptAt = this.now();
    let markedSilent = false;
    if (first) {
      // A new process writes every status it owns anyway, which clears any mark the watchdog left.
      await this.ref.set(data, fields);
    } else {
      // The read also serializes this beat with the watchdog's marking transaction, which reads
      // this document too: either it sees this beat and marks nothing, or this beat sees its mark.
      await this.db.runTransaction(async (tx) => {
        const current = await tx.get(this.ref);
        const other = current.get('incarnation');
        if (current.exists && other !== this.identity.incarnation) {
          this.stop();
          this.opts.onIdentityConflict(String(other));
          throw new IdentityConflictError(`instance id ${this.identity.instanceId} is used by another process`);
        }
        markedSilent = current.get('silentSince') != null;
        tx.set(this.ref, data, fields);
      });
    }
    this.succeeded(attemptAt);
    if (markedSilent && !this.stopped) {
      this.opts.log.warn('the watchdog had marked this instance silent; writing every owned status again');
      this.opts.onMarkedSilent?.();
    }
  }

  /** Stops beating; with `markStopped`, records the shutdown so leases can be taken at once. */
  async stop(opts: { markStopped?: boolean; timeoutMs?: number } = {}): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.fenceTimer) clearTimeout(this.fenceTimer);
    this.fenceTimer = null;
    if (this.inFlight) await this.inFlight.catch(() => undefined);
    if (opts.markStopped) {
      await withTimeout(
        this.ref.update({ stoppedAt: FieldValue.serverTimestamp(), accounts: {}, accountsOwned: 0, slotsUsed: 0 }),
        opts.timeoutMs ?? 5_000,
        'final heartbeat',
      );
    }
  }
}
