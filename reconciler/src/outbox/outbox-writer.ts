/**
 * One account's outbox writes after the claim (acks, receipts, requeues, failures), batched: one
 * fenced transaction at a time carries everything that arrived meanwhile. An ack and the delivery
 * receipt that follows it a few milliseconds later mostly land together, and no two transactions
 * of this process touch one message at once, which is what made sends crawl (two transactions
 * on one document wait out the emulator's lock timeout, ~3 s; production aborts and retries).
 *
 * A batch that fails is retried with backoff and jitter, merged with what arrived meanwhile; the
 * lease being lost rejects everything (the new owner resolves the claims), and so does a drain at
 * shutdown that runs out of time: an unrecorded ack leaves the claim to expire and the message is
 * resolved by a resend under the same WhatsApp id, which the phone shows once.
 */
import type { Logger } from 'pino';
import { StaleOwnerError } from '../lease/lease-manager.ts';
import { backoffDelay } from '../util/backoff.ts';
import { sleep, withTimeout } from '../util/deadline.ts';
import type { OpResult, OutboxOp, OutboxStore } from './outbox-store.ts';

interface Entry {
  op: OutboxOp;
  resolve: (r: OpResult) => void;
  reject: (err: unknown) => void;
}

export class WriterStoppedError extends Error {
  constructor() {
    super('outbox writer stopped');
    this.name = 'WriterStoppedError';
  }
}

export interface OutboxWriterOptions {
  accountId: string;
  store: OutboxStore;
  log: Logger;
  /** Deadline of one transaction attempt. */
  writeTimeoutMs?: number;
  /** Most messages per transaction (Firestore allows 500 writes; smaller keeps each one quick). */
  maxMessages?: number;
  /** The lease is gone: the account must stop sending here. */
  onStale: () => void;
}

export class OutboxWriter {
  private queue: Entry[] = [];
  private running: Promise<void> | null = null;
  private readonly stopping = new AbortController();

  constructor(private readonly o: OutboxWriterOptions) {}

  /** Records `op`; resolves once it landed (with whether it changed the document). */
  submit(op: OutboxOp): Promise<OpResult> {
    if (this.stopping.signal.aborted) return Promise.reject(new WriterStoppedError());
    return new Promise<OpResult>((resolve, reject) => {
      this.queue.push({ op, resolve, reject });
      this.running ??= this.run().finally(() => {
        this.running = null;
      });
    });
  }

  /** Operations not yet landed. */
  pending(): number {
    return this.queue.length;
  }

  private async run(): Promise<void> {
    let failures = 0;
    let batch: Entry[] = [];
    while (this.queue.length > 0 || batch.length > 0) {
      if (this.stopping.signal.aborted) return this.rejectAll([...batch, ...this.queue.splice(0)], new WriterStoppedError());
      batch = [...batch, ...this.take(batch)];
      try {
        const results = await withTimeout(
          this.o.store.settle(
            this.o.accountId,
            batch.map((e) => e.op),
          ),
          this.o.writeTimeoutMs ?? 15_000,
          'outbox write',
        );
        batch.forEach((e, i) => e.resolve(results[i]!));
        batch = [];
        failures = 0;
      } catch (err) {
        if (err instanceof StaleOwnerError) {
          this.rejectAll([...batch, ...this.queue.splice(0)], err);
          batch = [];
          this.o.onStale();
          continue;
        }
        // Whether the attempt landed is unknown (a timeout); every op is safe to apply twice.
        const delay = backoffDelay(failures++, { baseMs: 500, maxMs: 30_000, jitter: 'full' });
        this.o.log.warn({ messages: batch.length, err: String(err), retryInMs: delay }, 'recording outbox results failed; will retry');
        await sleep(delay, this.stopping.signal).catch(() => undefined);
      }
    }
  }

  /** The oldest waiting ops that fit in one transaction beside `batch`. */
  private take(batch: Entry[]): Entry[] {
    const max = this.o.maxMessages ?? 100;
    const ids = new Set(batch.map((e) => e.op.messageId));
    let n = 0;
    for (; n < this.queue.length; n++) {
      const id = this.queue[n]!.op.messageId;
      if (!ids.has(id) && ids.size >= max) break;
      ids.add(id);
    }
    return this.queue.splice(0, n);
  }

  private rejectAll(entries: Entry[], err: unknown): void {
    for (const e of entries) e.reject(err);
  }

  /** Waits (bounded) for what is queued to land, then refuses new ops and stops retrying. */
  async drain(timeoutMs: number): Promise<boolean> {
    const done = (async () => {
      while (this.running) await this.running;
      return true;
    })();
    const ok = await withTimeout(done, timeoutMs, 'outbox writes').catch(() => false);
    this.stopping.abort();
    await this.running;
    return ok;
  }
}
