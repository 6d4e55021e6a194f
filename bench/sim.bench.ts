/**
 * wa-sim capacity: 60 concurrent logged-in Baileys sessions, and how many messages per second the
 * simulator acks. Baileys runs in child processes (wa-sim/bench/load-worker.ts), so its CPU is not
 * billed to the simulator, whose own CPU per message is measured separately.
 *
 * Two throughput figures:
 * - capacity: each socket's Signal repository encrypts the stanzas relayMessage would send before
 *   the timed window; the window pushes them through the real sockets, so it measures the
 *   simulator (noise, decode, ack, two libsignal decrypts, receipt) rather than Baileys' send path;
 * - end to end with real `sendMessage`, which on this machine is capped by Baileys' own CPU cost.
 */
import { type ChildProcess, fork } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { WorkerCommand, WorkerEvent } from '../wa-sim/bench/load-worker.ts';
import { type Simulator, startSimulator, waitFor } from '../wa-sim/src/index.ts';
import { type BenchSuite, type Figure, median, percentile } from './suite.ts';
import { startCpuProfile } from '../wa-sim/bench/cpu-profile.ts';

const env = (name: string, fallback: number): number => Number(process.env[name] ?? fallback);
const SESSIONS = env('WA_SIM_BENCH_SESSIONS', 60);
const WORKERS = env('WA_SIM_BENCH_WORKERS', 2);
const CONTACTS = 10;
const RUNS = env('WA_SIM_BENCH_RUNS', 5);
const MESSAGES_PER_SESSION = 50;
const E2E_RUNS = 3;
const E2E_PER_SESSION = 10;
const WINDOW = 4;
const here = path.dirname(fileURLToPath(import.meta.url));

/** One load-generator child, with request/response over IPC. */
class Worker {
  private readonly waiters = new Set<{ evt: string; resolve: (e: WorkerEvent) => void; reject: (err: Error) => void }>();
  constructor(
    readonly child: ChildProcess,
    onEvent: (e: WorkerEvent) => void,
  ) {
    child.on('message', (e: WorkerEvent) => {
      onEvent(e);
      for (const w of this.waiters) {
        if (e.evt === 'error') w.reject(new Error(`load worker: ${e.message}`));
        else if (e.evt === w.evt) w.resolve(e);
      }
    });
    child.on('exit', (code) => {
      for (const w of this.waiters) w.reject(new Error(`load worker exited with ${code}`));
    });
  }

  send(cmd: WorkerCommand): void {
    if (this.child.connected) this.child.send(cmd);
  }

  request<E extends WorkerEvent['evt']>(cmd: WorkerCommand, evt: E, timeoutMs: number): Promise<Extract<WorkerEvent, { evt: E }>> {
    return new Promise((resolve, reject) => {
      const waiter = {
        evt,
        resolve: (e: WorkerEvent) => {
          clearTimeout(timer);
          this.waiters.delete(waiter);
          resolve(e as Extract<WorkerEvent, { evt: E }>);
        },
        reject: (err: Error) => {
          clearTimeout(timer);
          this.waiters.delete(waiter);
          reject(err);
        },
      };
      const timer = setTimeout(() => waiter.reject(new Error(`load worker: no ${evt} within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.add(waiter);
      this.send(cmd);
    });
  }

  async stop(): Promise<void> {
    this.send({ cmd: 'stop' });
    await waitFor(() => this.child.exitCode !== null || this.child.signalCode !== null, { timeoutMs: 10_000 }).catch(() =>
      this.child.kill('SIGKILL'),
    );
  }
}

function progress(text: string): void {
  process.stdout.write(`   ${text}\n`);
}

/** Event-loop lag of this (the simulator's) process: how late a 10 ms interval fires. */
function lagSampler(): { stop: () => number[] } {
  const samples: number[] = [];
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    samples.push(Math.max(0, now - last - 10));
    last = now;
  }, 10);
  return {
    stop: () => {
      clearInterval(timer);
      return samples;
    },
  };
}

function cpuMs(since: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1000;
}

/** What the simulator saw go wrong, for error messages. */
function closeSummary(sim: Simulator): string {
  const counts = new Map<string, number>();
  for (const e of sim.events()) {
    if (e.type !== 'close' && e.type !== 'error' && e.type !== 'conflict' && e.type !== 'stream-error') continue;
    const key = `${e.type} ${e.code ?? ''} ${e.detail ?? ''}`.trim();
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].map(([k, n]) => `${n}x ${k}`).join('; ');
}


/** Linux PSI "some" avg60: the share of time runnable tasks waited for a CPU (other load on the host). */
async function hostCpuPressure(): Promise<number | undefined> {
  try {
    const { readFile } = await import('node:fs/promises');
    const m = /some avg10=[\d.]+ avg60=([\d.]+)/.exec(await readFile('/proc/pressure/cpu', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

type SentEvent = Extract<WorkerEvent, { evt: 'sent' }>;

function checkSent(results: SentEvent[], sim: Simulator): { cpuMs: number } {
  const errors = results.reduce((n, r) => n + r.errors, 0);
  if (errors) {
    const first = results.find((r) => r.firstError)?.firstError;
    throw new Error(`${errors} sends failed, first: ${first}; simulator saw: ${closeSummary(sim)}`);
  }
  return { cpuMs: results.reduce((n, r) => n + r.cpuMs, 0) };
}

async function runSuite(sim: Simulator): Promise<Record<string, Figure>> {
  const phones = Array.from({ length: SESSIONS }, (_, i) => sim.createPhone({ number: String(15551000000 + i) }));
  const contacts = Array.from({ length: CONTACTS }, (_, i) =>
    sim.createContact({ number: String(15552000000 + i), receiptDelays: { deliveredMs: 0, readMs: null } }),
  );
  const perWorker = Math.ceil(SESSIONS / WORKERS);
  const counts = Array.from({ length: WORKERS }, (_, k) => Math.max(0, Math.min(perWorker, SESSIONS - k * perWorker)));
  const scans: Array<Promise<unknown>> = [];
  const workers = counts.map(
    (_, k) =>
      new Worker(
        fork(path.join(here, '..', 'wa-sim', 'bench', 'load-worker.ts'), [], {
          execArgv: ['--import', 'tsx'],
          stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        }),
        (e) => {
          if (e.evt === 'qr') scans.push(phones[k * perWorker + e.index]!.scanQr(e.qr));
        },
      ),
  );
  const all = <E extends WorkerEvent['evt']>(cmd: (k: number) => WorkerCommand, evt: E, timeoutMs: number) =>
    Promise.all(workers.map((w, k) => w.request(cmd(k), evt, timeoutMs))).catch((err: unknown) => {
      throw new Error(`${err instanceof Error ? err.message : String(err)}\nsimulator saw: ${closeSummary(sim)}`);
    });

  try {
    await all(() => ({ cmd: 'init', wsUrl: sim.wsUrl, rootKeyBase64: sim.rootPublicKeyBase64 }), 'ready', 30_000);
    const linkStarted = performance.now();
    await all((k) => ({ cmd: 'link', count: counts[k]! }), 'linked', 180_000);
    await Promise.all(scans);
    const linkMs = performance.now() - linkStarted;
    progress(`linked ${SESSIONS} devices in ${Math.round(linkMs)} ms`);
    const firstLogin = await all(() => ({ cmd: 'login' }), 'loggedIn', 300_000);
    const firstOpen = firstLogin.reduce((n, r) => n + r.open, 0);
    if (firstOpen !== SESSIONS) throw new Error(`only ${firstOpen}/${SESSIONS} sessions opened`);
    const firstLoginMs = Math.max(...firstLogin.map((r) => r.ms));
    progress(`first login of all in ${Math.round(firstLoginMs)} ms`);
    const relogin = await all(() => ({ cmd: 'relogin' }), 'loggedIn', 300_000);
    const reloginMs = Math.max(...relogin.map((r) => r.ms));
    await waitFor(() => sim.stats().openConnections === SESSIONS, { timeoutMs: 10_000, what: `${SESSIONS} open connections` });
    const concurrent = sim.stats().openConnections;
    progress(`stored-creds login of all in ${Math.round(reloginMs)} ms; ${concurrent} open`);

    const to = contacts.map((c) => c.jid);
    // Warm-up: the first message of each session fetches bundles and starts Signal sessions.
    checkSent(await all((k) => ({ cmd: 'send', perSession: 2, to, window: 1, runId: `w${k}` }), 'sent', 180_000), sim);

    const e2eRates: number[] = [];
    const senderCpuPerMsg: number[] = [];
    for (let run = 0; run < E2E_RUNS; run++) {
      const target = SESSIONS * E2E_PER_SESSION;
      const ackedBefore = sim.stats().messagesAcked;
      const started = performance.now();
      const sent = await all((k) => ({ cmd: 'send', perSession: E2E_PER_SESSION, to, window: WINDOW, runId: `e${run}w${k}` }), 'sent', 300_000);
      const { cpuMs: senderCpu } = checkSent(sent, sim);
      await waitFor(() => sim.stats().messagesAcked - ackedBefore >= target, { timeoutMs: 60_000, intervalMs: 5, what: 'all acks' });
      const wallMs = performance.now() - started;
      e2eRates.push(target / (wallMs / 1000));
      senderCpuPerMsg.push(senderCpu / target);
      progress(`sendMessage run ${run + 1}: ${target} acked in ${Math.round(wallMs)} ms (${Math.round(e2eRates.at(-1)!)}/s), sender CPU ${senderCpu.toFixed(0)} ms`);
    }

    const rates: number[] = [];
    const simCpuPerMsg: number[] = [];
    const simCpuShare: number[] = [];
    const loopP99: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      const target = SESSIONS * MESSAGES_PER_SESSION;
      await all((k) => ({ cmd: 'prepare', perSession: MESSAGES_PER_SESSION, to, runId: `${run}w${k}` }), 'prepared', 600_000);
      const ackedBefore = sim.stats().messagesAcked;
      const lag = lagSampler();
      const stopProfile = await startCpuProfile();
      const cpu = process.cpuUsage();
      const started = performance.now();
      const sent = await all(() => ({ cmd: 'blast', window: WINDOW, runId: String(run) }), 'sent', 300_000);
      const { cpuMs: senderCpu } = checkSent(sent, sim);
      await waitFor(() => sim.stats().messagesAcked - ackedBefore >= target, { timeoutMs: 60_000, intervalMs: 5, what: 'all acks' });
      const wallMs = performance.now() - started;
      const used = cpuMs(cpu);
      await stopProfile?.(`sim-${run}`);
      const lags = lag.stop();
      rates.push(target / (wallMs / 1000));
      simCpuPerMsg.push(used / target);
      simCpuShare.push(used / wallMs);
      loopP99.push(percentile(lags, 99));
      progress(
        `capacity run ${run + 1}: ${target} acked in ${Math.round(wallMs)} ms (${Math.round(rates.at(-1)!)}/s); ` +
          `simulator CPU ${used.toFixed(0)} ms (${Math.round((100 * used) / wallMs)}% of a core), senders ${senderCpu.toFixed(0)} ms; ` +
          `loop lag p99 ${percentile(lags, 99).toFixed(0)} ms, max ${Math.max(...lags).toFixed(0)} ms`,
      );
    }
    // Every message decrypted by its contact (receipts are sent at once, after the decrypt).
    const expected = SESSIONS * (2 + E2E_RUNS * E2E_PER_SESSION + RUNS * MESSAGES_PER_SESSION);
    await waitFor(() => contacts.reduce((n, c) => n + c.received().length, 0) >= expected, {
      timeoutMs: 30_000,
      what: 'contacts decrypted every message',
    });
    const capacity = 1000 / median(simCpuPerMsg);
    const pressure = await hostCpuPressure();
    return {
      simConcurrentSessions: { value: concurrent, target: '>= 60', note: 'logged in and open at once' },
      simLinkAllMs: { value: Math.round(linkMs), note: `${SESSIONS} QR links in parallel` },
      simFirstLoginAllMs: { value: Math.round(firstLoginMs), note: 'first logins incl. 812 pre-key uploads each' },
      simLoginAllMs: { value: Math.round(reloginMs), note: `${SESSIONS} stored-creds logins at once, until all open` },
      simAckedMessagesPerSec: {
        value: Math.round(median(rates)),
        target: '>= 500',
        note: `median of ${RUNS} runs x ${SESSIONS * MESSAGES_PER_SESSION} msgs over ${SESSIONS} sockets; stanzas pre-encrypted by Baileys`,
      },
      simCpuShareOfCoreDuringRuns: { value: median(simCpuShare), note: 'simulator CPU / wall time in capacity runs (1 = a full core)' },
      simCpuMsPerMessage: { value: median(simCpuPerMsg), note: 'simulator CPU per acked message (noise, ack, 2 Signal decrypts, receipt)' },
      simAckCapacityPerCpuSec: { value: Math.round(capacity), note: 'acks per second of simulator CPU: its ceiling on one core' },
      simSendMessageAckedPerSec: {
        value: Math.round(median(e2eRates)),
        note: `median of ${E2E_RUNS} runs with real sendMessage; capped by Baileys sender CPU, not the simulator`,
      },
      simSenderCpuMsPerMessage: { value: median(senderCpuPerMsg), note: 'Baileys sendMessage CPU per message (child processes)' },
      simEventLoopP99Ms: { value: median(loopP99), note: 'simulator event-loop delay p99 during capacity runs' },
      simRssMb: { value: Math.round(process.memoryUsage().rss / 1e6), note: `simulator process with ${SESSIONS} sessions` },
      simDecryptErrors: { value: sim.decryptErrors().length, target: '0' },
      ...(pressure === undefined
        ? {}
        : { simHostCpuPressurePct: { value: pressure, note: 'PSI cpu some avg60 at the end: time tasks waited for a CPU (other load)' } }),
    };
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
  }
}

export const simBench: BenchSuite = {
  name: 'sim',
  needsEmulators: false,
  async run() {
    const sim = await startSimulator({ controlPort: null });
    // libsignal reports every session change on console.info.
    const info = console.info;
    console.info = () => {};
    try {
      return await runSuite(sim);
    } finally {
      console.info = info;
      await sim.stop();
    }
  },
};
