/** fleetConfig/whatsapp (issue 11 item 5): the WhatsApp Web version override admins write from the console. */
import { describe, expect, it } from 'vitest';
import { Collections, FleetConfigDocs, FleetConfigWhatsAppDocSchema, formatWaVersion, formatZodError, WA_VERSION_BOUNDS, WaWebVersionSchema } from '../src/index.ts';

const ts = { seconds: 1, nanoseconds: 0, toMillis: () => 1_000 };
const parse = (doc: unknown) => {
  const r = FleetConfigWhatsAppDocSchema.safeParse(doc);
  return r.success ? 'ok' : formatZodError(r.error);
};

describe('fleetConfig/whatsapp', () => {
  it('is named in the collections', () => {
    expect(Collections.fleetConfig).toBe('fleetConfig');
    expect(FleetConfigDocs.whatsapp).toBe('whatsapp');
  });

  it('takes a version override, or null for none, with optional bookkeeping fields', () => {
    expect(parse({ waWebVersion: [2, 3000, 1043857760] })).toBe('ok');
    expect(parse({ waWebVersion: null })).toBe('ok');
    expect(parse({ waWebVersion: [2, 3000, 1], updatedAt: ts, updatedBy: 'admin@example.com', note: '405 since Friday' })).toBe('ok');
    // Lenient about fields it does not name, like every document schema.
    expect(parse({ waWebVersion: null, extra: true })).toBe('ok');
  });

  it('requires the field: a misspelt name must not silently mean "no override"', () => {
    expect(parse({})).toMatch(/^waWebVersion: /);
    expect(parse({ waVersion: [2, 3000, 1] })).toMatch(/^waWebVersion: /);
  });

  it.each([
    ['a string', '2.3000.1043857760', /^waWebVersion: must be an array of three whole numbers/],
    ['two parts', [2, 3000], /^waWebVersion: must be an array of three/],
    ['four parts', [2, 3000, 1, 4], /^waWebVersion: must be an array of three/],
    ['a fraction', [2, 3000, 1.5], /^waWebVersion\.2: the patch part must be a whole number/],
    ['zero major', [0, 3000, 1], /^waWebVersion\.0: the major part must be at least 1/],
    ['a negative patch', [2, 3000, -1], /^waWebVersion\.2: the patch part must be at least 1/],
    ['a string part', [2, '3000', 1], /^waWebVersion\.1: the minor part must be a number/],
    ['a huge major', [100, 3000, 1], /^waWebVersion\.0: the major part must be at most 99/],
    ['a patch beyond uint32', [2, 3000, 4_294_967_296], /^waWebVersion\.2: the patch part must be at most 4294967295/],
    ['NaN', [2, Number.NaN, 1], /^waWebVersion\.1: /],
    ['an object', { major: 2, minor: 3000, patch: 1 }, /^waWebVersion: must be an array/],
  ])('refuses %s with a message that names the fix', (_, waWebVersion, message) => {
    expect(parse({ waWebVersion })).toMatch(message);
  });

  it('refuses oversized bookkeeping fields and a non-timestamp updatedAt', () => {
    expect(parse({ waWebVersion: null, note: 'x'.repeat(1001) })).toMatch(/^note: /);
    expect(parse({ waWebVersion: null, updatedAt: '2026-12-04' })).toMatch(/^updatedAt: /);
  });

  it('bounds fit the protobuf uint32 fields and the versions WhatsApp ships', () => {
    expect(WA_VERSION_BOUNDS.patch.max).toBe(2 ** 32 - 1);
    expect(WaWebVersionSchema.parse([2, 3000, 1043857760])).toEqual([2, 3000, 1043857760]);
    expect(formatWaVersion([2, 3000, 1043857760])).toBe('2.3000.1043857760');
  });
});
