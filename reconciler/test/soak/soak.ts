/**
 * The soak (issue 16): 30 linked accounts driven by the reconciler as a real child process, against
 * the simulator and the Firestore emulator, with messages flowing both ways and a seeded random mix
 * of faults for `minutes`. Each fault is followed by a wait (with a deadline) until the fleet is
 * healthy again, timed per kind. At the end: no more faults, a wait for convergence, then the
 * invariants below, each with the evidence of every violation.
 *
 * Used by `npm run soak -- --minutes N` (tools/soak.ts, which merges the figures into
 * bench/results/latest.json) and by reconciler/test/e2e/soak.test.ts (a ~2-minute run in `npm test`).
 *
 * Invariants (see INVARIANTS): every account linked before is `connected` at the end, none in
 * `needsLink`, no `accountQr` document; never two connections for one device (the simulator counts
 * each login that found the device already online as a conflict and answers the older one with 440:
 * `totalConflicts()`; the 440 faults injected here are stream errors, not logins, and are not
 * counted); every outbox message final (sent/delivered/read, or failed with an error code), under
 * its one WhatsApp id, a sent one decrypted by its recipient, none shown twice (two different ids
 * for one text); every inbound message a contact sent stored exactly once; no incident left open
 * other than FlappingConnection (it closes only after 10 minutes connected, longer than the soak
 * lets an account be); the reconciler never exited unless told to, a SIGTERM always exited 0; the
 * fleet recovered from every fault within its deadline; no decrypt error at the simulated phones.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Contact } from '@wafleet/wa-sim';
import { Timestamp } from 'firebase-admin/firestore';
import { TcpProxy } from '../../../test/support/tcp-proxy.ts';
import { messageDocId } from '../../src/inbound/inbound-writer.ts';
import { waMessageId } from '../../src/outbox/message-id.ts';
import { scanPublishedQr, startHarness, type Harness } from '../e2e/harness.ts';
import { spawnReconciler, type ReconcilerProcess } from '../e2e/process.ts';
import { waitFor } from '../helpers.ts';

// ------------------------------------------------------------------ options and results

export const FAULT_KINDS = ['drop', 'stream-5xx', 'stall', 'conflict-440', 'sigterm', 'kill-9', 'firestore-cut', 'firestore-blackhole'] as const;
export type SoakFaultKind = (typeof FAULT_KINDS)[number];

export const INVARIANTS = [
  'allConnected',
  'noQrPublished',
  'noConflicts',
  'outboxFinal',
  'outboxOnce',
  'inboundOnce',
  'incidentsResolved',
  'processHealthy',
  'recoveredFromEveryFault',
  'noDecryptErrors',
] as const;
export type InvariantName = (typeof INVARIANTS)[number];

/** Incident types that may stay open at the end, and why. */
export const INCIDENTS_ALLOWED_OPEN: Readonly<Record<string, string>> = {
  // Raised after more than 3 backed-off failures of one account in an hour; it resolves only once
  // the account has stayed connected for 10 minutes, which a soak with faults every 10–30 s (or a
  // restart, which starts a new process's 10 minutes over) does not give it.
  FlappingConnection: 'resolves only after 10 minutes connected',
};

export interface SoakOptions {
  minutes: number;
  seed?: number;
  log?: (line: string) => void;
  /** Accounts to link (default 30). */
  accounts?: number;
  /** Pause before each fault, drawn uniformly from this range (default 10–30 s). */
  pauseMs?: readonly [number, number];
  /** Mean time between two outbox messages, and between two inbound messages (default 600 ms each). */
  messageIntervalMs?: number;
  /** Fault kinds to draw from (default all). */
  kinds?: readonly SoakFaultKind[];
  /** How long the fleet may take to be healthy after one fault (default 180 s). */
  recoveryTimeoutMs?: number;
  /** How long everything may take to settle at the end (default 240 s). */
  convergeTimeoutMs?: number;
  /** The reconciler's LOG_LEVEL (default info). */
  logLevel?: string;
  /** Where the reconciler's output goes (default a file under the OS temp dir). */
  logFile?: string;
}

export interface FaultRecord {
  kind: SoakFaultKind;
  /** When it was injected (ms since the epoch). */
  at: number;
  detail: string;
  /** From the injection (or, for a Firestore outage, from its end) to a healthy fleet; null if it never got healthy in time. */
  recoveryMs: number | null;
}

export interface InvariantResult {
  name: InvariantName;
  ok: boolean;
  /** How it was measured. */
  measured: string;
  violations: string[];
}

export interface Figure {
  value: number;
  unit?: string;
  note: string;
}

export interface SoakResult {
  seed: number;
  minutes: number;
  loadAvg: string;
  faults: FaultRecord[];
  invariants: InvariantResult[];
  violations: number;
  outbox: { created: number; byStatus: Record<string, number>; failedByCode: Record<string, number>; repeatedArrivals: number };
  inbound: { sent: number; stored: number };
  incidents: { raisedByType: Record<string, number>; openByType: Record<string, number> };
  figures: Record<string, Figure>;
  logFile: string;
}

// ------------------------------------------------------------------ small tools

/** mulberry32: a small seeded PRNG, enough to replay a soak from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A pause for pacing (between faults, messages, during an outage), never to wait for a condition. */
const pause = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function countBy<T>(items: T[], key: (t: T) => string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const i of items) out[key(i)] = (out[key(i)] ?? 0) + 1;
  return out;
}

const fmt = (r: Record<string, number>) =>
  Object.entries(r)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ') || 'none';

const millis = (v: unknown): number => (v && typeof (v as Timestamp).toMillis === 'function' ? (v as Timestamp).toMillis() : 0);

export function loadAverage(): string {
  return os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' / ');
}

// ------------------------------------------------------------------ latest.json

/**
 * Merges the soak figures into a bench results file: every key that does not start with `soak` is
 * kept as it was; the `soak*` keys are replaced as a whole. Values are plain numbers, like every
 * other figure there; the notes (and units) go to `soakNotes`. Written to a temp file and renamed,
 * so a reader never sees half a file.
 */
export async function mergeSoakFigures(file: string, figures: Record<string, Figure>): Promise<void> {
  let current: Record<string, unknown> = {};
  try {
    current = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const next: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(current)) if (!k.startsWith('soak')) next[k] = v;
  const notes: Record<string, string> = {};
  for (const [k, f] of Object.entries(figures)) {
    if (!k.startsWith('soak')) throw new Error(`soak figure ${k} must start with "soak"`);
    next[k] = f.value;
    notes[k] = f.unit ? `${f.note} [${f.unit}]` : f.note;
  }
  next.soakNotes = notes;
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  await writeFile(tmp, `${JSON.stringify(next, null, 2)}\n`);
  await rename(tmp, file);
}

// ------------------------------------------------------------------ the soak

interface Account {
  id: string;
  phone: string;
  deviceJid: string;
  contacts: Contact[];
}

interface OutboxSent {
  id: string;
  accountId: string;
  to: string;
  text: string;
}

interface InboundSent {
  accountId: string;
  from: string;
  id: string;
  text: string;
}

const INSTANCE = 'soak-vm';
const LEASE_TTL_MS = 10_000;
const LEASE_RENEW_MS = 2_000;
const SHUTDOWN_TIMEOUT_MS = 15_000;
const FINAL_OUTBOX = new Set(['sent', 'delivered', 'read', 'failed']);
const SENT = new Set(['sent', 'delivered', 'read']);

export async function runSoak(opts: SoakOptions): Promise<SoakResult> {
  const seed = (opts.seed ?? Math.floor(Math.random() * 2 ** 31)) >>> 0;
  const rand = prng(seed);
  const log = opts.log ?? (() => undefined);
  const N = opts.accounts ?? 30;
  const [pauseMin, pauseMax] = opts.pauseMs ?? [10_000, 30_000];
  const messageMs = opts.messageIntervalMs ?? 600;
  const kinds = opts.kinds ?? FAULT_KINDS;
  const recoveryTimeoutMs = opts.recoveryTimeoutMs ?? 180_000;
  const convergeTimeoutMs = opts.convergeTimeoutMs ?? 240_000;
  const runId = seed.toString(36);
  const logFile = opts.logFile ?? path.join(os.tmpdir(), `wafleet-soak-${runId}-${Date.now()}.log`);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const shuffle = <T>(xs: readonly T[]): T[] => {
    const out = [...xs];
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  };
  const between = (lo: number, hi: number) => lo + rand() * (hi - lo);
  log(`soak: seed ${seed}, ${opts.minutes} min of faults, ${N} accounts; load avg ${loadAverage()}; reconciler output → ${logFile}`);

  if (!process.env.FIRESTORE_EMULATOR_HOST) throw new Error('the soak needs the Firestore emulator (FIRESTORE_EMULATOR_HOST): run it with `npm run soak`');
  const h: Harness = await startHarness(`soak-${runId}`.slice(0, 12));
  // The harness routes the console into its (silent) logger; libsignal's reasons for a failed
  // decryption at a simulated phone come that way, and are kept as evidence.
  const signalErrors: Array<{ at: number; text: string }> = [];
  const harnessConsoleError = console.error;
  console.error = (...args: unknown[]) => {
    const text = args.map((a) => (a instanceof Error ? a.message : String(a))).join(' ');
    if (/Session error|decrypt/i.test(text)) signalErrors.push({ at: Date.now(), text: text.split('\n')[0]!.slice(0, 240) });
    harnessConsoleError.apply(console, args);
  };
  const proxy = TcpProxy.forHostPort(process.env.FIRESTORE_EMULATOR_HOST);
  await proxy.start();
  const sessionsPath = await h.newSessionsDir();

  // ---- the reconciler process: every exit we did not ask for is a violation (and it is restarted)
  const processIssues: string[] = [];
  const outputs: string[] = [];
  let current: ReconcilerProcess | null = null;
  let expectingExit = false;
  let generation = 0;
  const spawn = (): ReconcilerProcess => {
    const gen = ++generation;
    const p = spawnReconciler({
      projectId: h.projectId,
      sim: h.sim,
      sessionsPath,
      instanceId: INSTANCE,
      env: {
        FIRESTORE_EMULATOR_HOST: proxy.address,
        LEASE_TTL_MS: String(LEASE_TTL_MS),
        LEASE_RENEW_MS: String(LEASE_RENEW_MS),
        SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
        LOG_LEVEL: opts.logLevel ?? 'info',
      },
    });
    current = p;
    lifecycle.push({ kind: `spawn #${gen}`, at: Date.now() });
    void p.exited.then(async (e) => {
      outputs.push(`===== reconciler #${gen} (pid ${p.child.pid}) exited code ${e.code} signal ${e.signal} at ${new Date(e.at).toISOString()}\n${p.output()}`);
      if (current === p && !expectingExit) {
        const tail = p.output().split('\n').filter((l) => /"level":"(error|fatal)"|Error|error/.test(l)).slice(-8).join('\n');
        processIssues.push(`reconciler #${gen} exited on its own (code ${e.code}, signal ${e.signal}) at ${new Date(e.at).toISOString()}; last errors:\n${tail}`);
        log(`soak: reconciler #${gen} exited on its own (code ${e.code}); restarting it`);
        current = null;
        spawn();
      }
    });
    return p;
  };
  const stopCurrent = async (signal: 'SIGTERM' | 'SIGKILL'): Promise<{ code: number | null; ms: number }> => {
    const p = current!;
    expectingExit = true;
    const t = Date.now();
    lifecycle.push({ kind: signal, at: t });
    p.kill(signal);
    let exit = await Promise.race([p.exited, pause(SHUTDOWN_TIMEOUT_MS + 15_000).then(() => null)]);
    if (!exit) {
      processIssues.push(`reconciler pid ${p.child.pid} did not exit within ${SHUTDOWN_TIMEOUT_MS + 15_000} ms of ${signal}; killed`);
      p.kill('SIGKILL');
      exit = await p.exited;
    }
    current = null;
    expectingExit = false;
    return { code: exit.code, ms: exit.at - t };
  };

  const faults: FaultRecord[] = [];
  const outboxSent: OutboxSent[] = [];
  const inboundSent: InboundSent[] = [];
  const producerErrors: string[] = [];
  const simFaultIds: string[] = [];
  /** Process starts and stops, for the evidence of what came after one. */
  const lifecycle: Array<{ kind: string; at: number }> = [];
  let accounts: Account[] = [];
  let faultPhase = { from: 0, to: 0 };
  let result: SoakResult | undefined;

  try {
    // ---- link N accounts, each with its phone and two contacts
    spawn();
    const ids = Array.from({ length: N }, (_, i) => `soak-${String(i + 1).padStart(2, '0')}`);
    // 11-digit NANP test numbers: phones 1555 9xxxxxx, their contacts 1555 7xxxxxx and 1555 8xxxxxx.
    const numberOf = (prefix: number, i: number) => `1555${prefix}${String(i).padStart(6, '0')}`;
    const phoneOf = (i: number) => numberOf(9, i);
    await Promise.all(ids.map((id) => h.createAccount(id)));
    const linkStarted = Date.now();
    await Promise.all(ids.map((id, i) => scanPublishedQr(h, id, phoneOf(i), 240_000)));
    accounts = ids.map((id, i) => {
      const phone = phoneOf(i);
      const deviceJid = h.sim.phone(phone).linkedDevices()[0]!.deviceJid;
      const contacts = [0, 1].map((k) =>
        h.sim.createContact({
          number: numberOf(7 + k, i),
          name: `Contact ${k + 1} of ${id}`,
          // One reads what it gets, the other only confirms delivery: both receipt paths run.
          receiptDelays: k === 0 ? { deliveredMs: 0, readMs: null } : { deliveredMs: 150, readMs: 800 },
        }),
      );
      return { id, phone, deviceJid, contacts };
    });
    await waitHealthy({ since: 0, affected: [], timeoutMs: 240_000, label: `${N} accounts linked and connected` }).then((r) => {
      if (r.recoveredAt === null) throw new Error(`linking did not finish: ${r.why}`);
    });
    log(`soak: ${N} accounts linked and connected in ${((Date.now() - linkStarted) / 1000).toFixed(1)} s; conflicts so far ${h.sim.totalConflicts()}`);

    // ---- traffic both ways, until told to stop
    let traffic = true;
    let outSeq = 0;
    let inSeq = 0;
    const outboxLoop = (async () => {
      while (traffic) {
        await pause(between(0, 2 * messageMs));
        if (!traffic) break;
        const a = pick(accounts);
        const c = pick(a.contacts);
        const id = `soak-${runId}-o${++outSeq}`;
        const text = `soak ${runId} out #${outSeq} ${a.id} to ${c.number}`;
        try {
          await h.db.doc(`outbox/${id}`).set({ accountId: a.id, to: `+${c.number}`, text, createdAt: Timestamp.now(), createdBy: 'soak', status: 'queued', attemptCount: 0 });
          outboxSent.push({ id, accountId: a.id, to: c.number, text });
        } catch (err) {
          // Checked at the end against the collection itself: a write that failed here but landed still counts.
          producerErrors.push(`outbox ${id}: ${(err as Error).message}`);
        }
      }
    })();
    const inboundLoop = (async () => {
      while (traffic) {
        await pause(between(0, 2 * messageMs));
        if (!traffic) break;
        const a = pick(accounts);
        const c = pick(a.contacts);
        const text = `soak ${runId} in #${++inSeq} ${c.number} to ${a.id}`;
        try {
          const { id, devices } = await c.sendText(a.phone, text);
          if (devices === 0) producerErrors.push(`inbound "${text}" reached no device of ${a.phone}`);
          inboundSent.push({ accountId: a.id, from: c.number, id, text });
        } catch (err) {
          producerErrors.push(`inbound "${text}": ${(err as Error).message}`);
        }
      }
    })();

    // ---- faults: a shuffled deck of the kinds, dealt again when empty, so a short run sees many kinds
    const endAt = Date.now() + opts.minutes * 60_000;
    faultPhase = { from: Date.now(), to: 0 };
    let deck: SoakFaultKind[] = [];
    const draw = (): SoakFaultKind => {
      if (deck.length === 0) deck = shuffle(kinds);
      return deck.pop()!;
    };
    while (Date.now() < endAt) {
      await pause(Math.min(between(pauseMin, pauseMax), endAt - Date.now()));
      if (Date.now() >= endAt) break;
      const kind = draw();
      const rec = await inject(kind);
      faults.push(rec);
      log(`soak: ${kind} (${rec.detail}) → ${rec.recoveryMs === null ? 'NOT healthy again' : `healthy after ${rec.recoveryMs} ms`}`);
      if (rec.recoveryMs === null) break; // a fleet that did not recover is reported; more faults would only bury the cause
    }

    // ---- the end: no more faults or traffic, everything settles, then the invariants
    faultPhase.to = Date.now();
    traffic = false;
    await Promise.all([outboxLoop, inboundLoop]);
    for (const id of simFaultIds) h.sim.clearFaults(id);
    log(`soak: faults over (${faults.length}); ${outboxSent.length} outbox and ${inboundSent.length} inbound messages sent; waiting for convergence`);
    const convergeStarted = Date.now();
    const converged = await converge(convergeTimeoutMs);
    log(`soak: ${converged ? `converged in ${((Date.now() - convergeStarted) / 1000).toFixed(1)} s` : `NOT converged within ${convergeTimeoutMs} ms`}; checking invariants`);
    result = await check();
    return result;
  } finally {
    if (current) await stopCurrent('SIGTERM').catch(() => undefined);
    await proxy.stop();
    await writeFile(logFile, outputs.join('\n')).catch(() => undefined);
    console.error = harnessConsoleError;
    await h.close();
    // The emulator keeps a project's documents until it stops; this one is done.
    await fetch(`http://${process.env.FIRESTORE_EMULATOR_HOST}/emulator/v1/projects/${h.projectId}/databases/(default)/documents`, { method: 'DELETE', signal: AbortSignal.timeout(10_000) }).catch(() => undefined);
  }

  // ------------------------------------------------------------------ faults

  async function inject(kind: SoakFaultKind): Promise<FaultRecord> {
    const at = Date.now();
    const some = (max: number) => {
      const n = 1 + Math.floor(rand() * max);
      return shuffle(accounts).slice(0, n);
    };
    const done = async (detail: string, since: number, affected: Account[] | 'all', heartbeatSince?: number): Promise<FaultRecord> => {
      const r = await waitHealthy({ since, affected: affected === 'all' ? accounts.map((a) => a.id) : affected.map((a) => a.id), heartbeatSince, timeoutMs: recoveryTimeoutMs, label: kind });
      if (r.recoveredAt === null) return { kind, at, detail: `${detail}; not healthy: ${r.why}`, recoveryMs: null };
      const recoveryMs = r.recoveredAt - since;
      // A slow recovery: what the simulator saw of the accounts it waited for last.
      const trail = recoveryMs > 30_000 ? simTrail(r.lastWhy, at) : '';
      return { kind, at, detail: `${detail}${r.lastWhy ? `; last waited for: ${r.lastWhy}` : ''}${trail}`, recoveryMs };
    };
    switch (kind) {
      case 'drop': {
        const hit = some(3);
        for (const a of hit) h.sim.injectFault({ kind: 'drop', target: a.phone });
        return done(`dropped ${hit.map((a) => a.id).join(', ')}`, at, hit);
      }
      case 'stream-5xx': {
        const hit = some(3);
        const code = pick([500, 503] as const);
        for (const a of hit) h.sim.injectFault({ kind: 'stream-error', code, target: a.phone });
        return done(`stream error ${code} on ${hit.map((a) => a.id).join(', ')}`, at, hit);
      }
      case 'conflict-440': {
        // WhatsApp's answer when a second client logs in as the device: the reconciler must re-check
        // its lease before it reconnects. (A real second login would be counted as a conflict.)
        const hit = some(2);
        for (const a of hit) h.sim.injectFault({ kind: 'stream-error', code: 440, target: a.phone });
        return done(`440 replaced on ${hit.map((a) => a.id).join(', ')}`, at, hit);
      }
      case 'stall': {
        // The server goes silent on one connection: only the client's keep-alive can tell.
        const a = pick(accounts);
        const id = h.sim.injectFault({ kind: 'stall', target: a.deviceJid, times: 1 });
        simFaultIds.push(id);
        const r = await done(`stalled ${a.id}`, at, [a]);
        h.sim.clearFaults(id);
        return r;
      }
      case 'sigterm': {
        const { code, ms } = await stopCurrent('SIGTERM');
        if (code !== 0) processIssues.push(`SIGTERM at ${new Date(at).toISOString()} exited with code ${code} (not graceful) after ${ms} ms`);
        spawn();
        return done(`SIGTERM → exit ${code} in ${ms} ms, restarted`, at, 'all', at);
      }
      case 'kill-9': {
        await stopCurrent('SIGKILL');
        spawn();
        return done('kill -9, restarted on the same disk', at, 'all', at);
      }
      case 'firestore-cut':
      case 'firestore-blackhole': {
        // From a few seconds to past the lease TTL (then the reconciler fences itself and closes every socket).
        const ms = Math.round(between(2_000, LEASE_TTL_MS * 1.5));
        if (kind === 'firestore-cut') proxy.cut();
        else proxy.blackhole();
        await pause(ms);
        if (kind === 'firestore-cut') proxy.restore();
        else proxy.heal();
        const healedAt = Date.now();
        const what = kind === 'firestore-cut' ? 'cut (refused)' : 'black-holed (silent)';
        return done(`Firestore ${what} for ${ms} ms${ms > LEASE_TTL_MS ? ', past the lease TTL' : ''}`, healedAt, [], healedAt);
      }
    }
  }

  /**
   * Healthy: every account `connected` (those affected with `lastConnectedAt` since `since`), the
   * simulator holding exactly one logged-in connection per device, no QR published, and (when
   * asked) a heartbeat written since `heartbeatSince`. It must hold over 1.5 s of polls, so a fence
   * firing just after an outage is not mistaken for a recovery; the time is that of the first poll.
   */
  async function waitHealthy(o: {
    since: number;
    affected: string[];
    heartbeatSince?: number;
    timeoutMs: number;
    label: string;
  }): Promise<{ recoveredAt: number | null; why: string; lastWhy: string }> {
    let why = '';
    let lastWhy = '';
    let firstOk: number | null = null;
    const affected = new Set(o.affected);
    try {
      return await waitFor(
        async () => {
          const now = Date.now();
          why = await unhealthy(affected, o.since, o.heartbeatSince);
          if (why) {
            lastWhy = why;
            firstOk = null;
            return undefined;
          }
          firstOk ??= now;
          return now - firstOk >= 1_500 ? { recoveredAt: firstOk, why: '', lastWhy } : undefined;
        },
        { timeoutMs: o.timeoutMs, intervalMs: 250, label: `healthy after ${o.label}` },
      );
    } catch {
      return { recoveredAt: null, why, lastWhy };
    }
  }

  /** The simulator's connection events since `at` of the accounts named in `why`, as `type+ms`. */
  function simTrail(why: string, at: number): string {
    const named = new Set(why.match(/soak-\d+/g) ?? []);
    const parts = accounts
      .filter((a) => named.has(a.id))
      .slice(0, 3)
      .map((a) => {
        const events = h.sim.events({ deviceJid: a.deviceJid }).filter((e) => e.at >= at && e.type !== 'fault');
        return `${a.id}: ${events.map((e) => `${e.type}${e.code ? `(${e.code})` : ''}+${e.at - at}`).join(' ') || 'no connection events'}`;
      });
    return parts.length ? `; simulator saw ${parts.join('; ')}` : '';
  }

  async function unhealthy(affected: Set<string>, since: number, heartbeatSince?: number): Promise<string> {
    const [statuses, qrs, beat] = await Promise.all([h.db.collection('accountStatus').get(), h.db.collection('accountQr').get(), h.db.doc(`reconcilers/${INSTANCE}`).get()]);
    const byId = new Map(statuses.docs.map((d) => [d.id, d.data()]));
    const open = new Map(h.sim.deviceStats().map((d) => [d.deviceJid, d.openConnections]));
    const problems: string[] = [];
    for (const a of accounts) {
      const s = byId.get(a.id);
      if (!s || s.phase !== 'connected') problems.push(`${a.id} ${s ? `${String(s.phase)}/${String(s.reason)}` : 'no status'}`);
      else if (affected.has(a.id) && millis(s.lastConnectedAt) < since) problems.push(`${a.id} not reconnected yet`);
      if ((open.get(a.deviceJid) ?? 0) !== 1) problems.push(`${a.id} ${open.get(a.deviceJid) ?? 0} connections`);
    }
    if (qrs.size) problems.push(`${qrs.size} QR documents`);
    if (heartbeatSince !== undefined && (beat.updateTime?.toMillis() ?? 0) < heartbeatSince) problems.push('no heartbeat since');
    return problems.length ? `${problems.length} problem(s): ${problems.slice(0, 8).join('; ')}` : '';
  }

  // ------------------------------------------------------------------ the end

  /**
   * Waits for the end state: a healthy fleet, no outbox message waiting, every inbound message
   * stored, no incident open that should close, every sent message at its recipient. Gives up at
   * `timeoutMs`, or earlier once nothing has moved for 60 s (whatever is left then is not coming:
   * the invariants below report it).
   */
  async function converge(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    const healthy = await waitHealthy({ since: 0, affected: [], timeoutMs, label: 'the end' });
    if (healthy.recoveredAt === null) return false;
    const STALL_MS = 60_000;
    let progress = '';
    let movedAt = Date.now();
    let stalled = false;
    // A throwing predicate only means "not yet" to waitFor: giving up goes through the signal.
    const giveUp = new AbortController();
    try {
      await waitFor(
        async () => {
          const [pending, stored, incidents, sent] = await Promise.all([
            h.db.collection('outbox').where('status', 'in', ['queued', 'sending']).get(),
            h.db.collectionGroup('messages').count().get(),
            h.db.collection('incidents').where('open', '==', true).get(),
            h.db.collection('outbox').where('status', 'in', ['sent', 'delivered', 'read']).select().get(),
          ]);
          const blocking = incidents.docs.filter((d) => !(String(d.get('type')) in INCIDENTS_ALLOWED_OPEN));
          // Sent messages reach the recipient's phone a moment after the server's ack; one the phone
          // could not decrypt will never arrive (nothing asks for it again): no use waiting for it.
          const arrived = new Set(accounts.flatMap((a) => a.contacts.flatMap((c) => c.received().map((m) => m.id))));
          for (const e of h.sim.decryptErrors()) arrived.add(e.id);
          const notArrived = sent.docs.filter((d) => !arrived.has(waMessageId(d.id))).length;
          if (pending.empty && stored.data().count >= inboundSent.length && blocking.length === 0 && notArrived === 0) return true;
          const now = Date.now();
          const state = JSON.stringify([pending.docs.map((d) => `${d.id}:${String(d.get('status'))}:${String(d.get('attemptCount'))}`), stored.data().count, blocking.map((d) => d.id), notArrived]);
          if (state !== progress) {
            progress = state;
            movedAt = now;
          } else if (now - movedAt > STALL_MS) {
            stalled = true;
            giveUp.abort(new Error('no progress'));
          }
          return false;
        },
        { timeoutMs: Math.max(1_000, deadline - Date.now()), intervalMs: 1_000, label: 'outbox final, inbound stored, incidents resolved', signal: giveUp.signal },
      );
      return true;
    } catch {
      log(`soak: the end state ${stalled ? `stopped moving for ${STALL_MS / 1000} s` : 'was not reached in time'}`);
      return false;
    }
  }

  async function check(): Promise<SoakResult> {
    const inv: InvariantResult[] = [];
    const add = (name: InvariantName, measured: string, violations: string[]) => inv.push({ name, ok: violations.length === 0, measured, violations });

    // allConnected, noQrPublished
    const statuses = new Map((await h.db.collection('accountStatus').get()).docs.map((d) => [d.id, d.data()]));
    const open = new Map(h.sim.deviceStats().map((d) => [d.deviceJid, d.openConnections]));
    add(
      'allConnected',
      'accountStatus of every account linked at the start: phase connected (never needsLink), and the simulator holds one logged-in connection for its device',
      accounts.flatMap((a) => {
        const s = statuses.get(a.id);
        const v: string[] = [];
        if (!s || s.phase !== 'connected') v.push(`${a.id} is ${s ? `${String(s.phase)}/${String(s.reason)}: ${String(s.message)}` : 'without a status'}`);
        if ((open.get(a.deviceJid) ?? 0) !== 1) v.push(`${a.id}: ${open.get(a.deviceJid) ?? 0} open connections for ${a.deviceJid}`);
        return v;
      }),
    );
    const qrs = await h.db.collection('accountQr').get();
    add('noQrPublished', 'accountQr collection empty at the end (and no account left in awaitingScan)', [
      ...qrs.docs.map((d) => `accountQr/${d.id} published (sequence ${String(d.get('sequence'))}, expires ${new Date(millis(d.get('expiresAt'))).toISOString()})`),
      ...[...statuses.entries()].filter(([, s]) => s.phase === 'awaitingScan' || s.phase === 'needsLink').map(([id, s]) => `${id} in ${String(s.phase)}`),
    ]);

    // noConflicts
    const conflicts = h.sim.events({ type: 'conflict' });
    add(
      'noConflicts',
      "simulator's totalConflicts(): every login that found its device already online (two connections for one device) counts one; must stay 0",
      h.sim.totalConflicts() === 0 ? [] : [`totalConflicts ${h.sim.totalConflicts()}`, ...conflicts.slice(0, 10).map((e) => `${new Date(e.at).toISOString()} ${e.deviceJid}: ${e.detail}`)],
    );

    // outboxFinal, outboxOnce
    const outboxDocs = (await h.db.collection('outbox').get()).docs;
    const byId = new Map(outboxDocs.map((d) => [d.id, d.data()]));
    const finalV: string[] = [];
    for (const m of outboxSent) if (!byId.has(m.id)) finalV.push(`outbox/${m.id} was created but is gone`);
    for (const d of outboxDocs) {
      const x = d.data();
      if (!FINAL_OUTBOX.has(String(x.status))) finalV.push(`outbox/${d.id} still ${String(x.status)} (attempts ${String(x.attemptCount)}, error ${JSON.stringify(x.error ?? null)}, next ${x.nextAttemptAt ? new Date(millis(x.nextAttemptAt)).toISOString() : '-'})`);
      else if (x.status === 'failed' && !(x.error as { code?: string } | undefined)?.code) finalV.push(`outbox/${d.id} failed without a reason`);
    }
    add('outboxFinal', 'every outbox document: sent, delivered, read, or failed with error.code', finalV);

    // Evidence for a message that never arrived: what the phone failed to decrypt, and why.
    const outboxByWaId = new Map(outboxSent.map((m) => [waMessageId(m.id), m]));
    const received = new Set(accounts.flatMap((a) => a.contacts.flatMap((c) => c.received().map((m) => `${c.number} ${m.id}`))));
    const decryptErrors = h.sim.decryptErrors();
    const lostToDecrypt = decryptErrors.filter((e) => !received.has(`${e.to} ${e.id}`));
    const describeDecryptError = (e: (typeof decryptErrors)[number]): string => {
      const m = outboxByWaId.get(e.id);
      const x = m ? byId.get(m.id) : undefined;
      const restart = [...lifecycle].reverse().find((r) => r.at <= e.at);
      const why = signalErrors.filter((s) => Math.abs(s.at - e.at) < 50).map((s) => s.text);
      const sender = accounts.find((a) => e.from.startsWith(`${a.phone}.`));
      const before = sender?.contacts
        .find((c) => c.number === e.to)
        ?.received()
        .filter((r) => r.from.startsWith(`${sender.phone}:`) && r.at <= e.at)
        .slice(-3)
        .map((r) => `${r.encType} ${new Date(r.at).toISOString().slice(11, 23)}`);
      return (
        `${new Date(e.at).toISOString()} ${e.from} → ${e.to} ${e.id}${m ? ` (outbox/${m.id}, ${String(x?.status)}, attempts ${String(x?.attemptCount)})` : ''}: ${e.error}` +
        `${why.length ? ` [libsignal: ${why.join(' | ')}]` : ''}; last restart before: ${restart ? `${restart.kind} at ${new Date(restart.at).toISOString()}` : 'none'}` +
        `; earlier messages from that sender decrypted there: ${before?.join(', ') || 'none'}`
      );
    };
    const arrivals = new Map<string, Array<{ id: string; to: string }>>();
    for (const a of accounts) for (const c of a.contacts) for (const m of c.received()) if (m.text) (arrivals.get(m.text) ?? arrivals.set(m.text, []).get(m.text)!).push({ id: m.id, to: c.number });
    const onceV: string[] = [];
    let repeatedArrivals = 0;
    for (const m of outboxSent) {
      const x = byId.get(m.id);
      const got = arrivals.get(m.text) ?? [];
      const ids = new Set(got.map((g) => g.id));
      repeatedArrivals += Math.max(0, got.length - ids.size);
      if (ids.size > 1) onceV.push(`outbox/${m.id} shown ${ids.size} times (ids ${[...ids].join(', ')})`);
      if (got.some((g) => g.id !== waMessageId(m.id))) onceV.push(`outbox/${m.id} arrived under ${[...ids].join(', ')}, not its id ${waMessageId(m.id)}`);
      if (got.some((g) => g.to !== m.to)) onceV.push(`outbox/${m.id} reached ${got.map((g) => g.to).join(', ')}, not ${m.to}`);
      if (x && x.providerMessageId && x.providerMessageId !== waMessageId(m.id)) onceV.push(`outbox/${m.id} providerMessageId ${String(x.providerMessageId)}`);
      if (x && SENT.has(String(x.status)) && got.length === 0) {
        const failed = decryptErrors.filter((e) => e.id === waMessageId(m.id));
        onceV.push(`outbox/${m.id} (${m.accountId}) is ${String(x.status)} but never reached ${m.to}${failed.length ? `: ${failed.length} failed decryption(s) there` : ''}`);
      }
    }
    add(
      'outboxOnce',
      "each outbox text, in the recipient contact's received() list (every decrypted copy): only under the document's own WhatsApp id (one bubble; repeats under that id after a resend are the same message), at the right contact, and present when the document says sent/delivered/read",
      onceV,
    );

    // inboundOnce
    const stored = (await h.db.collectionGroup('messages').get()).docs;
    const storedByPath = new Map(stored.map((d) => [d.ref.path, d.data()]));
    const textCount = countBy(stored, (d) => String(d.get('text')));
    const inV: string[] = [];
    for (const m of inboundSent) {
      const p = `threads/${m.accountId}__${m.from}@s.whatsapp.net/messages/${messageDocId(m.id)}`;
      const d = storedByPath.get(p);
      if (!d) inV.push(`${m.text} (id ${m.id}) not stored`);
      else if (d.text !== m.text || d.from !== `${m.from}@s.whatsapp.net` || d.accountId !== m.accountId) inV.push(`${p} stored as ${JSON.stringify({ text: d.text, from: d.from, accountId: d.accountId })}`);
      if ((textCount[m.text] ?? 0) > 1) inV.push(`${m.text} stored ${textCount[m.text]} times`);
    }
    const expected = new Set(inboundSent.map((m) => `threads/${m.accountId}__${m.from}@s.whatsapp.net/messages/${messageDocId(m.id)}`));
    for (const d of stored) if (!expected.has(d.ref.path)) inV.push(`${d.ref.path} stored, but no contact sent it`);
    add('inboundOnce', 'for every text a contact sent: its document threads/{account}__{contact}/messages/{id} with that text and sender, each text once, and no other message document', inV);

    // incidentsResolved
    const incidents = (await h.db.collection('incidents').get()).docs.map((d) => ({ id: d.id, ...d.data() }) as Record<string, unknown> & { id: string });
    const openIncidents = incidents.filter((i) => i.open === true);
    add(
      'incidentsResolved',
      `no incident open at the end except ${Object.keys(INCIDENTS_ALLOWED_OPEN).join(', ')} (${Object.values(INCIDENTS_ALLOWED_OPEN).join('; ')})`,
      openIncidents.filter((i) => !(String(i.type) in INCIDENTS_ALLOWED_OPEN)).map((i) => `incidents/${i.id} open: ${String(i.message)} (count ${String(i.count)}, since ${new Date(millis(i.firstSeenAt)).toISOString()})`),
    );

    add('processHealthy', 'the reconciler process exited only when told to; every SIGTERM ended in exit code 0 within the shutdown bound', processIssues);
    add(
      'recoveredFromEveryFault',
      `after each fault the fleet was healthy again within ${recoveryTimeoutMs} ms; producers had no errors`,
      [...faults.filter((f) => f.recoveryMs === null).map((f) => `${f.kind} at ${new Date(f.at).toISOString()}: ${f.detail}`), ...producerErrors.slice(0, 20)],
    );
    add(
      'noDecryptErrors',
      "simulator's decryptErrors() at the contacts' phones, for messages never decrypted there at all (a lost message); a failure on a repeat of a message already shown (a resend under the same id) is counted in a note only",
      lostToDecrypt.slice(0, 20).map(describeDecryptError),
    );

    // ---- figures
    const load = loadAverage();
    const tag = `seed ${seed}; load avg ${load} (${os.cpus().length} cpus)`;
    const byKind = new Map<string, number[]>();
    for (const f of faults) if (f.recoveryMs !== null) (byKind.get(f.kind) ?? byKind.set(f.kind, []).get(f.kind)!).push(f.recoveryMs);
    const recoveries = faults.flatMap((f) => (f.recoveryMs === null ? [] : [f.recoveryMs]));
    const perKind = (fn: (v: number[]) => number) => [...byKind.entries()].map(([k, v]) => `${k} ${Math.round(fn(v))}`).join(', ') || 'none';
    const byStatus = countBy(outboxDocs, (d) => String(d.get('status')));
    const failedByCode = countBy(
      outboxDocs.filter((d) => d.get('status') === 'failed'),
      (d) => String(d.get('error.code')),
    );
    const raisedByType = countBy(incidents, (i) => String(i.type));
    const openByType = countBy(openIncidents, (i) => String(i.type));
    const violations = inv.reduce((n, i) => n + i.violations.length, 0);
    const figures: Record<string, Figure> = {
      soakMinutes: { value: opts.minutes, unit: 'min', note: `${opts.minutes} min of faults asked, ${((faultPhase.to - faultPhase.from) / 60_000).toFixed(2)} min run (the last fault's recovery included), ${N} accounts linked by QR, reconciler as a child process (LEASE_TTL_MS ${LEASE_TTL_MS}); ${tag}` },
      soakFaults: { value: faults.length, note: `by kind: ${fmt(countBy(faults, (f) => f.kind))}; ${tag}` },
      soakRecoveryMedianMs: {
        value: recoveries.length ? Math.round(median(recoveries)) : 0,
        unit: 'ms',
        note: `fault → fleet healthy (Firestore outages: from their end); median per kind: ${perKind(median)}; ${tag}`,
      },
      soakRecoveryMaxMs: { value: recoveries.length ? Math.max(...recoveries) : 0, unit: 'ms', note: `max per kind: ${perKind((v) => Math.max(...v))}; ${tag}` },
      soakOutboxMessages: {
        value: outboxDocs.length,
        note: `final statuses: ${fmt(byStatus)}; failed by code: ${fmt(failedByCode)}; ${repeatedArrivals} repeated arrivals under the same id (resends); ${decryptErrors.length - lostToDecrypt.length} failed decryptions of repeats already shown, ${lostToDecrypt.length} of messages never shown; ${tag}`,
      },
      soakInboundMessages: { value: inboundSent.length, note: `${stored.length} message documents stored; ${tag}` },
      soakInvariantViolations: {
        value: violations,
        note: `${inv.filter((i) => !i.ok).map((i) => `${i.name}: ${i.violations.length}`).join(', ') || 'all invariants hold'}; incidents raised: ${fmt(raisedByType)}; open at the end: ${fmt(openByType)}; ${tag}`,
      },
    };
    return {
      seed,
      minutes: opts.minutes,
      loadAvg: load,
      faults,
      invariants: inv,
      violations,
      outbox: { created: outboxDocs.length, byStatus, failedByCode, repeatedArrivals },
      inbound: { sent: inboundSent.length, stored: stored.length },
      incidents: { raisedByType, openByType },
      figures,
      logFile,
    };
  }
}

/** The figures as the table bench/run.ts prints. */
export function formatFigures(figures: Record<string, Figure>): string {
  const rows = Object.entries(figures).map(([k, f]) => [k, String(f.value), f.unit ?? '', f.note]);
  const header = ['figure', 'value', 'unit', 'note'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
