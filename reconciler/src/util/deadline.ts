/**
 * Deadlines for promises and polled conditions. Everything that waits on the network, a child
 * process or a peer should wait through these, so a stall surfaces as a labelled TimeoutError
 * instead of a hang.
 */

/** Thrown when a deadline passes. `label` says what was awaited, for logs and status messages. */
export class TimeoutError extends Error {
  override readonly name = 'TimeoutError';
  readonly code = 'ETIMEDOUT';
  constructor(
    readonly label: string,
    readonly timeoutMs: number,
    options?: { cause?: unknown },
  ) {
    super(`${label} timed out after ${timeoutMs} ms`, options);
  }
}

/**
 * Settles like `promise`, or rejects with a TimeoutError after `ms`. The timer is cleared as soon
 * as the promise settles, so a resolved call leaves nothing pending.
 *
 * This does not cancel the underlying operation (a promise cannot be cancelled); pass `onTimeout`
 * to abort it, e.g. `() => controller.abort()`. A non-finite `ms` means no deadline.
 */
export function withTimeout<T>(
  promise: PromiseLike<T>,
  ms: number,
  label: string,
  onTimeout?: (error: TimeoutError) => void,
): Promise<T> {
  if (!Number.isFinite(ms)) return Promise.resolve(promise);
  if (ms < 0) throw new RangeError(`withTimeout: ms must be >= 0, got ${ms}`);
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    // Not unref'd on purpose: a deadline must fire even if nothing else keeps the loop alive,
    // otherwise a never-settling promise ends the process silently instead of reporting.
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      const error = new TimeoutError(label, ms);
      try {
        onTimeout?.(error);
      } finally {
        reject(error);
      }
    }, ms);
    promise.then(
      (value) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

export interface WaitForOptions {
  /** Give up after this long. Default 5000 ms. */
  timeoutMs?: number;
  /** Time between polls. Default 10 ms. */
  intervalMs?: number;
  /** Names the condition in the TimeoutError. */
  label?: string;
  /** Stops waiting early; rejects with the signal's reason. */
  signal?: AbortSignal;
}

type Falsy = false | 0 | '' | null | undefined;

/**
 * Polls `predicate` until it returns a truthy value (which is returned) or the deadline passes.
 * A predicate that throws counts as "not yet"; the last error becomes the TimeoutError's cause,
 * which is usually the most useful thing to see when a wait fails.
 */
export async function waitFor<T>(
  predicate: () => T | Falsy | Promise<T | Falsy>,
  { timeoutMs = 5_000, intervalMs = 10, label = 'condition', signal }: WaitForOptions = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    signal?.throwIfAborted();
    try {
      const value = await predicate();
      if (value) return value;
      lastError = undefined;
    } catch (error) {
      lastError = error;
    }
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new TimeoutError(`waiting for ${label}`, timeoutMs, lastError === undefined ? undefined : { cause: lastError });
    }
    await sleep(Math.min(intervalMs, left), signal);
  }
}

/** A timer as a promise; rejects with the signal's reason if aborted first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
