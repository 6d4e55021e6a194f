import { createServer, type IncomingMessage, type Server, STATUS_CODES } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer } from 'ws';
import { issueCertChain } from './cert-chain.ts';
import { type ClientVersion, type ClientVersionPolicy, type ClientVersionPolicyInput, validateClientVersionPolicy } from './client-version.ts';
import { ClientConnection } from './connection.ts';
import { startControlApi } from './control-api.ts';
import { type CoreConfig, SimCore } from './core.ts';
import { SimConflictError, SimInputError, SimNotFoundError } from './errors.ts';
import type { ConnectionEvent, ConnectionEventType, DeviceStats, GlobalStats } from './events.ts';
import type { Fault, InjectFaultInput } from './faults.ts';
import { isValidNumber, lidJid, parseJid } from './ids.ts';
import { b64, type KeyPair, keyPairFromJSON, keyPairToJSON, newKeyPair } from './keys.ts';
import { DebouncedWriter, readJsonIfExists, writeJsonAtomic } from './state-file.ts';
import { waitFor } from './wait-for.ts';
import { DEFAULT_HISTORY_SYNC, type HistorySyncOptions } from './history-sync.ts';
import { type Addressing, type ReceiptDelays, type ReceivedMessage, type SentText, type SimUser, type UserKind, World, type WorldJSON } from './world.ts';

export interface SimulatorOptions {
  /** Interface for both listeners; default 127.0.0.1. */
  host?: string;
  /** WebSocket port; 0 (default) picks a free one. */
  port?: number;
  /** Control API port; 0 (default) picks a free one; null disables the control API. */
  controlPort?: number | null;
  /** JSON file that keeps the root key, users, linked devices and Signal state across restarts. */
  stateFile?: string;
  /** Default receipt timing for messages simulated users receive (default: delivered at once, never read). */
  receiptDelays?: Partial<ReceiptDelays>;
  /** Refs per QR registration (default 6, like WhatsApp). */
  qrRefs?: number;
  /** How long a phone waits for a companion to confirm pairing (default 15 s). */
  pairTimeoutMs?: number;
  /** Connections that have not completed the Noise handshake by then are dropped (default 60 s). */
  handshakeTimeoutMs?: number;
  /** Client versions (ClientPayload userAgent.appVersion) below this get `<failure reason="405">` at login. */
  minClientVersion?: ClientVersion | null;
  /** Client versions refused with 405, whatever the minimum. */
  deniedClientVersions?: ClientVersion[];
  /**
   * The history sync a phone sends a device after linking it (phone↔LID mappings and chats, see
   * history-sync.ts); false = none. Default: 40 messages per chat, at most 200 chats.
   */
  historySync?: Partial<HistorySyncOptions> | false;
}

interface StateFileJSON {
  version: 1;
  rootKey: { public: string; private: string };
  world: WorldJSON;
}

export interface LinkedDeviceInfo {
  deviceJid: string;
  lid: string;
  id: number;
  keyIndex: number;
  platform: string;
  linkedAt: number;
  lastLoginAt?: number;
  online: boolean;
  uploadedPreKeys: number;
  queuedOffline: number;
}

export interface UserInfo {
  number: string;
  kind: UserKind;
  name: string;
  jid: string;
  lid: string;
  addressing: Addressing;
  linkedDevices: LinkedDeviceInfo[];
  received: number;
  sent: number;
  receiptDelays?: ReceiptDelays;
}

/** A simulated WhatsApp user. Phones link companions; contacts exchange messages. Both can do both. */
export class SimulatedUser {
  constructor(
    private readonly sim: Simulator,
    /** @internal */ readonly user: SimUser,
  ) {}

  get number(): string {
    return this.user.number;
  }
  get kind(): UserKind {
    return this.user.kind;
  }
  get name(): string {
    return this.user.name;
  }
  get jid(): string {
    return this.user.jid;
  }
  get lid(): string {
    return this.user.lid;
  }

  /** Links the companion showing this QR (the string Baileys emits in `connection.update.qr`). */
  scanQr(qr: string): Promise<{ deviceJid: string }> {
    return this.sim.core.pairing.scanQr(this.user, qr);
  }

  /** Enters the 8-character code a companion got from `requestPairingCode(thisNumber)`. */
  enterPairingCode(code: string): Promise<{ deviceJid: string }> {
    return this.sim.core.pairing.enterPairingCode(this.user, code);
  }

  /** Unlinks a device: its session gets stream:error 401 device_removed, later logins fail with 401. */
  removeDevice(deviceJid: string): void {
    const parsed = parseJid(deviceJid);
    const id = parsed && parsed.user === this.number ? parsed.device : typeof deviceJid === 'string' && /^\d+$/.test(deviceJid) ? Number(deviceJid) : undefined;
    if (id === undefined || id === 0) throw new SimInputError(`not a linked-device JID of ${this.number}: ${JSON.stringify(deviceJid)}`);
    if (!this.sim.core.removeDevice(this.user, id, 'removed by phone')) throw new SimNotFoundError(`${deviceJid} is not linked to ${this.number}`);
  }

  linkedDevices(): LinkedDeviceInfo[] {
    return [...this.user.devices.values()].map((d) => {
      const deviceJid = this.user.deviceJid(d.id);
      return {
        deviceJid,
        lid: lidJid(this.user.lidUser, d.id),
        id: d.id,
        keyIndex: d.keyIndex,
        platform: d.platform,
        linkedAt: d.linkedAt,
        ...(d.lastLoginAt ? { lastLoginAt: d.lastLoginAt } : {}),
        online: this.sim.core.onlineConnections(deviceJid).length > 0,
        uploadedPreKeys: d.preKeys.size,
        queuedOffline: this.sim.core.messaging.offlineCount(deviceJid),
      };
    });
  }

  /** Every message this user's primary device decrypted, duplicates included, oldest first. */
  received(): ReceivedMessage[] {
    return this.user.received.map((m) => ({ ...m }));
  }

  /** Texts this user sent, with the companions that reported delivered/read. */
  sentMessages(): SentText[] {
    return [...this.user.sent.values()].map((s) => ({ ...s, deliveredTo: [...s.deliveredTo], readBy: [...s.readBy] }));
  }

  /** Sends an encrypted text to every linked device of `to` (number or JID). */
  sendText(to: string, text: string, opts: { id?: string } = {}): Promise<{ id: string; devices: number }> {
    return this.sim.core.messaging.sendText(this.user, to, text, opts);
  }

  /** Delivers an already sent message again (same id, fresh encryption), as WhatsApp does after reconnects. */
  redeliver(id: string): Promise<{ id: string; devices: number }> {
    return this.sim.core.messaging.redeliver(this.user, id);
  }

  /** How WhatsApp addresses this user's messages and receipts to accounts: `pn` (default) or `lid`. */
  get addressing(): Addressing {
    return this.user.addressing;
  }

  /**
   * Moves this user's chats to LID addressing (or back): from now on its messages arrive
   * `from="<lid>@lid"` with `addressing_mode="lid"` and `sender_pn`, and its receipts come from its LID.
   */
  setAddressing(mode: Addressing): void {
    if (mode !== 'pn' && mode !== 'lid') throw new SimInputError(`addressing must be "pn" or "lid", got ${JSON.stringify(mode)}`);
    this.user.addressing = mode;
    this.sim.core.markDirty();
  }

  /** Receipt timing for messages this user receives; undefined = simulator default. */
  setReceiptDelays(delays: ReceiptDelays | undefined): void {
    this.user.receiptDelays = delays ? validateDelays(delays) : undefined;
    this.sim.core.markDirty();
  }

  info(): UserInfo {
    return {
      number: this.number,
      kind: this.kind,
      name: this.name,
      jid: this.jid,
      lid: this.lid,
      addressing: this.addressing,
      linkedDevices: this.linkedDevices(),
      received: this.user.received.length,
      sent: this.user.sent.size,
      ...(this.user.receiptDelays ? { receiptDelays: this.user.receiptDelays } : {}),
    };
  }
}

export type Phone = SimulatedUser;
export type Contact = SimulatedUser;

function validateDelays(d: Partial<ReceiptDelays>, base: ReceiptDelays = { deliveredMs: 0, readMs: null }): ReceiptDelays {
  const check = (v: unknown, name: string): number | null => {
    if (v === null) return null;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 600_000) throw new SimInputError(`${name} must be null or an integer 0..600000`);
    return v;
  };
  return {
    deliveredMs: d.deliveredMs === undefined ? base.deliveredMs : check(d.deliveredMs, 'deliveredMs'),
    readMs: d.readMs === undefined ? base.readMs : check(d.readMs, 'readMs'),
  };
}

/** The running simulator: WebSocket endpoint for Baileys, control API, and the in-process API. */
export class Simulator {
  /** @internal */ readonly core: SimCore;
  readonly rootPublicKey: Uint8Array;
  readonly rootPublicKeyBase64: string;
  readonly host: string;
  private readonly sockets = new Set<Socket>();
  private readonly wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 16 * 1024 * 1024 });
  private readonly handles = new Map<SimUser, SimulatedUser>();
  private accepting = true;
  private port = 0;
  private control: { server: Server; url: string } | undefined;
  private stopped = false;

  /** @internal use startSimulator() */
  constructor(
    private readonly root: KeyPair,
    private readonly world: World,
    private readonly http: Server,
    private readonly options: SimulatorOptions,
    private readonly writer: DebouncedWriter | undefined,
  ) {
    this.host = options.host ?? '127.0.0.1';
    this.rootPublicKey = root.public;
    this.rootPublicKeyBase64 = b64(root.public);
    const config: CoreConfig = {
      receiptDelays: validateDelays(options.receiptDelays ?? {}),
      qrRefs: options.qrRefs ?? 6,
      pairTimeoutMs: options.pairTimeoutMs ?? 15_000,
      clientVersions: validateClientVersionPolicy({ minVersion: options.minClientVersion ?? null, deniedVersions: options.deniedClientVersions ?? [] }),
      historySync: options.historySync === false ? null : { ...DEFAULT_HISTORY_SYNC, ...options.historySync },
    };
    this.core = new SimCore(world, issueCertChain(root), config, () => writer?.markDirty());
    world.onChange = () => writer?.markDirty();
    http.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    http.on('request', (_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain' }).end('WebSocket endpoint; see the control API for HTTP\n');
    });
    http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.onUpgrade(req, socket, head));
  }

  /** @internal */
  async listen(): Promise<void> {
    await listen(this.http, this.options.port ?? 0, this.host);
    this.port = (this.http.address() as AddressInfo).port;
    if (this.options.controlPort !== null) {
      this.control = await startControlApi(this, this.host, this.options.controlPort ?? 0);
    }
  }

  private onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    if (!this.accepting || this.stopped) {
      socket.destroy();
      return;
    }
    const reject = this.core.faults.take('reject-upgrade', undefined);
    if (reject) {
      const status = reject.spec.status;
      this.core.log.record({ type: 'upgrade-rejected', connectionId: 0, code: status, detail: `${reject.id} ${req.url ?? ''}` });
      socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const conn = new ClientConnection(ws, socket, this.core.identity, this.core, this.options.handshakeTimeoutMs);
      this.core.register(conn);
    });
  }

  get wsUrl(): string {
    return `ws://${urlHost(this.host)}:${this.port}/ws/chat`;
  }

  get controlUrl(): string {
    return this.control?.url ?? '';
  }

  get acceptingConnections(): boolean {
    return this.accepting;
  }

  // ---- world ----------------------------------------------------------------------------

  private handle(user: SimUser): SimulatedUser {
    let h = this.handles.get(user);
    if (!h) this.handles.set(user, (h = new SimulatedUser(this, user)));
    return h;
  }

  private create(kind: UserKind, input: { number: string; name?: string }): SimulatedUser {
    if (!input || typeof input !== 'object') throw new SimInputError('expected { number }');
    if (!isValidNumber(input.number)) throw new SimInputError(`number must be 6-15 digits without +, got ${JSON.stringify(input.number)}`);
    if (input.name !== undefined && (typeof input.name !== 'string' || input.name.length > 100)) throw new SimInputError('name must be a string (max 100)');
    if (this.world.user(input.number)) throw new SimConflictError(`number ${input.number} already exists`);
    return this.handle(this.world.createUser(input.number, kind, input.name));
  }

  createPhone(input: { number: string; name?: string }): Phone {
    return this.create('phone', input);
  }

  createContact(input: { number: string; name?: string; receiptDelays?: ReceiptDelays }): Contact {
    const delays = input?.receiptDelays ? validateDelays(input.receiptDelays) : undefined;
    const c = this.create('contact', input);
    if (delays) c.setReceiptDelays(delays);
    return c;
  }

  /** Any simulated user by number; throws SimNotFoundError when unknown. */
  user(number: string): SimulatedUser {
    const u = this.world.user(number);
    if (!u) throw new SimNotFoundError(`no simulated user ${number}`);
    return this.handle(u);
  }

  phone(number: string): Phone {
    return this.user(number);
  }

  contact(number: string): Contact {
    return this.user(number);
  }

  users(kind?: UserKind): SimulatedUser[] {
    return this.world
      .users()
      .filter((u) => !kind || u.kind === kind)
      .map((u) => this.handle(u));
  }

  phones(): Phone[] {
    return this.users('phone');
  }

  contacts(): Contact[] {
    return this.users('contact');
  }

  pairingCodeRequests(number?: string): Array<{ number: string; connectionId: number; at: number }> {
    return this.core.pairing.pendingCodeRequests(number);
  }

  setReceiptDelays(delays: Partial<ReceiptDelays>): ReceiptDelays {
    this.core.config.receiptDelays = validateDelays(delays, this.core.config.receiptDelays);
    return { ...this.core.config.receiptDelays };
  }

  // ---- client versions ------------------------------------------------------------------

  /**
   * Which client versions log in: versions below `minVersion` and those in `deniedVersions` get
   * `<failure reason="405">` (WhatsApp's "client outdated"). Fields left out keep their value;
   * null / [] lift the restriction. Applies to logins from now on; open sessions stay.
   */
  setClientVersionPolicy(input: ClientVersionPolicyInput): ClientVersionPolicy {
    this.core.config.clientVersions = validateClientVersionPolicy(input, this.core.config.clientVersions);
    return this.clientVersionPolicy();
  }

  clientVersionPolicy(): ClientVersionPolicy {
    const p = this.core.config.clientVersions;
    return { minVersion: p.minVersion ? [...p.minVersion] : null, deniedVersions: p.deniedVersions.map((v) => [...v] as ClientVersion) };
  }

  // ---- faults ---------------------------------------------------------------------------

  /** Injects a fault; returns its id. See faults.ts for kinds and README for semantics. */
  injectFault(input: InjectFaultInput): string {
    return this.core.injectFault(input).id;
  }

  faults(): Fault[] {
    return this.core.faults.list();
  }

  /** Clears all faults, those with exactly this target, or the one with this id. */
  clearFaults(targetOrId?: string): number {
    return this.core.faults.clear(targetOrId);
  }

  // ---- observation ----------------------------------------------------------------------

  stats(): GlobalStats;
  stats(deviceJid: string): DeviceStats;
  stats(deviceJid?: string): GlobalStats | DeviceStats {
    if (deviceJid === undefined) return { ...this.core.log.global };
    return { ...this.core.log.device(normalizeDeviceJid(deviceJid)) };
  }

  deviceStats(): DeviceStats[] {
    return this.core.log.allDevices();
  }

  totalConflicts(): number {
    return this.core.log.global.conflicts;
  }

  events(filter: { deviceJid?: string; type?: ConnectionEventType; sinceSeq?: number } = {}): ConnectionEvent[] {
    return this.core.log.events(filter.deviceJid ? { ...filter, deviceJid: normalizeDeviceJid(filter.deviceJid) } : filter);
  }

  /** Resolves with the first event (already logged or future) matching `predicate`. */
  waitForEvent(predicate: (e: ConnectionEvent) => boolean, opts: { timeoutMs?: number; sinceSeq?: number } = {}): Promise<ConnectionEvent> {
    const past = this.core.log.events({ sinceSeq: opts.sinceSeq ?? 0 }).find(predicate);
    if (past) return Promise.resolve(past);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`no matching simulator event within ${opts.timeoutMs ?? 10_000} ms`));
      }, opts.timeoutMs ?? 10_000);
      const off = this.core.log.onEvent((e) => {
        if (predicate(e)) {
          clearTimeout(timer);
          off();
          resolve(e);
        }
      });
    });
  }

  /** Decryption failures at simulated primaries (should stay empty). */
  decryptErrors(): Array<{ at: number; from: string; to: string; id: string; error: string }> {
    return [...this.core.messaging.decryptErrors];
  }

  // ---- lifecycle ------------------------------------------------------------------------

  /**
   * Server down (false): stops listening, so new TCP connections are refused, and drops every
   * open connection. Server up (true): listens again on the same port.
   */
  async setAcceptingConnections(accepting: boolean): Promise<void> {
    if (typeof accepting !== 'boolean') throw new SimInputError('accepting must be a boolean');
    if (this.stopped || accepting === this.accepting) return;
    this.accepting = accepting;
    if (!accepting) {
      const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
      this.core.dropAll();
      for (const s of this.sockets) s.destroy();
      await closed;
    } else {
      await listen(this.http, this.port, this.host);
    }
  }

  async flushState(): Promise<void> {
    await this.writer?.flush();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.core.stop();
    this.core.dropAll();
    for (const c of this.wss.clients) c.terminate();
    this.wss.close();
    for (const s of this.sockets) s.destroy();
    if (this.http.listening) await new Promise<void>((resolve) => this.http.close(() => resolve()));
    if (this.control) await this.controlClose();
    await this.writer?.flush();
  }

  private async controlClose(): Promise<void> {
    const server = this.control!.server;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Waits until `deviceJid` has an open, logged-in connection. */
  waitForOnline(deviceJid: string, timeoutMs = 10_000): Promise<true> {
    const jid = normalizeDeviceJid(deviceJid);
    return waitFor(() => this.core.onlineConnections(jid).length > 0, { timeoutMs, what: `${jid} online` });
  }
}

function normalizeDeviceJid(jid: string): string {
  const p = parseJid(jid);
  if (!p) throw new SimInputError(`not a JID: ${JSON.stringify(jid)}`);
  return p.device ? `${p.user}:${p.device}@${p.server}` : `${p.user}@${p.server}`;
}

function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** Starts the simulator (WebSocket endpoint + control API) and, with a state file, restores it. */
export async function startSimulator(options: SimulatorOptions = {}): Promise<Simulator> {
  let root: KeyPair;
  let world: World;
  let writer: DebouncedWriter | undefined;
  const file = options.stateFile;
  if (file) {
    const state = await readJsonIfExists<StateFileJSON>(file);
    if (state && state.version !== 1) throw new Error(`unsupported state file version ${String(state.version)}`);
    root = state ? keyPairFromJSON(state.rootKey) : newKeyPair();
    world = state ? World.fromJSON(state.world) : new World();
    const snapshot = (): StateFileJSON => ({ version: 1, rootKey: keyPairToJSON(root), world: world.toJSON() });
    if (!state) await writeJsonAtomic(file, snapshot());
    writer = new DebouncedWriter(file, snapshot);
  } else {
    root = newKeyPair();
    world = new World();
  }
  const sim = new Simulator(root, world, createServer(), options, writer);
  await sim.listen();
  return sim;
}
