/**
 * When an account's credentials are backed up: debounced after every change, at once after a new
 * login, and flushed at shutdown. A failed backup retries with backoff, but only while this
 * process owns the account: a backup writer that outlives its ownership is how a stale instance
 * damages the real owner's backup, so losing the lease (or the account) cancels everything.
 */
import type { Logger } from 'pino';
import { backoffDelay } from '../util/backoff.ts';

export interface BackupSchedulerDeps {
  accountId: string;
  log: Logger;
  debounceMs: number;
  /** Takes one backup of the current credentials. Throws when it did not land. */
  backup: () => Promise<void>;
  /** Whether this process may still write the account's backup (it holds the lease). */
  owned: () => boolean;
  retry?: { baseMs: number; maxMs: number };
}

export class BackupScheduler {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  /** Credentials changed since the last backup started. */
  private dirty = false;
  private failures = 0;
  private cancelled = false;

  constructor(private readonly d: BackupSchedulerDeps) {}

  /** A change to back up: after the debounce, or at once with `delayMs` 0. */
  schedule(delayMs = this.d.debounceMs): void {
    this.cancelled = false;
    this.dirty = true;
    this.arm(delayMs);
  }

  private arm(delayMs: number): void {
    if (this.timer) {
      if (delayMs > 0) return; // one is already scheduled; it will include this change
      clearTimeout(this.timer);
    }
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, delayMs);
    this.timer.unref();
  }

  get pending(): boolean {
    return this.dirty || this.running !== null;
  }

  /**
   * Backs up until no change is left: a change that lands while a backup is being written is
   * caught by the same run, so whoever awaits it (shutdown) knows the newest credentials are saved.
   */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (!this.running) {
      const run = this.loop();
      this.running = run;
      // Cleared after the assignment: a loop that ends without awaiting has settled already.
      void run.finally(() => {
        if (this.running === run) this.running = null;
      });
    }
    return this.running;
  }

  private async loop(): Promise<void> {
    while (this.dirty && !this.cancelled) {
      if (!this.d.owned()) {
        this.d.log.info({ accountId: this.d.accountId }, 'not the owner any more: dropping the pending backup');
        this.dirty = false;
        return;
      }
      this.dirty = false;
      try {
        await this.d.backup();
        this.failures = 0;
      } catch (err) {
        // Not ours any more: whoever owns the account now backs it up; ours would race theirs.
        if (this.cancelled || !this.d.owned()) return;
        this.dirty = true;
        const delay = backoffDelay(this.failures++, { baseMs: this.d.retry?.baseMs ?? 5_000, maxMs: this.d.retry?.maxMs ?? 5 * 60_000, jitter: 'equal' });
        this.d.log.warn({ accountId: this.d.accountId, err, retryInMs: delay }, 'session backup failed; will retry');
        this.arm(delay);
        return;
      }
    }
  }

  /** Stops every pending and future retry (lost ownership, wipe, removal); waits for a write in flight. */
  async cancel(): Promise<void> {
    this.cancelled = true;
    this.dirty = false;
    this.failures = 0;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running?.catch(() => undefined);
  }
}
