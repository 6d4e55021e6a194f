/** Placement across reconcilers (lease/placement.ts): pure decisions over observed heartbeats. */
import type { DocumentSnapshot } from 'firebase-admin/firestore';
import { describe, expect, it } from 'vitest';
import { Placement, type LocalSlots } from '../src/lease/placement.ts';

class Slots implements LocalSlots {
  readonly held = new Set<string>();
  constructor(readonly limit: number) {}
  get used() {
    return this.held.size;
  }
  has(id: string) {
    return this.held.has(id);
  }
}

let version = 0;
/** A heartbeat document as the listener delivers it; each call is a new write (new updateTime). */
function beat(id: string, fields: { maxAccounts?: number; slotsUsed?: number; leaseTtlMs?: number; stoppedAt?: unknown; drainRequestedAt?: unknown; drain?: unknown }): DocumentSnapshot {
  const data = { leaseTtlMs: 10_000, stoppedAt: null, ...fields };
  const at = ++version;
  return { id, exists: true, data: () => data, updateTime: { toMillis: () => at } } as unknown as DocumentSnapshot;
}

function setup(limit = 5) {
  let now = 1_000_000;
  const slots = new Slots(limit);
  const placement = new Placement({ self: 'a', slots, deferMs: 5_000, now: () => now });
  return { slots, placement, advance: (ms: number) => (now += ms) };
}

describe('Placement', () => {
  it('alone: every free account is ours at once', () => {
    const { placement } = setup();
    expect(placement.preferredFor('x')).toBe('a');
    expect(placement.beforeAcquire('x', false)).toBeNull();
  });

  it('the instance with the most free slots goes first; the others wait, then take it if it is still free', () => {
    const { slots, placement, advance } = setup();
    slots.held.add('o1').add('o2');
    placement.observe(beat('b', { maxAccounts: 5, slotsUsed: 0 }));
    expect(placement.preferredFor('x')).toBe('b');
    expect(placement.beforeAcquire('x', false)).toBe(5_000);
    advance(3_000);
    expect(placement.beforeAcquire('x', false)).toBe(2_000);
    advance(2_000);
    expect(placement.beforeAcquire('x', false)).toBeNull();
    // Taken (by us or anyone): the next free episode defers again.
    placement.forget('x');
    expect(placement.beforeAcquire('x', false)).toBe(5_000);
  });

  it('credentials on this disk: the account stays here', () => {
    const { slots, placement } = setup();
    slots.held.add('o1');
    placement.observe(beat('b', { maxAccounts: 5, slotsUsed: 0 }));
    expect(placement.beforeAcquire('x', true)).toBeNull();
  });

  it('equal free slots: rendezvous hashing spreads accounts over the instances, the same way on every instance', () => {
    const views = ['a', 'b', 'c'].map((self) => {
      const p = new Placement({ self, slots: new Slots(20), deferMs: 5_000 });
      for (const peer of ['a', 'b', 'c'].filter((i) => i !== self)) p.observe(beat(peer, { maxAccounts: 20, slotsUsed: 0 }));
      return p;
    });
    const chosen = Array.from({ length: 300 }, (_, i) => `acc-${i}`).map((id) => {
      const picks = new Set(views.map((v) => v.preferredFor(id)));
      expect(picks.size).toBe(1); // every instance agrees
      return [...picks][0]!;
    });
    for (const i of ['a', 'b', 'c']) {
      const n = chosen.filter((c) => c === i).length;
      expect(n, i).toBeGreaterThan(70);
      expect(n, i).toBeLessThan(130);
    }
  });

  it('full here: a live peer with room takes it; with none, we take it (and say NoCapacity)', () => {
    const { slots, placement } = setup(2);
    slots.held.add('o1').add('o2');
    expect(placement.beforeAcquire('x', true)).toBeNull();
    placement.observe(beat('b', { maxAccounts: 5, slotsUsed: 5 }));
    expect(placement.peerWithRoom()).toBeNull();
    expect(placement.beforeAcquire('x', false)).toBeNull();
    placement.observe(beat('b', { maxAccounts: 5, slotsUsed: 4 }));
    expect(placement.peerWithRoom()).toBe('b');
    expect(placement.beforeAcquire('x', true)).toBe(5_000);
    // An account that already has a slot here is not affected.
    expect(placement.beforeAcquire('o1', false)).not.toBe(5_000);
  });

  it('a peer whose heartbeat stopped changing for its TTL, or that stopped, takes part no more', () => {
    const { slots, placement, advance } = setup();
    slots.held.add('o1');
    const doc = beat('b', { maxAccounts: 5, slotsUsed: 0 });
    placement.observe(doc);
    expect(placement.livePeers().map((p) => p.instanceId)).toEqual(['b']);
    advance(9_000);
    placement.observe(doc); // the same write delivered again (a re-subscription): not a beat
    advance(1_000);
    expect(placement.livePeers()).toEqual([]);
    expect(placement.preferredFor('x')).toBe('a');
    placement.observe(beat('b', { maxAccounts: 5, slotsUsed: 0 }));
    expect(placement.livePeers()).toHaveLength(1);
    placement.observe(beat('b', { maxAccounts: 5, slotsUsed: 0, stoppedAt: { seconds: 1 } }));
    expect(placement.livePeers()).toEqual([]);
  });

  it('a peer that shuts down is reported once, so its free accounts are looked at now', () => {
    const { placement } = setup();
    expect(placement.takePeerStopped()).toBe(false);
    placement.observe(beat('b', { maxAccounts: 5, slotsUsed: 3 }));
    expect(placement.takePeerStopped()).toBe(false);
    placement.observe(beat('b', { maxAccounts: 5, slotsUsed: 0, stoppedAt: { seconds: 1 } }));
    expect(placement.takePeerStopped()).toBe(true);
    expect(placement.takePeerStopped()).toBe(false);
    // Seen stopped from the start (we started after it stopped): nothing to hurry.
    placement.observe(beat('c', { maxAccounts: 5, slotsUsed: 0, stoppedAt: { seconds: 1 } }));
    expect(placement.takePeerStopped()).toBe(false);
  });

  it('a draining peer (asked to, or reporting a drain) has no room; a draining self takes nothing new', () => {
    const { slots, placement } = setup();
    slots.held.add('o1').add('o2').add('o3');
    placement.observe(beat('b', { maxAccounts: 5, slotsUsed: 0, drainRequestedAt: { seconds: 1 } }));
    expect(placement.livePeers()).toEqual([]);
    expect(placement.preferredFor('x')).toBe('a');
    placement.observe(beat('b', { maxAccounts: 5, slotsUsed: 0, drain: { state: 'draining', accountsLeft: 2, cause: 'shutdown' } }));
    expect(placement.peerWithRoom()).toBeNull();
    placement.observe(beat('b', { maxAccounts: 5, slotsUsed: 0, drainRequestedAt: null, drain: null }));
    expect(placement.peerWithRoom()).toBe('b');

    // Our own document asks for a drain: nothing is acquired here, even with its credentials on this disk.
    expect(placement.draining).toBe(false);
    placement.observe(beat('a', { drainRequestedAt: { seconds: 1 } }));
    expect(placement).toMatchObject({ draining: true, drainCause: 'operator' });
    expect(placement.beforeAcquire('x', true)).toBe(5_000);
    placement.observe(beat('a', { drainRequestedAt: null }));
    expect(placement.draining).toBe(false);
    expect(placement.beforeAcquire('x', true)).toBeNull();
    placement.drainForShutdown();
    expect(placement.drainCause).toBe('shutdown');
  });

  it('a lease handed over to us is taken at once, whatever the counts prefer', () => {
    const { slots, placement } = setup(3);
    slots.held.add('o1').add('o2');
    placement.observe(beat('b', { maxAccounts: 5, slotsUsed: 0 }));
    expect(placement.beforeAcquire('x', false)).toBe(5_000);
    placement.offer('x', true);
    expect(placement.beforeAcquire('x', false)).toBeNull();
    slots.held.add('o3');
    // Full by now (the giver's counts were stale): taken all the same, to be handed on at once to
    // a peer with room (everyone else leaves a reserved lease alone for 30 s).
    expect(placement.beforeAcquire('x', false)).toBeNull();
    placement.forget('x');
    slots.held.delete('o3');
    placement.forget('x');
    expect(placement.beforeAcquire('x', false)).toBe(5_000);
  });

  it('an older reconciler that does not publish its capacity gets nothing placed on it', () => {
    const { slots, placement } = setup();
    slots.held.add('o1').add('o2').add('o3');
    placement.observe(beat('old', {}));
    expect(placement.preferredFor('x')).toBe('a');
    expect(placement.peerWithRoom()).toBeNull();
  });
});
