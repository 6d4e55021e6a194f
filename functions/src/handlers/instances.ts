import { Collections } from '@wafleet/contract';
import { FieldValue } from 'firebase-admin/firestore';
import { HttpsError } from 'firebase-functions/v2/https';
import { auditInTransaction } from '../audit.ts';
import { defineCallable } from '../callable.ts';
import { db } from '../firebase.ts';

/**
 * Asks one reconciler to hand every account it drives over to the others (`drain: true`) or to
 * stop doing so (`drain: false`). The instance acts on `drainRequestedAt` of its own heartbeat
 * document and reports progress in its `drain` field; this only records the request.
 */
export const drainInstance = defineCallable('drainInstance', async (input, caller) => {
  const ref = db().collection(Collections.reconcilers).doc(input.instanceId);
  return db().runTransaction(async (tx) => {
    const snap = await tx.get(ref);
    // A typo must not look like a drain that silently never starts.
    if (!snap.exists) throw new HttpsError('not-found', `reconciler "${input.instanceId}" has no heartbeat document (reconcilers/${input.instanceId}): check the instance id`);
    const already = snap.get('drainRequestedAt') != null;
    if (input.drain === already) return { instanceId: input.instanceId, draining: already, changed: false };
    if (input.drain && snap.get('stoppedAt') != null) {
      throw new HttpsError('failed-precondition', `reconciler "${input.instanceId}" is stopped; it has no accounts to hand over`);
    }
    tx.update(ref, { drainRequestedAt: input.drain ? FieldValue.serverTimestamp() : null });
    auditInTransaction(tx, caller, { action: 'drainInstance', target: { collection: Collections.reconcilers, id: input.instanceId }, details: { drain: input.drain } });
    return { instanceId: input.instanceId, draining: input.drain, changed: true };
  });
});
