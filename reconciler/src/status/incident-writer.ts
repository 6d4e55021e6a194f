/**
 * `incidents/{id}`: at most one open incident per (account, type). The open incident lives at a
 * fixed id, `<accountId|fleet>__<type>`; raising it again counts up, resolving closes it, and a
 * later recurrence first moves the closed one aside to `<id>__<firstSeenMillis>` (history kept).
 *
 * Incidents are rare, so each raise or resolve is its own fenced transaction, run in order per
 * incident and retried with backoff until it lands: none is lost while Firestore is unreachable.
 * Each transaction body depends only on its own arguments, so Firestore may re-run it safely.
 */
import { Collections, incidentId, type Severity } from '@wafleet/contract';
import { FieldValue, Timestamp, type DocumentReference, type Firestore, type Transaction } from 'firebase-admin/firestore';
import type { Logger } from 'pino';
import { StaleOwnerError, type LeaseManager } from '../lease/lease-manager.ts';
import { withTimeout } from '../util/deadline.ts';
import { KeyedRetryQueue } from '../util/keyed-retry-queue.ts';

const SEVERITY_RANK: Record<Severity, number> = { info: 0, warning: 1, critical: 2 };

type Op = { kind: 'raise'; severity: Severity; message: string; at: Timestamp } | { kind: 'resolve' };

export class IncidentWriter {
  private readonly queue: KeyedRetryQueue;

  constructor(
    private readonly db: Firestore,
    private readonly leases: LeaseManager,
    log: Logger,
    private readonly onWrite?: (ok: boolean) => void,
  ) {
    this.queue = new KeyedRetryQueue({ log, failureMessage: 'incident write failed; will retry' });
  }

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
    const write = async () => {
      // An attempt our deadline gave up on lives on in the SDK's own retries; once the network is
      // back it would count the incident a second time (or reopen a newer state): it must not commit.
      let abandoned = false;
      const live = () => {
        if (abandoned) throw new AbandonedAttemptError(ref.id);
      };
      try {
        await withTimeout(
          this.leases.fenced(fenceAccountId, (tx) => apply(tx, ref, scope, type, op, live)),
          10_000,
          `incident ${ref.id}`,
          () => (abandoned = true),
        );
        this.onWrite?.(true);
      } catch (err) {
        this.onWrite?.(false);
        throw err;
      }
    };
    // A lost lease ends it: the new owner observes and reports for itself.
    return this.queue.enqueue(id, write, { incident: id }, (err) => err instanceof StaleOwnerError).then(() => undefined);
  }

  /** Waits (bounded) for queued incident writes, then stops retrying. */
  drain(timeoutMs: number): Promise<boolean> {
    return this.queue.drain(timeoutMs);
  }
}

class AbandonedAttemptError extends Error {
  override readonly name = 'AbandonedAttemptError';
  constructor(id: string) {
    super(`incident ${id}: an abandoned attempt stopped before writing`);
  }
}

async function apply(tx: Transaction, ref: DocumentReference, scope: string | null, type: string, op: Op, live: () => void): Promise<void> {
  live();
  const snap = await tx.get(ref);
  live();
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
