/**
 * A benchmark suite measures one part of the system and returns named figures.
 * Keys carry their unit (e.g. `simAckedMessagesPerSec`, `restartAllConnectedMs`),
 * because they land side by side in bench/results/latest.json.
 */
export interface Figure {
  value: number;
  /** A target the issue asked for, to print beside the value. */
  target?: string;
  /** Free text such as "median of 5 runs". */
  note?: string;
}

export interface BenchSuite {
  name: string;
  /** Whether the suite needs the Firebase emulators (bench/run.ts is then run under emulators:exec). */
  needsEmulators: boolean;
  run(): Promise<Record<string, Figure>>;
}

export function median(values: number[]): number {
  if (values.length === 0) throw new Error('median of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) throw new Error('percentile of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}
