import { afterEach, describe, expect, it, vi } from 'vitest';
import { Registry } from 'prom-client';
import { WorkQueue, type QueueDepth } from '../src/queue/work-queue.ts';
import { workQueueMetrics } from '../src/queue/metrics.ts';
import { deferred, waitFor } from './helpers.ts';

/** A handler whose passes the test finishes one by one. */
function controlledHandler() {
  const calls: string[] = [];
  const running = new Map<string, ReturnType<typeof deferred<void>>>();
  let concurrent = 0;
  let maxConcurrent = 0;
  const perKey = new Map<string, number>();
  let overlap = false;
  const handler = async (key: string): Promise<void> => {
    calls.push(key);
    concurrent += 1;
    maxConcurrent = Math.max(maxConcurrent, concurrent);
    perKey.set(key, (perKey.get(key) ?? 0) + 1);
    if ((perKey.get(key) ?? 0) > 1) overlap = true;
    const gate = deferred();
    running.set(key, gate);
    try {
      await gate.promise;
    } finally {
      running.delete(key);
      perKey.set(key, (perKey.get(key) ?? 1) - 1);
      concurrent -= 1;
    }
  };
  return {
    handler,
    calls,
    running,
    finish: async (key: string) => {
      await waitFor(() => running.get(key), { label: `pass of ${key} to start` });
      running.get(key)?.resolve();
    },
    get maxConcurrent() {
      return maxConcurrent;
    },
    get overlap() {
      return overlap;
    },
  };
}

describe('WorkQueue', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('collapses duplicate adds of a queued key', async () => {
    const q = new WorkQueue();
    const seen: string[] = [];
    q.add('a');
    q.add('a');
    q.add('b');
    q.add('a');
    expect(q.len()).toBe(2);
    q.start(async (key) => {
      seen.push(key);
    });
    await waitFor(() => seen.length === 2 && q.processing() === 0);
    expect(seen).toEqual(['a', 'b']);
    expect(q.len()).toBe(0);
  });

  it('processes ready keys in FIFO order', async () => {
    const q = new WorkQueue();
    const seen: string[] = [];
    for (const key of ['c', 'a', 'd', 'b']) q.add(key);
    q.start((key) => {
      seen.push(key);
    });
    await waitFor(() => seen.length === 4);
    expect(seen).toEqual(['c', 'a', 'd', 'b']);
  });

  it('never runs one key on two workers; a key added during its pass runs exactly once more', async () => {
    const q = new WorkQueue();
    const h = controlledHandler();
    q.start(h.handler, { concurrency: 4 });
    q.add('a');
    await waitFor(() => h.running.has('a'));
    expect(q.processing()).toBe(1);
    // Many adds while 'a' is running: one more pass, not five, and not concurrently.
    for (let i = 0; i < 5; i++) q.add('a');
    q.add('b');
    await waitFor(() => h.running.has('b'));
    expect(h.calls).toEqual(['a', 'b']);
    expect(q.len()).toBe(0); // 'a' is parked as dirty, not queued, while it runs
    await h.finish('a');
    await waitFor(() => h.calls.length === 3);
    expect(h.calls).toEqual(['a', 'b', 'a']);
    await h.finish('a');
    await h.finish('b');
    await waitFor(() => q.processing() === 0);
    expect(h.calls).toEqual(['a', 'b', 'a']);
    expect(h.overlap).toBe(false);
  });

  it('bounds concurrency', async () => {
    const q = new WorkQueue();
    const h = controlledHandler();
    q.start(h.handler, { concurrency: 3 });
    for (let i = 0; i < 10; i++) q.add(`k${i}`);
    await waitFor(() => h.running.size === 3);
    expect(q.len()).toBe(7);
    for (let i = 0; i < 10; i++) await h.finish(`k${i}`);
    await waitFor(() => q.processing() === 0);
    expect(h.maxConcurrent).toBe(3);
    expect(h.calls).toEqual(Array.from({ length: 10 }, (_, i) => `k${i}`));
  });

  it('addAfter keeps the earliest due time (fake timers)', async () => {
    vi.useFakeTimers();
    const q = new WorkQueue();
    const seen: Array<[string, number]> = [];
    const t0 = Date.now();
    q.start((key) => {
      seen.push([key, Date.now() - t0]);
    });
    q.addAfter('late-then-early', 1000);
    q.addAfter('late-then-early', 100);
    q.addAfter('early-then-late', 200);
    q.addAfter('early-then-late', 5000);
    expect(q.waiting()).toBe(2);
    await vi.advanceTimersByTimeAsync(99);
    expect(seen).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(seen).toEqual([['late-then-early', 100]]);
    await vi.advanceTimersByTimeAsync(100);
    expect(seen).toEqual([
      ['late-then-early', 100],
      ['early-then-late', 200],
    ]);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(seen).toHaveLength(2); // the superseded due times did not fire again
    expect(q.waiting()).toBe(0);
  });

  it('retries a failing key with growing backoff, then forgets it on success (fake timers)', async () => {
    vi.useFakeTimers();
    const retries: Array<{ attempt: number; delayMs: number }> = [];
    const errors: unknown[] = [];
    const q = new WorkQueue({
      backoff: { baseMs: 100, maxMs: 1000, jitter: 'none' },
      hooks: { onRetry: (_k, info) => retries.push(info), onError: (_k, e) => errors.push(e) },
    });
    const passTimes: number[] = [];
    const t0 = Date.now();
    let failuresLeft = 4;
    q.start((key, { retries: r }) => {
      passTimes.push(Date.now() - t0);
      expect(r).toBe(4 - failuresLeft);
      if (failuresLeft-- > 0) throw new Error(`fail ${key}`);
    });
    q.add('x');
    await vi.advanceTimersByTimeAsync(5000);
    expect(passTimes).toEqual([0, 100, 300, 700, 1500]); // +100, +200, +400, +800
    expect(retries).toEqual([
      { attempt: 1, delayMs: 100 },
      { attempt: 2, delayMs: 200 },
      { attempt: 3, delayMs: 400 },
      { attempt: 4, delayMs: 800 },
    ]);
    expect(errors.map((e) => (e as Error).message)).toEqual(['fail x', 'fail x', 'fail x', 'fail x']);
    expect(q.retries('x')).toBe(0);
  });

  it('caps the backoff and stays within full-jitter bounds', () => {
    const q = new WorkQueue({ backoff: { baseMs: 100, maxMs: 1000, jitter: 'full' } });
    const delays = Array.from({ length: 12 }, () => q.addRateLimited('k'));
    delays.forEach((d, i) => {
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThan(Math.min(1000, 100 * 2 ** i));
    });
    expect(q.retries('k')).toBe(12);
    q.forget('k');
    expect(q.retries('k')).toBe(0);
  });

  it('honours requeueAfterMs and requeue results (fake timers)', async () => {
    vi.useFakeTimers();
    const q = new WorkQueue({ backoff: { baseMs: 50, maxMs: 50, jitter: 'none' } });
    const seen: Array<[string, number]> = [];
    const t0 = Date.now();
    let n = 0;
    q.start((key) => {
      seen.push([key, Date.now() - t0]);
      n += 1;
      if (n === 1) return { requeueAfterMs: 300 };
      if (n === 2) return { requeue: true };
      return undefined;
    });
    q.add('k');
    await vi.advanceTimersByTimeAsync(1000);
    expect(seen).toEqual([
      ['k', 0],
      ['k', 300],
      ['k', 350],
    ]);
    expect(q.retries('k')).toBe(0);
  });

  it('reports depth through hooks and into prometheus', async () => {
    const registry = new Registry();
    const depths: QueueDepth[] = [];
    const metrics = workQueueMetrics<string>(registry, 'reconcile');
    const q = new WorkQueue<string>({
      hooks: {
        ...metrics,
        onDepth: (d) => {
          depths.push(d);
          metrics.onDepth?.(d);
        },
      },
    });
    q.add('a');
    q.add('b');
    expect(depths.at(-1)).toEqual({ ready: 2, processing: 0, waiting: 0 });
    const h = controlledHandler();
    q.start(h.handler);
    expect(depths.at(-1)).toEqual({ ready: 1, processing: 1, waiting: 0 });
    await h.finish('a');
    await h.finish('b');
    await waitFor(() => q.processing() === 0);
    expect(depths.at(-1)).toEqual({ ready: 0, processing: 0, waiting: 0 });
    const text = await registry.metrics();
    expect(text).toContain('wafleet_workqueue_passes_total{queue="reconcile",outcome="success"} 2');
    expect(text).toContain('wafleet_workqueue_depth{queue="reconcile",state="ready"} 0');
  });

  it('a throwing hook does not break the queue', async () => {
    const q = new WorkQueue({
      hooks: {
        onDepth: () => {
          throw new Error('metrics bug');
        },
      },
    });
    const seen: string[] = [];
    q.start((key) => {
      seen.push(key);
    });
    q.add('a');
    await waitFor(() => seen.length === 1 && q.processing() === 0);
    q.add('a');
    await waitFor(() => seen.length === 2);
  });

  it('shutdown with drain processes what is queued, then refuses new keys', async () => {
    const q = new WorkQueue();
    const h = controlledHandler();
    q.start(h.handler);
    q.add('a');
    q.add('b');
    q.addAfter('later', 60_000);
    await waitFor(() => h.running.has('a'));
    const done = q.shutdown({ drain: true });
    q.add('c'); // ignored
    expect(q.waiting()).toBe(0); // scheduled adds are cancelled
    await h.finish('a');
    await h.finish('b');
    await expect(done).resolves.toEqual({ timedOut: false, abandoned: [] });
    expect(h.calls).toEqual(['a', 'b']);
  });

  it('shutdown without drain drops queued keys and aborts running passes', async () => {
    const q = new WorkQueue();
    let signal: AbortSignal | undefined;
    const gate = deferred();
    q.start(async (_key, ctx) => {
      signal = ctx.signal;
      await gate.promise;
    });
    q.add('a');
    q.add('b');
    await waitFor(() => signal);
    const done = q.shutdown({ drain: false });
    expect(signal?.aborted).toBe(true);
    gate.resolve();
    await expect(done).resolves.toEqual({ timedOut: false, abandoned: ['b'] });
  });

  it('shutdown gives up after timeoutMs, aborting and reporting the stuck key (fake timers)', async () => {
    vi.useFakeTimers();
    const q = new WorkQueue();
    let signal: AbortSignal | undefined;
    q.start(async (_key, ctx) => {
      signal = ctx.signal;
      await new Promise(() => undefined); // never finishes
    });
    q.add('stuck');
    q.add('queued');
    await vi.advanceTimersByTimeAsync(0);
    const done = q.shutdown({ drain: true, timeoutMs: 1000 });
    await vi.advanceTimersByTimeAsync(999);
    expect(signal?.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    await expect(done).resolves.toEqual({ timedOut: true, abandoned: ['stuck', 'queued'] });
    expect(signal?.aborted).toBe(true);
  });
});
