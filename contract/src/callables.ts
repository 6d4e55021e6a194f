/**
 * Inputs of the callable admin API (functions/). Strict objects: an unknown field is an error,
 * so a typo ("desiredstate") fails loudly instead of being ignored.
 */
import { z } from 'zod';
import { DesiredStateSchema, LinkMethodSchema } from './documents.ts';
import { E164Schema, RecipientSchema } from './phone.ts';
import { AccountIdSchema, DisplayNameSchema, DocIdSchema, InstanceIdSchema, LabelsSchema, MessageTextSchema } from './primitives.ts';
import { RoleSchema, type Role } from './roles.ts';

export const CreateAccountInput = z
  .strictObject({
    accountId: AccountIdSchema,
    displayName: DisplayNameSchema,
    desiredState: DesiredStateSchema.default('connected'),
    phoneNumber: E164Schema.optional(),
    linkMethod: LinkMethodSchema.optional(),
    labels: LabelsSchema.optional(),
  })
  .refine((v) => v.linkMethod !== 'pairingCode' || v.phoneNumber !== undefined, {
    message: 'is required when linkMethod is "pairingCode"',
    path: ['phoneNumber'],
  });

export const UpdateAccountInput = z
  .strictObject({
    accountId: AccountIdSchema,
    displayName: DisplayNameSchema.optional(),
    desiredState: DesiredStateSchema.optional(),
    /** null removes the number. */
    phoneNumber: E164Schema.nullable().optional(),
    linkMethod: LinkMethodSchema.optional(),
    /** Replaces all labels; null removes them. */
    labels: LabelsSchema.nullable().optional(),
  })
  .refine((v) => Object.keys(v).some((k) => k !== 'accountId'), {
    message: 'name at least one field to change',
    path: ['(fields)'],
  });

export const AccountRefInput = z.strictObject({ accountId: AccountIdSchema });

/** Idempotency keys are client-chosen; a UUID fits comfortably. */
export const IdempotencyKeySchema = z.string().regex(/^[\x21-\x7e]{1,128}$/, 'must be 1–128 printable ASCII characters without spaces');

export const SendMessageInput = z.strictObject({
  accountId: AccountIdSchema,
  to: RecipientSchema,
  text: MessageTextSchema,
  idempotencyKey: IdempotencyKeySchema.optional(),
});

export const MessageRefInput = z.strictObject({ messageId: DocIdSchema });
export const IncidentRefInput = z.strictObject({ incidentId: z.string().regex(/^[A-Za-z0-9_-]{1,400}$/, "must be 1–400 letters, digits, \"-\" or \"_\"") });

export const SetUserRoleInput = z
  .strictObject({
    uid: z.string().min(1).max(128).optional(),
    email: z.email().max(320).optional(),
    role: RoleSchema.nullable(),
  })
  .refine((v) => (v.uid === undefined) !== (v.email === undefined), {
    message: 'give exactly one of uid or email',
    path: ['uid'],
  });

/** Starts (`drain: true`) or cancels (`drain: false`) the drain of one reconciler instance. */
export const DrainInstanceInput = z.strictObject({ instanceId: InstanceIdSchema, drain: z.boolean() });

/** Callable name → input schema and the least role that may call it. */
export const CALLABLES = {
  createAccount: { input: CreateAccountInput, role: 'operator' },
  updateAccount: { input: UpdateAccountInput, role: 'operator' },
  requestQr: { input: AccountRefInput, role: 'operator' },
  relinkAccount: { input: AccountRefInput, role: 'operator' },
  deleteAccount: { input: AccountRefInput, role: 'admin' },
  sendMessage: { input: SendMessageInput, role: 'operator' },
  cancelMessage: { input: MessageRefInput, role: 'operator' },
  acknowledgeIncident: { input: IncidentRefInput, role: 'operator' },
  setUserRole: { input: SetUserRoleInput, role: 'admin' },
  drainInstance: { input: DrainInstanceInput, role: 'admin' },
} as const satisfies Record<string, { input: z.ZodType; role: Role }>;

export type CallableName = keyof typeof CALLABLES;
export type CallableInput<N extends CallableName> = z.output<(typeof CALLABLES)[N]['input']>;

export interface SendMessageResult {
  messageId: string;
  status: string;
  /** True when an earlier call with the same idempotency key created the message. */
  duplicate: boolean;
}
