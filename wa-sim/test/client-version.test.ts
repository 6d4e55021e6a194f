/** The simulator refuses outdated client versions with `<failure reason="405">`, as WhatsApp does. */
import { DEFAULT_CONNECTION_CONFIG, type AuthenticationState, type WAVersion } from '@whiskeysockets/baileys';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type ClientVersion, connectClient, linkWithQr, loginClient, memoryAuthState, SimInputError, startSimulator } from '../src/index.ts';
import { freshNumber, useSimulator } from './helpers.ts';

const { sim } = useSimulator();
const BUNDLED = DEFAULT_CONNECTION_CONFIG.version as ClientVersion;
const NEWER: WAVersion = [BUNDLED[0], BUNDLED[1], BUNDLED[2] + 1];

let auth: AuthenticationState;
let deviceJid: string;

beforeAll(async () => {
  ({ auth, deviceJid } = await linkWithQr(sim(), sim().createPhone({ number: freshNumber() })));
  await (await loginClient(sim(), auth)).end();
});

afterEach(() => {
  sim().setClientVersionPolicy({ minVersion: null, deniedVersions: [] });
});

async function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${sim().controlUrl}${path}`, {
    method,
    ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, json: await res.json() };
}

describe('client version policy', () => {
  it('accepts every version by default', () => {
    expect(sim().clientVersionPolicy()).toEqual({ minVersion: null, deniedVersions: [] });
  });

  it('refuses a login below the minimum with 405 and accepts a newer client', async () => {
    sim().setClientVersionPolicy({ minVersion: NEWER });
    const old = connectClient(sim().wsUrl, auth);
    expect(await old.waitForClose()).toBe(405);
    await old.end();
    const event = sim().events({ deviceJid, type: 'login-failed' }).at(-1);
    expect(event).toMatchObject({ code: 405, detail: `client version ${BUNDLED.join('.')} is below the minimum ${NEWER.join('.')}` });
    const fresh = await loginClient(sim(), auth, { extra: { version: NEWER } });
    await fresh.end();
  });

  it('refuses versions on the deny list only', async () => {
    sim().setClientVersionPolicy({ deniedVersions: [BUNDLED] });
    const denied = connectClient(sim().wsUrl, auth);
    expect(await denied.waitForClose()).toBe(405);
    await denied.end();
    expect(sim().events({ deviceJid, type: 'login-failed' }).at(-1)?.detail).toBe(`client version ${BUNDLED.join('.')} is denied`);
    await (await loginClient(sim(), auth, { extra: { version: NEWER } })).end();
  });

  it('refuses an outdated client before it may register (no QR)', async () => {
    sim().setClientVersionPolicy({ minVersion: NEWER });
    const client = connectClient(sim().wsUrl, memoryAuthState());
    expect(await client.waitForClose()).toBe(405);
    expect(client.qrs).toEqual([]);
    await client.end();
  });

  it('validates the policy: the previous one stays when an input is refused', () => {
    sim().setClientVersionPolicy({ minVersion: NEWER });
    for (const bad of [{ minVersion: '2.3000.1' }, { minVersion: [2, 3000] }, { minVersion: [2, -1, 1] }, { deniedVersions: [[1.5, 1, 1]] }, { deniedVersions: 'x' }]) {
      expect(() => sim().setClientVersionPolicy(bad as never)).toThrow(SimInputError);
    }
    expect(sim().clientVersionPolicy()).toEqual({ minVersion: NEWER, deniedVersions: [] });
    // Fields left out keep their value.
    expect(sim().setClientVersionPolicy({ deniedVersions: [BUNDLED] })).toEqual({ minVersion: NEWER, deniedVersions: [BUNDLED] });
  });

  it('is settable through the control API', async () => {
    expect(await api('PUT', '/client-version-policy', { minVersion: NEWER })).toMatchObject({ status: 200, json: { minVersion: NEWER, deniedVersions: [] } });
    expect(await api('GET', '/client-version-policy')).toMatchObject({ status: 200, json: { minVersion: NEWER } });
    expect(await api('PUT', '/client-version-policy', { minVersion: [1] })).toMatchObject({ status: 400, json: { error: expect.stringMatching(/minVersion must be \[major, minor, patch\]/) } });
    expect(await api('PUT', '/client-version-policy', { minVersion: null })).toMatchObject({ status: 200, json: { minVersion: null } });
  });

  it('is settable at start', async () => {
    const other = await startSimulator({ controlPort: null, minClientVersion: NEWER, deniedClientVersions: [[2, 3000, 1]] });
    try {
      expect(other.clientVersionPolicy()).toEqual({ minVersion: NEWER, deniedVersions: [[2, 3000, 1]] });
    } finally {
      await other.stop();
    }
    await expect(startSimulator({ controlPort: null, minClientVersion: [2] as never })).rejects.toThrow(/minVersion/);
  });
});
