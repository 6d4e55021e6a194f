import { proto, type WAMessage } from '@whiskeysockets/baileys';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient, linkWithQr, type SimClient, type SimulatedUser, waitFor } from '../src/index.ts';
import { historySyncNotification, initialBootstrap } from '../src/history-sync.ts';
import { World } from '../src/world.ts';
import { freshNumber, useSimulator } from './helpers.ts';

const { INITIAL_BOOTSTRAP, PUSH_NAME, NON_BLOCKING_DATA } = proto.HistorySync.HistorySyncType;
/** What the reconciler keeps: the sync types that carry mappings, none with chat history to wait for. */
const mappingsOnly = ({ syncType }: proto.Message.IHistorySyncNotification) => syncType === INITIAL_BOOTSTRAP || syncType === PUSH_NAME || syncType === NON_BLOCKING_DATA;

const MESSAGES_PER_CHAT = 25;
const { sim } = useSimulator({ receiptDelays: { deliveredMs: 300, readMs: null }, historySync: { messagesPerChat: MESSAGES_PER_CHAT } });

let phone: SimulatedUser;
let pnContact: SimulatedUser;
let lidContact: SimulatedUser;
let client: SimClient;
let deviceJid: string;
const histories: Array<{ syncType: unknown; chats: number; messages: number }> = [];

async function lidFor(pnUser: string): Promise<string | undefined> {
  const stored = await client.auth.keys.get('lid-mapping', [pnUser]);
  return stored[pnUser] as string | undefined;
}

beforeAll(async () => {
  phone = sim().createPhone({ number: freshNumber(), name: 'Shop' });
  pnContact = sim().createContact({ number: freshNumber(), name: 'Pat' });
  lidContact = sim().createContact({ number: freshNumber(), name: 'Lia' });
  lidContact.setAddressing('lid');
  const linked = await linkWithQr(sim(), phone, { extra: { shouldSyncHistoryMessage: mappingsOnly } });
  deviceJid = linked.deviceJid;
  client = connectClient(sim().wsUrl, linked.auth, { extra: { shouldSyncHistoryMessage: mappingsOnly } });
  client.sock.ev.on('messaging-history.set', (h) => {
    histories.push({ syncType: h.syncType, chats: h.chats.length, messages: h.messages.length });
  });
  await client.waitForOpen();
});

afterAll(async () => {
  await client?.end();
});

describe('history sync after linking', () => {
  it('carries every contact’s phone↔LID mapping, which Baileys stores in its lid-mapping keys', async () => {
    await waitFor(() => histories.length > 0, { timeoutMs: 10_000, what: 'messaging-history.set' });
    const [h] = histories;
    expect(h!.syncType).toBe(INITIAL_BOOTSTRAP);
    expect(h!.chats).toBeGreaterThanOrEqual(2);
    expect(h!.messages).toBeGreaterThanOrEqual(2 * MESSAGES_PER_CHAT);
    // (Baileys' event buffer drops lidPnMappings from the event; the keys below are where they go.)
    await waitFor(async () => (await lidFor(pnContact.number)) !== undefined && (await lidFor(lidContact.number)) !== undefined, { timeoutMs: 5_000, what: 'lid-mapping keys' });
    expect(await lidFor(pnContact.number)).toBe(pnContact.lid.split('@')[0]);
    expect(await lidFor(lidContact.number)).toBe(lidContact.lid.split('@')[0]);
    const reverse = await client.auth.keys.get('lid-mapping', [`${lidContact.lid.split('@')[0]}_reverse`]);
    expect(Object.values(reverse)).toEqual([lidContact.number]);
    expect(sim().events({ deviceJid, type: 'history-sync' })).toHaveLength(1);
  });

  it('is sent once per link, not at every login', async () => {
    await client.end();
    client = connectClient(sim().wsUrl, client.auth, { extra: { shouldSyncHistoryMessage: mappingsOnly } });
    await client.waitForOpen();
    expect(sim().events({ deviceJid, type: 'history-sync' })).toHaveLength(1);
  });
});

describe('LID addressing', () => {
  it('a LID-addressed contact’s message names the LID as the chat and the phone number beside it', async () => {
    const { id } = await lidContact.sendText(phone.number, 'hello from my LID');
    await waitFor(() => client.inbound(id).length > 0, { timeoutMs: 5_000, what: 'the LID message' });
    const [m] = client.inbound(id) as WAMessage[];
    expect(m!.message?.conversation).toBe('hello from my LID');
    expect(m!.key).toMatchObject({ remoteJid: lidContact.lid, remoteJidAlt: lidContact.jid, addressingMode: 'lid', fromMe: false });
  });

  it('a contact that switches from phone number to LID mid-conversation stays decryptable', async () => {
    const first = await pnContact.sendText(phone.number, 'by number');
    await waitFor(() => client.inbound(first.id).length > 0, { timeoutMs: 5_000, what: 'the PN message' });
    expect(client.inbound(first.id)[0]!.key).toMatchObject({ remoteJid: pnContact.jid, remoteJidAlt: pnContact.lid, addressingMode: 'pn' });
    pnContact.setAddressing('lid');
    const second = await pnContact.sendText(phone.number, 'by LID now');
    await waitFor(() => client.inbound(second.id).length > 0, { timeoutMs: 5_000, what: 'the LID message after the switch' });
    const [m] = client.inbound(second.id);
    expect(m!.message?.conversation).toBe('by LID now');
    expect(m!.key).toMatchObject({ remoteJid: pnContact.lid, remoteJidAlt: pnContact.jid, addressingMode: 'lid' });
    expect(sim().decryptErrors()).toEqual([]);
  });

  it('a message sent to the phone number of a LID-addressed contact gets its receipt from the LID, matched by id', async () => {
    const id = 'OUT-LID-RCPT-1';
    const receipts: string[] = [];
    client.sock.ws.on('CB:receipt', (node: { attrs: Record<string, string> }) => {
      if (node.attrs['id'] === id) receipts.push(node.attrs['from'] ?? '');
    });
    await client.sock.sendMessage(lidContact.jid, { text: 'reply by number' }, { messageId: id });
    await waitFor(() => lidContact.received().some((r) => r.id === id && r.text === 'reply by number'), { timeoutMs: 5_000, what: 'the contact decrypting' });
    await client.waitForStatus(id, 3);
    expect(receipts).toEqual([lidContact.lid]);
  });

  it('a message sent to the LID is received once and its receipt comes from the LID', async () => {
    const id = 'OUT-LID-TO-1';
    await client.sock.sendMessage(lidContact.lid, { text: 'reply by LID' }, { messageId: id });
    await waitFor(() => lidContact.received().some((r) => r.id === id), { timeoutMs: 5_000, what: 'the contact decrypting' });
    await client.waitForStatus(id, 3);
    expect(lidContact.received().filter((r) => r.id === id && !r.fromOwnDevice)).toHaveLength(1);
  });
});

describe('the bootstrap payload', () => {
  it('is what Baileys decodes: LID chats carry pnJid, phone-number chats lidJid, and every mapping', () => {
    const s = sim();
    const contacts = s.contacts().map((c) => c.user);
    const sync = initialBootstrap(phone.user, contacts, { messagesPerChat: 3, maxChats: 10 });
    const byId = new Map(sync.conversations!.map((c) => [c.id, c]));
    expect(byId.get(lidContact.lid)).toMatchObject({ pnJid: lidContact.jid });
    expect(sync.phoneNumberToLidMappings).toHaveLength(contacts.length);
    const { message, payloadBytes, inflatedBytes } = historySyncNotification(sync);
    expect(message.protocolMessage?.type).toBe(proto.Message.ProtocolMessage.Type.HISTORY_SYNC_NOTIFICATION);
    expect(payloadBytes).toBeGreaterThan(0);
    expect(inflatedBytes).toBeGreaterThan(payloadBytes);
  });
});

describe('persistence', () => {
  it('a user’s addressing and whether a device got its history sync survive the state file; older files count as synced', () => {
    const world = new World();
    const u = world.createUser(freshNumber(), 'contact', 'Lia');
    u.addressing = 'lid';
    const json = JSON.parse(JSON.stringify(world.toJSON()));
    expect(World.fromJSON(json).user(u.number)!.addressing).toBe('lid');
    const device = { id: 1, noisePublicKey: 'AA==', identityPublicKey: 'AA==', registrationId: 1, signedPreKey: { keyId: 1, publicKey: 'AA==', signature: 'AA==' }, preKeys: [], keyIndex: 1, platform: 'x', linkedAt: 1 };
    json.users[0].devices = [{ ...device, historySynced: false }];
    expect(World.fromJSON(json).user(u.number)!.devices.get(1)!.historySynced).toBe(false);
    json.users[0].devices = [device];
    delete json.users[0].addressing;
    const legacy = World.fromJSON(json).user(u.number)!;
    expect(legacy.devices.get(1)!.historySynced).toBe(true);
    expect(legacy.addressing).toBe('pn');
  });
});
