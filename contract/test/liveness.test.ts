import { describe, expect, it } from 'vitest';
import { heartbeatVerdict, instanceIncidentId, SILENT_GRACE_EXTRA_MS, statusLiveness } from '../src/index.ts';

const ts = (ms: number) => ({ toMillis: () => ms });
const NOW = 1_000_000_000;
const TTL = 120_000;
const beat = (ageMs: number, extra: Record<string, unknown> = {}) => ({ heartbeatAt: ts(NOW - ageMs), leaseTtlMs: TTL, stoppedAt: null, ...extra });
const owned = { owner: { instanceId: 'vm-1' } };

describe('statusLiveness', () => {
  it('is live while the owner heartbeats within its TTL plus the grace', () => {
    expect(statusLiveness(owned, beat(TTL + SILENT_GRACE_EXTRA_MS), NOW)).toEqual({ live: true, instanceId: 'vm-1' });
  });

  it('is not live once the heartbeat is older than TTL + grace, even before the watchdog marks it', () => {
    expect(statusLiveness(owned, beat(TTL + SILENT_GRACE_EXTRA_MS + 1), NOW)).toEqual({ live: false, reason: 'ReconcilerSilent', instanceId: 'vm-1', sinceMillis: NOW - TTL - SILENT_GRACE_EXTRA_MS - 1 });
  });

  it("believes the watchdog's mark over a fresh-looking heartbeat", () => {
    const marked = { ...owned, stale: { reason: 'ReconcilerSilent' as const, instanceId: 'vm-1', since: ts(NOW - 5) } };
    expect(statusLiveness(marked, beat(0), NOW)).toMatchObject({ live: false, reason: 'ReconcilerSilent', sinceMillis: NOW - 5 });
  });

  it('has no owner when the owner is null, unknown or stopped; no status is its own case', () => {
    expect(statusLiveness({ owner: null }, null, NOW)).toMatchObject({ live: false, reason: 'NoOwner', instanceId: null });
    expect(statusLiveness(owned, null, NOW)).toMatchObject({ live: false, reason: 'NoOwner', instanceId: 'vm-1' });
    expect(statusLiveness(owned, beat(0, { stoppedAt: ts(NOW - 10) }), NOW)).toMatchObject({ live: false, reason: 'NoOwner', sinceMillis: NOW - 10 });
    expect(statusLiveness(undefined, beat(0), NOW)).toMatchObject({ live: false, reason: 'NoStatus' });
  });

  it('counts a heartbeat whose server time has not resolved yet as just written', () => {
    expect(heartbeatVerdict({ heartbeatAt: null, leaseTtlMs: TTL }, NOW)).toBe('live');
  });
});

describe('instanceIncidentId', () => {
  it('escapes "_" and "." reversibly, so distinct instance ids never share an incident', () => {
    const ids = ['vm-1', 'vm_1', 'vm.1', 'vm__1', 'vm_u1', 'a.b_c'];
    const out = ids.map((id) => instanceIncidentId(id, 'ReconcilerSilent'));
    expect(new Set(out).size).toBe(ids.length);
    for (const id of out) expect(id).toMatch(/^instance-[A-Za-z0-9-]+(?:_[ud][A-Za-z0-9-]*)*__ReconcilerSilent$/);
  });
});
