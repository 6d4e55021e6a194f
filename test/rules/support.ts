/**
 * Shared set-up for the firestore.rules tests: the rules test environment against the real
 * Firestore emulator, the principals every test speaks as, and seeding with rules disabled.
 *
 * The rules tests use their own project id, so they never see (or clear) the documents of the
 * tests that use `demo-wafleet`. Test files of this folder may run in parallel against the
 * same project: they never clear it and give every document a per-run, per-file id instead.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  initializeTestEnvironment,
  type RulesTestContext,
  type RulesTestEnvironment,
} from '@firebase/rules-unit-testing';
import { doc, setDoc, setLogLevel, type DocumentData, type Firestore } from 'firebase/firestore';

export const RULES_PROJECT_ID = 'demo-wafleet-rules';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** host and port of the Firestore emulator, from FIRESTORE_EMULATOR_HOST ("127.0.0.1:8080", "[::1]:8080"). */
export function firestoreEmulator(): { host: string; port: number } {
  const value = process.env.FIRESTORE_EMULATOR_HOST;
  if (!value) {
    throw new Error(
      'FIRESTORE_EMULATOR_HOST is not set: run the rules tests inside the emulators, e.g. ' +
        '`WAFLEET_EMULATOR_PORT_BASE=18300 npm run emulators:exec -- "npx vitest run test/rules"`',
    );
  }
  const colon = value.lastIndexOf(':');
  const host = value.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  const port = Number(value.slice(colon + 1));
  if (colon <= 0 || !Number.isInteger(port) || port <= 0) {
    throw new Error(`FIRESTORE_EMULATOR_HOST must be host:port, got "${value}"`);
  }
  return { host, port };
}

export async function startRulesEnv(): Promise<RulesTestEnvironment> {
  // Every denied request makes the SDK log a warning; the assertions say everything needed.
  setLogLevel('error');
  // WAFLEET_RULES_FILE runs the tests against another ruleset, e.g. the last commit's, to see
  // a new test fail before the rules change that makes it pass.
  const rules = await readFile(process.env.WAFLEET_RULES_FILE ?? path.join(root, 'firestore.rules'), 'utf8');
  return initializeTestEnvironment({
    projectId: RULES_PROJECT_ID,
    firestore: { ...firestoreEmulator(), rules },
  });
}

/**
 * The callers the rules tell apart. `claims` null means signed out; otherwise the custom claims
 * of a signed-in user with uid `uid`.
 */
export const PRINCIPALS = [
  { name: 'signed-out', uid: null, claims: null },
  { name: 'no-role', uid: 'uid-no-role', claims: {} },
  { name: 'bogus-role', uid: 'uid-bogus-role', claims: { role: 'superuser' } },
  { name: 'viewer', uid: 'uid-viewer', claims: { role: 'viewer' } },
  { name: 'operator', uid: 'uid-operator', claims: { role: 'operator' } },
  { name: 'admin', uid: 'uid-admin', claims: { role: 'admin' } },
] as const;

export type Principal = (typeof PRINCIPALS)[number];
export type PrincipalName = Principal['name'];

export function principal(name: PrincipalName): Principal {
  const found = PRINCIPALS.find((p) => p.name === name);
  if (!found) throw new Error(`unknown principal ${name}`);
  return found;
}

/**
 * The modular Firestore API for a test context. rules-unit-testing types its instance as the
 * compat Firestore, which wraps a modular one; the modular functions unwrap it themselves.
 */
export function dbOf(ctx: RulesTestContext): Firestore {
  return ctx.firestore() as unknown as Firestore;
}

/** One Firestore instance per principal, created on first use (creating them is not free). */
export function clientsFor(env: RulesTestEnvironment): (name: PrincipalName) => Firestore {
  const cache = new Map<PrincipalName, Firestore>();
  return (name) => {
    let db = cache.get(name);
    if (!db) {
      const p = principal(name);
      const ctx = p.uid === null ? env.unauthenticatedContext() : env.authenticatedContext(p.uid, { ...p.claims });
      db = dbOf(ctx);
      cache.set(name, db);
    }
    return db;
  };
}

/** Writes documents as the server would (rules disabled). */
export async function seed(env: RulesTestEnvironment, docs: Record<string, DocumentData>): Promise<void> {
  await env.withSecurityRulesDisabled(async (ctx) => {
    const db = dbOf(ctx);
    await Promise.all(Object.entries(docs).map(([p, data]) => setDoc(doc(db, p), data)));
  });
}

/**
 * A Firestore with rules disabled that stays open until close(), for files that seed before
 * many of their tests. withSecurityRulesDisabled keeps its context valid while its callback
 * runs, so the callback simply waits for close(): one connection for all the seeding instead
 * of a new app and connection per seed.
 */
export async function openSeeder(env: RulesTestEnvironment): Promise<{ db: Firestore; close(): Promise<void> }> {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let opened!: (db: Firestore) => void;
  const open = new Promise<Firestore>((resolve) => (opened = resolve));
  const done = env.withSecurityRulesDisabled(async (ctx) => {
    opened(dbOf(ctx));
    await released;
  });
  // If withSecurityRulesDisabled fails before calling back, fail instead of waiting forever.
  const db = await Promise.race([open, done.then(() => Promise.reject(new Error('seeder closed before it opened')))]);
  return {
    db,
    close: async () => {
      release();
      await done;
    },
  };
}

/**
 * A prefix that makes this run's document ids unique, so reruns against a long-lived emulator
 * never find documents of an earlier run (a create would silently become an update).
 * Lowercase letters and digits only: valid in account ids and message ids alike.
 */
export function runPrefix(file: string): string {
  return `${file}${Date.now().toString(36)}${Math.floor(Math.random() * 36 ** 3).toString(36)}`;
}
