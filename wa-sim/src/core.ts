import type { BinaryNode } from '@whiskeysockets/baileys';
import type { ServerNoiseIdentity } from './cert-chain.ts';
import { type ClientVersionPolicy, clientVersionOf, formatVersion, versionRefusal } from './client-version.ts';
import type { ClientConnection, ConnectionHandlers } from './connection.ts';
import { ConnectionLog } from './events.ts';
import { type Fault, FaultRegistry, IMMEDIATE_KINDS, type InjectFaultInput, targetMatches } from './faults.ts';
import type { HistorySyncOptions } from './history-sync.ts';
import { lidJid, pnJid } from './ids.ts';
import { handleIq } from './iq.ts';
import { bytesEqual } from './keys.ts';
import { Messaging } from './messaging.ts';
import { streamError, unixNow } from './nodes.ts';
import { Pairing } from './pairing.ts';
import type { LinkedDevice, ReceiptDelays, SimUser, World } from './world.ts';

export type { ReceiptDelays };

export interface CoreConfig {
  receiptDelays: ReceiptDelays;
  /** What a phone sends a companion after linking it; null = no history sync. */
  historySync: HistorySyncOptions | null;
  /** Refs per pair-device (Baileys shows one QR per ref, then ends with 408). */
  qrRefs: number;
  /** How long a phone waits for the companion's pair-device-sign before giving up. */
  pairTimeoutMs: number;
  /** Client versions refused with `<failure reason="405">` at login (client-version.ts). */
  clientVersions: ClientVersionPolicy;
}

/** Stream errors as WhatsApp shapes them; 401 carries the device_removed conflict (Baileys: loggedOut). */
export function streamErrorFor(code: number): BinaryNode {
  if (code === 401) return streamError(401, { tag: 'conflict', attrs: { type: 'device_removed' } });
  if (code === 440) return streamError(undefined, { tag: 'conflict', attrs: { type: 'replaced' } });
  if (code === 500) return streamError(undefined, { tag: 'internal-server-error', attrs: {} });
  return streamError(code);
}

/**
 * The simulated WhatsApp server: owns the world, connections, faults and the event log, and
 * routes every connection event to the protocol modules (login here; pairing, iq, messaging).
 */
export class SimCore implements ConnectionHandlers {
  readonly log = new ConnectionLog();
  readonly faults = new FaultRegistry();
  readonly connections = new Set<ClientConnection>();
  private readonly online = new Map<string, Set<ClientConnection>>();
  private readonly timers = new Set<NodeJS.Timeout>();
  readonly pairing: Pairing;
  readonly messaging: Messaging;
  stopped = false;

  constructor(
    readonly world: World,
    readonly identity: ServerNoiseIdentity,
    readonly config: CoreConfig,
    readonly markDirty: () => void,
  ) {
    this.pairing = new Pairing(this);
    this.messaging = new Messaging(this);
  }

  /** A timer that stop() cancels. */
  later(ms: number, fn: () => void): void {
    if (this.stopped) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.stopped) fn();
    }, ms);
    this.timers.add(t);
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.pairing.stop();
  }

  onlineConnections(deviceJid: string): ClientConnection[] {
    return [...(this.online.get(deviceJid) ?? [])].filter((c) => c.isOpen);
  }

  allOnline(): ClientConnection[] {
    return [...this.online.values()].flatMap((s) => [...s]).filter((c) => c.isOpen);
  }

  // ---- connection lifecycle -------------------------------------------------------------

  register(conn: ClientConnection): void {
    this.connections.add(conn);
    this.log.global.connections++;
    this.log.record({ type: 'connect', connectionId: conn.id });
  }

  onClientHello(conn: ClientConnection): 'continue' | 'stall' | 'drop' {
    // Before the login payload nobody is identified, so only '*' faults can apply here.
    for (const kind of ['handshake-drop', 'handshake-stall'] as const) {
      const f = this.faults.peek(kind, undefined);
      if (f) {
        this.faults.hit(f);
        this.recordFault(conn, f);
        return kind === 'handshake-drop' ? 'drop' : 'stall';
      }
    }
    return 'continue';
  }

  async onClientPayload(conn: ClientConnection): Promise<void> {
    const payload = conn.payload!;
    if (payload.devicePairingData) {
      this.log.record({ type: 'handshake', connectionId: conn.id, detail: 'registration' });
      // WhatsApp refuses an outdated client before it may register, as before it may log in.
      const refused = versionRefusal(this.config.clientVersions, clientVersionOf(payload));
      if (refused) {
        this.log.record({ type: 'login-failed', connectionId: conn.id, code: 405, detail: refused });
        conn.endWith({ tag: 'failure', attrs: { reason: '405', location: 'sim' } });
        return;
      }
      this.pairing.startRegistration(conn);
      return;
    }
    this.login(conn);
  }

  private login(conn: ClientConnection): void {
    const payload = conn.payload!;
    const number = String(payload.username ?? '');
    const deviceId = Number(payload.device ?? 0);
    const deviceJid = pnJid(number, deviceId);
    conn.deviceJid = deviceJid;
    this.log.record({ type: 'handshake', connectionId: conn.id, deviceJid, detail: 'login' });

    // Targeted handshake faults act here, once the login payload names the device.
    for (const kind of ['handshake-drop', 'handshake-stall'] as const) {
      const f = this.faults.peek(kind, deviceJid, (candidate) => candidate.target !== '*');
      if (f) {
        this.faults.hit(f);
        this.recordFault(conn, f);
        if (kind === 'handshake-drop') conn.drop();
        return;
      }
    }

    // The version check comes first: WhatsApp refuses an outdated client whoever it is.
    const refused = versionRefusal(this.config.clientVersions, clientVersionOf(payload));
    if (refused) return this.failLogin(conn, deviceJid, 405, refused);

    const user = this.world.user(number);
    const device = user?.devices.get(deviceId);
    if (!user || !device || !conn.clientStatic || !bytesEqual(device.noisePublicKey, conn.clientStatic)) {
      // Unknown, removed, or a different key than the one that was linked: the device is logged out.
      return this.failLogin(conn, deviceJid, 401, device ? 'noise key mismatch' : 'unknown device');
    }
    const failure = this.faults.take('login-failure', deviceJid);
    if (failure) {
      this.recordFault(conn, failure);
      return this.failLogin(conn, deviceJid, failure.spec.reason, 'fault');
    }

    // WhatsApp keeps one connection per device: the newer one wins, the older gets a conflict.
    for (const old of this.onlineConnections(deviceJid)) {
      this.log.global.conflicts++;
      this.log.device(deviceJid).conflicts++;
      this.log.record({ type: 'conflict', connectionId: old.id, deviceJid, code: 440, detail: `replaced by connection ${conn.id}` });
      this.sendStreamError(old, 440);
    }

    conn.phase = 'online';
    let set = this.online.get(deviceJid);
    if (!set) this.online.set(deviceJid, (set = new Set()));
    set.add(conn);
    const stats = this.log.device(deviceJid);
    stats.logins++;
    stats.openConnections++;
    stats.lastLoginAt = Date.now();
    this.log.global.logins++;
    this.log.global.openConnections++;
    device.lastLoginAt = Date.now();
    this.markDirty();
    this.log.record({ type: 'login', connectionId: conn.id, deviceJid, detail: `client ${formatVersion(clientVersionOf(payload))}` });

    conn.send({
      tag: 'success',
      attrs: { t: unixNow(), lid: lidJid(user.lidUser, deviceId), location: 'sim', props: '1', abprops: '1', creation: String(Math.floor(device.linkedAt / 1000)) },
    });
    if (this.applyPendingImmediateFaults(conn)) return;
    const delivered = this.messaging.flushOffline(conn);
    conn.send({ tag: 'ib', attrs: {}, content: [{ tag: 'offline', attrs: { count: String(delivered) } }] });
    // A freshly linked device gets the phone's history sync once, after its first login.
    if (!device.historySynced) this.sendHistorySync(conn, user, device);
  }

  private sendHistorySync(conn: ClientConnection, user: SimUser, device: LinkedDevice): void {
    this.messaging.sendHistorySync(user, device).then(
      (sent) => {
        if (sent) this.log.record({ type: 'history-sync', connectionId: conn.id, deviceJid: user.deviceJid(device.id), detail: `${sent.id} inline ${sent.payloadBytes} B (${sent.inflatedBytes} B inflated)` });
      },
      (err: unknown) => this.onError(conn, err),
    );
  }

  private failLogin(conn: ClientConnection, deviceJid: string, reason: number, detail: string): void {
    this.log.device(deviceJid).loginFailures++;
    this.log.record({ type: 'login-failed', connectionId: conn.id, deviceJid, code: reason, detail });
    conn.endWith({ tag: 'failure', attrs: { reason: String(reason), location: 'sim' } });
  }

  onClose(conn: ClientConnection, code: number, initiatedBy: 'client' | 'server'): void {
    this.connections.delete(conn);
    this.pairing.onConnectionClosed(conn);
    this.messaging.onConnectionClosed(conn);
    const jid = conn.deviceJid;
    if (jid && this.online.get(jid)?.delete(conn)) {
      const stats = this.log.device(jid);
      stats.openConnections--;
      stats.closes++;
      stats.lastCloseCode = code;
      this.log.global.openConnections--;
      if (this.online.get(jid)?.size === 0) this.online.delete(jid);
    }
    this.log.record({ type: 'close', connectionId: conn.id, ...(jid ? { deviceJid: jid } : {}), code, detail: `by ${initiatedBy}` });
  }

  onError(conn: ClientConnection, err: unknown): void {
    this.log.record({
      type: 'error',
      connectionId: conn.id,
      ...(conn.deviceJid ? { deviceJid: conn.deviceJid } : {}),
      detail: `error: ${err instanceof Error ? err.message : String(err)}`,
    });
  }

  isStalled(conn: ClientConnection): boolean {
    if (!conn.deviceJid) return false;
    // A stalled connection stays stalled until the fault is cleared (it usually dies first: 408).
    const holding = conn.data['stalledBy'] as string | undefined;
    if (holding && this.faults.has(holding)) return true;
    const f = this.faults.peek('stall', conn.deviceJid);
    if (!f) return false;
    conn.data['stalledBy'] = f.id;
    this.faults.hit(f);
    this.recordFault(conn, f);
    return true;
  }

  async onNode(conn: ClientConnection, node: BinaryNode): Promise<void> {
    switch (node.tag) {
      case 'iq':
        return handleIq(this, conn, node);
      case 'message':
        if (conn.phase === 'online') return this.messaging.onClientMessage(conn, node);
        return;
      case 'receipt':
        if (conn.phase === 'online') return this.messaging.onClientReceipt(conn, node);
        return;
      case 'ack':
        return this.messaging.onClientAck(conn, node);
      default:
        // presence, ib (unified_session), notification acks...: nothing to do for a simulator.
        return;
    }
  }

  // ---- faults and disconnects ------------------------------------------------------------

  sendStreamError(conn: ClientConnection, code: number, detail?: string): void {
    if (conn.deviceJid) this.log.device(conn.deviceJid).streamErrors++;
    this.log.record({ type: 'stream-error', connectionId: conn.id, ...(conn.deviceJid ? { deviceJid: conn.deviceJid } : {}), code, ...(detail ? { detail } : {}) });
    conn.endWith(streamErrorFor(code));
  }

  recordFault(conn: ClientConnection, f: Fault): void {
    this.log.record({
      type: 'fault',
      connectionId: conn.id,
      ...(conn.deviceJid ? { deviceJid: conn.deviceJid } : {}),
      detail: `${f.id} ${f.spec.kind} ${JSON.stringify(f.spec)}`,
    });
  }

  injectFault(input: InjectFaultInput): Fault {
    const fault = this.faults.inject(input);
    if (IMMEDIATE_KINDS.has(fault.spec.kind)) {
      const hits = this.allOnline().filter((c) => targetMatches(fault.target, c.deviceJid));
      for (const conn of hits) this.applyImmediate(conn, fault);
      if (hits.length > 0) this.faults.hit(fault);
    }
    return fault;
  }

  /** Immediate faults injected while the device was offline hit its next login. */
  private applyPendingImmediateFaults(conn: ClientConnection): boolean {
    for (const kind of IMMEDIATE_KINDS) {
      const f = this.faults.take(kind, conn.deviceJid);
      if (f) {
        this.applyImmediate(conn, f);
        if (f.spec.kind !== 'downgrade-webclient' || !conn.isOpen) return true;
      }
    }
    return false;
  }

  private applyImmediate(conn: ClientConnection, f: Fault): void {
    this.recordFault(conn, f);
    const spec = f.spec;
    if (spec.kind === 'stream-error') this.sendStreamError(conn, spec.code, 'fault');
    else if (spec.kind === 'drop') conn.drop();
    else if (spec.kind === 'downgrade-webclient') conn.send({ tag: 'ib', attrs: {}, content: [{ tag: 'downgrade_webclient', attrs: {} }] });
  }

  /** The phone unlinks a device: its live session gets 401 device_removed, later logins fail with 401. */
  removeDevice(user: SimUser, deviceId: number, why: string): boolean {
    if (!user.devices.delete(deviceId)) return false;
    const jid = user.deviceJid(deviceId);
    this.messaging.dropOffline(jid);
    this.markDirty();
    const live = this.onlineConnections(jid);
    if (live.length === 0) this.log.record({ type: 'device-removed', connectionId: 0, deviceJid: jid, detail: why });
    for (const conn of live) {
      this.log.record({ type: 'device-removed', connectionId: conn.id, deviceJid: jid, code: 401, detail: why });
      this.sendStreamError(conn, 401, why);
    }
    return true;
  }

  /** Closes every connection (server going down): clients see the TCP drop (428). */
  dropAll(): void {
    for (const conn of this.connections) conn.drop();
  }
}
