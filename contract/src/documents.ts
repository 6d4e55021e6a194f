/**
 * Schemas of every Firestore document wafleet reads or writes. docs/data-model.md explains them;
 * firestore.rules enforces the client-writable subset; the functions and the reconciler validate
 * with these. Document schemas are lenient about unknown fields (fields may be added to v1), strict
 * about the ones they name.
 */
import { z } from 'zod';
import { E164Schema, RecipientSchema } from './phone.ts';
import {
  AccountIdSchema,
  DisplayNameSchema,
  LabelsSchema,
  MessageTextSchema,
  ClaimOwnerSchema,
  OwnerSchema,
  ReasonSchema,
  TimestampSchema,
} from './primitives.ts';

// ---------- accounts/{accountId}: desired state, written by operators ----------

export const DESIRED_STATES = ['connected', 'disconnected', 'loggedOut'] as const;
export const DesiredStateSchema = z.enum(DESIRED_STATES);
export type DesiredState = z.infer<typeof DesiredStateSchema>;

export const LINK_METHODS = ['qr', 'pairingCode'] as const;
export const LinkMethodSchema = z.enum(LINK_METHODS);
export type LinkMethod = z.infer<typeof LinkMethodSchema>;

export const AccountDocSchema = z
  .object({
    displayName: DisplayNameSchema,
    desiredState: DesiredStateSchema,
    phoneNumber: E164Schema.nullish(),
    linkMethod: LinkMethodSchema.nullish(),
    qrRequestedAt: TimestampSchema.nullish(),
    relinkRequestedAt: TimestampSchema.nullish(),
    labels: LabelsSchema.nullish(),
    deleteRequestedAt: TimestampSchema.nullish(),
    // Set by the callables; documents written from the console may lack them.
    createdAt: TimestampSchema.nullish(),
    updatedAt: TimestampSchema.nullish(),
    updatedBy: z.string().max(128).nullish(),
  })
  .superRefine((doc, ctx) => {
    if (doc.linkMethod === 'pairingCode' && !doc.phoneNumber) {
      ctx.addIssue({ code: 'custom', path: ['phoneNumber'], message: 'is required when linkMethod is "pairingCode"' });
    }
  });
export type AccountDoc = z.infer<typeof AccountDocSchema>;

// ---------- accountStatus/{accountId}: observed state, written only by the reconciler ----------

export const PHASES = [
  'pending',
  'connecting',
  'awaitingScan',
  'connected',
  'reconnecting',
  'disconnected',
  'needsLink',
  'loggedOut',
  'banned',
  'error',
] as const;
export const PhaseSchema = z.enum(PHASES);
export type Phase = z.infer<typeof PhaseSchema>;

export const LastDisconnectSchema = z.object({
  /** The DisconnectReason status code Baileys reported (null when the socket ended without one). */
  code: z.int().nullable(),
  reason: ReasonSchema,
  at: TimestampSchema,
});

/** Why a status may no longer describe the account (docs/data-model.md, "Is this status live?"). */
export const STALE_REASONS = ['ReconcilerSilent', 'NoOwner'] as const;
export const StaleReasonSchema = z.enum(STALE_REASONS);
export type StaleReason = z.infer<typeof StaleReasonSchema>;

/**
 * Set by the watchdog (functions/), never by the reconciler: the process that wrote this status has
 * gone silent (`ReconcilerSilent`) or nobody owns the account (`NoOwner`), so the rest of the
 * document is the last thing known, not the present. The owner's next write removes it.
 */
export const StaleMarkSchema = z.object({
  reason: StaleReasonSchema,
  /** When the watchdog marked it. */
  since: TimestampSchema,
  /** The silent owner (`ReconcilerSilent`); for `NoOwner`, the last owner if there was one. */
  instanceId: z.string().min(1).max(128).nullable(),
  /** That instance's last heartbeat, when it had one. */
  lastHeartbeatAt: TimestampSchema.nullable(),
});
export type StaleMark = z.infer<typeof StaleMarkSchema>;

export const AccountStatusDocSchema = z.object({
  phase: PhaseSchema,
  reason: ReasonSchema,
  message: z.string().max(1000),
  since: TimestampSchema,
  observedSpecTime: TimestampSchema.nullable(),
  owner: OwnerSchema.nullable(),
  linkedPhoneMasked: z.string().max(32).nullable(),
  lastConnectedAt: TimestampSchema.nullable(),
  lastDisconnect: LastDisconnectSchema.nullable(),
  reconnectAttempt: z.int().min(0),
  nextRetryAt: TimestampSchema.nullable(),
  /** The newest accounts.qrRequestedAt / relinkRequestedAt the reconciler acted on. */
  handledQrRequestedAt: TimestampSchema.nullish(),
  handledRelinkRequestedAt: TimestampSchema.nullish(),
  updatedAt: TimestampSchema,
  /** Added in v1: present only while the watchdog holds this status for not live (see StaleMarkSchema). */
  stale: StaleMarkSchema.nullish(),
});
export type AccountStatusDoc = z.infer<typeof AccountStatusDocSchema>;

// ---------- accountQr/{accountId}: the current link code, written only by the reconciler ----------

export const QrKindSchema = z.enum(['qr', 'pairingCode']);
export const AccountQrDocSchema = z.object({
  kind: QrKindSchema,
  qr: z.string().max(2048).nullable(),
  qrPng: z.string().max(200_000).nullable(),
  pairingCode: z.string().max(16).nullable(),
  /** Increases with every rotation within one link attempt, so apps can tell a new code from a re-read. */
  sequence: z.int().min(0),
  expiresAt: TimestampSchema,
  owner: OwnerSchema,
  updatedAt: TimestampSchema,
});
export type AccountQrDoc = z.infer<typeof AccountQrDocSchema>;

// ---------- outbox/{messageId} ----------

export const OUTBOX_STATUSES = ['queued', 'sending', 'sent', 'delivered', 'read', 'failed', 'cancelled'] as const;
export const OutboxStatusSchema = z.enum(OUTBOX_STATUSES);
export type OutboxStatus = z.infer<typeof OutboxStatusSchema>;

export const OutboxErrorSchema = z.object({
  code: z.string().min(1).max(64),
  message: z.string().max(1000),
});

export const OutboxDocSchema = z.object({
  accountId: AccountIdSchema,
  to: RecipientSchema,
  text: MessageTextSchema,
  createdAt: TimestampSchema,
  createdBy: z.string().min(1).max(128),
  /** Present when created through sendMessage with an idempotency key. */
  idempotencyKey: z.string().max(128).nullish(),
  status: OutboxStatusSchema,
  attemptCount: z.int().min(0).default(0),
  nextAttemptAt: TimestampSchema.nullish(),
  claimedBy: ClaimOwnerSchema.nullish(),
  leaseUntil: TimestampSchema.nullish(),
  providerMessageId: z.string().max(128).nullish(),
  sentAt: TimestampSchema.nullish(),
  deliveredAt: TimestampSchema.nullish(),
  readAt: TimestampSchema.nullish(),
  error: OutboxErrorSchema.nullish(),
  cancelledAt: TimestampSchema.nullish(),
  cancelledBy: z.string().max(128).nullish(),
  /** When the message was marked failed (reconciler). */
  failedAt: TimestampSchema.nullish(),
  /** The chat JID the message went to (a phone number's LID when WhatsApp knows one); set with `sentAt`. */
  sentToJid: z.string().min(3).max(128).nullish(),
});
export type OutboxDoc = z.infer<typeof OutboxDocSchema>;

/** Where a message is in the outbox status machine: later statuses never go back to earlier ones. */
export const OUTBOX_PROGRESS: Readonly<Record<OutboxStatus, number>> = {
  queued: 0,
  sending: 1,
  sent: 2,
  delivered: 3,
  read: 4,
  failed: 5,
  cancelled: 5,
};

// ---------- threads/{threadId} and threads/{threadId}/messages/{messageId}: inbound messages ----------

/** A chat JID as WhatsApp names it: a user, a LID or a group. Stored as received, without a device part. */
export const ChatJidSchema = z.string().min(3).max(128).regex(/^[^/\s]+@[a-z.]+$/, 'must be a WhatsApp JID');

/** `threads/{accountId}__{chatJid}`: one per account and chat. JIDs never contain "__", so the last "__" splits it. */
export function threadId(accountId: string, chatJid: string): string {
  return `${accountId}__${chatJid}`;
}

export const MESSAGE_DIRECTIONS = ['inbound'] as const;

/** A LID JID without a device part, e.g. `123456789012345@lid`. */
export const LidJidSchema = z.string().min(5).max(128).regex(/^[0-9]{1,30}@lid$/, 'must be a LID (…@lid)');

export const ThreadDocSchema = z.object({
  accountId: AccountIdSchema,
  /** The JID in the thread's id: the phone-number JID when it was known at the first message, else the LID (or the group). */
  chatJid: ChatJidSchema,
  /** The other person's phone number (E.164), once known; never removed. Absent in groups. */
  phone: z.string().regex(/^\+[1-9][0-9]{5,14}$/).nullish(),
  /** The other person's LID, once known; never removed. Absent in groups. */
  lid: LidJidSchema.nullish(),
  /** The newest message's WhatsApp time (never moves backwards when an older message arrives late). */
  lastMessageAt: TimestampSchema,
  lastMessageId: z.string().min(1).max(128),
  updatedAt: TimestampSchema,
  /** When the thread may be deleted by the TTL policy; null keeps it. Follows the newest message. */
  expireAt: TimestampSchema.nullable(),
});
export type ThreadDoc = z.infer<typeof ThreadDocSchema>;

export const ThreadMessageDocSchema = z.object({
  accountId: AccountIdSchema,
  /** The thread's `chatJid` (whichever address this message came by; see `from`). */
  chatJid: ChatJidSchema,
  /** The sender's phone number (E.164) in a one-to-one chat, when known. */
  phone: z.string().regex(/^\+[1-9][0-9]{5,14}$/).nullish(),
  /** The sender's LID in a one-to-one chat, when known. */
  lid: LidJidSchema.nullish(),
  /** WhatsApp's message id (the document id, unless it had to be hashed). */
  waMessageId: z.string().min(1).max(256),
  direction: z.enum(MESSAGE_DIRECTIONS),
  /** Who sent it, as WhatsApp addressed it (a phone-number JID or a LID): the chat for one-to-one chats, the participant in groups. */
  from: ChatJidSchema,
  /** The sender's WhatsApp display name, as their phone sent it (may be absent). */
  fromName: z.string().max(256).nullable(),
  /** Text of a text message (WhatsApp allows up to 65,536 characters). */
  text: z.string().max(65_536),
  /** WhatsApp's timestamp: when the sender sent it. */
  sentAt: TimestampSchema,
  /** When the reconciler stored it. */
  receivedAt: TimestampSchema,
  /** When the TTL policy may delete it (INBOUND_RETENTION_DAYS); null keeps it. */
  expireAt: TimestampSchema.nullable(),
});
export type ThreadMessageDoc = z.infer<typeof ThreadMessageDocSchema>;

// ---------- incidents/{incidentId} ----------

export const SEVERITIES = ['info', 'warning', 'critical'] as const;
export const SeveritySchema = z.enum(SEVERITIES);
export type Severity = z.infer<typeof SeveritySchema>;

export const IncidentDocSchema = z.object({
  /** null for fleet-wide incidents (e.g. the WhatsApp client version is outdated). */
  accountId: AccountIdSchema.nullable(),
  type: ReasonSchema,
  severity: SeveritySchema,
  message: z.string().max(1000),
  open: z.boolean(),
  count: z.int().min(1),
  firstSeenAt: TimestampSchema,
  lastSeenAt: TimestampSchema,
  resolvedAt: TimestampSchema.nullable(),
  acknowledgedBy: z.string().max(128).nullable(),
  acknowledgedAt: TimestampSchema.nullable(),
  /** Added in v1, on incidents about one reconciler instance (`ReconcilerSilent`); absent elsewhere. */
  instanceId: z.string().min(1).max(128).nullish(),
});
export type IncidentDoc = z.infer<typeof IncidentDocSchema>;

// ---------- server-only collections ----------

export const DRAIN_STATES = ['draining', 'drained', 'blocked'] as const;
export type DrainState = (typeof DRAIN_STATES)[number];

export const ReconcilerDocSchema = z.object({
  instanceId: z.string().min(1).max(128),
  /** Random per process start: tells a restarted process from the one before it. */
  incarnation: z.string().min(1).max(64),
  version: z.string().max(64),
  host: z.string().max(255),
  startedAt: TimestampSchema,
  /** Written every LEASE_RENEW_MS; it keeps every lease of this instance alive (docs/reconciler-design.md). */
  heartbeatAt: TimestampSchema,
  leaseTtlMs: z.int().min(1),
  uptimeSec: z.number().min(0),
  accountsOwned: z.int().min(0),
  /** Phase of every owned account, so an idle fleet needs no per-account writes to show liveness. */
  accounts: z.record(z.string(), z.string()),
  /** Added in v1: MAX_ACCOUNTS and the accounts driven now; other instances place by them. */
  maxAccounts: z.int().min(1).optional(),
  slotsUsed: z.int().min(0).optional(),
  storagePath: z.string().max(1024),
  storageFreeBytes: z.number().min(0).nullable(),
  /**
   * Earlier incarnations of this instance on the same disk, gone (the host lock proves it), whose
   * leases this one adopted without rewriting them after a crash; leases naming them are alive.
   */
  adoptedIncarnations: z.array(z.string().min(1).max(64)).max(5).optional(),
  /** Set on graceful shutdown: its leases are released and may be taken at once. */
  stoppedAt: TimestampSchema.nullable(),
  /**
   * Set by the watchdog when it marked this instance's accounts stale; the instance's next
   * heartbeat sees it, drops it and rewrites the status of every account it owns.
   */
  silentSince: TimestampSchema.nullish(),
  /**
   * Added in v1. Written by an operator (the drainInstance callable, or the Firebase console):
   * while set, the instance hands every account it drives over to the others and takes no new
   * ones. Heartbeats keep it; null or absent: not asked to drain.
   */
  drainRequestedAt: TimestampSchema.nullish(),
  /** Added in v1, written by the instance: where its drain stands; null when not draining. */
  drain: z
    .object({
      /** draining: accounts are being handed over; drained: none left; blocked: no other live instance has a free slot. */
      state: z.enum(DRAIN_STATES),
      /** Accounts this instance still drives. */
      accountsLeft: z.int().min(0),
      /** SIGTERM with DRAIN_ON_SIGTERM, or an operator's drainRequestedAt. */
      cause: z.enum(['operator', 'shutdown']),
    })
    .nullish(),
});
export type ReconcilerDoc = z.infer<typeof ReconcilerDocSchema>;

export const LeaseDocSchema = z.object({
  /** The owning instance, or null once released. */
  holder: z.string().min(1).max(128).nullable(),
  /** The holder's incarnation: a restarted process with the same instance id is another owner. */
  incarnation: z.string().min(1).max(64).nullable(),
  /** Fencing token: strictly increases with every grant. */
  epoch: z.int().min(1),
  acquiredAt: TimestampSchema,
  releasedAt: TimestampSchema.nullable(),
  /**
   * Added in v1: released by a graceful handover (rebalancing, drain) to this instance. For a
   * while (HANDOVER_RESERVE_MS, by each reader's own clock) only that instance may take the lease;
   * after that anyone may (the receiver may have died). Cleared by the next grant.
   */
  handoverTo: z.string().min(1).max(128).nullish(),
});
export type LeaseDoc = z.infer<typeof LeaseDocSchema>;

export const AUDIT_STATUSES = ['requested', 'applied', 'failed'] as const;
export const AuditStatusSchema = z.enum(AUDIT_STATUSES);
export type AuditStatus = z.infer<typeof AuditStatusSchema>;

export const AuditLogDocSchema = z.object({
  action: z.string().min(1).max(64),
  actorUid: z.string().max(128),
  actorRole: z.string().max(32).nullable(),
  target: z.object({ collection: z.string().max(64), id: z.string().max(256) }).nullable(),
  /** Redacted: phone numbers masked, never message text or tokens. */
  details: z.record(z.string(), z.unknown()),
  at: TimestampSchema,
  // Added in v1, setUserRole entries only: a role lives in Auth, outside Firestore, so its entry is
  // written "requested" first and settled afterwards (functions/src/role-change.ts). Entries of
  // every other callable, and older setUserRole entries, lack all three.
  status: AuditStatusSchema.nullish(),
  /** When the entry became "applied" or "failed" (also set when a "requested" entry records an error). */
  settledAt: TimestampSchema.nullish(),
  /** The error code of a "failed" entry (e.g. "permission-denied"); "outcome-unknown" on a "requested" one. */
  error: z.string().min(1).max(64).nullish(),
});
export type AuditLogDoc = z.infer<typeof AuditLogDocSchema>;

// ---------- fleetConfig/whatsapp: fleet-wide WhatsApp settings, written by admins ----------

/**
 * Bounds of a WhatsApp Web version `[major, minor, patch]` (e.g. `[2, 3000, 1043857760]`): each
 * part a positive integer; ClientPayload carries them as uint32, WhatsApp's major has been 2 for
 * years and the minor 3000. The bounds catch typos (a pasted build hash, a negative number).
 */
export const WA_VERSION_BOUNDS = {
  major: { min: 1, max: 99 },
  minor: { min: 1, max: 999_999 },
  patch: { min: 1, max: 4_294_967_295 },
} as const;

const versionPart = (name: keyof typeof WA_VERSION_BOUNDS) => {
  const { min, max } = WA_VERSION_BOUNDS[name];
  return z.number({ error: `the ${name} part must be a number` }).int(`the ${name} part must be a whole number`).min(min, `the ${name} part must be at least ${min}`).max(max, `the ${name} part must be at most ${max}`);
};

/** `[major, minor, patch]`, as Baileys' `version` option and WhatsApp's userAgent.appVersion take it. */
export const WaWebVersionSchema = z.tuple([versionPart('major'), versionPart('minor'), versionPart('patch')], {
  error: 'must be an array of three whole numbers [major, minor, patch], e.g. [2, 3000, 1043857760]',
});
export type WaWebVersion = z.infer<typeof WaWebVersionSchema>;

export const FleetConfigWhatsAppDocSchema = z.object({
  /**
   * The WhatsApp Web version every session announces, overriding the one bundled with Baileys;
   * null (or a deleted document) means no override. Required: a misspelt field name must not
   * silently mean "no override".
   */
  waWebVersion: WaWebVersionSchema.nullable(),
  updatedAt: TimestampSchema.nullish(),
  updatedBy: z.string().max(128).nullish(),
  /** Why, for the next person (e.g. "405 since 2026-12-04; remove after the Baileys upgrade"). */
  note: z.string().max(1000).nullish(),
});
export type FleetConfigWhatsAppDoc = z.infer<typeof FleetConfigWhatsAppDocSchema>;

/** Formats a version for logs, metrics and messages: "2.3000.1043857760". */
export function formatWaVersion(v: readonly [number, number, number]): string {
  return v.join('.');
}
