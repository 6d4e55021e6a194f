/**
 * Issue 5, done-when 4: 500 inbound messages, with dropped connections and redeliveries along the
 * way, become exactly 500 message documents, each once, with its thread's lastMessageAt.
 */
import type { Timestamp } from 'firebase-admin/firestore';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers.ts';
import { scanPublishedQr, startHarness, type Harness } from './harness.ts';

let h: Harness;
let rec: Awaited<ReturnType<Harness['startReconciler']>>;
const ACCOUNT = 'in-01';
const PHONE = '15550008001';

beforeAll(async () => {
  h = await startHarness('inbound');
  rec = await h.startReconciler();
  await h.createAccount(ACCOUNT);
  await scanPublishedQr(h, ACCOUNT, PHONE, 90_000);
  await h.waitForPhase(ACCOUNT, 'connected', 90_000);
}, 180_000);
afterAll(() => h.close());

const metric = async (name: string) => {
  const text = await (await fetch(`http://127.0.0.1:${rec.httpPort}/metrics`)).text();
  return Number(new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
};

describe('inbound messages', () => {
  it('500 messages through drops and redeliveries: exactly 500 documents', async () => {
    const contacts = [h.sim.createContact({ number: '15550008101', name: 'Bob' }), h.sim.createContact({ number: '15550008102', name: 'Carol' })];
    const deviceJid = h.sim.deviceStats().find((d) => d.deviceJid.startsWith(`${PHONE}:`))!.deviceJid;
    const sent: Array<{ from: string; id: string; text: string }> = [];
    let redelivered = 0;
    for (let i = 0; i < 500; i++) {
      const c = contacts[i % 2]!;
      const text = `inbound ${i} from ${c.name}`;
      const { id } = await c.sendText(PHONE, text);
      sent.push({ from: c.number, id, text });
      // The connection dies twice mid-stream; WhatsApp queues what the device did not ack and redelivers it.
      if (i === 150 || i === 350) h.sim.injectFault({ kind: 'drop', target: deviceJid });
      // Every 25th message is delivered a second time, as WhatsApp does after a lost receipt.
      if (i % 25 === 24) {
        await c.redeliver(sent[i - 10]!.id);
        redelivered++;
      }
    }
    const threads = contacts.map((c) => h.db.doc(`threads/${ACCOUNT}__${c.number}@s.whatsapp.net`));
    const count = async () => (await Promise.all(threads.map((t) => t.collection('messages').count().get()))).reduce((n, s) => n + s.data().count, 0);
    let last = 0;
    await waitFor(async () => (last = await count()) >= 500, { timeoutMs: 60_000, intervalMs: 500, label: '500 message documents' }).catch((err: Error) => {
      throw new Error(`${err.message}: ${last} stored, ${h.sim.decryptErrors().length} decrypt errors, ${h.sim.stats().retryReceipts} retry receipts`);
    });
    // Every redelivery reached the writer and was recognised, so nothing more is coming.
    await waitFor(async () => (await metric('wafleet_inbound_messages_total{result="duplicate"}')) >= redelivered, { timeoutMs: 30_000, label: 'redeliveries seen' });
    expect(await count()).toBe(500);
    const recovered = await metric('wafleet_inbound_messages_total{result="recovered"}');
    expect((await metric('wafleet_inbound_messages_total{result="stored"}')) + recovered).toBe(500);

    const stored = new Map<string, Record<string, unknown>>();
    for (const t of threads) for (const d of (await t.collection('messages').get()).docs) stored.set(d.id, d.data());
    for (const m of sent) {
      expect(stored.get(m.id), m.text).toMatchObject({ waMessageId: m.id, text: m.text, direction: 'inbound', accountId: ACCOUNT, from: `${m.from}@s.whatsapp.net` });
    }
    // Messages Baileys dropped at a connection loss are recovered from the decrypt-time capture,
    // which reads the stanza's attributes: they keep the sender's push name like the rest.
    const named = [...stored.values()].filter((d) => d.fromName !== null);
    expect(named.length).toBe(500);
    for (const d of named) expect(d.fromName).toBe(d.from === '15550008101@s.whatsapp.net' ? 'Bob' : 'Carol');
    const sample = named[0]!;
    // Retention: 90 days by default.
    const ttlDays = ((sample.expireAt as Timestamp).toMillis() - (sample.receivedAt as Timestamp).toMillis()) / 86_400_000;
    expect(ttlDays).toBeGreaterThan(89.9);
    expect(ttlDays).toBeLessThan(90.1);

    for (const [i, t] of threads.entries()) {
      const thread = (await t.get()).data()!;
      const newest = Math.max(...[...stored.values()].filter((d) => d.from === `${contacts[i]!.number}@s.whatsapp.net`).map((d) => (d.sentAt as Timestamp).toMillis()));
      expect(thread).toMatchObject({ accountId: ACCOUNT, chatJid: `${contacts[i]!.number}@s.whatsapp.net` });
      expect((thread.lastMessageAt as Timestamp).toMillis()).toBe(newest);
    }
    expect(h.sim.decryptErrors()).toEqual([]);
  }, 240_000);
});
