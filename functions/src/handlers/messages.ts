import { createHash } from 'node:crypto';
import { Collections, maskPhone, type SendMessageResult } from '@wafleet/contract';
import { FieldValue } from 'firebase-admin/firestore';
import { HttpsError } from 'firebase-functions/v2/https';
import { auditInTransaction } from '../audit.ts';
import { defineCallable } from '../callable.ts';
import { db } from '../firebase.ts';

/**
 * An idempotency key maps to one fixed document id, so two calls with the same key race on
 * `create` of the same document and only one message can ever exist. Keys are scoped to the
 * account: the same key on another account is another message.
 */
export function idempotentMessageId(accountId: string, key: string): string {
  const digest = createHash('sha256').update(`${accountId}\n${key}`).digest('base64url');
  return `k-${digest.slice(0, 40)}`;
}

/** What defines a send request; the caller does not (any operator may retry another's send). */
const SAME_REQUEST_FIELDS = ['accountId', 'idempotencyKey', 'to', 'text'] as const;

export const sendMessage = defineCallable('sendMessage', async (input, caller): Promise<SendMessageResult> => {
  const outbox = db().collection(Collections.outbox);
  const ref = input.idempotencyKey ? outbox.doc(idempotentMessageId(input.accountId, input.idempotencyKey)) : outbox.doc();
  return db().runTransaction(async (tx) => {
    const account = await tx.get(db().collection(Collections.accounts).doc(input.accountId));
    const existing = input.idempotencyKey ? await tx.get(ref) : null;
    if (existing?.exists) {
      // The id derives from account and key, but a document can sit there that this callable did
      // not write (a direct or console write, a hash collision): only the very same request is a
      // duplicate. already-exists, not failed-precondition: the key is taken for good, so no
      // change of state makes a retry succeed; the client needs a new key.
      const differs = SAME_REQUEST_FIELDS.filter((f) => existing.get(f) !== input[f]);
      if (differs.length) {
        throw new HttpsError('already-exists', `idempotencyKey was already used for a different request (${differs.join(', ')} differ)`, {
          field: 'idempotencyKey',
          differs,
        });
      }
      return { messageId: ref.id, status: String(existing.get('status')), duplicate: true };
    }
    if (!account.exists) throw new HttpsError('not-found', `account "${input.accountId}" does not exist`);
    if (account.get('deleteRequestedAt')) throw new HttpsError('failed-precondition', `account "${input.accountId}" is being deleted`);
    if (account.get('desiredState') === 'loggedOut') {
      throw new HttpsError('failed-precondition', `account "${input.accountId}" has desiredState "loggedOut"; its messages could never be sent`);
    }
    tx.create(ref, {
      accountId: input.accountId,
      to: input.to,
      text: input.text,
      createdAt: FieldValue.serverTimestamp(),
      createdBy: caller.uid,
      ...(input.idempotencyKey ? { idempotencyKey: input.idempotencyKey } : {}),
      status: 'queued',
      attemptCount: 0,
      nextAttemptAt: null,
    });
    auditInTransaction(tx, caller, {
      action: 'sendMessage',
      target: { collection: Collections.outbox, id: ref.id },
      details: { accountId: input.accountId, to: input.to.includes('@') ? input.to.replace(/^[^@]+/, '•••') : maskPhone(input.to), textLength: input.text.length },
    });
    return { messageId: ref.id, status: 'queued', duplicate: false };
  });
});

export const cancelMessage = defineCallable('cancelMessage', async (input, caller) => {
  const ref = db().collection(Collections.outbox).doc(input.messageId);
  await db().runTransaction(async (tx) => {
    const snap = await tx.get(ref);
    if (!snap.exists) throw new HttpsError('not-found', `message "${input.messageId}" does not exist`);
    const status = snap.get('status');
    if (status !== 'queued') {
      throw new HttpsError('failed-precondition', `message "${input.messageId}" is "${status}"; only queued messages can be cancelled`);
    }
    tx.update(ref, { status: 'cancelled', cancelledAt: FieldValue.serverTimestamp(), cancelledBy: caller.uid });
    auditInTransaction(tx, caller, { action: 'cancelMessage', target: { collection: Collections.outbox, id: input.messageId } });
  });
  return { messageId: input.messageId, status: 'cancelled' };
});
