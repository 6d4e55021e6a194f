/** Firestore collection names: the public API's top-level layout (docs/data-model.md). */
export const Collections = {
  accounts: 'accounts',
  accountStatus: 'accountStatus',
  accountQr: 'accountQr',
  outbox: 'outbox',
  incidents: 'incidents',
  reconcilers: 'reconcilers',
  leases: 'leases',
  sessionBackups: 'sessionBackups',
  auditLog: 'auditLog',
  /** Server-only: `locks/userRoles` serializes setUserRole (docs/data-model.md). */
  locks: 'locks',
  threads: 'threads',
  /** Fleet-wide settings written by admins from the console: `fleetConfig/whatsapp` (docs/data-model.md). */
  fleetConfig: 'fleetConfig',
} as const;

/** The documents of `fleetConfig`: one per concern. */
export const FleetConfigDocs = {
  /** The WhatsApp Web client version override (FleetConfigWhatsAppDocSchema). */
  whatsapp: 'whatsapp',
} as const;

/** Subcollections that are part of the API: `threads/{threadId}/messages/{messageId}`. */
export const Subcollections = {
  threadMessages: 'messages',
} as const;

export type CollectionName = (typeof Collections)[keyof typeof Collections];
