/**
 * App Check enforcement is a deploy-time parameter (issue 10, item 7): on for every project,
 * off for the emulators' demo project. The callables are served in-process by the real
 * firebase-functions request handler over real HTTP; no emulator is needed.
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import express from 'express';
import { afterEach, describe, expect, it, vi } from 'vitest';

const functionsDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// firebase-tools' own loader of functions/.env*, as `deploy` and `emulators:*` use it.
const { loadUserEnvs } = createRequire(import.meta.url)('firebase-tools/lib/functions/env.js') as {
  loadUserEnvs(opts: { functionsSource: string; projectId: string; isEmulator: boolean }): Record<string, string>;
};

describe('ENFORCE_APP_CHECK resolves per project', () => {
  it('is on for a deployed project and off in the emulators', () => {
    expect(loadUserEnvs({ functionsSource: functionsDir, projectId: 'wafleet-prod', isEmulator: false }).ENFORCE_APP_CHECK).toBe('true');
    expect(loadUserEnvs({ functionsSource: functionsDir, projectId: 'demo-wafleet', isEmulator: true }).ENFORCE_APP_CHECK).toBe('false');
  });
});

describe('the callables honour ENFORCE_APP_CHECK', () => {
  const saved = process.env.ENFORCE_APP_CHECK;
  afterEach(() => {
    if (saved === undefined) delete process.env.ENFORCE_APP_CHECK;
    else process.env.ENFORCE_APP_CHECK = saved;
  });

  /** Loads the functions as a runtime would with the parameter set, and calls one without App Check. */
  async function callWithoutAppCheck(enforce: 'true' | 'false') {
    process.env.ENFORCE_APP_CHECK = enforce;
    vi.resetModules();
    const { acknowledgeIncident } = await import('../src/index.ts');
    const app = express();
    app.post('/acknowledgeIncident', express.json(), (req, res) => void acknowledgeIncident(req as Parameters<typeof acknowledgeIncident>[0], res));
    const server = app.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/acknowledgeIncident`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ data: { incidentId: 'inc-1' } }),
        signal: AbortSignal.timeout(10_000),
      });
      return { http: res.status, error: ((await res.json()) as { error?: { status: string; message: string } }).error };
    } finally {
      server.close();
    }
  }

  it('refuses a request without an App Check token when on', async () => {
    // firebase-functions refuses it before the function runs: not even our "sign in first".
    expect(await callWithoutAppCheck('true')).toEqual({ http: 401, error: { status: 'UNAUTHENTICATED', message: 'Unauthenticated' } });
  });

  it('lets it through to the role check when off', async () => {
    expect(await callWithoutAppCheck('false')).toEqual({ http: 401, error: { status: 'UNAUTHENTICATED', message: 'sign in first' } });
  });
});
