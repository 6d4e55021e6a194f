/**
 * Frame handling and Signal decryption are chains of promises. A burst on many connections would
 * otherwise run as one long microtask stretch and starve timers and I/O (receipt timers, ping
 * replies, the control API) for a second or more. Awaiting this before each unit of work yields
 * to the event loop once the current stretch has run for SLICE_MS. All waiters share one gate per
 * loop turn, so a turn's total stretch stays near SLICE_MS however many chains are waiting.
 */
const SLICE_MS = 10;
let sliceStarted = performance.now();
let gate: Promise<void> | undefined;

export function yieldIfBusy(): Promise<void> | undefined {
  if (performance.now() - sliceStarted < SLICE_MS) return undefined;
  gate ??= new Promise<void>((resolve) =>
    setImmediate(() => {
      gate = undefined;
      sliceStarted = performance.now();
      resolve();
    }),
  );
  return gate;
}
