import makeWASocket, { type AuthenticationState, type ConnectionState, type UserFacingSocketConfig, type WAMessage } from '@whiskeysockets/baileys';
import { waitFor } from '../wait-for.ts';

export type WASocket = ReturnType<typeof makeWASocket>;

export interface ClientOptions {
  keepAliveIntervalMs?: number;
  connectTimeoutMs?: number;
  defaultQueryTimeoutMs?: number;
  qrTimeout?: number;
  extra?: Partial<UserFacingSocketConfig>;
}

/** One Baileys socket plus a record of what it reported, for tests and benchmarks. */
export interface SimClient {
  sock: WASocket;
  auth: AuthenticationState;
  updates: Array<Partial<ConnectionState>>;
  qrs: string[];
  /**
   * Status changes of messages, in arrival order: from `messages.update`, and from the upsert of a
   * sent message when Baileys merged a status into it (it buffers that upsert; an ack or receipt
   * arriving meanwhile becomes the upsert's status instead of a separate update).
   */
  statusUpdates: Array<{ id: string; status: number; source: 'update' | 'upsert' }>;
  /** Every upserted message with the upsert type (`notify` for live inbound messages). */
  upserts: Array<{ type: string; message: WAMessage }>;
  /** Latest `connection` value reported. */
  connection(): ConnectionState['connection'] | undefined;
  isNewLogin(): boolean;
  /** Status code of the close, once closed. */
  closeCode(): number | undefined;
  waitForQr(timeoutMs?: number): Promise<string>;
  waitForOpen(timeoutMs?: number): Promise<void>;
  waitForClose(timeoutMs?: number): Promise<number>;
  /** Waits until message `id` was reported with exactly this status (update or merged upsert). */
  waitForStatus(id: string, status: number, timeoutMs?: number): Promise<void>;
  /** The statuses reported for message `id`, in order. */
  statusesOf(id: string): number[];
  /** Inbound (not fromMe) upserted messages with this id. */
  inbound(id: string): WAMessage[];
  end(): Promise<void>;
}

/** A Baileys logger that drops everything (Baileys accepts any pino-shaped logger). */
export const silentLogger = {
  level: 'silent',
  child: () => silentLogger,
  trace: () => {},
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
};

/** Test-friendly Baileys timeouts: fast failure instead of Baileys' 20-60 s defaults. */
export const FAST_TIMEOUTS = { keepAliveIntervalMs: 1_000, connectTimeoutMs: 3_000, defaultQueryTimeoutMs: 5_000, qrTimeout: 5_000 };

export function connectClient(wsUrl: string, auth: AuthenticationState, opts: ClientOptions = {}): SimClient {
  const t = { ...FAST_TIMEOUTS, ...opts };
  const sock = makeWASocket({
    waWebSocketUrl: wsUrl,
    auth,
    logger: silentLogger,
    keepAliveIntervalMs: t.keepAliveIntervalMs,
    connectTimeoutMs: t.connectTimeoutMs,
    defaultQueryTimeoutMs: t.defaultQueryTimeoutMs,
    qrTimeout: t.qrTimeout,
    // The simulator's history sync after linking is ignored here (pass `extra.shouldSyncHistoryMessage`
    // to process it), and Baileys does not wait 20 s for history on the first connection.
    shouldSyncHistoryMessage: () => false,
    markOnlineOnConnect: false,
    syncFullHistory: false,
    ...opts.extra,
  });
  const updates: Array<Partial<ConnectionState>> = [];
  const qrs: string[] = [];
  const statusUpdates: Array<{ id: string; status: number; source: 'update' | 'upsert' }> = [];
  const upserts: Array<{ type: string; message: WAMessage }> = [];
  sock.ev.on('messages.update', (list) => {
    for (const u of list) {
      if (u.key.id && typeof u.update.status === 'number') statusUpdates.push({ id: u.key.id, status: u.update.status, source: 'update' });
    }
  });
  sock.ev.on('messages.upsert', ({ messages, type }) => {
    for (const message of messages) {
      upserts.push({ type, message });
      // PENDING (1) is what every sent message starts with; anything else was merged in.
      const status = message.status as number | null | undefined;
      if (message.key.fromMe && message.key.id && typeof status === 'number' && status !== 1) {
        statusUpdates.push({ id: message.key.id, status, source: 'upsert' });
      }
    }
  });
  let connection: ConnectionState['connection'] | undefined;
  let closeCode: number | undefined;
  let newLogin = false;
  sock.ev.on('creds.update', (update) => Object.assign(auth.creds, update));
  sock.ev.on('connection.update', (u) => {
    updates.push(u);
    if (u.qr) qrs.push(u.qr);
    if (u.isNewLogin) newLogin = true;
    if (u.connection) connection = u.connection;
    if (u.connection === 'close') {
      closeCode = (u.lastDisconnect?.error as { output?: { statusCode?: number } } | undefined)?.output?.statusCode ?? -1;
    }
  });
  return {
    sock,
    auth,
    updates,
    qrs,
    statusUpdates,
    upserts,
    connection: () => connection,
    isNewLogin: () => newLogin,
    closeCode: () => closeCode,
    waitForQr: (timeoutMs = 5_000) => waitFor(() => qrs[qrs.length - 1], { timeoutMs, what: 'a QR' }),
    waitForOpen: async (timeoutMs = 10_000) => {
      await waitFor(() => connection === 'open' || closeCode !== undefined, { timeoutMs, what: 'connection open' });
      if (connection !== 'open') throw new Error(`connection closed with ${closeCode} instead of opening`);
    },
    waitForClose: (timeoutMs = 10_000) => waitFor(() => closeCode, { timeoutMs, what: 'connection close' }),
    waitForStatus: async (id, status, timeoutMs = 5_000) => {
      await waitFor(() => statusUpdates.some((u) => u.id === id && u.status === status), { timeoutMs, what: `status ${status} for ${id}` });
    },
    statusesOf: (id) => statusUpdates.filter((u) => u.id === id).map((u) => u.status),
    inbound: (id) => upserts.filter((u) => !u.message.key.fromMe && u.message.key.id === id).map((u) => u.message),
    end: async () => {
      if (closeCode === undefined) {
        sock.end(undefined);
        await waitFor(() => closeCode !== undefined, { timeoutMs: 5_000, what: 'socket end' }).catch(() => undefined);
      }
    },
  };
}
