import { describe, expect, it } from 'vitest';
import {
  connectClient,
  linkWithQr,
  loginClient,
  MAX_LINKED_DEVICES,
  memoryAuthState,
  parseQr,
  QR_PREFIX,
  SimConflictError,
  SimInputError,
  SimNotFoundError,
  waitFor,
} from '../src/index.ts';
import { freshNumber, useSimulator } from './helpers.ts';

const QR_REFS = 4;
const { sim } = useSimulator({ qrRefs: QR_REFS });

describe('QR linking', () => {
  it('shows one QR per server ref, rotating, then ends with 408 when refs run out', async () => {
    const auth = memoryAuthState();
    const client = connectClient(sim().wsUrl, auth, { qrTimeout: 150 });
    const code = await client.waitForClose(5_000);
    expect(code).toBe(408);
    expect(client.qrs).toHaveLength(QR_REFS);
    const parsed = client.qrs.map((qr) => {
      expect(qr.startsWith(QR_PREFIX)).toBe(true);
      return parseQr(qr);
    });
    expect(new Set(parsed.map((p) => p.ref)).size).toBe(QR_REFS);
    for (const p of parsed) {
      expect(Buffer.from(p.noisePublicKey).equals(Buffer.from(auth.creds.noiseKey.public))).toBe(true);
      expect(Buffer.from(p.identityPublicKey).equals(Buffer.from(auth.creds.signedIdentityKey.public))).toBe(true);
      expect(Buffer.from(p.advSecret).toString('base64')).toBe(auth.creds.advSecretKey);
    }
    expect(sim().events({ type: 'register' }).length).toBeGreaterThan(0);
  });

  it('a phone scanning the QR pairs the device (isNewLogin, 515) and stored creds then log in at once', async () => {
    const phone = sim().createPhone({ number: freshNumber() });
    const auth = memoryAuthState();
    const client = connectClient(sim().wsUrl, auth, { qrTimeout: 300 });
    // Scan a rotated QR, not the first one: any live ref of the waiting companion is valid.
    await client.waitForQr();
    await waitFor(() => client.qrs.length >= 2, { timeoutMs: 3_000 });
    const { deviceJid } = await phone.scanQr(client.qrs[1]!);
    expect(deviceJid).toBe(`${phone.number}:1@s.whatsapp.net`);
    expect(await client.waitForClose()).toBe(515);
    expect(client.isNewLogin()).toBe(true);
    expect(auth.creds.me?.id).toBe(deviceJid);
    expect(auth.creds.me?.lid).toMatch(/^\d+:1@lid$/);
    expect(phone.linkedDevices().map((d) => d.deviceJid)).toEqual([deviceJid]);

    const started = Date.now();
    const session = await loginClient(sim(), auth);
    // All pre-open queries are answered, so open is not held back by query timeouts.
    expect(Date.now() - started).toBeLessThan(4_000);
    expect(session.connection()).toBe('open');
    expect(session.isNewLogin()).toBe(false);
    expect(auth.creds.me?.lid).toBe(`${phone.lid.split('@')[0]}:1@lid`);
    expect(sim().stats(deviceJid)).toMatchObject({ openConnections: 1, logins: 1, conflicts: 0 });
    // The first login uploads the initial pre-keys (count was 0).
    expect(phone.linkedDevices()[0]!.uploadedPreKeys).toBe(812);
    const types = sim()
      .events({ deviceJid })
      .map((e) => e.type);
    expect(types).toEqual(expect.arrayContaining(['pair', 'stream-error', 'close', 'handshake', 'login']));
    await session.end();
    await sim().waitForEvent((e) => e.type === 'close' && e.deviceJid === deviceJid && e.connectionId !== 0, { timeoutMs: 3_000 });
    expect(sim().stats(deviceJid).openConnections).toBe(0);
  });

  it('answers the keep-alive ping Baileys sends', async () => {
    const phone = sim().createPhone({ number: freshNumber() });
    const { auth } = await linkWithQr(sim(), phone);
    const session = await loginClient(sim(), auth);
    // The exact iq Baileys' keep-alive timer sends (socket.js startKeepAliveRequest).
    const reply = await session.sock.query({
      tag: 'iq',
      attrs: { to: 's.whatsapp.net', type: 'get', xmlns: 'w:p' },
      content: [{ tag: 'ping', attrs: {} }],
    });
    expect(reply.attrs.type).toBe('result');
    expect(session.connection()).toBe('open');
    await session.end();
  });

  it('refuses a fifth linked device, as WhatsApp allows four', async () => {
    const phone = sim().createPhone({ number: freshNumber() });
    for (let i = 0; i < MAX_LINKED_DEVICES; i++) await linkWithQr(sim(), phone);
    expect(phone.linkedDevices()).toHaveLength(4);
    const client = connectClient(sim().wsUrl, memoryAuthState());
    const qr = await client.waitForQr();
    await expect(phone.scanQr(qr)).rejects.toBeInstanceOf(SimConflictError);
    expect(phone.linkedDevices()).toHaveLength(4);
    expect(client.connection()).toBe('connecting');
    expect(client.isNewLogin()).toBe(false);
    await client.end();
    // After removing one, linking works again.
    phone.removeDevice(phone.linkedDevices()[0]!.deviceJid);
    const { deviceJid } = await linkWithQr(sim(), phone);
    expect(deviceJid).toBe(`${phone.number}:5@s.whatsapp.net`);
  });

  it('rejects malformed QR strings and refs nobody is waiting on', async () => {
    const phone = sim().createPhone({ number: freshNumber() });
    await expect(phone.scanQr('hello')).rejects.toBeInstanceOf(SimInputError);
    const stale = `${QR_PREFIX}2@nope,${Buffer.alloc(32).toString('base64')},${Buffer.alloc(32).toString('base64')},${Buffer.alloc(32).toString('base64')},1`;
    await expect(phone.scanQr(stale)).rejects.toBeInstanceOf(SimNotFoundError);
  });

  it('logs in only devices it knows: unknown creds get <failure reason=401>', async () => {
    const auth = memoryAuthState();
    auth.creds.me = { id: `${freshNumber()}:7@s.whatsapp.net`, name: 'x' };
    const client = connectClient(sim().wsUrl, auth);
    expect(await client.waitForClose()).toBe(401);
  });

  it('logout from the companion unlinks it; its creds no longer log in', async () => {
    const phone = sim().createPhone({ number: freshNumber() });
    const { auth, deviceJid } = await linkWithQr(sim(), phone);
    const session = await loginClient(sim(), auth);
    await session.sock.logout();
    expect(await session.waitForClose()).toBe(401);
    await waitFor(() => phone.linkedDevices().length === 0, { timeoutMs: 3_000 });
    const again = connectClient(sim().wsUrl, auth);
    expect(await again.waitForClose()).toBe(401);
    expect(sim().events({ deviceJid, type: 'login-failed' })).toHaveLength(1);
  });
});

describe('pairing-code linking', () => {
  it('links with the code Baileys generates, typed on the phone', async () => {
    const phone = sim().createPhone({ number: freshNumber() });
    const auth = memoryAuthState();
    const client = connectClient(sim().wsUrl, auth, { qrTimeout: 10_000 });
    await client.waitForQr(); // registration is under way once refs arrived
    const code = await client.sock.requestPairingCode(phone.number);
    expect(code).toMatch(/^[0-9A-Z]{8}$/);
    await waitFor(() => sim().pairingCodeRequests(phone.number).length === 1, { timeoutMs: 3_000 });
    const { deviceJid } = await phone.enterPairingCode(`${code.slice(0, 4)}-${code.slice(4)}`);
    expect(deviceJid).toBe(`${phone.number}:1@s.whatsapp.net`);
    expect(await client.waitForClose()).toBe(515);
    expect(client.isNewLogin()).toBe(true);
    expect(auth.creds.me?.id).toBe(deviceJid);
    const session = await loginClient(sim(), auth);
    expect(session.connection()).toBe('open');
    await session.end();
  });

  it('a mistyped code does not link; the right one still does', async () => {
    const phone = sim().createPhone({ number: freshNumber() });
    const auth = memoryAuthState();
    const client = connectClient(sim().wsUrl, auth, { qrTimeout: 10_000 });
    await client.waitForQr();
    const code = await client.sock.requestPairingCode(phone.number, 'ABCD2345');
    expect(code).toBe('ABCD2345');
    await waitFor(() => sim().pairingCodeRequests(phone.number).length === 1, { timeoutMs: 3_000 });
    await expect(phone.enterPairingCode('ABCD2346')).rejects.toThrow(/wrong pairing code/);
    expect(phone.linkedDevices()).toHaveLength(0);
    await expect(phone.enterPairingCode('abcd-2345')).resolves.toEqual({ deviceJid: `${phone.number}:1@s.whatsapp.net` });
    expect(await client.waitForClose()).toBe(515);
  });

  it('rejects codes for phones with no waiting companion and malformed codes', async () => {
    const phone = sim().createPhone({ number: freshNumber() });
    await expect(phone.enterPairingCode('ABCD2345')).rejects.toBeInstanceOf(SimNotFoundError);
    await expect(phone.enterPairingCode('12')).rejects.toBeInstanceOf(SimInputError);
  });
});
