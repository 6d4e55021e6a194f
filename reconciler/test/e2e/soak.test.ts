/**
 * Issue 16 (soak), the short run in `npm test`: 30 linked accounts, messages both ways and a seeded
 * random mix of faults for about two minutes (WAFLEET_SOAK_MINUTES to change it, WAFLEET_SOAK_SEED
 * to replay a run), then every invariant of reconciler/test/soak/soak.ts must hold. `npm run soak`
 * is the long version, which also records its figures in bench/results/latest.json.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatFigures, INVARIANTS, mergeSoakFigures, runSoak, type SoakResult } from '../soak/soak.ts';

const MINUTES = Number(process.env.WAFLEET_SOAK_MINUTES ?? 2);
// A fixed seed: every run of the suite deals the same faults in the same order, so a failure here
// is a regression to replay, not a roll of the dice. Random seeds are `npm run soak`'s job.
const SEED = Number(process.env.WAFLEET_SOAK_SEED ?? 20261203);

let result: SoakResult;

describe(`soak: ${MINUTES} min of faults with 30 accounts`, () => {
  beforeAll(async () => {
    result = await runSoak({
      minutes: MINUTES,
      seed: SEED,
      // Shorter pauses than the CLI's 10–30 s, so two minutes see most kinds of fault.
      pauseMs: [3_000, 10_000],
      // Not console.log: the harness routes the console into its silent logger while the soak runs.
      log: (line) => process.stdout.write(`${new Date().toISOString()} ${line}\n`),
    });
    process.stdout.write(`${formatFigures(result.figures)}\nfaults:\n${result.faults.map((f) => `  ${f.kind}: ${f.detail} → ${f.recoveryMs ?? 'not recovered'} ms`).join('\n')}\n`);
    // Generous on a loaded 2-core machine: linking 30 accounts, the run, then convergence.
  }, (MINUTES * 60 + 600) * 1000);

  it('injected faults and carried messages both ways', () => {
    expect(result.faults.length).toBeGreaterThan(0);
    expect(result.outbox.created).toBeGreaterThan(0);
    expect(result.inbound.sent).toBeGreaterThan(0);
  });

  it.each(INVARIANTS)('invariant %s', (name) => {
    const inv = result.invariants.find((i) => i.name === name)!;
    expect(inv, `invariant ${name} was not checked`).toBeDefined();
    expect(inv.violations, `${name} (${inv.measured}); seed ${result.seed}; reconciler output in ${result.logFile}`).toEqual([]);
  });

  it('reports every figure, with the seed and the load average in the notes', () => {
    for (const key of ['soakMinutes', 'soakFaults', 'soakRecoveryMedianMs', 'soakRecoveryMaxMs', 'soakOutboxMessages', 'soakInboundMessages', 'soakInvariantViolations']) {
      expect(result.figures[key], key).toBeDefined();
      expect(result.figures[key]!.note).toContain(`seed ${result.seed}`);
      expect(result.figures[key]!.note).toContain('load avg');
    }
    expect(result.figures.soakInvariantViolations!.value).toBe(0);
  });
});

describe('merging soak figures into a results file', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'wafleet-soak-merge-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('replaces only the soak* keys and keeps every other one', async () => {
    const file = path.join(dir, 'latest.json');
    await writeFile(file, JSON.stringify({ generatedAt: 'x', machine: { cpus: 2 }, simRssMb: 278, soakOld: 1, soakMinutes: 9 }));
    await mergeSoakFigures(file, { soakMinutes: { value: 2, unit: 'min', note: 'seed 7' }, soakFaults: { value: 5, note: 'by kind' } });
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({
      generatedAt: 'x',
      machine: { cpus: 2 },
      simRssMb: 278,
      soakMinutes: 2,
      soakFaults: 5,
      soakNotes: { soakMinutes: 'seed 7 [min]', soakFaults: 'by kind' },
    });
    // A missing file is created.
    const fresh = path.join(dir, 'sub', 'new.json');
    await mergeSoakFigures(fresh, { soakFaults: { value: 1, note: 'n' } });
    expect(JSON.parse(await readFile(fresh, 'utf8'))).toEqual({ soakFaults: 1, soakNotes: { soakFaults: 'n' } });
  });
});
