/**
 * Issue 14: LID addressing end to end. A first link brings the phone's history sync, whose
 * phone↔LID mappings land in Baileys' `lid-mapping` keys on disk (and in the backup); a contact
 * written to by phone number who answers from a LID-addressed chat lands in the same thread, with
 * the phone number on it; the reply through the outbox goes to the contact's LID, reaches them
 * once and its receipts (from the LID) land on the outbox document; the mappings survive a
 * restart and a failover to another disk; Baileys' "DANGER: disabling all sync" never appears.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Contact } from '@wafleet/wa-sim';
import { Timestamp } from 'firebase-admin/firestore';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers.ts';
import { scanPublishedQr, startHarness, type Harness } from './harness.ts';

let h: Harness;
let rec: Awaited<ReturnType<Harness['startReconciler']>>;
const ACCOUNT = 'lid-01';
const PHONE = '15550014001';
let lia: Contact;
let pat: Contact;
let seq = 0;

const userOf = (jid: string) => jid.split('@')[0]!;
const threadRef = (jid: string) => h.db.doc(`threads/${ACCOUNT}__${jid}`);

/** Baileys' lid-mapping keys as the reconciler stored them on `sessionsPath` (every shard merged). */
async function lidMappingOnDisk(sessionsPath: string): Promise<Record<string, string>> {
  const dir = path.join(sessionsPath, ACCOUNT, 'keys', 'lid-mapping');
  const files = await readdir(dir).catch(() => [] as string[]);
  const out: Record<string, string> = {};
  for (const f of files.filter((name) => name.endsWith('.json'))) {
    const shard = JSON.parse(await readFile(path.join(dir, f), 'utf8')) as { entries?: Record<string, unknown> };
    for (const [k, v] of Object.entries(shard.entries ?? {})) if (typeof v === 'string') out[k] = v;
  }
  return out;
}

const knowsMapping = (m: Record<string, string>, c: Contact) => m[c.number] === userOf(c.lid) && m[`${userOf(c.lid)}_reverse`] === c.number;

async function queue(to: string, text: string): Promise<string> {
  const id = `lid-${++seq}-${Date.now()}`;
  await h.db.doc(`outbox/${id}`).set({ accountId: ACCOUNT, to, text, createdAt: Timestamp.now(), createdBy: 'uid-test', status: 'queued', attemptCount: 0 });
  return id;
}
const outbox = async (id: string) => (await h.db.doc(`outbox/${id}`).get()).data()!;
const waitOutbox = (id: string, status: string, timeoutMs = 30_000) =>
  waitFor(async () => ((await outbox(id)).status === status ? outbox(id) : undefined), { timeoutMs, label: `${id} ${status}` }).catch(async (err: Error) => {
    throw new Error(`${err.message}; doc: ${JSON.stringify(await outbox(id))}\n${h.recentLog(ACCOUNT)}`);
  });
/** The bubbles a contact's phone shows for a text (one per WhatsApp id, duplicates counted). */
const received = (c: Contact, text: string) => c.received().filter((m) => m.text === text && !m.fromOwnDevice);

beforeAll(async () => {
  h = await startHarness('lid', { historySync: { messagesPerChat: 40 } });
  // Both are in the phone's chats before the link, so the history sync carries their mappings.
  lia = h.sim.createContact({ number: '15550014101', name: 'Lia', receiptDelays: { deliveredMs: 200, readMs: 500 } });
  pat = h.sim.createContact({ number: '15550014102', name: 'Pat' });
  rec = await h.startReconciler({ env: { OUTBOX_RATE_PER_MINUTE: '0', OUTBOX_ACK_TIMEOUT_MS: '5000' } });
  await h.createAccount(ACCOUNT);
  await scanPublishedQr(h, ACCOUNT, PHONE, 90_000);
  await h.waitForPhase(ACCOUNT, 'connected', 90_000);
}, 180_000);
afterAll(() => h.close());

describe('LID addressing', () => {
  it('a first link stores the history sync’s phone↔LID mappings on disk', async () => {
    const deviceJid = h.sim.phone(PHONE).linkedDevices()[0]!.deviceJid;
    expect(h.sim.events({ deviceJid, type: 'history-sync' })).toHaveLength(1);
    // Nobody has written or been written to yet: the history sync is the only source so far.
    const mapping = await waitFor(async () => {
      const m = await lidMappingOnDisk(rec.sessionsPath);
      return knowsMapping(m, lia) && knowsMapping(m, pat) ? m : undefined;
    }, { timeoutMs: 20_000, label: 'lid-mapping keys on disk' });
    expect(Object.keys(mapping).length).toBeGreaterThanOrEqual(4);
    // The chat history in the same sync is discarded: no thread was made from it.
    expect((await h.db.collection('threads').where('accountId', '==', ACCOUNT).get()).size).toBe(0);
  });

  it('outbox by phone, answer from a LID chat: one thread, keyed by the phone number, with phone and LID', async () => {
    const hello = await queue(`+${lia.number}`, 'Your order is ready for pickup');
    const sent = await waitOutbox(hello, 'read');
    // Sent to the phone-number chat (Baileys encrypts for the devices it knows), and that is recorded.
    expect(sent.sentToJid).toBe(`${lia.number}@s.whatsapp.net`);
    expect(received(lia, 'Your order is ready for pickup')).toHaveLength(1);

    // Lia's chats move to LID addressing: from="<lid>@lid", addressing_mode="lid", sender_pn.
    lia.setAddressing('lid');
    const { id } = await lia.sendText(PHONE, 'Great, I will come at 5');
    const thread = threadRef(`${lia.number}@s.whatsapp.net`);
    const msg = await waitFor(async () => (await thread.collection('messages').doc(id).get()).data(), { timeoutMs: 20_000, label: 'the LID message stored' }).catch((err: Error) => {
      throw new Error(`${err.message}\n${h.recentLog(ACCOUNT)}`);
    });
    expect(msg).toMatchObject({ chatJid: `${lia.number}@s.whatsapp.net`, from: lia.lid, phone: `+${lia.number}`, lid: lia.lid, text: 'Great, I will come at 5', direction: 'inbound' });
    expect((await thread.get()).data()).toMatchObject({ accountId: ACCOUNT, chatJid: `${lia.number}@s.whatsapp.net`, phone: `+${lia.number}`, lid: lia.lid, lastMessageId: id });
    // No second thread under the LID.
    expect((await threadRef(lia.lid).get()).exists).toBe(false);
    const threads = await h.db.collection('threads').where('accountId', '==', ACCOUNT).get();
    expect(threads.docs.map((d) => d.id)).toEqual([`${ACCOUNT}__${lia.number}@s.whatsapp.net`]);
    // An app finds it by phone number too.
    const byPhone = await h.db.collection('threads').where('accountId', '==', ACCOUNT).where('phone', '==', `+${lia.number}`).get();
    expect(byPhone.docs.map((d) => d.id)).toEqual([`${ACCOUNT}__${lia.number}@s.whatsapp.net`]);

    // The reply through the outbox reaches Lia once; her receipts come from her LID and land.
    const reply = await queue(`+${lia.number}`, 'See you at 5!');
    const done = await waitOutbox(reply, 'read');
    expect(done).toMatchObject({ sentToJid: `${lia.number}@s.whatsapp.net`, status: 'read' });
    expect(done.sentAt).toBeInstanceOf(Timestamp);
    expect(done.deliveredAt).toBeInstanceOf(Timestamp);
    expect(done.readAt).toBeInstanceOf(Timestamp);
    expect(received(lia, 'See you at 5!')).toHaveLength(1);
    expect(h.sim.decryptErrors()).toEqual([]);
  });

  it('a contact who switches from phone number to LID mid-conversation stays in one thread', async () => {
    const first = await pat.sendText(PHONE, 'Hi, by number');
    const thread = threadRef(`${pat.number}@s.whatsapp.net`);
    await waitFor(async () => (await thread.collection('messages').doc(first.id).get()).exists, { timeoutMs: 20_000, label: 'PN message stored' });
    expect((await thread.collection('messages').doc(first.id).get()).data()).toMatchObject({ from: `${pat.number}@s.whatsapp.net`, phone: `+${pat.number}`, lid: pat.lid });
    pat.setAddressing('lid');
    const second = await pat.sendText(PHONE, 'And now by LID');
    await waitFor(async () => (await thread.collection('messages').doc(second.id).get()).exists, { timeoutMs: 20_000, label: 'LID message stored' });
    expect((await thread.collection('messages').doc(second.id).get()).data()).toMatchObject({ from: pat.lid, phone: `+${pat.number}`, lid: pat.lid });
    expect((await thread.collection('messages').count().get()).data().count).toBe(2);
    expect((await threadRef(pat.lid).get()).exists).toBe(false);
  });

  it('the mappings survive a restart on the same disk and a failover to another disk', async () => {
    await rec.stop('restart');
    rec = await h.startReconciler({ sessionsPath: rec.sessionsPath, env: { OUTBOX_RATE_PER_MINUTE: '0', OUTBOX_ACK_TIMEOUT_MS: '5000' } });
    await h.waitForPhase(ACCOUNT, (s) => s.phase === 'connected' && (s.owner as { instanceId?: string } | undefined)?.instanceId === 'rec-a', 60_000);
    const kept = await lidMappingOnDisk(rec.sessionsPath);
    expect(knowsMapping(kept, lia) && knowsMapping(kept, pat)).toBe(true);

    // Failover: another instance on an empty disk restores the account from its backup.
    await rec.stop('failover');
    const other = await h.startReconciler({ instanceId: 'rec-b', env: { OUTBOX_RATE_PER_MINUTE: '0', OUTBOX_ACK_TIMEOUT_MS: '5000' } });
    rec = other;
    await h.waitForPhase(ACCOUNT, (s) => s.phase === 'connected' && (s.owner as { instanceId?: string } | undefined)?.instanceId === 'rec-b', 60_000);
    const restored = await lidMappingOnDisk(other.sessionsPath);
    expect(knowsMapping(restored, lia) && knowsMapping(restored, pat)).toBe(true);

    // And Lia's next message still lands in her phone-number thread.
    const { id } = await lia.sendText(PHONE, 'Running 5 minutes late');
    const thread = threadRef(`${lia.number}@s.whatsapp.net`);
    await waitFor(async () => (await thread.collection('messages').doc(id).get()).exists, { timeoutMs: 20_000, label: 'message after failover stored' });
  });

  it('Baileys never warned "DANGER: disabling all sync"', () => {
    expect(h.logLinesMatching(/DANGER/)).toEqual([]);
    // The check is live: the reconciler's warnings are recorded (the restarts above logged some).
    expect(h.logLinesMatching(/./).length).toBeGreaterThan(0);
  });
});
