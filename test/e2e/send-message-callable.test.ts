/**
 * Issue 5, done-when 1, through the admin API: an operator's `sendMessage` call (Functions
 * emulator, Auth-emulator ID token) → the outbox document → the reconciler (real Baileys) → the
 * simulator, whose contact decrypts the text once; the document goes queued → sending → sent →
 * delivered → read. `cancelMessage` on a message still waiting keeps it off the wire.
 *
 * The Functions emulator serves one project (`demo-wafleet`), which functions/test/callables.test.ts
 * also uses and clears; vitest.config.ts runs this file in a group of its own after the rest.
 */
import type { Contact } from '@wafleet/wa-sim';
import { Timestamp } from 'firebase-admin/firestore';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waMessageId } from '../../reconciler/src/outbox/message-id.ts';
import { scanPublishedQr, startHarness, type Harness } from '../../reconciler/test/e2e/harness.ts';
import { waitFor } from '../../reconciler/test/helpers.ts';
import { signInAs, type TestUser } from '../support/auth.ts';
import { callFunction } from '../support/callables.ts';
import { clearFirestore, FUNCTIONS_PROJECT } from '../support/emulators.ts';

const ACCOUNT = 'cb-01';
const PHONE = '15550008001';
const ALICE = '+15550008101';

let h: Harness;
let operator: TestUser;
let alice: Contact;
/** Every status each outbox document of the account went through, as a client listener saw them. */
const seen = new Map<string, string[]>();
let unsubscribe: () => void = () => undefined;

async function call<T>(name: string, data: unknown): Promise<T> {
  const res = await callFunction<T>(name, data, operator.idToken);
  if (!res.ok) throw new Error(`${name} failed: ${res.status} ${res.message}`);
  return res.data;
}

const doc = async (id: string) => (await h.db.doc(`outbox/${id}`).get()).data()!;
const waitStatus = (id: string, status: string, timeoutMs = 30_000) =>
  waitFor(async () => ((await doc(id)).status === status ? doc(id) : undefined), { timeoutMs, label: `${id} ${status}` });
const received = (text: string) => alice.received().filter((m) => m.text === text);

beforeAll(async () => {
  await clearFirestore(FUNCTIONS_PROJECT);
  h = await startHarness('callable', {}, { projectId: FUNCTIONS_PROJECT });
  operator = await signInAs('operator', 'sender');
  alice = h.sim.createContact({ number: ALICE.slice(1), name: 'Alice', receiptDelays: { deliveredMs: 300, readMs: 700 } });
  unsubscribe = h.db
    .collection('outbox')
    .where('accountId', '==', ACCOUNT)
    .onSnapshot((snap) => {
      for (const change of snap.docChanges()) {
        const status = change.doc.get('status') as string;
        const list = seen.get(change.doc.id) ?? [];
        if (list.at(-1) !== status) list.push(status);
        seen.set(change.doc.id, list);
      }
    });
  await h.startReconciler({ env: { OUTBOX_RATE_PER_MINUTE: '0' } });
  await call('createAccount', { accountId: ACCOUNT, displayName: 'Callable sender' });
  await scanPublishedQr(h, ACCOUNT, PHONE, 90_000);
  await h.waitForPhase(ACCOUNT, 'connected', 90_000);
}, 240_000);

afterAll(async () => {
  unsubscribe();
  await h?.close();
});

describe('sendMessage end to end', () => {
  it('the contact receives the text once; the document goes queued → sending → sent → delivered → read', async () => {
    // A late server ack keeps "sending" visible long enough for a listener to see it.
    const device = h.sim.deviceStats().find((d) => d.deviceJid.startsWith(`${PHONE}:`))!.deviceJid;
    h.sim.injectFault({ kind: 'ack-delay', ms: 400, target: device, times: 1 });
    const input = { accountId: ACCOUNT, to: '+1 555 000 8101', text: 'hello through the API', idempotencyKey: 'order-1' };
    const { messageId, status, duplicate } = await call<{ messageId: string; status: string; duplicate: boolean }>('sendMessage', input);
    expect({ status, duplicate }).toEqual({ status: 'queued', duplicate: false });

    const read = await waitStatus(messageId, 'read');
    const order = ['queued', 'sending', 'sent', 'delivered', 'read'];
    const statuses = seen.get(messageId) ?? [];
    // A listener may merge changes that land close together, never reorder them.
    expect(statuses.map((s) => order.indexOf(s))).toEqual(statuses.map((s) => order.indexOf(s)).sort((a, b) => a - b));
    expect(statuses[0]).toBe('queued');
    expect(statuses).toContain('sending');
    expect(read).toMatchObject({ to: ALICE, createdBy: operator.uid, attemptCount: 1, providerMessageId: waMessageId(messageId), leaseUntil: null });
    const times = [read.createdAt, read.sentAt, read.deliveredAt, read.readAt].map((t: Timestamp) => t.toMillis());
    expect(times).toEqual([...times].sort((a, b) => a - b));
    expect(received(input.text)).toEqual([expect.objectContaining({ id: waMessageId(messageId), fromNumber: PHONE })]);

    // The same call again (a client retrying) is the same message: nothing new reaches the phone.
    const again = await call<{ messageId: string; status: string; duplicate: boolean }>('sendMessage', input);
    expect(again).toEqual({ messageId, status: 'read', duplicate: true });
    expect(received(input.text)).toHaveLength(1);
  });

  it('a message cancelled while its account is disconnected never goes out; the next one does', async () => {
    await call('updateAccount', { accountId: ACCOUNT, desiredState: 'disconnected' });
    await h.waitForPhase(ACCOUNT, 'disconnected');
    const cancelled = await call<{ messageId: string }>('sendMessage', { accountId: ACCOUNT, to: ALICE, text: 'never sent' });
    expect(await call('cancelMessage', { messageId: cancelled.messageId })).toEqual({ messageId: cancelled.messageId, status: 'cancelled' });
    const later = await call<{ messageId: string }>('sendMessage', { accountId: ACCOUNT, to: ALICE, text: 'sent after reconnect' });

    await call('updateAccount', { accountId: ACCOUNT, desiredState: 'connected' });
    await waitStatus(later.messageId, 'read');
    expect(received('sent after reconnect')).toHaveLength(1);
    expect(received('never sent')).toHaveLength(0);
    expect(await doc(cancelled.messageId)).toMatchObject({ status: 'cancelled', attemptCount: 0, cancelledBy: operator.uid });
    expect(seen.get(cancelled.messageId)).toEqual(['queued', 'cancelled']);
  });
});
