/**
 * Per-account ownership with fencing (docs/reconciler-design.md). A lease document names its
 * holder and epoch; it stays valid while the holder's heartbeat (reconcilers/{instanceId}) keeps
 * changing. Takeover re-reads both in a transaction and bumps the epoch; every guarded write
 * re-checks holder, incarnation and epoch in its own transaction (`fenced`).
 */
import { Collections, type LeaseDoc, type Owner } from '@wafleet/contract';
import { withTimeout } from '../util/deadline.ts';
import { FieldValue, type DocumentReference, type DocumentSnapshot, type Firestore, type Transaction } from 'firebase-admin/firestore';

export interface Identity {
  instanceId: string;
  incarnation: string;
  host: string;
  storagePath: string;
}

export interface LeaseGrant extends Owner {
  accountId: string;
  /** The incarnation the lease names: ours, or an adopted predecessor's on this disk. */
  incarnation: string;
}

export type AcquireResult =
  | { acquired: true; grant: LeaseGrant; tookOverFrom: string | null }
  | { acquired: false; holder: string; retryAfterMs: number };

export class StaleOwnerError extends Error {
  constructor(readonly accountId: string, readonly detail: string) {
    super(`no longer the owner of account ${accountId}: ${detail}`);
    this.name = 'StaleOwnerError';
  }
}

export interface LeaseManagerOptions {
  ttlMs: number;
  /** True while this process holds the host lock on its sessions directory. */
  hostLockHeld: boolean;
  now?: () => number;
  /** Deadline of one acquire. Default ACQUIRE_TIMEOUT_MS. */
  callTimeoutMs?: number;
  /** How long a lease handed over to another instance is left to it. Default HANDOVER_RESERVE_MS. */
  handoverReserveMs?: number;
  /**
   * Incarnations of this instance id that ran on this disk before us and are provably gone (we
   * hold the host lock). Their leases are ours without a write; see `acquire`.
   */
  adopt?: readonly string[];
}

const ACQUIRE_TIMEOUT_MS = 15_000;
/**
 * A handed-over lease waits this long for its receiver: enough for a loaded instance's next pass
 * and restore; a dead receiver costs the account this much more offline time.
 */
export const HANDOVER_RESERVE_MS = 30_000;

interface Observation {
  version: string;
  seenAt: number;
}

export class LeaseManager {
  private readonly grants = new Map<string, LeaseGrant>();
  /** The acquire transaction in flight per account (see `acquire`). */
  private readonly acquiring = new Map<string, Promise<AcquireResult>>();
  /** When we first saw each holder heartbeat version, by our own clock. */
  private readonly observed = new Map<string, Observation>();
  private readonly now: () => number;

  constructor(
    private readonly db: Firestore,
    readonly identity: Identity,
    private readonly opts: LeaseManagerOptions,
  ) {
    this.now = opts.now ?? Date.now;
  }

  private get handoverReserveMs(): number {
    return this.opts.handoverReserveMs ?? HANDOVER_RESERVE_MS;
  }

  held(accountId: string): LeaseGrant | undefined {
    return this.grants.get(accountId);
  }

  heldAccounts(): string[] {
    return [...this.grants.keys()].sort();
  }

  /** Forgets every grant locally (after a fence): each must be proven again before use. */
  dropAll(): void {
    this.grants.clear();
  }

  /** Forget a grant locally, e.g. after a StaleOwnerError showed someone else owns it. */
  drop(accountId: string): void {
    this.grants.delete(accountId);
  }

  private leaseRef(accountId: string) {
    return this.db.collection(Collections.leases).doc(accountId);
  }

  /**
   * Bounded by `callTimeoutMs`: a pass waiting on a silent connection would hold its account for
   * as long as TCP takes to give up. A deadline does not end the transaction, though (the SDK
   * cannot cancel one, and retries it when Firestore aborts it), so a call while an earlier one
   * for the account is still in flight waits for that one instead of starting a second: two
   * acquires of one lease from one process, each holding a read lock the other's write waits for,
   * only ever abort each other until Firestore's lock timeout.
   */
  async acquire(accountId: string): Promise<AcquireResult> {
    let attempt = this.acquiring.get(accountId);
    if (!attempt) {
      attempt = this.acquireOnce(accountId).finally(() => this.acquiring.delete(accountId));
      this.acquiring.set(accountId, attempt);
    }
    const result = await withTimeout(attempt, this.opts.callTimeoutMs ?? ACQUIRE_TIMEOUT_MS, `lease acquire of ${accountId}`);
    if (result.acquired) this.grants.set(accountId, result.grant);
    else this.grants.delete(accountId);
    return result;
  }

  private acquireOnce(accountId: string): Promise<AcquireResult> {
    const me = this.identity;
    return this.db.runTransaction(async (tx): Promise<AcquireResult> => {
      const snap = await tx.get(this.leaseRef(accountId));
      const lease = snap.exists ? (snap.data() as LeaseDoc) : null;
      if (lease && lease.holder === me.instanceId && lease.incarnation === me.incarnation) {
        return { acquired: true, grant: { accountId, instanceId: me.instanceId, epoch: lease.epoch, incarnation: me.incarnation }, tookOverFrom: null };
      }
      // After a kill -9 on this disk the dead process's transactions still hold Firestore locks
      // on its leases until Firestore expires them (about a minute): a takeover write would wait
      // that long. Its leases are adopted as they stand instead: only read, which those locks
      // allow. Safe because the host lock proves that incarnation is gone; the heartbeat names
      // it (`adoptedIncarnations`) so other instances keep counting the lease as alive.
      if (lease?.holder === me.instanceId && lease.incarnation && this.opts.adopt?.includes(lease.incarnation)) {
        return { acquired: true, grant: { accountId, instanceId: me.instanceId, epoch: lease.epoch, incarnation: lease.incarnation }, tookOverFrom: null };
      }
      if (lease?.holder) {
        const verdict = await this.holderVerdict(tx, lease);
        if (!verdict.dead) return { acquired: false, holder: lease.holder, retryAfterMs: verdict.retryAfterMs };
      } else if (lease?.handoverTo && lease.handoverTo !== me.instanceId) {
        // Handed over to another instance, which restores and connects it within seconds. Ours
        // only if it never does: the reservation is timed by our clock, like a holder's heartbeat.
        const age = this.observedAge(snap, `lease/${accountId}`);
        if (age < this.handoverReserveMs) return { acquired: false, holder: lease.handoverTo, retryAfterMs: this.handoverReserveMs - age };
      }
      const epoch = (lease?.epoch ?? 0) + 1;
      const doc = {
        holder: me.instanceId,
        incarnation: me.incarnation,
        epoch,
        acquiredAt: FieldValue.serverTimestamp(),
        releasedAt: null,
      };
      if (snap.exists) tx.set(snap.ref, doc);
      else tx.create(snap.ref, doc);
      return { acquired: true, grant: { accountId, instanceId: me.instanceId, epoch, incarnation: me.incarnation }, tookOverFrom: lease?.holder ?? null };
    });
  }

  /**
   * Whether the current holder is provably gone. Never trusts the holder's clock: a heartbeat
   * counts as dead only after it stayed unchanged for the TTL as measured by our clock.
   */
  private async holderVerdict(tx: Transaction, lease: LeaseDoc): Promise<{ dead: true } | { dead: false; retryAfterMs: number }> {
    const hb = await tx.get(this.db.collection(Collections.reconcilers).doc(lease.holder!));
    if (!hb.exists) return { dead: true };
    const data = hb.data() as { incarnation?: string; adoptedIncarnations?: string[]; stoppedAt?: unknown; host?: string; storagePath?: string };
    // The holder's process was replaced by a newer incarnation (which did not adopt its leases),
    // or shut down and said so.
    const current = data.incarnation === lease.incarnation || (data.adoptedIncarnations ?? []).includes(lease.incarnation ?? '');
    if (!current || data.stoppedAt) return { dead: true };
    // It ran on this disk: we hold the disk's lock, so it cannot be running any more.
    if (this.opts.hostLockHeld && data.host === this.identity.host && data.storagePath === this.identity.storagePath) {
      return { dead: true };
    }
    const age = this.observedAge(hb);
    if (age >= this.opts.ttlMs) return { dead: true };
    return { dead: false, retryAfterMs: this.opts.ttlMs - age };
  }

  /** How long `doc` has looked unchanged to us (0 the first time we see this version of it). */
  private observedAge(doc: DocumentSnapshot, key = doc.id): number {
    const version = `${doc.updateTime?.toMillis() ?? 0}`;
    const now = this.now();
    const seen = this.observed.get(key);
    if (!seen || seen.version !== version) {
      this.observed.set(key, { version, seenAt: now });
      return 0;
    }
    return now - seen.seenAt;
  }

  /**
   * Runs `write` in a transaction that first proves we still own the account. Reads done by
   * `write` must come through the transaction it is given (Firestore wants reads before writes).
   */
  fenced<T>(accountId: string, write: (tx: Transaction, owner: Owner) => Promise<T> | T): Promise<T> {
    return this.fencedGetAll(accountId, [], (tx, owner) => write(tx, owner));
  }

  /**
   * `fenced` for a read-modify-write of known documents: the lease and `refs` come back in one
   * read (one round trip fewer per transaction, which is what a busy outbox pays per message).
   */
  async fencedGetAll<T>(accountId: string, refs: DocumentReference[], write: (tx: Transaction, owner: Owner, snaps: DocumentSnapshot[]) => Promise<T> | T): Promise<T> {
    const grant = this.grants.get(accountId);
    if (!grant) throw new StaleOwnerError(accountId, 'no lease held');
    return this.db.runTransaction(async (tx) => {
      const [lease, ...snaps] = await tx.getAll(this.leaseRef(accountId), ...refs);
      this.checkLease(lease!, grant);
      return write(tx, { instanceId: grant.instanceId, epoch: grant.epoch }, snaps);
    });
  }

  /**
   * `fencedGetAll` for several accounts in one transaction (one commit carries writes of many
   * accounts, which is what a busy fleet pays per commit). `write` gets the owner of each account
   * whose lease still holds; an account whose lease is gone is reported in `stale` and must not be
   * written for.
   */
  async fencedGetAllMany<T>(
    accountIds: readonly string[],
    refs: DocumentReference[],
    write: (tx: Transaction, owners: ReadonlyMap<string, Owner>, snaps: DocumentSnapshot[]) => Promise<T> | T,
  ): Promise<{ result: T; stale: Map<string, StaleOwnerError> }> {
    return this.db.runTransaction(async (tx) => {
      const stale = new Map<string, StaleOwnerError>();
      const grants: LeaseGrant[] = [];
      for (const accountId of accountIds) {
        const grant = this.grants.get(accountId);
        if (grant) grants.push(grant);
        else stale.set(accountId, new StaleOwnerError(accountId, 'no lease held'));
      }
      const wanted = [...grants.map((g) => this.leaseRef(g.accountId)), ...refs];
      const all = wanted.length > 0 ? await tx.getAll(...wanted) : [];
      const owners = new Map<string, Owner>();
      grants.forEach((grant, i) => {
        try {
          this.checkLease(all[i]!, grant);
          owners.set(grant.accountId, { instanceId: grant.instanceId, epoch: grant.epoch });
        } catch (err) {
          if (!(err instanceof StaleOwnerError)) throw err;
          stale.set(grant.accountId, err);
        }
      });
      return { result: await write(tx, owners, all.slice(grants.length)), stale };
    });
  }

  async assertOwner(tx: Transaction, grant: LeaseGrant): Promise<void> {
    this.checkLease(await tx.get(this.leaseRef(grant.accountId)), grant);
  }

  private checkLease(snap: DocumentSnapshot, grant: LeaseGrant): void {
    const lease = snap.data() as LeaseDoc | undefined;
    if (!lease || lease.holder !== this.identity.instanceId || lease.incarnation !== grant.incarnation || lease.epoch !== grant.epoch) {
      this.grants.delete(grant.accountId);
      const now = lease ? `held by ${lease.holder ?? 'nobody'} at epoch ${lease.epoch}` : 'lease missing';
      throw new StaleOwnerError(grant.accountId, `${now}; ours was epoch ${grant.epoch}`);
    }
  }

  /**
   * Gives the lease to `target` (a graceful handover: the session is closed and backed up): the
   * lease is free, reserved for the target for HANDOVER_RESERVE_MS. False when it was not ours.
   */
  async handOver(accountId: string, target: string): Promise<boolean> {
    const grant = this.grants.get(accountId);
    this.grants.delete(accountId);
    if (!grant) return false;
    return withTimeout(
      this.db.runTransaction(async (tx) => {
        await this.assertOwner(tx, grant);
        tx.update(this.leaseRef(accountId), { holder: null, incarnation: null, releasedAt: FieldValue.serverTimestamp(), handoverTo: target });
        return true;
      }),
      this.opts.callTimeoutMs ?? ACQUIRE_TIMEOUT_MS,
      `lease handover of ${accountId}`,
    ).catch((err: unknown) => {
      if (err instanceof StaleOwnerError) return false;
      throw err;
    });
  }

  /**
   * Releases leases so another process may take them at once. Each release checks it still
   * holds the lease (a lease taken over meanwhile is left alone).
   */
  async release(accountIds: string[] = this.heldAccounts()): Promise<void> {
    await Promise.all(
      accountIds.map(async (accountId) => {
        const grant = this.grants.get(accountId);
        this.grants.delete(accountId);
        if (!grant) return;
        await this.db
          .runTransaction(async (tx) => {
            await this.assertOwner(tx, grant);
            tx.update(this.leaseRef(accountId), { holder: null, incarnation: null, releasedAt: FieldValue.serverTimestamp() });
          })
          .catch((err: unknown) => {
            if (!(err instanceof StaleOwnerError)) throw err;
          });
      }),
    );
  }
}
