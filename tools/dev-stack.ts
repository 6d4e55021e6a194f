/**
 * Runs inside the emulator suite for `npm run dev` (tools/dev.ts): the demo users, the WhatsApp
 * simulator, a reconciler process, and a fleet of 30 demo accounts created through the real
 * `createAccount` callable and linked by simulated phones scanning the QR codes the reconciler
 * publishes. Prints progress, then a summary of where to look. Ctrl-C reaches this process first
 * (tools/emulators.ts `signalCommand`): it stops the reconciler while Firestore is still up, then
 * the simulator, and returns so firebase-tools stops the emulators.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { startSimulator, type Phone, type Simulator } from '@wafleet/wa-sim';
import { getApps, initializeApp } from 'firebase-admin/app';
import { getAuth, type UserRecord } from 'firebase-admin/auth';
import { getFirestore } from 'firebase-admin/firestore';
import { applyRole } from '../functions/src/roles.ts';
import { callFunction, signIn } from './callables-client.ts';
import { DemoFleet, type DemoAccount } from './dev/demo-fleet.ts';
import { preferredPort } from './dev/ports.ts';
import { LogFolder, spawnReconciler, type ReconcilerProcess } from './dev/reconciler-process.ts';
import { root } from './emulators.ts';

const DEMO_PASSWORD = 'wafleet-dev-only';
const ACCOUNTS = 30;
const SESSIONS_DIR = path.join(root, '.sessions');
const RECONCILER_SESSIONS = path.join(SESSIONS_DIR, 'reconciler');
const SIM_STATE_FILE = path.join(SESSIONS_DIR, 'wa-sim-dev.json');
const DEMO_CONTACT = '15557770001';

const projectId = process.env.GCLOUD_PROJECT ?? 'demo-wafleet';
const functionsUrl = process.env.WAFLEET_FUNCTIONS_URL!;
const authHost = process.env.FIREBASE_AUTH_EMULATOR_HOST!;
const firestoreHost = process.env.FIRESTORE_EMULATOR_HOST!;
const pidFile = process.env.WAFLEET_EXEC_PIDFILE;
const startedAt = Date.now();

const say = (line: string) => process.stdout.write(`[dev] ${line}\n`);
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

// Installed first, so a Ctrl-C during start-up still stops whatever already runs.
const stop = new AbortController();
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => stop.abort(sig));
if (pidFile) await writeFile(pidFile, String(process.pid));
// A pending promise alone does not keep Node running; the timer does.
const keepAlive = setInterval(() => {}, 60_000);

const app = getApps()[0] ?? initializeApp({ projectId });
const db = getFirestore(app);
let sim: Simulator | null = null;
let reconciler: ReconcilerProcess | null = null;
let fleet: DemoFleet | null = null;
let logs: LogFolder | null = null;
let exitCode = 0;

try {
  await run();
} catch (err) {
  if (!stop.signal.aborted) {
    console.error(`[dev] ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    exitCode = 1;
  }
}
await shutdown();
clearInterval(keepAlive);
process.exit(exitCode);

async function run(): Promise<void> {
  await demoUser('admin@wafleet.local', 'admin');
  await demoUser('operator@wafleet.local', 'operator');
  await demoUser('viewer@wafleet.local', 'viewer');

  await mkdir(RECONCILER_SESSIONS, { recursive: true, mode: 0o700 });
  sim = await startSimulator({ port: await preferredPort(7733), controlPort: await preferredPort(7734), stateFile: SIM_STATE_FILE });
  // libsignal reports every session change on console.info; only our own lines matter here.
  console.info = () => {};
  const liveSim = sim;
  const phone = (n: string): Phone => liveSim.phones().find((p) => p.number === n) ?? liveSim.createPhone({ number: n });
  const accounts: DemoAccount[] = Array.from({ length: ACCOUNTS }, (_, i) => {
    const n = String(i + 1).padStart(2, '0');
    return { id: `wa-${n}`, phone: phone(`155500000${n}`) };
  });
  if (!sim.contacts().some((c) => c.number === DEMO_CONTACT)) sim.createContact({ number: DEMO_CONTACT, name: 'Demo contact' });
  say(`WhatsApp simulator: ${sim.wsUrl}, control API ${sim.controlUrl} (state ${path.relative(root, SIM_STATE_FILE)})`);

  const httpPort = await preferredPort(8081);
  logs = new LogFolder((text) => process.stdout.write(`[reconciler] ${text}\n`));
  const folder = logs;
  reconciler = spawnReconciler({
    env: {
      ...process.env,
      NODE_ENV: 'development',
      SESSIONS_PATH: RECONCILER_SESSIONS,
      WA_SOCKET_URL: sim.wsUrl,
      WA_NOISE_ROOT_PUBKEY: sim.rootPublicKeyBase64,
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: String(httpPort),
      // Thirty sessions at info are a wall of text; LOG_LEVEL=info npm run dev shows it all.
      LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
    },
    onLine: (line) => folder.line(line),
  });
  const rec = reconciler;
  void rec.exited.then((exit) => {
    if (stop.signal.aborted) return;
    say(`the reconciler exited unexpectedly (code ${exit.code}, signal ${exit.signal}); stopping the dev stack`);
    exitCode = 1;
    stop.abort('reconciler exited');
  });
  say(`reconciler: pid ${rec.pid}, http://127.0.0.1:${httpPort}, sessions in ${path.relative(root, RECONCILER_SESSIONS)}`);
  say(`its log follows at LOG_LEVEL=${process.env.LOG_LEVEL ?? 'warn'}; lines that other accounts repeat within 30 s are folded into one`);

  const token = await signIn(authHost, 'operator@wafleet.local', DEMO_PASSWORD);
  fleet = new DemoFleet({
    db,
    sim,
    accounts,
    print: say,
    onError: (err) => {
      say(`Firestore listener failed: ${err.message}`);
      exitCode = 1;
      stop.abort('listener failed');
    },
    onLinkLost: (id) => {
      void callFunction(functionsUrl, 'requestQr', { accountId: id }, token).then(
        (r) => say(r.ok ? `${id}: asked for a new QR code (requestQr)` : `${id}: requestQr failed: ${r.status} ${r.message}`),
        (err: Error) => say(`${id}: requestQr failed: ${err.message}`),
      );
    },
  });
  fleet.start();

  let created = 0;
  for (const a of accounts) {
    if (stop.signal.aborted) return;
    const r = await callFunction(functionsUrl, 'createAccount', { accountId: a.id, displayName: `Demo ${a.id.slice(3)}` }, token);
    if (r.ok) created++;
    else if (r.status !== 'ALREADY_EXISTS') throw new Error(`createAccount ${a.id}: ${r.status} ${r.message}`);
  }
  say(`${created} account(s) created through createAccount (${ACCOUNTS - created} existed); phones scan every QR code published in accountQr`);

  // A reminder of who is still waiting, in case something is stuck.
  const reminder = setInterval(() => {
    const waiting = fleet!.notConnected();
    say(`still waiting for ${waiting.length}: ${waiting.slice(0, 5).join('; ')}${waiting.length > 5 ? '; …' : ''}`);
  }, 60_000);
  try {
    await fleet.allConnected(stop.signal);
  } finally {
    clearInterval(reminder);
  }
  fleet.verbose = true;
  printSummary(liveSim, httpPort, fleet.linkedByQr.size);
  await new Promise<void>((resolve) => stop.signal.addEventListener('abort', () => resolve(), { once: true }));
}

async function demoUser(email: string, role: 'admin' | 'operator' | 'viewer'): Promise<UserRecord> {
  const auth = getAuth(app);
  const user = await auth.getUserByEmail(email).catch(() => auth.createUser({ email, password: DEMO_PASSWORD, emailVerified: true }));
  await applyRole(auth, user, role);
  return user;
}

async function shutdown(): Promise<void> {
  fleet?.stop();
  if (reconciler) {
    say('stopping the reconciler (SIGTERM)…');
    const asked = Date.now();
    const exit = await reconciler.stop();
    const how = exit.killed ? 'killed: it had not stopped in time' : `exit code ${exit.code}`;
    logs?.flush();
    say(`reconciler stopped after ${seconds(exit.at - asked)} (${how})`);
  }
  if (sim) {
    await sim.stop();
    say('simulator stopped (its state file keeps the phones and their linked devices)');
  }
  if (pidFile) await rm(pidFile, { force: true });
}

function printSummary(s: Simulator, httpPort: number, linkedByQr: number): void {
  const rec = `http://127.0.0.1:${httpPort}`;
  const fs = `http://${firestoreHost}/v1/projects/${projectId}/databases/(default)/documents`;
  process.stdout.write(`
wafleet dev stack: all ${ACCOUNTS} accounts connected after ${seconds(Date.now() - startedAt)}: ${linkedByQr} linked by scanning a QR code, ${ACCOUNTS - linkedByQr} logged in with stored credentials.

  Firestore emulator   ${firestoreHost}  (in memory; project ${projectId})
                       ${fs}/accountStatus
  Auth emulator        ${authHost}
  Callables            ${functionsUrl}/<name>   (createAccount, updateAccount, requestQr, sendMessage, …; docs/data-model.md)
  Reconciler           ${rec}/metrics   ${rec}/readyz   (pid ${reconciler?.pid}; its log: the [reconciler] lines)
  WhatsApp simulator   control API ${s.controlUrl}   WebSocket ${s.wsUrl}
  Kept across restarts .sessions/reconciler (credentials), ${path.relative(root, SIM_STATE_FILE)} (phones, linked devices)

  Demo users (password "${DEMO_PASSWORD}"): admin@wafleet.local, operator@wafleet.local, viewer@wafleet.local

  Try it:
    curl -s ${s.controlUrl}/phones            # the simulated phones and their linked devices
    curl -s ${rec}/metrics | grep '^wafleet_sessions'
    TOKEN=$(curl -s 'http://${authHost}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=any' \\
      -H 'content-type: application/json' \\
      -d '{"email":"operator@wafleet.local","password":"${DEMO_PASSWORD}","returnSecureToken":true}' | node -pe 'JSON.parse(require("fs").readFileSync(0)).idToken')
    call() { curl -s ${functionsUrl}/$1 -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d "{\\"data\\":$2}"; echo; }
    call sendMessage '{"accountId":"wa-01","to":"+${DEMO_CONTACT}","text":"hello from wafleet"}'   # queued in outbox
    call updateAccount '{"accountId":"wa-02","desiredState":"disconnected"}'                  # watch it change below
    call requestQr '{"accountId":"wa-02"}'       # refused while connected; after relinkAccount a phone scans the new QR
    call relinkAccount '{"accountId":"wa-03"}'

Every status change is printed from here on. Press Ctrl-C to stop.
`);
}
