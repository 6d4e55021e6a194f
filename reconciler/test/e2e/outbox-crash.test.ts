/**
 * Issue 5, done-when 2: 1,000 messages across 30 accounts, the reconciler killed (-9) twice
 * mid-stream and restarted on its disk. Every message ends sent/delivered/read or failed with a
 * reason, and every contact's phone shows each text at most once (one WhatsApp id per text).
 */
import { FieldPath, Timestamp } from 'firebase-admin/firestore';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Contact } from '@wafleet/wa-sim';
import { waitFor } from '../helpers.ts';
import { scanPublishedQr, startHarness, type Harness } from './harness.ts';
import { spawnReconciler, type ReconcilerProcess } from './process.ts';

const N = 30;
const MESSAGES = 1_000;
const ids = Array.from({ length: N }, (_, i) => `oc-${String(i + 1).padStart(2, '0')}`);
let h: Harness;
let sessionsPath: string;
let running: ReconcilerProcess | null = null;
let contacts: Contact[] = [];

// Paced at 2 messages a second per account (60/s for the fleet): slow enough to kill mid-stream.
const spawnVm = () =>
  spawnReconciler({
    projectId: h.projectId,
    sim: h.sim,
    sessionsPath,
    instanceId: 'vm-1',
    env: { LEASE_TTL_MS: '600000', OUTBOX_RATE_PER_MINUTE: '120', OUTBOX_FLEET_RATE_PER_SECOND: '0', OUTBOX_ACK_TIMEOUT_MS: '3000', LOG_LEVEL: 'warn' },
  });

beforeAll(async () => {
  h = await startHarness('outcrash');
  sessionsPath = await h.newSessionsDir();
  contacts = Array.from({ length: 10 }, (_, i) => h.sim.createContact({ number: `155500096${String(i).padStart(2, '0')}` }));
  running = spawnVm();
  await Promise.all(ids.map((id) => h.createAccount(id)));
  await Promise.all(ids.map((id, i) => scanPublishedQr(h, id, `155500091${String(i).padStart(2, '0')}`, 180_000)));
  await waitFor(async () => (await h.db.collection('accountStatus').where('phase', '==', 'connected').count().get()).data().count === N, {
    timeoutMs: 180_000,
    intervalMs: 250,
    label: `${N} accounts connected`,
  });
}, 300_000);
afterAll(async () => {
  running?.kill('SIGKILL');
  await h.close();
});

const DONE = ['sent', 'delivered', 'read', 'failed'];
const countIn = async (statuses: string[]) => (await h.db.collection('outbox').where('status', 'in', statuses).count().get()).data().count;

async function killWhenSent(atLeast: number): Promise<void> {
  await waitFor(async () => (await countIn(['sent', 'delivered', 'read'])) >= atLeast, { timeoutMs: 120_000, intervalMs: 100, label: `${atLeast} sent` });
  running!.kill('SIGKILL');
  await running!.exited;
  running = spawnVm();
}

/** For a failure message: what is not final, by status and account, and how each account stands. */
async function whereItStands(): Promise<string> {
  const open = (await h.db.collection('outbox').where('status', 'not-in', DONE).get()).docs;
  const byKey = new Map<string, number>();
  for (const d of open) byKey.set(`${d.get('accountId')}:${d.get('status')}`, (byKey.get(`${d.get('accountId')}:${d.get('status')}`) ?? 0) + 1);
  const phases = (await h.db.collection('accountStatus').get()).docs.filter((d) => d.get('phase') !== 'connected').map((d) => `${d.id}=${d.get('phase')}/${d.get('reason')}`);
  const errors = (running?.output() ?? '').split('\n').filter((l) => /"level":"(warn|error|fatal)"/.test(l) && !l.includes('"component":"baileys"')).slice(-15);
  return `${open.length} not final: ${JSON.stringify(Object.fromEntries(byKey))}; accounts not connected: ${phases.join(', ') || 'none'}; last warnings:\n${errors.join('\n')}`;
}

describe('outbox under kill -9', () => {
  it('1,000 messages, two crashes: no duplicate, no silent loss', async () => {
    const texts = new Map<string, string>();
    for (let start = 0; start < MESSAGES; start += 250) {
      const batch = h.db.batch();
      for (let i = start; i < start + 250; i++) {
        const id = `crash-${String(i).padStart(4, '0')}`;
        const text = `crash test message ${i}`;
        texts.set(id, text);
        batch.set(h.db.doc(`outbox/${id}`), {
          accountId: ids[i % N],
          to: `+${contacts[i % contacts.length]!.number}`,
          text,
          createdAt: Timestamp.fromMillis(Date.now() + i),
          createdBy: 'uid-test',
          status: 'queued',
          attemptCount: 0,
        });
      }
      await batch.commit();
    }
    await killWhenSent(250);
    await killWhenSent(600);
    await waitFor(async () => (await countIn(DONE)) === MESSAGES, { timeoutMs: 240_000, intervalMs: 500, label: 'every message final' }).catch(async (err: Error) => {
      throw new Error(`${err.message}: ${await whereItStands()}`);
    });

    const docs = (await h.db.collection('outbox').where(FieldPath.documentId(), '>=', 'crash-').where(FieldPath.documentId(), '<', 'crash.').get()).docs;
    expect(docs).toHaveLength(MESSAGES);
    // What the phones show: one bubble per WhatsApp id; a text under two ids would be a duplicate.
    const idsByText = new Map<string, Set<string>>();
    let transmissions = 0;
    for (const c of contacts) {
      for (const m of c.received()) {
        transmissions++;
        const text = m.text ?? '';
        const set = idsByText.get(text) ?? new Set<string>();
        set.add(m.id);
        idsByText.set(text, set);
      }
    }
    const problems: string[] = [];
    let failed = 0;
    for (const d of docs) {
      const data = d.data();
      const shown = idsByText.get(texts.get(d.id)!) ?? new Set();
      if (shown.size > 1) problems.push(`${d.id}: shown under ${shown.size} ids`);
      if (data.status === 'failed') {
        failed++;
        if (!data.error?.code) problems.push(`${d.id}: failed without a reason`);
      } else if (shown.size !== 1 || !shown.has(data.providerMessageId)) {
        problems.push(`${d.id}: ${data.status} but the phone shows ${shown.size} copies`);
      }
    }
    expect(problems, `${failed} failed, ${transmissions} transmissions`).toEqual([]);
    expect(h.sim.totalConflicts()).toBe(0);
  }, 600_000);
});
