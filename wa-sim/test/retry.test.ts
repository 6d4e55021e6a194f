import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { type AuthenticationState, type BinaryNode, encodeBigEndian, encodeWAMessage, proto, type WAMessage } from '@whiskeysockets/baileys';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  type ClientOptions,
  linkWithQr,
  loginClient,
  type SimClient,
  type SimulatedUser,
  type Simulator,
  startSimulator,
  trustSimulatorRoot,
  waitFor,
} from '../src/index.ts';
import { MAX_MSG_RETRY_COUNT } from '../src/retry.ts';
import { freshNumber, quietSignalLogs } from './helpers.ts';

/** What the device's Baileys reported about failed decryptions ('failed to decrypt message'). */
interface DecryptFailure {
  id: string | undefined;
  error: string;
}

/** A pino-shaped Baileys logger that keeps the decryption failures and drops everything else. */
function failureLogger(into: DecryptFailure[]) {
  const logger = {
    level: 'error',
    child: () => logger,
    trace: () => {},
    debug: () => {},
    info: () => {},
    warn: () => {},
    error: (obj: unknown, msg?: string) => {
      if (msg !== 'failed to decrypt message') return;
      const o = obj as { key?: { id?: string }; err?: { message?: string } };
      into.push({ id: o.key?.id ?? undefined, error: o.err?.message ?? String(o.err) });
    },
  };
  return logger;
}

/** libsignal's own console report of a failed decryption ("Session error:Error: Bad MAC ..."), from Baileys' side. */
function badMacReports(): number {
  return vi.mocked(console.error).mock.calls.filter((args) => typeof args[0] === 'string' && args[0].includes('Bad MAC')).length;
}

function decrypted(client: SimClient, id: string): WAMessage[] {
  return client.inbound(id).filter((m) => typeof m.message?.conversation === 'string');
}

function stubs(client: SimClient, id: string): WAMessage[] {
  return client.inbound(id).filter((m) => m.messageStubType === proto.WebMessageInfo.StubType.CIPHERTEXT);
}

function deviceIdOf(deviceJid: string): number {
  return Number(/:(\d+)@/.exec(deviceJid)![1]);
}

/** The contact's Signal state (simulator internals), for breaking its session with the device. */
function signalOf(sim: Simulator, user: SimulatedUser) {
  return sim.core.world.user(user.number)!.signal;
}

async function startSim(stateFile?: string): Promise<{ sim: Simulator; restore: () => void }> {
  const sim = await startSimulator({ ...(stateFile ? { stateFile } : {}), receiptDelays: { deliveredMs: 0, readMs: null } });
  return { sim, restore: trustSimulatorRoot(sim.rootPublicKey) };
}

let dir: string;
beforeAll(async () => {
  quietSignalLogs();
  // The Bad MAC reports are expected here: still recorded (badMacReports reads the spy), not printed.
  const spy = vi.mocked(console.error);
  const printing = spy.getMockImplementation();
  spy.mockImplementation((...args: unknown[]) => {
    if (typeof args[0] === 'string' && /^(Failed to decrypt message with any known session|Session error:)/.test(args[0])) return;
    printing?.(...args);
  });
  dir = await mkdtemp(path.join(os.tmpdir(), 'wa-sim-retry-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('a contact whose Signal session the device no longer has', () => {
  const stateFile = () => path.join(dir, 'retry.json');
  let sim: Simulator;
  let restore: () => void;
  let phone: SimulatedUser;
  let contact: SimulatedUser;
  let auth: AuthenticationState;
  let deviceJid: string;
  let client: SimClient;
  const failures: DecryptFailure[] = [];
  const clientOpts = (): ClientOptions => ({ extra: { logger: failureLogger(failures) as never } });

  beforeAll(async () => {
    ({ sim, restore } = await startSim(stateFile()));
    phone = sim.createPhone({ number: freshNumber(), name: 'Shop' });
    contact = sim.createContact({ number: freshNumber(), name: 'Alice' });
    ({ auth, deviceJid } = await linkWithQr(sim, phone));
    client = await loginClient(sim, auth, clientOpts());
  });
  afterAll(async () => {
    await client?.end();
    restore?.();
    await sim?.stop();
  });

  it('fails with Bad MAC, asks again with keys, gets a pkmsg on a session rebuilt from them, and shows the message once', async () => {
    // A working session first: the device decrypts the contact's first message.
    const warm = await contact.sendText(phone.number, 'hello', { id: 'RETRY-WARM' });
    await waitFor(() => decrypted(client, warm.id).length === 1, { timeoutMs: 10_000, what: 'the first message' });
    expect(failures).toEqual([]);

    // The contact now sends on a session the device never had, as if the device lost the state it relies on.
    const address = `${phone.number}.${deviceIdOf(deviceJid)}`;
    await signalOf(sim, contact).desynchronise(address);
    expect(signalOf(sim, contact).sendsPreKeyMessages(address)).toBe(false);
    const seq = sim.events().at(-1)?.seq ?? 0;
    const badMacBefore = badMacReports();

    const { id } = await contact.sendText(phone.number, 'after the desync', { id: 'RETRY-1' });
    await waitFor(() => decrypted(client, id).length > 0, { timeoutMs: 15_000, what: 'the message decrypted after retries' });
    // Baileys sends its delivery receipt only after the upsert; once it is in, nothing else is on its way.
    await waitFor(() => contact.sentMessages().find((s) => s.id === id)?.deliveredTo.includes(deviceJid), { timeoutMs: 5_000, what: 'the delivery receipt' });

    expect(decrypted(client, id).map((m) => m.message?.conversation)).toEqual(['after the desync']);
    // Two failures: the original, then the resend on the same broken session after the keyless first retry.
    expect(failures.filter((f) => f.id === id).map((f) => f.error)).toEqual(['No matching sessions found for message', 'No matching sessions found for message']);
    expect(badMacReports()).toBeGreaterThan(badMacBefore);
    expect(stubs(client, id)).toHaveLength(2);

    const retries = sim.events({ deviceJid, type: 'retry', sinceSeq: seq }).map((e) => e.detail);
    expect(retries).toEqual([
      `${id} count=1 from ${contact.number}: resent as msg on the current session`,
      `${id} count=2 from ${contact.number}: resent as pkmsg on a new session from receipt-keys (the receipt carries a key bundle)`,
    ]);
    expect(sim.stats(deviceJid)).toMatchObject({ retryReceipts: 2, retrySessionRebuilds: 1 });
    expect(sim.stats()).toMatchObject({ retrySessionRebuilds: 1, retryLimitReached: 0, retryReceiptsMalformed: 0 });

    // The rebuilt session works: the next message decrypts at the first attempt.
    const next = await contact.sendText(phone.number, 'and again', { id: 'RETRY-2' });
    await waitFor(() => decrypted(client, next.id).length === 1, { timeoutMs: 10_000, what: 'the next message' });
    expect(failures.filter((f) => f.id === next.id)).toEqual([]);
    expect(sim.stats(deviceJid).retryReceipts).toBe(2);
  });

  it('the rebuilt session is in the state file: after a restart the contact still reaches the device first time', async () => {
    await client.end();
    restore();
    await sim.stop();
    ({ sim, restore } = await startSim(stateFile()));
    contact = sim.contact(contact.number);
    phone = sim.phone(phone.number);
    client = await loginClient(sim, auth, clientOpts());
    const { id } = await contact.sendText(phone.number, 'after restart', { id: 'RETRY-3' });
    await waitFor(() => decrypted(client, id).length === 1, { timeoutMs: 10_000, what: 'the message after restart' });
    expect(failures.filter((f) => f.id === id)).toEqual([]);
    expect(sim.stats().retryReceipts).toBe(0);
  });
});

describe('sessions both sides started at once (how a real desync starts)', () => {
  let sim: Simulator;
  let restore: () => void;
  let client: SimClient;
  const failures: DecryptFailure[] = [];
  afterAll(async () => {
    await client?.end();
    restore?.();
    await sim?.stop();
  });

  it('libsignal corrupts the contact’s open session on a crossed decrypt; the retry with keys repairs it', async () => {
    ({ sim, restore } = await startSim());
    const phone = sim.createPhone({ number: freshNumber(), name: 'Shop' });
    const contact = sim.createContact({ number: freshNumber(), name: 'Carol' });
    const linked = await linkWithQr(sim, phone);
    const deviceJid = linked.deviceJid;
    client = await loginClient(sim, linked.auth, { extra: { logger: failureLogger(failures) as never } });
    const deviceId = deviceIdOf(deviceJid);
    const address = `${phone.number}.${deviceId}`;
    const signal = signalOf(sim, contact);
    const device = sim.core.world.user(phone.number)!.devices.get(deviceId)!;

    // 1. The contact starts a session from the server's bundle for the device; its first message is held in transit.
    const [preKeyId, preKeyValue] = device.preKeys.entries().next().value!;
    device.preKeys.delete(preKeyId);
    await signal.initOutgoing(address, {
      registrationId: device.registrationId,
      identityKey: device.identityPublicKey,
      signedPreKey: device.signedPreKey,
      preKey: { keyId: preKeyId, publicKey: preKeyValue },
    });
    const held = await signal.encrypt(address, Buffer.from(encodeWAMessage({ conversation: 'held in transit' })));
    // 2. Meanwhile the device starts its own session with the contact (a bundle from the server), and the contact decrypts it.
    await client.sock.sendMessage(contact.jid, { text: 'hi from the shop' }, { messageId: 'CROSS-OUT-1' });
    await waitFor(() => contact.received().some((m) => m.id === 'CROSS-OUT-1'), { timeoutMs: 5_000, what: 'the device’s pkmsg at the contact' });
    // 3. The held message arrives: the device decrypts it on the contact's session.
    sim.core.messaging.deliver(deviceJid, {
      tag: 'message',
      attrs: { from: contact.jid, id: 'CROSS-IN-0', t: String(Math.floor(Date.now() / 1000)), type: 'text', notify: contact.name, sender_lid: contact.lid },
      content: [{ tag: 'enc', attrs: { v: '2', type: held.type }, content: held.ciphertext }],
    });
    await waitFor(() => decrypted(client, 'CROSS-IN-0').length === 1, { timeoutMs: 5_000, what: 'the held message at the device' });
    // 4. Each side's open session is now the other's. The device answers on the contact's session; the contact
    //    decrypts it, but only after trying its open session, whose ratchet libsignal steps and keeps on failure.
    await client.sock.sendMessage(contact.jid, { text: 'reply' }, { messageId: 'CROSS-OUT-2' });
    await waitFor(() => contact.received().some((m) => m.id === 'CROSS-OUT-2' && m.text === 'reply'), { timeoutMs: 5_000, what: 'the reply at the contact' });
    expect(sim.decryptErrors()).toEqual([]);
    expect(failures).toEqual([]);

    // 5. The contact's next message goes out on that damaged session: Bad MAC at the device, then the retries.
    const { id } = await contact.sendText(phone.number, 'do you ship abroad?', { id: 'CROSS-IN-1' });
    await waitFor(() => decrypted(client, id).length > 0, { timeoutMs: 15_000, what: 'the message after retries' });
    await waitFor(() => contact.sentMessages().find((s) => s.id === id)?.deliveredTo.includes(deviceJid), { timeoutMs: 5_000, what: 'the delivery receipt' });
    expect(decrypted(client, id)).toHaveLength(1);
    expect(failures.filter((f) => f.id === id)).toHaveLength(2);
    expect(sim.events({ deviceJid, type: 'retry' }).map((e) => e.detail)).toEqual([
      `${id} count=1 from ${contact.number}: resent as msg on the current session`,
      `${id} count=2 from ${contact.number}: resent as pkmsg on a new session from receipt-keys (the receipt carries a key bundle)`,
    ]);
  });
});

describe('retry receipts the simulator must survive or refuse', () => {
  let sim: Simulator;
  let restore: () => void;
  let phone: SimulatedUser;
  let contact: SimulatedUser;
  let deviceJid: string;
  let client: SimClient;

  beforeAll(async () => {
    ({ sim, restore } = await startSim());
    phone = sim.createPhone({ number: freshNumber(), name: 'Shop' });
    contact = sim.createContact({ number: freshNumber(), name: 'Bob' });
    const linked = await linkWithQr(sim, phone);
    deviceJid = linked.deviceJid;
    client = await loginClient(sim, linked.auth);
  });
  afterAll(async () => {
    await client?.end();
    restore?.();
    await sim?.stop();
  });
  afterEach(() => {
    expect(client.connection()).toBe('open');
  });

  /** A retry receipt written by hand, sent over the device's real connection. */
  function retryReceipt(id: string, count: number, extra: BinaryNode[] = []): BinaryNode {
    return {
      tag: 'receipt',
      attrs: { id, type: 'retry', to: contact.jid },
      content: [
        { tag: 'retry', attrs: { count: String(count), id, t: String(Math.floor(Date.now() / 1000)), v: '1' } },
        { tag: 'registration', attrs: {}, content: encodeBigEndian(client.auth.creds.registrationId) },
        ...extra,
      ],
    };
  }

  async function delivered(id: string, text: string): Promise<void> {
    await contact.sendText(phone.number, text, { id });
    await waitFor(() => decrypted(client, id).length === 1, { timeoutMs: 10_000, what: `${id} decrypted` });
  }

  it('a malformed <keys> bundle is counted and logged, and the receipt is answered as one without keys', async () => {
    await delivered('RAW-1', 'one');
    const seq = sim.events().at(-1)?.seq ?? 0;
    const malformed: BinaryNode = {
      tag: 'keys',
      attrs: {},
      content: [
        { tag: 'type', attrs: {}, content: Buffer.from([5]) },
        { tag: 'identity', attrs: {}, content: Buffer.alloc(31) },
        { tag: 'skey', attrs: {}, content: 'garbage' },
      ],
    };
    await client.sock.sendNode(retryReceipt('RAW-1', 1, [malformed]));
    await waitFor(() => sim.events({ deviceJid, type: 'retry', sinceSeq: seq }).length === 1, { timeoutMs: 5_000, what: 'the answer' });
    expect(sim.stats().retryReceiptsMalformed).toBe(1);
    expect(sim.events({ deviceJid, type: 'error', sinceSeq: seq }).map((e) => e.detail)).toEqual([
      'retry receipt RAW-1 count=1: keys rejected (<keys><identity> is not 32 bytes), handled as without keys',
    ]);
    expect(sim.events({ deviceJid, type: 'retry', sinceSeq: seq })[0]!.detail).toMatch(/resent as \w+ on the current session$/);
    // The device got the resend (a repeat of a message it had: Baileys shows it again, deduplication is the app's).
    await waitFor(() => decrypted(client, 'RAW-1').length === 2, { timeoutMs: 5_000, what: 'the resend' });
  });

  it('a receipt without <retry> is counted and ignored', async () => {
    const seq = sim.events().at(-1)?.seq ?? 0;
    const before = sim.stats().retryReceiptsMalformed;
    await client.sock.sendNode({ tag: 'receipt', attrs: { id: 'RAW-1', type: 'retry', to: contact.jid }, content: [{ tag: 'registration', attrs: {}, content: Buffer.alloc(2) }] });
    await waitFor(() => sim.stats().retryReceiptsMalformed === before + 1, { timeoutMs: 5_000, what: 'the malformed receipt counted' });
    expect(sim.events({ deviceJid, type: 'error', sinceSeq: seq }).map((e) => e.detail)).toEqual(['retry receipt RAW-1 ignored: no <retry> child']);
    expect(sim.events({ deviceJid, type: 'retry', sinceSeq: seq })).toEqual([]);
  });

  it(`answers a message at most ${MAX_MSG_RETRY_COUNT} times per device, then refuses`, async () => {
    await delivered('RAW-CAP', 'capped');
    const seq = sim.events().at(-1)?.seq ?? 0;
    for (let count = 1; count <= MAX_MSG_RETRY_COUNT + 1; count++) await client.sock.sendNode(retryReceipt('RAW-CAP', count));
    await waitFor(() => sim.events({ deviceJid, type: 'retry', sinceSeq: seq }).length === MAX_MSG_RETRY_COUNT + 1, { timeoutMs: 10_000, what: 'every receipt handled' });
    const details = sim.events({ deviceJid, type: 'retry', sinceSeq: seq }).map((e) => e.detail ?? '');
    expect(details.filter((d) => d.includes('resent as'))).toHaveLength(MAX_MSG_RETRY_COUNT);
    // Count 2 without keys rebuilds from a server bundle (whatsmeow's rule), later counts within the hour do not.
    expect(details[1]).toMatch(/count=2 .*resent as pkmsg on a new session from server-bundle \(retry count 2 and no rebuild in the last hour\)/);
    expect(details.slice(2, MAX_MSG_RETRY_COUNT).every((d) => d.includes('on the current session'))).toBe(true);
    expect(details[MAX_MSG_RETRY_COUNT]).toMatch(/count=6 .*not answered: already answered 5 retry receipts/);
    expect(sim.stats().retryLimitReached).toBe(1);
    // Every answered resend reached the device and decrypted there.
    await waitFor(() => decrypted(client, 'RAW-CAP').length === 1 + MAX_MSG_RETRY_COUNT, { timeoutMs: 10_000, what: 'every resend decrypted' });
  });
});
