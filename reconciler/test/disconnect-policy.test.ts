import { describe, expect, it } from 'vitest';
import { decideOnDisconnect, FailureWindow } from '../src/session/disconnect-policy.ts';

describe('disconnect policy', () => {
  const linked = { linked: true };
  it.each([
    [515, 'connecting', 'now', false],
    [408, 'reconnecting', 'backoff', false],
    [428, 'reconnecting', 'backoff', false],
    [500, 'reconnecting', 'backoff', false],
    [503, 'reconnecting', 'backoff', false],
    [401, 'loggedOut', 'never', true],
    [402, 'banned', 'never', false],
    [403, 'banned', 'never', false],
    [406, 'banned', 'never', false],
    [411, 'needsLink', 'never', false],
    [405, 'error', 'backoff', false],
    [440, 'reconnecting', 'backoff', false],
    [null, 'reconnecting', 'backoff', false],
  ] as const)('code %s → phase %s, retry %s, wipe %s', (code, phase, retry, wipe) => {
    const d = decideOnDisconnect(code, linked);
    expect(d.phase).toBe(phase);
    expect(d.retry).toBe(retry);
    expect(d.wipeCredentials).toBe(wipe);
    expect(d.reason).toMatch(/^[A-Z][A-Za-z0-9]*$/);
  });

  it('never reconnects blindly after 440: ownership is re-checked first', () => {
    expect(decideOnDisconnect(440, linked)).toMatchObject({ verifyOwnership: true, incident: { type: 'ConnectionReplaced' } });
  });

  it('raises a critical incident for bans and a fleet-wide one for an outdated client', () => {
    expect(decideOnDisconnect(403, linked).incident).toEqual({ type: 'Banned', severity: 'critical' });
    expect(decideOnDisconnect(405, linked).incident).toEqual({ type: 'ClientOutdated', severity: 'critical', fleetWide: true });
  });

  it('treats a 408 before linking as an expired QR window, waiting for a new request', () => {
    expect(decideOnDisconnect(408, { linked: false })).toMatchObject({ phase: 'needsLink', reason: 'QrExpired', retry: 'never' });
  });
});

describe('failure window (circuit breaker)', () => {
  it('opens on the fourth failure within an hour and forgets failures older than the window', () => {
    const w = new FailureWindow(3_600_000, 3);
    expect(w.record(0)).toBe(false);
    expect(w.record(1_000)).toBe(false);
    expect(w.record(2_000)).toBe(false);
    expect(w.record(3_000)).toBe(true);
    expect(w.count(3_600_500)).toBe(3);
    expect(w.record(3_602_500)).toBe(false); // 0, 1000 and 2000 have left the window
  });
});
