/**
 * Exponential backoff with jitter. Jitter matters more than the curve here: ~30 accounts that fail
 * together (a network blip, a WhatsApp outage) must not retry together, or every retry becomes a
 * synchronized burst of logins — the thing that gets accounts flagged.
 */

export type Jitter = 'full' | 'equal' | 'none';

export interface BackoffOptions {
  /** Delay ceiling of the first retry (attempt 0). */
  baseMs: number;
  /** Ceiling for every attempt, applied before jitter. */
  maxMs: number;
  /**
   * 'full': uniform in [0, ceiling) — best at spreading a herd (AWS "full jitter").
   * 'equal': uniform in [ceiling/2, ceiling) — spreads less but guarantees a minimum wait.
   * 'none': exactly the ceiling; for tests and deterministic schedules.
   * Default 'full'.
   */
  jitter?: Jitter;
  /** Growth factor per attempt. Default 2. */
  factor?: number;
  /** Source of randomness in [0, 1); default Math.random. Inject for deterministic tests. */
  random?: () => number;
}

/** The ceiling for `attempt` (0-based) before jitter: min(maxMs, baseMs * factor^attempt). */
export function backoffCeiling(attempt: number, { baseMs, maxMs, factor = 2 }: BackoffOptions): number {
  validate(baseMs, maxMs, factor);
  const n = Number.isFinite(attempt) && attempt > 0 ? Math.floor(attempt) : 0;
  // factor^n overflows to Infinity for large n; min() then yields maxMs, which is what we want.
  return Math.min(maxMs, baseMs * factor ** n);
}

/** Milliseconds to wait before retry number `attempt` (0-based). Always an integer in [0, maxMs]. */
export function backoffDelay(attempt: number, options: BackoffOptions): number {
  const ceiling = backoffCeiling(attempt, options);
  const r = clampUnit((options.random ?? Math.random)());
  switch (options.jitter ?? 'full') {
    case 'full':
      return Math.floor(r * ceiling);
    case 'equal':
      return Math.floor(ceiling / 2 + (r * ceiling) / 2);
    case 'none':
      return Math.floor(ceiling);
  }
}

function validate(baseMs: number, maxMs: number, factor: number): void {
  if (!(Number.isFinite(baseMs) && baseMs >= 0)) throw new RangeError(`backoff: baseMs must be a finite number >= 0, got ${baseMs}`);
  if (!(Number.isFinite(maxMs) && maxMs >= baseMs)) throw new RangeError(`backoff: maxMs must be finite and >= baseMs, got ${maxMs}`);
  if (!(Number.isFinite(factor) && factor >= 1)) throw new RangeError(`backoff: factor must be >= 1, got ${factor}`);
}

// A bad random source (returning 1, NaN or negatives) must never produce a delay above the ceiling.
function clampUnit(r: number): number {
  if (!(r >= 0)) return 0;
  return r >= 1 ? 1 - Number.EPSILON : r;
}
