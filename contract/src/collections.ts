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
} as const;

export type CollectionName = (typeof Collections)[keyof typeof Collections];
