import type { AuthenticationState } from '@whiskeysockets/baileys';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { linkWithQr, loginClient, type SimClient, type SimulatedUser, waitFor } from '../src/index.ts';
import { freshNumber, useSimulator } from './helpers.ts';

const DELIVERED_MS = 400;
const READ_MS = 800;
const { sim } = useSimulator();

let phone: SimulatedUser;
let contact: SimulatedUser;
let auth: AuthenticationState;
let deviceJid: string;
let client: SimClient;

beforeAll(async () => {
  phone = sim().createPhone({ number: freshNumber(), name: 'Shop' });
  // Receipts come late enough that Baileys reports them as separate messages.update events
  // (earlier ones merge into its buffered upsert of the sent message).
  contact = sim().createContact({ number: freshNumber(), name: 'Alice', receiptDelays: { deliveredMs: DELIVERED_MS, readMs: READ_MS } });
  ({ auth, deviceJid } = await linkWithQr(sim(), phone));
  client = await loginClient(sim(), auth);
  return async () => {
    await client.end();
  };
});

afterEach(() => {
  sim().clearFaults();
});

function receivedWithId(user: SimulatedUser, id: string) {
  return user.received().filter((m) => m.id === id && !m.fromOwnDevice);
}

describe('account → contact', () => {
  it('the contact decrypts the exact text; receipts give DELIVERY_ACK (3) then READ (4)', async () => {
    const id = 'OUT-0001';
    const ackedBefore = sim().stats(deviceJid).messagesAcked;
    await client.sock.sendMessage(contact.jid, { text: 'Your order #42 shipped' }, { messageId: id });
    await waitFor(() => receivedWithId(contact, id).length === 1, { timeoutMs: 5_000 });
    const [msg] = receivedWithId(contact, id);
    expect(msg).toMatchObject({ id, text: 'Your order #42 shipped', from: deviceJid, fromNumber: phone.number, encType: 'pkmsg' });
    // Baileys also encrypts to its own phone (device 0): the phone gets the device-sent copy.
    await waitFor(() => phone.received().some((m) => m.id === id && m.fromOwnDevice), { timeoutMs: 2_000 });
    expect(sim().stats(deviceJid).messagesAcked).toBe(ackedBefore + 1);

    await client.waitForStatus(id, 3);
    await client.waitForStatus(id, 4);
    expect(client.statusesOf(id)).toEqual([3, 4]);
    // With these delays both arrive after Baileys emitted the sent message: separate messages.update events.
    expect(client.statusUpdates.filter((u) => u.id === id).map((u) => u.source)).toEqual(['update', 'update']);
    expect(sim().decryptErrors()).toEqual([]);
  });

  it('every copy of a repeated id is kept', async () => {
    const id = 'OUT-DUP-1';
    await client.sock.sendMessage(contact.jid, { text: 'first copy' }, { messageId: id });
    await client.sock.sendMessage(contact.jid, { text: 'first copy' }, { messageId: id });
    await waitFor(() => receivedWithId(contact, id).length === 2, { timeoutMs: 5_000 });
    // Until the contact replies, Baileys keeps sending pkmsg on the same session, as Signal does.
    expect(receivedWithId(contact, id).map((m) => m.text)).toEqual(['first copy', 'first copy']);
  });

  it('a nacked message (ack error 479) becomes status ERROR (0) and is not delivered', async () => {
    // A short delay keeps the nack out of Baileys' buffered upsert of the sent message, so it shows
    // as its own messages.update (with no delay Baileys merges it into the upsert's status).
    sim().injectFault({ target: deviceJid, kind: 'nack', error: 479, delayMs: 200, times: 1 });
    const id = 'OUT-NACK-1';
    await client.sock.sendMessage(contact.jid, { text: 'rejected' }, { messageId: id });
    await client.waitForStatus(id, 0);
    const after = 'OUT-NACK-2';
    await client.sock.sendMessage(contact.jid, { text: 'accepted' }, { messageId: after });
    await client.waitForStatus(after, 3);
    expect(receivedWithId(contact, id)).toHaveLength(0);
    expect(receivedWithId(contact, after)).toHaveLength(1);
    expect(sim().events({ deviceJid, type: 'fault' }).some((e) => e.detail?.includes('nack'))).toBe(true);
  });

  it('missing receipts: no status change, while later messages still get theirs', async () => {
    sim().injectFault({ target: phone.number, kind: 'no-receipts', times: 1 });
    await client.sock.sendMessage(contact.jid, { text: 'no receipt' }, { messageId: 'OUT-NR-1' });
    await client.sock.sendMessage(contact.jid, { text: 'with receipt' }, { messageId: 'OUT-NR-2' });
    // Receipts are delivered in order, so once the second is read the first had its chance.
    await client.waitForStatus('OUT-NR-2', 4);
    expect(receivedWithId(contact, 'OUT-NR-1')).toHaveLength(1);
    expect(client.statusesOf('OUT-NR-1')).toEqual([]);
  });

  it('slow acks: the server ack arrives after the injected delay', async () => {
    sim().injectFault({ target: deviceJid, kind: 'ack-delay', ms: 400, times: 1 });
    const acks = new Map<string, number>();
    const onAck = (node: { attrs: Record<string, string> }) => acks.set(node.attrs['id']!, Date.now());
    client.sock.ws.on('CB:ack,class:message', onAck);
    const sentAt = Date.now();
    await client.sock.sendMessage(contact.jid, { text: 'slow' }, { messageId: 'OUT-SLOW-1' });
    await waitFor(() => acks.has('OUT-SLOW-1'), { timeoutMs: 3_000 });
    client.sock.ws.off('CB:ack,class:message', onAck);
    expect(acks.get('OUT-SLOW-1')! - sentAt).toBeGreaterThanOrEqual(400);
  });

  it('missing acks: no server ack for the faulted message, later ones are acked', async () => {
    sim().injectFault({ target: deviceJid, kind: 'no-ack', times: 1 });
    const acks = new Set<string>();
    const onAck = (node: { attrs: Record<string, string> }) => acks.add(node.attrs['id']!);
    client.sock.ws.on('CB:ack,class:message', onAck);
    await client.sock.sendMessage(contact.jid, { text: 'unacked' }, { messageId: 'OUT-NOACK-1' });
    await client.sock.sendMessage(contact.jid, { text: 'acked' }, { messageId: 'OUT-NOACK-2' });
    await waitFor(() => acks.has('OUT-NOACK-2'), { timeoutMs: 3_000 });
    client.sock.ws.off('CB:ack,class:message', onAck);
    expect(acks.has('OUT-NOACK-1')).toBe(false);
    // The message itself still reached the contact: only the server ack is missing.
    await waitFor(() => receivedWithId(contact, 'OUT-NOACK-1').length === 1, { timeoutMs: 3_000 });
  });

  it('receipt-delay overrides the timing: delivered but never read', async () => {
    sim().injectFault({ target: deviceJid, kind: 'receipt-delay', deliveredMs: DELIVERED_MS, readMs: null, times: 1 });
    await client.sock.sendMessage(contact.jid, { text: 'unread' }, { messageId: 'OUT-RD-1' });
    await client.sock.sendMessage(contact.jid, { text: 'read' }, { messageId: 'OUT-RD-2' });
    await client.waitForStatus('OUT-RD-1', 3);
    await client.waitForStatus('OUT-RD-2', 4);
    expect(client.statusesOf('OUT-RD-1')).toEqual([3]);
  });

  it('an unregistered number: usync reports no devices (404) and sendMessage fails', async () => {
    const nobody = `${freshNumber()}@s.whatsapp.net`;
    await expect(client.sock.sendMessage(nobody, { text: 'hello?' })).rejects.toThrow();
    const exists = await client.sock.onWhatsApp(contact.number, freshNumber());
    expect(exists).toEqual([expect.objectContaining({ jid: contact.jid, exists: true })]);
  });
});

describe('contact → account', () => {
  it('arrives as messages.upsert (notify) with the right text, sender and id; Baileys sends a receipt', async () => {
    const { id } = await contact.sendText(phone.number, 'Is it in stock?', { id: 'IN-0001' });
    await waitFor(() => client.inbound(id).length === 1, { timeoutMs: 5_000 });
    const [msg] = client.inbound(id);
    expect(msg!.key.remoteJid).toBe(contact.jid);
    expect(msg!.message?.conversation).toBe('Is it in stock?');
    expect(client.upserts.find((u) => u.message.key.id === id)?.type).toBe('notify');
    await waitFor(() => contact.sentMessages().find((s) => s.id === id)?.deliveredTo.includes(deviceJid), { timeoutMs: 3_000 });
  });

  it('redelivery brings the same id again, freshly encrypted (deduplication is the app’s job)', async () => {
    const { id } = await contact.sendText(phone.number, 'hello twice', { id: 'IN-REDELIVER-1' });
    await waitFor(() => client.inbound(id).length === 1, { timeoutMs: 5_000 });
    await contact.redeliver(id);
    await waitFor(() => client.inbound(id).length === 2, { timeoutMs: 5_000 });
    expect(client.inbound(id).map((m) => m.message?.conversation)).toEqual(['hello twice', 'hello twice']);
  });

  it('messages for an offline device wait for its next login', async () => {
    await client.end();
    await waitFor(() => sim().stats(deviceJid).openConnections === 0, { timeoutMs: 3_000 });
    const { id } = await contact.sendText(phone.number, 'while you were away', { id: 'IN-OFFLINE-1' });
    expect(phone.linkedDevices()[0]!.queuedOffline).toBe(1);
    client = await loginClient(sim(), auth);
    await waitFor(() => client.inbound(id).length === 1, { timeoutMs: 5_000 });
    expect(client.inbound(id)[0]!.message?.conversation).toBe('while you were away');
    expect(phone.linkedDevices()[0]!.queuedOffline).toBe(0);
  });
});

describe('account ↔ account', () => {
  it('routes messages between two simulated phones’ linked devices', async () => {
    const other = sim().createPhone({ number: freshNumber(), name: 'Other shop' });
    const linked = await linkWithQr(sim(), other);
    const otherClient = await loginClient(sim(), linked.auth);
    try {
      await client.sock.sendMessage(other.jid, { text: 'hi other shop' }, { messageId: 'A2A-1' });
      await waitFor(() => otherClient.inbound('A2A-1').length === 1, { timeoutMs: 5_000 });
      expect(otherClient.inbound('A2A-1')[0]!.message?.extendedTextMessage?.text ?? otherClient.inbound('A2A-1')[0]!.message?.conversation).toBe(
        'hi other shop',
      );
      // The other phone's primary decrypted its copy too.
      expect(receivedWithId(other, 'A2A-1')).toHaveLength(1);
    } finally {
      await otherClient.end();
    }
  });
});
