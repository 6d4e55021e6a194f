/**
 * Where an account nobody drives should go, across several reconcilers (issue 13). Each instance
 * sees the others through their heartbeats (`reconcilers/{id}`: capacity and slots used, written
 * every LEASE_RENEW_MS) and decides for itself, with no coordinator:
 *
 * - an account whose credentials are on this disk is taken here at once (it stays where its
 *   credentials are: no restore, no QR);
 * - otherwise the live instance with the most free slots goes first, ties broken by rendezvous
 *   hashing of (account, instance), so a fleet starting together spreads evenly however stale the
 *   counts it reads; any other instance with room waits `deferMs` and takes the account only if
 *   it is still free then (the preferred one may be dead, or its view of us stale);
 * - an instance without a free slot leaves the lease alone while a live peer has one.
 *
 * - a lease another instance handed over to us (rebalancing, drain: `handoverTo`, see
 *   lease-manager.ts `handOver`) is taken at once when a slot is free, whatever the counts say;
 * - a draining instance (its `drainRequestedAt`, or a drain on SIGTERM) takes nothing new, and the
 *   others count it as having no room.
 *
 * A peer counts as live while its heartbeat keeps changing by our clock (as lease-manager.ts
 * judges holders): never by comparing its clock with ours.
 */
import { createHash } from 'node:crypto';
import { buildQuery, Collections } from '@wafleet/contract';
import type { DocumentSnapshot, Firestore, QuerySnapshot } from 'firebase-admin/firestore';
import type { Logger } from 'pino';
import { ResilientListener } from '../util/resilient-listener.ts';

export interface PeerCapacity {
  instanceId: string;
  maxAccounts: number;
  slotsUsed: number;
  /** The accounts its heartbeat says it holds. */
  accounts: ReadonlySet<string>;
}

/** What this instance knows of its own slots (queue/capacity-gate.ts). */
export interface LocalSlots {
  readonly limit: number;
  readonly used: number;
  has(accountId: string): boolean;
}

interface Observed extends PeerCapacity {
  version: string;
  seenAt: number;
  ttlMs: number;
  stopped: boolean;
  draining: boolean;
}

/** A heartbeat that asks for a drain, or reports one (any state): that instance takes nothing new. */
function drainingIn(data: { drainRequestedAt?: unknown; drain?: unknown }): boolean {
  return (data.drainRequestedAt !== null && data.drainRequestedAt !== undefined) || (data.drain !== null && data.drain !== undefined);
}

/** 64 bits of sha256(account, instance): the rendezvous weight. */
export function rendezvousWeight(accountId: string, instanceId: string): bigint {
  return createHash('sha256').update(`${accountId}\u0000${instanceId}`).digest().readBigUInt64BE(0);
}

/**
 * Where `accountId` goes among `candidates`: the most free slots, ties broken by rendezvous
 * weight (every instance computes the same answer); null when none has a free slot.
 */
export function mostRoomFor(accountId: string, candidates: Iterable<{ instanceId: string; free: number }>): string | null {
  let best: { instanceId: string; free: number; w: bigint } | null = null;
  for (const c of candidates) {
    if (c.free <= 0) continue;
    const w = rendezvousWeight(accountId, c.instanceId);
    if (!best || c.free > best.free || (c.free === best.free && w > best.w)) best = { ...c, w };
  }
  return best?.instanceId ?? null;
}

export interface PlacementOptions {
  self: string;
  slots: LocalSlots;
  /** How long an instance that is not preferred waits before it takes a free account anyway. */
  deferMs: number;
  now?: () => number;
}

export class Placement {
  private readonly peers = new Map<string, Observed>();
  private readonly deferredUntil = new Map<string, number>();
  /** Leases handed over to us and not taken yet. */
  private readonly offered = new Set<string>();
  private readonly now: () => number;
  private peerStopped = false;
  /** Our own heartbeat document asks for a drain (an operator's drainRequestedAt). */
  private drainRequested = false;
  /** A drain on SIGTERM (DRAIN_ON_SIGTERM): set by the app, never cleared. */
  private shutdownDrain = false;

  constructor(private readonly o: PlacementOptions) {
    this.now = o.now ?? Date.now;
  }

  /** A heartbeat document was deleted: that instance is gone. */
  forgetPeer(instanceId: string): void {
    this.peers.delete(instanceId);
  }

  /** Whether this instance is draining: it takes no account, and hands over those it drives. */
  get draining(): boolean {
    return this.drainRequested || this.shutdownDrain;
  }

  /** Why it drains: an operator asked, or it is shutting down (DRAIN_ON_SIGTERM). */
  get drainCause(): 'operator' | 'shutdown' | null {
    return this.shutdownDrain ? 'shutdown' : this.drainRequested ? 'operator' : null;
  }

  /** The drain on SIGTERM starts. */
  drainForShutdown(): void {
    this.shutdownDrain = true;
  }

  /** A heartbeat document as the listener delivered it. */
  observe(doc: DocumentSnapshot): void {
    if (doc.id === this.o.self) {
      // The operator's word on our own document (heartbeats carry it over, see heartbeat.ts).
      const at = (doc.data() as { drainRequestedAt?: unknown } | undefined)?.drainRequestedAt;
      this.drainRequested = at !== null && at !== undefined;
      return;
    }
    const data = doc.data() as { maxAccounts?: unknown; slotsUsed?: unknown; leaseTtlMs?: unknown; stoppedAt?: unknown; drainRequestedAt?: unknown; drain?: unknown; accounts?: unknown };
    const version = `${doc.updateTime?.toMillis() ?? 0}`;
    const before = this.peers.get(doc.id);
    const stopped = data.stoppedAt !== null && data.stoppedAt !== undefined;
    if (stopped && before && !before.stopped) this.peerStopped = true;
    const maxAccounts = typeof data.maxAccounts === 'number' ? data.maxAccounts : 0;
    const slotsUsed = typeof data.slotsUsed === 'number' ? data.slotsUsed : 0;
    this.peers.set(doc.id, {
      instanceId: doc.id,
      // An older reconciler does not say: it takes part in no placement (zero capacity).
      maxAccounts,
      slotsUsed,
      version,
      seenAt: before && before.version === version ? before.seenAt : this.now(),
      ttlMs: typeof data.leaseTtlMs === 'number' ? data.leaseTtlMs : 0,
      stopped,
      draining: drainingIn(data),
      accounts: new Set(data.accounts && typeof data.accounts === 'object' ? Object.keys(data.accounts) : []),
    });
  }

  /** A lease was handed over to us (true) or the offer is gone (taken, or reserved no more). */
  offer(accountId: string, on: boolean): void {
    if (on) this.offered.add(accountId);
    else this.offered.delete(accountId);
  }

  /**
   * Whether a peer shut down (gracefully: its leases are free at once) since the last call: the
   * accounts it drove should be looked at now, not when their lease's retry time comes.
   */
  takePeerStopped(): boolean {
    const stopped = this.peerStopped;
    this.peerStopped = false;
    return stopped;
  }

  /** Live peers that take accounts (not draining) and their capacity, by our clock. */
  livePeers(): PeerCapacity[] {
    const now = this.now();
    return [...this.peers.values()]
      .filter((p) => !p.stopped && !p.draining && now - p.seenAt < p.ttlMs)
      .map(({ instanceId, maxAccounts, slotsUsed, accounts }) => ({ instanceId, maxAccounts, slotsUsed, accounts }));
  }

  /** The instance a free account should go to, or null when no live instance has a free slot. */
  preferredFor(accountId: string): string | null {
    // A slot this account already holds here counts as free for it.
    const mine = this.o.slots.limit - this.o.slots.used + (this.o.slots.has(accountId) ? 1 : 0);
    return mostRoomFor(accountId, [{ instanceId: this.o.self, free: mine }, ...this.livePeers().map((p) => ({ instanceId: p.instanceId, free: p.maxAccounts - p.slotsUsed }))]);
  }

  /** A live peer with a free slot, if any: an account that waits here for a slot belongs there. */
  peerWithRoom(): string | null {
    return this.livePeers().find((p) => p.maxAccounts - p.slotsUsed > 0)?.instanceId ?? null;
  }

  /**
   * Before acquiring the lease of an account we do not hold: null to go ahead now, or how long to
   * wait first. `localCredentials`: the account's credentials are on this disk.
   */
  beforeAcquire(accountId: string, localCredentials: boolean): number | null {
    // Draining: nothing new here (a cancelled drain looks again at the next pass).
    if (this.draining) return this.o.deferMs;
    // Handed over to us: ours to take now, even when the giver's counts were stale and our slots
    // are full (the account then goes on at once to a peer with room: waitForCapacity), since
    // everyone else leaves the lease alone for HANDOVER_RESERVE_MS.
    if (this.offered.has(accountId)) return null;
    const hasSlot = this.o.slots.has(accountId) || this.o.slots.used < this.o.slots.limit;
    if (!hasSlot) {
      // Full here: a peer with room takes it; with none, we take it and say NoCapacity.
      this.deferredUntil.delete(accountId);
      return this.peerWithRoom() ? this.o.deferMs : null;
    }
    // Already driven here (its slot is held), or its credentials are on this disk: it stays.
    if (localCredentials || this.o.slots.has(accountId)) return null;
    const preferred = this.preferredFor(accountId);
    if (preferred === null || preferred === this.o.self) {
      this.deferredUntil.delete(accountId);
      return null;
    }
    const now = this.now();
    const until = this.deferredUntil.get(accountId);
    if (until === undefined) {
      this.deferredUntil.set(accountId, now + this.o.deferMs);
      return this.o.deferMs;
    }
    if (now < until) return until - now;
    // The preferred instance had its chance and the lease may still be free: ours now.
    this.deferredUntil.delete(accountId);
    return null;
  }

  /** The account went away or is ours now: no deferral or offer to remember. */
  forget(accountId: string): void {
    this.deferredUntil.delete(accountId);
    this.offered.delete(accountId);
  }
}

/** Feeds a Placement from a live listener on `reconcilers` (a few documents, one per instance). */
export class PeerWatcher {
  private readonly listener: ResilientListener;
  private first: (() => void) | null = null;

  /** `onChange`: after each snapshot (e.g. to wake accounts waiting for a slot when a peer has room). */
  constructor(db: Firestore, placement: Placement, log: Logger, onChange: () => void = () => {}) {
    this.listener = new ResilientListener({
      name: 'reconcilers',
      query: () => db.collection(Collections.reconcilers),
      onSnapshot: (snap: QuerySnapshot) => {
        for (const change of snap.docChanges()) {
          if (change.type === 'removed') placement.forgetPeer(change.doc.id);
          else placement.observe(change.doc);
        }
        this.first?.();
        this.first = null;
        onChange();
      },
      log,
    });
  }

  /**
   * Subscribes; resolves with the first snapshot, or after `timeoutMs` (the view then fills in
   * later: until it does, this instance places as if it were alone).
   */
  start(timeoutMs: number): Promise<void> {
    const first = new Promise<void>((resolve) => {
      this.first = resolve;
      setTimeout(resolve, timeoutMs).unref();
    });
    this.listener.subscribe();
    return first;
  }

  stop(): void {
    this.listener.stop();
  }
}

/**
 * Feeds a Placement the leases handed over to this instance (`leases` where handoverTo is us; a
 * handful at a time) and asks for a pass of each at once: a handover costs seconds, not the
 * lease retry of whoever happens to look.
 */
export class HandoverWatcher {
  private readonly listener: ResilientListener;

  constructor(db: Firestore, self: string, placement: Placement, log: Logger, wake: (accountId: string) => void) {
    this.listener = new ResilientListener({
      name: 'handed-over leases',
      query: () => buildQuery(db.collection(Collections.leases), 'leasesHandedOverTo', [self]),
      onSnapshot: (snap: QuerySnapshot) => {
        for (const change of snap.docChanges()) {
          const free = change.type !== 'removed' && !change.doc.get('holder');
          placement.offer(change.doc.id, free);
          if (free) wake(change.doc.id);
        }
      },
      log,
    });
  }

  start(): void {
    this.listener.subscribe();
  }

  stop(): void {
    this.listener.stop();
  }
}
