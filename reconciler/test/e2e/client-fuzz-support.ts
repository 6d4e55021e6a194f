/**
 * Helpers of client-fuzz.test.ts: a seeded random source, generators of odd values for the
 * client-writable fields of `accounts` and `outbox`, and a client that writes through
 * firestore.rules as an operator, against the harness's own emulator project.
 *
 * Generated values are deliberately not filtered: the rules decide. Values near the limits,
 * Unicode the rules and the schema might count differently (astral characters, zero-width and
 * format characters, RTL overrides, combining marks, controls) and keys that look like object
 * internals are favoured. Strings are always well-formed UTF-16 (no lone surrogates): Firestore
 * stores UTF-8, so a lone surrogate is not a value any client can write.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initializeTestEnvironment, type RulesTestEnvironment } from '@firebase/rules-unit-testing';
import { deleteField, serverTimestamp, setLogLevel, Timestamp, type Firestore } from 'firebase/firestore';
import { e164LengthsByCallingCode } from '../../../contract/test/e164-rules-pattern.ts';
import { ACCOUNT_FIELD_CASES, OUTBOX_FIELD_CASES, type FieldCase } from '../../../contract/test/field-cases.ts';
import { dbOf, firestoreEmulator } from '../../../test/rules/support.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

// ------------------------------------------------------------------ seeded randomness

export interface Rng {
  readonly seed: number;
  /** [0, 1) */
  next(): number;
  /** An integer in [min, max]. */
  int(min: number, max: number): number;
  pick<T>(items: readonly T[]): T;
  chance(p: number): boolean;
}

/** mulberry32: small, fast and fully determined by the seed. */
export function makeRng(seed: number): Rng {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  const rng: Rng = {
    seed,
    next,
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    pick: (items) => {
      if (items.length === 0) throw new Error('pick from an empty list');
      return items[Math.floor(next() * items.length)]!;
    },
    chance: (p) => next() < p,
  };
  return rng;
}

/** WAFLEET_FUZZ_SEED reproduces a run; otherwise a fresh seed (printed, and named in every failure). */
export function fuzzSeed(): number {
  const fixed = process.env.WAFLEET_FUZZ_SEED;
  if (fixed !== undefined && fixed !== '') {
    const n = Number(fixed);
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`WAFLEET_FUZZ_SEED must be an integer in [0, 2^32), got ${fixed}`);
    return n;
  }
  return Math.floor(Math.random() * 0xffffffff);
}

// ------------------------------------------------------------------ writing through the rules

export const OPERATOR_UID = 'uid-fuzz-operator';

/**
 * Loads firestore.rules for `projectId` (the harness's project: the emulator applies the rules
 * loaded for the project a request names) and returns an operator's web-SDK Firestore.
 * The Admin SDK, which the harness and the reconciler use, bypasses the rules as in production.
 */
export async function operatorClient(projectId: string): Promise<{ env: RulesTestEnvironment; db: Firestore }> {
  setLogLevel('error');
  const rules = await readFile(path.join(root, 'firestore.rules'), 'utf8');
  const env = await initializeTestEnvironment({ projectId, firestore: { ...firestoreEmulator(), rules } });
  return { env, db: dbOf(env.authenticatedContext(OPERATOR_UID, { role: 'operator' })) };
}

export type WriteVerdict = 'accepted' | 'refusedByRules' | 'refusedByFirestore';

/** What became of a client write: a rules denial and a Firestore refusal are skips, anything else a failure. */
export async function verdictOf(write: Promise<unknown>): Promise<WriteVerdict> {
  try {
    await write;
    return 'accepted';
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'permission-denied') return 'refusedByRules';
    // A value Firestore itself will not store (e.g. a reserved map key): no client can write it.
    if (code === 'invalid-argument') return 'refusedByFirestore';
    throw err;
  }
}

// ------------------------------------------------------------------ describing values

/** A short, ASCII-only rendering of a value for failure messages (non-ASCII as \u escapes). */
export function show(value: unknown, max = 120): string {
  const seen = (v: unknown): unknown => {
    if (v instanceof Timestamp) return `Timestamp(${v.toMillis()})`;
    if (v && typeof v === 'object' && !Array.isArray(v) && (v as { constructor?: { name?: string } }).constructor?.name?.includes('FieldValue')) {
      return `<${(v as { _methodName?: string })._methodName ?? 'FieldValue'}>`;
    }
    if (Array.isArray(v)) return v.map(seen);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, seen(x)]));
    return v;
  };
  let text: string;
  if (typeof value === 'string') {
    text = JSON.stringify(summarizeString(value));
  } else {
    const json = JSON.stringify(seen(value), (_k, v: unknown) => (typeof v === 'string' ? summarizeString(v) : v));
    text = json ?? String(value);
  }
  text = text.replace(/[^\x20-\x7e]/gu, (c) => [...c].map((u) => `\\u{${u.codePointAt(0)!.toString(16)}}`).join(''));
  return text.length > max ? `${text.slice(0, max)}…(${text.length} chars)` : text;
}

/** Long repetitive strings as "x×4096" rather than the whole thing. */
function summarizeString(s: string): string {
  if (s.length <= 40) return s;
  return `${s.slice(0, 24)}…[${s.length} UTF-16 units, ${[...s].length} code points]`;
}

// ------------------------------------------------------------------ odd text

const PIECES = {
  ascii: ['Sales', 'line', '1', 'a', 'Z', '~', '!', '#', '<script>alert(1)</script>', '${x}', '%s%n', '\\', '"', "'", '{}', '[]', 'null', 'undefined', '../..', '/', '`', 'DROP TABLE', '__proto__'],
  emoji: ['\u{1F600}', '\u{1F468}\u200D\u{1F469}\u200D\u{1F467}\u200D\u{1F466}', '\u{1F1FA}\u{1F1F8}', '\u{1F44D}\u{1F3FD}', '\u2764\uFE0F', '\u{1F9D1}\u200D\u{1F4BB}', '\u{1FAE0}', '#\uFE0F\u20E3'],
  rtl: ['\u0645\u0631\u062D\u0628\u0627', '\u05E9\u05DC\u05D5\u05DD', '\u202Eevil\u202C', '\u200F', '\u200E', '\u061C', '\u2067isolate\u2069', '\u0633\u0644\u0627\u0645 \u0639\u0644\u064A\u0643\u0645'],
  zeroWidth: ['\u200B', '\u200C', '\u200D', '\u2060', '\u00AD', '\u180E', '\u034F', '\u{E0041}'],
  combining: ['e\u0301', 'a\u0308\u0308\u0308\u0308', 'Z\u0336\u0337\u0338\u0334\u035C\u0361', '\u0301', '\u0E01\u0E34\u0E4A'],
  cjk: ['\u6F22\u5B57', '\u30C6\u30B9\u30C8', '\uD55C\uAD6D\uC5B4', '\u{20BB7}\u{2A6D6}', '\u0928\u092E\u0938\u094D\u0924\u0947'],
  space: [' ', '\t', '\n', '\r\n', '\u00A0', '\u3000', '\u2028', '\u2029', '\u000B', '\f', '\uFEFF', '\u2003', '\u205F', '\u1680'],
  control: ['\u0001', '\u0007', '\u001B[31m', '\u007F', '\u0085', '\uFFFD', '\uFFFF', '\uFFFE', '\u{10FFFF}', '\u{F0000}', '\u0000'],
  astral: ['\u{1D400}\u{1D401}', '\u{1D11E}', '\u{10348}', '\u{1F0A1}'],
  markup: ['*bold*', '_it_', '~s~', '```code```', 'https://example.com/?q=1&r=2#x', '@15550011001', '<b>x</b>', '> quote', '- list', '1. item'],
} as const;
type PieceKind = keyof typeof PIECES;
const KINDS = Object.keys(PIECES) as PieceKind[];
const SPACE_ONLY: readonly string[] = PIECES.space;

/** Cuts to at most `units` UTF-16 units without splitting a surrogate pair. */
function cutTo(s: string, units: number): string {
  let out = '';
  for (const cp of s) {
    if (out.length + cp.length > units) break;
    out += cp;
  }
  return out;
}

/** A string of about `units` UTF-16 units drawn from a few kinds of odd text. */
export function oddString(r: Rng, units: number, opts: { kinds?: PieceKind[]; allowNul?: boolean } = {}): string {
  if (units <= 0) return '';
  const kinds = opts.kinds ?? Array.from({ length: r.int(1, 3) }, () => r.pick(KINDS));
  let s = '';
  // Repetition keeps long strings cheap to build and exercises run-length-ish counting.
  while (s.length < units) {
    let piece: string = r.pick(PIECES[r.pick(kinds)]);
    if (!opts.allowNul && piece === '\u0000') piece = '\u0001';
    s += r.chance(0.2) ? piece.repeat(r.int(2, 64)) : piece;
  }
  return cutTo(s, units);
}

/** A length near one of the interesting points of a limit. */
function lengthAround(r: Rng, limit: number): number {
  return r.pick([
    () => 1,
    () => r.int(1, 12),
    () => r.int(1, limit),
    () => limit + r.int(-3, 0),
    () => limit + r.int(1, 3),
    () => limit,
  ])();
}

function fromCases(r: Rng, cases: readonly FieldCase[]): unknown {
  return r.pick(cases).value;
}

// ------------------------------------------------------------------ accounts

export const ACCOUNT_FIELDS = ['displayName', 'desiredState', 'phoneNumber', 'linkMethod', 'labels', 'qrRequestedAt', 'relinkRequestedAt'] as const;
export type AccountField = (typeof ACCOUNT_FIELDS)[number];

/** Keys no client may write: each write carrying one must be refused. */
export const FORBIDDEN_ACCOUNT_KEYS: Record<string, () => unknown> = {
  deleteRequestedAt: () => serverTimestamp(),
  createdAt: () => serverTimestamp(),
  phase: () => 'connected',
  owner: () => ({ instanceId: 'evil', epoch: 999 }),
  status: () => 'queued',
  foo: () => 1,
};

/** One label changed by a dotted field path (the rules then see the whole resulting map). */
export function dottedLabel(r: Rng): [string, unknown] {
  let k = r.pick([...KEY_HEAD]);
  for (let i = r.int(0, 10); i > 0; i--) k += r.pick([...'abcdefghijklmnopqrstuvwxyz0123456789_-']);
  return [`labels.${k}`, r.chance(0.1) ? deleteField() : labelValue(r, r.chance(0.7))];
}

export interface FuzzNumbers {
  /** Numbers the simulator knows (E.164): phones and contacts. */
  simNumbers: string[];
}

export function displayNameValue(r: Rng): unknown {
  if (r.chance(0.3)) return fromCases(r, ACCOUNT_FIELD_CASES.displayName);
  if (r.chance(0.12)) return Array.from({ length: r.int(1, 6) }, () => r.pick(SPACE_ONLY)).join('');
  return oddString(r, lengthAround(r, 80));
}

export function desiredStateValue(r: Rng, onlyConnected = false): unknown {
  if (onlyConnected) return r.chance(0.85) ? 'connected' : r.pick(['Connected', 'online', '', null, 0, true]);
  if (r.chance(0.15)) return fromCases(r, ACCOUNT_FIELD_CASES.desiredState);
  return r.pick(['connected', 'connected', 'disconnected', 'loggedOut']);
}

/** Country calling code → the national lengths the rules (and the schema) accept for it. */
const LENGTHS = [...e164LengthsByCallingCode()].sort(([a], [b]) => (a < b ? -1 : 1));

/**
 * Mostly numbers of a length the rules accept for their calling code (leading zeros and national
 * prefixes included, where libphonenumber may strip digits), sometimes any length.
 */
export function e164Value(r: Rng, numbers: FuzzNumbers): string {
  if (r.chance(0.25)) return r.pick(numbers.simNumbers);
  const [code, lengths] = r.chance(0.75) ? r.pick(LENGTHS) : [String(r.int(1, 999)), [r.int(3, 15)]];
  const length = r.pick(lengths);
  const national = Array.from({ length }, (_, i) => (i === 0 && r.chance(0.3) ? r.pick(['0', '1']) : String(r.int(0, 9)))).join('');
  const n = `+${code}${national}`;
  // Now and then the way a person types it (the rules want the stored form).
  return r.chance(0.05) ? n.replace(/(\d{3})(?=\d)/g, '$1 ') : n;
}

export function phoneNumberValue(r: Rng, numbers: FuzzNumbers): unknown {
  if (r.chance(0.25)) return fromCases(r, ACCOUNT_FIELD_CASES.phoneNumber);
  if (r.chance(0.1)) return r.pick([null, deleteField()]);
  return e164Value(r, numbers);
}

export function linkMethodValue(r: Rng): unknown {
  if (r.chance(0.2)) return fromCases(r, ACCOUNT_FIELD_CASES.linkMethod);
  if (r.chance(0.05)) return deleteField();
  return r.pick(['qr', 'pairingCode', 'pairingCode']);
}

/** Keys that look like object internals or sit at the limits; the last one is one character too long. */
const ODD_KEYS = ['constructor', 'toString', 'hasOwnProperty', 'valueOf', 'prototype', 'then', 'a.b.c', 'A-', 'Z_', 'x'.repeat(63), 'team', 'Team', 'TEAM', 'k'.repeat(64)];
const KEY_HEAD = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const KEY_TAIL = `${KEY_HEAD}0123456789_.-`;

function labelKey(r: Rng, clean: boolean): string {
  const roll = r.next();
  if (roll < 0.15) return r.pick(clean ? ODD_KEYS.slice(0, -1) : ODD_KEYS);
  if (roll < 0.22 && !clean) return r.pick(['1abc', 'has space', 'team,region', '\u00E9quipe', '_lead', '-lead', '.lead', 'a/b', 'emoji\u{1F600}', 'a\u200Bb']);
  const len = r.chance(0.1) ? r.int(60, 64) : r.int(0, 12);
  let k = r.pick([...KEY_HEAD]);
  for (let i = 0; i < len; i++) k += r.pick([...KEY_TAIL]);
  return k;
}

function labelValue(r: Rng, clean = false): unknown {
  const roll = r.next();
  if (roll < 0.04 && !clean) return r.pick([1, true, null, { nested: 'x' }, ['a'], 0.5]);
  if (roll < 0.1) return '';
  return oddString(r, clean ? Math.min(256, lengthAround(r, 256)) : lengthAround(r, 256), { allowNul: !clean && r.chance(0.05) });
}

export function labelsValue(r: Rng): unknown {
  if (r.chance(0.25)) return fromCases(r, ACCOUNT_FIELD_CASES.labels);
  if (r.chance(0.05)) return r.pick([null, deleteField()]);
  // Mostly maps whose every key and value is fine (one bad label refuses the whole map).
  const clean = r.chance(0.7);
  const count = r.pick(clean ? [0, 1, 2, 3, 5, 8, 31, 32, r.int(0, 32)] : [1, 2, 8, 32, 33, r.int(0, 34)]);
  const labels: Record<string, unknown> = {};
  for (let i = 0; i < count; i++) labels[labelKey(r, clean)] = labelValue(r, clean);
  return labels;
}

/** The rules pin request stamps to request.time: the server timestamp passes, a client's clock or null does not. */
export function requestStampValue(r: Rng): unknown {
  return r.chance(0.85) ? serverTimestamp() : r.pick([Timestamp.now(), Timestamp.fromMillis(Date.now() + 3_600_000), null, deleteField(), 'now']);
}

/**
 * The largest document the rules accept, as JSON (the reconciler refuses documents over 64 KiB
 * of JSON before parsing): 32 labels of 63-character keys and 256 characters that JSON escapes
 * six-fold, and a display name of such characters.
 */
export function largestAccountPatch(): Record<string, unknown> {
  const labels: Record<string, string> = {};
  for (let i = 0; i < 32; i++) labels[`${String.fromCharCode(65 + (i % 26))}${String(i).padStart(2, '0')}${'k'.repeat(60)}`] = '\u0001'.repeat(256);
  return { displayName: `A${'\u0001'.repeat(79)}`, labels, phoneNumber: '+491234567890123', linkMethod: 'qr' };
}

// ------------------------------------------------------------------ outbox

export interface Recipients {
  /** E.164 numbers and JIDs of simulated users that receive (and show) texts. */
  reachable: string[];
  /** Anything else in an accepted format. */
  other: string[];
}

export function jidValue(r: Rng): string {
  const digits = (min: number, max: number) => Array.from({ length: r.int(min, max) }, (_, i) => String(i === 0 ? r.int(1, 9) : r.int(0, 9))).join('');
  return r.pick([
    () => `${digits(4, 21)}@s.whatsapp.net`,
    () => `${digits(5, 20)}:${r.int(0, 1000)}@s.whatsapp.net`,
    () => `${digits(4, 21)}@lid`,
    () => `${digits(5, 31)}@g.us`,
    () => `${digits(5, 20)}-${digits(4, 16)}@g.us`,
    () => `${digits(5, 20)}@c.us`,
    () => `${digits(5, 20)}@broadcast`,
    () => 'status@broadcast',
  ])();
}

export function recipientValue(r: Rng, recipients: Recipients, numbers: FuzzNumbers): unknown {
  const roll = r.next();
  if (roll < 0.35) return r.pick(recipients.reachable);
  if (roll < 0.5) return fromCases(r, OUTBOX_FIELD_CASES.to);
  if (roll < 0.6) return r.pick(recipients.other);
  if (roll < 0.8) return jidValue(r);
  return e164Value(r, numbers);
}

/** Texts worth sending once each: controls, bidi overrides, joiners, noncharacters, limits in UTF-16 units. */
export const ODD_TEXTS: readonly string[] = [
  '\u0000',
  'a\u0000b',
  '\u202Eevil\u202C',
  '\u2067\u0645\u0631\u062D\u0628\u0627\u2069 and \u05E9\u05DC\u05D5\u05DD',
  '\u200B',
  '\u200D\u200C\u2060',
  '\u00AD',
  '\u180E',
  '\u0085',
  '\u{1F468}\u200D\u{1F469}\u200D\u{1F467}\u200D\u{1F466}\u{1F1FA}\u{1F1F8}\u{1F44D}\u{1F3FD}',
  '\uFFFF\uFFFE\u{10FFFF}\u{F0000}',
  '\u{E0041}\u{E007F}',
  'Z\u0336\u0337\u0338\u0334\u035C\u0361'.repeat(400),
  '\r\n\t.\u000B\f',
  '\u001B[31mred\u001B[0m\u0007',
  '*bold* _it_ ~s~ ```code``` https://example.com/?q=1&r=2#x',
  `${'x'.repeat(4094)}\u{1F600}`,
  `\u{1F600}${'x'.repeat(4094)}`,
  `${'\u{1F600}'.repeat(2047)}xx`,
];

export function textValue(r: Rng): unknown {
  if (r.chance(0.2)) return fromCases(r, OUTBOX_FIELD_CASES.text);
  if (r.chance(0.06)) return Array.from({ length: r.int(1, 8) }, () => r.pick(SPACE_ONLY)).join('');
  return oddString(r, lengthAround(r, 4096), { allowNul: r.chance(0.1) });
}
