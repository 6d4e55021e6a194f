import { Collections } from '@wafleet/contract';
import { FieldValue, type Transaction } from 'firebase-admin/firestore';
import type { Caller } from './callable.ts';
import { db } from './firebase.ts';

export interface AuditEntry {
  action: string;
  target: { collection: string; id: string } | null;
  /** Already redacted by the caller: masked phones, lengths instead of texts. */
  details?: Record<string, unknown>;
}

/** Records the entry in the same transaction as the change, so no change goes unaudited. */
export function auditInTransaction(tx: Transaction, caller: Caller, entry: AuditEntry): void {
  tx.create(db().collection(Collections.auditLog).doc(), toDoc(caller, entry));
}

/** For changes outside Firestore (Auth claims), written right after the change. */
export async function audit(caller: Caller, entry: AuditEntry): Promise<void> {
  await db().collection(Collections.auditLog).add(toDoc(caller, entry));
}

function toDoc(caller: Caller, entry: AuditEntry) {
  return {
    action: entry.action,
    actorUid: caller.uid,
    actorRole: caller.role,
    target: entry.target,
    details: entry.details ?? {},
    at: FieldValue.serverTimestamp(),
  };
}
