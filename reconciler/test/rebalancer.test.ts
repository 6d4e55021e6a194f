/** What the rebalancer moves where (lease/rebalancer.ts `planMoves`): pure decisions over heartbeat counts. */
import { describe, expect, it } from 'vitest';
import { planMoves, type PlanInput } from '../src/lease/rebalancer.ts';

const accounts = (n: number, prefix = 'a') => Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(2, '0')}`);
const plan = (over: Partial<PlanInput>) => planMoves({ self: 'vm-a', used: 0, draining: false, peers: [], candidates: [], maxMoves: 3, ...over });

describe('planMoves: rebalancing', () => {
  it('the most loaded instance gives to the least loaded one with room, a few at a time, half the difference at most', () => {
    const p = plan({ used: 10, candidates: accounts(10), peers: [{ instanceId: 'vm-b', maxAccounts: 20, used: 10 }, { instanceId: 'vm-c', maxAccounts: 20, used: 0 }] });
    // vm-a and vm-b tie at 10: the smaller id gives.
    expect(p.moves).toHaveLength(3);
    expect(new Set(p.moves.map((m) => m.to))).toEqual(new Set(['vm-c']));
    expect(plan({ self: 'vm-b', used: 10, candidates: accounts(10), peers: [{ instanceId: 'vm-a', maxAccounts: 20, used: 10 }, { instanceId: 'vm-c', maxAccounts: 20, used: 0 }] }).moves).toEqual([]);
    // Half the difference: 5 vs 2 moves one (4/3), never two (3/4, which would move one back).
    expect(plan({ used: 5, candidates: accounts(5), peers: [{ instanceId: 'vm-b', maxAccounts: 20, used: 2 }] }).moves).toHaveLength(1);
  });

  it('leaves an even spread alone, and never gives to a full instance', () => {
    expect(plan({ used: 5, candidates: accounts(5), peers: [{ instanceId: 'vm-b', maxAccounts: 20, used: 4 }] }).moves).toEqual([]);
    expect(plan({ used: 9, candidates: accounts(9), peers: [{ instanceId: 'vm-b', maxAccounts: 2, used: 2 }] }).moves).toEqual([]);
    // Room for one only.
    expect(plan({ used: 9, candidates: accounts(9), peers: [{ instanceId: 'vm-b', maxAccounts: 3, used: 2 }] }).moves).toHaveLength(1);
  });

  it('moves only candidates (held long enough, connected, outbox idle): none, no move', () => {
    expect(plan({ used: 10, candidates: [], peers: [{ instanceId: 'vm-b', maxAccounts: 20, used: 0 }] }).moves).toEqual([]);
    expect(plan({ used: 10, candidates: ['a-07'], peers: [{ instanceId: 'vm-b', maxAccounts: 20, used: 0 }] }).moves).toEqual([{ accountId: 'a-07', to: 'vm-b' }]);
  });

  it('picks the same accounts for the same view (deterministic)', () => {
    const input = { used: 8, candidates: accounts(8), peers: [{ instanceId: 'vm-b', maxAccounts: 20, used: 0 }] };
    expect(plan(input).moves).toEqual(plan({ ...input, candidates: [...input.candidates].reverse() }).moves);
  });
});

describe('planMoves: draining', () => {
  it('hands accounts to the peers with the most room, spreading them, up to the round size', () => {
    const p = plan({ draining: true, used: 6, candidates: accounts(6), maxMoves: 4, peers: [{ instanceId: 'vm-b', maxAccounts: 10, used: 8 }, { instanceId: 'vm-c', maxAccounts: 10, used: 5 }] });
    expect(p.moves).toHaveLength(4);
    // vm-c has 5 free, vm-b 2: vm-c gets the first three (5→2 free ties vm-b at 2), then either.
    expect(p.moves.slice(0, 3).every((m) => m.to === 'vm-c')).toBe(true);
    expect(p.blocked).toBe(false);
  });

  it('is blocked when no live peer has a free slot, and not while the accounts are just busy', () => {
    expect(plan({ draining: true, used: 3, candidates: accounts(3), peers: [{ instanceId: 'vm-b', maxAccounts: 5, used: 5 }] })).toEqual({ moves: [], blocked: true });
    expect(plan({ draining: true, used: 3, candidates: accounts(3), peers: [] })).toEqual({ moves: [], blocked: true });
    expect(plan({ draining: true, used: 3, candidates: [], peers: [{ instanceId: 'vm-b', maxAccounts: 5, used: 0 }] })).toEqual({ moves: [], blocked: false });
    // Room for part of them: those move, the rest wait for the next round.
    expect(plan({ draining: true, used: 3, candidates: accounts(3), peers: [{ instanceId: 'vm-b', maxAccounts: 5, used: 4 }] }).moves).toHaveLength(1);
  });
});
