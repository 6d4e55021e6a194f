/**
 * kill -9 at random instants while a real child process rewrites creds and keys (and restores
 * snapshots) as fast as it can; after every kill the state must load and be consistent. A second
 * writer restores snapshots with their backup generation: the marker must always match the state.
 *
 * Start-up cost decides this test's run time, so: the writer (fixtures/auth-crash-writer.ts and
 * the store it imports) is bundled once with esbuild and run by plain `node`, which starts ~3×
 * faster than through the tsx loader (tsx hooks every module resolution, and Baileys has hundreds);
 * and children are started ahead of time, a small pool waiting for "go".
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { build, type Plugin } from 'esbuild';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuthStore } from '../src/store/auth-state.ts';
import { tempDir, waitFor } from './helpers.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..');
const WRITERS = ['auth-crash-writer', 'auth-generation-crash-writer'] as const;
type Writer = (typeof WRITERS)[number];
// 20 kills take ~20 s on an idle 2-core machine, almost all of it child start-up (Baileys alone is
// ~0.6 s of CPU to import). On a machine shared with other suites the test stops adding kills
// after BUDGET_MS, but always does at least MIN_KILLS.
const KILLS = 20;
const MIN_KILLS = 10;
const BUDGET_MS = 25_000;
const POOL = 3;
const GENERATION_KILLS = 10;

interface Child {
  proc: ChildProcess;
  output: string;
  exited: Promise<NodeJS.Signals | number | null>;
}

/** Bundles our TypeScript; packages from node_modules stay external, imported by absolute path. */
const externalPackages: Plugin = {
  name: 'external-packages',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, async (args) => {
      if (args.pluginData === 'resolving' || args.path.startsWith('@wafleet/')) return undefined;
      const resolved = await b.resolve(args.path, { kind: args.kind, resolveDir: args.resolveDir, pluginData: 'resolving' });
      if (resolved.errors.length > 0) return { errors: resolved.errors };
      return { path: resolved.path, external: true };
    });
  },
};

let bundleDir: { dir: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  bundleDir = await tempDir('wafleet-crash-bundle-');
  await build({
    entryPoints: WRITERS.map((name) => path.join(here, 'fixtures', `${name}.ts`)),
    outdir: bundleDir.dir,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'silent',
    plugins: [externalPackages],
  });
});

function spawnWriter(writer: Writer, args: string[]): Child {
  const proc = spawn(process.execPath, [path.join(bundleDir.dir, `${writer}.mjs`), ...args], { cwd: repoRoot, stdio: ['pipe', 'pipe', 'pipe'] });
  const child: Child = {
    proc,
    output: '',
    exited: new Promise((resolve) => proc.once('exit', (code, signal) => resolve(signal ?? code))),
  };
  proc.stdout?.on('data', (chunk: Buffer) => (child.output += chunk.toString()));
  proc.stderr?.on('data', (chunk: Buffer) => (child.output += chunk.toString()));
  return child;
}

const children: Child[] = [];

/** Starts `POOL` children ahead of time; `next()` hands out one whose start-up has begun. */
function writerPool(writer: Writer, args: string[], max: number): { next: () => Child } {
  const pool: Child[] = [];
  let started = 0;
  const refill = (): void => {
    while (pool.length < POOL && started < max) {
      const child = spawnWriter(writer, args);
      started++;
      children.push(child);
      pool.push(child);
    }
  };
  refill();
  return {
    next: () => {
      const child = pool.shift();
      if (!child) throw new Error('pool exhausted');
      refill();
      return child;
    },
  };
}

/** Lets the child start writing, then kills it after 5–80 ms. */
async function killWhileWriting(child: Child): Promise<void> {
  await waitFor(() => child.output.includes('loaded') || child.proc.exitCode !== null, { timeoutMs: 30_000, label: 'writer to load' });
  child.proc.stdin?.write('go\n');
  await waitFor(() => child.output.includes('running') || child.proc.exitCode !== null, { timeoutMs: 15_000, label: 'writer to run' });
  expect(child.proc.exitCode, child.output).toBeNull();
  await new Promise((resolve) => setTimeout(resolve, 5 + Math.floor(Math.random() * 76)));
  child.proc.kill('SIGKILL');
  expect(await child.exited).toBe('SIGKILL');
}
afterAll(async () => {
  for (const child of children) if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL');
  await bundleDir?.cleanup();
});

describe('auth state under kill -9', () => {
  it(`loads consistently after ${MIN_KILLS}–${KILLS} kills at random instants`, async () => {
    const { dir: root, cleanup } = await tempDir();
    const accountId = 'wa-crash';
    try {
      const pool = writerPool('auth-crash-writer', [root, accountId], KILLS);
      const counters: number[] = [];
      const started = Date.now();
      for (let kill = 0; kill < KILLS && (kill < MIN_KILLS || Date.now() - started < BUDGET_MS); kill++) {
        await killWhileWriting(pool.next());

        const store = await AuthStore.create({ root });
        const auth = await store.open(accountId); // throws CorruptAuthStateError if any file is torn
        try {
          const c = auth.state.creds.accountSyncCounter;
          expect(c).toBeGreaterThanOrEqual(1);
          expect(auth.state.creds.nextPreKeyId).toBe(c);
          // Sessions are set (durably) before the creds that count them: tag is c, or c+1 if the
          // kill landed between the next iteration's key writes and its creds write.
          const sessions = await auth.state.keys.get('session', Array.from({ length: 30 }, (_, k) => `s-${k}`));
          expect(Object.keys(sessions)).toHaveLength(30);
          for (const value of Object.values(sessions)) {
            const tag = Number(Buffer.from(value).toString().slice('tag:'.length));
            expect([c, c + 1]).toContain(tag);
          }
          if (c >= 4) {
            const preKeys = await auth.state.keys.get('pre-key', Array.from({ length: 812 }, (_, i) => String(i + 1)));
            expect(Object.keys(preKeys)).toHaveLength(812);
            const last = Math.floor(c / 4) * 4;
            for (const pair of Object.values(preKeys)) {
              expect(pair.public.length).toBe(32);
              // Each shard file is old or new; shards of one set may differ, but only by one round.
              expect([last % 256, (last + 4) % 256]).toContain(pair.public[0]);
              expect(new Set(pair.public).size).toBe(1);
            }
          }
          counters.push(c);
        } finally {
          await auth.close();
        }
        // Recovery left nothing behind: no staging, trash or ready directories, no temp files.
        expect((await readdir(root)).filter((n) => n.startsWith('.'))).toEqual([]);
        expect((await readdir(path.join(root, accountId))).filter((n) => n.startsWith('.'))).toEqual([]);
      }
      expect(counters.length).toBeGreaterThanOrEqual(MIN_KILLS);
      // Progress survived the kills: each run continued from where the previous one stopped.
      for (let i = 1; i < counters.length; i++) expect(counters[i]).toBeGreaterThanOrEqual(counters[i - 1] as number);
      expect(counters.at(-1)).toBeGreaterThan(counters[0] as number);
    } finally {
      await cleanup();
    }
  });

  it(`the backup generation marker always matches the restored state, after ${GENERATION_KILLS} kills`, async () => {
    const { dir, cleanup } = await tempDir();
    const root = path.join(dir, 'live');
    const accountId = 'wa-gen';
    try {
      const pool = writerPool('auth-generation-crash-writer', [root, dir, accountId], GENERATION_KILLS);
      const generations: number[] = [];
      for (let kill = 0; kill < GENERATION_KILLS; kill++) {
        await killWhileWriting(pool.next());
        const store = await AuthStore.create({ root });
        const generation = await store.backupGeneration(accountId);
        expect(await store.exists(accountId)).toBe(true); // "running" comes after the first restore
        const auth = await store.open(accountId);
        try {
          // Restore switches state and marker as one: a marker never names another state's generation.
          expect(generation).toBe(auth.state.creds.accountSyncCounter);
        } finally {
          await auth.close();
        }
        generations.push(generation as number);
        expect((await readdir(root)).filter((n) => n.startsWith('.'))).toEqual([]);
        expect((await readdir(path.join(root, accountId))).filter((n) => n.startsWith('.'))).toEqual([]);
      }
      expect(generations).toHaveLength(GENERATION_KILLS);
      for (let i = 1; i < generations.length; i++) expect(generations[i]).toBeGreaterThanOrEqual(generations[i - 1] as number);
      expect(generations.at(-1)).toBeGreaterThan(generations[0] as number);
    } finally {
      await cleanup();
    }
  });
});
