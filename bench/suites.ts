import type { BenchSuite } from './suite.ts';
import { messagingBench } from './messaging.bench.ts';
import { reconcilerBench } from './reconciler.bench.ts';
import { fleetBench } from './fleet.bench.ts';
import { simBench } from './sim.bench.ts';
import { consoleBench } from './console.bench.ts';
import { ceilingBench } from './ceiling.bench.ts';

/** Every benchmark suite, in the order they run. Add new suites here. */
export const suites: BenchSuite[] = [simBench, reconcilerBench, messagingBench, fleetBench, consoleBench, ceilingBench];
