/**
 * The Firestore client's gRPC channels, made to notice a connection that went silent and to start
 * over on a fresh one.
 *
 * A flow that a NAT or middlebox black-holed stays "open": gRPC keeps sending calls into it, each
 * one ends in DEADLINE_EXCEEDED, and nothing makes the channel dial again until TCP gives up (tens
 * of minutes), or never, for a connection attempt that was accepted and then never answered
 * (grpc-js has no connect timeout). Three layers, each catching what the previous cannot:
 * 1. HTTP/2 keepalive pings on a connection with calls open: an unanswered ping closes it.
 * 2. A connection attempt still not ready after `connectTimeoutMs` is dropped for a new one (what
 *    the Firestore Android SDK does, with 15 s).
 * 3. `reset()` on demand (the heartbeat calls it after deadline failures in a row): every channel
 *    starts over on a fresh connection, and the calls still open on the old one are failed with
 *    UNAVAILABLE, so listeners re-open their streams at once and the SDK retries what it may.
 *
 * The Firestore instance itself stays the same, so nothing that holds it needs to know.
 */
import { createRequire } from 'node:module';
import type { Logger } from 'pino';

export interface ChannelTuning {
  /** Ping interval on a connection with calls open. */
  keepaliveMs: number;
  /** A ping unanswered this long closes the connection. */
  keepaliveTimeoutMs: number;
  /** A connection attempt not ready after this (± 20 % jitter) starts over. */
  connectTimeoutMs: number;
}

/**
 * 30 s is what the Firestore Android SDK pings production Firestore with; pinging more often risks
 * a GOAWAY "too_many_pings" from Google's front ends (gRPC servers refuse pings more frequent than
 * they permit, and grpc-js then doubles its interval after closing the connection). Pings go out
 * only while calls are open, which for the reconciler is always: its listeners never close. The
 * Firestore emulator (Netty) accepts pings at this rate and faster.
 */
export const DEFAULT_CHANNEL_TUNING: ChannelTuning = { keepaliveMs: 30_000, keepaliveTimeoutMs: 10_000, connectTimeoutMs: 15_000 };

/** The few members of grpc-js this module uses, typed here: grpc-js is the SDK's, not ours. */
interface GrpcCall {
  start(metadata: unknown, listener: GrpcListener): void;
  cancelWithStatus(code: number, details: string): void;
}
interface GrpcListener {
  onReceiveMetadata(metadata: unknown): void;
  onReceiveMessage(message: unknown): void;
  onReceiveStatus(status: unknown): void;
}
interface GrpcChannel {
  close(): void;
  getTarget(): string;
  getConnectivityState(tryToConnect: boolean): number;
  watchConnectivityState(current: number, deadline: Date | number, callback: (err?: Error) => void): void;
  getChannelzRef(): unknown;
  createCall(method: string, deadline: Date | number, host: string | null | undefined, parent: unknown, propagateFlags: number | null | undefined): GrpcCall;
}
interface GrpcModule {
  Channel: new (target: string, credentials: unknown, options: Record<string, unknown>) => GrpcChannel;
  connectivityState: { CONNECTING: number; SHUTDOWN: number };
  status: { UNAVAILABLE: number };
}

let grpcModule: GrpcModule | null = null;
/** The grpc-js that the Firestore SDK (through google-gax) runs on: channels must be of its kind. */
function sdkGrpc(): GrpcModule {
  if (grpcModule) return grpcModule;
  const here = createRequire(import.meta.url);
  const admin = createRequire(here.resolve('firebase-admin/firestore'));
  const sdk = createRequire(admin.resolve('@google-cloud/firestore'));
  grpcModule = (sdk('google-gax') as { grpc: GrpcModule }).grpc;
  return grpcModule;
}

/** One gRPC channel of the SDK, whose underlying channel can be swapped for a fresh one. */
class ResettableChannel implements GrpcChannel {
  private inner!: GrpcChannel;
  private calls = new Set<GrpcCall>();
  private connectTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly grpc: GrpcModule,
    private readonly target: string,
    private readonly credentials: unknown,
    private readonly options: Record<string, unknown>,
    private readonly owner: FirestoreChannels,
  ) {
    this.open();
  }

  private open(): void {
    // A pool of its own: otherwise the new channel would be handed the very subchannel (and the
    // dead connection) it replaces, from grpc-js's process-wide pool.
    const inner = new this.grpc.Channel(this.target, this.credentials, { ...this.options, 'grpc.use_local_subchannel_pool': 1 });
    this.inner = inner;
    this.watch(inner);
  }

  private watch(inner: GrpcChannel): void {
    if (inner !== this.inner) return;
    const { CONNECTING, SHUTDOWN } = this.grpc.connectivityState;
    const state = inner.getConnectivityState(false);
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = null;
    if (state === SHUTDOWN) return;
    if (state === CONNECTING) {
      const ms = this.owner.tuning.connectTimeoutMs * (0.8 + 0.4 * Math.random());
      this.connectTimer = setTimeout(() => {
        if (this.inner === inner && inner.getConnectivityState(false) === CONNECTING) this.owner.resetOne(this, `no connection after ${Math.round(ms)} ms`);
      }, ms);
      this.connectTimer.unref();
    }
    inner.watchConnectivityState(state, Infinity, () => this.watch(inner));
  }

  /** Moves to a fresh channel; fails what is still open on the old one. */
  reset(): number {
    if (this.closed) return 0;
    const old = this.inner;
    const oldCalls = this.calls;
    this.calls = new Set();
    this.open();
    for (const call of oldCalls) call.cancelWithStatus(this.grpc.status.UNAVAILABLE, 'Firestore connection reset after it stopped answering');
    old.close();
    return oldCalls.size;
  }

  createCall(method: string, deadline: Date | number, host: string | null | undefined, parent: unknown, propagateFlags: number | null | undefined): GrpcCall {
    const call = this.inner.createCall(method, deadline, host, parent, propagateFlags);
    const calls = this.calls;
    calls.add(call);
    const start = call.start.bind(call);
    call.start = (metadata, listener) =>
      start(metadata, {
        onReceiveMetadata: (m) => listener.onReceiveMetadata(m),
        onReceiveMessage: (m) => listener.onReceiveMessage(m),
        onReceiveStatus: (s) => {
          calls.delete(call);
          listener.onReceiveStatus(s);
        },
      });
    return call;
  }

  close(): void {
    this.closed = true;
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.owner.forget(this);
    this.inner.close();
  }

  getTarget(): string {
    return this.inner.getTarget();
  }

  getConnectivityState(tryToConnect: boolean): number {
    return this.inner.getConnectivityState(tryToConnect);
  }

  watchConnectivityState(current: number, deadline: Date | number, callback: (err?: Error) => void): void {
    this.inner.watchConnectivityState(current, deadline, callback);
  }

  getChannelzRef(): unknown {
    return this.inner.getChannelzRef();
  }
}

/** Every live channel of one Firestore instance. */
export class FirestoreChannels {
  private readonly live = new Set<ResettableChannel>();
  private resetCount = 0;

  constructor(
    readonly tuning: ChannelTuning,
    private readonly log: Logger,
  ) {}

  /** Firestore settings that route the SDK's channels through here and turn keepalive on. */
  settings(): Record<string, unknown> {
    const grpc = sdkGrpc();
    return {
      'grpc.keepalive_time_ms': this.tuning.keepaliveMs,
      'grpc.keepalive_timeout_ms': this.tuning.keepaliveTimeoutMs,
      // google-gax hands this to the gRPC client without its "grpc." prefix.
      'grpc.channelFactoryOverride': (target: string, credentials: unknown, options: Record<string, unknown>) => {
        const channel = new ResettableChannel(grpc, target, credentials, options, this);
        this.live.add(channel);
        return channel;
      },
    };
  }

  /** How many times a channel was replaced. */
  get resets(): number {
    return this.resetCount;
  }

  /** Every channel starts over on a fresh connection. */
  reset(reason: string): void {
    let failedCalls = 0;
    for (const channel of this.live) failedCalls += channel.reset();
    this.resetCount++;
    this.log.warn({ reason, channels: this.live.size, failedCalls }, 'Firestore connection reset');
  }

  resetOne(channel: ResettableChannel, reason: string): void {
    const failedCalls = channel.reset();
    this.resetCount++;
    this.log.warn({ reason, failedCalls }, 'Firestore connection reset');
  }

  forget(channel: ResettableChannel): void {
    this.live.delete(channel);
  }
}
