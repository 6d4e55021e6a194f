/**
 * Every Firestore query that needs a composite index, in one registry. Production code builds
 * these queries only through `buildQuery`, and test/indexes.test.ts proves firestore.indexes.json
 * holds an index for each (the emulator does not enforce indexes, production does).
 * Apps' documented queries are here too, so their indexes ship with the project.
 */
import { Collections } from './collections.ts';

export type FilterOp = '==' | '!=' | '<' | '<=' | '>' | '>=' | 'in' | 'array-contains';
export type Direction = 'asc' | 'desc';

export interface QuerySpec {
  collection: string;
  /** At least one filter: unfiltered queries never need a composite index. */
  where: ReadonlyArray<{ field: string; op: FilterOp }>;
  orderBy: ReadonlyArray<{ field: string; direction: Direction }>;
  /** Who runs it, for people reading the registry. */
  usedBy: string;
}

export const QUERIES = {
  /** Apps: the open incidents, most recent first. */
  openIncidentsByRecency: {
    collection: Collections.incidents,
    where: [{ field: 'open', op: '==' }],
    orderBy: [{ field: 'lastSeenAt', direction: 'desc' }],
    usedBy: 'mobile apps (docs/data-model.md)',
  },
  /** Apps: one account's messages, newest first. */
  accountOutboxByRecency: {
    collection: Collections.outbox,
    where: [{ field: 'accountId', op: '==' }],
    orderBy: [{ field: 'createdAt', direction: 'desc' }],
    usedBy: 'mobile apps (docs/data-model.md)',
  },
  /** Reconciler: every message still to send (or whose send is unresolved), fleet-wide. */
  pendingOutbox: {
    collection: Collections.outbox,
    where: [{ field: 'status', op: 'in' }],
    orderBy: [],
    usedBy: 'reconciler (outbox processor)',
  },
  /** Reconciler: the message a receipt is about, after a restart forgot which one it was. */
  outboxByProviderId: {
    collection: Collections.outbox,
    where: [
      { field: 'accountId', op: '==' },
      { field: 'providerMessageId', op: '==' },
    ],
    orderBy: [],
    usedBy: 'reconciler (receipts)',
  },
  /** Reconciler and apps: an account's thread with one person, by phone number (E.164). */
  threadByPhone: {
    collection: Collections.threads,
    where: [
      { field: 'accountId', op: '==' },
      { field: 'phone', op: '==' },
    ],
    orderBy: [],
    usedBy: 'reconciler (inbound writer), mobile apps (docs/data-model.md, LID addressing)',
  },
  /** Reconciler: an account's thread with one person, by LID (`…@lid`). */
  threadByLid: {
    collection: Collections.threads,
    where: [
      { field: 'accountId', op: '==' },
      { field: 'lid', op: '==' },
    ],
    orderBy: [],
    usedBy: 'reconciler (inbound writer)',
  },
  /** Watchdog: the statuses one (silent) reconciler instance owns. */
  statusesByOwner: {
    collection: Collections.accountStatus,
    where: [{ field: 'owner.instanceId', op: '==' }],
    orderBy: [],
    usedBy: 'watchdog (functions/src/watchdog.ts)',
  },
  /** Reconciler: the leases other instances handed over to this one (rebalancing, drain). */
  leasesHandedOverTo: {
    collection: Collections.leases,
    where: [{ field: 'handoverTo', op: '==' }],
    orderBy: [],
    usedBy: 'reconciler (lease/placement.ts)',
  },
  /** Watchdog: the open incidents of one type. */
  openIncidentsOfType: {
    collection: Collections.incidents,
    where: [
      { field: 'type', op: '==' },
      { field: 'open', op: '==' },
    ],
    orderBy: [],
    usedBy: 'watchdog (functions/src/watchdog.ts)',
  },
} as const satisfies Record<string, QuerySpec>;

export type QueryName = keyof typeof QUERIES;

/** The subset of a Firestore query the Admin SDK's CollectionReference and Query share. */
interface QueryLike<Q> {
  where(field: string, op: FilterOp, value: unknown): Q;
  orderBy(field: string, direction: Direction): Q;
}

/** Builds a registered query on a collection reference. */
export function buildQuery<Q extends QueryLike<Q>>(collection: QueryLike<Q> & { id: string }, name: QueryName, values: readonly unknown[]): Q {
  const spec: QuerySpec = QUERIES[name];
  if (collection.id !== spec.collection) throw new Error(`query ${name} runs on ${spec.collection}, not ${collection.id}`);
  if (values.length !== spec.where.length || values.length === 0) {
    throw new Error(`query ${name} takes ${spec.where.length} values, got ${values.length}`);
  }
  let q = collection.where(spec.where[0]!.field, spec.where[0]!.op, values[0]);
  spec.where.slice(1).forEach((w, i) => {
    q = q.where(w.field, w.op, values[i + 1]);
  });
  for (const o of spec.orderBy) q = q.orderBy(o.field, o.direction);
  return q;
}

/**
 * Whether Firestore needs a composite index for the query. Single-field indexes (automatic)
 * serve queries on one field, and equality filters alone (index merging); a sort or a
 * range/inequality next to another field needs a composite index.
 */
export function needsCompositeIndex(spec: QuerySpec): boolean {
  const fields = new Set([...spec.where.map((w) => w.field), ...spec.orderBy.map((o) => o.field)]);
  if (fields.size <= 1) return false;
  const onlyEquality = spec.where.every((w) => w.op === '==' || w.op === 'in' || w.op === 'array-contains');
  return !(onlyEquality && spec.orderBy.length === 0);
}
