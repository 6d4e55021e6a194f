/**
 * What the page measures about itself, for the browser tests and the figures (no personal data):
 * when each status change reached the screen (the frame after the DOM was updated) next to the
 * status's server write time, and when the fleet was first shown.
 */
export interface StatusRender {
  id: string;
  phase: string;
  /** accountStatus.updatedAt: the server time of the write. */
  writtenAt: number | null;
  /** Date.now() in the frame after the row was updated. */
  shownAt: number;
}

interface Probe {
  statusRenders: StatusRender[];
  /** performance.now() when the fleet was first shown with every account's status. */
  fleetShownAt: number | null;
  rowsCreated: number;
  /** How long applying one snapshot to the fleet table took (ms), the longest and the last 200. */
  applyMs: number[];
}

const probe: Probe = { statusRenders: [], fleetShownAt: null, rowsCreated: 0, applyMs: [] };
(globalThis as unknown as { __wafleet: Probe }).__wafleet = probe;

let pending: Array<Omit<StatusRender, 'shownAt'>> = [];

export function statusRendered(id: string, phase: string, writtenAt: number | null): void {
  if (pending.length === 0) {
    requestAnimationFrame(() => {
      const shownAt = Date.now();
      for (const p of pending) probe.statusRenders.push({ ...p, shownAt });
      if (probe.statusRenders.length > 1000) probe.statusRenders.splice(0, 500);
      pending = [];
    });
  }
  pending.push({ id, phase, writtenAt });
}

export function fleetShown(): void {
  if (probe.fleetShownAt === null) requestAnimationFrame(() => (probe.fleetShownAt = performance.now()));
}

export function rowCreated(): void {
  probe.rowsCreated++;
}

export function applied(ms: number): void {
  probe.applyMs.push(ms);
  if (probe.applyMs.length > 200) probe.applyMs.shift();
}
