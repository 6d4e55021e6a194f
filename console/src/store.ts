/**
 * The fleet-wide live data, one listener per collection for as long as someone is signed in:
 * accounts, accountStatus, reconcilers (for liveness) and the open incidents. Views subscribe to
 * changes by id, so a snapshot touches only the rows it is about.
 */
import { collection, onSnapshot, query, where, type DocumentData, type Unsubscribe } from 'firebase/firestore';
import type { Fb } from './firebase.ts';

export type Doc = DocumentData;

export interface Changes {
  accounts: Set<string>;
  statuses: Set<string>;
  /** Something fleet-wide changed (reconcilers, incidents): re-judge every row. */
  all: boolean;
}

export class Store {
  readonly accounts = new Map<string, Doc>();
  readonly statuses = new Map<string, Doc>();
  readonly reconcilers = new Map<string, Doc>();
  /** Open incidents by id. */
  readonly incidents = new Map<string, Doc>();
  readonly loaded = { accounts: false, statuses: false, reconcilers: false, incidents: false };
  error: string | null = null;
  private readonly subs = new Set<(c: Changes) => void>();
  private readonly unsub: Unsubscribe[] = [];

  constructor(private readonly fb: Fb) {}

  start(): void {
    const { db } = this.fb;
    const fail = (what: string) => (err: Error) => {
      this.error = `Live updates of ${what} stopped: ${err.message}`;
      this.emit({ accounts: new Set(), statuses: new Set(), all: true });
    };
    this.unsub.push(
      onSnapshot(collection(db, 'accounts'), (snap) => {
        const ids = new Set<string>();
        for (const ch of snap.docChanges()) {
          ids.add(ch.doc.id);
          if (ch.type === 'removed') this.accounts.delete(ch.doc.id);
          else this.accounts.set(ch.doc.id, ch.doc.data());
        }
        this.loaded.accounts = true;
        this.emit({ accounts: ids, statuses: new Set(), all: false });
      }, fail('accounts')),
      onSnapshot(collection(db, 'accountStatus'), (snap) => {
        const ids = new Set<string>();
        for (const ch of snap.docChanges()) {
          ids.add(ch.doc.id);
          if (ch.type === 'removed') this.statuses.delete(ch.doc.id);
          else this.statuses.set(ch.doc.id, ch.doc.data({ serverTimestamps: 'estimate' }));
        }
        this.loaded.statuses = true;
        this.emit({ accounts: new Set(), statuses: ids, all: false });
      }, fail('statuses')),
      onSnapshot(collection(db, 'reconcilers'), (snap) => {
        for (const ch of snap.docChanges()) {
          if (ch.type === 'removed') this.reconcilers.delete(ch.doc.id);
          else this.reconcilers.set(ch.doc.id, ch.doc.data({ serverTimestamps: 'estimate' }));
        }
        this.loaded.reconcilers = true;
        this.emit({ accounts: new Set(), statuses: new Set(), all: true });
      }, fail('reconcilers')),
      onSnapshot(query(collection(db, 'incidents'), where('open', '==', true)), (snap) => {
        for (const ch of snap.docChanges()) {
          if (ch.type === 'removed') this.incidents.delete(ch.doc.id);
          else this.incidents.set(ch.doc.id, ch.doc.data());
        }
        this.loaded.incidents = true;
        this.emit({ accounts: new Set(), statuses: new Set(), all: true });
      }, fail('incidents')),
    );
  }

  stop(): void {
    for (const u of this.unsub.splice(0)) u();
    this.subs.clear();
  }

  subscribe(fn: (c: Changes) => void): () => void {
    this.subs.add(fn);
    return () => this.subs.delete(fn);
  }

  openIncidentsOf(accountId: string): Doc[] {
    return [...this.incidents.values()].filter((i) => i.accountId === accountId);
  }

  private emit(c: Changes): void {
    for (const fn of this.subs) fn(c);
  }
}
