import { z } from 'zod';

/** `accounts/{accountId}`: short, URL- and log-safe, lowercase (e.g. "wa-01"). */
export const ACCOUNT_ID_RE = /^[a-z0-9][a-z0-9_-]{0,39}$/;
export const AccountIdSchema = z
  .string()
  .regex(ACCOUNT_ID_RE, 'must match ^[a-z0-9][a-z0-9_-]{0,39}$ (lowercase letters, digits, "-" and "_", 1–40 chars)');

/** Document ids of outbox messages: what a WhatsApp message id can be derived from. */
export const DOC_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
export const DocIdSchema = z.string().regex(DOC_ID_RE, 'must be 1–64 letters, digits, "-" or "_"');

/** A reconciler's INSTANCE_ID, the id of its `reconcilers/{instanceId}` heartbeat. */
export const INSTANCE_ID_RE = /^[A-Za-z0-9._-]{1,128}$/;
export const InstanceIdSchema = z.string().regex(INSTANCE_ID_RE, 'must be 1–128 characters of letters, digits, ".", "_" or "-"');

/** Status reasons are one CamelCase word (the Kubernetes convention), e.g. "QrExpired". */
export const REASON_RE = /^[A-Z][A-Za-z0-9]{0,63}$/;
export const ReasonSchema = z.string().regex(REASON_RE, 'must be one CamelCase word');

/**
 * A Firestore timestamp as either SDK returns it. The contract stays free of firebase-admin
 * so the same module serves the functions, the reconciler and tools.
 */
export interface TimestampLike {
  seconds: number;
  nanoseconds: number;
  toMillis(): number;
}
export const TimestampSchema = z.custom<TimestampLike>(
  (v) => typeof v === 'object' && v !== null && typeof (v as { toMillis?: unknown }).toMillis === 'function',
  { message: 'must be a Firestore timestamp' },
);

/** Who owns an account's session: the reconciler instance and its lease's fencing epoch. */
export const OwnerSchema = z.object({
  instanceId: z.string().min(1).max(128),
  epoch: z.int().min(1),
});
export type Owner = z.infer<typeof OwnerSchema>;

/**
 * Who claimed an outbox message: the owner plus the claiming process's incarnation. A process
 * that adopts its crashed predecessor's leases on the same disk keeps their instance and epoch,
 * so only the incarnation tells its own claims from the dead process's unresolved ones. Claims
 * written before this field existed have none and count as another process's.
 */
export const ClaimOwnerSchema = OwnerSchema.extend({
  incarnation: z.string().min(1).max(128).optional(),
});
export type ClaimOwner = z.infer<typeof ClaimOwnerSchema>;

export const DisplayNameSchema = z
  .string()
  .trim()
  .min(1, 'must not be empty')
  .max(80, 'must be at most 80 characters');

export const LABEL_KEY_RE = /^[A-Za-z][A-Za-z0-9_.-]{0,62}$/;
export const LabelsSchema = z
  .record(z.string().regex(LABEL_KEY_RE, 'label keys must match ^[A-Za-z][A-Za-z0-9_.-]{0,62}$'), z.string().max(256, 'label values must be at most 256 characters'))
  .refine((labels) => Object.keys(labels).length <= 32, 'at most 32 labels');

/** Message text: WhatsApp allows far more, but 4096 keeps documents and logs sane. */
export const MessageTextSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(4096, 'must be at most 4096 characters')
  .refine((t) => t.trim().length > 0, 'must contain more than white space');

/** Turns a zod error into "field: problem; other.field: problem", for HttpsError and status messages. */
export function formatZodError(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((issue) => {
      const field = issue.path.length ? issue.path.map(String).join('.') : '(document)';
      return `${field}: ${issue.message}`;
    })
    .join('; ');
}

/** The first offending field of a zod error, for callers that name one field. */
export function firstZodField(error: z.ZodError): string | null {
  const issue = error.issues[0];
  return issue && issue.path.length ? issue.path.map(String).join('.') : null;
}
