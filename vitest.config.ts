import { defineConfig } from 'vitest/config';

// One suite for the whole workspace. `npm test` runs it inside the emulator suite
// (tools/test.mjs), so tests that cross the Firestore/Auth/Functions boundary find
// FIRESTORE_EMULATOR_HOST and friends in their environment.
export default defineConfig({
  test: {
    include: ['**/test/**/*.test.ts'],
    exclude: ['**/node_modules/**'],
    pool: 'forks',
    // Two cores: more workers only add contention and timing noise.
    poolOptions: { forks: { minForks: 1, maxForks: 2 } },
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
