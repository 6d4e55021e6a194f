/**
 * At most MAX_ACCOUNTS accounts are driven by one process, however many documents `accounts`
 * holds: the callable refuses creates past the cap, but the Firebase console and the Admin SDK
 * bypass it, and a VM sized for 30 sessions must not try to hold 40. A slot is held from the
 * first pass that drives the account until the account is deleted, removed, or owned elsewhere;
 * accounts without one wait (and are told) and are woken in turn when a slot frees.
 */
export class CapacityGate {
  private readonly holders = new Set<string>();
  private readonly waiting = new Set<string>();

  constructor(
    readonly limit: number,
    private readonly wake: (accountId: string) => void,
  ) {}

  /** True when the account has (or now gets) a slot; otherwise it waits for one. */
  take(accountId: string): boolean {
    if (this.holders.has(accountId)) return true;
    if (this.holders.size < this.limit) {
      this.holders.add(accountId);
      this.waiting.delete(accountId);
      return true;
    }
    this.waiting.add(accountId);
    return false;
  }

  /** The account no longer needs a slot (or stopped waiting for one). */
  release(accountId: string): void {
    this.waiting.delete(accountId);
    if (!this.holders.delete(accountId)) return;
    // Wake every waiter: passes run in any order and the first to come takes the slot.
    for (const id of this.waiting) this.wake(id);
  }

  /** Whether the account holds a slot. */
  has(accountId: string): boolean {
    return this.holders.has(accountId);
  }

  /** Wakes every account waiting for a slot (e.g. a peer with room appeared: placement.ts). */
  wakeWaiting(): void {
    for (const id of this.waiting) this.wake(id);
  }

  get used(): number {
    return this.holders.size;
  }

  get waitingCount(): number {
    return this.waiting.size;
  }
}
