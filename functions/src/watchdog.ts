/**
 * The watchdog: a reconciler cannot report its own silence, so something outside the VM must.
 * Like Kubernetes' node lifecycle controller, it reads the heartbeats (`reconcilers/*`) and, for an
 * instance that stopped beating, marks every status it owns `stale` (ReconcilerSilent) and keeps one
 * `ReconcilerSilent` incident open per instance; statuses nobody live owns are marked `NoOwner`.
 * The owner's next write removes a mark (docs/data-model.md, "Is this status live?").
 *
 * Ordering: every mark is written in a transaction that also reads the owner's heartbeat and
 * writes `silentSince` on it, and the reconciler's beats are transactions that read it too. So
 * either the watchdog sees a fresh beat and marks nothing, or the next beat sees `silentSince` and
 * the reconciler writes every owned status again, removing the marks.
 *
 * Cost when all is well: the heartbeats, one count of `accounts`, one query of open
 * `ReconcilerSilent` incidents and one incident read; flat in the number of accounts.
 */
import {
  buildQuery,
  Collections,
  heartbeatVerdict,
  incidentId,
  instanceIncidentId,
  silentAfterMs,
  SILENT_GRACE_EXTRA_MS,
  type Severity,
  type StaleMark,
} from '@wafleet/contract';
import { FieldValue, Timestamp, type DocumentReference, type DocumentSnapshot, type Firestore, type Transaction } from 'firebase-admin/firestore';

export const RECONCILER_SILENT = 'ReconcilerSilent';
export const ACCOUNTS_UNOWNED = 'AccountsUnowned';
/** The TTL assumed for accounts no heartbeat speaks for (the reconciler's LEASE_TTL_MS default). */
const DEFAULT_TTL_MS = 120_000;
/** Marks per transaction: well under Firestore's 500 writes, and few enough to retry cheaply. */
const CHUNK = 200;

export interface WatchdogOptions {
  now?: () => number;
  /** Added to an instance's lease TTL before its heartbeat counts as silent (SILENT_GRACE_EXTRA_MS). */
  extraGraceMs?: number;
  /** Test seam: runs after an instance was judged silent, before the transaction that marks. */
  beforeMark?: (instanceId: string) => Promise<void>;
}

export interface WatchdogRun {
  live: string[];
  silent: string[];
  stopped: string[];
  /** Statuses marked in this run. */
  marked: number;
  /** Accounts no live instance speaks for (with or without a status document). */
  unowned: number;
  incidentsRaised: number;
  incidentsResolved: number;
  /** Documents read and written (billed operations; a query with no result costs one read). */
  reads: number;
  writes: number;
}

interface Instance {
  id: string;
  snap: DocumentSnapshot;
  verdict: 'live' | 'silent' | 'stopped';
}

export async function runWatchdog(db: Firestore, opts: WatchdogOptions = {}): Promise<WatchdogRun> {
  const now = opts.now ?? Date.now;
  const extra = opts.extraGraceMs ?? SILENT_GRACE_EXTRA_MS;
  const run: WatchdogRun = { live: [], silent: [], stopped: [], marked: 0, unowned: 0, incidentsRaised: 0, incidentsResolved: 0, reads: 0, writes: 0 };
  const read = (n: number) => (run.reads += Math.max(1, n));
  const statusCol = db.collection(Collections.accountStatus);

  const heartbeats = await db.collection(Collections.reconcilers).get();
  read(heartbeats.size);
  const instances = new Map<string, Instance>();
  let maxTtl = 0;
  for (const snap of heartbeats.docs) {
    const verdict = heartbeatVerdict(snap.data(), now(), extra);
    instances.set(snap.id, { id: snap.id, snap, verdict });
    run[verdict].push(snap.id);
    const ttl = snap.get('leaseTtlMs');
    if (typeof ttl === 'number' && ttl > maxTtl) maxTtl = ttl;
  }

  // 1. Every status a silent instance owns is marked, and its incident is open.
  for (const id of run.silent) {
    const owned = await buildQuery(statusCol, 'statusesByOwner', [id]).get();
    read(owned.size);
    const unmarked = owned.docs.filter((d) => !d.get('stale')).map((d) => d.ref);
    if (unmarked.length > 0) {
      await opts.beforeMark?.(id);
      for (let i = 0; i < unmarked.length; i += CHUNK) run.marked += await markSilent(db, id, unmarked.slice(i, i + CHUNK), now, extra, run);
    }
    const heartbeatAt = instances.get(id)!.snap.get('heartbeatAt') as Timestamp | undefined;
    const since = heartbeatAt ? heartbeatAt.toDate().toISOString() : 'its start';
    const raised = await raiseOnce(db, db.collection(Collections.incidents).doc(instanceIncidentId(id, RECONCILER_SILENT)), run, now, {
      accountId: null,
      instanceId: id,
      type: RECONCILER_SILENT,
      severity: 'critical',
      message: `Reconciler ${id} has not written its heartbeat since ${since}: the ${owned.size} account(s) it owned are not driven, and their status is the last one it wrote.`,
    });
    if (raised) run.incidentsRaised++;
  }

  // 2. The incident of an instance that beats again (or shut down properly) is over.
  const openSilent = await buildQuery(db.collection(Collections.incidents), 'openIncidentsOfType', [RECONCILER_SILENT, true]).get();
  read(openSilent.size);
  for (const doc of openSilent.docs) {
    const id = doc.get('instanceId') as string | undefined;
    if (id !== undefined && instances.get(id)?.verdict === 'silent') continue;
    if (await resolveIfOpen(db, doc.ref, run)) run.incidentsResolved++;
  }

  // 3. Accounts no live instance speaks for. The live heartbeats list what they drive; only when
  // they do not add up to the number of accounts are the statuses read.
  const liveAccounts = new Set<string>();
  for (const i of instances.values()) if (i.verdict === 'live') for (const a of Object.keys((i.snap.get('accounts') as Record<string, unknown> | undefined) ?? {})) liveAccounts.add(a);
  const accountCount = (await db.collection(Collections.accounts).count().get()).data().count;
  read(Math.ceil(accountCount / 1000));
  if (accountCount > liveAccounts.size) {
    const grace = silentAfterMs(maxTtl || DEFAULT_TTL_MS, extra);
    const [accounts, statuses] = await Promise.all([db.collection(Collections.accounts).select().get(), statusCol.get()]);
    read(accounts.size);
    read(statuses.size);
    const statusById = new Map(statuses.docs.map((d) => [d.id, d]));
    for (const account of accounts.docs) {
      if (liveAccounts.has(account.id)) continue;
      const status = statusById.get(account.id);
      if (!status) {
        run.unowned++;
        continue;
      }
      const owner = status.get('owner.instanceId') as string | undefined;
      const verdict = owner === undefined ? undefined : instances.get(owner)?.verdict;
      // A live owner speaks for it (even one that does not list it yet); a silent one was step 1.
      if (verdict === 'live' || verdict === 'silent') continue;
      const updatedAt = (status.get('updatedAt') as Timestamp | undefined)?.toMillis() ?? 0;
      if (now() - updatedAt <= grace) continue;
      run.unowned++;
      if (!status.get('stale') && (await markUnowned(db, status.ref, owner ?? null, now, extra, grace, run))) run.marked++;
    }
  }
  const unownedRef = db.collection(Collections.incidents).doc(incidentId(null, ACCOUNTS_UNOWNED));
  if (run.unowned > 0) {
    const raised = await raiseOnce(db, unownedRef, run, now, {
      accountId: null,
      type: ACCOUNTS_UNOWNED,
      severity: run.live.length === 0 ? 'critical' : 'warning',
      message: `${run.unowned} account(s) are not driven by any live reconciler (${run.live.length} live, ${run.silent.length} silent, ${run.stopped.length} stopped).`,
    });
    if (raised) run.incidentsRaised++;
  } else if (await resolveIfOpen(db, unownedRef, run)) {
    run.incidentsResolved++;
  }
  return run;
}

/** Marks `refs` stale for silent instance `id`, if its heartbeat is still silent when the transaction reads it. */
async function markSilent(db: Firestore, id: string, refs: DocumentReference[], now: () => number, extra: number, run: WatchdogRun): Promise<number> {
  const heartbeatRef = db.collection(Collections.reconcilers).doc(id);
  return db.runTransaction(async (tx) => {
    const [heartbeat, ...docs] = await tx.getAll(heartbeatRef, ...refs);
    run.reads += 1 + refs.length;
    if (!heartbeat!.exists || heartbeatVerdict(heartbeat!.data()!, now(), extra) !== 'silent') return 0;
    const mark: StaleMarkWrite = { reason: 'ReconcilerSilent', since: FieldValue.serverTimestamp(), instanceId: id, lastHeartbeatAt: (heartbeat!.get('heartbeatAt') as Timestamp | undefined) ?? null };
    let n = 0;
    for (const doc of docs) {
      // Another owner (or this one, back again) wrote it since the query: it speaks for itself.
      if (!doc.exists || doc.get('owner.instanceId') !== id || doc.get('stale')) continue;
      tx.update(doc.ref, { stale: mark });
      n++;
    }
    if (n > 0 && !heartbeat!.get('silentSince')) tx.update(heartbeatRef, { silentSince: FieldValue.serverTimestamp() });
    run.writes += n > 0 ? n + (heartbeat!.get('silentSince') ? 0 : 1) : 0;
    return n;
  });
}

/** Marks a status no live instance owns, if that is still so when the transaction reads it. */
async function markUnowned(db: Firestore, ref: DocumentReference, owner: string | null, now: () => number, extra: number, grace: number, run: WatchdogRun): Promise<boolean> {
  return db.runTransaction(async (tx) => {
    const status = await tx.get(ref);
    run.reads++;
    if (!status.exists || status.get('stale')) return false;
    const currentOwner = (status.get('owner.instanceId') as string | undefined) ?? null;
    const updatedAt = (status.get('updatedAt') as Timestamp | undefined)?.toMillis() ?? 0;
    if (currentOwner !== owner || now() - updatedAt <= grace) return false;
    let lastHeartbeatAt: Timestamp | null = null;
    if (owner !== null) {
      const heartbeat = await tx.get(db.collection(Collections.reconcilers).doc(owner));
      run.reads++;
      if (heartbeat.exists && heartbeatVerdict(heartbeat.data()!, now(), extra) !== 'stopped') return false;
      lastHeartbeatAt = (heartbeat.get('heartbeatAt') as Timestamp | undefined) ?? null;
    }
    const mark: StaleMarkWrite = { reason: 'NoOwner', since: FieldValue.serverTimestamp(), instanceId: owner, lastHeartbeatAt };
    tx.update(ref, { stale: mark });
    run.writes++;
    return true;
  });
}

type StaleMarkWrite = Omit<StaleMark, 'since'> & { since: FieldValue };

interface NewIncident {
  accountId: null;
  instanceId?: string;
  type: string;
  severity: Severity;
  message: string;
}

/** Opens the incident unless it is open already (deduplicated: no write then). True if opened. */
async function raiseOnce(db: Firestore, ref: DocumentReference, run: WatchdogRun, now: () => number, incident: NewIncident): Promise<boolean> {
  return db.runTransaction(async (tx: Transaction) => {
    const cur = await tx.get(ref);
    run.reads++;
    if (cur.exists && cur.get('open') === true) return false;
    const at = Timestamp.fromMillis(now());
    // A closed one is moved aside as history, as the reconciler's incident writer does.
    if (cur.exists) tx.set(ref.parent.doc(`${ref.id}__${(cur.get('firstSeenAt') as Timestamp).toMillis()}`), cur.data()!);
    tx.set(ref, { ...incident, open: true, count: 1, firstSeenAt: at, lastSeenAt: at, resolvedAt: null, acknowledgedBy: null, acknowledgedAt: null });
    run.writes += cur.exists ? 2 : 1;
    return true;
  });
}

async function resolveIfOpen(db: Firestore, ref: DocumentReference, run: WatchdogRun): Promise<boolean> {
  return db.runTransaction(async (tx) => {
    const cur = await tx.get(ref);
    run.reads++;
    if (!cur.exists || cur.get('open') !== true) return false;
    tx.update(ref, { open: false, resolvedAt: FieldValue.serverTimestamp() });
    run.writes++;
    return true;
  });
}
