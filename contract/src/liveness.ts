/**
 * Is an `accountStatus` document live, or the last word of a process that is gone? A document
 * outlives its writer, so freshness is part of the contract: one rule, used by the watchdog
 * (functions/src/watchdog.ts) to mark statuses and by apps and the console to judge them without
 * waiting for it (docs/data-model.md, "Is this status live?").
 */
import type { StaleReason } from './documents.ts';

/** A timestamp as either Firestore SDK returns it; the rule only needs its millis. */
type TimeLike = { toMillis(): number };

/**
 * How long past its lease TTL a reconciler's heartbeat may be old before its accounts count as not
 * live. The TTL is when another instance may take its leases over; the extra minute covers one
 * missed watchdog run and the clock skew between whoever judges and Firestore's server clock.
 */
export const SILENT_GRACE_EXTRA_MS = 60_000;

/** A heartbeat older than this (server time) means the instance has gone silent. */
export function silentAfterMs(leaseTtlMs: number, extraMs: number = SILENT_GRACE_EXTRA_MS): number {
  return leaseTtlMs + extraMs;
}

/** The parts of `reconcilers/{instanceId}` the rule reads. */
export interface HeartbeatView {
  heartbeatAt?: TimeLike | null;
  leaseTtlMs?: number;
  stoppedAt?: TimeLike | null;
}

/** The parts of `accountStatus/{accountId}` the rule reads. */
export interface StatusView {
  owner?: { instanceId: string } | null;
  stale?: { reason: StaleReason; instanceId: string | null; since: TimeLike } | null;
}

export type Liveness =
  | { live: true; instanceId: string }
  | {
      live: false;
      /** `NoStatus`: no reconciler has reported on the account yet. */
      reason: StaleReason | 'NoStatus';
      /** The instance the status names, if any. */
      instanceId: string | null;
      /** Since when it is not live, as far as known (the last heartbeat, or the watchdog's mark). */
      sinceMillis: number | null;
    };

/**
 * Judges a status. `heartbeat` is the owner's `reconcilers/{owner.instanceId}` document (null if
 * it does not exist); `nowMillis` should be the server's time (e.g. the `updateTime` of a document
 * the reader just wrote, or the device clock corrected by it), since `heartbeatAt` is.
 */
export function statusLiveness(status: StatusView | null | undefined, heartbeat: HeartbeatView | null | undefined, nowMillis: number, extraMs: number = SILENT_GRACE_EXTRA_MS): Liveness {
  if (!status) return { live: false, reason: 'NoStatus', instanceId: null, sinceMillis: null };
  if (status.stale) return { live: false, reason: status.stale.reason, instanceId: status.stale.instanceId, sinceMillis: status.stale.since.toMillis() };
  const instanceId = status.owner?.instanceId ?? null;
  if (instanceId === null || !heartbeat || heartbeat.stoppedAt) {
    return { live: false, reason: 'NoOwner', instanceId, sinceMillis: heartbeat?.stoppedAt?.toMillis() ?? null };
  }
  const verdict = heartbeatVerdict(heartbeat, nowMillis, extraMs);
  if (verdict === 'live') return { live: true, instanceId };
  return { live: false, reason: verdict === 'silent' ? 'ReconcilerSilent' : 'NoOwner', instanceId, sinceMillis: heartbeat.heartbeatAt?.toMillis() ?? null };
}

/** `silent`: it stopped beating without saying so; `stopped`: it shut down (its leases are free). */
export function heartbeatVerdict(heartbeat: HeartbeatView, nowMillis: number, extraMs: number = SILENT_GRACE_EXTRA_MS): 'live' | 'silent' | 'stopped' {
  if (heartbeat.stoppedAt) return 'stopped';
  const at = heartbeat.heartbeatAt?.toMillis();
  // A heartbeat without a time is one whose server timestamp has not resolved yet: it was just written.
  if (at === undefined) return 'live';
  const ttl = typeof heartbeat.leaseTtlMs === 'number' && heartbeat.leaseTtlMs > 0 ? heartbeat.leaseTtlMs : 0;
  return nowMillis - at > silentAfterMs(ttl, extraMs) ? 'silent' : 'live';
}

/** `incidents/{id}` of the open incident of a type, per account or fleet-wide (null). */
export function incidentId(accountId: string | null, type: string): string {
  return `${accountId ?? 'fleet'}__${type}`;
}

/**
 * `incidents/{id}` of an incident about one reconciler instance. Instance ids may hold "." and
 * "_", which incident ids keep for their "__" separators: both are escaped, reversibly.
 */
export function instanceIncidentId(instanceId: string, type: string): string {
  return `instance-${instanceId.replace(/_/g, '_u').replace(/\./g, '_d')}__${type}`;
}
