/**
 * Writes that must land: run in order per key (so two writes to one document never race each
 * other), each retried with backoff and jitter (callers put a deadline on each attempt) until it succeeds, gives up for good, or the queue
 * is drained at shutdown. Nothing is dropped while Firestore is unreachable.
 */
import type { Logger } from 'pino';
import { backoffDelay } from './backoff.ts';
import { sleep } from './deadline.ts';

export interface KeyedRetryQueueOptions {
  log: Logger;
  /** Logged at warn with the error and the delay when an attempt fails. */
  failureMessage: string;
}

export class KeyedRetryQueue {
  private readonly chains = new Map<string, Promise<boolean>>();
  private readonly stopping = new AbortController();

  constructor(private readonly o: KeyedRetryQueueOptions) {}

  /**
   * Runs `write` after the key's earlier writes. Resolves true once it landed, false when it gave
   * up (`giveUp(err)` said so, or the queue was drained first).
   */
  enqueue(key: string, write: () => Promise<void>, context: Record<string, unknown>, giveUp?: (err: unknown) => boolean): Promise<boolean> {
    const next = (this.chains.get(key) ?? Promise.resolve(true)).then(() => this.withRetry(write, context, giveUp));
    this.chains.set(key, next);
    void next.finally(() => {
      if (this.chains.get(key) === next) this.chains.delete(key);
    });
    return next;
  }

  private async withRetry(write: () => Promise<void>, context: Record<string, unknown>, giveUp?: (err: unknown) => boolean): Promise<boolean> {
    for (let attempt = 0; !this.stopping.signal.aborted; attempt++) {
      try {
        await write();
        return true;
      } catch (err) {
        if (giveUp?.(err)) return false;
        const delay = backoffDelay(attempt, { baseMs: 500, maxMs: 30_000, jitter: 'full' });
        this.o.log.warn({ ...context, err, retryInMs: delay }, this.o.failureMessage);
        await sleep(delay, this.stopping.signal).catch(() => undefined);
      }
    }
    return false;
  }

  /** Waits (bounded) for the writes in progress, then stops retrying. True if all landed in time. */
  async drain(timeoutMs: number): Promise<boolean> {
    const all = Promise.all([...this.chains.values()]).then(() => true);
    const ok = await Promise.race([all, new Promise<boolean>((r) => setTimeout(() => r(false), timeoutMs).unref())]);
    this.stopping.abort();
    return ok;
  }
}
