/**
 * One list of values for every field a client may write directly (firestore.rules), run by both
 * sides: contract/test/field-cases.test.ts checks each verdict against the zod schema, and
 * test/rules/field-cases.test.ts writes each value through the rules emulator. Together they
 * prove that whatever the rules accept, the schema accepts too, so a document a client wrote
 * never makes the reconciler report InvalidSpec.
 *
 * A verdict is one of:
 *  - 'valid': schema and rules accept it;
 *  - 'invalid': both refuse it;
 *  - 'rulesStricter': the schema accepts it but the rules refuse it (the rules check the stored
 *    form only, or cannot express the schema's rule); such a value goes through the callables.
 * There is deliberately no verdict for "the rules accept what the schema refuses".
 *
 * Timestamps (createdAt, updatedAt, qrRequestedAt, relinkRequestedAt) and the caller stamps
 * (updatedBy, createdBy) are not values a client chooses: the rules pin them to request.time and
 * request.auth.uid, which test/rules/accounts.test.ts and outbox.test.ts cover.
 */
import type { z } from 'zod';
import { AccountDocSchema, OutboxDocSchema } from '../src/index.ts';

export type Verdict = 'valid' | 'invalid' | 'rulesStricter';

export interface FieldCase {
  label: string;
  value: unknown;
  verdict: Verdict;
}

const valid = (label: string, value: unknown): FieldCase => ({ label, value, verdict: 'valid' });
const invalid = (label: string, value: unknown): FieldCase => ({ label, value, verdict: 'invalid' });
const rulesStricter = (label: string, value: unknown): FieldCase => ({ label, value, verdict: 'rulesStricter' });

function labels(count: number, value = 'v'): Record<string, string> {
  return Object.fromEntries(Array.from({ length: count }, (_, i) => [`label${i}`, value]));
}

/**
 * A character outside the BMP: one code point (what zod's lengths count) but two UTF-16 units
 * (what the rules' size() counts; their regexes count code points).
 */
const EMOJI = '\u{1F600}';

const E164_VALID = [
  valid('a US number', '+14155550123'),
  valid('a German number of 11 digits', '+4930123456'),
  valid('a German number of 15 digits', '+491234567890123'),
  valid('the shortest of its plan (Niue)', '+6831234'),
  valid('a non-geographic number (+800)', '+80012345678'),
  // The schema strips the national prefix ("+44 0…" → "+44…"); same number, other spelling.
  valid('a UK number with its national prefix', '+440201234567'),
];

const E164_INVALID = [
  // The rules' old pattern (^\+[1-9][0-9]{6,14}$) accepted these: too short for +1.
  invalid('too short for +1 (7 digits)', '+1234567'),
  invalid('too short for +1 (10 digits)', '+1415555012'),
  invalid('an unassigned calling code', '+2851234567'),
  invalid('16 digits (beyond E.164)', '+4912345678901234'),
  invalid('6 digits', '+123456'),
  invalid('no plus', '14155550123'),
  invalid('a leading zero', '+04155550123'),
  invalid('letters', '+1415555CALL'),
  invalid('empty', ''),
  invalid('a number type', 14155550123),
];

const E164_STRICTER = [
  // The schema normalizes what a person types; the rules take only the stored form.
  rulesStricter('formatted', '+1 415 555 0123'),
  rulesStricter('with surrounding space', ' +14155550123 '),
  // +44 is shared by GB, GG, IM and JE; only the 10-digit length is possible in all four.
  rulesStricter('a 9-digit UK number (+44 is shared)', '+44800123456'),
];

export const ACCOUNT_FIELD_CASES = {
  displayName: [
    valid('one character', 'A'),
    valid('80 characters', 'x'.repeat(80)),
    valid('80 non-ASCII characters', '\u00e9'.repeat(80)),
    valid('40 characters outside the BMP (80 UTF-16 units)', EMOJI.repeat(40)),
    valid('a zero-width space (not white space to trim())', '\u200b'),
    valid('NEL (not white space to trim())', '\u0085'),
    valid('surrounding spaces within 80', ` ${'x'.repeat(78)} `),
    invalid('empty', ''),
    invalid('81 characters', 'x'.repeat(81)),
    invalid('81 characters outside the BMP', EMOJI.repeat(81)),
    invalid('only spaces', '   '),
    invalid('only Unicode white space', '\u00a0\u3000\ufeff\u2028\u2029'),
    invalid('a number', 42),
    invalid('null', null),
    // zod trims before counting; the rules count the stored string.
    rulesStricter('81 characters with a trailing space', `${'x'.repeat(80)} `),
    rulesStricter('41 characters outside the BMP (82 UTF-16 units)', EMOJI.repeat(41)),
  ],
  desiredState: [
    valid('connected', 'connected'),
    valid('disconnected', 'disconnected'),
    valid('loggedOut', 'loggedOut'),
    invalid('online', 'online'),
    invalid('Connected', 'Connected'),
    invalid('empty', ''),
    invalid('null', null),
    invalid('a number', 1),
  ],
  phoneNumber: [...E164_VALID, valid('null (removes it)', null), ...E164_INVALID, ...E164_STRICTER],
  linkMethod: [
    valid('qr', 'qr'),
    valid('pairingCode', 'pairingCode'),
    invalid('sms', 'sms'),
    invalid('QR', 'QR'),
    // The schema reads null as "not set"; the rules want a method once the key is written.
    rulesStricter('null', null),
  ],
  labels: [
    valid('none', {}),
    valid('empty values', { a: '', b: '', ['b'.repeat(63)]: '' }),
    valid('32 labels', labels(32)),
    valid('31 labels and one at its limits', { ...labels(31), ['k'.repeat(63)]: 'v'.repeat(256) }),
    valid('white space counted in full', { note: `\n${'v'.repeat(254)}\t` }),
    valid('256 characters outside the BMP', { team: EMOJI.repeat(256) }),
    valid('null (removes them)', null),
    invalid('33 labels', labels(33)),
    invalid('a value of 257 characters', { team: 'v'.repeat(257) }),
    invalid('white space over the limit', { note: `\n${'v'.repeat(255)}\t` }),
    invalid('257 characters outside the BMP', { team: EMOJI.repeat(257) }),
    invalid('a value of 257 characters after 31 good ones', { ...labels(31), zz: 'v'.repeat(257) }),
    invalid('a key starting with a digit', { '1abc': 'v' }),
    invalid('a key with a space', { 'has space': 'v' }),
    invalid('a key of 64 characters', { ['k'.repeat(64)]: 'v' }),
    invalid('a bad key after 31 good ones', { ...labels(31), 'zz bad': 'v' }),
    invalid('a key with a comma (two valid-looking halves)', { 'team,region': 'v' }),
    invalid('a non-ASCII key', { 'équipe': 'v' }),
    invalid('a number value', { team: 1 }),
    invalid('a null value after 24 good ones', { ...labels(24), zz: null }),
    invalid('a map value', { team: { name: 'sales' } }),
    invalid('a boolean value as the 32nd label', { ...labels(31), zz: true }),
    invalid('a list', ['a', 'b']),
    invalid('a string', 'team=a'),
    // The rules join values with U+0000 to measure them, so a value may not contain it.
    rulesStricter('a value containing U+0000', { team: 'a\u0000b' }),
  ],
} satisfies Record<string, FieldCase[]>;

export const OUTBOX_FIELD_CASES = {
  to: [
    ...E164_VALID,
    valid('a user JID', '14155550123@s.whatsapp.net'),
    valid('a user JID with a device', '14155550123:12@s.whatsapp.net'),
    valid('a LID', '123456789012345@lid'),
    valid('a group JID', '120363041234567890@g.us'),
    valid('an old-style group JID', '14155550123-1600000000@g.us'),
    ...E164_INVALID,
    invalid('null', null),
    invalid('an e-mail address', 'someone@example.com'),
    invalid('a JID with a too short user', '1234@s.whatsapp.net'),
    invalid('a JID of an unknown server', '14155550123@c.us'),
    ...E164_STRICTER,
    rulesStricter('a JID with surrounding space', ' 14155550123@s.whatsapp.net'),
  ],
  text: [
    valid('one character', '.'),
    valid('4096 characters', 'x'.repeat(4096)),
    valid('2048 characters outside the BMP (4096 UTF-16 units)', EMOJI.repeat(2048)),
    valid('text around white space', ' hi\n'),
    invalid('empty', ''),
    invalid('4097 characters', 'x'.repeat(4097)),
    invalid('4097 characters outside the BMP', EMOJI.repeat(4097)),
    invalid('only white space', ' \n\t '),
    invalid('only Unicode white space', '\u00a0\u2028\ufeff'),
    invalid('a number', 42),
    invalid('null', null),
    rulesStricter('2049 characters outside the BMP (4098 UTF-16 units)', EMOJI.repeat(2049)),
  ],
  attemptCount: [
    valid('0', 0),
    invalid('-1', -1),
    invalid('0.5', 0.5),
    invalid('a string', '0'),
    invalid('null', null),
    // Only the reconciler counts attempts; a new message starts at 0.
    rulesStricter('1', 1),
  ],
} satisfies Record<string, FieldCase[]>;

export type AccountCaseField = keyof typeof ACCOUNT_FIELD_CASES;
export type OutboxCaseField = keyof typeof OUTBOX_FIELD_CASES;

/** The schema the reconciler and the functions read the field with. */
export function accountFieldSchema(field: AccountCaseField): z.ZodType {
  return AccountDocSchema.shape[field];
}

export function outboxFieldSchema(field: OutboxCaseField): z.ZodType {
  return OutboxDocSchema.shape[field];
}

/** Whether the schema accepts the case's value. */
export function schemaAccepts(schema: z.ZodType, value: unknown): boolean {
  return schema.safeParse(value).success;
}

export function casesOf<T extends Record<string, FieldCase[]>>(table: T): { field: keyof T & string; c: FieldCase }[] {
  return Object.entries(table).flatMap(([field, cases]) => cases.map((c) => ({ field: field as keyof T & string, c })));
}
