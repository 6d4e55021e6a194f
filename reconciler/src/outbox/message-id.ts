/**
 * The WhatsApp message id of an outbox message, derived from its document id alone: every attempt
 * to send `outbox/{messageId}` (a retry, a resend after a crash, another reconciler taking over)
 * uses the same WhatsApp id, so a repeat can only ever be the same message again, which the
 * recipient's phone shows once, never a second, different one.
 *
 * Shape: "3EB0" and 32 upper-case hex digits, like the ids WhatsApp Web and Baileys generate.
 */
import { createHash } from 'node:crypto';

export function waMessageId(messageId: string): string {
  const digest = createHash('sha256').update(`wafleet-outbox:v1:${messageId}`).digest('hex');
  return `3EB0${digest.slice(0, 32).toUpperCase()}`;
}
