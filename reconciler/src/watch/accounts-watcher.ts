/**
 * Watches `accounts` and keeps the latest desired state of every account in memory, validated with
 * the shared schema. Supervised, because the Admin SDK's listener dies for good after its error
 * callback and can stall silently: an error re-subscribes with backoff, and a periodic full re-read
 * both catches anything missed and restarts a listener that fell behind.
 */
import { AccountDocSchema, AccountIdSchema, Collections, DesiredStateSchema, formatZodError } from '@wafleet/contract';
import type { DocumentSnapshot, Firestore, QuerySnapshot, Timestamp } from 'firebase-admin/firestore';
import type { Logger } from 'pino';
import type { AccountSpec, StopIntent } from '../session/account-supervisor.ts';
import { withTimeout } from '../util/deadline.ts';
import { ResilientListener } from '../util/resilient-listener.ts';

/** Past this size a document is refused before parsing: a person pasted something huge. */
const MAX_DOC_BYTES = 64 * 1024;

export interface AccountsWatcherOptions {
  db: Firestore;
  log: Logger;
  onChange: (accountId: string) => void;
  resyncEveryMs?: number;
  readTimeoutMs?: number;
}

export class AccountsWatcher {
  private readonly specs = new Map<string, AccountSpec & { version: string }>();
  /**
   * Deletions the listener reported, with its snapshot's read time: a re-read that was answered
   * from before the deletion must not bring the account back.
   */
  private readonly removedAt = new Map<string, Timestamp>();
  private readonly listener: ResilientListener;
  private resyncTimer: NodeJS.Timeout | null = null;
  private synced = false;
  private stopped = false;
  private lastEventAt = 0;

  constructor(private readonly opts: AccountsWatcherOptions) {
    this.listener = new ResilientListener({
      name: 'accounts',
      query: () => opts.db.collection(Collections.accounts),
      onSnapshot: (snap) => this.onSnapshot(snap),
      onError: () => {
        this.synced = false;
      },
      log: opts.log,
    });
  }

  /** Healthy once the first snapshot arrived and the listener has not failed since. */
  get healthy(): boolean {
    return this.synced && this.listener.active;
  }

  get lastEvent(): number {
    return this.lastEventAt;
  }

  get(accountId: string): AccountSpec {
    return this.specs.get(accountId) ?? { exists: false, doc: null, error: null, updateTime: null };
  }

  ids(): string[] {
    return [...this.specs.keys()].sort();
  }

  /** Reads every account once (so boot can order the restore), then listens. */
  async start(): Promise<string[]> {
    await this.resync();
    this.listener.subscribe();
    this.scheduleResync();
    return this.ids();
  }

  private onSnapshot(snap: QuerySnapshot): void {
    this.lastEventAt = Date.now();
    this.synced = true;
    for (const change of snap.docChanges()) {
      if (change.type === 'removed') {
        this.removedAt.set(change.doc.id, snap.readTime);
        this.remove(change.doc.id);
      } else {
        this.removedAt.delete(change.doc.id);
        this.apply(change.doc);
      }
    }
  }

  /** Takes `doc` unless what we hold is newer: the listener and a re-read answer in any order. */
  private apply(doc: DocumentSnapshot): void {
    const updateTime = (doc.updateTime ?? null) as Timestamp | null;
    const version = updateTime ? versionOf(updateTime) : '';
    const prev = this.specs.get(doc.id);
    if (prev && prev.version === version) return;
    if (prev?.updateTime && updateTime && isBefore(updateTime, prev.updateTime)) return;
    this.specs.set(doc.id, { ...parseAccount(doc), version });
    this.opts.onChange(doc.id);
  }

  private remove(id: string): void {
    if (this.specs.delete(id)) this.opts.onChange(id);
  }

  /** Re-reads everything; differences from the cache mean the listener missed something. */
  async resync(): Promise<void> {
    const snap = await withTimeout(this.opts.db.collection(Collections.accounts).get(), this.opts.readTimeoutMs ?? 15_000, 'accounts re-read');
    const seen = new Set<string>();
    const readTime = snap.readTime;
    let missed = 0;
    for (const doc of snap.docs) {
      seen.add(doc.id);
      const gone = this.removedAt.get(doc.id);
      // Deleted after this read was answered: the listener's word is the newer one.
      if (gone && isBefore(readTime, gone)) continue;
      const before = this.specs.get(doc.id)?.version;
      this.apply(doc);
      if (this.synced && before !== this.specs.get(doc.id)?.version) missed++;
    }
    for (const [id, spec] of [...this.specs]) {
      if (seen.has(id)) continue;
      // Created (or changed) after this read was answered: not missing, just newer than the read.
      if (spec.updateTime && isBefore(readTime, spec.updateTime)) continue;
      if (this.synced) missed++;
      this.remove(id);
    }
    for (const [id, at] of [...this.removedAt]) if (!isBefore(readTime, at)) this.removedAt.delete(id);
    if (missed > 0 && this.synced) {
      this.opts.log.warn({ missed }, 'accounts listener missed changes; restarting it');
      this.listener.subscribe();
    }
  }

  private scheduleResync(): void {
    if (this.stopped) return;
    this.resyncTimer = setTimeout(() => {
      this.resync()
        .catch((err: unknown) => this.opts.log.warn({ err }, 'accounts re-read failed'))
        .finally(() => this.scheduleResync());
    }, this.opts.resyncEveryMs ?? 5 * 60_000);
    this.resyncTimer.unref();
  }

  stop(): void {
    this.stopped = true;
    this.listener.stop();
    if (this.resyncTimer) clearTimeout(this.resyncTimer);
  }
}

function versionOf(t: Timestamp): string {
  return `${t.seconds}.${String(t.nanoseconds).padStart(9, '0')}`;
}

function isBefore(a: Timestamp, b: Timestamp): boolean {
  return a.seconds < b.seconds || (a.seconds === b.seconds && a.nanoseconds < b.nanoseconds);
}

export function parseAccount(doc: DocumentSnapshot): AccountSpec {
  const updateTime = (doc.updateTime ?? null) as Timestamp | null;
  if (!doc.exists) return { exists: false, doc: null, error: null, updateTime };
  const id = doc.id;
  const idCheck = AccountIdSchema.safeParse(id);
  if (!idCheck.success) {
    return { exists: true, doc: null, error: `the document id "${id.slice(0, 60)}" ${idCheck.error.issues[0]!.message}`, updateTime };
  }
  const data = doc.data()!;
  const intent = stopIntent(data);
  const size = JSON.stringify(data).length;
  if (size > MAX_DOC_BYTES) return { exists: true, doc: null, error: `the document is too large (${size} bytes; the limit is ${MAX_DOC_BYTES})`, updateTime, intent };
  const parsed = AccountDocSchema.safeParse(data);
  if (!parsed.success) return { exists: true, doc: null, error: formatZodError(parsed.error), updateTime, intent };
  return { exists: true, doc: parsed.data, error: null, updateTime };
}

/** Read from the raw fields alone, so that no other field can block a delete or a logout. */
function stopIntent(data: Record<string, unknown>): StopIntent {
  const desired = DesiredStateSchema.safeParse(data.desiredState);
  const del = data.deleteRequestedAt;
  return { deleteRequested: del !== null && del !== undefined && del !== false, desiredState: desired.success ? desired.data : null };
}
