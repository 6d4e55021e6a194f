/** A reconciler as a real child process (reconciler/src/main.ts), for signal and crash tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { Simulator } from '@wafleet/wa-sim';

const MAIN = path.resolve(import.meta.dirname, '../../src/main.ts');

export interface ReconcilerProcess {
  child: ChildProcess;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  kill(signal: NodeJS.Signals): void;
}

export function spawnReconciler(opts: { projectId: string; sim: Simulator; sessionsPath: string; instanceId: string; env?: Record<string, string> }): ReconcilerProcess {
  let out = '';
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN], {
    env: {
      PATH: process.env.PATH,
      NODE_ENV: 'test',
      FIRESTORE_EMULATOR_HOST: process.env.FIRESTORE_EMULATOR_HOST,
      GCLOUD_PROJECT: opts.projectId,
      SESSIONS_PATH: opts.sessionsPath,
      INSTANCE_ID: opts.instanceId,
      HTTP_PORT: '0',
      HTTP_HOST: '127.0.0.1',
      WA_SOCKET_URL: opts.sim.wsUrl,
      WA_NOISE_ROOT_PUBKEY: opts.sim.rootPublicKeyBase64,
      LEASE_TTL_MS: '10000',
      LEASE_RENEW_MS: '2000',
      SHUTDOWN_TIMEOUT_MS: '15000',
      LOG_LEVEL: 'info',
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })),
  );
  return { child, output: () => out, exited, kill: (s) => child.kill(s) };
}

/** kill -9 every process still running, and wait until each has exited (test teardown). */
export async function killAll(procs: Iterable<ReconcilerProcess>): Promise<void> {
  const all = [...procs];
  for (const p of all) p.kill('SIGKILL');
  await Promise.all(all.map((p) => p.exited));
}

/** Accounts per holder, from a map of account → lease holder (harness `leaseHolders`). */
export function countBy(holders: Map<string, string>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of holders.values()) out[v] = (out[v] ?? 0) + 1;
  return out;
}

/** The last `n` non-Baileys lines of each process, to explain a wait that timed out. */
export function tails(procs: Map<string, ReconcilerProcess>, n: number): string {
  return [...procs.entries()].map(([id, p]) => `--- ${id}\n${p.output().split('\n').filter((l) => !l.includes('"component":"baileys"')).slice(-n).join('\n')}`).join('\n');
}
