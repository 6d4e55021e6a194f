/**
 * Issue 10, last item: nothing the rules allow can make the reconciler misbehave. An operator
 * client writes, through firestore.rules, every shared field case (contract/test/field-cases.ts)
 * and seeded random odd values into the client-writable fields of `accounts` and into new
 * `outbox` documents. Only writes the rules accept count as cases; refused ones are counted and
 * skipped. Throughout:
 *  - the healthy accounts (never written by the fuzzer) stay connected on the same connection,
 *    their status untouched, and keep sending;
 *  - an account whose fuzzed fields cannot affect the session (names, labels, phone, link method,
 *    QR requests while linked) stays connected on the same connection too;
 *  - every fuzzed account always has a valid status and ends in the state its document asks
 *    for; an InvalidSpec for a document the rules accepted is a finding (rules and schema
 *    disagree), reported with the write that caused it;
 *  - every accepted message reaches a final status with a documented error code; texts to
 *    simulated users arrive unchanged;
 *  - the process stays healthy: /healthz, /readyz, no failed reconcile pass, no unhandled error.
 * A control account written around the rules (Admin SDK) proves the InvalidSpec report works here.
 *
 * The seed is printed and named in every failure; WAFLEET_FUZZ_SEED=<seed> replays a run.
 */
import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { FieldValue, Timestamp as AdminTimestamp } from 'firebase-admin/firestore';
import { doc, serverTimestamp, setDoc, Timestamp as WebTimestamp, updateDoc, type Firestore as WebFirestore } from 'firebase/firestore';
import type { RulesTestEnvironment } from '@firebase/rules-unit-testing';
import type { Contact } from '@wafleet/wa-sim';
import { AccountDocSchema, AccountStatusDocSchema, formatZodError, OutboxDocSchema, PHASES } from '@wafleet/contract';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ACCOUNT_FIELD_CASES, casesOf, OUTBOX_FIELD_CASES } from '../../../contract/test/field-cases.ts';
import { waitFor } from '../helpers.ts';
import {
  desiredStateValue,
  displayNameValue,
  dottedLabel,
  FORBIDDEN_ACCOUNT_KEYS,
  fuzzSeed,
  labelsValue,
  largestAccountPatch,
  linkMethodValue,
  makeRng,
  operatorClient,
  ODD_TEXTS,
  OPERATOR_UID,
  phoneNumberValue,
  recipientValue,
  requestStampValue,
  show,
  textValue,
  verdictOf,
  type FuzzNumbers,
  type Recipients,
  type WriteVerdict,
} from './client-fuzz-support.ts';
import { scanPublishedQr, startHarness, type Harness } from './harness.ts';

const SEED = fuzzSeed();
const rng = makeRng(SEED);
const SEED_NOTE = `fuzz seed ${SEED} (replay: WAFLEET_FUZZ_SEED=${SEED})`;
console.log(`client-fuzz: ${SEED_NOTE}`);

/** Never written by the fuzzer. */
const HEALTHY: Record<string, string> = { 'h-01': '15550011001', 'h-02': '15550011002' };
/** Linked; only fields that cannot touch a linked session are fuzzed. */
const COSMETIC = 'z-01';
/** Linked at first; every client-writable field fuzzed. */
const FULL_LINKED = 'z-02';
/** Never linked; every field fuzzed (z-04 starts disconnected). */
const UNLINKED = ['z-03', 'z-04'];
const FUZZED = [COSMETIC, FULL_LINKED, ...UNLINKED];
const LINKED_PHONES: Record<string, string> = { ...HEALTHY, [COSMETIC]: '15550011011', [FULL_LINKED]: '15550011012' };
/** Never linked, used by one scenario only. */
const SPARE = 'z-05';
/** Written around the rules (Admin SDK): must be reported, and must not disturb anyone. */
const CONTROL = 'c-bad';
const PAIRING_PHONE = '15550011090';
const ALICE = '15550011101';

const TIMESTAMP_FIELDS = new Set(['qrRequestedAt', 'relinkRequestedAt']);
const COSMETIC_FIELDS = ['displayName', 'labels', 'phoneNumber', 'linkMethod', 'desiredState', 'qrRequestedAt'] as const;
const FULL_FIELDS = ['displayName', 'desiredState', 'desiredState', 'phoneNumber', 'linkMethod', 'labels', 'qrRequestedAt', 'relinkRequestedAt'] as const;

const FINAL_OK = new Set(['sent', 'delivered', 'read']);
/** docs/data-model.md, outbox errors: the codes a `failed` message may carry. */
const FINAL_FAILURE_CODES = new Set(['RejectedByWhatsApp', 'RecipientNotOnWhatsApp', 'NotAuthorized', 'AccountBanned', 'AccountDeleted', 'RetriesExhausted']);
const RETRYABLE_CODES = new Set(['AckTimeout', 'ConnectionLost', 'SendTimeout', 'SendError']);

let h: Harness;
let rec: Awaited<ReturnType<Harness['startReconciler']>>;
let rulesEnv: RulesTestEnvironment;
let client: WebFirestore;
let alice: Contact;
let numbers: FuzzNumbers;
let recipients: Recipients;
/** Recipient as written → the simulated user whose phone shows the text. */
const userOfRecipient = new Map<string, string>();

interface AccountWrite {
  n: number;
  account: string;
  label: string;
  patch: string;
  verdict: WriteVerdict;
  updateTime?: AdminTimestamp;
}
interface OutboxWrite {
  n: number;
  id: string;
  accountId: unknown;
  to: unknown;
  text: unknown;
  label: string;
  verdict: WriteVerdict;
}
const accountWrites: AccountWrite[] = [];
const outboxWrites: OutboxWrite[] = [];
/** Rules accepted, contract refused: the findings this test exists for. */
const findings: string[] = [];
const unhandled: string[] = [];
const statusLog: Array<{ id: string; data: Record<string, unknown>; at: number }> = [];
let stopStatusLog: (() => void) | null = null;

interface Baseline {
  deviceJid: string;
  logins: number;
  closes: number;
  conflicts: number;
  since: number;
  lastConnectedAt: number;
  epoch: number;
}
const baseline = new Map<string, Baseline>();

const onUnhandled = (err: unknown) => unhandled.push(String((err as Error)?.stack ?? err));

function stamp(t: unknown): AdminTimestamp | null {
  return t instanceof AdminTimestamp ? t : null;
}
function notBefore(a: AdminTimestamp | null, b: AdminTimestamp): boolean {
  return a !== null && (a.seconds > b.seconds || (a.seconds === b.seconds && a.nanoseconds >= b.nanoseconds));
}

async function deviceBaseline(id: string): Promise<Baseline> {
  const number = LINKED_PHONES[id]!;
  const deviceJid = h.sim.phone(number).linkedDevices()[0]!.deviceJid;
  const stats = h.sim.stats(deviceJid);
  const s = (await h.status(id))!;
  return {
    deviceJid,
    logins: stats.logins,
    closes: stats.closes,
    conflicts: stats.conflicts,
    since: (s.since as AdminTimestamp).toMillis(),
    lastConnectedAt: (s.lastConnectedAt as AdminTimestamp).toMillis(),
    epoch: (s.owner as { epoch: number }).epoch,
  };
}

/** The connection a linked account had at the baseline is the one it has now, and it is connected. */
async function expectSameConnection(id: string, when: string): Promise<void> {
  const b = baseline.get(id)!;
  const stats = h.sim.stats(b.deviceJid);
  const s = (await h.status(id))!;
  const now = { phase: s.phase, logins: stats.logins, closes: stats.closes, conflicts: stats.conflicts, open: stats.openConnections, lastConnectedAt: (s.lastConnectedAt as AdminTimestamp).toMillis(), since: (s.since as AdminTimestamp).toMillis(), epoch: (s.owner as { epoch: number }).epoch };
  expect(now, `${id} ${when}: same connection, still connected; ${SEED_NOTE}`).toEqual({
    phase: 'connected', logins: b.logins, closes: b.closes, conflicts: b.conflicts, open: 1, lastConnectedAt: b.lastConnectedAt, since: b.since, epoch: b.epoch,
  });
}

async function expectProcessHealthy(when: string): Promise<void> {
  const health = await fetch(`http://127.0.0.1:${rec.httpPort}/healthz`);
  expect(health.status, `/healthz ${when}; ${SEED_NOTE}`).toBe(200);
  const ready = await fetch(`http://127.0.0.1:${rec.httpPort}/readyz`);
  expect(`${ready.status} ${await ready.text()}`.trim(), `/readyz ${when}; ${SEED_NOTE}`).toMatch(/^200 /);
  const metrics = await (await fetch(`http://127.0.0.1:${rec.httpPort}/metrics`)).text();
  const failedPasses = metrics.match(/^wafleet_workqueue_passes_total\{queue="accounts",outcome="error"\} (\d+)$/m)?.[1] ?? '0';
  expect(Number(failedPasses), `reconcile passes that threw, ${when}; ${SEED_NOTE}`).toBe(0);
  expect(unhandled, `unhandled errors ${when}; ${SEED_NOTE}`).toEqual([]);
}

// ------------------------------------------------------------------ writing as the operator

let writeCount = 0;

/** One update of an account through the rules; an accepted one is read back and parsed with the contract. */
async function writeAccount(account: string, patch: Record<string, unknown>, label: string): Promise<AccountWrite> {
  const w: AccountWrite = { n: ++writeCount, account, label, patch: show(patch, 400), verdict: 'refusedByRules' };
  w.verdict = await verdictOf(updateDoc(doc(client, 'accounts', account), { ...patch, updatedAt: serverTimestamp(), updatedBy: OPERATOR_UID }));
  accountWrites.push(w);
  if (w.verdict === 'accepted') {
    const snap = await h.db.doc(`accounts/${account}`).get();
    w.updateTime = snap.updateTime!;
    const parsed = AccountDocSchema.safeParse(snap.data());
    if (!parsed.success) findings.push(`accounts/${account} write #${w.n} (${label}) ${w.patch} was accepted by the rules but the contract refuses the document: ${formatZodError(parsed.error)}`);
  }
  return w;
}

let messageCount = 0;

async function writeMessage(data: Record<string, unknown>, label: string, id = `fz-${SEED.toString(36)}-${++messageCount}`): Promise<OutboxWrite> {
  const w: OutboxWrite = { n: messageCount, id, accountId: data.accountId, to: data.to, text: data.text, label, verdict: 'refusedByRules' };
  w.verdict = await verdictOf(setDoc(doc(client, 'outbox', id), data));
  outboxWrites.push(w);
  if (w.verdict === 'accepted') {
    const parsed = OutboxDocSchema.safeParse((await h.db.doc(`outbox/${id}`).get()).data());
    if (!parsed.success) findings.push(`outbox/${id} (${label}; to ${show(data.to)}, text ${show(data.text)}) was accepted by the rules but the contract refuses it: ${formatZodError(parsed.error)}`);
  }
  return w;
}

/** What sendMessage would queue (minus the idempotency key), with the given fields. */
function message(fields: Record<string, unknown>): Record<string, unknown> {
  return { accountId: 'h-01', to: `+${ALICE}`, text: 'fuzz', createdAt: serverTimestamp(), createdBy: OPERATOR_UID, status: 'queued', ...fields };
}

const canaries: string[] = [];
const pairingOutcomes: string[] = [];

/** A plain message from every healthy account: they keep sending. */
async function queueCanaries(when: string): Promise<string[]> {
  const ids: string[] = [];
  for (const id of Object.keys(HEALTHY)) {
    const w = await writeMessage(message({ accountId: id, text: `canary ${when} from ${id} ${randomUUID()}` }), `canary ${when}`);
    expect(w.verdict, `canary from ${id} ${when}; ${SEED_NOTE}`).toBe('accepted');
    ids.push(w.id);
  }
  canaries.push(...ids);
  return ids;
}

async function waitSent(ids: string[], when: string, timeoutMs = 30_000): Promise<void> {
  await waitFor(
    async () => {
      const docs = await Promise.all(ids.map((id) => h.db.doc(`outbox/${id}`).get()));
      return docs.every((d) => FINAL_OK.has(d.get('status') as string));
    },
    { timeoutMs, intervalMs: 200, label: `healthy accounts' messages sent ${when}; ${SEED_NOTE}` },
  );
}

// ------------------------------------------------------------------ random writes

function randomAccountPatch(account: string): { patch: Record<string, unknown>; label: string } {
  const cosmetic = account === COSMETIC;
  const fields = cosmetic ? COSMETIC_FIELDS : FULL_FIELDS;
  const patch: Record<string, unknown> = {};
  for (let i = rng.int(1, 3); i > 0; i--) {
    const field = rng.pick(fields);
    if (field === 'labels' && rng.chance(0.15)) {
      const [k, v] = dottedLabel(rng);
      patch[k] = v;
      continue;
    }
    patch[field] =
      field === 'displayName' ? displayNameValue(rng)
      : field === 'desiredState' ? desiredStateValue(rng, cosmetic)
      : field === 'phoneNumber' ? phoneNumberValue(rng, numbers)
      : field === 'linkMethod' ? linkMethodValue(rng)
      : field === 'labels' ? labelsValue(rng)
      : requestStampValue(rng);
  }
  let label = `random ${Object.keys(patch).join('+')}`;
  if (rng.chance(0.06)) {
    const key = rng.pick(Object.keys(FORBIDDEN_ACCOUNT_KEYS));
    patch[key] = FORBIDDEN_ACCOUNT_KEYS[key]!();
    label += ` with the server-only key ${key}`;
  }
  return { patch, label };
}

const MESSAGE_TARGETS = ['h-01', 'h-02', COSMETIC, FULL_LINKED, ...UNLINKED, CONTROL];

function randomMessage(): { data: Record<string, unknown>; label: string; id?: string } {
  const data = message({
    accountId: rng.chance(0.05) ? rng.pick(['nope-404', 'Bad Id', '', 'h-01/x']) : rng.pick(MESSAGE_TARGETS),
    to: recipientValue(rng, recipients, numbers),
    text: textValue(rng),
  });
  if (rng.chance(0.3)) data.attemptCount = 0;
  const roll = rng.next();
  if (roll < 0.03) return { data, label: 'random, under a k- id', id: `k-${SEED.toString(36)}-${++messageCount}` };
  if (roll < 0.06) return { data: { ...data, status: rng.pick(['sent', 'sending', 'failed', 'cancelled']) }, label: 'random, not queued' };
  if (roll < 0.08) return { data: { ...data, idempotencyKey: 'abc' }, label: 'random, with an idempotency key' };
  if (roll < 0.1) return { data: { ...data, createdBy: 'someone-else' }, label: 'random, for another uid' };
  if (roll < 0.12) return { data: { ...data, attemptCount: rng.pick([1, -1, '0', null]) }, label: 'random, with an attempt count' };
  if (roll < 0.14) return { data: { ...data, nextAttemptAt: serverTimestamp() }, label: 'random, with a server field' };
  return { data, label: 'random' };
}

// ------------------------------------------------------------------ set-up

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled);
  process.on('uncaughtException', onUnhandled);
  h = await startHarness('cfuzz');
  ({ env: rulesEnv, db: client } = await operatorClient(h.projectId));
  alice = h.sim.createContact({ number: ALICE, name: 'Alice', receiptDelays: { deliveredMs: 50, readMs: 100 } });
  h.sim.createPhone({ number: PAIRING_PHONE, name: 'Pairing phone' });
  numbers = { simNumbers: [`+${ALICE}`, `+${PAIRING_PHONE}`, ...Object.values(LINKED_PHONES).map((n) => `+${n}`)] };
  const reachable = [`+${ALICE}`, `${ALICE}@s.whatsapp.net`, alice.lid, `+${PAIRING_PHONE}`, `+${HEALTHY['h-02']}`];
  for (const r of reachable.slice(0, 3)) userOfRecipient.set(r, ALICE);
  userOfRecipient.set(`+${PAIRING_PHONE}`, PAIRING_PHONE);
  userOfRecipient.set(`+${HEALTHY['h-02']}`, HEALTHY['h-02']!);
  recipients = {
    reachable,
    other: [`${ALICE}:0@s.whatsapp.net`, `${ALICE}:7@s.whatsapp.net`, `${PAIRING_PHONE}@lid`, `+${HEALTHY['h-01']}`, `${HEALTHY['h-01']}@s.whatsapp.net`, '120363041234567890@g.us', '+15550019999'],
  };

  rec = await h.startReconciler({
    env: { OUTBOX_RATE_PER_MINUTE: '0', OUTBOX_FLEET_RATE_PER_SECOND: '0', OUTBOX_ACK_TIMEOUT_MS: '4000', OUTBOX_MAX_ATTEMPTS: '2' },
  });
  const linked = Object.keys(LINKED_PHONES);
  await Promise.all(linked.map((id) => h.createAccount(id, { phoneNumber: `+${LINKED_PHONES[id]}`, createdAt: AdminTimestamp.now() })));
  await h.createAccount('z-03');
  await h.createAccount('z-04', { desiredState: 'disconnected', linkMethod: 'pairingCode', phoneNumber: `+${PAIRING_PHONE}` });
  await h.createAccount(SPARE, { desiredState: 'disconnected' });
  await Promise.all(linked.map((id) => scanPublishedQr(h, id, LINKED_PHONES[id]!, 90_000)));
  await Promise.all(linked.map((id) => h.waitForPhase(id, 'connected', 90_000)));
  await h.waitForPhase('z-03', 'awaitingScan');
  await h.waitForPhase('z-04', 'disconnected');
  const unsubscribe = h.db.collection('accountStatus').onSnapshot((snap) => {
    for (const c of snap.docChanges()) if (c.type !== 'removed') statusLog.push({ id: c.doc.id, data: c.doc.data(), at: Date.now() });
  });
  stopStatusLog = unsubscribe;
  for (const id of [...Object.keys(HEALTHY), COSMETIC]) baseline.set(id, await deviceBaseline(id));
}, 150_000);

// Every failure names the seed, also those thrown from deep inside a helper.
beforeEach(({ onTestFailed }) => {
  onTestFailed(({ task }) => {
    for (const e of task.result?.errors ?? []) if (!e.message?.includes(SEED_NOTE)) e.message = `${e.message ?? ''} [${SEED_NOTE}]`;
  });
});

afterAll(async () => {
  stopStatusLog?.();
  await rulesEnv?.cleanup();
  await h?.close();
  process.off('unhandledRejection', onUnhandled);
  process.off('uncaughtException', onUnhandled);
  // After close(): the harness routes console output to its (silent) logger while it runs.
  console.log(summary || `client-fuzz: ${SEED_NOTE}; did not finish`);
});

// ------------------------------------------------------------------ the fuzzing

describe('client writes the rules accept', () => {
  it('control: a document written around the rules is reported, alone', async () => {
    const now = AdminTimestamp.now();
    await h.db.doc(`accounts/${CONTROL}`).set({ displayName: 42, desiredState: 'connected', createdAt: now, updatedAt: now, updatedBy: 'console' });
    const s = await h.waitForPhase(CONTROL, 'error', 20_000);
    expect(s.reason).toBe('InvalidSpec');
    expect(s.message).toMatch(/displayName: /);
    for (const id of Object.keys(HEALTHY)) await expectSameConnection(id, 'after the control');
  });

  it('sweeps every shared field case through the rules; healthy and linked accounts are not disturbed', async () => {
    await waitSent(await queueCanaries('before'), 'before fuzzing');
    // Fields that cannot touch a linked session go to the linked cosmetic account; desiredState
    // to the unlinked ones.
    let previous = '';
    for (const [i, { field, c }] of casesOf(ACCOUNT_FIELD_CASES).entries()) {
      const account = field === 'desiredState' ? UNLINKED[i % 2]! : COSMETIC;
      // Each field's cases on their own: no linkMethod "pairingCode" left over that refuses a
      // phone number's removal, and a phone number for the "pairingCode" case.
      if (field !== previous && field === 'phoneNumber') await writeAccount(account, { linkMethod: 'qr' }, 'set-up: QR linking');
      if (field !== previous && field === 'linkMethod') await writeAccount(account, { phoneNumber: `+${LINKED_PHONES[account]}` }, 'set-up: a phone number');
      previous = field;
      await writeAccount(account, { [field]: c.value }, `case ${field}: ${c.label} (${c.verdict})`);
    }
    await writeAccount(COSMETIC, largestAccountPatch(), 'the largest document (as JSON) the rules accept, on a linked account');
    for (const ts of [serverTimestamp(), WebTimestamp.now()]) {
      // The server-only deleteRequestedAt: refused, whatever the stamp.
      await writeAccount(FULL_LINKED, { deleteRequestedAt: ts }, 'deleteRequestedAt from a client');
    }
    for (const { field, c } of casesOf(OUTBOX_FIELD_CASES)) {
      const sender = field === 'text' ? 'h-02' : 'h-01';
      await writeMessage(message({ accountId: sender, [field]: c.value }), `case ${field}: ${c.label} (${c.verdict})`);
    }
    // Every odd recipient from a healthy account (its own number among them), every odd text to a person.
    for (const to of [...recipients.reachable, ...recipients.other]) await writeMessage(message({ accountId: 'h-01', to, text: `to ${to}` }), `directed: to ${to}`);
    for (const text of ODD_TEXTS) await writeMessage(message({ accountId: 'h-02', text }), 'directed: an odd text');
    await waitObserved('the sweep', 30_000);
    await waitSent(await queueCanaries('after the sweep'), 'after the sweep');
    for (const id of [...Object.keys(HEALTHY), COSMETIC]) await expectSameConnection(id, 'after the field-case sweep');
    expect(findings, SEED_NOTE).toEqual([]);
  });

  it('a pairing code is requested for the number in the document, without disturbing that number’s other devices', async () => {
    // Starting from a disconnected account: no link attempt under way.
    await pairingScenario('z-04', `+${PAIRING_PHONE}`, { from: 'disconnected', expectCode: true });
    // The phone of a healthy account: it gets a code request; the healthy device is untouched.
    await pairingScenario('z-03', `+${HEALTHY['h-01']}`, { from: 'disconnected', expectCode: true });
    for (const id of Object.keys(HEALTHY)) await expectSameConnection(id, 'after the pairing codes');
  });

  // Found by this test: while a link attempt was under way, a change of the number (or of the
  // link method) was not acted on, even with a new qrRequestedAt, until that attempt expired.
  it('a new number during a pairing attempt gets a code for the new number', async () => {
    expect((await h.status('z-03'))?.reason, 'precondition: a pairing code on show').toBe('PairingCodeReady');
    await pairingScenario('z-03', `+${PAIRING_PHONE}`, { expectCode: true, codeWithinMs: 10_000 });
  });

  it('switching to QR linking during a pairing attempt shows a QR code', async () => {
    expect((await h.status('z-04'))?.reason, 'precondition: a pairing code on show').toBe('PairingCodeReady');
    const w = await writeAccount('z-04', { linkMethod: 'qr', qrRequestedAt: serverTimestamp() }, 'scenario: QR linking during a pairing attempt');
    expect(w.verdict).toBe('accepted');
    await waitObserved(w.label, 30_000);
    await waitFor(async () => (await h.db.doc('accountQr/z-04').get()).get('kind') === 'qr', { timeoutMs: 10_000, intervalMs: 100, label: `${w.label}: a QR code; ${SEED_NOTE}` });
  });

  // Found by this test: requestPairingCode() stores creds.me = {id: <number>} before the phone
  // has accepted anything. When that attempt ended unfinished (desiredState disconnected and
  // back, the code expiring, a restart), the next connection logged in as that never-linked
  // device, WhatsApp answered 401, and the account went to loggedOut with its credentials wiped.
  it('after an interrupted pairing attempt, asking again shows a new code', async () => {
    // z-03 shows a pairing code since the test above.
    expect((await h.status('z-03'))?.reason, 'precondition: a pairing attempt under way').toBe('PairingCodeReady');
    const w = await writeAccount('z-03', { desiredState: 'disconnected' }, 'scenario: interrupt the pairing attempt');
    await h.waitForPhase('z-03', (st) => st.phase === 'disconnected' && notBefore(stamp(st.observedSpecTime), w.updateTime!), 30_000);
    const again = await writeAccount('z-03', { desiredState: 'connected', linkMethod: 'qr', qrRequestedAt: serverTimestamp() }, 'scenario: ask again, by QR');
    expect(again.verdict).toBe('accepted');
    const s = await h.waitForPhase('z-03', (st) => notBefore(stamp(st.observedSpecTime), again.updateTime!) && ['awaitingScan', 'loggedOut', 'needsLink'].includes(st.phase as string), 30_000);
    const incident = (await h.db.doc('incidents/z-03__LoggedOut').get()).data();
    const loginFailures = h.sim.events({ type: 'login-failed' }).map((e) => `${e.deviceJid} ${e.code} ${e.detail}`);
    expect(s, `${again.label}: incident ${show(incident, 300)}; simulator login failures ${JSON.stringify(loginFailures)}; ${SEED_NOTE}`).toMatchObject({ phase: 'awaitingScan', reason: 'QrCodeReady' });
  });

  it('a pairing code for a number without WhatsApp ends in a documented state', async () => {
    const s = await pairingScenario(SPARE, '+14155550123', { from: 'disconnected', expectCode: false });
    expect(['needsLink', 'reconnecting', 'awaitingScan'], `${show(s, 400)}; ${SEED_NOTE}`).toContain(s.phase);
    for (const id of Object.keys(HEALTHY)) await expectSameConnection(id, 'after the pairing codes');
  });

  it('fuzzes accounts and outbox through the rules; healthy accounts stay connected and keep sending', async () => {
    for (const account of [FULL_LINKED, FULL_LINKED, 'z-03']) await writeAccount(account, { relinkRequestedAt: serverTimestamp() }, 'relink requests in a burst');
    await waitObserved('the relink burst', 30_000);

    // 3. Seeded random rounds: bursts (concurrent writes, no waiting) and settled rounds (wait
    //    until the reconciler has acted on every accepted write). A refused multi-field write is
    //    retried field by field, which names the field the rules refused and keeps the rest.
    const ROUNDS = 20;
    for (let round = 0; round < ROUNDS; round++) {
      const burst = round % 3 === 2;
      const writeOne = async (account: string) => {
        const { patch, label } = randomAccountPatch(account);
        const w = await writeAccount(account, patch, `round ${round}: ${label}`);
        const keys = Object.keys(patch);
        if (w.verdict !== 'accepted' && keys.length > 1) {
          for (const k of keys) await writeAccount(account, { [k]: patch[k] }, `round ${round}: ${k} of #${w.n} alone`);
        }
      };
      if (burst) await Promise.all([...FUZZED, ...FUZZED].map(writeOne));
      else for (const account of FUZZED) await writeOne(account);
      const messages = Array.from({ length: 6 }, () => randomMessage());
      if (burst) await Promise.all(messages.map((m) => writeMessage(m.data, `round ${round}: ${m.label}`, m.id)));
      else for (const m of messages) await writeMessage(m.data, `round ${round}: ${m.label}`, m.id);
      if (round === Math.floor(ROUNDS / 2)) await waitSent(await queueCanaries('while fuzzing'), 'while fuzzing');
      if (burst) continue;
      await waitObserved(`round ${round}`, 30_000);
      await expectProcessHealthy(`after round ${round}`);
    }
    await waitObserved('the last round', 30_000);
    for (const id of [...Object.keys(HEALTHY), COSMETIC]) await expectSameConnection(id, 'after the random rounds');
    expect(findings, SEED_NOTE).toEqual([]);
  }, 150_000);

  it('every fuzzed account settles in the state its document asks for, with valid statuses throughout', async () => {
    for (const id of FUZZED) {
      const d = (await h.db.doc(`accounts/${id}`).get()).data()!;
      const desired = d.desiredState as string;
      const want = (st: Record<string, unknown>) => {
        const p = st.phase as string;
        if (desired !== 'connected') return p === desired;
        return !['error', 'pending', 'disconnected', 'loggedOut', 'banned'].includes(p);
      };
      await h.waitForPhase(id, want, 30_000).catch((err: Error) => {
        throw new Error(`${id} (desiredState ${desired}) did not settle: ${err.message}; last writes: ${lastWrites(id)}; ${SEED_NOTE}`);
      });
    }
    const bad: string[] = [];
    for (const { id, data } of statusLog) {
      const parsed = AccountStatusDocSchema.safeParse(data);
      if (!parsed.success) bad.push(`accountStatus/${id} does not validate: ${formatZodError(parsed.error)} (${show(data, 300)})`);
      if (!(PHASES as readonly string[]).includes(data.phase as string)) bad.push(`accountStatus/${id} has phase ${String(data.phase)}`);
      if (FUZZED.includes(id) && data.reason === 'InvalidSpec') {
        const at = stamp(data.observedSpecTime);
        const cause = accountWrites.find((w) => w.account === id && w.updateTime && at && w.updateTime.isEqual(at));
        bad.push(`FINDING: ${id} reported InvalidSpec for a document the rules accepted: "${String(data.message)}"; caused by write #${cause?.n ?? '?'} ${cause ? `(${cause.label}) ${cause.patch}` : `(observed spec ${at?.toDate().toISOString()})`}`);
      }
      if (FUZZED.includes(id) && data.reason === 'LoggedOut') bad.push(`${id} was logged out although no phone removed it: ${show(data, 400)}`);
      if ((id in HEALTHY || id === COSMETIC) && data.phase !== 'connected') bad.push(`${id} left connected: ${show(data, 300)}`);
      if (id in HEALTHY) {
        // Untouched: every write of its status (if any) says exactly what the first one said.
        const { updatedAt: _u, ...now } = data;
        const { updatedAt: _f, ...first } = statusLog.find((e) => e.id === id)!.data;
        if (show(now, 2000) !== show(first, 2000)) bad.push(`${id}'s status changed: ${show(data, 400)}`);
      }
    }
    expect([...new Set(bad)], SEED_NOTE).toEqual([]);
    for (const id of [...Object.keys(HEALTHY), COSMETIC]) await expectSameConnection(id, 'after settling');
  }, 150_000);

  it('deleting the fuzzed accounts still works; every accepted message ends final with a documented code', async () => {
    // As deleteAccount would (admin only): the fuzzed documents must not block a delete.
    for (const id of [...FUZZED, SPARE, CONTROL]) await h.db.doc(`accounts/${id}`).update({ deleteRequestedAt: FieldValue.serverTimestamp(), updatedAt: FieldValue.serverTimestamp() });
    await waitFor(async () => (await Promise.all([...FUZZED, SPARE, CONTROL].map((id) => h.db.doc(`accounts/${id}`).get()))).every((s) => !s.exists), {
      timeoutMs: 45_000, intervalMs: 250, label: `fuzzed accounts deleted; ${SEED_NOTE}`,
    });

    const accepted = outboxWrites.filter((w) => w.verdict === 'accepted');
    const snapshotAll = async () => new Map((await Promise.all(accepted.map((w) => h.db.doc(`outbox/${w.id}`).get()))).map((s) => [s.id, s.data() ?? {}]));
    let docs = await snapshotAll();
    try {
      await waitFor(async () => {
        docs = await snapshotAll();
        return [...docs.values()].every((d) => FINAL_OK.has(d.status as string) || d.status === 'failed');
      }, { timeoutMs: 45_000, intervalMs: 300, label: 'every accepted message final' });
    } catch {
      const open = accepted.filter((w) => !FINAL_OK.has(docs.get(w.id)?.status as string) && docs.get(w.id)?.status !== 'failed');
      throw new Error(`FINDING: ${open.length} accepted message(s) never reached a final status: ${open.slice(0, 8).map((w) => `${w.id} (${w.label}) from ${show(w.accountId)} to ${show(w.to)}: ${show(docs.get(w.id), 300)}`).join(' | ')}; ${SEED_NOTE}`);
    }

    const bad: string[] = [];
    for (const w of accepted) {
      const d = docs.get(w.id)!;
      const where = `outbox/${w.id} (${w.label}) from ${String(w.accountId)} to ${show(w.to)}, text ${show(w.text)}`;
      const error = d.error as { code?: string; message?: string } | null | undefined;
      if (d.status === 'failed') {
        if (!error?.code || !FINAL_FAILURE_CODES.has(error.code)) bad.push(`${where}: failed with an undocumented code ${show(error)}`);
        else if (error.code === 'RetriesExhausted' && ![...RETRYABLE_CODES].some((c) => error.message?.includes(c))) bad.push(`${where}: RetriesExhausted without a retryable cause: ${show(error)}`);
      }
      const senderStayedUp = typeof w.accountId === 'string' && (w.accountId in HEALTHY || w.accountId === COSMETIC);
      const user = typeof w.to === 'string' ? userOfRecipient.get(w.to) : undefined;
      if (senderStayedUp && user) {
        if (!FINAL_OK.has(d.status as string)) bad.push(`${where}: to a simulated user from a connected account, but ${show(d.status)} ${show(error)}`);
        else {
          const shown = h.sim.user(user).received().filter((m) => m.id === d.providerMessageId);
          if (shown.length === 0 || shown.some((m) => m.text !== w.text)) bad.push(`${where}: the phone of ${user} shows ${show(shown.map((m) => m.text))}`);
        }
      }
    }
    for (const id of canaries) expect(FINAL_OK.has(docs.get(id)?.status as string), `canary ${id}; ${SEED_NOTE}`).toBe(true);
    expect(bad, SEED_NOTE).toEqual([]);

    await waitSent(await queueCanaries('after the deletes'), 'after the deletes');
    for (const id of Object.keys(HEALTHY)) await expectSameConnection(id, 'at the end');
    await expectProcessHealthy('at the end');
    expect(findings, SEED_NOTE).toEqual([]);
    await report(docs);
  }, 150_000);
});

// ------------------------------------------------------------------ scenarios

/**
 * Asks for a pairing code for `phoneNumber` (from a disconnected account when `from` says so)
 * and waits until the reconciler has acted on it; with `expectCode`, until the simulator got a
 * code request for that number and the code is published.
 */
async function pairingScenario(account: string, phoneNumber: string, opts: { from?: 'disconnected'; expectCode: boolean; codeWithinMs?: number }): Promise<Record<string, unknown>> {
  if (opts.from === 'disconnected') {
    const w = await writeAccount(account, { desiredState: 'disconnected' }, 'scenario: disconnect first');
    expect(w.verdict, `${w.label}; ${SEED_NOTE}`).toBe('accepted');
    await h.waitForPhase(account, (st) => st.phase === 'disconnected' && notBefore(stamp(st.observedSpecTime), w.updateTime!), 30_000);
  }
  const before = Date.now();
  const w = await writeAccount(account, { desiredState: 'connected', linkMethod: 'pairingCode', phoneNumber, qrRequestedAt: serverTimestamp() }, `scenario: a pairing code for ${phoneNumber}`);
  expect(w.verdict, `${w.label}; ${SEED_NOTE}`).toBe('accepted');
  let s = await h.waitForPhase(account, (st) => notBefore(stamp(st.observedSpecTime), w.updateTime!) && ['awaitingScan', 'needsLink', 'reconnecting'].includes(st.phase as string), 30_000);
  if (opts.expectCode) {
    const requested = () => h.sim.pairingCodeRequests(phoneNumber.slice(1)).some((q) => q.at >= before);
    await waitFor(requested, {
      timeoutMs: opts.codeWithinMs ?? 20_000,
      intervalMs: 100,
      label: `${w.label} on ${account}: a code request for that number (status ${show(s, 300)}; code requests pending: ${show(h.sim.pairingCodeRequests())}); ${SEED_NOTE}`,
    });
    s = await h.waitForPhase(account, (st) => st.reason === 'PairingCodeReady', 20_000);
    expect(s.phase, `${w.label}; ${SEED_NOTE}`).toBe('awaitingScan');
    expect((await h.db.doc(`accountQr/${account}`).get()).data(), `${w.label}: the code is published; ${SEED_NOTE}`).toMatchObject({ kind: 'pairingCode' });
  }
  pairingOutcomes.push(`${phoneNumber} on ${account}: ${String(s.phase)}/${String(s.reason)} "${String(s.message)}"`);
  return s;
}

// ------------------------------------------------------------------ helpers that read the logs

/** Waits until the reconciler has acted on every fuzzed account's newest accepted write. */
async function waitObserved(when: string, timeoutMs: number): Promise<void> {
  const latest = new Map<string, AdminTimestamp>();
  for (const w of accountWrites) {
    const seen = latest.get(w.account);
    if (w.updateTime && (!seen || notBefore(w.updateTime, seen))) latest.set(w.account, w.updateTime);
  }
  const lag = new Map<string, unknown>();
  await waitFor(
    async () => {
      const statuses = await Promise.all([...latest.keys()].map(async (id) => [id, await h.status(id)] as const));
      lag.clear();
      for (const [id, s] of statuses) if (!notBefore(stamp(s?.observedSpecTime), latest.get(id)!)) lag.set(id, s);
      return lag.size === 0;
    },
    { timeoutMs, intervalMs: 150, label: `reconciler acted on the writes (${when})` },
  ).catch((err: Error) => {
    throw new Error(`${err.message}: behind: ${[...lag].map(([id, s]) => `${id} ${show(s, 300)} after ${lastWrites(id)}`).join(' | ')}; ${SEED_NOTE}`);
  });
}

function lastWrites(id: string, n = 3): string {
  return accountWrites.filter((w) => w.account === id && w.verdict === 'accepted').slice(-n).map((w) => `#${w.n} (${w.label}) ${w.patch}`).join(', ');
}

let summary = '';

/** Counts for the log (and, with WAFLEET_FUZZ_DUMP=<file>, every write and outcome as JSON). */
async function report(docs: Map<string, Record<string, unknown>>): Promise<void> {
  const count = <T extends { verdict: WriteVerdict }>(ws: T[]) => ({
    accepted: ws.filter((w) => w.verdict === 'accepted').length,
    refusedByRules: ws.filter((w) => w.verdict === 'refusedByRules').length,
    refusedByFirestore: ws.filter((w) => w.verdict === 'refusedByFirestore').length,
  });
  const fields = new Map<string, number>();
  for (const w of accountWrites) {
    if (w.verdict !== 'accepted') continue;
    for (const f of [...TIMESTAMP_FIELDS, 'displayName', 'desiredState', 'phoneNumber', 'linkMethod', 'labels']) if (w.patch.includes(`"${f}`)) fields.set(f, (fields.get(f) ?? 0) + 1);
  }
  const outcomes = new Map<string, number>();
  for (const d of docs.values()) {
    const key = d.status === 'failed' ? `failed:${(d.error as { code?: string } | undefined)?.code}` : String(d.status);
    outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
  }
  summary =
    `client-fuzz: ${SEED_NOTE}; accounts ${JSON.stringify(count(accountWrites))} (accepted writes per field ${JSON.stringify(Object.fromEntries(fields))}); ` +
    `outbox ${JSON.stringify(count(outboxWrites))}, outcomes ${JSON.stringify(Object.fromEntries(outcomes))}; pairing codes: ${pairingOutcomes.join(' | ')}`;
  const dump = process.env.WAFLEET_FUZZ_DUMP;
  if (dump) {
    const messages = outboxWrites.map((w) => ({ ...w, to: show(w.to), text: show(w.text), accountId: show(w.accountId), outcome: { status: docs.get(w.id)?.status, error: docs.get(w.id)?.error, attemptCount: docs.get(w.id)?.attemptCount } }));
    await writeFile(dump, JSON.stringify({ seed: SEED, accounts: accountWrites.map((w) => ({ ...w, updateTime: w.updateTime?.toDate().toISOString() })), messages, statuses: statusLog.map((s) => ({ id: s.id, at: s.at, status: show(s.data, 400) })) }, null, 1));
  }
}
