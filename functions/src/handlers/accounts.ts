import { Collections, type AccountDoc } from '@wafleet/contract';
import { FieldValue, type DocumentReference, type Transaction } from 'firebase-admin/firestore';
import { defineInt } from 'firebase-functions/params';
import { HttpsError } from 'firebase-functions/v2/https';
import { auditInTransaction } from '../audit.ts';
import { defineCallable } from '../callable.ts';
import { db } from '../firebase.ts';

/** The fleet size one VM is sized for; raise it deliberately (functions/.env). */
export const MAX_ACCOUNTS = defineInt('MAX_ACCOUNTS', { default: 30, description: 'Most accounts the fleet may hold.' });

const accountRef = (id: string) => db().collection(Collections.accounts).doc(id);

/** Reads an account inside a transaction; not-found and deletion-in-progress are caller errors. */
async function getLiveAccount(tx: Transaction, ref: DocumentReference): Promise<Partial<AccountDoc>> {
  const snap = await tx.get(ref);
  if (!snap.exists) throw new HttpsError('not-found', `account "${ref.id}" does not exist`);
  const data = snap.data() as Partial<AccountDoc>;
  if (data.deleteRequestedAt) {
    throw new HttpsError('failed-precondition', `account "${ref.id}" is being deleted`);
  }
  return data;
}

export const createAccount = defineCallable('createAccount', async (input, caller) => {
  const ref = accountRef(input.accountId);
  const limit = MAX_ACCOUNTS.value();
  await db().runTransaction(async (tx) => {
    const existing = await tx.get(ref);
    if (existing.exists) {
      const deleting = Boolean(existing.get('deleteRequestedAt'));
      throw new HttpsError(
        'already-exists',
        deleting ? `account "${input.accountId}" is still being deleted; try again when it is gone` : `account "${input.accountId}" already exists`,
      );
    }
    // Reading the ids inside the transaction makes the check serializable with concurrent creates.
    const all = await tx.get(db().collection(Collections.accounts).select());
    if (all.size >= limit) {
      throw new HttpsError('resource-exhausted', `the fleet already has ${all.size} accounts (MAX_ACCOUNTS is ${limit})`);
    }
    const now = FieldValue.serverTimestamp();
    tx.create(ref, {
      displayName: input.displayName,
      desiredState: input.desiredState,
      ...(input.phoneNumber ? { phoneNumber: input.phoneNumber } : {}),
      ...(input.linkMethod ? { linkMethod: input.linkMethod } : {}),
      ...(input.labels ? { labels: input.labels } : {}),
      createdAt: now,
      updatedAt: now,
      updatedBy: caller.uid,
    });
    auditInTransaction(tx, caller, {
      action: 'createAccount',
      target: { collection: Collections.accounts, id: input.accountId },
      details: { desiredState: input.desiredState, linkMethod: input.linkMethod ?? 'qr', hasPhoneNumber: Boolean(input.phoneNumber) },
    });
  });
  return { accountId: input.accountId };
});

export const updateAccount = defineCallable('updateAccount', async (input, caller) => {
  const ref = accountRef(input.accountId);
  await db().runTransaction(async (tx) => {
    const current = await getLiveAccount(tx, ref);
    const phoneAfter = input.phoneNumber === undefined ? current.phoneNumber : input.phoneNumber;
    const methodAfter = input.linkMethod ?? current.linkMethod;
    if (methodAfter === 'pairingCode' && !phoneAfter) {
      throw new HttpsError('invalid-argument', 'phoneNumber: is required when linkMethod is "pairingCode"', { field: 'phoneNumber' });
    }
    const patch: Record<string, unknown> = { updatedAt: FieldValue.serverTimestamp(), updatedBy: caller.uid };
    if (input.displayName !== undefined) patch.displayName = input.displayName;
    if (input.desiredState !== undefined) patch.desiredState = input.desiredState;
    if (input.linkMethod !== undefined) patch.linkMethod = input.linkMethod;
    if (input.phoneNumber !== undefined) patch.phoneNumber = input.phoneNumber ?? FieldValue.delete();
    // Labels are replaced whole: a merge could never remove one.
    if (input.labels !== undefined) patch.labels = input.labels ?? FieldValue.delete();
    tx.update(ref, patch);
    auditInTransaction(tx, caller, {
      action: 'updateAccount',
      target: { collection: Collections.accounts, id: input.accountId },
      details: { fields: Object.keys(input).filter((k) => k !== 'accountId'), desiredState: input.desiredState ?? null },
    });
  });
  return { accountId: input.accountId };
});

export const requestQr = defineCallable('requestQr', async (input, caller) => {
  const ref = accountRef(input.accountId);
  await db().runTransaction(async (tx) => {
    const account = await getLiveAccount(tx, ref);
    if (account.desiredState !== 'connected') {
      throw new HttpsError('failed-precondition', `account "${input.accountId}" has desiredState "${account.desiredState}"; set it to "connected" first`);
    }
    const status = await tx.get(db().collection(Collections.accountStatus).doc(input.accountId));
    if (status.get('phase') === 'connected') {
      throw new HttpsError('failed-precondition', `account "${input.accountId}" is already linked and connected; use relinkAccount to link another phone`);
    }
    tx.update(ref, { qrRequestedAt: FieldValue.serverTimestamp(), updatedAt: FieldValue.serverTimestamp(), updatedBy: caller.uid });
    auditInTransaction(tx, caller, { action: 'requestQr', target: { collection: Collections.accounts, id: input.accountId } });
  });
  return { accountId: input.accountId };
});

export const relinkAccount = defineCallable('relinkAccount', async (input, caller) => {
  const ref = accountRef(input.accountId);
  await db().runTransaction(async (tx) => {
    await getLiveAccount(tx, ref);
    tx.update(ref, { relinkRequestedAt: FieldValue.serverTimestamp(), updatedAt: FieldValue.serverTimestamp(), updatedBy: caller.uid });
    auditInTransaction(tx, caller, { action: 'relinkAccount', target: { collection: Collections.accounts, id: input.accountId } });
  });
  return { accountId: input.accountId };
});

export const deleteAccount = defineCallable('deleteAccount', async (input, caller) => {
  const ref = accountRef(input.accountId);
  return db().runTransaction(async (tx) => {
    const snap = await tx.get(ref);
    if (!snap.exists) throw new HttpsError('not-found', `account "${input.accountId}" does not exist`);
    // Asking twice is not an error: the reconciler is already finishing the deletion.
    if (snap.get('deleteRequestedAt')) return { accountId: input.accountId, alreadyRequested: true };
    tx.update(ref, { deleteRequestedAt: FieldValue.serverTimestamp(), updatedAt: FieldValue.serverTimestamp(), updatedBy: caller.uid });
    auditInTransaction(tx, caller, { action: 'deleteAccount', target: { collection: Collections.accounts, id: input.accountId } });
    return { accountId: input.accountId, alreadyRequested: false };
  });
});
