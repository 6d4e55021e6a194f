/**
 * Prometheus adapters for the queue hooks, so the orchestration wires metrics in one line:
 *   new WorkQueue({ hooks: workQueueMetrics(registry, 'reconcile') })
 *   new ConnectGovernor({ ..., hooks: connectGovernorMetrics(registry) })
 * Metrics are created once per registry and shared by every queue (distinguished by label).
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { ConnectGovernorHooks } from './connect-governor.ts';
import type { WorkQueueHooks } from './work-queue.ts';

function metric<M>(registry: Registry, name: string, create: () => M): M {
  return (registry.getSingleMetric(name) as M | undefined) ?? create();
}

export function workQueueMetrics<K>(registry: Registry, queue: string): WorkQueueHooks<K> {
  const depth = metric(registry, 'wafleet_workqueue_depth', () => new Gauge({ name: 'wafleet_workqueue_depth', help: 'Keys in the work queue by state (ready, processing, waiting).', labelNames: ['queue', 'state'] as const, registers: [registry] }));
  const retries = metric(registry, 'wafleet_workqueue_retries_total', () => new Counter({ name: 'wafleet_workqueue_retries_total', help: 'Keys scheduled for a retry with backoff.', labelNames: ['queue'] as const, registers: [registry] }));
  const passes = metric(registry, 'wafleet_workqueue_passes_total', () => new Counter({ name: 'wafleet_workqueue_passes_total', help: 'Finished passes by outcome.', labelNames: ['queue', 'outcome'] as const, registers: [registry] }));
  const duration = metric(registry, 'wafleet_workqueue_pass_duration_seconds', () => new Histogram({ name: 'wafleet_workqueue_pass_duration_seconds', help: 'Duration of one pass of the handler.', labelNames: ['queue'] as const, buckets: [0.005, 0.025, 0.1, 0.5, 1, 5, 15, 60], registers: [registry] }));
  return {
    onDepth: ({ ready, processing, waiting }) => {
      depth.set({ queue, state: 'ready' }, ready);
      depth.set({ queue, state: 'processing' }, processing);
      depth.set({ queue, state: 'waiting' }, waiting);
    },
    onRetry: () => retries.inc({ queue }),
    onProcessed: (_key, { outcome, durationMs }) => {
      passes.inc({ queue, outcome });
      duration.observe({ queue }, durationMs / 1000);
    },
  };
}

export function connectGovernorMetrics(registry: Registry): ConnectGovernorHooks {
  const waited = metric(registry, 'wafleet_connect_wait_seconds', () => new Histogram({ name: 'wafleet_connect_wait_seconds', help: 'Time a login waited for the connect governor.', buckets: [0.01, 0.1, 0.5, 1, 5, 15, 60], registers: [registry] }));
  const took = metric(registry, 'wafleet_connect_duration_seconds', () => new Histogram({ name: 'wafleet_connect_duration_seconds', help: 'Duration of a login holding a governor slot.', buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60], registers: [registry] }));
  const outcomes = metric(registry, 'wafleet_connect_total', () => new Counter({ name: 'wafleet_connect_total', help: 'Logins through the connect governor by outcome (ok, error, cancelled).', labelNames: ['outcome'] as const, registers: [registry] }));
  return {
    onStart: (_accountId, { waitedMs }) => waited.observe(waitedMs / 1000),
    onSettled: (_accountId, { durationMs, ok }) => {
      took.observe(durationMs / 1000);
      outcomes.inc({ outcome: ok ? 'ok' : 'error' });
    },
    onCancelled: () => outcomes.inc({ outcome: 'cancelled' }),
  };
}
