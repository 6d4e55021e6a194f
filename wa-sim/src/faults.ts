import { SimInputError } from './errors.ts';
import { isValidNumber, parseJid } from './ids.ts';

export const STREAM_ERROR_CODES = [401, 440, 500, 503, 515] as const;
export type StreamErrorCode = (typeof STREAM_ERROR_CODES)[number];

export type FaultSpec =
  /** `<stream:error>` on the device's open connection (401 = device_removed, 440 = conflict replaced). */
  | { kind: 'stream-error'; code: StreamErrorCode }
  /** `<failure reason=…>` instead of `<success>` at login: 401 logged out, 403 banned, 405 outdated client. */
  | { kind: 'login-failure'; reason: number }
  /** Close the TCP socket without a goodbye (Baileys: 428). */
  | { kind: 'drop' }
  /** Send nothing (not even ping replies) while active (Baileys: 408 after keepAlive + 5 s). */
  | { kind: 'stall' }
  /** Never answer the handshake (no ServerHello with target '*'; no login reply when targeted). */
  | { kind: 'handshake-stall' }
  /** Close the socket during the handshake. */
  | { kind: 'handshake-drop' }
  /** Answer the WebSocket upgrade with an HTTP error (global only: the device is unknown at that point). */
  | { kind: 'reject-upgrade'; status: number }
  /** Ack messages with an error (479 = SMAX_INVALID; Baileys marks the message ERROR). */
  | { kind: 'nack'; error: number; delayMs: number }
  | { kind: 'ack-delay'; ms: number }
  | { kind: 'no-ack' }
  | { kind: 'receipt-delay'; deliveredMs: number | null; readMs: number | null }
  | { kind: 'no-receipts' }
  /** `<ib><downgrade_webclient/></ib>` (Baileys: 411). */
  | { kind: 'downgrade-webclient' };

export type FaultKind = FaultSpec['kind'];

export const FAULT_KINDS: readonly FaultKind[] = [
  'stream-error',
  'login-failure',
  'drop',
  'stall',
  'handshake-stall',
  'handshake-drop',
  'reject-upgrade',
  'nack',
  'ack-delay',
  'no-ack',
  'receipt-delay',
  'no-receipts',
  'downgrade-webclient',
];

/** Kinds that act on connections already open when injected (and, if none is open, on the next login). */
export const IMMEDIATE_KINDS: ReadonlySet<FaultKind> = new Set(['stream-error', 'drop', 'downgrade-webclient']);

export type InjectFaultInput = FaultSpec & {
  /** Device JID (`15550001001:2@s.whatsapp.net`), phone number (all its devices) or '*' (default). */
  target?: string;
  /**
   * How many connections/messages it hits before clearing itself; default unlimited (immediate
   * kinds: see `persist`). A stall with `times` stalls that many connections until they die.
   */
  times?: number;
  /** Immediate kinds only: keep hitting every later login too, until cleared. */
  persist?: boolean;
};

export interface Fault {
  id: string;
  target: string;
  spec: FaultSpec;
  /** Remaining hits; null = until cleared; 0 = used up (a stall still holding its connections). */
  remaining: number | null;
  persist: boolean;
  hits: number;
  createdAt: number;
}

/** Normalizes a target: '*', phone digits, or a PN device JID `number:device@s.whatsapp.net`. */
export function normalizeTarget(target: unknown): string {
  if (target === undefined || target === null || target === '*') return '*';
  if (typeof target !== 'string') throw new SimInputError('target must be a string');
  if (isValidNumber(target)) return target;
  const parsed = parseJid(target);
  if (!parsed || parsed.server !== 's.whatsapp.net' || !isValidNumber(parsed.user)) {
    throw new SimInputError(`target must be '*', a phone number or a device JID like 15550001001:2@s.whatsapp.net, got ${JSON.stringify(target)}`);
  }
  return parsed.device ? `${parsed.user}:${parsed.device}@s.whatsapp.net` : parsed.user;
}

export function targetMatches(target: string, deviceJid: string | undefined): boolean {
  if (target === '*') return true;
  if (!deviceJid) return false;
  if (target === deviceJid) return true;
  return parseJid(deviceJid)?.user === target;
}

function int(value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new SimInputError(`${name} must be an integer in [${min}, ${max}], got ${JSON.stringify(value)}`);
  }
  return value;
}

function delay(value: unknown, name: string): number | null {
  return value === null ? null : int(value, name, 0, 600_000);
}

/** Validates untrusted input (control API) into a fault spec. */
export function parseFaultSpec(input: Record<string, unknown>): FaultSpec {
  const kind = input['kind'];
  switch (kind) {
    case 'stream-error': {
      const code = input['code'];
      if (!STREAM_ERROR_CODES.includes(code as StreamErrorCode)) {
        throw new SimInputError(`stream-error code must be one of ${STREAM_ERROR_CODES.join(', ')}`);
      }
      return { kind, code: code as StreamErrorCode };
    }
    case 'login-failure':
      return { kind, reason: int(input['reason'], 'reason', 400, 599) };
    case 'reject-upgrade':
      return { kind, status: input['status'] === undefined ? 403 : int(input['status'], 'status', 400, 599) };
    case 'nack':
      return {
        kind,
        error: input['error'] === undefined ? 479 : int(input['error'], 'error', 1, 999),
        delayMs: input['delayMs'] === undefined ? 0 : int(input['delayMs'], 'delayMs', 0, 600_000),
      };
    case 'ack-delay':
      return { kind, ms: int(input['ms'], 'ms', 0, 600_000) };
    case 'receipt-delay':
      return {
        kind,
        deliveredMs: input['deliveredMs'] === undefined ? 0 : delay(input['deliveredMs'], 'deliveredMs'),
        readMs: input['readMs'] === undefined ? null : delay(input['readMs'], 'readMs'),
      };
    case 'drop':
    case 'stall':
    case 'handshake-stall':
    case 'handshake-drop':
    case 'no-ack':
    case 'no-receipts':
    case 'downgrade-webclient':
      return { kind };
    default:
      throw new SimInputError(`unknown fault kind ${JSON.stringify(kind)}; known: ${FAULT_KINDS.join(', ')}`);
  }
}

export class FaultRegistry {
  private readonly faults = new Map<string, Fault>();
  private nextId = 1;

  inject(input: InjectFaultInput): Fault {
    const spec = parseFaultSpec(input as unknown as Record<string, unknown>);
    const target = normalizeTarget(input.target);
    if (spec.kind === 'reject-upgrade' && target !== '*') {
      throw new SimInputError('reject-upgrade can only target "*": the device is unknown before the upgrade');
    }
    const immediate = IMMEDIATE_KINDS.has(spec.kind);
    const persist = input.persist === true;
    if (input.persist !== undefined && typeof input.persist !== 'boolean') throw new SimInputError('persist must be a boolean');
    const times = input.times === undefined ? (immediate && !persist ? 1 : null) : int(input.times, 'times', 1, 1_000_000);
    const fault: Fault = { id: `f${this.nextId++}`, target, spec, remaining: times, persist, hits: 0, createdAt: Date.now() };
    this.faults.set(fault.id, fault);
    return fault;
  }

  list(): Fault[] {
    return [...this.faults.values()].map((f) => ({ ...f }));
  }

  /** Clears faults: all, those injected with exactly this target, or one by id. Returns how many. */
  clear(targetOrId?: string): number {
    if (targetOrId === undefined) {
      const n = this.faults.size;
      this.faults.clear();
      return n;
    }
    if (/^f\d+$/.test(targetOrId)) return this.faults.delete(targetOrId) ? 1 : 0;
    const target = normalizeTarget(targetOrId);
    let n = 0;
    for (const [id, f] of this.faults) {
      if (f.target === target) {
        this.faults.delete(id);
        n++;
      }
    }
    return n;
  }

  /** The first active fault of `kind` matching the device (and `filter`), without using it up. */
  peek<K extends FaultKind>(
    kind: K,
    deviceJid: string | undefined,
    filter: (f: Fault) => boolean = () => true,
  ): (Fault & { spec: Extract<FaultSpec, { kind: K }> }) | undefined {
    for (const f of this.faults.values()) {
      if (f.remaining !== null && f.remaining <= 0) continue;
      if (f.spec.kind === kind && targetMatches(f.target, deviceJid) && filter(f)) {
        return f as Fault & { spec: Extract<FaultSpec, { kind: K }> };
      }
    }
    return undefined;
  }

  /** Like peek, but counts a hit and removes the fault when it has no hits left. */
  take<K extends FaultKind>(kind: K, deviceJid: string | undefined): (Fault & { spec: Extract<FaultSpec, { kind: K }> }) | undefined {
    const f = this.peek(kind, deviceJid);
    if (f) this.hit(f);
    return f;
  }

  hit(f: Fault): void {
    f.hits++;
    if (f.remaining !== null && !f.persist) {
      f.remaining--;
      // A used-up stall keeps holding the connections it stalled until it is cleared;
      // every other kind is simply gone.
      if (f.remaining <= 0 && f.spec.kind !== 'stall') this.faults.delete(f.id);
    }
  }

  /** Whether the fault is still registered (active, or a used-up stall still holding its connections). */
  has(id: string): boolean {
    return this.faults.has(id);
  }
}
