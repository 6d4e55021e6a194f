/**
 * Issue 14: one thread per person, whichever address WhatsApp uses, against the real Firestore
 * emulator. The writer is fed what toInbound makes of a message (chat as addressed, plus the phone
 * number and LID when known); the thread id must never change once a thread exists.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { getApps, initializeApp } from 'firebase-admin/app';
import { getFirestore, type Firestore } from 'firebase-admin/firestore';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InboundMessage } from '../../src/inbound/inbound-message.ts';
import { InboundWriter } from '../../src/inbound/inbound-writer.ts';
import { createLogger } from '../../src/log.ts';

const projectId = `demo-e2e-threads-${process.pid}`.slice(0, 30);
let db: Firestore;
let writer: InboundWriter;
let dir: string;
let n = 0;
const results: string[] = [];

beforeAll(async () => {
  const app = getApps().find((a) => a.name === projectId) ?? initializeApp({ projectId }, projectId);
  db = getFirestore(app);
  dir = await mkdtemp(path.join(tmpdir(), 'wafleet-threads-'));
  writer = await InboundWriter.open({
    db,
    log: createLogger({ level: 'silent' }),
    metrics: { result: (r) => void results.push(r), stored: () => {}, journal: () => {}, journalBytes: () => {} },
    retentionDays: 90,
    sessionsPath: dir,
  });
});
afterAll(async () => {
  await writer.drain(5_000);
  await rm(dir, { recursive: true, force: true });
});

function msg(accountId: string, fields: Partial<InboundMessage> & { chatJid: string }): InboundMessage {
  n++;
  return { accountId, waId: `WA${String(n).padStart(4, '0')}`, from: fields.chatJid, fromName: 'Lia', text: `text ${n}`, sentAtMs: 1_700_000_000_000 + n * 1000, handedOverAt: Date.now(), ...fields };
}
const threadsOf = async (accountId: string) => (await db.collection('threads').where('accountId', '==', accountId).get()).docs;

const PN = '15550014201@s.whatsapp.net';
const LID = '201234567890123@lid';

describe('canonical thread ids', () => {
  it('keyed by phone number when it is known; the LID-addressed message joins it', async () => {
    const a = 'thr-a';
    await writer.enqueue(msg(a, { chatJid: PN, pnJid: PN, lidJid: LID }));
    await writer.enqueue(msg(a, { chatJid: LID, from: LID, pnJid: PN, lidJid: LID }));
    const docs = await threadsOf(a);
    expect(docs.map((d) => d.id)).toEqual([`${a}__${PN}`]);
    expect(docs[0]!.data()).toMatchObject({ chatJid: PN, phone: '+15550014201', lid: LID });
    const messages = (await docs[0]!.ref.collection('messages').get()).docs.map((d) => d.data());
    expect(messages.map((m) => [m.chatJid, m.from, m.phone, m.lid])).toEqual([
      [PN, PN, '+15550014201', LID],
      [PN, LID, '+15550014201', LID],
    ]);
  });

  it('a thread that began with only the LID keeps its id once the phone number becomes known', async () => {
    const a = 'thr-b';
    await writer.enqueue(msg(a, { chatJid: LID, from: LID, lidJid: LID, pnJid: null }));
    let docs = await threadsOf(a);
    expect(docs.map((d) => d.id)).toEqual([`${a}__${LID}`]);
    expect(docs[0]!.get('phone')).toBeUndefined();
    // The number is learnt (a later message carries sender_pn): same thread, which gains `phone`.
    await writer.enqueue(msg(a, { chatJid: LID, from: LID, lidJid: LID, pnJid: PN }));
    // Then a message by phone number whose LID this process does not know: found by `phone`.
    await writer.enqueue(msg(a, { chatJid: PN, pnJid: PN, lidJid: null }));
    docs = await threadsOf(a);
    expect(docs.map((d) => d.id)).toEqual([`${a}__${LID}`]);
    expect(docs[0]!.data()).toMatchObject({ chatJid: LID, phone: '+15550014201', lid: LID });
    expect((await docs[0]!.ref.collection('messages').count().get()).data().count).toBe(3);
  });

  it('a LID-only message finds the phone-number thread that recorded that LID', async () => {
    const a = 'thr-c';
    await writer.enqueue(msg(a, { chatJid: PN, pnJid: PN, lidJid: LID }));
    await writer.enqueue(msg(a, { chatJid: LID, from: LID, lidJid: LID, pnJid: null }));
    const docs = await threadsOf(a);
    expect(docs.map((d) => d.id)).toEqual([`${a}__${PN}`]);
    expect((await docs[0]!.ref.collection('messages').count().get()).data().count).toBe(2);
  });

  it('a redelivery under the other address is still one document', async () => {
    const a = 'thr-d';
    const first = msg(a, { chatJid: PN, pnJid: PN, lidJid: LID });
    await writer.enqueue(first);
    await writer.enqueue({ ...first, chatJid: LID, from: LID });
    const docs = await threadsOf(a);
    expect(docs).toHaveLength(1);
    expect((await docs[0]!.ref.collection('messages').count().get()).data().count).toBe(1);
    expect(results.at(-1)).toBe('duplicate');
  });

  it('groups, and entries journaled before LID addressing (no phone or LID), keep the chat JID', async () => {
    const a = 'thr-e';
    await writer.enqueue(msg(a, { chatJid: '120363000000000001@g.us', from: PN }));
    await writer.enqueue(msg(a, { chatJid: PN }));
    const docs = await threadsOf(a);
    expect(docs.map((d) => d.id).sort()).toEqual([`${a}__120363000000000001@g.us`, `${a}__${PN}`]);
    for (const d of docs) {
      expect(d.get('phone')).toBeUndefined();
      expect(d.get('lid')).toBeUndefined();
    }
  });
});
