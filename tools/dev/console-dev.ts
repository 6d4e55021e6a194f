/**
 * `npm run dev`, inside the emulator suite: builds and serves the operator console (console/) against
 * the emulators, and runs the rest of the dev stack (tools/dev-stack.ts: demo users, simulator,
 * reconciler, 30 demo accounts) as a child. Signals come here first (tools/emulators.ts
 * `signalCommand`) and are passed on to the stack, which stops its reconciler while Firestore is
 * still up; the console stops after it.
 */
import { spawn } from 'node:child_process';
import { writeFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { root } from '../emulators.ts';
import { buildConsole, emulatorHostsFromEnv, serveConsole, type ConsoleServer } from './console-server.ts';
import { preferredPort } from './ports.ts';

// The demo users tools/dev-stack.ts creates in the Auth emulator (its DEMO_PASSWORD).
const DEMO_PASSWORD = 'wafleet-dev-only';
const DEMO_USERS = ['admin@wafleet.local', 'operator@wafleet.local', 'viewer@wafleet.local'];

const say = (line: string) => process.stdout.write(`[console] ${line}\n`);
const pidFile = process.env.WAFLEET_EXEC_PIDFILE;
if (pidFile) await writeFile(pidFile, String(process.pid));

// The stack gets no pid file: its signals come from here.
const { WAFLEET_EXEC_PIDFILE: _ignored, ...stackEnv } = process.env;
const stack = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'tools', 'dev-stack.ts')], { cwd: root, env: stackEnv, stdio: ['ignore', 'pipe', 'inherit'] });
let stopping = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    stopping = true;
    if (stack.exitCode === null) stack.kill(sig);
  });
}

let server: ConsoleServer | null = null;
let url = '';
const banner = () =>
  process.stdout.write(`
  Operator console     ${url}   (Firestore, Auth and the callables of the emulators above)
                       sign in as ${DEMO_USERS.join(', ')} — password "${DEMO_PASSWORD}"
                       (admin: also deletes accounts and manages roles; viewer: status only)

`);

createInterface({ input: stack.stdout! }).on('line', (line) => {
  process.stdout.write(`${line}\n`);
  // The stack's summary ends with this line: say where the console is right under it.
  if (url && line.startsWith('Every status change is printed')) banner();
});

const exited = new Promise<number>((resolve) => stack.once('exit', (code, signal) => resolve(code ?? (signal ? 0 : 1))));

try {
  const started = Date.now();
  await buildConsole();
  server = await serveConsole(emulatorHostsFromEnv(), { port: await preferredPort(5173) });
  url = `${server.url}/`;
  say(`built in ${((Date.now() - started) / 1000).toFixed(1)} s, serving console/dist at ${url} (demo users: ${DEMO_USERS.join(', ')}; password "${DEMO_PASSWORD}")`);
} catch (err) {
  if (!stopping) say(`the console could not start: ${err instanceof Error ? err.message : String(err)} (the rest of the stack goes on)`);
}

const code = await exited;
await server?.close();
if (pidFile) await rm(pidFile, { force: true });
process.exit(code);
