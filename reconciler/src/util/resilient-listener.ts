/**
 * A Firestore query listener that survives its own failure. The Admin SDK gives up on a listener
 * after calling its error callback, so a new one is made, after a backoff with jitter (every
 * reconciler re-subscribing at once after a Firestore blip would be a thundering herd).
 */
import type { Query, QuerySnapshot } from 'firebase-admin/firestore';
import type { Logger } from 'pino';
import { backoffDelay } from './backoff.ts';

export interface ResilientListenerOptions {
  /** Names the listener in logs: "<name> listener failed; re-subscribing". */
  name: string;
  query: () => Query;
  onSnapshot: (snap: QuerySnapshot) => void;
  /** Called when the listener failed, before the re-subscription is scheduled. */
  onError?: () => void;
  log: Logger;
}

export class ResilientListener {
  private unsubscribe: (() => void) | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private errors = 0;
  private stopped = false;

  constructor(private readonly o: ResilientListenerOptions) {}

  /** Whether a listener is subscribed (false between a failure and its re-subscription). */
  get active(): boolean {
    return this.unsubscribe !== null;
  }

  /** Subscribes, replacing the current listener if there is one. */
  subscribe(): void {
    if (this.stopped) return;
    this.unsubscribe?.();
    this.unsubscribe = this.o.query().onSnapshot(
      (snap) => {
        this.errors = 0;
        this.o.onSnapshot(snap);
      },
      (err) => {
        this.unsubscribe = null;
        this.o.onError?.();
        const delay = backoffDelay(this.errors++, { baseMs: 1_000, maxMs: 60_000, jitter: 'full' });
        this.o.log.warn({ err, retryInMs: delay }, `${this.o.name} listener failed; re-subscribing`);
        this.retryTimer = setTimeout(() => this.subscribe(), delay);
        this.retryTimer.unref();
      },
    );
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.retryTimer) clearTimeout(this.retryTimer);
  }
}
