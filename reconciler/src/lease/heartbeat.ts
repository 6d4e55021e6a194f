/**
 * The instance heartbeat, `reconcilers/{instanceId}`: one write every LEASE_RENEW_MS keeps every
 * lease this instance holds alive, and tells people what the instance runs. When writes keep
 * failing for nearly the TTL, `onFence` fires so the owner closes its sockets before anyone else
 * may consider its leases expired.
 */
import { Collections } from '@wafleet/contract';
import { FieldValue, Timestamp, type Firestore } from 'firebase-admin/firestore';
import type { Logger } from 'pino';
import { withTimeout } from '../util/deadline.ts';
import type { Identity } from './lease-manager.ts';

export interface HeartbeatSummary {
  accounts: Record<string, string>;
  storageFreeBytes: number | null;
}

export interface HeartbeatOptions {
  renewMs: number;
  ttlMs: number;
  version: string;
  summary: () => Promise<HeartbeatSummary> | HeartbeatSummary;
  /** Heartbeats failed for ttl − renew: stop every session now. */
  onFence: () => void;
  /** A heartbeat succeeded again after a fence. */
  onRecover: () => void;
  /** Another process wrote this instance id's heartbeat: two processes share an INSTANCE_ID. */
  onIdentityConflict: (otherIncarnation: string) => void;
  log: Logger;
  now?: () => number;
}

export class IdentityConflictError extends Error {}

export class Heartbeat {
  private timer: NodeJS.Timeout | null = null;
  private readonly startedAt = Timestamp.now();
  private lastSuccessAt = 0;
  private fenced = false;
  private stopped = false;
  private inFlight: Promise<void> | null = null;
  private readonly now: () => number;

  constructor(
    private readonly db: Firestore,
    private readonly identity: Identity,
    private readonly opts: HeartbeatOptions,
  ) {
    this.now = opts.now ?? Date.now;
  }

  private get ref() {
    return this.db.collection(Collections.reconcilers).doc(this.identity.instanceId);
  }

  /** Healthy while the last successful beat is younger than the TTL. */
  get healthy(): boolean {
    return !this.fenced && this.now() - this.lastSuccessAt < this.opts.ttlMs;
  }

  get lastSuccess(): number {
    return this.lastSuccessAt;
  }

  /** Claims the instance id for this incarnation. Must succeed before any lease is taken. */
  async start(): Promise<void> {
    // The first call also opens the connection, which takes longer than a beat.
    await withTimeout(this.write(true), Math.max(10_000, this.opts.renewMs), 'first heartbeat');
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.inFlight = this.beat().finally(() => {
        this.inFlight = null;
        this.schedule();
      });
    }, this.opts.renewMs);
    this.timer.unref();
  }

  private async beat(): Promise<void> {
    try {
      await withTimeout(this.write(false), Math.max(1_000, this.opts.renewMs - 500), 'heartbeat');
      if (this.fenced) {
        this.fenced = false;
        this.opts.log.warn('heartbeat recovered; sessions may be taken up again');
        this.opts.onRecover();
      }
    } catch (err) {
      if (err instanceof IdentityConflictError) return;
      const silentFor = this.now() - this.lastSuccessAt;
      this.opts.log.warn({ err: String(err), silentForMs: silentFor }, 'heartbeat failed');
      if (!this.fenced && silentFor >= this.opts.ttlMs - this.opts.renewMs) {
        this.fenced = true;
        this.opts.log.error({ silentForMs: silentFor }, 'heartbeat lost for too long: closing every session before the leases may be taken over');
        this.opts.onFence();
      }
    }
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
      storagePath: this.identity.storagePath,
      storageFreeBytes: summary.storageFreeBytes,
      stoppedAt: null,
    };
    const attemptAt = this.now();
    if (first) {
      await this.ref.set(doc);
    } else {
      await this.db.runTransaction(async (tx) => {
        const current = await tx.get(this.ref);
        const other = current.get('incarnation');
        if (current.exists && other !== this.identity.incarnation) {
          this.stop();
          this.opts.onIdentityConflict(String(other));
          throw new IdentityConflictError(`instance id ${this.identity.instanceId} is used by another process`);
        }
        tx.set(this.ref, doc);
      });
    }
    this.lastSuccessAt = attemptAt;
  }

  /** Stops beating; with `markStopped`, records the shutdown so leases can be taken at once. */
  async stop(opts: { markStopped?: boolean; timeoutMs?: number } = {}): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.inFlight) await this.inFlight.catch(() => undefined);
    if (opts.markStopped) {
      await withTimeout(
        this.ref.update({ stoppedAt: FieldValue.serverTimestamp(), accounts: {}, accountsOwned: 0 }),
        opts.timeoutMs ?? 5_000,
        'final heartbeat',
      );
    }
  }
}
