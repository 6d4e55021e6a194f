/**
 * A level-triggered work queue with client-go's workqueue semantics, for reconcile passes keyed by
 * account id. A key means "look at this account again", never "apply this change": the handler
 * re-reads desired and observed state, so collapsing many adds into one pass loses nothing.
 *
 * Guarantees:
 * - A key is never processed by two workers at once.
 * - Adding a key that is already queued is a no-op (adds collapse).
 * - A key added while it is being processed is processed once more after the current pass ends
 *   (however many times it was added meanwhile): no change is missed, no pass runs twice at once.
 * - A delayed add keeps the earliest due time of all pending delayed adds of that key.
 * - Ready keys are processed in the order they became ready (FIFO), deterministically.
 * - A handler that throws has its key retried after a per-key exponential backoff with jitter
 *   (`addRateLimited`); a successful pass resets the key's backoff (`forget`).
 *
 * The handler's return value follows controller-runtime: nothing → done, `{ requeueAfterMs }` →
 * come back later (backoff reset), `{ requeue: true }` → retry with backoff.
 */
import { backoffDelay, type BackoffOptions } from '../util/backoff.ts';

export interface ReconcileResult {
  /** Process the key again after this long, e.g. to re-check a deadline. Resets its backoff. */
  requeueAfterMs?: number;
  /** Retry with backoff, as if the handler had failed, without it being an error. */
  requeue?: boolean;
}

export interface WorkContext {
  /** Aborted when shutdown gives up waiting (or immediately on a non-draining shutdown). */
  signal: AbortSignal;
  /** Consecutive failed passes of this key before this one. */
  retries: number;
}

export type WorkHandler<K> = (key: K, context: WorkContext) => Promise<ReconcileResult | void> | ReconcileResult | void;

export type PassOutcome = 'success' | 'requeue' | 'error';

export interface QueueDepth {
  /** Ready and waiting for a worker. */
  ready: number;
  /** Being processed. */
  processing: number;
  /** Scheduled for later (addAfter, backoff). */
  waiting: number;
}

/** Observation points for logs and metrics (see queue/metrics.ts). All optional, all synchronous. */
export interface WorkQueueHooks<K> {
  /** After every change of depth. */
  onDepth?(depth: QueueDepth): void;
  /** A key was scheduled for retry; `attempt` counts from 1. */
  onRetry?(key: K, info: { attempt: number; delayMs: number }): void;
  /** A handler threw (the key has already been scheduled for retry). */
  onError?(key: K, error: unknown, info: { attempt: number; delayMs: number }): void;
  /** A pass ended. */
  onProcessed?(key: K, info: { outcome: PassOutcome; durationMs: number }): void;
}

export interface WorkQueueOptions<K> {
  /** Per-key retry backoff. Default: 500 ms doubling to 5 min, full jitter. */
  backoff?: Partial<BackoffOptions>;
  hooks?: WorkQueueHooks<K>;
}

export interface ShutdownOptions {
  /** Process keys already queued before stopping (default true); otherwise drop them. */
  drain?: boolean;
  /** Stop waiting for handlers after this long; they are sent an abort. Default: no limit. */
  timeoutMs?: number;
}

export interface ShutdownResult<K> {
  /** True if the timeout ended the wait. */
  timedOut: boolean;
  /** Keys that were dropped from the queue, or whose pass was still running at the timeout. */
  abandoned: K[];
}

const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 500, maxMs: 5 * 60_000, jitter: 'full' };

export class WorkQueue<K = string> {
  readonly #backoff: BackoffOptions;
  readonly #hooks: WorkQueueHooks<K>;
  // FIFO of ready keys; `#head` avoids O(n) shifts.
  #queue: K[] = [];
  #head = 0;
  /** Keys that need a pass: queued, or processing and added again. */
  readonly #dirty = new Set<K>();
  readonly #processing = new Set<K>();
  readonly #waiting = new Map<K, { due: number; timer: ReturnType<typeof setTimeout> }>();
  readonly #failures = new Map<K, number>();
  readonly #abort = new AbortController();
  #handler: WorkHandler<K> | null = null;
  #concurrency = 1;
  #stopping = false;
  #draining = false;
  #onSettled: (() => void) | null = null;
  #shutdown: Promise<ShutdownResult<K>> | null = null;

  constructor(options: WorkQueueOptions<K> = {}) {
    this.#backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.#hooks = options.hooks ?? {};
  }

  /** Marks `key` for processing. Ignored once shutdown has begun. */
  add(key: K): void {
    if (this.#stopping || this.#dirty.has(key)) return;
    this.#dirty.add(key);
    // A key being processed is queued again when its pass ends (see #run).
    if (!this.#processing.has(key)) this.#queue.push(key);
    this.#pump();
  }

  /** Adds `key` after `ms`. If it is already scheduled, the earlier due time wins. */
  addAfter(key: K, ms: number): void {
    if (this.#stopping) return;
    if (!(ms > 0)) {
      this.add(key);
      return;
    }
    const due = Date.now() + ms;
    const existing = this.#waiting.get(key);
    if (existing && existing.due <= due) return;
    if (existing) clearTimeout(existing.timer);
    const timer = setTimeout(() => {
      this.#waiting.delete(key);
      this.add(key);
    }, ms);
    // A pending retry must not by itself keep the process alive.
    timer.unref?.();
    this.#waiting.set(key, { due, timer });
    this.#emitDepth();
  }

  /** Adds `key` after its next backoff delay, and counts a failure. Returns the delay. */
  addRateLimited(key: K): number {
    const attempt = (this.#failures.get(key) ?? 0) + 1;
    this.#failures.set(key, attempt);
    const delayMs = backoffDelay(attempt - 1, this.#backoff);
    this.#callHook(() => this.#hooks.onRetry?.(key, { attempt, delayMs }));
    this.addAfter(key, delayMs);
    return delayMs;
  }

  /** Resets `key`'s backoff. Does not cancel a scheduled add. */
  forget(key: K): void {
    this.#failures.delete(key);
  }

  /** Consecutive failures counted for `key`. */
  retries(key: K): number {
    return this.#failures.get(key) ?? 0;
  }

  /** Keys ready and waiting for a worker. */
  len(): number {
    return this.#queue.length - this.#head;
  }

  /** Keys being processed right now. */
  processing(): number {
    return this.#processing.size;
  }

  /** Keys scheduled for later. */
  waiting(): number {
    return this.#waiting.size;
  }

  get shuttingDown(): boolean {
    return this.#stopping;
  }

  /** Starts `concurrency` workers running `handler`. Keys added before start are processed now. */
  start(handler: WorkHandler<K>, { concurrency = 1 }: { concurrency?: number } = {}): void {
    if (this.#handler) throw new Error('WorkQueue already started');
    if (!(Number.isInteger(concurrency) && concurrency >= 1)) throw new RangeError(`concurrency must be a positive integer, got ${concurrency}`);
    this.#handler = handler;
    this.#concurrency = concurrency;
    this.#pump();
  }

  /**
   * Stops accepting keys and cancels scheduled ones, then waits for running passes (and, when
   * draining, for the queued keys to be processed). Resolves; never rejects. Calling it again
   * returns the first call's result.
   */
  shutdown(options: ShutdownOptions = {}): Promise<ShutdownResult<K>> {
    this.#shutdown ??= this.#stop(options);
    return this.#shutdown;
  }

  async #stop({ drain = true, timeoutMs = Infinity }: ShutdownOptions): Promise<ShutdownResult<K>> {
    this.#stopping = true;
    this.#draining = drain && this.#handler !== null;
    for (const { timer } of this.#waiting.values()) clearTimeout(timer);
    this.#waiting.clear();
    const abandoned: K[] = [];
    if (!this.#draining) {
      abandoned.push(...this.#takeQueued());
      // Re-adds of running keys are dropped too.
      this.#dirty.clear();
      this.#abort.abort(new Error('work queue shutting down'));
    }
    this.#emitDepth();
    if (this.#idle()) return { timedOut: false, abandoned };

    const settled = new Promise<boolean>((resolve) => {
      this.#onSettled = () => resolve(false);
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = Number.isFinite(timeoutMs)
      ? new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(true), timeoutMs);
        })
      : new Promise<boolean>(() => undefined);
    const timedOut = await Promise.race([settled, timeout]);
    clearTimeout(timer);
    this.#onSettled = null;
    if (timedOut) {
      abandoned.push(...this.#processing, ...this.#takeQueued());
      this.#draining = false;
      this.#abort.abort(new Error(`work queue shutdown timed out after ${timeoutMs} ms`));
      this.#emitDepth();
    }
    return { timedOut, abandoned };
  }

  #takeQueued(): K[] {
    const queued = this.#queue.slice(this.#head);
    this.#queue = [];
    this.#head = 0;
    for (const key of queued) this.#dirty.delete(key);
    return queued;
  }

  #idle(): boolean {
    return this.#processing.size === 0 && (!this.#draining || this.len() === 0);
  }

  #pump(): void {
    const handler = this.#handler;
    if (handler && (!this.#stopping || this.#draining)) {
      while (this.#processing.size < this.#concurrency && this.#head < this.#queue.length) {
        const key = this.#queue[this.#head] as K;
        this.#head += 1;
        this.#dirty.delete(key);
        this.#processing.add(key);
        void this.#run(handler, key);
      }
      if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
        this.#queue = this.#queue.slice(this.#head);
        this.#head = 0;
      }
    }
    this.#emitDepth();
  }

  async #run(handler: WorkHandler<K>, key: K): Promise<void> {
    const started = Date.now();
    let outcome: PassOutcome;
    try {
      const result = await handler(key, { signal: this.#abort.signal, retries: this.retries(key) });
      if (result?.requeue) {
        outcome = 'requeue';
        this.addRateLimited(key);
      } else if (result?.requeueAfterMs !== undefined) {
        outcome = 'requeue';
        this.forget(key);
        this.addAfter(key, result.requeueAfterMs);
      } else {
        outcome = 'success';
        this.forget(key);
      }
    } catch (error) {
      outcome = 'error';
      const delayMs = this.addRateLimited(key);
      const attempt = this.retries(key);
      this.#callHook(() => this.#hooks.onError?.(key, error, { attempt, delayMs }));
    }
    this.#processing.delete(key);
    if (this.#dirty.has(key)) this.#queue.push(key);
    const durationMs = Date.now() - started;
    this.#callHook(() => this.#hooks.onProcessed?.(key, { outcome, durationMs }));
    this.#pump();
    if (this.#stopping && this.#idle()) this.#onSettled?.();
  }

  #emitDepth(): void {
    this.#callHook(() => this.#hooks.onDepth?.({ ready: this.len(), processing: this.#processing.size, waiting: this.#waiting.size }));
  }

  // A throwing hook (a metrics bug) must not corrupt the queue's bookkeeping.
  #callHook(fn: () => void): void {
    try {
      fn();
    } catch {
      // Deliberately ignored; see above.
    }
  }
}
