/**
 * The functions run as a dedicated least-privilege service account (issue 11), never as the
 * default compute account. Checked on what firebase-tools deploys from: each function's endpoint
 * as firebase-functions declares it, and the parameter's value from functions/.env as
 * firebase-tools loads it for a deployed project.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
// index.ts first: it alone must apply the options before any function is defined.
import * as functions from '../src/index.ts';
import { FUNCTIONS_SERVICE_ACCOUNT } from '../src/global-options.ts';

const functionsDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { loadUserEnvs } = createRequire(import.meta.url)('firebase-tools/lib/functions/env.js') as {
  loadUserEnvs(opts: { functionsSource: string; projectId: string; isEmulator: boolean }): Record<string, string>;
};

describe('the functions service account', () => {
  it('is declared on every function, callables and the scheduled watchdog alike', () => {
    const endpoints = Object.entries(functions).map(([name, fn]) => ({ name, serviceAccount: (fn as unknown as { __endpoint: { serviceAccountEmail?: unknown } }).__endpoint.serviceAccountEmail }));
    expect(endpoints.length).toBeGreaterThanOrEqual(10);
    for (const endpoint of endpoints) expect(endpoint).toEqual({ name: endpoint.name, serviceAccount: FUNCTIONS_SERVICE_ACCOUNT });
  });

  it('is the project’s wafleet-functions account on deploy', () => {
    expect(loadUserEnvs({ functionsSource: functionsDir, projectId: 'wafleet-prod', isEmulator: false }).FUNCTIONS_SERVICE_ACCOUNT).toBe('wafleet-functions@');
  });
});
