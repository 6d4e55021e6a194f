/**
 * The reconciler as a child process (`node --import tsx reconciler/src/main.ts`), exactly as it
 * runs on a VM: configured by environment only, stopped by SIGTERM. Used by the dev stack and by
 * the reconciler benchmark.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const MAIN = path.join(root, 'reconciler', 'src', 'main.ts');
const TAIL_LINES = 200;

export interface ReconcilerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Date.now() when the process was seen to exit. */
  at: number;
}

export interface ReconcilerProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Date.now() just before the spawn. */
  readonly spawnedAt: number;
  readonly exited: Promise<ReconcilerExit>;
  /** The last lines it printed, for error messages. */
  tail(lines?: number): string;
  /**
   * SIGTERM and wait for the exit; SIGKILL when it has not exited after `timeoutMs` (main's own
   * bound is SHUTDOWN_TIMEOUT_MS + 5 s, so the default leaves it room to finish on its own).
   */
  stop(timeoutMs?: number): Promise<ReconcilerExit & { killed: boolean }>;
}

/** `env` is the child's whole environment: nothing of the caller's leaks in unless passed. */
export function spawnReconciler(opts: { env: NodeJS.ProcessEnv; onLine?: (line: string, stream: 'stdout' | 'stderr') => void }): ReconcilerProcess {
  const lines: string[] = [];
  const spawnedAt = Date.now();
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN], { cwd: root, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
  for (const stream of ['stdout', 'stderr'] as const) {
    createInterface({ input: child[stream]! }).on('line', (line) => {
      lines.push(line);
      if (lines.length > TAIL_LINES) lines.shift();
      opts.onLine?.(line, stream);
    });
  }
  const exited = new Promise<ReconcilerExit>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() }));
  });
  let stopping: Promise<ReconcilerExit & { killed: boolean }> | null = null;
  return {
    child,
    pid: child.pid ?? 0,
    spawnedAt,
    exited,
    tail: (n = 40) => lines.slice(-n).join('\n'),
    stop(timeoutMs = 30_000) {
      stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), timeoutMs)));
        const first = await Promise.race([exited, late]);
        clearTimeout(timer);
        if (first !== 'late') return { ...first, killed: false };
        child.kill('SIGKILL');
        return { ...(await exited), killed: true };
      })();
      return stopping;
    },
  };
}

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
// Cloud Logging's fields (log.ts) say nothing a person at a terminal needs; insertId differs on every line.
const QUIET_KEYS = new Set(['level', 'severity', 'time', 'pid', 'hostname', 'message', 'msg', 'serviceContext', 'stack_trace', 'logging.googleapis.com/insertId', 'logging.googleapis.com/labels']);

/**
 * Writes the reconciler's pino JSON lines as `LEVEL message key=value …` for a terminal, folding
 * lines that repeat one just shown for other accounts: thirty sessions otherwise print every
 * Baileys warning thirty times. The first line shows at once; `foldMs` later one line says how
 * many accounts repeated it. A different code or reason is a different line and always shows.
 */
export class LogFolder {
  private readonly open = new Map<string, { msg: string; accounts: string[]; timer: NodeJS.Timeout }>();

  constructor(
    private readonly write: (text: string) => void,
    private readonly foldMs = 30_000,
  ) {}

  line(raw: string): void {
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(raw) as Record<string, unknown>;
    } catch {
      return this.write(raw);
    }
    if (typeof entry !== 'object' || entry === null) return this.write(raw);
    const level = LEVELS[Number(entry.level)] ?? String(entry.level ?? '').toUpperCase();
    const text = entry.message ?? entry.msg;
    const field = ([k, v]: [string, unknown]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`;
    const fields = Object.entries(entry).filter(([k]) => !QUIET_KEYS.has(k));
    const key = [level, text, ...fields.filter(([k]) => k !== 'accountId').map(field)].join(' ');
    const folding = this.open.get(key);
    if (folding) {
      folding.accounts.push(String(entry.accountId ?? '?'));
      return;
    }
    this.write([level.padEnd(5), String(text ?? ''), ...fields.map(field)].join(' '));
    const timer = setTimeout(() => this.close(key), this.foldMs);
    timer.unref();
    this.open.set(key, { msg: String(text ?? ''), accounts: [], timer });
  }

  /** Reports what is still folded (at exit). */
  flush(): void {
    for (const key of [...this.open.keys()]) this.close(key);
  }

  private close(key: string): void {
    const folding = this.open.get(key);
    if (!folding) return;
    clearTimeout(folding.timer);
    this.open.delete(key);
    const { accounts, msg } = folding;
    if (accounts.length === 0) return;
    const names = accounts.length > 8 ? `${accounts.slice(0, 8).join(', ')}, …` : accounts.join(', ');
    const what = msg.length > 48 ? `${msg.slice(0, 47)}…` : msg;
    this.write(`      ↳ "${what}" also for ${accounts.length} more: ${names}`);
  }
}
