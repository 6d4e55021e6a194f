/**
 * What a failed send attempt means: retry later (the outcome is unknown or the cause passes) or
 * give up at once (WhatsApp said no, or the message can never be delivered). Codes are the
 * `error.code` of outbox documents (docs/data-model.md).
 */
import { TimeoutError } from '../util/deadline.ts';

export interface SendFailure {
  code: string;
  message: string;
  retryable: boolean;
}

export class SendFailureError extends Error {
  constructor(readonly failure: SendFailure) {
    super(failure.message);
    this.name = 'SendFailureError';
  }
}

export const failures = {
  ackTimeout: (ms: number): SendFailure => ({
    code: 'AckTimeout',
    message: `WhatsApp did not acknowledge the message within ${ms} ms; it is retried with the same message id.`,
    retryable: true,
  }),
  connectionLost: (): SendFailure => ({
    code: 'ConnectionLost',
    message: 'The connection closed before WhatsApp acknowledged the message; it is retried with the same message id.',
    retryable: true,
  }),
  rejected: (errorCode: string): SendFailure => ({
    code: 'RejectedByWhatsApp',
    message: `WhatsApp rejected the message (error ${errorCode}).`,
    retryable: false,
  }),
  notOnWhatsApp: (): SendFailure => ({
    code: 'RecipientNotOnWhatsApp',
    message: 'The recipient has no WhatsApp account.',
    retryable: false,
  }),
  accountBanned: (): SendFailure => ({
    code: 'AccountBanned',
    message: 'The sending account is banned by WhatsApp; the message will not be sent.',
    retryable: false,
  }),
  accountDeleted: (): SendFailure => ({
    code: 'AccountDeleted',
    message: 'The sending account was deleted; the message will not be sent.',
    retryable: false,
  }),
  invalidMessage: (detail: string): SendFailure => ({
    code: 'InvalidMessage',
    message: `The outbox document is not a valid message: ${detail}`.slice(0, 1000),
    retryable: false,
  }),
  retriesExhausted: (attempts: number, last: SendFailure): SendFailure => ({
    code: 'RetriesExhausted',
    message: `Not sent after ${attempts} attempts; the last one failed with ${last.code}: ${last.message}`.slice(0, 1000),
    retryable: false,
  }),
};

/** Classifies an error thrown by Baileys' sendMessage (or our deadline around it). */
export function classifySendError(err: unknown): SendFailure {
  if (err instanceof SendFailureError) return err.failure;
  if (err instanceof TimeoutError) return { code: 'SendTimeout', message: `Sending did not complete: ${err.message}.`, retryable: true };
  const e = err as { message?: string; output?: { statusCode?: number }; data?: unknown };
  const text = String(e?.message ?? err);
  const status = e?.output?.statusCode;
  if (/connection (closed|lost)|not open|socket/i.test(text) || status === 428) return failures.connectionLost();
  // Baileys surfaces an unregistered recipient as a 404 from the device or pre-key query.
  if (status === 404 || /item-not-found|404/.test(text)) return failures.notOnWhatsApp();
  if (status === 401 || status === 403) return { code: 'NotAuthorized', message: `WhatsApp refused to send (${status}): ${text}`.slice(0, 1000), retryable: false };
  return { code: 'SendError', message: `Sending failed: ${text}`.slice(0, 1000), retryable: true };
}
