/**
 * Runs every benchmark suite, prints one table and writes all figures as one JSON object
 * to bench/results/latest.json. `npm run bench` runs this under the emulator suite.
 * `npm run bench -- <suite-name>...` runs only the named suites (the JSON then holds only those).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchSuite, Figure } from './suite.ts';
import { suites } from './suites.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

async function main(): Promise<void> {
  const wanted = process.argv.slice(2);
  const chosen: BenchSuite[] = wanted.length ? suites.filter((s) => wanted.includes(s.name)) : suites;
  if (wanted.length && chosen.length !== wanted.length) {
    const known = suites.map((s) => s.name).join(', ');
    throw new Error(`unknown suite in ${wanted.join(', ')}; known: ${known}`);
  }
  const all: Record<string, Figure> = {};
  for (const suite of chosen) {
    process.stdout.write(`\n== ${suite.name}\n`);
    const started = Date.now();
    const figures = await suite.run();
    for (const [key, fig] of Object.entries(figures)) {
      if (key in all) throw new Error(`figure ${key} reported twice`);
      all[key] = fig;
    }
    process.stdout.write(`   (${((Date.now() - started) / 1000).toFixed(1)} s)\n`);
  }
  const rows = Object.entries(all).map(([k, f]) => [k, formatValue(f.value), f.target ?? '', f.note ?? '']);
  const header = ['figure', 'value', 'target', 'note'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  process.stdout.write(`\n${line(header)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n`);
  for (const r of rows) process.stdout.write(`${line(r)}\n`);

  const out = path.join(here, 'results', 'latest.json');
  // Suites run one at a time too (`npm run bench -- fleet`): the figures of the others stay.
  const previous = await readFile(out, 'utf8').then((t) => JSON.parse(t) as Record<string, unknown>, () => ({}));
  const json: Record<string, unknown> = {
    ...previous,
    generatedAt: new Date().toISOString(),
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? 'unknown', node: process.version },
  };
  for (const [k, f] of Object.entries(all)) json[k] = f.value;
  await mkdir(path.dirname(out), { recursive: true });
  await writeFile(out, `${JSON.stringify(json, null, 2)}\n`);
  process.stdout.write(`\nwrote ${path.relative(process.cwd(), out)}\n`);
}

function formatValue(v: number): string {
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
