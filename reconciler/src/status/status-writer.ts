/**
 * `accountStatus/{accountId}`: written on transitions only. The supervisor reports every state it
 * passes through; this writer turns them into documents, keeping `since` at the last phase change,
 * and skips reports that change nothing a person would see.
 */
import { Collections, type LastDisconnectSchema, type Phase } from '@wafleet/contract';
import { FieldValue, Timestamp, type Firestore } from 'firebase-admin/firestore';
import type { z } from 'zod';
import type { CoalescingWriter } from './coalescing-writer.ts';

export interface StatusReport {
  phase: Phase;
  reason: string;
  message: string;
  observedSpecTime: Timestamp | null;
  linkedPhoneMasked?: string | null;
  lastConnectedAt?: Timestamp | null;
  lastDisconnect?: { code: number | null; reason: string; at: Timestamp } | null;
  reconnectAttempt?: number;
  nextRetryAt?: Timestamp | null;
  /** The newest qrRequestedAt/relinkRequestedAt acted on (millis), so a restart does not act again. */
  handled?: { qrRequestedAt: number; relinkRequestedAt: number };
}

type Written = Required<StatusReport> & { since: Timestamp };

const millisOrNull = (ms: number) => (ms > 0 ? Timestamp.fromMillis(ms) : null);
type LastDisconnect = z.infer<typeof LastDisconnectSchema>;

export class StatusWriter {
  private readonly last = new Map<string, Written>();

  constructor(
    private readonly db: Firestore,
    private readonly writer: CoalescingWriter,
  ) {}

  /** The last status this process wrote (or is writing) for the account. */
  current(accountId: string): Written | undefined {
    return this.last.get(accountId);
  }

  report(accountId: string, r: StatusReport): Promise<void> | null {
    const prev = this.last.get(accountId);
    const next: Written = {
      phase: r.phase,
      reason: r.reason,
      message: r.message,
      observedSpecTime: r.observedSpecTime,
      linkedPhoneMasked: r.linkedPhoneMasked !== undefined ? r.linkedPhoneMasked : (prev?.linkedPhoneMasked ?? null),
      lastConnectedAt: r.lastConnectedAt !== undefined ? r.lastConnectedAt : (prev?.lastConnectedAt ?? null),
      lastDisconnect: r.lastDisconnect !== undefined ? r.lastDisconnect : (prev?.lastDisconnect ?? null),
      reconnectAttempt: r.reconnectAttempt ?? 0,
      nextRetryAt: r.nextRetryAt ?? null,
      handled: r.handled ?? prev?.handled ?? { qrRequestedAt: 0, relinkRequestedAt: 0 },
      since: prev && prev.phase === r.phase ? prev.since : Timestamp.now(),
    };
    if (prev && sameVisible(prev, next)) return null;
    this.last.set(accountId, next);
    return this.write(accountId, next);
  }

  /**
   * Writes the current status again, unchanged but for `updatedAt`: a full set, so it also removes
   * the watchdog's `stale` mark (the reconciler never writes one). Null when nothing was reported.
   */
  rewrite(accountId: string): Promise<void> | null {
    const current = this.last.get(accountId);
    return current ? this.write(accountId, current) : null;
  }

  private write(accountId: string, next: Written): Promise<void> {
    return this.writer.submit(accountId, this.db.collection(Collections.accountStatus).doc(accountId), {
      kind: 'set',
      build: (owner) => {
        const { handled, ...doc } = next;
        return {
          ...doc,
          handledQrRequestedAt: millisOrNull(handled.qrRequestedAt),
          handledRelinkRequestedAt: millisOrNull(handled.relinkRequestedAt),
          owner,
          updatedAt: FieldValue.serverTimestamp(),
        };
      },
    });
  }

  /** Removes the status document (account deleted). */
  remove(accountId: string): Promise<void> {
    this.last.delete(accountId);
    return this.writer.submit(accountId, this.db.collection(Collections.accountStatus).doc(accountId), { kind: 'delete' });
  }

  forget(accountId: string): void {
    this.last.delete(accountId);
  }
}

function sameVisible(a: Written, b: Written): boolean {
  return (
    a.phase === b.phase &&
    a.reason === b.reason &&
    a.message === b.message &&
    sameTime(a.observedSpecTime, b.observedSpecTime) &&
    a.linkedPhoneMasked === b.linkedPhoneMasked &&
    sameTime(a.lastConnectedAt, b.lastConnectedAt) &&
    sameDisconnect(a.lastDisconnect, b.lastDisconnect) &&
    a.reconnectAttempt === b.reconnectAttempt &&
    sameTime(a.nextRetryAt, b.nextRetryAt) &&
    a.handled.qrRequestedAt === b.handled.qrRequestedAt &&
    a.handled.relinkRequestedAt === b.handled.relinkRequestedAt
  );
}

function sameTime(a: Timestamp | null, b: Timestamp | null): boolean {
  return a === b || (a !== null && b !== null && a.isEqual(b));
}

function sameDisconnect(a: LastDisconnect | null, b: LastDisconnect | null): boolean {
  return a === b || (a !== null && b !== null && a.code === b.code && a.reason === b.reason && sameTime(a.at as Timestamp, b.at as Timestamp));
}
