import { describe, expect, it } from 'vitest';
import { connectClient, loginClient, memoryAuthState, waitFor } from '../src/index.ts';
import { freshNumber, useSimulator } from './helpers.ts';

const { sim } = useSimulator();

async function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${sim().controlUrl}${path}`, {
    method,
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, json: await res.json() };
}

describe('control API', () => {
  it('binds to localhost and describes the simulator', async () => {
    expect(new URL(sim().controlUrl).hostname).toBe('127.0.0.1');
    const { status, json } = await api('GET', '/info');
    expect(status).toBe(200);
    expect(json).toEqual({ wsUrl: sim().wsUrl, controlUrl: sim().controlUrl, rootPublicKeyBase64: sim().rootPublicKeyBase64, acceptingConnections: true });
  });

  it('validates input: 400 with a message, 404 for unknown users and routes, 409 for duplicates', async () => {
    expect(await api('POST', '/phones', { number: '+1555' })).toMatchObject({ status: 400, json: { error: expect.stringMatching(/number/) } });
    expect(await api('POST', '/phones', '{not json')).toMatchObject({ status: 400, json: { error: 'body is not valid JSON' } });
    expect(await api('POST', '/phones', [1, 2])).toMatchObject({ status: 400 });
    expect(await api('GET', '/phones/15559999999')).toMatchObject({ status: 404, json: { error: expect.stringMatching(/no simulated user/) } });
    expect(await api('GET', '/nope')).toMatchObject({ status: 404 });
    expect(await api('PATCH', '/phones')).toMatchObject({ status: 405 });
    const number = freshNumber();
    expect((await api('POST', '/phones', { number })).status).toBe(201);
    expect(await api('POST', '/contacts', { number })).toMatchObject({ status: 409 });
    expect(await api('POST', '/faults', { kind: 'stream-error', code: 1 })).toMatchObject({ status: 400, json: { error: expect.stringMatching(/code/) } });
    expect(await api('POST', `/phones/${number}/scan`, {})).toMatchObject({ status: 400, json: { error: 'qr must be a non-empty string' } });
    expect(await api('POST', `/phones/${number}/pairing-code`, { code: 'ABCD2345' })).toMatchObject({ status: 404 });
    expect(await api('GET', '/events?since=x')).toMatchObject({ status: 400 });
    const other = freshNumber();
    expect(await api('POST', '/contacts', { number: other, receiptDelays: { deliveredMs: -1 } })).toMatchObject({ status: 400 });
    expect(await api('GET', `/contacts/${other}`)).toMatchObject({ status: 404 });
  });

  it('drives a whole scenario over HTTP: link by QR, message, faults, stats, events, unlink', async () => {
    const number = freshNumber();
    const contactNumber = freshNumber();
    expect(await api('POST', '/phones', { number, name: 'Desk' })).toMatchObject({ status: 201, json: { number, kind: 'phone', linkedDevices: [] } });
    expect(await api('POST', '/contacts', { number: contactNumber, receiptDelays: { deliveredMs: 0, readMs: 0 } })).toMatchObject({ status: 201 });
    expect((await api('GET', '/phones')).json.map((p: { number: string }) => p.number)).toContain(number);

    const auth = memoryAuthState();
    const companion = connectClient(sim().wsUrl, auth);
    const qr = await companion.waitForQr();
    const scan = await api('POST', `/phones/${number}/scan`, { qr });
    expect(scan).toEqual({ status: 200, json: { deviceJid: `${number}:1@s.whatsapp.net` } });
    expect(await companion.waitForClose()).toBe(515);
    const deviceJid = scan.json.deviceJid as string;

    const session = await loginClient(sim(), auth);
    await session.sock.sendMessage(`${contactNumber}@s.whatsapp.net`, { text: 'via http' }, { messageId: 'HTTP-1' });
    await waitFor(async () => (await api('GET', `/contacts/${contactNumber}/messages`)).json.length === 1, { timeoutMs: 5_000 });
    expect((await api('GET', `/contacts/${contactNumber}/messages`)).json[0]).toMatchObject({ id: 'HTTP-1', text: 'via http', from: deviceJid });

    const sent = await api('POST', `/contacts/${contactNumber}/send`, { to: number, text: 'reply', id: 'HTTP-IN-1' });
    expect(sent).toEqual({ status: 200, json: { id: 'HTTP-IN-1', devices: 1 } });
    await waitFor(() => session.inbound('HTTP-IN-1').length === 1, { timeoutMs: 5_000 });
    expect((await api('POST', `/contacts/${contactNumber}/redeliver`, { id: 'HTTP-IN-1' })).status).toBe(200);
    await waitFor(() => session.inbound('HTTP-IN-1').length === 2, { timeoutMs: 5_000 });

    const stats = await api('GET', `/stats/${encodeURIComponent(deviceJid)}`);
    expect(stats.json).toMatchObject({ deviceJid, openConnections: 1, logins: 1, conflicts: 0 });
    expect((await api('GET', '/stats')).json.global.openConnections).toBeGreaterThanOrEqual(1);

    const fault = await api('POST', '/faults', { target: deviceJid, kind: 'stream-error', code: 503 });
    expect(fault).toMatchObject({ status: 201, json: { id: expect.any(String), target: deviceJid, spec: { kind: 'stream-error', code: 503 } } });
    expect(await session.waitForClose()).toBe(503);
    expect((await api('GET', '/faults')).json).toEqual([]); // one-shot, used up

    const events = await api('GET', `/events?deviceJid=${encodeURIComponent(deviceJid)}&type=stream-error`);
    expect(events.json.map((e: { code: number }) => e.code)).toEqual([515, 503]);

    const persistent = await api('POST', '/faults', { target: number, kind: 'login-failure', reason: 405 });
    expect((await api('DELETE', `/faults/${persistent.json.id}`)).json).toEqual({ cleared: 1 });
    expect((await api('DELETE', `/faults/${persistent.json.id}`)).status).toBe(404);

    expect((await api('DELETE', `/phones/${number}/devices/${encodeURIComponent(deviceJid)}`)).json).toEqual({ removed: deviceJid });
    expect((await api('GET', `/phones/${number}/devices`)).json).toEqual([]);
  });

  it('takes the server down and up', async () => {
    expect(await api('POST', '/server', { accepting: 'no' })).toMatchObject({ status: 400 });
    expect((await api('POST', '/server', { accepting: false })).json).toEqual({ acceptingConnections: false });
    const refused = connectClient(sim().wsUrl, memoryAuthState());
    expect(await refused.waitForClose()).toBe(408);
    expect((await api('POST', '/server', { accepting: true })).json).toEqual({ acceptingConnections: true });
    const fresh = connectClient(sim().wsUrl, memoryAuthState());
    await fresh.waitForQr();
    await fresh.end();
  });
});
