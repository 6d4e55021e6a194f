/**
 * The outbox writes after the claim (acks, receipts, requeues, failures) of every account this
 * process owns, batched fleet-wide: one fenced transaction at a time carries everything that
 * arrived meanwhile, whichever accounts it belongs to. Each commit is paid for (by Firestore, and
 * on the emulator by re-running every open listener over the whole collection), so thirty
 * accounts sharing one commit is what lets the fleet send more than a few dozen messages a second.
 * An ack and the receipts that follow it mostly land together, and no two transactions of this
 * process ever touch one message at once (two transactions on one document wait out the
 * emulator's lock timeout, ~3 s; production aborts and retries).
 *
 * Each account writes through its own port. An account whose lease is gone has its ops rejected
 * (the new owner resolves its claims) without holding up the others. A batch that fails is retried
 * with backoff and jitter, merged with what arrived meanwhile. A port's drain at shutdown that runs
 * out of time rejects what is left: an unrecorded ack leaves the claim to expire and the message is
 * resolved by a resend under the same WhatsApp id, which the phone shows once.
 */
import type { Logger } from 'pino';
import { StaleOwnerError } from '../lease/lease-manager.ts';
import { backoffDelay } from '../util/backoff.ts';
import { sleep, withTimeout } from '../util/deadline.ts';
import type { OpResult, OutboxOp, OutboxStore } from './outbox-store.ts';

interface Entry {
  port: WriterPort;
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
  store: OutboxStore;
  log: Logger;
  /** Deadline of one transaction attempt. */
  writeTimeoutMs?: number;
  /** Most messages per transaction (Firestore allows 500 writes; smaller keeps each one quick). */
  maxMessages?: number;
}

/** One account's way into the shared writer. */
export class WriterPort {
  /** Ops submitted and not yet settled (landed, refused or rejected). */
  private readonly inFlight = new Set<Promise<unknown>>();
  stopped = false;

  constructor(
    private readonly writer: OutboxWriter,
    readonly accountId: string,
    /** The lease is gone: the account must stop sending here. */
    readonly onStale: () => void,
  ) {}

  /** Records `op`; resolves once it landed (with whether it changed the document). */
  submit(op: OutboxOp): Promise<OpResult> {
    if (this.stopped) return Promise.reject(new WriterStoppedError());
    const p = this.writer.enqueue(this, op);
    const tracked = p.then(
      () => undefined,
      () => undefined,
    );
    this.inFlight.add(tracked);
    void tracked.finally(() => this.inFlight.delete(tracked));
    return p;
  }

  /** Waits (bounded) for what is queued to land, then refuses new ops and drops what is left. */
  async drain(timeoutMs: number): Promise<boolean> {
    const done = (async () => {
      while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
      return true;
    })();
    const ok = await withTimeout(done, timeoutMs, 'outbox writes').catch(() => false);
    this.stopped = true;
    this.writer.dropQueued(this, new WriterStoppedError());
    return ok;
  }
}

export class OutboxWriter {
  private queue: Entry[] = [];
  private running: Promise<void> | null = null;
  private readonly closing = new AbortController();

  constructor(private readonly o: OutboxWriterOptions) {}

  port(accountId: string, onStale: () => void): WriterPort {
    return new WriterPort(this, accountId, onStale);
  }

  /** @internal through a port */
  enqueue(port: WriterPort, op: OutboxOp): Promise<OpResult> {
    if (this.closing.signal.aborted) return Promise.reject(new WriterStoppedError());
    return new Promise<OpResult>((resolve, reject) => {
      this.queue.push({ port, op, resolve, reject });
      this.running ??= this.run().finally(() => {
        this.running = null;
      });
    });
  }

  /** @internal Rejects a port's ops that have not been taken into a transaction yet. */
  dropQueued(port: WriterPort, err: unknown): void {
    const [dropped, kept] = partition(this.queue, (e) => e.port === port);
    this.queue = kept;
    for (const e of dropped) e.reject(err);
  }

  private async run(): Promise<void> {
    // Ops submitted in the same tick (a snapshot's worth, a burst of acks) share the first commit.
    await Promise.resolve();
    let failures = 0;
    let batch: Entry[] = [];
    while (this.queue.length > 0 || batch.length > 0) {
      if (this.closing.signal.aborted) return rejectAll([...batch, ...this.queue.splice(0)], new WriterStoppedError());
      // A port drained meanwhile (its account stopped) gives up what it had waiting for a retry.
      const [dropped, live] = partition(batch, (e) => e.port.stopped);
      rejectAll(dropped, new WriterStoppedError());
      batch = [...live, ...this.take(live)];
      if (batch.length === 0) continue;
      const byAccount = new Map<string, Entry[]>();
      for (const e of batch) {
        const entries = byAccount.get(e.port.accountId);
        if (entries) entries.push(e);
        else byAccount.set(e.port.accountId, [e]);
      }
      const groups = new Map([...byAccount].map(([accountId, entries]) => [accountId, entries.map((e) => e.op)]));
      try {
        const results = await withTimeout(this.o.store.settleMany(groups), this.o.writeTimeoutMs ?? 15_000, 'outbox write');
        for (const [accountId, entries] of byAccount) {
          const r = results.get(accountId)!;
          if (!(r instanceof StaleOwnerError)) {
            entries.forEach((e, i) => e.resolve(r[i]!));
            continue;
          }
          rejectAll(entries, r);
          for (const port of new Set(entries.map((e) => e.port))) {
            this.dropQueued(port, r);
            port.onStale();
          }
        }
        batch = [];
        failures = 0;
      } catch (err) {
        // Whether the attempt landed is unknown (a timeout); every op is safe to apply twice.
        const delay = backoffDelay(failures++, { baseMs: 500, maxMs: 30_000, jitter: 'full' });
        this.o.log.warn({ messages: batch.length, accounts: groups.size, err, retryInMs: delay }, 'recording outbox results failed; will retry');
        await sleep(delay, this.closing.signal).catch(() => undefined);
      }
    }
  }

  /** The oldest waiting ops that fit in one transaction beside `batch`. */
  private take(batch: Entry[]): Entry[] {
    const max = this.o.maxMessages ?? 200;
    const ids = new Set(batch.map((e) => e.op.messageId));
    let n = 0;
    for (; n < this.queue.length; n++) {
      const id = this.queue[n]!.op.messageId;
      if (!ids.has(id) && ids.size >= max) break;
      ids.add(id);
    }
    return this.queue.splice(0, n);
  }

  /** Rejects everything and stops retrying (after every port has drained, at shutdown). */
  async close(): Promise<void> {
    this.closing.abort();
    await this.running;
  }
}

function partition<T>(items: T[], pred: (item: T) => boolean): [T[], T[]] {
  const yes: T[] = [];
  const no: T[] = [];
  for (const item of items) (pred(item) ? yes : no).push(item);
  return [yes, no];
}

function rejectAll(entries: Entry[], err: unknown): void {
  for (const e of entries) e.reject(err);
}
