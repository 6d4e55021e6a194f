import { Collections } from '@wafleet/contract';
import { FieldValue } from 'firebase-admin/firestore';
import { HttpsError } from 'firebase-functions/v2/https';
import { auditInTransaction } from '../audit.ts';
import { defineCallable } from '../callable.ts';
import { db } from '../firebase.ts';

export const acknowledgeIncident = defineCallable('acknowledgeIncident', async (input, caller) => {
  const ref = db().collection(Collections.incidents).doc(input.incidentId);
  return db().runTransaction(async (tx) => {
    const snap = await tx.get(ref);
    if (!snap.exists) throw new HttpsError('not-found', `incident "${input.incidentId}" does not exist`);
    // The first acknowledgement stands; repeating it is harmless.
    const by = snap.get('acknowledgedBy');
    if (by) return { incidentId: input.incidentId, acknowledgedBy: String(by), alreadyAcknowledged: true };
    tx.update(ref, { acknowledgedBy: caller.uid, acknowledgedAt: FieldValue.serverTimestamp() });
    auditInTransaction(tx, caller, { action: 'acknowledgeIncident', target: { collection: Collections.incidents, id: input.incidentId } });
    return { incidentId: input.incidentId, acknowledgedBy: caller.uid, alreadyAcknowledged: false };
  });
});
