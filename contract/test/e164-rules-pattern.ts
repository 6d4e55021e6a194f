/**
 * The regular expression firestore.rules uses for E.164 phone numbers, derived from the
 * libphonenumber-js metadata that E164Schema (contract/src/phone.ts) parses with. Rules cannot
 * run libphonenumber, but what its isPossible() asks is finite: is the national number's length
 * one of the lengths its numbering plan allows? That is a regex per country calling code.
 *
 * Why a number this pattern accepts is always accepted by the schema:
 *  - calling codes are prefix-free, so libphonenumber splits "+<code><national>" where the
 *    pattern does;
 *  - where several regions share a code (+1, +44, +61, ...) libphonenumber picks one of them by
 *    the leading digits, so only lengths that EVERY region of the code allows are listed;
 *  - stripping a national prefix only ever leaves a number libphonenumber checked to be possible
 *    (extractNationalNumber keeps the digits otherwise);
 *  - 6 to 15 digits in all, as normalizeE164 allows (15: ITU E.164).
 * contract/test/phone-rules.test.ts checks all of this against the schema itself, and that
 * firestore.rules holds exactly this pattern; run this file to print it after upgrading
 * libphonenumber-js:  node --import tsx contract/test/e164-rules-pattern.ts
 */
import { pathToFileURL } from 'node:url';
import { Metadata, type MetadataJson } from 'libphonenumber-js';
import metadataJson from 'libphonenumber-js/metadata.min.json';
import { E164_MAX_DIGITS } from '../src/phone.ts';

/** normalizeE164's pattern wants a "+" and at least 6 digits before libphonenumber sees the number. */
const MIN_DIGITS = 6;

const metadata = metadataJson as unknown as MetadataJson & {
  country_calling_codes: Record<string, string[]>;
  nonGeographic?: Record<string, unknown>;
};

/** The national-number lengths libphonenumber treats as possible for a region ("001": a non-geographic code). */
function possibleLengths(region: string, callingCode: string): number[] {
  // The main entry's Metadata is bound to the same (min) metadata as its parser.
  const md = new Metadata();
  // selectNumberingPlan takes a region or a calling code (for non-geographic entities).
  md.selectNumberingPlan((region === '001' ? callingCode : region) as Parameters<Metadata['selectNumberingPlan']>[0]);
  return md.numberingPlan?.possibleLengths() ?? [];
}

/** Country calling code → the national lengths every region of that code allows, within E.164's bounds. */
export function e164LengthsByCallingCode(): Map<string, number[]> {
  const out = new Map<string, number[]>();
  // Non-geographic codes (+800, +882, ...) are listed apart from the regions' codes.
  const codes: [string, string[]][] = [
    ...Object.entries(metadata.country_calling_codes),
    ...Object.keys(metadata.nonGeographic ?? {}).map((code): [string, string[]] => [code, ['001']]),
  ];
  for (const [code, regions] of codes) {
    const sets = regions.map((r) => new Set(possibleLengths(r, code)));
    const first = sets[0];
    if (!first) continue;
    const common = [...first]
      .filter((len) => sets.every((s) => s.has(len)))
      .filter((len) => code.length + len >= MIN_DIGITS && code.length + len <= E164_MAX_DIGITS)
      .sort((a, b) => a - b);
    if (common.length) out.set(code, common);
  }
  return out;
}

/** [7, 8, 9, 12] → "[0-9]{7,9}|[0-9]{12}" (runs of consecutive lengths as one range). */
function lengthsRegex(lengths: number[]): string {
  const parts: string[] = [];
  let start = lengths[0];
  for (let i = 0; start !== undefined && i < lengths.length; i += 1) {
    const cur = lengths[i] as number;
    const next = lengths[i + 1];
    if (next === cur + 1) continue;
    parts.push(start === cur ? `[0-9]{${cur}}` : `[0-9]{${start},${cur}}`);
    start = next;
  }
  return parts.join('|');
}

/** The pattern as a JavaScript/RE2 regex source: codes with the same lengths share one branch. */
export function e164RulesPatternSource(): string {
  const byLengths = new Map<string, string[]>();
  for (const [code, lengths] of e164LengthsByCallingCode()) {
    const key = lengthsRegex(lengths);
    byLengths.set(key, [...(byLengths.get(key) ?? []), code]);
  }
  const branches = [...byLengths.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([lengths, codes]) => {
      const sorted = codes.sort();
      const head = sorted.length === 1 ? sorted[0] : `(?:${sorted.join('|')})`;
      return lengths.includes('|') ? `${head}(?:${lengths})` : `${head}${lengths}`;
    });
  return `^\\+(?:${branches.join('|')})$`;
}

/** The same source as a firestore.rules string literal (backslashes doubled). */
export function e164RulesPatternLiteral(): string {
  return `'${e164RulesPatternSource().replaceAll('\\', '\\\\')}'`;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.stdout.write(`${e164RulesPatternLiteral()}\n`);
}
