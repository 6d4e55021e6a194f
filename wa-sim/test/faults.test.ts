import type { AuthenticationState } from '@whiskeysockets/baileys';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  connectClient,
  linkWithQr,
  loginClient,
  memoryAuthState,
  type SimulatedUser,
  SimInputError,
  waitFor,
} from '../src/index.ts';
import { freshNumber, useSimulator } from './helpers.ts';

const { sim } = useSimulator();

let phone: SimulatedUser;
let auth: AuthenticationState;
let deviceJid: string;

beforeAll(async () => {
  phone = sim().createPhone({ number: freshNumber() });
  ({ auth, deviceJid } = await linkWithQr(sim(), phone));
  // First login uploads pre-keys; later logins in this file are then quick.
  const first = await loginClient(sim(), auth);
  await first.end();
});

afterEach(() => {
  sim().clearFaults();
});

async function openSession() {
  return loginClient(sim(), auth);
}

describe('stream errors on an open session', () => {
  for (const code of [515, 401, 440, 500, 503] as const) {
    it(`stream:error ${code} → Baileys closes with ${code}`, async () => {
      const session = await openSession();
      sim().injectFault({ target: deviceJid, kind: 'stream-error', code });
      expect(await session.waitForClose()).toBe(code);
      expect(sim().events({ deviceJid, type: 'stream-error' }).at(-1)?.code).toBe(code);
    });
  }

  it('an immediate fault injected while the device is offline hits its next login', async () => {
    sim().injectFault({ target: phone.number, kind: 'stream-error', code: 503 });
    const session = connectClient(sim().wsUrl, auth);
    expect(await session.waitForClose()).toBe(503);
    // One-shot: the following login opens.
    const again = await openSession();
    await again.end();
  });

  it('downgrade_webclient → 411', async () => {
    const session = await openSession();
    sim().injectFault({ target: deviceJid, kind: 'downgrade-webclient' });
    expect(await session.waitForClose()).toBe(411);
  });

  it('dropped TCP connection → 428', async () => {
    const session = await openSession();
    sim().injectFault({ target: deviceJid, kind: 'drop' });
    expect(await session.waitForClose()).toBe(428);
  });
});

describe('login failures', () => {
  for (const reason of [401, 403, 405] as const) {
    it(`<failure reason="${reason}"> at login → ${reason}`, async () => {
      sim().injectFault({ target: deviceJid, kind: 'login-failure', reason, times: 1 });
      const session = connectClient(sim().wsUrl, auth);
      expect(await session.waitForClose()).toBe(reason);
      expect(session.updates.some((u) => u.connection === 'open')).toBe(false);
      const again = await openSession();
      await again.end();
    });
  }
});

describe('ownership', () => {
  it('a second connection of the same device replaces the first: the old one gets 440, counted', async () => {
    const before = sim().totalConflicts();
    const first = await openSession();
    const second = await openSession();
    expect(await first.waitForClose()).toBe(440);
    expect(second.connection()).toBe('open');
    expect(sim().totalConflicts()).toBe(before + 1);
    expect(sim().stats(deviceJid)).toMatchObject({ openConnections: 1 });
    expect(sim().stats(deviceJid).conflicts).toBeGreaterThanOrEqual(1);
    expect(sim().events({ deviceJid, type: 'conflict' }).length).toBeGreaterThanOrEqual(1);
    await second.end();
  });

  it('a phone removing the linked device: live session gets 401 (device_removed), later logins <failure 401>', async () => {
    const owner = sim().createPhone({ number: freshNumber() });
    const linked = await linkWithQr(sim(), owner);
    const session = await loginClient(sim(), linked.auth);
    owner.removeDevice(linked.deviceJid);
    expect(await session.waitForClose()).toBe(401);
    expect(owner.linkedDevices()).toEqual([]);
    const again = connectClient(sim().wsUrl, linked.auth);
    expect(await again.waitForClose()).toBe(401);
    expect(sim().events({ deviceJid: linked.deviceJid, type: 'login-failed' }).at(-1)?.code).toBe(401);
  });
});

describe('transport faults', () => {
  it('stall: no frames (not even ping replies) → Baileys gives up with 408; clearing restores service', async () => {
    const session = await loginClient(sim(), auth, { keepAliveIntervalMs: 250 });
    const faultId = sim().injectFault({ target: deviceJid, kind: 'stall' });
    expect(await session.waitForClose(10_000)).toBe(408);
    sim().clearFaults(faultId);
    const again = await openSession();
    await again.end();
  });

  it('a stall with times: 1 holds one connection until it dies; the reconnect is served', async () => {
    const session = await loginClient(sim(), auth, { keepAliveIntervalMs: 250 });
    const faultId = sim().injectFault({ target: deviceJid, kind: 'stall', times: 1 });
    expect(await session.waitForClose(10_000)).toBe(408);
    const again = await openSession();
    expect(again.connection()).toBe('open');
    expect(sim().faults().find((f) => f.id === faultId)).toMatchObject({ remaining: 0, hits: 1 });
    await again.end();
  });

  it('handshake stall (no ServerHello) → 408 after connectTimeoutMs', async () => {
    sim().injectFault({ kind: 'handshake-stall', times: 1 });
    const started = Date.now();
    const session = connectClient(sim().wsUrl, auth, { connectTimeoutMs: 800 });
    expect(await session.waitForClose()).toBe(408);
    expect(Date.now() - started).toBeGreaterThanOrEqual(700);
  });

  it('handshake drop → 428', async () => {
    sim().injectFault({ kind: 'handshake-drop', times: 1 });
    const session = connectClient(sim().wsUrl, auth);
    expect(await session.waitForClose()).toBe(428);
  });

  it('HTTP 403 on the WebSocket upgrade leaves Baileys stuck in "connecting" (Baileys rc14 bug, reproduced)', async () => {
    const connectTimeoutMs = 600;
    sim().injectFault({ kind: 'reject-upgrade', status: 403 });
    const session = connectClient(sim().wsUrl, auth, { connectTimeoutMs });
    await sim().waitForEvent((e) => e.type === 'upgrade-rejected' && e.code === 403, { timeoutMs: 3_000 });
    // Observe for twice the connect timeout: no open, no close, still connecting.
    const until = Date.now() + 2 * connectTimeoutMs;
    await waitFor(() => Date.now() >= until || session.closeCode() !== undefined, { timeoutMs: 4 * connectTimeoutMs, intervalMs: 50 });
    expect(session.closeCode()).toBeUndefined();
    expect(session.connection()).toBe('connecting');
    await session.end();
    expect(() => sim().injectFault({ target: deviceJid, kind: 'reject-upgrade', status: 403 })).toThrow(SimInputError);
  });

  it('server down refuses connections and drops open ones; back up, logins work again', async () => {
    const session = await openSession();
    await sim().setAcceptingConnections(false);
    expect(await session.waitForClose()).toBe(428);
    const refused = connectClient(sim().wsUrl, auth);
    const code = await refused.waitForClose();
    expect(code).toBe(408); // ECONNREFUSED maps to 408 in Baileys' getCodeFromWSError
    await sim().setAcceptingConnections(true);
    const again = await openSession();
    expect(again.connection()).toBe('open');
    await again.end();
  });
});

describe('fault validation', () => {
  it('rejects unknown kinds, bad codes and bad targets', () => {
    expect(() => sim().injectFault({ kind: 'nope' } as never)).toThrow(SimInputError);
    expect(() => sim().injectFault({ kind: 'stream-error', code: 499 } as never)).toThrow(SimInputError);
    expect(() => sim().injectFault({ kind: 'drop', target: 'not a jid' })).toThrow(SimInputError);
    const id = sim().injectFault({ kind: 'no-ack', target: deviceJid });
    expect(sim().faults().map((f) => f.id)).toContain(id);
    expect(sim().clearFaults(deviceJid)).toBe(1);
    expect(sim().faults()).toEqual([]);
  });

  it('an unused fresh socket with no creds is unaffected by device-targeted faults', async () => {
    sim().injectFault({ target: deviceJid, kind: 'login-failure', reason: 403 });
    const fresh = connectClient(sim().wsUrl, memoryAuthState());
    await fresh.waitForQr();
    await fresh.end();
  });
});
