/**
 * A TCP proxy to put between a process and a server, to fault the network on demand without
 * stopping a server other tests share:
 * - `cut()` destroys every open connection and refuses new ones until `restore()`: the server
 *   went away, and the client hears about it at once.
 * - `blackhole()` holds every flow: open connections stay open but no byte goes through in either
 *   direction, and new connections are accepted and then held the same way. Nothing is refused or
 *   reset, and the local kernel acknowledges what the client sends, so the client only learns
 *   through its own timeouts (a NAT entry dropped, a middlebox black-holing the flow). `heal()`
 *   lets new connections through again; the held flows stay dead, as a flow whose NAT entry is gone
 *   does, unless `heal({ release: true })` delivers what was held and resumes them (a partition that
 *   ended).
 * - `hang()` is the same fault seen as a server that accepts and never answers.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

type Mode = 'open' | 'cut' | 'held';

class Flow {
  upstream: Socket | null = null;
  held = false;
  /** Held flows not released on heal: they never carry a byte again. */
  dead = false;
  private readonly toUpstream: Buffer[] = [];
  private readonly toClient: Buffer[] = [];

  constructor(
    readonly client: Socket,
    private readonly target: { host: string; port: number },
    private readonly track: (s: Socket) => void,
  ) {
    track(client);
    client.on('data', (d: Buffer) => {
      if (this.dead) return;
      if (this.held || !this.upstream) this.toUpstream.push(d);
      else this.upstream.write(d);
    });
    client.on('close', () => this.upstream?.destroy());
  }

  open(): void {
    if (this.upstream) return;
    const upstream = (this.upstream = connect(this.target.port, this.target.host));
    this.track(upstream);
    upstream.on('data', (d: Buffer) => {
      if (this.dead) return;
      if (this.held) this.toClient.push(d);
      else this.client.write(d);
    });
    upstream.on('close', () => this.client.destroy());
    this.flush();
  }

  hold(): void {
    this.held = true;
  }

  release(): void {
    this.held = false;
    if (!this.upstream) this.open();
    else this.flush();
  }

  kill(): void {
    this.dead = true;
    this.toUpstream.length = 0;
    this.toClient.length = 0;
  }

  private flush(): void {
    for (const d of this.toUpstream.splice(0)) this.upstream!.write(d);
    for (const d of this.toClient.splice(0)) this.client.write(d);
  }

  destroy(): void {
    this.client.destroy();
    this.upstream?.destroy();
  }
}

export class TcpProxy {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private readonly flows = new Set<Flow>();
  private mode: Mode = 'open';
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  static forHostPort(hostPort: string): TcpProxy {
    const i = hostPort.lastIndexOf(':');
    return new TcpProxy({ host: hostPort.slice(0, i), port: Number(hostPort.slice(i + 1)) });
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(port = 0): Promise<void> {
    this.server = createServer((client) => {
      if (this.mode === 'cut') return client.destroy();
      const flow = new Flow(client, this.target, (s) => {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => undefined);
      });
      this.flows.add(flow);
      client.on('close', () => this.flows.delete(flow));
      if (this.mode === 'held') flow.hold();
      else flow.open();
    });
    await new Promise<void>((resolve) => this.server!.listen(port, '127.0.0.1', resolve));
    const a = this.server.address();
    this.port = typeof a === 'object' && a ? a.port : port;
  }

  /** Cuts every connection and refuses new ones until `restore()`. */
  cut(): void {
    this.mode = 'cut';
    for (const s of this.sockets) s.destroy();
  }

  restore(): void {
    this.mode = 'open';
  }

  get isDown(): boolean {
    return this.mode === 'cut';
  }

  /** Every open flow and every new connection is held until `heal()`. */
  blackhole(): void {
    this.mode = 'held';
    for (const f of this.flows) f.hold();
  }

  /** A server that accepts and never answers: as `blackhole()`, ended the same way. */
  hang(): void {
    this.blackhole();
  }

  get isHeld(): boolean {
    return this.mode === 'held';
  }

  /**
   * New connections go through again. Held flows stay open and dead (their bytes are dropped),
   * or with `release` get what was held and carry on.
   */
  heal(opts: { release?: boolean } = {}): void {
    this.mode = 'open';
    for (const f of this.flows) {
      if (!f.held || f.dead) continue;
      if (opts.release) f.release();
      else f.kill();
    }
  }

  /** Connections currently open through the proxy, held or not. */
  get openFlows(): number {
    return this.flows.size;
  }

  async stop(): Promise<void> {
    this.cut();
    for (const f of this.flows) f.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}
