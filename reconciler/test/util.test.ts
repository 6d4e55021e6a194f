import { readdir, readFile, stat, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { backoffCeiling, backoffDelay } from '../src/util/backoff.ts';
import { TimeoutError, sleep, waitFor, withTimeout } from '../src/util/deadline.ts';
import { cleanTempFiles, removeDirAtomic, writeFileAtomic, writeFilesAtomic } from '../src/util/fs-atomic.ts';
import { KeyedMutex, Mutex } from '../src/util/mutex.ts';
import { deferred, tempDir } from './helpers.ts';

describe('backoffDelay', () => {
  const opts = { baseMs: 100, maxMs: 10_000 };

  it('full jitter stays in [0, min(cap, base*2^n)) for every attempt', () => {
    for (let attempt = 0; attempt < 40; attempt++) {
      const ceiling = Math.min(10_000, 100 * 2 ** attempt);
      for (const r of [0, 0.25, 0.5, 0.999999]) {
        const d = backoffDelay(attempt, { ...opts, jitter: 'full', random: () => r });
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThan(ceiling);
        expect(Number.isInteger(d)).toBe(true);
      }
    }
  });

  it('equal jitter never waits less than half the ceiling', () => {
    for (let attempt = 0; attempt < 20; attempt++) {
      const ceiling = backoffCeiling(attempt, opts);
      for (const r of [0, 0.5, 0.999999]) {
        const d = backoffDelay(attempt, { ...opts, jitter: 'equal', random: () => r });
        expect(d).toBeGreaterThanOrEqual(Math.floor(ceiling / 2));
        expect(d).toBeLessThanOrEqual(ceiling);
      }
    }
  });

  it('doubles without jitter, then holds at the cap, even for absurd attempts', () => {
    const none = { ...opts, jitter: 'none' as const };
    expect([0, 1, 2, 3].map((n) => backoffDelay(n, none))).toEqual([100, 200, 400, 800]);
    expect(backoffDelay(7, none)).toBe(10_000);
    expect(backoffDelay(10_000, none)).toBe(10_000);
    expect(backoffDelay(Number.POSITIVE_INFINITY, none)).toBe(100); // nonsense attempts count as the first
    expect(backoffDelay(-3, none)).toBe(100);
  });

  it('clamps a broken random source into the bounds', () => {
    for (const r of [1, 7, -1, Number.NaN]) {
      const d = backoffDelay(3, { ...opts, random: () => r });
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThan(800);
    }
  });

  it('rejects invalid options', () => {
    expect(() => backoffDelay(0, { baseMs: -1, maxMs: 10 })).toThrow(RangeError);
    expect(() => backoffDelay(0, { baseMs: 10, maxMs: 5 })).toThrow(RangeError);
    expect(() => backoffDelay(0, { baseMs: 10, maxMs: 50, factor: 0.5 })).toThrow(RangeError);
  });

  it('spreads a herd: 1000 full-jitter delays of one attempt are not bunched', () => {
    const delays = Array.from({ length: 1000 }, () => backoffDelay(5, opts));
    const buckets = new Set(delays.map((d) => Math.floor(d / 320)));
    expect(buckets.size).toBe(10); // every tenth of [0, 3200) is hit
  });
});

describe('withTimeout / waitFor (fake timers)', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('passes a result through and leaves no timer behind', async () => {
    vi.useFakeTimers();
    await expect(withTimeout(Promise.resolve(42), 1000, 'x')).resolves.toBe(42);
    expect(vi.getTimerCount()).toBe(0);
    await expect(withTimeout(Promise.reject(new Error('boom')), 1000, 'x')).rejects.toThrow('boom');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('rejects with a labelled TimeoutError at the deadline and calls onTimeout', async () => {
    vi.useFakeTimers();
    const onTimeout = vi.fn();
    const pending = withTimeout(new Promise(() => undefined), 500, 'login of wa-01', onTimeout);
    const assertion = expect(pending).rejects.toSatisfy((e: unknown) => e instanceof TimeoutError && e.label === 'login of wa-01' && e.timeoutMs === 500 && /timed out after 500 ms/.test(e.message));
    await vi.advanceTimersByTimeAsync(499);
    expect(onTimeout).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    await assertion;
    expect(onTimeout).toHaveBeenCalledOnce();
  });

  it('no deadline for a non-finite ms', async () => {
    vi.useFakeTimers();
    await expect(withTimeout(Promise.resolve('ok'), Number.POSITIVE_INFINITY, 'x')).resolves.toBe('ok');
  });

  it('waitFor returns the first truthy value', async () => {
    vi.useFakeTimers();
    let n = 0;
    const result = waitFor(() => (++n >= 3 ? `after ${n}` : null), { intervalMs: 10, timeoutMs: 1000 });
    await vi.advanceTimersByTimeAsync(30);
    await expect(result).resolves.toBe('after 3');
  });

  it('waitFor times out with the last predicate error as cause', async () => {
    vi.useFakeTimers();
    const result = waitFor(
      () => {
        throw new Error('not yet');
      },
      { timeoutMs: 100, intervalMs: 10, label: 'the thing' },
    );
    const assertion = expect(result).rejects.toSatisfy((e: unknown) => e instanceof TimeoutError && e.label === 'waiting for the thing' && (e.cause as Error).message === 'not yet');
    await vi.advanceTimersByTimeAsync(200);
    await assertion;
  });

  it('waitFor and sleep stop on abort', async () => {
    const controller = new AbortController();
    const result = waitFor(() => false, { timeoutMs: 60_000, signal: controller.signal });
    controller.abort(new Error('stop'));
    await expect(result).rejects.toThrow('stop');
    await expect(sleep(10, AbortSignal.abort(new Error('pre')))).rejects.toThrow('pre');
  });
});

describe('fs-atomic', () => {
  it('writes with mode 0600, replaces, and leaves no temp files', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const file = path.join(dir, 'a.json');
      await writeFileAtomic(file, 'one');
      await writeFileAtomic(file, 'two');
      expect(await readFile(file, 'utf8')).toBe('two');
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      expect(await readdir(dir)).toEqual(['a.json']);
    } finally {
      await cleanup();
    }
  });

  it('concurrent writers to one file leave one complete version', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const file = path.join(dir, 'x');
      const versions = Array.from({ length: 20 }, (_, i) => `version-${i}-`.repeat(2000));
      await Promise.all(versions.map((v) => writeFileAtomic(file, v)));
      expect(versions).toContain(await readFile(file, 'utf8'));
      expect(await readdir(dir)).toEqual(['x']);
    } finally {
      await cleanup();
    }
  });

  it('a failed batch removes its temp files and does not touch existing targets', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      await writeFileAtomic(path.join(dir, 'keep'), 'old');
      await expect(writeFilesAtomic([{ file: path.join(dir, 'keep'), data: 'new' }, { file: path.join(dir, 'missing-dir', 'f'), data: 'x' }])).rejects.toThrow(/ENOENT/);
      expect(await readFile(path.join(dir, 'keep'), 'utf8')).toBe('old');
      expect(await readdir(dir)).toEqual(['keep']);
    } finally {
      await cleanup();
    }
  });

  it('removeDirAtomic removes a tree; cleanTempFiles sweeps crash leftovers', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const tree = path.join(dir, 'acct');
      await mkdir(path.join(tree, 'keys', 'session'), { recursive: true });
      await writeFile(path.join(tree, 'keys', 'session', '00.json'), '{}');
      expect(await removeDirAtomic(tree)).toBe(true);
      expect(await readdir(dir)).toEqual([]);
      expect(await removeDirAtomic(tree)).toBe(false);

      await writeFile(path.join(dir, '.creds.json.123.abcd.tmp'), 'torn');
      await writeFile(path.join(dir, 'creds.json'), '{}');
      expect(await cleanTempFiles(dir)).toBe(1);
      expect(await readdir(dir)).toEqual(['creds.json']);
    } finally {
      await cleanup();
    }
  });
});

describe('Mutex', () => {
  it('runs critical sections one at a time, in order, surviving errors', async () => {
    const mutex = new Mutex();
    const order: string[] = [];
    const gate = deferred();
    const a = mutex.runExclusive(async () => {
      order.push('a-start');
      await gate.promise;
      order.push('a-end');
    });
    const b = mutex.runExclusive(() => {
      order.push('b');
      throw new Error('b failed');
    });
    const c = mutex.runExclusive(() => order.push('c'));
    expect(mutex.isLocked).toBe(true);
    gate.resolve();
    await a;
    await expect(b).rejects.toThrow('b failed');
    await c;
    expect(order).toEqual(['a-start', 'a-end', 'b', 'c']);
    expect(mutex.isLocked).toBe(false);
  });

  it('KeyedMutex serializes per key only', async () => {
    const locks = new KeyedMutex();
    const gate = deferred();
    const events: string[] = [];
    const a1 = locks.runExclusive('a', async () => {
      await gate.promise;
      events.push('a1');
    });
    const b = locks.runExclusive('b', () => events.push('b'));
    const a2 = locks.runExclusive('a', () => events.push('a2'));
    await b;
    expect(events).toEqual(['b']);
    gate.resolve();
    await Promise.all([a1, a2]);
    expect(events).toEqual(['b', 'a1', 'a2']);
  });
});
