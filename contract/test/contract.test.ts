import { describe, expect, it } from 'vitest';
import {
  AccountDocSchema,
  AccountIdSchema,
  CreateAccountInput,
  formatZodError,
  maskPhone,
  needsCompositeIndex,
  normalizeE164,
  RecipientSchema,
  recipientToJid,
  roleAtLeast,
  SendMessageInput,
  SetUserRoleInput,
  UpdateAccountInput,
} from '../src/index.ts';

describe('phone numbers', () => {
  it.each([
    ['+14155550123', '+14155550123'],
    ['+1 (415) 555-0123', '+14155550123'],
    [' +44 7700 900123 ', '+447700900123'],
    ['+15550001001', '+15550001001'],
  ])('normalizes %s to %s', (input, out) => expect(normalizeE164(input)).toBe(out));

  it.each(['4155550123', '+1555', '+0123456789', '+1415555012345678', 'hello', '+1 415 555 0123 ext 5'])('refuses %s', (input) => {
    expect(normalizeE164(input)).toBeNull();
  });

  it('masks all but a few digits, for logs and status documents', () => {
    expect(maskPhone('+14155550123')).toBe('+1415•••••23');
    expect(maskPhone('14155550123:7@s.whatsapp.net')).toBe('+1415•••••23');
    expect(maskPhone(null)).toBeNull();
    expect(maskPhone('12345')).toBe('•••••');
  });

  it('accepts E.164 numbers and WhatsApp JIDs as recipients', () => {
    expect(RecipientSchema.parse('+1 415 555 0123')).toBe('+14155550123');
    expect(RecipientSchema.parse('15550001001@s.whatsapp.net')).toBe('15550001001@s.whatsapp.net');
    expect(RecipientSchema.parse('120363025246125888@g.us')).toBe('120363025246125888@g.us');
    expect(RecipientSchema.safeParse('bob@example.com').success).toBe(false);
    expect(recipientToJid('+14155550123')).toBe('14155550123@s.whatsapp.net');
  });
});

describe('account ids and documents', () => {
  it.each(['wa-01', '0', 'a_b-c', 'x'.repeat(40)])('accepts id %s', (id) => expect(AccountIdSchema.safeParse(id).success).toBe(true));
  it.each(['', 'WA-01', '-a', 'a b', 'a/b', 'x'.repeat(41), 'é'])('refuses id %j', (id) => expect(AccountIdSchema.safeParse(id).success).toBe(false));

  it('explains every problem of a malformed account document, field by field', () => {
    const r = AccountDocSchema.safeParse({ displayName: 'x'.repeat(500), desiredState: 'online', labels: 'nope' });
    expect(r.success).toBe(false);
    if (r.success) return;
    const text = formatZodError(r.error);
    expect(text).toContain('displayName: must be at most 80 characters');
    expect(text).toMatch(/desiredState: /);
    expect(text).toMatch(/labels: /);
  });

  it('requires a phone number for pairing-code linking', () => {
    const r = AccountDocSchema.safeParse({ displayName: 'A', desiredState: 'connected', linkMethod: 'pairingCode' });
    expect(r.success).toBe(false);
    if (!r.success) expect(formatZodError(r.error)).toBe('phoneNumber: is required when linkMethod is "pairingCode"');
  });

  it('tolerates fields added later (v1 documents may grow)', () => {
    expect(AccountDocSchema.safeParse({ displayName: 'A', desiredState: 'connected', futureField: 1 }).success).toBe(true);
  });
});

describe('callable inputs', () => {
  it('rejects unknown fields so typos fail loudly', () => {
    const r = CreateAccountInput.safeParse({ accountId: 'a', displayName: 'A', desiredstate: 'connected' });
    expect(r.success).toBe(false);
  });

  it('requires a phone number for pairing-code linking on create', () => {
    const r = CreateAccountInput.safeParse({ accountId: 'a', displayName: 'A', linkMethod: 'pairingCode' });
    expect(r.success).toBe(false);
    if (!r.success) expect(formatZodError(r.error)).toBe('phoneNumber: is required when linkMethod is "pairingCode"');
    expect(CreateAccountInput.safeParse({ accountId: 'a', displayName: 'A', linkMethod: 'pairingCode', phoneNumber: '+14155550123' }).success).toBe(true);
  });

  it('defaults desiredState to connected on create', () => {
    expect(CreateAccountInput.parse({ accountId: 'a', displayName: 'A' }).desiredState).toBe('connected');
  });

  it('refuses an update that changes nothing', () => {
    expect(UpdateAccountInput.safeParse({ accountId: 'a' }).success).toBe(false);
    expect(UpdateAccountInput.safeParse({ accountId: 'a', phoneNumber: null }).success).toBe(true);
  });

  it('bounds message text and idempotency keys', () => {
    const base = { accountId: 'a', to: '+14155550123' };
    expect(SendMessageInput.safeParse({ ...base, text: 'x'.repeat(4096) }).success).toBe(true);
    expect(SendMessageInput.safeParse({ ...base, text: 'x'.repeat(4097) }).success).toBe(false);
    expect(SendMessageInput.safeParse({ ...base, text: '\n\t ' }).success).toBe(false);
    expect(SendMessageInput.safeParse({ ...base, text: 'x', idempotencyKey: 'k'.repeat(129) }).success).toBe(false);
  });

  it('takes exactly one of uid and email for setUserRole', () => {
    expect(SetUserRoleInput.safeParse({ uid: 'u', role: 'viewer' }).success).toBe(true);
    expect(SetUserRoleInput.safeParse({ email: 'a@b.co', role: null }).success).toBe(true);
    expect(SetUserRoleInput.safeParse({ role: 'viewer' }).success).toBe(false);
    expect(SetUserRoleInput.safeParse({ uid: 'u', email: 'a@b.co', role: 'viewer' }).success).toBe(false);
  });
});

describe('roles', () => {
  it('orders admin > operator > viewer and grants nothing to unknown roles', () => {
    expect(roleAtLeast('admin', 'operator')).toBe(true);
    expect(roleAtLeast('operator', 'operator')).toBe(true);
    expect(roleAtLeast('viewer', 'operator')).toBe(false);
    expect(roleAtLeast('superuser', 'viewer')).toBe(false);
    expect(roleAtLeast(undefined, 'viewer')).toBe(false);
  });
});

describe('which queries need a composite index', () => {
  const q = (where: [string, '==' | '<'][], orderBy: [string, 'asc' | 'desc'][] = []) => ({
    collection: 'c',
    usedBy: 't',
    where: where.map(([field, op]) => ({ field, op })),
    orderBy: orderBy.map(([field, direction]) => ({ field, direction })),
  });
  it.each([
    [q([['a', '==']]), false],
    [q([['a', '=='], ['b', '==']]), false],
    [q([['a', '==']], [['a', 'desc']]), false],
    [q([['a', '==']], [['b', 'desc']]), true],
    [q([['a', '=='], ['b', '<']]), true],
  ])('%j → %s', (spec, expected) => expect(needsCompositeIndex(spec)).toBe(expected));
});
