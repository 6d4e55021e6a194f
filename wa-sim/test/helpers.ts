import { afterAll, beforeAll, vi } from 'vitest';
import { type Simulator, type SimulatorOptions, startSimulator, trustSimulatorRoot } from '../src/index.ts';

const SIGNAL_NOISE = /^(Closing session|Opening session|Removing old closed session|Session already|Decrypted message with closed session|Closing open session|Migrating session)/;

/** libsignal logs every session change through console.*; keep test output readable. */
export function quietSignalLogs(): void {
  for (const level of ['info', 'warn', 'error', 'log'] as const) {
    const original = console[level].bind(console);
    vi.spyOn(console, level).mockImplementation((...args: unknown[]) => {
      if (typeof args[0] === 'string' && SIGNAL_NOISE.test(args[0])) return;
      original(...args);
    });
  }
}

/** One simulator per test file, trusted by Baileys for the file's duration. */
export function useSimulator(options: SimulatorOptions = {}): { sim: () => Simulator } {
  let sim: Simulator | undefined;
  let restore: (() => void) | undefined;
  beforeAll(async () => {
    quietSignalLogs();
    sim = await startSimulator(options);
    restore = trustSimulatorRoot(sim.rootPublicKey);
  });
  afterAll(async () => {
    restore?.();
    await sim?.stop();
  });
  return {
    sim: () => {
      if (!sim) throw new Error('simulator not started');
      return sim;
    },
  };
}

let nextNumber = 15550100000 + Math.floor(Math.random() * 1000) * 100;
/** Fresh E.164 digits per call (unique within a process). */
export function freshNumber(): string {
  return String(nextNumber++);
}
