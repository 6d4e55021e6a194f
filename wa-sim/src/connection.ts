import type { Socket } from 'node:net';
import { type BinaryNode, decodeBinaryNode, encodeBinaryNode, type proto } from '@whiskeysockets/baileys';
import type { WebSocket } from 'ws';
import type { ServerNoiseIdentity } from './cert-chain.ts';
import { encodeFrame, FrameReader, NoiseTransport, ServerHandshake } from './noise-server.ts';
import { yieldIfBusy } from './scheduling.ts';

export type ConnectionPhase = 'hello' | 'finish' | 'registering' | 'online' | 'closed';

export interface ConnectionHandlers {
  /** Handshake faults: 'stall' never answers ClientHello, 'drop' closes the socket. */
  onClientHello(conn: ClientConnection): 'continue' | 'stall' | 'drop';
  onClientPayload(conn: ClientConnection): Promise<void>;
  onNode(conn: ClientConnection, node: BinaryNode): Promise<void>;
  /** Whether outgoing frames must be swallowed right now (stall fault). */
  isStalled(conn: ClientConnection): boolean;
  onClose(conn: ClientConnection, code: number, initiatedBy: 'client' | 'server'): void;
  onError(conn: ClientConnection, err: unknown): void;
}

let nextConnectionId = 1;


/**
 * One client WebSocket: runs the Noise handshake, then decrypts incoming frames into binary nodes
 * (processed strictly in order) and encrypts outgoing ones. Protocol decisions live in the handlers.
 */
export class ClientConnection {
  readonly id = nextConnectionId++;
  readonly openedAt = Date.now();
  phase: ConnectionPhase = 'hello';
  clientStatic: Uint8Array | undefined;
  payload: proto.ClientPayload | undefined;
  /** The device this connection belongs to, once known (login payload or after pairing). */
  deviceJid: string | undefined;
  /** Free-form per-connection state owned by the handlers. */
  readonly data: Record<string, unknown> = {};
  private readonly reader = new FrameReader();
  private readonly handshake: ServerHandshake;
  private transport: NoiseTransport | undefined;
  private chain: Promise<void> = Promise.resolve();
  private closedBy: 'client' | 'server' | undefined;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private closeTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly ws: WebSocket,
    private readonly socket: Socket,
    identity: ServerNoiseIdentity,
    private readonly handlers: ConnectionHandlers,
    handshakeTimeoutMs = 60_000,
  ) {
    this.handshake = new ServerHandshake(identity);
    // A client that never completes the handshake must not hold a socket forever.
    this.handshakeTimer = setTimeout(() => {
      if (this.phase === 'hello' || this.phase === 'finish') this.drop();
    }, handshakeTimeoutMs);
    this.handshakeTimer.unref();
    ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => {
      const chunk = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      this.onData(chunk);
    });
    ws.on('close', (code: number) => this.onWsClose(code));
    ws.on('error', (err: Error) => handlers.onError(this, err));
  }

  get isOpen(): boolean {
    return this.phase !== 'closed' && this.ws.readyState === this.ws.OPEN;
  }

  private onData(chunk: Buffer): void {
    if (this.phase === 'closed') return;
    let frames: Buffer[];
    try {
      frames = this.reader.push(chunk);
    } catch (err) {
      this.handlers.onError(this, err);
      this.drop();
      return;
    }
    for (const frame of frames) {
      this.chain = this.chain.then(async () => {
        await yieldIfBusy();
        await this.onFrame(frame);
      }).catch((err: unknown) => {
        this.handlers.onError(this, err);
        this.drop();
      });
    }
  }

  private async onFrame(frame: Buffer): Promise<void> {
    if (this.phase === 'closed') return;
    if (this.phase === 'hello') {
      const verdict = this.handlers.onClientHello(this);
      if (verdict === 'drop') return this.drop();
      if (verdict === 'stall') {
        this.phase = 'finish';
        this.data['handshakeStalled'] = true;
        return;
      }
      const hello = this.handshake.serverHello(frame);
      this.phase = 'finish';
      this.sendRaw(encodeFrame(hello));
      return;
    }
    if (this.phase === 'finish') {
      if (this.data['handshakeStalled']) return;
      const result = this.handshake.clientFinish(frame);
      this.transport = result.transport;
      this.clientStatic = result.clientStaticPublic;
      this.payload = result.payload;
      this.phase = 'registering';
      clearTimeout(this.handshakeTimer);
      await this.handlers.onClientPayload(this);
      return;
    }
    if (!this.transport) return;
    const node = await decodeBinaryNode(this.transport.decrypt(frame));
    await this.handlers.onNode(this, node);
  }

  /** Encrypts and sends a node; returns false if it was swallowed (closed or stalled). */
  send(node: BinaryNode): boolean {
    if (!this.transport || !this.isOpen) return false;
    if (this.handlers.isStalled(this)) return false;
    this.sendRaw(encodeFrame(this.transport.encrypt(encodeBinaryNode(node))));
    return true;
  }

  private sendRaw(bytes: Buffer): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(bytes);
  }

  /** Sends a last node (stream error, failure) and closes the WebSocket cleanly. */
  endWith(node: BinaryNode | undefined, code = 1000): void {
    if (this.phase === 'closed') return;
    if (node) this.send(node);
    this.closedBy ??= 'server';
    this.ws.close(code);
    // A client that never answers the close frame must not keep the socket (or the server) alive.
    this.closeTimer = setTimeout(() => this.socket.destroy(), 2_000);
    this.closeTimer.unref();
  }

  /** Kills the TCP connection with no WebSocket close frame, like a network drop. */
  drop(): void {
    this.closedBy ??= 'server';
    this.ws.terminate();
    this.socket.destroy();
  }

  private onWsClose(code: number): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    clearTimeout(this.handshakeTimer);
    clearTimeout(this.closeTimer);
    this.handlers.onClose(this, code, this.closedBy ?? 'client');
  }
}
