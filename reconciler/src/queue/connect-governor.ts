/**
 * The fleet-wide connect governor: every login (QR link, pairing, or login from stored creds) goes
 * through `run`, which bounds how many run at once (CONNECT_CONCURRENCY) and how often one may
 * start (at most one per CONNECT_INTERVAL_MS, sliding window).
 *
 * Why: a login costs ~60 ms of CPU, half of it a synchronous signature check, so 30 accounts
 * reconnecting together block the event loop for ~1 s (health checks and lease renewals stall),
 * and a burst of logins from one IP is what WhatsApp's abuse detection notices. Pacing fixes both.
 *
 * `fn` should cover the login only (until the socket opens or fails), not the session's lifetime:
 * a slot held for the whole session would stop every other account from connecting.
 */
import { performance } from 'node:perf_hooks';
import PQueue from 'p-queue';
import { sleep } from '../util/deadline.ts';

/** Suggested priorities: higher runs first. Accounts that are already linked come back before new links start. */
export const ConnectPriority = Object.freeze({ linked: 10, newLink: 0 });

/** The run was cancelled before it started; `fn` was never called. */
export class ConnectCancelledError extends Error {
  override readonly name = 'ConnectCancelledError';
  constructor(
    readonly accountId: string,
    options?: { cause?: unknown },
  ) {
    super(`connect of ${accountId} was cancelled before it started`, options);
  }
}

export interface ConnectGovernorHooks {
  /**
   * A login starts, after waiting `waitedMs` in the queue. `startedAt` (performance.now() time) is
   * the instant the spacing guarantee applies to: consecutive values are >= intervalMs apart.
   */
  onStart?(accountId: string, info: { waitedMs: number; startedAt: number }): void;
  /** A login ended. */
  onSettled?(accountId: string, info: { durationMs: number; ok: boolean }): void;
  /** A queued login was cancelled. */
  onCancelled?(accountId: string): void;
}

export interface ConnectGovernorOptions {
  /** Logins in progress at once. */
  concurrency: number;
  /** Minimum time between two login starts; 0 disables spacing. */
  intervalMs: number;
  hooks?: ConnectGovernorHooks;
}

export interface ConnectRunOptions {
  /** Higher starts first (see ConnectPriority). Equal priorities start in submission order. Default 0. */
  priority?: number;
  /**
   * Abort before `fn` is called (queued, or waiting out the start interval): `run` rejects with
   * ConnectCancelledError and `fn` never runs. Abort later: passed to `fn`, which decides; the
   * slot stays held until `fn` settles, so the concurrency bound holds even for logins that
   * ignore their signal.
   */
  signal?: AbortSignal;
}

interface Entry {
  accountId: string;
  /** Aborted only while queued: p-queue must not race a running task against it (that would free the slot early). */
  dequeue: AbortController;
  started: boolean;
}

export class ConnectGovernor {
  readonly #queue: PQueue;
  readonly #queued = new Map<string, Set<Entry>>();
  readonly #hooks: ConnectGovernorHooks;
  readonly #intervalMs: number;
  #lastStart = Number.NEGATIVE_INFINITY;

  constructor({ concurrency, intervalMs, hooks = {} }: ConnectGovernorOptions) {
    if (!(Number.isInteger(concurrency) && concurrency >= 1)) throw new RangeError(`concurrency must be a positive integer, got ${concurrency}`);
    if (!(Number.isFinite(intervalMs) && intervalMs >= 0)) throw new RangeError(`intervalMs must be >= 0, got ${intervalMs}`);
    // strict: a sliding window. The default fixed window lets two starts land either side of a
    // window boundary, 1 ms apart, which is exactly the burst this exists to prevent.
    this.#queue = intervalMs > 0 ? new PQueue({ concurrency, intervalCap: 1, interval: intervalMs, strict: true }) : new PQueue({ concurrency });
    this.#hooks = hooks;
    this.#intervalMs = intervalMs;
  }

  /**
   * Runs `fn` when a slot is free and the start interval allows, and settles with its result.
   * Several runs for one account may be queued; `cancel(accountId)` removes them all.
   */
  async run<T>(accountId: string, fn: (signal: AbortSignal) => Promise<T>, { priority = 0, signal }: ConnectRunOptions = {}): Promise<T> {
    if (signal?.aborted) throw new ConnectCancelledError(accountId, { cause: signal.reason });
    const entry: Entry = { accountId, dequeue: new AbortController(), started: false };
    this.#track(entry);
    const onAbort = (): void => this.#dequeue(entry, signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const queuedAt = Date.now();
    try {
      return await this.#queue.add(
        async () => {
          entry.started = true;
          this.#untrack(entry);
          const startedAt = await this.#spaceStart();
          // Aborted while spacing: fn has not run, so this is still a cancellation.
          if (signal?.aborted) {
            safely(() => this.#hooks.onCancelled?.(accountId));
            throw new ConnectCancelledError(accountId, { cause: signal.reason });
          }
          const waitedMs = Date.now() - queuedAt;
          safely(() => this.#hooks.onStart?.(accountId, { waitedMs, startedAt }));
          let ok = false;
          try {
            const result = await fn(signal ?? new AbortController().signal);
            ok = true;
            return result;
          } finally {
            const durationMs = performance.now() - startedAt;
            safely(() => this.#hooks.onSettled?.(accountId, { durationMs, ok }));
          }
        },
        { priority, signal: entry.dequeue.signal },
      );
    } catch (error) {
      if (!entry.started && entry.dequeue.signal.aborted) throw new ConnectCancelledError(accountId, { cause: entry.dequeue.signal.reason });
      throw error;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.#untrack(entry);
    }
  }

  /** Cancels the account's queued (not started) runs. Returns how many were cancelled. */
  cancel(accountId: string, reason?: unknown): number {
    const entries = [...(this.#queued.get(accountId) ?? [])];
    for (const entry of entries) this.#dequeue(entry, reason);
    return entries.length;
  }

  /** Cancels every queued run (shutdown). Running logins are not touched. */
  cancelAll(reason?: unknown): number {
    let count = 0;
    for (const accountId of [...this.#queued.keys()]) count += this.cancel(accountId, reason);
    return count;
  }

  isQueued(accountId: string): boolean {
    return this.#queued.has(accountId);
  }

  /** Runs waiting to start. */
  pending(): number {
    return this.#queue.size;
  }

  /** Runs in progress. */
  active(): number {
    return this.#queue.pending;
  }

  /** Stops starting runs (running ones continue). */
  pause(): void {
    this.#queue.pause();
  }

  resume(): void {
    this.#queue.start();
  }

  get isPaused(): boolean {
    return this.#queue.isPaused;
  }

  /** Resolves when nothing is queued or running. */
  onIdle(): Promise<void> {
    return this.#queue.onIdle();
  }

  /**
   * p-queue's strict window already spaces starts, by its Date.now() ticks. This re-check on the
   * monotonic clock, right before fn runs, makes the bound exact even when the process was
   * descheduled between p-queue's tick and the call (seen under CPU contention), or the wall
   * clock stepped. It rarely waits, and it waits holding the slot, which keeps concurrency exact too.
   */
  async #spaceStart(): Promise<number> {
    for (;;) {
      const now = performance.now();
      const wait = this.#lastStart + this.#intervalMs - now;
      if (wait <= 0) {
        this.#lastStart = now;
        return now;
      }
      await sleep(Math.ceil(wait));
    }
  }

  #dequeue(entry: Entry, reason: unknown): void {
    if (entry.started || entry.dequeue.signal.aborted) return;
    this.#untrack(entry);
    entry.dequeue.abort(reason ?? new Error('cancelled'));
    safely(() => this.#hooks.onCancelled?.(entry.accountId));
  }

  #track(entry: Entry): void {
    let set = this.#queued.get(entry.accountId);
    if (!set) {
      set = new Set();
      this.#queued.set(entry.accountId, set);
    }
    set.add(entry);
  }

  #untrack(entry: Entry): void {
    const set = this.#queued.get(entry.accountId);
    if (!set?.delete(entry)) return;
    if (set.size === 0) this.#queued.delete(entry.accountId);
  }
}

// A throwing hook (a metrics bug) must not fail a login or leak a slot.
function safely(fn: () => void): void {
  try {
    fn();
  } catch {
    // Deliberately ignored; see above.
  }
}
