/**
 * The schema side of the shared field cases (field-cases.ts; test/rules/field-cases.test.ts is
 * the rules side), and the patterns firestore.rules copies from the contract, character for
 * character.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ACCOUNT_ID_RE, DOC_ID_RE, JID_RE, LABEL_KEY_RE } from '../src/index.ts';
import {
  ACCOUNT_FIELD_CASES,
  accountFieldSchema,
  casesOf,
  OUTBOX_FIELD_CASES,
  outboxFieldSchema,
  schemaAccepts,
} from './field-cases.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const rules = readFileSync(path.join(root, 'firestore.rules'), 'utf8');

/** A regex source as a rules string literal. */
const literal = (source: string) => `'${source.replaceAll('\\', '\\\\')}'`;

/** The string list a rules function returns or hasOnly() takes, e.g. accountClientKeys(). */
function rulesList(after: string): string[] {
  const start = rules.indexOf(after);
  expect(start, `"${after}" not found in firestore.rules`).toBeGreaterThan(-1);
  const open = rules.indexOf('[', start);
  const list = rules.slice(open + 1, rules.indexOf(']', open));
  return [...list.matchAll(/'([^']*)'/g)].map((m) => m[1] as string);
}

/** Keys the rules pin to request.time or the caller, so no client picks their values. */
const STAMPS = ['qrRequestedAt', 'relinkRequestedAt', 'createdAt', 'updatedAt', 'updatedBy', 'createdBy', 'status'];

describe('shared field cases: the schema side', () => {
  it.each(casesOf(ACCOUNT_FIELD_CASES).map(({ field, c }) => [`accounts.${field}: ${c.label} is ${c.verdict}`, field, c] as const))(
    '%s',
    (_, field, c) => {
      expect(schemaAccepts(accountFieldSchema(field), c.value)).toBe(c.verdict !== 'invalid');
    },
  );

  it.each(casesOf(OUTBOX_FIELD_CASES).map(({ field, c }) => [`outbox.${field}: ${c.label} is ${c.verdict}`, field, c] as const))(
    '%s',
    (_, field, c) => {
      expect(schemaAccepts(outboxFieldSchema(field), c.value)).toBe(c.verdict !== 'invalid');
    },
  );

  it('has valid and invalid cases for every key a client may write to an account', () => {
    const writable = rulesList('function accountClientKeys()').filter((k) => !STAMPS.includes(k));
    expect(Object.keys(ACCOUNT_FIELD_CASES).sort()).toEqual(writable.sort());
    for (const cases of Object.values(ACCOUNT_FIELD_CASES)) {
      expect(cases.some((c) => c.verdict === 'valid')).toBe(true);
      expect(cases.some((c) => c.verdict === 'invalid')).toBe(true);
    }
  });

  it('has valid and invalid cases for every key a client may write to a message (accountId: see below)', () => {
    const writable = rulesList('function outboxClientKeys()').filter((k) => !STAMPS.includes(k) && k !== 'accountId');
    expect(Object.keys(OUTBOX_FIELD_CASES).sort()).toEqual(writable.sort());
  });
});

describe('patterns firestore.rules copies from the contract', () => {
  it.each([
    ['ACCOUNT_ID_RE (isAccountId)', ACCOUNT_ID_RE],
    ['DOC_ID_RE (isDocId)', DOC_ID_RE],
    ['JID_RE (isJid)', JID_RE],
  ])('%s is spelled the same', (_, re) => {
    expect(rules).toContain(literal(re.source));
  });

  it('the label key pattern (labelKeysOk) is LABEL_KEY_RE', () => {
    const key = LABEL_KEY_RE.source.replace(/^\^/, '').replace(/\$$/, '');
    expect(rules).toContain(literal(`^(${key},)*${key}$`));
  });
});
