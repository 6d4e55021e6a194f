/**
 * AuditLogDocSchema against the entries functions/src/audit.ts and role-change.ts write: the
 * same-transaction entries of every callable (and entries written before v1 added `status`),
 * and setUserRole's entries in each state they can be left in.
 */
import { describe, expect, it } from 'vitest';
import { AUDIT_STATUSES, AuditLogDocSchema, Collections } from '../src/index.ts';

const ts = (ms: number) => ({ seconds: Math.floor(ms / 1000), nanoseconds: 0, toMillis: () => ms });
const at = ts(1_700_000_000_000);
const settledAt = ts(1_700_000_001_000);

/** What auditDoc() returns. */
const base = {
  action: 'setUserRole',
  actorUid: 'uid-admin',
  actorRole: 'admin',
  target: { collection: 'users', id: 'uid-target' },
  details: { role: 'viewer', previousRole: 'operator' },
  at,
};

describe('auditLog documents', () => {
  it('names the locks collection', () => {
    expect(Collections.locks).toBe('locks');
  });

  it('accepts entries without the v1 fields (other callables, older entries)', () => {
    const entry = { ...base, action: 'createAccount', target: { collection: 'accounts', id: 'wa-01' }, details: {} };
    expect(AuditLogDocSchema.safeParse(entry).success).toBe(true);
    expect(AuditLogDocSchema.safeParse({ ...entry, status: null, settledAt: null, error: null }).success).toBe(true);
  });

  it.each([
    ['requested, before the claim change', { status: 'requested' }],
    ['requested, outcome unknown', { status: 'requested', error: 'outcome-unknown', settledAt }],
    [
      'applied, with tokens revoked',
      { status: 'applied', settledAt, details: { role: 'viewer', previousRole: 'operator', refreshTokensRevoked: true } },
    ],
    ['failed', { status: 'failed', error: 'permission-denied', settledAt }],
  ])('accepts a setUserRole entry: %s', (_, fields) => {
    expect(AuditLogDocSchema.safeParse({ ...base, ...fields }).success).toBe(true);
  });

  it('knows exactly the statuses role-change.ts writes', () => {
    expect(AUDIT_STATUSES).toEqual(['requested', 'applied', 'failed']);
  });

  it.each([
    ['an unknown status', { status: 'done' }],
    ['a settledAt that is not a timestamp', { status: 'applied', settledAt: '2024-01-01' }],
    ['an empty error', { status: 'failed', error: '' }],
    ['an error over 64 characters', { status: 'failed', error: 'x'.repeat(65) }],
  ])('refuses %s', (_, fields) => {
    expect(AuditLogDocSchema.safeParse({ ...base, ...fields }).success).toBe(false);
  });
});
