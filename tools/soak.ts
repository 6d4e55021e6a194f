/**
 * `npm run soak -- --minutes N [--seed S]`: the soak (reconciler/test/soak/soak.ts) with 30
 * accounts against the simulator and the Firestore emulator: messages both ways, a seeded random
 * mix of faults every 10–30 s, then the invariants. Prints the figures and merges the `soak*` keys
 * into bench/results/latest.json (every other key kept). Exit code 0 when every invariant held, 1
 * otherwise, 2 on bad arguments.
 *
 * Runs itself inside the emulators (Firestore only) on ports of its own, WAFLEET_EMULATOR_PORT_BASE
 * (default 18900), so it never collides with `npm run dev`, `npm test` (18500) or `npm run bench` (18700).
 */
import path from 'node:path';
import { execWithEmulators, root } from './emulators.ts';

const USAGE = 'usage: npm run soak -- --minutes N [--seed S]   (N > 0 minutes of faults, default 10; S a whole number to replay a run)';

function parseArgs(argv: string[]): { minutes: number; seed: number } {
  let minutes = 10;
  let seed = Math.floor(Math.random() * 2 ** 31);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf('=');
    const flag = eq >= 0 ? arg.slice(0, eq) : arg;
    const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
    const num = Number(value);
    if (flag === '--minutes' && value !== undefined && Number.isFinite(num) && num > 0) minutes = num;
    else if (flag === '--seed' && value !== undefined && Number.isInteger(num) && num >= 0) seed = num;
    else {
      console.error(`soak: bad argument ${[arg, eq < 0 ? value : undefined].filter((x) => x !== undefined).join(' ')}\n${USAGE}`);
      process.exit(2);
    }
  }
  return { minutes, seed };
}

const { minutes, seed } = parseArgs(process.argv.slice(2));

if (!process.env.WAFLEET_SOAK_INNER) {
  // Outside: start the emulators around this same script.
  console.log(`[soak] seed ${seed}, ${minutes} min of faults; starting the Firestore emulator…`);
  const env = { WAFLEET_EMULATOR_PORT_BASE: process.env.WAFLEET_EMULATOR_PORT_BASE ?? '18900', WAFLEET_SOAK_INNER: '1' };
  process.exit(await execWithEmulators(`node --import tsx tools/soak.ts --minutes ${minutes} --seed ${seed}`, { only: ['firestore'], env }));
}

// Inside the emulators.
const { formatFigures, mergeSoakFigures, runSoak } = await import('../reconciler/test/soak/soak.ts');
const started = Date.now();
const result = await runSoak({ minutes, seed, log: (line) => process.stdout.write(`[soak] ${new Date().toISOString()} ${line}\n`) }).catch((err: unknown) => {
  console.error(`[soak] the soak could not run (seed ${seed}):`, err);
  process.exit(1);
});
console.log(`\n[soak] faults (${result.faults.length}):`);
for (const f of result.faults) console.log(`  ${new Date(f.at).toISOString()} ${f.kind}: ${f.detail} → ${f.recoveryMs === null ? 'NOT recovered' : `${f.recoveryMs} ms`}`);
console.log('\n[soak] invariants:');
for (const inv of result.invariants) {
  console.log(`  ${inv.ok ? 'ok  ' : 'FAIL'} ${inv.name}: ${inv.measured}`);
  for (const v of inv.violations.slice(0, 20)) console.log(`         ${v}`);
  if (inv.violations.length > 20) console.log(`         … and ${inv.violations.length - 20} more`);
}
console.log(`\n${formatFigures(result.figures)}\n`);
const out = path.join(root, 'bench', 'results', 'latest.json');
await mergeSoakFigures(out, result.figures);
console.log(`[soak] merged the soak* figures into ${path.relative(process.cwd(), out)}; reconciler output in ${result.logFile}`);
console.log(`[soak] ${result.violations === 0 ? 'every invariant held' : `${result.violations} invariant violation(s)`} (seed ${seed}, ${((Date.now() - started) / 60_000).toFixed(1)} min in all)`);
process.exit(result.violations === 0 ? 0 : 1);
