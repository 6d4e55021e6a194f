/**
 * Messages through the whole path, as on a VM: a reconciler child process with 30 linked accounts
 * against the Firestore emulator and the WhatsApp simulator (its acks and receipts), observed from
 * outside with Firestore listeners.
 *
 * - outbox create → `sent`: one message at a time (no queueing in front of it), pacing off;
 * - sustained throughput: bursts of queued messages across all 30 accounts, pacing off;
 * - inbound: a contact's send → the message document visible to a listener.
 */
import { appendFileSync } from 'node:fs';
import os from 'node:os';
import { Timestamp, type Firestore } from 'firebase-admin/firestore';
import { freePort } from '../tools/dev/ports.ts';
import { spawnReconciler } from '../tools/dev/reconciler-process.ts';
import { waitFor, type Simulator } from '../wa-sim/src/index.ts';
import { type BenchSuite, type Figure, median, percentile, reconcilerEnv, withBenchEnvironment } from './suite.ts';

const N = Number(process.env.MESSAGING_BENCH_ACCOUNTS ?? 30);
const LATENCY_SAMPLES = Number(process.env.MESSAGING_BENCH_LATENCY_SAMPLES ?? 300);
const BURST = Number(process.env.MESSAGING_BENCH_BURST ?? 900);
const BURSTS = Number(process.env.MESSAGING_BENCH_BURSTS ?? 3);
const INBOUND = Number(process.env.MESSAGING_BENCH_INBOUND ?? 300);
const SENT = new Set(['sent', 'delivered', 'read']);

function progress(text: string): void {
  process.stdout.write(`   ${text}\n`);
}

async function readyz(port: number): Promise<boolean> {
  try {
    return (await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2_000) })).ok;
  } catch {
    return false;
  }
}

async function runSuite(db: Firestore, projectId: string, sim: Simulator, sessionsPath: string): Promise<Record<string, Figure>> {
  const ids = Array.from({ length: N }, (_, i) => `msg-${String(i + 1).padStart(2, '0')}`);
  const contacts = Array.from({ length: 10 }, (_, i) => sim.createContact({ number: String(15554000000 + i) }));
  const httpPort = await freePort();
  // MESSAGING_BENCH_LOG=<file> keeps the reconciler's log lines (at info) for looking into a slow run.
  const logFile = process.env.MESSAGING_BENCH_LOG;
  const rec = spawnReconciler({
    env: reconcilerEnv({ projectId, sim, sessionsPath, httpPort, extra: { OUTBOX_RATE_PER_MINUTE: '0', OUTBOX_FLEET_RATE_PER_SECOND: '0', ...(logFile ? { LOG_LEVEL: 'info' } : {}) } }),
    ...(logFile ? { onLine: (line: string) => appendFileSync(logFile, `${line}\n`) } : {}),
  });
  const loadAtStart = os.loadavg()[0]!.toFixed(1);
  // Arrival times of outbox statuses and inbound documents, as a listening app sees them. Each
  // listener is open only for its own phase: the emulator re-evaluates every open listener over
  // its whole collection on each commit, a cost production Firestore does not have and that
  // would otherwise be measured as the reconciler's.
  const sentAt = new Map<string, number>();
  const inboundAt = new Map<string, number>();
  const stops: Array<() => void> = [];
  try {
    await waitFor(() => readyz(httpPort), { timeoutMs: 60_000, intervalMs: 200, what: 'the reconciler to be ready' });
    const now = Timestamp.now();
    await Promise.all(ids.map((id) => db.doc(`accounts/${id}`).set({ displayName: id, desiredState: 'connected', createdAt: now, updatedAt: now, updatedBy: 'bench' })));
    await Promise.all(
      ids.map(async (id, i) => {
        const qr = await waitFor(async () => (await db.doc(`accountQr/${id}`).get()).get('qr') as string | undefined, { timeoutMs: 120_000, intervalMs: 200, what: `QR of ${id}` });
        await sim.createPhone({ number: String(15554100000 + i) }).scanQr(qr);
      }),
    );
    await waitFor(async () => (await db.collection('accountStatus').where('phase', '==', 'connected').count().get()).data().count === N, {
      timeoutMs: 180_000,
      intervalMs: 250,
      what: `${N} accounts connected`,
    });
    progress(`${N} accounts linked`);
    let n = 0;
    const queue = (i: number) => {
      const id = `b-${++n}`;
      return {
        id,
        data: { accountId: ids[i % N], to: `+${contacts[i % contacts.length]!.number}`, text: `bench ${n}`, createdAt: Timestamp.now(), createdBy: 'bench', status: 'queued', attemptCount: 0 },
      };
    };

    // ---- create → sent, one at a time
    const stopOutbox = db.collection('outbox').onSnapshot((snap) => {
      const now = Date.now();
      for (const c of snap.docChanges()) if (SENT.has(c.doc.get('status')) && !sentAt.has(c.doc.id)) sentAt.set(c.doc.id, now);
    });
    stops.push(stopOutbox);
    const latencies: number[] = [];
    for (let i = 0; i < LATENCY_SAMPLES; i++) {
      const m = queue(i);
      const t0 = Date.now();
      await db.doc(`outbox/${m.id}`).set(m.data);
      await waitFor(() => sentAt.has(m.id), { timeoutMs: 30_000, intervalMs: 2, what: `${m.id} sent` });
      latencies.push(sentAt.get(m.id)! - t0);
    }
    progress(`create → sent: p50 ${median(latencies)} ms, p99 ${percentile(latencies, 99)} ms over ${LATENCY_SAMPLES} messages`);

    stopOutbox();

    // ---- throughput: bursts across all accounts, watched by counting (every earlier message is final)
    const acceptedCount = async () => (await db.collection('outbox').where('status', 'in', [...SENT]).count().get()).data().count;
    const rates: number[] = [];
    for (let b = 0; b < BURSTS; b++) {
      const burst = Array.from({ length: BURST }, (_, i) => queue(i));
      const before = await acceptedCount();
      const t0 = Date.now();
      for (let s = 0; s < burst.length; s += 450) {
        const batch = db.batch();
        for (const m of burst.slice(s, s + 450)) batch.set(db.doc(`outbox/${m.id}`), m.data);
        await batch.commit();
      }
      await waitFor(async () => (await acceptedCount()) - before >= BURST, { timeoutMs: 300_000, intervalMs: 250, what: `burst ${b + 1} sent` });
      const last = Date.now();
      rates.push((BURST * 1000) / (last - t0));
      progress(`burst ${b + 1}: ${BURST} messages in ${last - t0} ms`);
    }

    // ---- inbound: contact send → document visible
    stops.push(
      db.collectionGroup('messages').onSnapshot((snap) => {
        const now = Date.now();
        for (const c of snap.docChanges()) if (!inboundAt.has(c.doc.id)) inboundAt.set(c.doc.id, now);
      }),
    );
    const inbound: number[] = [];
    for (let i = 0; i < INBOUND; i++) {
      const c = contacts[i % contacts.length]!;
      const t0 = Date.now();
      const { id } = await c.sendText(String(15554100000 + (i % N)), `inbound bench ${i}`);
      await waitFor(() => inboundAt.has(id), { timeoutMs: 30_000, intervalMs: 2, what: `inbound ${id} stored` });
      inbound.push(inboundAt.get(id)! - t0);
    }
    progress(`inbound: p50 ${median(inbound)} ms, p99 ${percentile(inbound, 99)} ms over ${INBOUND} messages`);

    const note = `load ${loadAtStart} at start`;
    return {
      outboxCreateToSentP50Ms: { value: median(latencies), target: '≤ 250 ms', note: `${LATENCY_SAMPLES} messages one at a time, pacing off; ${note}` },
      outboxCreateToSentP99Ms: { value: percentile(latencies, 99), target: '≤ 1000 ms', note: `${LATENCY_SAMPLES} messages one at a time, pacing off` },
      outboxThroughputMsgPerSec: { value: Math.round(median(rates) * 10) / 10, target: '≥ 50 msg/s', note: `median of ${BURSTS} bursts of ${BURST} across ${N} accounts, pacing off, end seen by polling a count every 250 ms (runs: ${rates.map((r) => r.toFixed(0)).join(', ')})` },
      inboundStoreP50Ms: { value: median(inbound), note: `contact send → document seen by a listener, ${INBOUND} messages` },
      inboundStoreP99Ms: { value: percentile(inbound, 99), note: `${INBOUND} messages` },
    };
  } finally {
    for (const stop of stops) stop();
    await rec.stop();
  }
}

export const messagingBench: BenchSuite = {
  name: 'messaging',
  needsEmulators: true,
  run: () => withBenchEnvironment('messaging', 1, ({ db, projectId, sim, dirs }) => runSuite(db, projectId, sim, dirs[0]!)),
};
