/**
 * Writes Firestore documents that only the lease holder may write, one write in flight per
 * document and the latest wanted content winning: a burst of transitions costs one write, and
 * while Firestore is unreachable the newest state waits and lands when it is back ("status
 * catches up"). Every write is fenced by the account's lease.
 */
import type { DocumentReference, Transaction } from 'firebase-admin/firestore';
import type { Owner } from '@wafleet/contract';
import type { Logger } from 'pino';
import { StaleOwnerError, type LeaseManager } from '../lease/lease-manager.ts';
import { backoffDelay } from '../util/backoff.ts';
import { withTimeout } from '../util/deadline.ts';

export type DocWrite =
  | { kind: 'set'; build: (owner: Owner) => Record<string, unknown> }
  | { kind: 'delete' }
  /** Read-modify-write; reads go through `tx` (after the fence check). */
  | { kind: 'transaction'; apply: (tx: Transaction, owner: Owner) => Promise<void> };

interface Slot {
  accountId: string;
  ref: DocumentReference;
  wanted: DocWrite | null;
  running: boolean;
  attempt: number;
  timer: NodeJS.Timeout | null;
  waiters: Array<() => void>;
  /** The attempt allowed to write; an attempt that timed out keeps running inside the SDK. */
  token: number;
}

/** Thrown inside an abandoned attempt's transaction so that it commits nothing. */
class SupersededError extends Error {
  override readonly name = 'SupersededError';
}

export interface CoalescingWriterOptions {
  leases: LeaseManager;
  log: Logger;
  writeTimeoutMs?: number;
  /** The lease was lost: the account must stop being driven here. */
  onStale?: (accountId: string) => void;
  onWrite?: (collection: string, ok: boolean) => void;
}

export class CoalescingWriter {
  private readonly slots = new Map<string, Slot>();
  private stopped = false;

  constructor(private readonly opts: CoalescingWriterOptions) {}

  /** Wants `ref` to end up as described; resolves when that (or a newer) write has landed or been dropped. */
  submit(accountId: string, ref: DocumentReference, write: DocWrite): Promise<void> {
    let slot = this.slots.get(ref.path);
    if (!slot) {
      slot = { accountId, ref, wanted: null, running: false, attempt: 0, timer: null, waiters: [], token: 0 };
      this.slots.set(ref.path, slot);
    }
    slot.wanted = write;
    const done = new Promise<void>((resolve) => slot.waiters.push(resolve));
    if (!slot.running && !slot.timer) void this.run(slot);
    return done;
  }

  /** Documents with a write not yet landed. */
  pending(): number {
    let n = 0;
    for (const s of this.slots.values()) if (s.wanted || s.running) n++;
    return n;
  }

  private async run(slot: Slot): Promise<void> {
    if (this.stopped) return this.settle(slot);
    const write = slot.wanted;
    if (!write) return this.settle(slot);
    slot.wanted = null;
    slot.running = true;
    const waiters = slot.waiters.splice(0);
    const collection = slot.ref.parent.id;
    const token = ++slot.token;
    try {
      await withTimeout(
        this.opts.leases.fenced(slot.accountId, async (tx: Transaction, owner: Owner) => {
          // The SDK retries a transaction after our deadline gave up on it: such a retry, run
          // once the network is back, would write this (older) content over a newer write.
          if (token !== slot.token) throw new SupersededError();
          if (write.kind === 'delete') tx.delete(slot.ref);
          else if (write.kind === 'set') tx.set(slot.ref, write.build(owner));
          else await write.apply(tx, owner);
        }),
        this.opts.writeTimeoutMs ?? 10_000,
        `write ${slot.ref.path}`,
        // Abandoned from here on, whatever the SDK still does with it.
        () => void slot.token++,
      );
      slot.attempt = 0;
      this.opts.onWrite?.(collection, true);
      waiters.forEach((w) => w());
    } catch (err) {
      this.opts.onWrite?.(collection, false);
      if (err instanceof StaleOwnerError) {
        // Not ours any more: nothing to retry, and the owner must stop driving the account.
        slot.wanted = null;
        waiters.forEach((w) => w());
        this.opts.onStale?.(slot.accountId);
      } else {
        // Keep the newest content: either a newer submit, or this one again.
        slot.wanted ??= write;
        slot.waiters.unshift(...waiters);
        const delay = backoffDelay(slot.attempt++, { baseMs: 500, maxMs: 30_000, jitter: 'full' });
        this.opts.log.warn({ doc: slot.ref.path, err, retryInMs: delay }, 'Firestore write failed; will retry');
        slot.running = false;
        slot.timer = setTimeout(() => {
          slot.timer = null;
          void this.run(slot);
        }, delay);
        slot.timer.unref();
        return;
      }
    }
    slot.running = false;
    if (slot.wanted) void this.run(slot);
    else this.settle(slot);
  }

  private settle(slot: Slot): void {
    if (!slot.wanted && !slot.running && !slot.timer) {
      slot.waiters.splice(0).forEach((w) => w());
      this.slots.delete(slot.ref.path);
    }
  }

  /** Waits (bounded) for pending writes, e.g. at shutdown; then stops retrying. */
  async drain(timeoutMs: number): Promise<boolean> {
    const pendingWrites = [...this.slots.values()].filter((s) => s.wanted || s.running || s.timer);
    for (const s of pendingWrites) {
      if (s.timer) {
        clearTimeout(s.timer);
        s.timer = null;
        void this.run(s);
      }
    }
    const all = Promise.all(pendingWrites.map((s) => new Promise<void>((r) => s.waiters.push(r))));
    const ok = await Promise.race([all.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), timeoutMs).unref())]);
    this.stopped = true;
    for (const s of this.slots.values()) if (s.timer) clearTimeout(s.timer);
    return ok;
  }
}
