import { Collections } from '@wafleet/contract';
import { FieldValue, type Transaction } from 'firebase-admin/firestore';
import type { Caller } from './current-caller.ts';
import { db } from './firebase.ts';

export interface AuditEntry {
  action: string;
  target: { collection: string; id: string } | null;
  /** Already redacted by the caller: masked phones, lengths instead of texts. */
  details?: Record<string, unknown>;
}

/** Records the entry in the same transaction as the change, so no change goes unaudited. */
export function auditInTransaction(tx: Transaction, caller: Caller, entry: AuditEntry): void {
  tx.create(db().collection(Collections.auditLog).doc(), auditDoc(caller, entry));
}

/**
 * The stored form of an entry. Changes outside Firestore (Auth claims, see role-change.ts) cannot
 * share a transaction with their entry, so they write it first and settle it afterwards.
 */
export function auditDoc(caller: Caller, entry: AuditEntry) {
  return {
    action: entry.action,
    actorUid: caller.uid,
    actorRole: caller.role,
    target: entry.target,
    details: entry.details ?? {},
    at: FieldValue.serverTimestamp(),
  };
}
