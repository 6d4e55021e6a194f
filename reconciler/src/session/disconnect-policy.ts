/**
 * What to do when a Baileys socket closes, by DisconnectReason status code. Pure: the session
 * driver applies the decision (wipe, incident, schedule) and the work queue paces retries.
 * Field notes: reconnect loops on 440 and bursts of reconnects get accounts banned, so only 515
 * reconnects at once; everything else waits, and some codes never reconnect by themselves.
 */
import type { Phase, Severity } from '@wafleet/contract';

export type RetryMode = 'now' | 'backoff' | 'never';

export interface IncidentSpec {
  type: string;
  severity: Severity;
  /** Fleet-wide incidents have no account. */
  fleetWide?: boolean;
}

export interface DisconnectDecision {
  phase: Phase;
  reason: string;
  message: string;
  retry: RetryMode;
  /** Delete local credentials and the backup: the device is no longer linked. */
  wipeCredentials: boolean;
  /** Re-prove lease ownership before reconnecting (another owner may be using the device). */
  verifyOwnership: boolean;
  incident: IncidentSpec | null;
}

export interface DisconnectContext {
  /** Whether the device had completed linking (creds.registered / me set). */
  linked: boolean;
  /** The close message Baileys gave, for people. */
  detail?: string;
}

export function decideOnDisconnect(code: number | null, ctx: DisconnectContext): DisconnectDecision {
  const base = { wipeCredentials: false, verifyOwnership: false, incident: null };
  const detail = ctx.detail ? ` (${ctx.detail})` : '';
  if (!ctx.linked && code === 408) {
    return { ...base, phase: 'needsLink', reason: 'QrExpired', message: 'The QR code expired unscanned. Request a new one to link this account.', retry: 'never' };
  }
  switch (code) {
    case 515:
      return { ...base, phase: 'connecting', reason: 'RestartRequired', message: 'WhatsApp asked for a restart (normal right after linking).', retry: 'now' };
    case 401:
      return {
        ...base,
        phase: 'loggedOut',
        reason: 'LoggedOut',
        message: `The device was logged out or removed from the phone${detail}. Link it again to resume.`,
        retry: 'never',
        wipeCredentials: true,
        incident: { type: 'LoggedOut', severity: 'warning' },
      };
    case 402:
    case 403:
    case 406:
      return {
        ...base,
        phase: 'banned',
        reason: 'Banned',
        message: `WhatsApp refused this account (code ${code})${detail}. It may be banned or restricted; check the phone.`,
        retry: 'never',
        incident: { type: 'Banned', severity: 'critical' },
      };
    case 405:
      return {
        ...base,
        phase: 'error',
        reason: 'ClientOutdated',
        // Fleet-wide: retried with backoff, and at once when fleetConfig/whatsapp changes the version.
        message: 'WhatsApp refused the client version (405); every account is affected. Set a newer WhatsApp Web version in fleetConfig/whatsapp, or upgrade Baileys (docs/deploy.md).',
        retry: 'backoff',
        incident: { type: 'ClientOutdated', severity: 'critical', fleetWide: true },
      };
    case 411:
      return {
        ...base,
        phase: 'needsLink',
        reason: 'MultideviceMismatch',
        message: 'WhatsApp reports a multi-device mismatch (411). Relink the account.',
        retry: 'never',
        incident: { type: 'NeedsRelink', severity: 'warning' },
      };
    case 440:
      return {
        ...base,
        phase: 'reconnecting',
        reason: 'ConnectionReplaced',
        message: 'Another connection took over this device (440). Reconnecting only after re-checking ownership.',
        retry: 'backoff',
        verifyOwnership: true,
        incident: { type: 'ConnectionReplaced', severity: 'warning' },
      };
    case 500:
      return { ...base, phase: 'reconnecting', reason: 'BadSession', message: `The session failed on WhatsApp's side${detail}; retrying with backoff.`, retry: 'backoff' };
    case 503:
      return { ...base, phase: 'reconnecting', reason: 'ServiceUnavailable', message: 'WhatsApp is unavailable (503); retrying with backoff.', retry: 'backoff' };
    case 408:
      return { ...base, phase: 'reconnecting', reason: 'ConnectionLost', message: `The connection timed out${detail}; retrying with backoff.`, retry: 'backoff' };
    case 428:
      return { ...base, phase: 'reconnecting', reason: 'ConnectionClosed', message: `The connection closed${detail}; retrying with backoff.`, retry: 'backoff' };
    default:
      return { ...base, phase: 'reconnecting', reason: 'ConnectionFailed', message: `The connection ended (code ${code ?? 'none'})${detail}; retrying with backoff.`, retry: 'backoff' };
  }
}

/**
 * Counts failures per account in a sliding hour: more than `threshold` opens the
 * "FlappingConnection" incident (the circuit breaker), which stays open until the account has
 * been connected for a stable period.
 */
export class FailureWindow {
  private readonly times: number[] = [];

  constructor(
    private readonly windowMs = 3_600_000,
    private readonly threshold = 3,
  ) {}

  /** Records a failure; true when the count in the window now exceeds the threshold. */
  record(at: number): boolean {
    this.times.push(at);
    while (this.times.length && this.times[0]! <= at - this.windowMs) this.times.shift();
    return this.times.length > this.threshold;
  }

  count(at: number): number {
    return this.times.filter((t) => t > at - this.windowMs).length;
  }

  reset(): void {
    this.times.length = 0;
  }
}
