/**
 * Bundles the deployable parts with esbuild. The functions bundle inlines the shared
 * contract (a workspace package that no registry has), so `functions/` deploys with only
 * firebase-functions and firebase-admin as dependencies.
 */
import { build } from 'esbuild';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * The deploy runtimes: Cloud Functions' nodejs22 (firebase.json) and the image's Node 22
 * (Dockerfile). Node 20, which the tests also run the bundles on, understands the same syntax.
 */
const TARGET = 'node22';

export async function buildFunctions(): Promise<void> {
  await build({
    entryPoints: [path.join(root, 'functions/src/index.ts')],
    outfile: path.join(root, 'functions/lib/index.js'),
    bundle: true,
    platform: 'node',
    target: TARGET,
    format: 'esm',
    sourcemap: true,
    external: ['firebase-functions', 'firebase-functions/*', 'firebase-admin', 'firebase-admin/*'],
    logLevel: 'warning',
  });
}

export async function buildReconciler(): Promise<void> {
  // Registry packages stay in node_modules (Baileys and friends load files and WASM relative to
  // their own package directories); workspace packages such as the contract are TypeScript
  // sources no registry has, so they are bundled in.
  const manifest = JSON.parse(await readFile(path.join(root, 'reconciler/package.json'), 'utf8')) as { dependencies?: Record<string, string> };
  const external = Object.keys(manifest.dependencies ?? {})
    .filter((name) => !name.startsWith('@wafleet/'))
    .flatMap((name) => [name, `${name}/*`]);
  await build({
    entryPoints: [path.join(root, 'reconciler/src/main.ts')],
    outfile: path.join(root, 'reconciler/dist/main.js'),
    bundle: true,
    platform: 'node',
    target: TARGET,
    format: 'esm',
    sourcemap: true,
    external,
    logLevel: 'warning',
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const what = process.argv.slice(2);
  const all = what.length === 0;
  if (all || what.includes('functions')) await buildFunctions();
  if (all || what.includes('reconciler')) await buildReconciler();
}
