/**
 * One Baileys socket for one account: creates it, translates its events into a few callbacks, and
 * guards it with two watchdogs Baileys lacks — a connect deadline (a rejected WebSocket upgrade
 * leaves Baileys in "connecting" forever) and a frame watchdog (a "zombie" socket that shows open
 * but receives nothing). It decides nothing about policy: the session supervisor does.
 */
import { Boom } from '@hapi/boom';
import makeWASocket, { Browsers, makeCacheableSignalKeyStore, proto, type AuthenticationCreds, type ConnectionState, type WASocket, type WAVersion } from '@whiskeysockets/baileys';
import type { Logger } from 'pino';
import type { AccountAuthState } from '../store/auth-state.ts';
import { commitDecryptsAfterJournal, signalDecryptRollback } from './decrypt-commit.ts';

export interface SessionTimeouts {
  /** Baileys' own: no ServerHello within this → 408. */
  connectTimeoutMs: number;
  keepAliveIntervalMs: number;
  defaultQueryTimeoutMs: number;
  /** Ours: a socket neither open nor showing a code by then is ended (covers the rejected-upgrade hang). */
  connectDeadlineMs: number;
  /** Ours: an open socket that received no frame for this long is ended. */
  zombieAfterMs: number;
  /** How long the first QR of a link attempt lasts (later ones last 20 s, as on WhatsApp). */
  qrTimeoutMs?: number;
}

export const DEFAULT_TIMEOUTS: SessionTimeouts = {
  connectTimeoutMs: 20_000,
  keepAliveIntervalMs: 30_000,
  defaultQueryTimeoutMs: 60_000,
  connectDeadlineMs: 45_000,
  zombieAfterMs: 90_000,
};

export type CloseCause = 'server' | 'connectDeadline' | 'zombie' | 'requested';

export interface SessionClosed {
  /** Baileys' DisconnectReason status code, or null when the socket ended without one. */
  code: number | null;
  detail: string;
  cause: CloseCause;
  /** Whether the device was linked when it closed (a 408 before linking is an expired QR). */
  linked: boolean;
  wasOpen: boolean;
}

export interface SessionEvents {
  onConnecting(): void;
  onQr(qr: string): void;
  onPairingCode(code: string): void;
  onOpen(info: { meJid: string | null }): void;
  onClosed(info: SessionClosed): void;
  onCredsSaved(): void;
  /** A QR scan or pairing code just linked the device; its credentials are on disk. */
  onNewLogin(): void;
  /** A socket was created: listeners for messages and receipts go on before any frame arrives. */
  onSocket?(sock: WASocket): void;
}

export interface SessionDriverOptions {
  accountId: string;
  auth: AccountAuthState;
  log: Logger;
  baileysLog: Logger;
  timeouts: SessionTimeouts;
  /** Simulator only: the WebSocket URL to dial instead of WhatsApp's. */
  socketUrl?: string;
  /** Link with a pairing code sent to this number (E.164) instead of a QR. */
  pairingPhone?: string | null;
  /** The WhatsApp Web version to announce (wa-version.ts); Baileys' bundled one when absent. */
  version?: WAVersion;
  events: SessionEvents;
}

type DriverState = 'idle' | 'connecting' | 'open' | 'closed';

const { INITIAL_BOOTSTRAP, PUSH_NAME, NON_BLOCKING_DATA } = proto.HistorySync.HistorySyncType;

/**
 * Which history sync chunks Baileys processes: those that carry phone↔LID mappings (and push
 * names) without a stream of chat history to wait for. In Baileys 7 (Utils/history.js,
 * Utils/process-message.js) every processed chunk's `phoneNumberToLidMappings` and per-chat
 * `lidJid`/`pnJid` go into the `lid-mapping` keys; INITIAL_BOOTSTRAP, the first chunk after a link,
 * holds the mappings of the account's recent chats. Its chat history is decoded and emitted as
 * `messaging-history.set`, which nothing here listens to, so it is garbage at once: chats are not
 * kept. RECENT, FULL and ON_DEMAND (the bulk of the history) are not downloaded at all. Because
 * RECENT is off, Baileys does not buffer events for 20 s waiting for history after a first link
 * (Socket/chats.js, AwaitingInitialSync); because not every type is off, it does not warn "DANGER:
 * disabling all sync" (Socket/socket.js).
 */
export function syncMappingsOnly({ syncType }: proto.Message.IHistorySyncNotification): boolean {
  return syncType === INITIAL_BOOTSTRAP || syncType === PUSH_NAME || syncType === NON_BLOCKING_DATA;
}

/** Whether credentials belong to a device that completed linking (a QR or code was accepted). */
export function credsAreLinked(creds: AuthenticationCreds): boolean {
  return Boolean(creds.registered || creds.account || creds.me?.lid);
}

export class SessionDriver {
  private sock: WASocket | null = null;
  private stateNow: DriverState = 'idle';
  private wasOpen = false;
  private lastFrameAt = 0;
  private credsSaved: Promise<void> = Promise.resolve();
  private closeCause: CloseCause = 'server';
  private connectTimer: NodeJS.Timeout | null = null;
  private zombieTimer: NodeJS.Timeout | null = null;
  private pairingRequested = false;
  private closedPromise: Promise<void> | null = null;
  private resolveClosed: (() => void) | null = null;

  constructor(private readonly opts: SessionDriverOptions) {}

  get state(): DriverState {
    return this.stateNow;
  }

  /** The live socket while open (for sending); null otherwise. */
  get socket(): WASocket | null {
    return this.stateNow === 'open' ? this.sock : null;
  }

  get linked(): boolean {
    return credsAreLinked(this.opts.auth.state.creds);
  }

  start(): void {
    if (this.stateNow !== 'idle') throw new Error(`session ${this.opts.accountId} already started`);
    const { auth, timeouts, baileysLog } = this.opts;
    this.stateNow = 'connecting';
    this.closedPromise = new Promise((r) => (this.resolveClosed = r));
    const sock = makeWASocket({
      auth: { creds: auth.state.creds, keys: makeCacheableSignalKeyStore(auth.state.keys, baileysLog) },
      logger: baileysLog,
      browser: Browsers.ubuntu('wafleet'),
      printQRInTerminal: false,
      markOnlineOnConnect: false,
      syncFullHistory: false,
      shouldSyncHistoryMessage: syncMappingsOnly,
      fireInitQueries: true,
      generateHighQualityLinkPreview: false,
      connectTimeoutMs: timeouts.connectTimeoutMs,
      keepAliveIntervalMs: timeouts.keepAliveIntervalMs,
      defaultQueryTimeoutMs: timeouts.defaultQueryTimeoutMs,
      ...(timeouts.qrTimeoutMs ? { qrTimeout: timeouts.qrTimeoutMs } : {}),
      ...(this.opts.socketUrl ? { waWebSocketUrl: this.opts.socketUrl } : {}),
      ...(this.opts.version ? { version: this.opts.version } : {}),
    });
    this.sock = sock;
    // Before onSocket: the inbound capture wraps the same hook afterwards (see decrypt-commit.ts).
    if (!commitDecryptsAfterJournal(sock, auth)) this.opts.log.warn('this Baileys has no decrypt-time hook; a kill -9 right after a decryption can lose that message');
    if (!signalDecryptRollback.installed) this.opts.log.warn({ reason: signalDecryptRollback.reason }, 'libsignal decrypt rollback not installed: a message on one of two crossed sessions can break the other for good');
    this.opts.events.onSocket?.(sock);
    this.lastFrameAt = Date.now();
    sock.ws.on('frame', () => {
      this.lastFrameAt = Date.now();
    });
    sock.ev.on('creds.update', () => {
      this.credsSaved = auth.saveCreds().then(
        () => this.opts.events.onCredsSaved(),
        (err: unknown) => this.opts.log.error({ err }, 'saving credentials failed'),
      );
    });
    sock.ev.on('connection.update', (u) => this.onConnectionUpdate(u));
    this.connectTimer = setTimeout(() => {
      if (this.stateNow === 'connecting') this.forceEnd('connectDeadline', `not open after ${timeouts.connectDeadlineMs} ms`);
    }, timeouts.connectDeadlineMs);
    this.opts.events.onConnecting();
  }

  private onConnectionUpdate(u: Partial<ConnectionState>): void {
    if (u.qr) {
      // The server answered and now waits for a person: the QR window's own expiry (408) applies.
      this.clearConnectTimer();
      if (this.opts.pairingPhone) this.requestPairingCode();
      else this.opts.events.onQr(u.qr);
    }
    if (u.connection === 'open') {
      this.clearConnectTimer();
      this.stateNow = 'open';
      this.wasOpen = true;
      this.armZombieWatch();
      this.opts.events.onOpen({ meJid: this.opts.auth.state.creds.me?.id ?? null });
    }
    // Baileys announces a new login on its own (pair-success, right after the creds.update that
    // carries the new identity), never together with `open`.
    if (u.isNewLogin) void this.credsSaved.then(() => this.opts.events.onNewLogin());
    if (u.connection === 'close') this.onClose(u.lastDisconnect?.error);
  }

  private requestPairingCode(): void {
    // Baileys emits a QR once the server is ready for registration; the code is asked for then, once.
    if (this.pairingRequested || !this.sock) return;
    this.pairingRequested = true;
    const phone = this.opts.pairingPhone!.replace(/^\+/, '');
    this.sock.requestPairingCode(phone).then(
      (code) => this.opts.events.onPairingCode(code),
      (err: unknown) => {
        this.opts.log.warn({ err }, 'pairing code request failed');
        this.forceEnd('server', 'pairing code request failed');
      },
    );
  }

  private onClose(error: Error | undefined): void {
    if (this.stateNow === 'closed') return;
    this.clearConnectTimer();
    this.clearZombieTimer();
    this.stateNow = 'closed';
    const boom = error as Boom | undefined;
    const code = boom?.output?.statusCode ?? null;
    const info: SessionClosed = {
      code: this.closeCause === 'server' ? code : null,
      detail: error?.message ?? 'closed',
      cause: this.closeCause,
      linked: this.linked,
      wasOpen: this.wasOpen,
    };
    this.resolveClosed?.();
    this.opts.events.onClosed(info);
  }

  private armZombieWatch(): void {
    const check = Math.max(1_000, Math.floor(this.opts.timeouts.zombieAfterMs / 3));
    this.zombieTimer = setInterval(() => {
      const silent = Date.now() - this.lastFrameAt;
      if (this.stateNow === 'open' && silent >= this.opts.timeouts.zombieAfterMs) {
        this.forceEnd('zombie', `no frame received for ${silent} ms`);
      }
    }, check);
    this.zombieTimer.unref();
  }

  private clearConnectTimer(): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = null;
  }

  private clearZombieTimer(): void {
    if (this.zombieTimer) clearInterval(this.zombieTimer);
    this.zombieTimer = null;
  }

  /**
   * Ends the socket without logging out. Baileys' end() can stall on a socket that never finished
   * its upgrade, so after a grace period the driver declares it closed and terminates the raw socket.
   */
  private forceEnd(cause: CloseCause, detail: string): void {
    if (this.stateNow === 'closed' || !this.sock) return;
    this.closeCause = cause;
    if (cause === 'requested') this.opts.log.info({ cause }, 'ending session');
    else this.opts.log.warn({ cause, detail }, 'ending session');
    const sock = this.sock;
    void sock.end(new Boom(detail, { statusCode: 408 })).catch(() => undefined);
    const grace = setTimeout(() => {
      if (this.stateNow !== 'closed') {
        terminateRawSocket(sock);
        this.onClose(new Error(detail));
      }
    }, 3_000);
    grace.unref();
  }

  /** Closes the connection (not a logout) and waits, at most `timeoutMs`, for it to be closed. */
  async close(timeoutMs = 5_000): Promise<void> {
    if (this.stateNow === 'idle') {
      this.stateNow = 'closed';
      return;
    }
    this.forceEnd('requested', 'closed by the reconciler');
    await Promise.race([this.closedPromise, new Promise((r) => setTimeout(r, timeoutMs).unref())]);
  }

  /** Logs the device out on WhatsApp (it disappears from the phone's linked devices), then closes. */
  async logout(timeoutMs = 10_000): Promise<void> {
    const sock = this.sock;
    if (sock && this.stateNow === 'open') {
      this.closeCause = 'requested';
      await Promise.race([sock.logout('wafleet: logged out by operator').catch(() => undefined), new Promise((r) => setTimeout(r, timeoutMs).unref())]);
    }
    await this.close(timeoutMs);
  }
}

function terminateRawSocket(sock: WASocket): void {
  // Baileys wraps ws; reach the raw socket to abort a handshake that never completed.
  const raw = (sock.ws as unknown as { socket?: { terminate?: () => void } }).socket;
  try {
    raw?.terminate?.();
  } catch {
    // already gone
  }
}
