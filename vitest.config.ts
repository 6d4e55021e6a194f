import { defineConfig } from 'vitest/config';

// One suite for the whole workspace. `npm test` runs it inside the emulator suite
// (tools/test.ts), so tests that cross the Firestore/Auth/Functions boundary find
// FIRESTORE_EMULATOR_HOST and friends in their environment.
//
// Test files use Firestore projects of their own and run in parallel, except the end-to-end
// tests through the callables: the Functions emulator serves one project, which
// functions/test/callables.test.ts also uses (and clears), so they run afterwards, alone.
const AFTER_CALLABLES = ['test/e2e/**/*.test.ts'];

export default defineConfig({
  test: {
    pool: 'forks',
    // Two cores: more workers only add contention and timing noise.
    poolOptions: { forks: { minForks: 1, maxForks: 2 } },
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
    projects: [
      {
        extends: true,
        test: { name: 'suite', include: ['**/test/**/*.test.ts'], exclude: ['**/node_modules/**', ...AFTER_CALLABLES], sequence: { groupOrder: 0 } },
      },
      {
        extends: true,
        test: { name: 'through-callables', include: AFTER_CALLABLES, poolOptions: { forks: { singleFork: true } }, sequence: { groupOrder: 1 } },
      },
    ],
  },
});
