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

  let backlog: () => { queued: number; sending: number } = () => ({ queued: 0, sending: 0 });
  new Gauge({
    name: 'wafleet_outbox_messages',
    help: 'Outbox messages of owned accounts still to send, by status.',
    labelNames: ['status'] as const,
    registers: [registry],
    collect() {
      const b = backlog();
      this.set({ status: 'queued' }, b.queued);
      this.set({ status: 'sending' }, b.sending);
    },
  });
  const sendLatency = new Histogram({
    name: 'wafleet_outbox_send_latency_seconds',
    help: 'From the outbox document’s createdAt to WhatsApp’s ack (includes waiting and pacing).',
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300],
    registers: [registry],
  });
  const sent = new Counter({ name: 'wafleet_outbox_sent_total', help: 'Messages WhatsApp acknowledged.', registers: [registry] });
  const sendFailures = new Counter({ name: 'wafleet_outbox_failures_total', help: 'Messages marked failed, by error code.', labelNames: ['reason'] as const, registers: [registry] });
  const retries = new Counter({ name: 'wafleet_outbox_retries_total', help: 'Send attempts that failed and will be retried, by error code.', labelNames: ['reason'] as const, registers: [registry] });
  const receipts = new Counter({ name: 'wafleet_outbox_receipts_total', help: 'Delivery and read receipts recorded.', labelNames: ['kind'] as const, registers: [registry] });
  const inbound = new Counter({ name: 'wafleet_inbound_messages_total', help: 'Inbound messages by outcome (stored, duplicate, skipped non-text, recovered after Baileys dropped it).', labelNames: ['result'] as const, registers: [registry] });
  const inboundLatency = new Histogram({
    name: 'wafleet_inbound_store_latency_seconds',
    help: 'From Baileys handing over an inbound message to its document being committed.',
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30],
    registers: [registry],
  });
  return {
    registry,
    disconnect: (code: number | null, reason: string) => disconnects.inc({ code: String(code ?? 'none'), reason }),
    connectLatency: (ms: number) => connectLatency.observe(ms / 1000),
    firestoreWrite: (collection: string, ok: boolean) => firestoreWrites.inc({ collection, result: ok ? 'ok' : 'error' }),
    heartbeatAge: (seconds: number) => heartbeat.set(seconds),
    outboxBacklog: (fn: typeof backlog) => {
      backlog = fn;
    },
    outbox: {
      sent: (latencyMs: number | null) => {
        sent.inc();
        if (latencyMs !== null) sendLatency.observe(latencyMs / 1000);
      },
      failed: (code: string) => sendFailures.inc({ reason: code }),
      retried: (code: string) => retries.inc({ reason: code }),
      receipt: (kind: string) => receipts.inc({ kind }),
    },
    inbound: {
      result: (result: 'stored' | 'duplicate' | 'skipped' | 'recovered') => inbound.inc({ result }),
      stored: (ms: number) => inboundLatency.observe(ms / 1000),
    },
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
