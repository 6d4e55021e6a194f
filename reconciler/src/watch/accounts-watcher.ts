/**
 * Watches `accounts` and keeps the latest desired state of every account in memory, validated with
 * the shared schema. Supervised, because the Admin SDK's listener dies for good after its error
 * callback and can stall silently: an error re-subscribes with backoff, and a periodic full re-read
 * both catches anything missed and restarts a listener that fell behind.
 */
import { AccountDocSchema, AccountIdSchema, Collections, formatZodError } from '@wafleet/contract';
import type { DocumentSnapshot, Firestore, QuerySnapshot, Timestamp } from 'firebase-admin/firestore';
import type { Logger } from 'pino';
import type { AccountSpec } from '../session/account-supervisor.ts';
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
      if (change.type === 'removed') this.remove(change.doc.id);
      else this.apply(change.doc);
    }
  }

  private apply(doc: DocumentSnapshot): void {
    const version = doc.updateTime?.toMillis().toString() ?? '';
    const prev = this.specs.get(doc.id);
    if (prev && prev.version === version) return;
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
    let missed = 0;
    for (const doc of snap.docs) {
      seen.add(doc.id);
      const before = this.specs.get(doc.id)?.version;
      this.apply(doc);
      if (this.synced && before !== this.specs.get(doc.id)?.version) missed++;
    }
    for (const id of [...this.specs.keys()]) {
      if (!seen.has(id)) {
        if (this.synced) missed++;
        this.remove(id);
      }
    }
    if (missed > 0 && this.synced) {
      this.opts.log.warn({ missed }, 'accounts listener missed changes; restarting it');
      this.listener.subscribe();
    }
  }

  private scheduleResync(): void {
    if (this.stopped) return;
    this.resyncTimer = setTimeout(() => {
      this.resync()
        .catch((err: unknown) => this.opts.log.warn({ err: String(err) }, 'accounts re-read failed'))
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

export function parseAccount(doc: DocumentSnapshot): AccountSpec {
  const updateTime = (doc.updateTime ?? null) as Timestamp | null;
  if (!doc.exists) return { exists: false, doc: null, error: null, updateTime };
  const id = doc.id;
  const idCheck = AccountIdSchema.safeParse(id);
  if (!idCheck.success) {
    return { exists: true, doc: null, error: `the document id "${id.slice(0, 60)}" ${idCheck.error.issues[0]!.message}`, updateTime };
  }
  const data = doc.data()!;
  const size = JSON.stringify(data).length;
  if (size > MAX_DOC_BYTES) return { exists: true, doc: null, error: `the document is too large (${size} bytes; the limit is ${MAX_DOC_BYTES})`, updateTime };
  const parsed = AccountDocSchema.safeParse(data);
  if (!parsed.success) return { exists: true, doc: null, error: formatZodError(parsed.error), updateTime };
  return { exists: true, doc: parsed.data, error: null, updateTime };
}
