/**
 * `incidents/{id}`: at most one open incident per (account, type). The open incident lives at a
 * fixed id, `<accountId|fleet>__<type>`; raising it again counts up, resolving closes it, and a
 * later recurrence first moves the closed one aside to `<id>__<firstSeenMillis>` (history kept).
 *
 * Incidents are rare, so each raise or resolve is its own fenced transaction, run in order per
 * incident and retried with backoff until it lands: none is lost while Firestore is unreachable.
 * Each transaction body depends only on its own arguments, so Firestore may re-run it safely.
 */
import { Collections, type Severity } from '@wafleet/contract';
import { FieldValue, Timestamp, type DocumentReference, type Firestore, type Transaction } from 'firebase-admin/firestore';
import type { Logger } from 'pino';
import { StaleOwnerError, type LeaseManager } from '../lease/lease-manager.ts';
import { backoffDelay } from '../util/backoff.ts';
import { sleep, withTimeout } from '../util/deadline.ts';

const SEVERITY_RANK: Record<Severity, number> = { info: 0, warning: 1, critical: 2 };

export function incidentId(accountId: string | null, type: string): string {
  return `${accountId ?? 'fleet'}__${type}`;
}

type Op = { kind: 'raise'; severity: Severity; message: string; at: Timestamp } | { kind: 'resolve' };

export class IncidentWriter {
  private readonly chains = new Map<string, Promise<void>>();
  private readonly stop = new AbortController();

  constructor(
    private readonly db: Firestore,
    private readonly leases: LeaseManager,
    private readonly log: Logger,
    private readonly onWrite?: (ok: boolean) => void,
  ) {}

  /**
   * Raises (or counts up) an incident. The write is fenced by `fenceAccountId`'s lease; fleet-wide
   * incidents (scope null) are written under the lease of the account that observed them.
   */
  raise(fenceAccountId: string, scope: string | null, type: string, severity: Severity, message: string): Promise<void> {
    return this.enqueue(fenceAccountId, scope, type, { kind: 'raise', severity, message, at: Timestamp.now() });
  }

  /** Closes the incident if it is open (reads first: no write when there is nothing to close). */
  resolve(fenceAccountId: string, scope: string | null, type: string): Promise<void> {
    return this.enqueue(fenceAccountId, scope, type, { kind: 'resolve' });
  }

  private enqueue(fenceAccountId: string, scope: string | null, type: string, op: Op): Promise<void> {
    const id = incidentId(scope, type);
    const ref = this.db.collection(Collections.incidents).doc(id);
    const next = (this.chains.get(id) ?? Promise.resolve()).then(() => this.runWithRetry(fenceAccountId, ref, scope, type, op));
    this.chains.set(id, next);
    void next.finally(() => {
      if (this.chains.get(id) === next) this.chains.delete(id);
    });
    return next;
  }

  private async runWithRetry(fenceAccountId: string, ref: DocumentReference, scope: string | null, type: string, op: Op): Promise<void> {
    for (let attempt = 0; !this.stop.signal.aborted; attempt++) {
      try {
        await withTimeout(this.leases.fenced(fenceAccountId, (tx) => apply(tx, ref, scope, type, op)), 10_000, `incident ${ref.id}`);
        this.onWrite?.(true);
        return;
      } catch (err) {
        this.onWrite?.(false);
        if (err instanceof StaleOwnerError) return; // the new owner observes and reports for itself
        const delay = backoffDelay(attempt, { baseMs: 500, maxMs: 30_000, jitter: 'full' });
        this.log.warn({ incident: ref.id, err: String(err), retryInMs: delay }, 'incident write failed; will retry');
        await sleep(delay, this.stop.signal).catch(() => undefined);
      }
    }
  }

  /** Waits (bounded) for queued incident writes, then stops retrying. */
  async drain(timeoutMs: number): Promise<boolean> {
    const all = Promise.all([...this.chains.values()]).then(() => true);
    const ok = await Promise.race([all, new Promise<boolean>((r) => setTimeout(() => r(false), timeoutMs).unref())]);
    this.stop.abort();
    return ok;
  }
}

async function apply(tx: Transaction, ref: DocumentReference, scope: string | null, type: string, op: Op): Promise<void> {
  const snap = await tx.get(ref);
  const cur = snap.exists ? snap.data()! : null;
  if (op.kind === 'resolve') {
    if (cur?.open) tx.update(ref, { open: false, resolvedAt: FieldValue.serverTimestamp() });
    return;
  }
  if (cur?.open) {
    const keep = SEVERITY_RANK[cur.severity as Severity] > SEVERITY_RANK[op.severity];
    tx.update(ref, { count: FieldValue.increment(1), lastSeenAt: op.at, message: op.message, severity: keep ? cur.severity : op.severity });
    return;
  }
  if (cur) tx.set(ref.parent.doc(`${ref.id}__${(cur.firstSeenAt as Timestamp).toMillis()}`), cur);
  tx.set(ref, {
    accountId: scope,
    type,
    severity: op.severity,
    message: op.message,
    open: true,
    count: 1,
    firstSeenAt: op.at,
    lastSeenAt: op.at,
    resolvedAt: null,
    acknowledgedBy: null,
    acknowledgedAt: null,
  });
}
