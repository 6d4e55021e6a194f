/**
 * Starts the real Firebase emulator suite (Firestore, Auth, Functions) around a command.
 *
 * Offline machines: firebase-tools would download the Firestore emulator jar, and its
 * newest versions demand Java 21. When a local copy of the official emulator is present
 * (the Debian package google-cloud-cli-firestore-emulator, or WAFLEET_FIRESTORE_EMULATOR_JAR),
 * we point firebase-tools at a tiny launcher jar whose manifest names the real emulator's
 * main class and puts the real jar on the class path. Elsewhere firebase-tools downloads
 * the emulator as usual.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { buildFunctions } from './build.ts';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const PROJECT_ID = 'demo-wafleet';
const DEBIAN_JAR = '/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar';
const MAIN_CLASS = 'com.google.cloud.datastore.emulator.firestore.CloudFirestore';

/** Returns the launcher jar path to use as FIRESTORE_EMULATOR_BINARY_PATH, or null to let firebase-tools download. */
export async function firestoreLauncherJar(): Promise<string | null> {
  const real = process.env.WAFLEET_FIRESTORE_EMULATOR_JAR ?? (existsSync(DEBIAN_JAR) ? DEBIAN_JAR : null);
  if (!real) return null;
  if (!existsSync(real)) throw new Error(`WAFLEET_FIRESTORE_EMULATOR_JAR points to ${real}, which does not exist`);
  const dir = path.join(root, '.cache', 'firestore-launcher');
  const jar = path.join(dir, 'launcher.jar');
  const manifest = `Manifest-Version: 1.0\nMain-Class: ${MAIN_CLASS}\nClass-Path: ${pathToFileURL(real).href}\n`;
  const manifestFile = path.join(dir, 'META-INF', 'MANIFEST.MF');
  const current = existsSync(manifestFile) && existsSync(jar) ? await readFile(manifestFile, 'utf8') : '';
  if (current !== manifest) {
    await rm(dir, { recursive: true, force: true });
    await mkdir(path.dirname(manifestFile), { recursive: true });
    await writeFile(manifestFile, manifest);
    // zip keeps META-INF/MANIFEST.MF as written (jar would rewrite it); both are on these machines.
    execFileSync('zip', ['-q', '-X', jar, 'META-INF/MANIFEST.MF'], { cwd: dir });
  }
  return jar;
}

const PORT_KEYS = ['firestore', 'auth', 'functions', 'hub', 'logging', 'eventarc', 'tasks'] as const;

/**
 * firebase.json fixes the emulator ports for `npm run dev`. With WAFLEET_EMULATOR_PORT_BASE=N the
 * suite moves to N, N+1, … (a generated config beside firebase.json), so a test run, a benchmark
 * and a dev stack can run side by side.
 */
async function configFor(portBase: number | null): Promise<string> {
  const base = path.join(root, 'firebase.json');
  if (portBase === null) return base;
  if (!Number.isInteger(portBase) || portBase < 1024 || portBase > 65_000) {
    throw new Error(`WAFLEET_EMULATOR_PORT_BASE must be an integer between 1024 and 65000, got ${portBase}`);
  }
  const config = JSON.parse(await readFile(base, 'utf8')) as { emulators: Record<string, Record<string, unknown>> };
  PORT_KEYS.forEach((key, i) => {
    config.emulators[key] = { ...(config.emulators[key] ?? {}), host: '127.0.0.1', port: portBase + i };
  });
  config.emulators.firestore = { ...config.emulators.firestore, websocketPort: portBase + PORT_KEYS.length };
  const file = path.join(root, `.firebase.${portBase}.local.json`);
  await writeFile(file, `${JSON.stringify(config, null, 2)}\n`);
  return file;
}

export interface ExecOptions {
  /** Emulators to start; the default is the whole suite this project uses. */
  only?: string[];
  /** Extra environment for firebase-tools and the command. */
  env?: NodeJS.ProcessEnv;
  /**
   * Deliver SIGINT/SIGTERM to the command instead of firebase-tools. firebase-tools stops the
   * emulators at once on a signal and never passes it on, so a command that runs processes of its
   * own (`npm run dev`: a reconciler that must release its leases) would lose Firestore under them.
   * The command announces itself by writing its pid to $WAFLEET_EXEC_PIDFILE; until it has,
   * signals go to firebase-tools. The emulators stop when the command exits.
   */
  signalCommand?: boolean;
}

/**
 * Runs `command` (a shell command line) with the emulators up and the functions loaded.
 * firebase-tools sets FIRESTORE_EMULATOR_HOST, FIREBASE_AUTH_EMULATOR_HOST and GCLOUD_PROJECT
 * for the command. Resolves with the command's exit code.
 */
export async function execWithEmulators(command: string, opts: ExecOptions = {}): Promise<number> {
  const only = opts.only ?? ['firestore', 'auth', 'functions'];
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env };
  const launcher = await firestoreLauncherJar();
  if (launcher && !env.FIRESTORE_EMULATOR_BINARY_PATH) env.FIRESTORE_EMULATOR_BINARY_PATH = launcher;
  if (only.includes('functions')) await buildFunctions();
  // Keeps firebase-tools from phoning home on machines without internet.
  env.FIREBASE_CLI_DISABLE_UPDATE_CHECK ??= 'true';
  env.FIREBASE_CLI_EXPERIMENTS ??= '';
  // Without it, google-auth-library first probes the GCE metadata server, which costs seconds
  // on every process's first Firestore call where that server does not exist.
  env.METADATA_SERVER_DETECTION ??= 'none';
  // firebase-tools exports it only in some configurations; the command can always rely on it.
  env.GCLOUD_PROJECT = PROJECT_ID;
  const portBase = env.WAFLEET_EMULATOR_PORT_BASE ? Number(env.WAFLEET_EMULATOR_PORT_BASE) : null;
  const config = await configFor(portBase);
  const ports = JSON.parse(await readFile(config, 'utf8')) as { emulators: { functions: { port: number } } };
  // Where tests, tools and the dev stack reach the callables (region us-central1, the default).
  env.WAFLEET_FUNCTIONS_URL = `http://127.0.0.1:${ports.emulators.functions.port}/${PROJECT_ID}/us-central1`;
  const bin = path.join(root, 'node_modules', '.bin', 'firebase');
  const args = ['emulators:exec', '--config', config, '--project', PROJECT_ID, '--only', only.join(','), command];
  const pidFile = opts.signalCommand ? path.join(root, '.cache', `exec-${process.pid}.pid`) : null;
  if (pidFile) {
    await mkdir(path.dirname(pidFile), { recursive: true });
    await rm(pidFile, { force: true });
    env.WAFLEET_EXEC_PIDFILE = pidFile;
  }
  // Its own process group: when firebase-tools dies on a startup error it can leave the Java
  // emulator behind, holding the port; we end the whole group when it exits.
  const child = spawn(bin, args, { cwd: root, env, stdio: 'inherit', detached: true });
  const forward = (sig: NodeJS.Signals) => {
    if (pidFile && signalPidFrom(pidFile, sig)) return;
    child.kill(sig);
  };
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      killGroup(child.pid);
      if (pidFile) rmSync(pidFile, { force: true });
      const status = code ?? (signal ? 128 + 1 : 1);
      if (config === path.join(root, 'firebase.json')) resolve(status);
      else rm(config, { force: true }).then(() => resolve(status), reject);
    });
  });
}

/** Sends `sig` to the pid written in `file`; false when there is none (yet) or it is gone. */
function signalPidFrom(file: string, sig: NodeJS.Signals): boolean {
  let pid: number;
  try {
    pid = Number(readFileSync(file, 'utf8').trim());
  } catch {
    return false;
  }
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

function killGroup(pid: number | undefined): void {
  if (!pid) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // ESRCH: the group is already gone, which is the normal case.
  }
}
