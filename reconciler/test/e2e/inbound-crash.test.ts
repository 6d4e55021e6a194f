/**
 * Issue 16, item 11: 500 inbound messages while the reconciler is killed (-9) twice mid-stream
 * and restarted on its disk each time. Whatever Baileys had already receipted when the process
 * died (WhatsApp will not send it again) must still become its document: exactly 500 documents,
 * each text once, and the on-disk journal empty once everything is stored.
 */
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Contact } from '@wafleet/wa-sim';
import { waitFor } from '../helpers.ts';
import { scanPublishedQr, startHarness, type Harness } from './harness.ts';
import { spawnReconciler, type ReconcilerProcess } from './process.ts';

const ACCOUNT = 'inbcrash-01';
const PHONE = '15550007001';
const MESSAGES = 500;
// The producer stays at most this many messages ahead of what the device has receipted, so every
// kill finds messages at every stage: queued at WhatsApp, decrypted and receipted, mid-write.
const AHEAD = 60;
const JOURNAL = '.inbound-journal';

let h: Harness;
let sessionsPath: string;
let running: ReconcilerProcess | null = null;
let contacts: Contact[] = [];

const processes: ReconcilerProcess[] = [];
const spawnVm = () => {
  const p = spawnReconciler({ projectId: h.projectId, sim: h.sim, sessionsPath, instanceId: 'vm-inbcrash', env: { LOG_LEVEL: 'warn' } });
  processes.push(p);
  return p;
};

beforeAll(async () => {
  h = await startHarness('inbcrash');
  sessionsPath = await h.newSessionsDir();
  running = spawnVm();
  await h.createAccount(ACCOUNT);
  await scanPublishedQr(h, ACCOUNT, PHONE, 120_000);
  await h.waitForPhase(ACCOUNT, 'connected', 120_000);
  contacts = [h.sim.createContact({ number: '15550007101', name: 'Dora' }), h.sim.createContact({ number: '15550007102', name: 'Emil' })];
}, 180_000);
afterAll(async () => {
  running?.kill('SIGKILL');
  await h.close();
});

const threads = () => contacts.map((c) => h.db.doc(`threads/${ACCOUNT}__${c.number}@s.whatsapp.net`));
/** Messages the linked device answered with a delivery receipt: WhatsApp will not send them again. */
const receipted = () => contacts.reduce((n, c) => n + c.sentMessages().filter((m) => m.deliveredTo.length > 0).length, 0);
const storedCount = async () => (await Promise.all(threads().map((t) => t.collection('messages').count().get()))).reduce((n, s) => n + s.data().count, 0);

/** Where the stream stands, for failure messages (counts only, and the reconciler's last lines). */
async function progress(sent: number): Promise<string> {
  const status = await h.status(ACCOUNT);
  const errors = processes.flatMap((p, i) => p.output().split('\n').filter((l) => /"level":"(error|fatal)"/.test(l)).map((l) => `#${i} ${l.slice(0, 600)}`));
  const unreceipted = contacts.flatMap((c) => c.sentMessages().filter((m) => m.deliveredTo.length === 0).map((m) => m.id));
  return `${await storedCount()} stored, ${receipted()} receipted (not: ${unreceipted.join(', ')}), ${sent} sent, account ${String(status?.phase)}; reconciler errors:\n${errors.slice(-12).join('\n')}`;
}

async function journalBytes(): Promise<number> {
  const dir = path.join(sessionsPath, JOURNAL);
  let total = 0;
  for (const name of await readdir(dir)) total += (await stat(path.join(dir, name))).size;
  return total;
}

describe('inbound messages under kill -9', () => {
  it('500 messages, two crashes mid-stream: exactly 500 documents, each text once', async () => {
    const sent: Array<{ from: string; id: string; text: string }> = [];
    const producer = (async () => {
      for (let i = 0; i < MESSAGES; i++) {
        await waitFor(() => sent.length - receipted() < AHEAD, { timeoutMs: 120_000, intervalMs: 10, label: `room to send message ${i}` });
        const c = contacts[i % 2]!;
        const text = `crash inbound ${i} from ${c.name}`;
        const { id } = await c.sendText(PHONE, text);
        sent.push({ from: c.number, id, text });
      }
    })();
    // Awaited below; until then a failure must not surface as an unhandled rejection.
    producer.catch(() => undefined);

    const kills: string[] = [];
    for (const at of [150, 350]) {
      const storedAtKill = await waitFor(
        async () => {
          const n = await storedCount();
          return n >= at ? n : 0;
        },
        { timeoutMs: 120_000, intervalMs: 25, label: `${at} stored` },
      ).catch(async (err: Error) => {
        throw new Error(`${err.message}: ${await progress(sent.length)}`);
      });
      kills.push(`${storedAtKill} stored/${receipted()} receipted`);
      running!.kill('SIGKILL');
      await running!.exited;
      running = spawnVm();
    }
    await producer;
    let last = 0;
    await waitFor(async () => (last = await storedCount()) >= MESSAGES, { timeoutMs: 120_000, intervalMs: 250, label: `${MESSAGES} message documents` }).catch(async (err: Error) => {
      throw new Error(`${err.message}: ${last} stored after kills at ${kills.join(', ')}; ${h.sim.decryptErrors().length} decrypt errors; ${h.sim.stats().retryReceipts} retry receipts; ${await progress(sent.length)}`);
    });
    // A stored message leaves the journal; everything is stored, so the journal empties.
    await waitFor(async () => (await journalBytes()) === 0, { timeoutMs: 30_000, intervalMs: 100, label: 'journal emptied' });

    expect(await storedCount()).toBe(MESSAGES);
    const docs = new Map<string, Record<string, unknown>>();
    for (const t of threads()) for (const d of (await t.collection('messages').get()).docs) docs.set(d.id, d.data());
    const byText = new Map<string, number>();
    for (const d of docs.values()) byText.set(d.text as string, (byText.get(d.text as string) ?? 0) + 1);
    const problems: string[] = [];
    for (const m of sent) {
      const d = docs.get(m.id);
      if (!d) problems.push(`${m.text}: missing`);
      else if (d.text !== m.text || d.from !== `${m.from}@s.whatsapp.net` || d.direction !== 'inbound' || d.accountId !== ACCOUNT) problems.push(`${m.text}: stored as ${JSON.stringify({ text: d.text, from: d.from })}`);
      if ((byText.get(m.text) ?? 0) !== 1) problems.push(`${m.text}: stored ${byText.get(m.text) ?? 0} times`);
    }
    expect(problems, `kills at ${kills.join(', ')} stored`).toEqual([]);
    expect(h.sim.decryptErrors()).toEqual([]);
  }, 420_000);
});
