/**
 * kill -9 at random instants while a real child process rewrites creds and keys (and restores
 * snapshots) as fast as it can; after every kill the state must load and be consistent.
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
const writer = path.join(here, 'fixtures', 'auth-crash-writer.ts');
// 20 kills take ~20 s on an idle 2-core machine, almost all of it child start-up (Baileys alone is
// ~0.6 s of CPU to import). On a machine shared with other suites the test stops adding kills
// after BUDGET_MS, but always does at least MIN_KILLS.
const KILLS = 20;
const MIN_KILLS = 10;
const BUDGET_MS = 25_000;
const POOL = 3;

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
let bundle: string;
beforeAll(async () => {
  bundleDir = await tempDir('wafleet-crash-bundle-');
  bundle = path.join(bundleDir.dir, 'auth-crash-writer.mjs');
  await build({ entryPoints: [writer], outfile: bundle, bundle: true, platform: 'node', format: 'esm', target: 'node20', logLevel: 'silent', plugins: [externalPackages] });
});

function spawnWriter(root: string, accountId: string): Child {
  const proc = spawn(process.execPath, [bundle, root, accountId], { cwd: repoRoot, stdio: ['pipe', 'pipe', 'pipe'] });
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
afterAll(async () => {
  for (const child of children) if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL');
  await bundleDir?.cleanup();
});

describe('auth state under kill -9', () => {
  it(`loads consistently after ${MIN_KILLS}–${KILLS} kills at random instants`, async () => {
    const { dir: root, cleanup } = await tempDir();
    const accountId = 'wa-crash';
    const pool: Child[] = [];
    const refill = (): void => {
      while (pool.length < POOL && children.length < KILLS) {
        const child = spawnWriter(root, accountId);
        children.push(child);
        pool.push(child);
      }
    };
    try {
      refill();
      const counters: number[] = [];
      const started = Date.now();
      for (let kill = 0; kill < KILLS && (kill < MIN_KILLS || Date.now() - started < BUDGET_MS); kill++) {
        const child = pool.shift();
        if (!child) throw new Error('pool exhausted');
        refill();
        await waitFor(() => child.output.includes('loaded') || child.proc.exitCode !== null, { timeoutMs: 30_000, label: 'writer to load' });
        child.proc.stdin?.write('go\n');
        await waitFor(() => child.output.includes('running') || child.proc.exitCode !== null, { timeoutMs: 15_000, label: 'writer to run' });
        expect(child.proc.exitCode, child.output).toBeNull();
        await new Promise((resolve) => setTimeout(resolve, 5 + Math.floor(Math.random() * 76)));
        child.proc.kill('SIGKILL');
        expect(await child.exited).toBe('SIGKILL');

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
});
