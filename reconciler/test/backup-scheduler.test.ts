/**
 * Issue 16, item 5: a failed backup retried every 30 s forever, across lost ownership and account
 * removal. Retries now back off, and only while this process owns the account.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { BackupScheduler } from '../src/session/backup-scheduler.ts';
import { waitFor } from './helpers.ts';

const log = pino({ level: 'silent' });

function scheduler(o: { fail?: () => boolean; owned?: () => boolean; slow?: () => Promise<void> } = {}) {
  const attempts: number[] = [];
  const s = new BackupScheduler({
    accountId: 'a-1',
    log,
    debounceMs: 20,
    retry: { baseMs: 20, maxMs: 80 },
    owned: o.owned ?? (() => true),
    backup: async () => {
      attempts.push(Date.now());
      await o.slow?.();
      if (o.fail?.()) throw new Error('Firestore unavailable');
    },
  });
  return { s, attempts };
}

describe('BackupScheduler', () => {
  it('debounces a burst of changes into one backup', async () => {
    const { s, attempts } = scheduler();
    for (let i = 0; i < 10; i++) s.schedule();
    await waitFor(() => attempts.length === 1 && !s.pending, { timeoutMs: 2_000, label: 'one backup' });
    expect(attempts).toHaveLength(1);
  });

  it('retries a failed backup with growing delays until it lands', async () => {
    let failures = 4;
    const { s, attempts } = scheduler({ fail: () => failures-- > 0 });
    s.schedule(0);
    await waitFor(() => attempts.length === 5 && !s.pending, { timeoutMs: 5_000, label: 'landed after four failures' });
    const gaps = attempts.slice(1).map((t, i) => t - attempts[i]!);
    // Equal jitter: each delay is at least half its step (10, 20, 40, 40 ms for 20 → 80 ms).
    expect(gaps[2]!).toBeGreaterThanOrEqual(19);
    expect(gaps[3]!).toBeGreaterThanOrEqual(19);
  });

  it('stops retrying once the lease is not ours, and never starts a backup without it', async () => {
    let owned = true;
    const { s, attempts } = scheduler({ fail: () => true, owned: () => owned });
    s.schedule(0);
    await waitFor(() => attempts.length >= 2, { timeoutMs: 2_000, label: 'retrying' });
    owned = false;
    const seen = attempts.length;
    await waitFor(() => !s.pending, { timeoutMs: 2_000, label: 'gave up' });
    expect(attempts.length).toBeLessThanOrEqual(seen + 1);
    s.schedule(0);
    await waitFor(() => !s.pending, { timeoutMs: 2_000, label: 'dropped' });
    expect(attempts.length).toBeLessThanOrEqual(seen + 1);
  });

  it('cancel() ends every pending retry and waits for the write in flight', async () => {
    let release: () => void = () => undefined;
    let inFlight = false;
    const { s, attempts } = scheduler({
      fail: () => true,
      slow: () => {
        inFlight = true;
        return new Promise<void>((r) => (release = r)).finally(() => (inFlight = false));
      },
    });
    s.schedule(0);
    await waitFor(() => inFlight, { timeoutMs: 2_000, label: 'a write in flight' });
    const cancelled = s.cancel();
    release();
    await cancelled;
    expect(inFlight).toBe(false);
    expect(s.pending).toBe(false);
    const after = attempts.length;
    // Well past every retry delay: nothing more runs.
    await expect(waitFor(() => attempts.length > after, { timeoutMs: 300, intervalMs: 20, label: 'a retry' })).rejects.toThrow(/timed out/);
  });

  it('flush() covers a change made while a backup is being written', async () => {
    let release: () => void = () => undefined;
    let first = true;
    const { s, attempts } = scheduler({
      slow: () => {
        if (!first) return Promise.resolve();
        first = false;
        return new Promise<void>((r) => (release = r));
      },
    });
    s.schedule(0);
    await waitFor(() => attempts.length === 1, { timeoutMs: 2_000, label: 'first write' });
    s.schedule(); // a change lands mid-write
    const flushed = s.flush();
    release();
    await flushed;
    expect(attempts).toHaveLength(2);
    expect(s.pending).toBe(false);
  });
});
