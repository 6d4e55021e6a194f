export type ConnectionEventType =
  | 'connect'
  | 'upgrade-rejected'
  | 'handshake'
  | 'login'
  | 'login-failed'
  | 'history-sync'
  | 'register'
  | 'pair'
  | 'conflict'
  | 'stream-error'
  | 'fault'
  | 'device-removed'
  | 'error'
  | 'retry'
  | 'close';

export interface ConnectionEvent {
  seq: number;
  at: number;
  type: ConnectionEventType;
  connectionId: number;
  /** Device JID once known (after the login payload or pairing). */
  deviceJid?: string;
  /** Stream-error / failure / close code where one applies. */
  code?: number;
  detail?: string;
}

export interface DeviceStats {
  deviceJid: string;
  openConnections: number;
  logins: number;
  loginFailures: number;
  /** Times an older connection of this device was replaced by a newer one (440 on the old one). */
  conflicts: number;
  streamErrors: number;
  closes: number;
  messagesSent: number;
  messagesAcked: number;
  /** Retry receipts from this device answered with a re-encryption. */
  retryReceipts: number;
  /** Sessions with this device rebuilt to answer a retry receipt (from its keys or a server bundle). */
  retrySessionRebuilds: number;
  lastLoginAt?: number;
  lastCloseCode?: number;
}

export interface GlobalStats {
  openConnections: number;
  connections: number;
  logins: number;
  conflicts: number;
  messagesSent: number;
  messagesAcked: number;
  /** Retry receipts answered by re-encrypting a simulated user's message for the device. */
  retryReceipts: number;
  /** Sessions rebuilt before answering a retry receipt: from the receipt's `<keys>` or a fresh server bundle. */
  retrySessionRebuilds: number;
  /** Retry receipts not answered because the message was already resent MAX_MSG_RETRY_COUNT times to that device. */
  retryLimitReached: number;
  /** Retry receipts with an unreadable `<retry>` (ignored) or an invalid `<keys>` bundle (handled as without keys). */
  retryReceiptsMalformed: number;
}

const MAX_EVENTS = 20_000;

/** Connection event log (bounded) plus per-device and global counters. */
export class ConnectionLog {
  private readonly log: ConnectionEvent[] = [];
  private seq = 0;
  private readonly devices = new Map<string, DeviceStats>();
  readonly global: GlobalStats = {
    openConnections: 0,
    connections: 0,
    logins: 0,
    conflicts: 0,
    messagesSent: 0,
    messagesAcked: 0,
    retryReceipts: 0,
    retrySessionRebuilds: 0,
    retryLimitReached: 0,
    retryReceiptsMalformed: 0,
  };
  private readonly listeners = new Set<(e: ConnectionEvent) => void>();

  record(event: Omit<ConnectionEvent, 'seq' | 'at'>): ConnectionEvent {
    const full: ConnectionEvent = { seq: ++this.seq, at: Date.now(), ...event };
    this.log.push(full);
    if (this.log.length > MAX_EVENTS) this.log.splice(0, this.log.length - MAX_EVENTS);
    for (const l of this.listeners) l(full);
    return full;
  }

  onEvent(listener: (e: ConnectionEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  events(filter: { deviceJid?: string; type?: ConnectionEventType; sinceSeq?: number } = {}): ConnectionEvent[] {
    return this.log.filter(
      (e) =>
        (!filter.deviceJid || e.deviceJid === filter.deviceJid) &&
        (!filter.type || e.type === filter.type) &&
        (filter.sinceSeq === undefined || e.seq > filter.sinceSeq),
    );
  }

  device(deviceJid: string): DeviceStats {
    let s = this.devices.get(deviceJid);
    if (!s) {
      s = { deviceJid, openConnections: 0, logins: 0, loginFailures: 0, conflicts: 0, streamErrors: 0, closes: 0, messagesSent: 0, messagesAcked: 0, retryReceipts: 0, retrySessionRebuilds: 0 };
      this.devices.set(deviceJid, s);
    }
    return s;
  }

  allDevices(): DeviceStats[] {
    return [...this.devices.values()].map((s) => ({ ...s }));
  }
}
