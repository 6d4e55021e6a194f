/**
 * The reconciler's Prometheus metrics, on one registry served at /metrics. Queue and governor
 * metrics come from queue/metrics.ts; these are the fleet's. Node's default metrics keep their
 * standard names (`process_cpu_seconds_total`, `nodejs_heap_size_used_bytes`, …). The alert
 * rules and the dashboard in deploy/ use these names; a test checks that each exists here.
 */
import { createRequire } from 'node:module';
import { PHASES } from '@wafleet/contract';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { runReadinessChecks, type ReadinessCheck } from './http/server.ts';
import type { JournalEvent } from './inbound/inbound-journal.ts';
import { decideOnDisconnect } from './session/disconnect-policy.ts';

export interface FleetView {
  phases(): Iterable<string>;
  leasesHeld(): number;
  /** Wall-clock ms of the last successful heartbeat write (0: none yet): `Heartbeat.lastSuccess`. */
  heartbeatLastSuccessAt(): number;
}

export interface MetricsOptions {
  /** Tests set the clock the heartbeat age is measured with. */
  now?: () => number;
  /** Labels of `wafleet_build_info`; by default read from the installed packages. */
  build?: Partial<BuildInfo>;
}

export interface BuildInfo {
  version: string;
  node: string;
  baileys: string;
}

/** Logged out (401), banned (402, 403, 406), client version refused (405). */
const ALERTED_CLOSE_CODES = [401, 402, 403, 405, 406];
/** When this process started, in wall-clock ms: the heartbeat age before any beat succeeded. */
const PROCESS_STARTED_AT = Math.round(performance.timeOrigin);

function packageVersion(specifier: string): string {
  try {
    // Resolved at run time from this file: `../package.json` is reconciler/package.json both from
    // src/ and from the bundle in dist/; Baileys stays in node_modules (tools/build.ts).
    return String((createRequire(import.meta.url)(specifier) as { version?: unknown }).version ?? 'unknown');
  } catch {
    return 'unknown';
  }
}

export function buildInfo(): BuildInfo {
  return { version: packageVersion('../package.json'), node: process.versions.node, baileys: packageVersion('@whiskeysockets/baileys/package.json') };
}

/** `wafleet_ready` and `wafleet_readiness_check{check}`, from one evaluation of the checks per scrape. */
function registerReadiness(registry: Registry, checks: () => ReadinessCheck[]): void {
  // Both gauges' collects run side by side in a scrape: the first starts the evaluation, the other joins it.
  let pending: Promise<Array<readonly [string, boolean]>> | null = null;
  const evaluate = () =>
    (pending ??= runReadinessChecks(checks()).finally(() => {
      pending = null;
    }));
  new Gauge({
    name: 'wafleet_ready',
    help: 'Whether /readyz answers 200 (1) or 503 (0), evaluated at each scrape.',
    registers: [registry],
    async collect() {
      const results = await evaluate();
      this.set(results.length > 0 && results.every(([, ok]) => ok) ? 1 : 0);
    },
  });
  new Gauge({
    name: 'wafleet_readiness_check',
    help: 'Each readiness check of /readyz: 1 passing, 0 failing.',
    labelNames: ['check'] as const,
    registers: [registry],
    async collect() {
      const results = await evaluate();
      this.reset();
      for (const [check, ok] of results) this.set({ check }, ok ? 1 : 0);
    },
  });
}

export function createMetrics(view: FleetView, opts: MetricsOptions = {}) {
  const now = opts.now ?? Date.now;
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const build = { ...buildInfo(), ...opts.build };
  new Gauge({ name: 'wafleet_build_info', help: 'Always 1; the labels say what this process runs.', labelNames: ['version', 'node', 'baileys'] as const, registers: [registry] }).set(build, 1);
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
  // Registered once wired (`readiness`): an unlabelled gauge would otherwise report 0, "not ready".
  let readiness: (() => ReadinessCheck[]) | null = null;
  const disconnects = new Counter({ name: 'wafleet_disconnects_total', help: 'Session closes by status code and reason.', labelNames: ['code', 'reason'] as const, registers: [registry] });
  // The closes alerts count from zero (deploy/prometheus): a series born at 1 would show no increase.
  for (const code of ALERTED_CLOSE_CODES) disconnects.inc({ code: String(code), reason: decideOnDisconnect(code, { linked: true }).reason }, 0);
  const connectLatency = new Histogram({ name: 'wafleet_connect_latency_seconds', help: 'From socket start to open.', buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30], registers: [registry] });
  const firestoreWrites = new Counter({ name: 'wafleet_firestore_writes_total', help: 'Firestore writes by collection and result.', labelNames: ['collection', 'result'] as const, registers: [registry] });
  new Gauge({
    name: 'wafleet_heartbeat_age_seconds',
    help: 'Seconds since the start of the last successful heartbeat write (since the process started, before the first).',
    registers: [registry],
    collect() {
      const at = view.heartbeatLastSuccessAt();
      this.set(Math.max(0, now() - (at > 0 ? at : PROCESS_STARTED_AT)) / 1000);
    },
  });

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
  const journal = new Counter({
    name: 'wafleet_inbound_journal_total',
    help: 'Inbound journal events: messages journaled, replayed at start, torn entries skipped, messages not journaled (journal full or disk error), fsyncs.',
    labelNames: ['event'] as const,
    registers: [registry],
  });
  const journalBytes = new Gauge({ name: 'wafleet_inbound_journal_bytes', help: 'Bytes of the inbound journal on the sessions disk.', registers: [registry] });
  return {
    registry,
    disconnect: (code: number | null, reason: string) => disconnects.inc({ code: String(code ?? 'none'), reason }),
    connectLatency: (ms: number) => connectLatency.observe(ms / 1000),
    firestoreWrite: (collection: string, ok: boolean) => firestoreWrites.inc({ collection, result: ok ? 'ok' : 'error' }),
    /**
     * Exports the readiness checks as `wafleet_ready` and `wafleet_readiness_check`, evaluated at
     * each scrape; returns them, to hand the same list to /readyz.
     */
    readiness: (checks: () => ReadinessCheck[]) => {
      if (!readiness) registerReadiness(registry, () => readiness!());
      readiness = checks;
      return checks;
    },
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
      journal: (event: JournalEvent, count = 1) => journal.inc({ event }, count),
      journalBytes: (bytes: number) => journalBytes.set(bytes),
    },
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
