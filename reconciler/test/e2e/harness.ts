/**
 * End-to-end harness: the real Firestore emulator (an isolated project per test file), the
 * simulator, and reconcilers configured exactly as in production through loadConfig().
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startSimulator, trustSimulatorRoot, type Simulator, type SimulatorOptions } from '@wafleet/wa-sim';
import { getApps, initializeApp } from 'firebase-admin/app';
import { getFirestore, Timestamp, type Firestore } from 'firebase-admin/firestore';
import { ReconcilerApp } from '../../src/app.ts';
import { loadConfig } from '../../src/config.ts';
import { createLogger, routeConsoleToLogger } from '../../src/log.ts';
import type { LevelWithSilent } from 'pino';
import type { SessionTimeouts } from '../../src/session/session-driver.ts';
import type { LatestVersionFetcher } from '../../src/session/wa-version.ts';
import { waitFor } from '../helpers.ts';

export const TEST_TIMEOUTS: Partial<SessionTimeouts> = {
  connectTimeoutMs: 5_000,
  keepAliveIntervalMs: 2_000,
  defaultQueryTimeoutMs: 5_000,
  connectDeadlineMs: 4_000,
  zombieAfterMs: 30_000,
};

export interface Harness {
  sim: Simulator;
  db: Firestore;
  projectId: string;
  startReconciler(opts?: { instanceId?: string; sessionsPath?: string; env?: Record<string, string>; timeouts?: Partial<SessionTimeouts>; fetchLatestWaVersion?: LatestVersionFetcher }): Promise<ReconcilerApp & { sessionsPath: string }>;
  newSessionsDir(): Promise<string>;
  createAccount(id: string, fields?: Record<string, unknown>): Promise<void>;
  status(id: string): Promise<Record<string, unknown> | undefined>;
  /** The lease holder of every account that has one. */
  leaseHolders(): Promise<Map<string, string>>;
  waitForPhase(id: string, phase: string | ((s: Record<string, unknown>) => boolean), timeoutMs?: number): Promise<Record<string, unknown>>;
  /** The reconciler's last log lines that name `accountId` (all lines if undefined), for failure messages. */
  recentLog(accountId?: string, lines?: number): string;
  /** Every log line since the harness started that matches `pattern` (all of them, not only recent ones). */
  logLinesMatching(pattern: RegExp): string[];
  close(): Promise<void>;
}

/** Keeps the last lines a logger wrote, to explain a timed-out wait. */
class LogRecorder {
  private readonly lines: string[] = [];
  /** Warnings and errors are few: all of them are kept, for assertions over the whole run. */
  private readonly warnings: string[] = [];
  constructor(private readonly echo: boolean) {}
  write(line: string): void {
    this.lines.push(line.trimEnd());
    if (this.lines.length > 2000) this.lines.splice(0, 500);
    if (/"level":"(warn|error|fatal)"/.test(line) && this.warnings.length < 100_000) this.warnings.push(line.trimEnd());
    if (this.echo) process.stdout.write(line);
    // The listener that missed an account (an emulator listener that stops delivering, seen a few
    // times as a reconciler that never saw accounts created after its start): said where CI shows it.
    else if (line.includes('accounts listener missed changes')) process.stderr.write(`[harness] ${line}`);
  }
  matching(pattern: RegExp): string[] {
    return [...new Set([...this.warnings, ...this.lines])].filter((l) => pattern.test(l));
  }
  recent(accountId: string | undefined, n = 40): string {
    const needle = accountId === undefined ? null : `"accountId":"${accountId}"`;
    const picked = needle ? this.lines.filter((l) => l.includes(needle)) : this.lines;
    return picked.slice(-n).join('\n');
  }
}

/**
 * `projectId` defaults to one of the file's own; a test of the callables passes the project the
 * Functions emulator serves (and must then have that project to itself).
 */
export async function startHarness(name: string, simOptions: SimulatorOptions = {}, opts: { projectId?: string } = {}): Promise<Harness> {
  const projectId = opts.projectId ?? `demo-e2e-${name}-${process.pid}`.slice(0, 30).replace(/-$/, '');
  const app = getApps().find((a) => a.name === projectId) ?? initializeApp({ projectId }, projectId);
  const db = getFirestore(app);
  const sim = await startSimulator({ controlPort: null, ...simOptions });
  const restoreTrust = trustSimulatorRoot(sim.rootPublicKey);
  const dirs: string[] = [];
  const apps: ReconcilerApp[] = [];
  // A flight recorder: the reconciler's lines are kept (not printed) so that a wait that times out
  // can say what the reconciler was doing; WAFLEET_TEST_LOG=debug prints them as well.
  const recorder = new LogRecorder(process.env.WAFLEET_TEST_LOG !== undefined && process.env.WAFLEET_TEST_LOG !== 'silent');
  const log = createLogger({ level: (process.env.WAFLEET_TEST_LOG ?? 'info') as LevelWithSilent, destination: recorder });
  // As in production: libsignal's console lines (session keys) go through the scrubbing logger,
  // here the simulator's contacts' as well as the reconciler's.
  const restoreConsole = routeConsoleToLogger(log);

  const h: Harness = {
    sim,
    db,
    projectId,
    recentLog: (accountId, lines) => recorder.recent(accountId, lines),
    logLinesMatching: (pattern) => recorder.matching(pattern),
    async newSessionsDir() {
      const dir = await mkdtemp(path.join(tmpdir(), 'wafleet-e2e-'));
      dirs.push(dir);
      return dir;
    },
    async startReconciler(opts = {}) {
      const sessionsPath = opts.sessionsPath ?? (await h.newSessionsDir());
      const config = await loadConfig({
        NODE_ENV: 'test',
        FIRESTORE_EMULATOR_HOST: process.env.FIRESTORE_EMULATOR_HOST,
        GCLOUD_PROJECT: projectId,
        SESSIONS_PATH: sessionsPath,
        INSTANCE_ID: opts.instanceId ?? 'rec-a',
        HTTP_PORT: '0',
        HTTP_HOST: '127.0.0.1',
        WA_SOCKET_URL: sim.wsUrl,
        WA_NOISE_ROOT_PUBKEY: sim.rootPublicKeyBase64,
        LEASE_TTL_MS: '10000',
        LEASE_RENEW_MS: '2000',
        CONNECT_INTERVAL_MS: '50',
        CONNECT_CONCURRENCY: '4',
        SHUTDOWN_TIMEOUT_MS: '10000',
        LOG_LEVEL: 'warn',
        ...opts.env,
      });
      // The accounts are re-read every 20 s (production: 5 min): the watcher's own repair of a
      // listener that missed a change, which then costs a test seconds instead of its timeout.
      const rec = new ReconcilerApp({ config, log, timeouts: { ...TEST_TIMEOUTS, ...opts.timeouts }, backupDebounceMs: 200, resyncEveryMs: 20_000, ...(opts.fetchLatestWaVersion ? { fetchLatestWaVersion: opts.fetchLatestWaVersion } : {}) });
      apps.push(rec);
      await rec.start();
      return Object.assign(rec, { sessionsPath });
    },
    async createAccount(id, fields = {}) {
      const now = Timestamp.now();
      await db.doc(`accounts/${id}`).set({ displayName: id, desiredState: 'connected', createdAt: now, updatedAt: now, updatedBy: 'test', ...fields });
    },
    async status(id) {
      return (await db.doc(`accountStatus/${id}`).get()).data();
    },
    async leaseHolders() {
      const snap = await db.collection('leases').get();
      return new Map(snap.docs.filter((d) => d.get('holder')).map((d) => [d.id, d.get('holder') as string]));
    },
    async waitForPhase(id, phase, timeoutMs = 45_000) {
      const match = typeof phase === 'string' ? (s: Record<string, unknown>) => s.phase === phase : phase;
      let last: unknown;
      try {
        return await waitFor(
          async () => {
            const s = await h.status(id);
            last = s;
            return s && match(s) ? s : undefined;
          },
          { timeoutMs, intervalMs: 100, label: `${id} ${typeof phase === 'string' ? phase : 'condition'}` },
        );
      } catch (err) {
        throw new Error(`${(err as Error).message}; last status: ${JSON.stringify(last)}\nreconciler log for ${id}:\n${h.recentLog(id)}`);
      }
    },
    async close() {
      await Promise.all(apps.map((a) => a.stop('test over')));
      restoreTrust();
      await sim.stop();
      restoreConsole();
      await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
    },
  };
  return h;
}

/** Reads the QR the reconciler published and has the phone scan it, as a person would. */
export async function scanPublishedQr(h: Harness, accountId: string, phoneNumber: string, timeoutMs = 45_000): Promise<void> {
  const qr = await waitFor(async () => (await h.db.doc(`accountQr/${accountId}`).get()).get('qr') as string | undefined, { timeoutMs, intervalMs: 100, label: `QR of ${accountId}` }).catch(async (err: Error) => {
    const [status, lease] = await Promise.all([h.status(accountId), h.db.doc(`leases/${accountId}`).get().then((d) => d.data())]).catch(() => [undefined, undefined]);
    // Nothing about the account at all: what the reconciler last said about anything.
    const own = h.recentLog(accountId);
    throw new Error(`${err.message}; status: ${JSON.stringify(status)}; lease: ${JSON.stringify(lease)}\nreconciler log for ${accountId}:\n${own || `(none; its last lines:)\n${h.recentLog(undefined, 30)}`}`);
  });
  const phone = h.sim.phones().find((p) => p.number === phoneNumber) ?? h.sim.createPhone({ number: phoneNumber });
  await phone.scanQr(qr);
}
