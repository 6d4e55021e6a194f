/**
 * Moves accounts between live reconcilers by graceful handover (issue 13): a few at a time, to
 * even out the spread when an instance joins (rebalancing), or all of them when this instance
 * drains (an operator's drainRequestedAt, or a SIGTERM with DRAIN_ON_SIGTERM).
 *
 * No coordinator: every instance plans from the same heartbeats (placement.ts) and only the most
 * loaded one gives, to the least loaded one with room, half the difference at most. The counts it
 * reads lag by up to a heartbeat; moves it made that the receiver's heartbeat does not list yet
 * are added to the receiver's count, so two rounds never send one instance more than it should get.
 * An account that moved is not moved by rebalancing again for REBALANCE_MIN_HOLD_MS (no
 * ping-pong), and one with a send in flight is never moved.
 */
import type { ReconcilerDoc } from '@wafleet/contract';
import type { Logger } from 'pino';
import { mostRoomFor, rendezvousWeight, type Placement } from './placement.ts';

export type MoveReason = 'rebalance' | 'drain';

export interface PlanPeer {
  instanceId: string;
  maxAccounts: number;
  /** Accounts it drives, as its heartbeat says plus our moves it cannot show yet. */
  used: number;
}

export interface PlanInput {
  self: string;
  /** Accounts this instance drives. */
  used: number;
  draining: boolean;
  /** Live peers that take accounts. */
  peers: readonly PlanPeer[];
  /** Accounts of ours that may move now. */
  candidates: readonly string[];
  maxMoves: number;
}

export interface Plan {
  moves: Array<{ accountId: string; to: string }>;
  /** Draining, with accounts left and no live peer with a free slot. */
  blocked: boolean;
}

/** Which of our accounts go where this round (pure: see rebalancer.test.ts). */
export function planMoves(input: PlanInput): Plan {
  const free = new Map(input.peers.map((p) => [p.instanceId, p.maxAccounts - p.used]));
  const moves: Plan['moves'] = [];
  if (input.draining) {
    for (const accountId of input.candidates) {
      if (moves.length >= input.maxMoves) break;
      const to = mostRoomFor(accountId, [...free].map(([instanceId, f]) => ({ instanceId, free: f })));
      if (!to) return { moves, blocked: moves.length === 0 };
      moves.push({ accountId, to });
      free.set(to, free.get(to)! - 1);
    }
    return { moves, blocked: false };
  }
  // Only the most loaded instance gives (ties: the smallest id), so instances reading the same
  // heartbeats never all give to one receiver at once.
  const byLoad = (a: { id: string; used: number }, b: { id: string; used: number }) => b.used - a.used || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  const everyone = [{ id: input.self, used: input.used }, ...input.peers.map((p) => ({ id: p.instanceId, used: p.used }))].sort(byLoad);
  if (everyone[0]!.id !== input.self) return { moves, blocked: false };
  const receivers = input.peers.filter((p) => free.get(p.instanceId)! > 0).map((p) => ({ id: p.instanceId, used: p.used })).sort(byLoad);
  const to = receivers[receivers.length - 1];
  if (!to) return { moves, blocked: false };
  const diff = input.used - to.used;
  const n = Math.min(input.maxMoves, Math.floor(diff / 2), free.get(to.id)!, input.candidates.length);
  if (diff < 2 || n <= 0) return { moves, blocked: false };
  const chosen = [...input.candidates].sort((a, b) => (rendezvousWeight(b, to.id) > rendezvousWeight(a, to.id) ? 1 : -1)).slice(0, n);
  return { moves: chosen.map((accountId) => ({ accountId, to: to.id })), blocked: false };
}

export interface RebalancerOptions {
  self: string;
  placement: Placement;
  /** Accounts this instance drives now. */
  used: () => number;
  /** Accounts of ours that may move for `why` now (held, outbox idle; for rebalancing also connected and held long enough). */
  candidates: (why: MoveReason) => string[];
  handOver: (accountId: string, to: string, why: MoveReason) => Promise<boolean>;
  /** REBALANCE=on. A drain runs either way. */
  rebalance: boolean;
  /** How often a round runs (a heartbeat period: the counts change no faster). */
  everyMs: number;
  /** Handovers per round. */
  maxMoves?: number;
  log: Logger;
  now?: () => number;
}

/** A move the receiver's heartbeat still does not show after this is not counted any more (it never took it). */
const MOVE_PENDING_MAX_MS = 60_000;
const DEFAULT_MAX_MOVES = 3;

export class Rebalancer {
  private timer: NodeJS.Timeout | null = null;
  private round: Promise<void> | null = null;
  private stopped = false;
  private blocked = false;
  private readonly moves: Array<{ accountId: string; to: string; at: number }> = [];
  private readonly now: () => number;
  private drainLogged = false;

  constructor(private readonly o: RebalancerOptions) {
    this.now = o.now ?? Date.now;
  }

  start(): void {
    this.schedule(this.o.everyMs);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  /** A round soon (a drain was asked for): not a full period later. */
  poke(): void {
    if (!this.stopped && !this.round) this.schedule(0);
  }

  /** For the heartbeat: where a drain stands, or null. */
  drainState(): ReconcilerDoc['drain'] {
    const cause = this.o.placement.drainCause;
    if (!cause) return null;
    const left = this.o.used();
    return { state: left === 0 ? 'drained' : this.blocked ? 'blocked' : 'draining', accountsLeft: left, cause };
  }

  /** Rounds back to back until nothing is left here, or `timeoutMs`; true when drained. */
  async drain(timeoutMs: number): Promise<boolean> {
    const deadline = this.now() + timeoutMs;
    while (this.o.used() > 0 && this.now() < deadline) {
      await (this.round ?? this.runRound());
      if (this.o.used() === 0) break;
      // The receivers' counts and our outboxes change on their own: look again shortly.
      await new Promise((r) => setTimeout(r, Math.min(1_000, Math.max(0, deadline - this.now()))).unref());
    }
    return this.o.used() === 0;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void (this.round ?? this.runRound()).finally(() => this.schedule(this.o.everyMs));
    }, delayMs);
    this.timer.unref();
  }

  private runRound(): Promise<void> {
    this.round = this.once()
      .catch((err: unknown) => this.o.log.warn({ err }, 'rebalancing round failed'))
      .finally(() => {
        this.round = null;
      });
    return this.round;
  }

  private async once(): Promise<void> {
    const { placement, log } = this.o;
    const draining = placement.draining;
    if (!draining) {
      this.blocked = false;
      this.drainLogged = false;
      if (!this.o.rebalance) return;
    } else if (!this.drainLogged) {
      this.drainLogged = true;
      log.warn({ cause: placement.drainCause, accounts: this.o.used() }, 'draining: handing every account over to the other reconcilers');
    }
    const now = this.now();
    while (this.moves.length > 0 && now - this.moves[0]!.at > MOVE_PENDING_MAX_MS) this.moves.shift();
    // A move counts for its receiver until the receiver's heartbeat lists the account.
    const peers = placement.livePeers().map((p) => ({
      instanceId: p.instanceId,
      maxAccounts: p.maxAccounts,
      used: p.slotsUsed + this.moves.filter((m) => m.to === p.instanceId && !p.accounts.has(m.accountId)).length,
    }));
    const why: MoveReason = draining ? 'drain' : 'rebalance';
    const plan = planMoves({ self: this.o.self, used: this.o.used(), draining, peers, candidates: this.o.candidates(why), maxMoves: this.o.maxMoves ?? DEFAULT_MAX_MOVES });
    if (draining && plan.blocked !== this.blocked) {
      this.blocked = plan.blocked;
      if (plan.blocked) log.warn({ accounts: this.o.used() }, 'draining is blocked: no other live reconciler has a free slot');
    }
    if (plan.moves.length === 0) return;
    log.info({ why, moves: plan.moves }, why === 'drain' ? 'draining: handing accounts over' : 'rebalancing: handing accounts over to a reconciler that drives fewer');
    const results = await Promise.all(plan.moves.map(({ accountId, to }) => this.o.handOver(accountId, to, why).then((moved) => ({ accountId, to, moved }))));
    const at = this.now();
    for (const r of results) if (r.moved) this.moves.push({ accountId: r.accountId, to: r.to, at });
  }
}
