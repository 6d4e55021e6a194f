import { performance } from 'node:perf_hooks';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { ConnectCancelledError, ConnectGovernor, ConnectPriority } from '../src/queue/connect-governor.ts';
import { connectGovernorMetrics } from '../src/queue/metrics.ts';
import { deferred, waitFor } from './helpers.ts';

describe('ConnectGovernor', () => {
  it('30 logins: never more than `concurrency` at once, starts at least `intervalMs` apart', async () => {
    const intervalMs = 15;
    // Spacing is asserted on the start instants the governor reports (taken right before it calls
    // fn), not on timestamps taken inside fn: under CPU contention the OS can deschedule the
    // process between the two, which shortens a gap measured from outside by any amount. Only
    // lower bounds are asserted; upper bounds depend on machine load.
    const reported: number[] = [];
    const governor = new ConnectGovernor({ concurrency: 2, intervalMs, hooks: { onStart: (_id, { startedAt }) => reported.push(startedAt) } });
    const observed: number[] = [];
    let running = 0;
    let maxRunning = 0;
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        governor.run(`wa-${i}`, async () => {
          observed.push(performance.now());
          running += 1;
          maxRunning = Math.max(maxRunning, running);
          // Logins of varying length, some longer than the interval, some shorter.
          await new Promise((resolve) => setTimeout(resolve, 5 + ((i * 7) % 30)));
          running -= 1;
          return i;
        }),
      ),
    );
    expect(results).toEqual(Array.from({ length: 30 }, (_, i) => i));
    expect(maxRunning).toBe(2);
    expect(reported).toHaveLength(30);
    for (let i = 1; i < reported.length; i++) expect((reported[i] as number) - (reported[i - 1] as number)).toBeGreaterThanOrEqual(intervalMs);
    // fn runs after the instant reported for it.
    reported.forEach((t, i) => expect(observed[i]).toBeGreaterThanOrEqual(t));
    expect(governor.pending()).toBe(0);
    expect(governor.active()).toBe(0);
  });

  it('starts higher priority first, equal priorities in submission order', async () => {
    const governor = new ConnectGovernor({ concurrency: 1, intervalMs: 0 });
    governor.pause();
    const order: string[] = [];
    const runs = [
      governor.run('new-1', async () => void order.push('new-1'), { priority: ConnectPriority.newLink }),
      governor.run('linked-1', async () => void order.push('linked-1'), { priority: ConnectPriority.linked }),
      governor.run('new-2', async () => void order.push('new-2'), { priority: ConnectPriority.newLink }),
      governor.run('linked-2', async () => void order.push('linked-2'), { priority: ConnectPriority.linked }),
    ];
    expect(governor.pending()).toBe(4);
    expect(governor.isPaused).toBe(true);
    governor.resume();
    await Promise.all(runs);
    expect(order).toEqual(['linked-1', 'linked-2', 'new-1', 'new-2']);
  });

  it('cancels a queued run by signal or by account; fn never runs, others proceed', async () => {
    const registry = new Registry();
    const governor = new ConnectGovernor({ concurrency: 1, intervalMs: 0, hooks: connectGovernorMetrics(registry) });
    const blocker = deferred();
    const ran: string[] = [];
    const first = governor.run('wa-1', async () => {
      ran.push('wa-1');
      await blocker.promise;
    });
    await waitFor(() => governor.active() === 1);
    const controller = new AbortController();
    const bySignal = governor.run('wa-2', async () => void ran.push('wa-2'), { signal: controller.signal });
    const byAccount = governor.run('wa-3', async () => void ran.push('wa-3'));
    const kept = governor.run('wa-4', async () => 'wa-4 ok');
    expect(governor.pending()).toBe(3);
    expect(governor.isQueued('wa-3')).toBe(true);

    controller.abort(new Error('account deleted'));
    await expect(bySignal).rejects.toSatisfy((e: unknown) => e instanceof ConnectCancelledError && e.accountId === 'wa-2' && (e.cause as Error).message === 'account deleted');
    expect(governor.cancel('wa-3')).toBe(1);
    await expect(byAccount).rejects.toBeInstanceOf(ConnectCancelledError);
    expect(governor.isQueued('wa-3')).toBe(false);
    expect(governor.pending()).toBe(1);

    blocker.resolve();
    await first;
    await expect(kept).resolves.toBe('wa-4 ok');
    await governor.onIdle();
    expect(ran).toEqual(['wa-1']);
    expect(await registry.metrics()).toContain('wafleet_connect_total{outcome="cancelled"} 2');
  });

  it('rejects at once when the signal is already aborted', async () => {
    const governor = new ConnectGovernor({ concurrency: 1, intervalMs: 0 });
    let called = false;
    await expect(governor.run('wa-1', async () => void (called = true), { signal: AbortSignal.abort() })).rejects.toBeInstanceOf(ConnectCancelledError);
    expect(called).toBe(false);
  });

  it('an abort after the start goes to fn, and the slot stays held until fn settles', async () => {
    const governor = new ConnectGovernor({ concurrency: 1, intervalMs: 0 });
    const controller = new AbortController();
    const release = deferred();
    let sawAbort = false;
    const first = governor.run(
      'wa-1',
      async (signal) => {
        signal.addEventListener('abort', () => (sawAbort = true));
        await release.promise; // a login that finishes its cleanup before returning
        return 'closed';
      },
      { signal: controller.signal },
    );
    await waitFor(() => governor.active() === 1);
    let secondStarted = false;
    const second = governor.run('wa-2', async () => void (secondStarted = true));
    controller.abort();
    expect(sawAbort).toBe(true);
    // Give the queue every chance to (wrongly) start wa-2 in the freed slot.
    await new Promise((resolve) => setImmediate(resolve));
    expect(secondStarted).toBe(false);
    expect(governor.active()).toBe(1);
    release.resolve();
    await expect(first).resolves.toBe('closed');
    await second;
    expect(secondStarted).toBe(true);
  });

  it('propagates errors from fn and keeps going', async () => {
    const governor = new ConnectGovernor({ concurrency: 2, intervalMs: 1 });
    const boom = new Error('401 logged out');
    await expect(governor.run('wa-1', async () => Promise.reject(boom))).rejects.toBe(boom);
    await expect(governor.run('wa-2', async () => 'fine')).resolves.toBe('fine');
  });

  it('rejects nonsense limits', () => {
    expect(() => new ConnectGovernor({ concurrency: 0, intervalMs: 0 })).toThrow(RangeError);
    expect(() => new ConnectGovernor({ concurrency: 1, intervalMs: -1 })).toThrow(RangeError);
  });
});
