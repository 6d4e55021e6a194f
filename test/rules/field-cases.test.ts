/**
 * The rules side of the shared field cases (contract/test/field-cases.ts): every value is
 * written through firestore.rules as an operator, and
 *  - the rules' verdict is the one the case names;
 *  - whatever the rules accept, the field's zod schema accepts (asked here, not taken from the
 *    case), and the stored document parses with AccountDocSchema / OutboxDocSchema: what the
 *    reconciler reads never surprises it.
 * Accounts are written as updates (clients cannot create them); messages as creates.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RulesTestEnvironment } from '@firebase/rules-unit-testing';
import { doc, getDoc, serverTimestamp, setDoc, Timestamp, updateDoc, type DocumentData, type Firestore } from 'firebase/firestore';
import { AccountDocSchema, formatZodError, OutboxDocSchema } from '@wafleet/contract';
import {
  ACCOUNT_FIELD_CASES,
  accountFieldSchema,
  casesOf,
  OUTBOX_FIELD_CASES,
  outboxFieldSchema,
  schemaAccepts,
  type FieldCase,
} from '../../contract/test/field-cases.ts';
import { clientsFor, openSeeder, principal, runPrefix, startRulesEnv } from './support.ts';

const RUN = runPrefix('f');
const ACCOUNT = `${RUN}-acct`;
const UID = principal('operator').uid;

let env: RulesTestEnvironment;
let db: Firestore;
let seeder: Awaited<ReturnType<typeof openSeeder>>;
let n = 0;

const newId = () => `${RUN}-${(n += 1)}`;

/** Whether the write went through; a denial is the only failure expected. */
async function accepted(write: Promise<unknown>): Promise<boolean> {
  try {
    await write;
    return true;
  } catch (err) {
    if ((err as { code?: string }).code === 'permission-denied') return false;
    throw err;
  }
}

async function stored(path: string): Promise<DocumentData> {
  const snap = await getDoc(doc(seeder.db, path));
  expect(snap.exists()).toBe(true);
  return snap.data() as DocumentData;
}

function expectParses(schema: typeof AccountDocSchema | typeof OutboxDocSchema, data: DocumentData): void {
  const r = schema.safeParse(data);
  expect(r.success, r.success ? '' : formatZodError(r.error)).toBe(true);
}

beforeAll(async () => {
  env = await startRulesEnv();
  db = clientsFor(env)('operator');
  seeder = await openSeeder(env);
  const now = Timestamp.now();
  await setDoc(doc(seeder.db, 'accounts', ACCOUNT), {
    displayName: 'Field cases', desiredState: 'connected', createdAt: now, updatedAt: now, updatedBy: UID,
  });
});

afterAll(async () => {
  await seeder?.close();
  await env?.cleanup();
});

const title = <F extends string>(collection: string, field: F, c: FieldCase) =>
  [`${collection}.${field}: ${c.label} is ${c.verdict}`, field, c] as const;

describe.concurrent('accounts: every client-writable field, as an update', () => {
  it.each(casesOf(ACCOUNT_FIELD_CASES).map(({ field, c }) => title('accounts', field, c)))('%s', async (_, field, c) => {
    const id = newId();
    const past = Timestamp.fromMillis(Date.now() - 3_600_000);
    // With a phone number, so linkMethod "pairingCode" is about the method alone.
    await setDoc(doc(seeder.db, 'accounts', id), {
      displayName: 'Existing', desiredState: 'connected', phoneNumber: '+14155550123',
      createdAt: past, updatedAt: past, updatedBy: 'uid-someone-else',
    });
    const ok = await accepted(
      updateDoc(doc(db, 'accounts', id), { [field]: c.value, updatedAt: serverTimestamp(), updatedBy: UID }),
    );
    expect(ok, 'the rules verdict').toBe(c.verdict === 'valid');
    if (ok) {
      expect(schemaAccepts(accountFieldSchema(field), c.value), 'rules accept ⇒ schema accepts').toBe(true);
      expectParses(AccountDocSchema, await stored(`accounts/${id}`));
    }
  });
});

describe.concurrent('outbox: every client-writable field, as a create', () => {
  it.each(casesOf(OUTBOX_FIELD_CASES).map(({ field, c }) => title('outbox', field, c)))('%s', async (_, field, c) => {
    const id = newId();
    const ok = await accepted(
      setDoc(doc(db, 'outbox', id), {
        accountId: ACCOUNT, to: '+14155550123', text: 'Your order has shipped.',
        createdAt: serverTimestamp(), createdBy: UID, status: 'queued',
        [field]: c.value,
      }),
    );
    expect(ok, 'the rules verdict').toBe(c.verdict === 'valid');
    if (ok) {
      expect(schemaAccepts(outboxFieldSchema(field), c.value), 'rules accept ⇒ schema accepts').toBe(true);
      expectParses(OutboxDocSchema, await stored(`outbox/${id}`));
    }
  });
});
