/**
 * `npm run bench [-- <suite>...]`: runs bench/run.ts, inside the emulator suite when a chosen
 * suite needs Firestore (on a port range of its own, so it never collides with `npm run dev` or a
 * test run). Suites that need no emulators run without paying their ~25 s start.
 */
import { spawnSync } from 'node:child_process';
import { suites } from '../bench/suites.ts';
import { execWithEmulators, root } from './emulators.ts';

const names = process.argv.slice(2);
const chosen = names.length ? suites.filter((s) => names.includes(s.name)) : suites;
const quoted = names.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
const command = `node --import tsx bench/run.ts ${quoted}`.trim();

if (chosen.some((s) => s.needsEmulators)) {
  const env = { WAFLEET_EMULATOR_PORT_BASE: process.env.WAFLEET_EMULATOR_PORT_BASE ?? '18700' };
  process.exit(await execWithEmulators(command, { env }));
}
// bench/run.ts reports unknown suite names itself.
const r = spawnSync(process.execPath, ['--import', 'tsx', 'bench/run.ts', ...names], { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);
