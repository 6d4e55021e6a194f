/**
 * `npm test`: type-checks the workspace, then runs the whole vitest suite inside one emulator
 * suite, and ends with a plain "tests: N passed, N failed" line. Arguments go to vitest
 * (e.g. `npm test -- wa-sim` runs one package's tests).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { execWithEmulators, root } from './emulators.ts';

const vitestArgs = process.argv.slice(2);
// Per process: two runs side by side (a developer's and CI's, or two filters) keep their own counts.
const report = path.join(root, '.cache', `vitest-report-${process.pid}.json`);

console.log('[wafleet] type-checking…');
// The workspace, then the console (browser code: a tsconfig of its own).
const tsc = ['tsconfig.json', 'console/tsconfig.json'].map((project) => spawnSync(path.join(root, 'node_modules', '.bin', 'tsc'), ['-p', project, '--noEmit'], { cwd: root, stdio: 'inherit' })).find((r) => r.status !== 0) ?? { status: 0 };
if (tsc.status !== 0) {
  console.error('[wafleet] type errors; fix them first.');
  process.exit(tsc.status ?? 1);
}

rmSync(report, { force: true });
const quoted = vitestArgs.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
// A port range of its own, so a test run never collides with a running `npm run dev`.
const env = { WAFLEET_EMULATOR_PORT_BASE: process.env.WAFLEET_EMULATOR_PORT_BASE ?? '18500' };
const code = await execWithEmulators(
  `node_modules/.bin/vitest run --reporter=default --reporter=json --outputFile.json=${path.relative(root, report)} ${quoted}`,
  { env },
);

if (existsSync(report)) {
  const r = JSON.parse(readFileSync(report, 'utf8')) as { numPassedTests: number; numFailedTests: number; numPendingTests: number; numTodoTests: number };
  rmSync(report, { force: true });
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed${skipped ? `, ${skipped} skipped` : ''}`);
} else {
  console.log('tests: 0 passed, 1 failed (the test run ended before reporting; see above)');
}
process.exit(code);
