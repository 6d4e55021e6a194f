/**
 * The one-instance ceiling: how the cost of one reconciler grows with its fleet. For each size N
 * (CEILING_BENCH_SIZES, default 30,60,100) a fresh simulator, sessions directory and Firestore
 * project, one reconciler child process with MAX_ACCOUNTS=N, default pacing and timeouts:
 * link N accounts at once → an idle window with no traffic (VmRSS and CPU from /proc) → SIGTERM
 * and a new process on the same disk, timed from spawn until all N are connected again.
 *
 * The figures are those of the largest size; every note lists all sizes, so the growth reads
 * from one line. Sizes run one after another, never side by side: each must have the machine.
 */
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { type DocumentSnapshot, type Firestore, Timestamp } from 'firebase-admin/firestore';
import { freePort } from '../tools/dev/ports.ts';
import { spawnReconciler, type ReconcilerProcess } from '../tools/dev/reconciler-process.ts';
import { type Simulator, waitFor } from '../wa-sim/src/index.ts';
import { type BenchSuite, type Figure, median, reconcilerEnv, withBenchEnvironment } from './suite.ts';

const IDLE_MS = Number(process.env.CEILING_BENCH_IDLE_MS ?? 30_000);
// Writes still arriving right after linking (backups, history-sync mappings) are not idle cost.
const QUIET_MS = 5_000;
const WATCHED = ['accountStatus', 'accountQr', 'sessionBackups', 'incidents'] as const;

function sizes(): number[] {
  const raw = process.env.CEILING_BENCH_SIZES ?? '30,60,100';
  const list = [...new Set(raw.split(',').map((s) => Number(s.trim())))].sort((a, b) => a - b);
  if (list.some((n) => !Number.isInteger(n) || n < 1 || n > 1000) || list.length < 2) {
    throw new Error(`CEILING_BENCH_SIZES must list at least two distinct account counts (1..1000, as MAX_ACCOUNTS allows), got ${JSON.stringify(raw)}`);
  }
  return list;
}

function progress(text: string): void {
  process.stdout.write(`   ${text}\n`);
}

/**
 * A collection followed with onSnapshot. A condition over `docs` can only turn true on a snapshot,
 * so `lastSnapshotAt` when it first holds is when it became observable (no polling error).
 */
interface Watch {
  readonly docs: Map<string, DocumentSnapshot>;
  lastSnapshotAt: number;
  /** 0 until something changes after the first snapshot. */
  lastChangeAt: number;
  failure: Error | null;
  stop: () => void;
}

function watch(db: Firestore, name: string): Watch {
  const w: Watch = { docs: new Map(), lastSnapshotAt: 0, lastChangeAt: 0, failure: null, stop: () => undefined };
  w.stop = db.collection(name).onSnapshot(
    (snap) => {
      const at = Date.now();
      const changes = snap.docChanges();
      for (const c of changes) {
        if (c.type === 'removed') w.docs.delete(c.doc.id);
        else w.docs.set(c.doc.id, c.doc);
      }
      if (w.lastSnapshotAt && changes.length) w.lastChangeAt = at;
      w.lastSnapshotAt = at;
    },
    (err) => (w.failure = err),
  );
  return w;
}

/** VmRSS in MB, read as reconciler.bench.ts reads it. */
async function rssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1]);
  if (!Number.isFinite(kb)) throw new Error(`no VmRSS for pid ${pid}`);
  return kb / 1024;
}

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of the process in seconds (fields 14 and 15 of /proc/<pid>/stat). */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // comm (field 2) may hold spaces and parentheses: count from the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(rest[11]) + Number(rest[12]);
  if (!Number.isFinite(ticks)) throw new Error(`unreadable /proc/${pid}/stat`);
  return ticks / CLK_TCK;
}

interface SizeResult {
  n: number;
  rssMb: number;
  rssRange: [number, number];
  idleCpuPct: number;
  restartMs: number;
  linkMs: number;
  quiet: boolean;
  load: string;
}

async function measureSize(n: number, db: Firestore, projectId: string, sim: Simulator, sessionsPath: string): Promise<SizeResult> {
  // The project id repeats across sizes (one per bench process); the previous size deleted it.
  for (const c of ['accounts', 'accountStatus', 'leases', 'reconcilers']) {
    if (!(await db.collection(c).limit(1).get()).empty) throw new Error(`Firestore project ${projectId} is not clean before size ${n}: ${c} has documents`);
  }
  const ids = Array.from({ length: n }, (_, i) => `ceil-${String(i + 1).padStart(3, '0')}`);
  const watches = Object.fromEntries(WATCHED.map((c) => [c, watch(db, c)])) as Record<(typeof WATCHED)[number], Watch>;
  const status = watches.accountStatus;
  const qrs = watches.accountQr;
  const httpPort = await freePort();
  const env = reconcilerEnv({ projectId, sim, sessionsPath, httpPort, extra: { MAX_ACCOUNTS: String(n) } });
  let rec: ReconcilerProcess = spawnReconciler({ env });

  const phase = (id: string) => status.docs.get(id)?.get('phase') as string | undefined;
  let counts = (id: string) => phase(id) === 'connected';
  const stuck = () => {
    const behind = ids.filter((id) => !counts(id));
    const shown = behind.slice(0, 20).map((id) => `${id}=${phase(id) ?? 'none'}/${status.docs.get(id)?.get('reason') ?? '-'}`);
    const accounts = behind.length ? `${behind.length} of ${n} not (freshly) connected: ${shown.join(' ')}${behind.length > 20 ? ' …' : ''}` : `all ${n} connected`;
    return `${accounts}\nreconciler log (last lines, LOG_LEVEL warn):\n${rec.tail(30) || '(none)'}`;
  };
  /** waitFor, but failing at once when the reconciler exits or a listener breaks, with its log. */
  const until = async <T>(predicate: () => T | undefined | null | false | Promise<T | undefined | null | false>, timeoutMs: number, what: string): Promise<T> => {
    const proc = rec;
    const guarded = () => {
      const broken = WATCHED.map((c) => watches[c].failure).find(Boolean);
      if (broken) throw broken;
      return predicate();
    };
    const exited = proc.exited.then((e) => Promise.reject(new Error(`the reconciler exited (${JSON.stringify(e)}) while waiting for ${what}`)));
    try {
      return await Promise.race([waitFor(guarded, { timeoutMs, intervalMs: 50, what }), exited]);
    } catch (err) {
      throw new Error(`size ${n}: ${(err as Error).message}\n${stuck()}`);
    } finally {
      exited.catch(() => undefined);
    }
  };
  const running = () => rec.child.exitCode === null && rec.child.signalCode === null;
  const readyz = async () => (await fetch(`http://127.0.0.1:${httpPort}/readyz`, { signal: AbortSignal.timeout(2_000) })).ok;

  try {
    await until(readyz, 60_000, 'the reconciler to be ready');

    // ---- link all N at once, as fleet.bench.ts does: every QR scanned by its own phone
    const linkStarted = Date.now();
    // Generous for a loaded 2-core machine: N sessions share one event loop and two login slots.
    const linkDeadline = linkStarted + 120_000 + 2_000 * n;
    const now = Timestamp.now();
    await Promise.all(ids.map((id) => db.doc(`accounts/${id}`).set({ displayName: id, desiredState: 'connected', createdAt: now, updatedAt: now, updatedBy: 'bench' })));
    const phones = ids.map((_, i) => sim.createPhone({ number: `1555007${String(i).padStart(4, '0')}` }));
    await Promise.all(
      ids.map(async (id, i) => {
        let tried: string | undefined;
        let lastError: unknown;
        // A QR ref can rotate or expire between the snapshot and the scan: scan the next one.
        for (;;) {
          const remaining = linkDeadline - Date.now();
          if (remaining <= 0) throw new Error(`size ${n}: no successful QR scan for ${id} (last error: ${String(lastError)})\n${stuck()}`);
          const next = () => {
            if (phase(id) === 'connected') return 'linked';
            const current = qrs.docs.get(id)?.get('qr') as string | undefined;
            return current !== tried && current;
          };
          const qr = await until(next, remaining, `a fresh QR for ${id}`);
          if (qr === 'linked') return;
          tried = qr;
          try {
            await phones[i]!.scanQr(qr);
            return;
          } catch (err) {
            lastError = err;
          }
        }
      }),
    );
    await until(() => ids.every((id) => phase(id) === 'connected'), Math.max(1, linkDeadline - Date.now()), `all ${n} accounts connected after linking`);
    const linkMs = Date.now() - linkStarted;
    progress(`size ${n}: linked and connected in ${(linkMs / 1000).toFixed(1)} s`);

    // ---- idle window: no traffic; VmRSS at 1 Hz and the CPU the process used over the window
    const lastWrite = () => Math.max(...WATCHED.map((c) => watches[c].lastChangeAt));
    const quiet = await until(() => Date.now() - lastWrite() >= QUIET_MS, 60_000 + 500 * n, `Firestore writes to pause for ${QUIET_MS} ms`).then(
      () => true,
      (err: Error) => {
        if (!running()) throw err;
        // Still measured: a fleet that never goes quiet is itself a finding, flagged in the note.
        progress(`size ${n}: writes did not pause before the window (${err.message.split('\n')[0]})`);
        return false;
      },
    );
    const pid = rec.pid;
    const samples: number[] = [];
    let windowStart = 0;
    let cpuBefore = 0;
    let cpuAfter = 0;
    let wallS = 0;
    try {
      cpuBefore = await cpuSeconds(pid);
      windowStart = Date.now();
      const windowEnd = windowStart + IDLE_MS;
      // The window is the measured interval itself, not a wait for something to happen.
      while (Date.now() < windowEnd) {
        samples.push(await rssMb(pid));
        await new Promise((r) => setTimeout(r, Math.min(1_000, Math.max(0, windowEnd - Date.now()))));
      }
      cpuAfter = await cpuSeconds(pid);
      wallS = (Date.now() - windowStart) / 1000;
      samples.push(await rssMb(pid));
    } catch (err) {
      if (running()) throw err;
      throw new Error(`size ${n}: the reconciler exited during the idle window (${(err as Error).message})\n${stuck()}`);
    }
    const load = os.loadavg().map((l) => l.toFixed(2)).join('/');
    if (ids.some((id) => phase(id) !== 'connected')) throw new Error(`size ${n}: accounts dropped during the idle window\n${stuck()}`);
    const idleCpuPct = ((cpuAfter - cpuBefore) / wallS) * 100;
    const rss = median(samples);
    progress(`size ${n}: idle ${wallS.toFixed(1)} s: VmRSS median ${rss.toFixed(0)} MB (${Math.min(...samples).toFixed(0)}–${Math.max(...samples).toFixed(0)}), CPU ${idleCpuPct.toFixed(1)} % of one core; load ${load}`);

    // ---- SIGTERM, then a new process on the same disk until all N are connected again
    const exit = await rec.stop(40_000);
    if (exit.killed || exit.code !== 0) throw new Error(`size ${n}: the reconciler did not stop cleanly on SIGTERM: ${JSON.stringify(exit)}\n${rec.tail(30)}`);
    rec = spawnReconciler({ env });
    const spawned = rec.spawnedAt;
    // A status left over from the first process must not count: the login has to be this one's.
    const fresh = (id: string) => {
      const at = status.docs.get(id)?.get('lastConnectedAt') as Timestamp | null | undefined;
      return phase(id) === 'connected' && at != null && at.toMillis() >= spawned;
    };
    counts = fresh;
    const allAt = await until(() => ids.every(fresh) && status.lastSnapshotAt, 60_000 + 1_500 * n, `all ${n} connected after the restart`);
    const restartMs = allAt - spawned;
    if (qrs.docs.size) throw new Error(`size ${n}: the restart published ${qrs.docs.size} QR codes (sessions were not restored from disk)\n${rec.tail(30)}`);
    progress(`size ${n}: SIGTERM restart, spawn → all ${n} connected ${restartMs} ms`);

    return { n, rssMb: rss, rssRange: [Math.min(...samples), Math.max(...samples)], idleCpuPct, restartMs, linkMs, quiet, load };
  } finally {
    for (const w of Object.values(watches)) w.stop();
    if (rec.child.exitCode === null && rec.child.signalCode === null) await rec.stop(40_000);
  }
}

function figures(results: SizeResult[]): Record<string, Figure> {
  const first = results[0]!;
  const last = results.at(-1)!;
  const cpus = os.cpus().length;
  const load = `load avg 1/5/15 min at the end of each idle window: ${results.map((r) => `${r.n}: ${r.load}`).join(', ')} on ${cpus} CPUs`;
  const unquiet = results.filter((r) => !r.quiet).map((r) => r.n);
  const caveat = unquiet.length ? `; writes never paused ${QUIET_MS / 1000} s before the window at ${unquiet.join(', ')}` : '';
  const ratio = (pick: (r: SizeResult) => number) => (pick(first) > 0 ? `; ratio ${last.n}/${first.n} = ${(pick(last) / pick(first)).toFixed(1)}×` : '');
  const list = (pick: (r: SizeResult) => number, unit: string, digits = 0) => results.map((r) => `${r.n}: ${pick(r).toFixed(digits)}${unit}`).join(', ');
  const slope = (last.rssMb - first.rssMb) / (last.n - first.n);
  const window = `${Math.round(IDLE_MS / 1000)} s idle window after all linked and writes paused ${QUIET_MS / 1000} s`;
  return {
    ceilingRssMb: {
      value: Math.round(last.rssMb),
      note: `reconciler VmRSS at ${last.n} accounts, median of 1 Hz samples over a ${window}, one instance, under tsx; ${list((r) => r.rssMb, ' MB')}${ratio((r) => r.rssMb)}${caveat}; ${load}`,
    },
    ceilingIdleCpuPct: {
      value: Math.round(last.idleCpuPct * 10) / 10,
      note: `idle CPU as % of ONE core at ${last.n} accounts: (utime+stime) delta from /proc/<pid>/stat over the ${window}, ÷ wall time (100 = one core busy); ${list((r) => r.idleCpuPct, ' %', 1)}${ratio((r) => r.idleCpuPct)}${caveat}; ${load}`,
    },
    ceilingRestartAllConnectedMs: {
      value: Math.round(last.restartMs),
      note: `SIGTERM, new process on the same disk: spawn → all ${last.n} connected with lastConnectedAt after the spawn (one restart per size, default pacing); ${list((r) => r.restartMs, ' ms')}${ratio((r) => r.restartMs)}; first link of all at once took ${list((r) => r.linkMs / 1000, ' s', 1)}; ${load}`,
    },
    ceilingRssMbPerAccount: {
      value: Math.round(slope * 100) / 100,
      note: `slope of the idle VmRSS between ${first.n} and ${last.n} accounts: (${last.rssMb.toFixed(0)} − ${first.rssMb.toFixed(0)}) MB / ${last.n - first.n}; extrapolated base with no accounts ≈ ${(first.rssMb - slope * first.n).toFixed(0)} MB; ${load}`,
    },
  };
}

export const ceilingBench: BenchSuite = {
  name: 'ceiling',
  needsEmulators: true,
  async run() {
    const list = sizes();
    const results: SizeResult[] = [];
    // One environment per size: a new simulator, sessions directory and (deleted afterwards) project.
    for (const n of list) results.push(await withBenchEnvironment('ceiling', 1, ({ db, projectId, sim, dirs }) => measureSize(n, db, projectId, sim, dirs[0]!)));
    return figures(results);
  },
};
