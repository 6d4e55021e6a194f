import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { deleteApp, initializeApp } from 'firebase-admin/app';
import { getFirestore, type Firestore } from 'firebase-admin/firestore';
import { startSimulator, type Simulator } from '../wa-sim/src/index.ts';
/**
 * A benchmark suite measures one part of the system and returns named figures.
 * Keys carry their unit (e.g. `simAckedMessagesPerSec`, `restartAllConnectedMs`),
 * because they land side by side in bench/results/latest.json.
 */
export interface Figure {
  value: number;
  /** A target the issue asked for, to print beside the value. */
  target?: string;
  /** Free text such as "median of 5 runs". */
  note?: string;
}

export interface BenchSuite {
  name: string;
  /** Whether the suite needs the Firebase emulators (bench/run.ts is then run under emulators:exec). */
  needsEmulators: boolean;
  run(): Promise<Record<string, Figure>>;
}

export function median(values: number[]): number {
  if (values.length === 0) throw new Error('median of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) throw new Error('percentile of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

/**
 * The common frame of suites that run against the emulator and the simulator: a Firestore project
 * of the suite's own (deleted afterwards), a fresh simulator, scratch directories, and libsignal's
 * console.info chatter silenced for the duration.
 */
export async function withBenchEnvironment<T>(
  suite: string,
  dirCount: number,
  work: (env: { db: Firestore; projectId: string; sim: Simulator; dirs: string[] }) => Promise<T>,
): Promise<T> {
  const host = process.env.FIRESTORE_EMULATOR_HOST;
  if (!host) throw new Error(`the ${suite} suite needs the Firestore emulator: run it with \`npm run bench -- ${suite}\``);
  // A project of its own: nothing else in the emulator sees or disturbs these documents.
  const projectId = `demo-bench-${suite.slice(0, 8)}-${process.pid}`;
  const app = initializeApp({ projectId }, projectId);
  const sim = await startSimulator({ controlPort: null });
  const dirs = await Promise.all(Array.from({ length: dirCount }, () => mkdtemp(path.join(tmpdir(), `wafleet-bench-${suite}-`))));
  // libsignal reports every session change on console.info.
  const info = console.info;
  console.info = () => {};
  try {
    return await work({ db: getFirestore(app), projectId, sim, dirs });
  } finally {
    console.info = info;
    await sim.stop();
    await deleteApp(app);
    await fetch(`http://${host}/emulator/v1/projects/${projectId}/databases/(default)/documents`, { method: 'DELETE', signal: AbortSignal.timeout(10_000) }).catch(() => undefined);
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  }
}

/** A reconciler child's whole environment, as on a VM, against this bench's emulator and simulator. */
export function reconcilerEnv(o: { projectId: string; sim: Simulator; sessionsPath: string; httpPort: number; extra?: NodeJS.ProcessEnv }): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    FIRESTORE_EMULATOR_HOST: process.env.FIRESTORE_EMULATOR_HOST,
    GCLOUD_PROJECT: o.projectId,
    NODE_ENV: 'development',
    SESSIONS_PATH: o.sessionsPath,
    HTTP_HOST: '127.0.0.1',
    HTTP_PORT: String(o.httpPort),
    WA_SOCKET_URL: o.sim.wsUrl,
    WA_NOISE_ROOT_PUBKEY: o.sim.rootPublicKeyBase64,
    LOG_LEVEL: 'warn',
    ...o.extra,
  };
}
