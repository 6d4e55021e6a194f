/**
 * firestore.rules cannot run libphonenumber, so its isE164() is a per-calling-code length
 * pattern generated from libphonenumber's metadata (e164-rules-pattern.ts). These tests hold the
 * rules to the schema: the rules carry exactly the generated pattern, and every number the
 * pattern accepts is one E164Schema accepts, across every calling code, length and leading digits.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { E164Schema, normalizeE164 } from '../src/index.ts';
import { e164LengthsByCallingCode, e164RulesPatternLiteral, e164RulesPatternSource } from './e164-rules-pattern.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const rules = readFileSync(path.join(root, 'firestore.rules'), 'utf8');
const pattern = new RegExp(e164RulesPatternSource());

/** Deterministic digits, so a failure names a number that fails again on the next run. */
function* digits(seed: number): Generator<string> {
  let x = seed >>> 0 || 1;
  for (;;) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    yield String((x >>> 0) % 10);
  }
}

describe('isE164 in firestore.rules', () => {
  it('is the pattern generated from the libphonenumber metadata (regenerate after an upgrade)', () => {
    const line = rules.split('\n').find((l) => l.includes("v.matches('^\\\\+(?:"));
    expect(line, 'no isE164 pattern found in firestore.rules').toBeDefined();
    expect(line?.trim()).toBe(`return v is string && v.matches(${e164RulesPatternLiteral()});`);
  });

  it('splits numbers where libphonenumber does: calling codes are prefix-free', () => {
    const codes = [...e164LengthsByCallingCode().keys()];
    expect(codes.flatMap((a) => codes.filter((b) => b !== a && b.startsWith(a)).map((b) => `${a} < ${b}`))).toEqual([]);
  });

  it('accepts only numbers E164Schema accepts, unchanged, for every code, length and two leading digits', () => {
    const rejected: string[] = [];
    const rewritten: string[] = [];
    let checked = 0;
    for (const [code, lengths] of e164LengthsByCallingCode()) {
      for (const len of lengths) {
        for (let lead = 0; lead < 100; lead += 1) {
          const rest = digits(Number(code) * 1000 + len * 100 + lead);
          let national = String(lead).padStart(2, '0').slice(0, len);
          while (national.length < len) national += rest.next().value;
          const number = `+${code}${national}`;
          expect(pattern.test(number), number).toBe(true);
          const normalized = normalizeE164(number);
          checked += 1;
          if (normalized === null) rejected.push(number);
          else if (normalized !== number) rewritten.push(`${number} → ${normalized}`);
        }
      }
    }
    expect(checked).toBeGreaterThan(30_000);
    expect(rejected).toEqual([]);
    // A national prefix written after the country code ("+44 0…") is stripped by the schema; the
    // rules keep the digits as written. Both are the same number, and the reconciler uses the
    // schema's form, so this is a difference of spelling, not of validity. Pinned so it is seen.
    expect(rewritten.length / checked).toBeLessThan(0.05);
  });

  it.each([
    ['shortest of its plan (Niue)', '+6831234'],
    ['US', '+14155550123'],
    ['Germany, 11 digits', '+4930123456'],
    ['Germany, 15 digits', '+491234567890123'],
    ['non-geographic (+800)', '+80012345678'],
  ])('accepts %s', (_, number) => {
    expect(pattern.test(number)).toBe(true);
    expect(E164Schema.safeParse(number).success).toBe(true);
  });

  it.each([
    ['too short for +1 (was accepted by the old rules regex)', '+1234567'],
    ['too short for +1', '+1415555012'],
    ['too long for +1', '+141555501234'],
    ['an unassigned calling code', '+2851234567'],
    ['16 digits (beyond E.164)', '+4912345678901234'],
    ['formatted (the rules take the stored form only)', '+1 415 555 0123'],
    ['no plus', '14155550123'],
    ['a leading zero', '+04155550123'],
  ])('rejects %s', (_, number) => {
    expect(pattern.test(number)).toBe(false);
  });

  it('refuses numbers over 15 digits that libphonenumber calls possible (not E.164)', () => {
    expect(normalizeE164('+4912345678901234')).toBeNull();
    expect(normalizeE164('+49123456789012345')).toBeNull();
    expect(normalizeE164('+491234567890123')).toBe('+491234567890123');
  });
});
