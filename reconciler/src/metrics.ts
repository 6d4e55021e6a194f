/**
 * The reconciler's Prometheus metrics, on one registry served at /metrics. Queue and governor
 * metrics come from queue/metrics.ts; these are the fleet's.
 */
import { PHASES } from '@wafleet/contract';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export interface FleetView {
  phases(): Iterable<string>;
  leasesHeld(): number;
}

export function createMetrics(view: FleetView) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'wafleet_process_' });
  new Gauge({
    name: 'wafleet_sessions',
    help: 'Accounts by observed phase.',
    labelNames: ['phase'] as const,
    registers: [registry],
    collect() {
      const counts = new Map<string, number>(PHASES.map((p) => [p, 0]));
      for (const p of view.phases()) counts.set(p, (counts.get(p) ?? 0) + 1);
      for (const [phase, n] of counts) this.set({ phase }, n);
    },
  });
  new Gauge({
    name: 'wafleet_leases_held',
    help: 'Account leases this instance holds.',
    registers: [registry],
    collect() {
      this.set(view.leasesHeld());
    },
  });
  const disconnects = new Counter({ name: 'wafleet_disconnects_total', help: 'Session closes by status code and reason.', labelNames: ['code', 'reason'] as const, registers: [registry] });
  const connectLatency = new Histogram({ name: 'wafleet_connect_latency_seconds', help: 'From socket start to open.', buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30], registers: [registry] });
  const firestoreWrites = new Counter({ name: 'wafleet_firestore_writes_total', help: 'Firestore writes by collection and result.', labelNames: ['collection', 'result'] as const, registers: [registry] });
  const heartbeat = new Gauge({ name: 'wafleet_heartbeat_age_seconds', help: 'Seconds since the last successful heartbeat.', registers: [registry] });
  return {
    registry,
    disconnect: (code: number | null, reason: string) => disconnects.inc({ code: String(code ?? 'none'), reason }),
    connectLatency: (ms: number) => connectLatency.observe(ms / 1000),
    firestoreWrite: (collection: string, ok: boolean) => firestoreWrites.inc({ collection, result: ok ? 'ok' : 'error' }),
    heartbeatAge: (seconds: number) => heartbeat.set(seconds),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
