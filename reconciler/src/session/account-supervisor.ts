/**
 * Drives one account towards its desired state. Level-triggered: Baileys events only record what
 * happened (and report status) and ask for another pass; every action — connect, log out, wipe,
 * restore, delete — happens inside `reconcile`, which the work queue never runs twice at once for
 * one account. See docs/reconciler-design.md.
 */
import { Collections, maskPhone, type AccountDoc, type Phase } from '@wafleet/contract';
import { Timestamp, type Firestore } from 'firebase-admin/firestore';
import type { WASocket } from '@whiskeysockets/baileys';
import type { Logger } from 'pino';
import type { LeaseManager } from '../lease/lease-manager.ts';
import { ConnectPriority, type ConnectGovernor } from '../queue/connect-governor.ts';
import type { ReconcileResult } from '../queue/work-queue.ts';
import type { IncidentWriter } from '../status/incident-writer.ts';
import type { QrWriter } from '../status/qr-writer.ts';
import type { StatusReport, StatusWriter } from '../status/status-writer.ts';
import { CorruptAuthStateError, type AccountAuthState, type AuthStore } from '../store/auth-state.ts';
import type { SessionBackupStore } from '../store/session-backup.ts';
import { backoffDelay } from '../util/backoff.ts';
import { decideOnDisconnect, FailureWindow, type DisconnectDecision } from './disconnect-policy.ts';
import { credsAreLinked, SessionDriver, type SessionClosed, type SessionTimeouts } from './session-driver.ts';

/** What the accounts listener knows of the desired state. */
export interface AccountSpec {
  exists: boolean;
  doc: AccountDoc | null;
  /** Why the document is unusable, for the status message; null when valid. */
  error: string | null;
  updateTime: Timestamp | null;
}

export interface SupervisorDeps {
  db: Firestore;
  log: Logger;
  baileysLog: Logger;
  store: AuthStore;
  backups: SessionBackupStore;
  leases: LeaseManager;
  status: StatusWriter;
  qr: QrWriter;
  incidents: IncidentWriter;
  governor: ConnectGovernor;
  timeouts: SessionTimeouts;
  socketUrl?: string;
  /** Ask for another reconcile pass of this account, now or after a delay. */
  requeue: (delayMs?: number) => void;
  backupDebounceMs: number;
  /** The outbox and inbound messages ride on the session (absent in tests of the session alone). */
  messaging?: SessionMessaging;
  metrics?: SupervisorMetrics;
}

export interface SupervisorMetrics {
  disconnect(code: number | null, reason: string): void;
  connectLatency(ms: number): void;
}

/** Conditions that stop reconnecting until the operator acts (new QR request, relink). */
type Stop = 'needsLink' | 'loggedOut' | 'banned';

const FLAPPING = 'FlappingConnection';
const INCIDENTS_CLEARED_BY_CONNECTING = ['LoggedOut', 'Banned', 'NeedsRelink', 'ConnectionReplaced'];

export interface SessionMessaging {
  attach(accountId: string, sock: WASocket): void;
  opened(accountId: string, sock: WASocket): void;
  closed(accountId: string): void;
  banned(accountId: string): Promise<void>;
  deleted(accountId: string): Promise<void>;
}

export class AccountSupervisor {
  private driver: SessionDriver | null = null;
  private auth: AccountAuthState | null = null;
  private initialized = false;
  private spec: AccountSpec | null = null;
  private lastDesired: string | null = null;
  private stop: Stop | null = null;
  private linkAllowed = true;
  private handledQrAt = 0;
  private handledRelinkAt = 0;
  private attempt = 0;
  private nextRetryAt = 0;
  private pendingWipe = false;
  private verifyOwnership = false;
  private lostOwnership = false;
  private readonly failures = new FailureWindow();
  private connectStartedAt = 0;
  private qrCount = 0;
  private backupTimer: NodeJS.Timeout | null = null;
  private backupRunning: Promise<void> | null = null;
  /** Credentials changed since the last backup started. */
  private backupDirty = false;
  /** Linked since the last open: back up as soon as the session opens, not after the debounce. */
  private newLogin = false;
  private stableTimer: NodeJS.Timeout | null = null;
  private phase: Phase = 'pending';

  constructor(
    readonly accountId: string,
    private readonly d: SupervisorDeps,
  ) {}

  get currentPhase(): Phase {
    return this.phase;
  }

  /** The live socket, for sending (issue 5). */
  get socket() {
    return this.driver?.socket ?? null;
  }

  // ------------------------------------------------------------------ the reconcile pass

  async reconcile(spec: AccountSpec): Promise<ReconcileResult | void> {
    this.spec = spec;
    const result = await this.pass(spec);
    // Whatever the pass did, the status names the spec version it has now seen.
    this.reportObserved();
    return result;
  }

  private async pass(spec: AccountSpec): Promise<ReconcileResult | void> {
    if (!spec.exists) {
      // Removed without deleteAccount (e.g. from the console): stop, keep credentials, let go.
      await this.closeSession();
      await this.closeAuth();
      if (this.d.leases.held(this.accountId)) await this.d.leases.release([this.accountId]);
      this.d.status.forget(this.accountId);
      return;
    }
    // A lease we hold stays ours while our heartbeat lives (we fence ourselves before it could
    // lapse), so routine passes need no Firestore round trip: a reconnect works during an
    // outage. After a 440 the device may have another owner: that needs proof first.
    if (!this.d.leases.held(this.accountId) || this.verifyOwnership) {
      const lease = await this.d.leases.acquire(this.accountId);
      if (!lease.acquired) {
        // Someone else owns it; never touch the device. Look again when their lease could lapse.
        await this.closeSession();
        return { requeueAfterMs: Math.max(1_000, lease.retryAfterMs) };
      }
      this.verifyOwnership = false;
    }
    if (this.lostOwnership) {
      this.lostOwnership = false;
      this.initialized = false;
    }
    if (!this.initialized) await this.initFromStatus();

    if (spec.error || !spec.doc) {
      // Only this account is affected; its session (if any) keeps running as it was.
      this.report({ phase: 'error', reason: 'InvalidSpec', message: `accounts/${this.accountId} is invalid: ${spec.error}` });
      return;
    }
    const doc = spec.doc;
    if (doc.deleteRequestedAt) return this.finishDeletion();

    if (this.pendingWipe) {
      this.pendingWipe = false;
      await this.wipeCredentials();
    }
    const desiredChanged = this.lastDesired !== null && this.lastDesired !== doc.desiredState;
    this.lastDesired = doc.desiredState;

    if (doc.desiredState === 'disconnected') {
      await this.closeSession();
      this.report({ phase: 'disconnected', reason: 'DesiredDisconnected', message: 'Disconnected as requested; credentials are kept.' });
      return;
    }
    if (doc.desiredState === 'loggedOut') {
      if (this.driver?.state === 'open') await this.driver.logout();
      await this.closeSession();
      await this.wipeCredentials();
      this.stop = null;
      this.report({ phase: 'loggedOut', reason: 'LoggedOutByOperator', message: 'Logged out as requested; linking again needs a new QR scan.' });
      return;
    }

    // desiredState: connected
    if (desiredChanged) {
      this.linkAllowed = true;
      if (this.stop !== 'banned') this.stop = null;
    }
    const relinkAt = doc.relinkRequestedAt?.toMillis() ?? 0;
    if (relinkAt > this.handledRelinkAt) {
      this.handledRelinkAt = relinkAt;
      this.d.log.info({ accountId: this.accountId }, 'relink requested: unlinking the current device');
      if (this.driver?.state === 'open') await this.driver.logout();
      await this.closeSession();
      await this.wipeCredentials();
      this.stop = null;
      this.linkAllowed = true;
      this.resetRetries();
    }
    const qrAt = doc.qrRequestedAt?.toMillis() ?? 0;
    if (qrAt > this.handledQrAt) {
      this.handledQrAt = qrAt;
      if (!this.isLinked()) {
        this.linkAllowed = true;
        this.stop = null;
        this.resetRetries();
      }
    }
    if (this.stop) return;
    if (this.driver && this.driver.state !== 'closed') return;

    const wait = this.nextRetryAt - Date.now();
    if (wait > 0) return { requeueAfterMs: wait };
    if (!this.isLinked() && !this.linkAllowed) {
      this.stop = 'needsLink';
      this.report({ phase: 'needsLink', reason: 'LinkRequired', message: 'Not linked. Request a QR code (or pairing code) to link this account.' });
      return;
    }
    await this.connect(doc);
  }

  /** Reads the last status this account had, so a restarted process continues where it left off. */
  private async initFromStatus(): Promise<void> {
    this.initialized = true;
    const snap = await this.d.db.collection(Collections.accountStatus).doc(this.accountId).get();
    if (!snap.exists) return;
    const s = snap.data()!;
    this.handledQrAt = (s.handledQrRequestedAt as Timestamp | undefined)?.toMillis() ?? 0;
    this.handledRelinkAt = (s.handledRelinkRequestedAt as Timestamp | undefined)?.toMillis() ?? 0;
    const phase = s.phase as Phase;
    if (phase === 'banned' || phase === 'loggedOut' || phase === 'needsLink') {
      this.stop = phase;
      this.linkAllowed = false;
    }
    this.phase = phase;
  }

  private isLinked(): boolean {
    if (this.driver) return this.driver.linked;
    return this.auth ? credsAreLinked(this.auth.state.creds) : false;
  }

  // ------------------------------------------------------------------ connecting

  private async connect(doc: AccountDoc): Promise<void> {
    const auth = await this.openAuth();
    const linked = credsAreLinked(auth.state.creds);
    this.report({
      phase: this.attempt > 0 ? 'reconnecting' : 'connecting',
      reason: linked ? 'Connecting' : 'StartingLink',
      message: linked ? 'Connecting to WhatsApp.' : 'Starting to link: a code will appear shortly.',
    });
    const pairingPhone = !linked && doc.linkMethod === 'pairingCode' ? (doc.phoneNumber ?? null) : null;
    let settle: () => void = () => undefined;
    const settled = new Promise<void>((r) => (settle = r));
    const driver = new SessionDriver({
      accountId: this.accountId,
      auth,
      log: this.d.log,
      baileysLog: this.d.baileysLog,
      timeouts: this.d.timeouts,
      ...(this.d.socketUrl ? { socketUrl: this.d.socketUrl } : {}),
      pairingPhone,
      events: {
        onConnecting: () => undefined,
        onQr: (qr) => {
          settle();
          this.onQr(qr);
        },
        onPairingCode: (code) => {
          settle();
          this.onPairingCode(code);
        },
        onOpen: (info) => {
          settle();
          this.onOpen(info);
        },
        onClosed: (info) => {
          settle();
          this.onClosed(driver, info);
        },
        onCredsSaved: () => this.scheduleBackup(),
        onSocket: (sock) => this.d.messaging?.attach(this.accountId, sock),
        onNewLogin: () => {
          this.newLogin = true;
          this.scheduleBackup();
        },
      },
    });
    this.driver = driver;
    this.qrCount = 0;
    // The governor paces logins fleet-wide; a slot is held until the socket opens, shows a code or fails.
    await this.d.governor
      .run(
        this.accountId,
        async () => {
          this.connectStartedAt = Date.now();
          driver.start();
          await settled;
        },
        { priority: linked ? ConnectPriority.linked : ConnectPriority.newLink },
      )
      .catch((err: unknown) => {
        this.d.log.warn({ accountId: this.accountId, err: String(err) }, 'connect cancelled');
        if (this.driver === driver && driver.state === 'idle') this.driver = null;
      });
  }

  private async openAuth(): Promise<AccountAuthState> {
    if (this.auth && !this.auth.closed) return this.auth;
    const { store } = this.d;
    let restored = false;
    if (!(await store.exists(this.accountId))) restored = await this.restoreFromBackup('missing');
    try {
      this.auth = await store.open(this.accountId);
    } catch (err) {
      if (!(err instanceof CorruptAuthStateError)) throw err;
      this.d.log.error({ accountId: this.accountId, err: err.message }, 'local credentials are corrupt');
      restored = await this.restoreFromBackup('corrupt');
      if (!restored) await store.wipe(this.accountId);
      this.auth = await store.open(this.accountId);
    }
    if (restored) this.d.log.info({ accountId: this.accountId }, 'credentials restored from the encrypted backup');
    return this.auth;
  }

  private async restoreFromBackup(why: 'missing' | 'corrupt'): Promise<boolean> {
    try {
      const blob = await this.d.backups.load(this.accountId);
      if (!blob) return false;
      await this.d.store.restore(this.accountId, blob);
      return true;
    } catch (err) {
      this.d.log.error({ accountId: this.accountId, why, err: String(err) }, 'restoring credentials from the backup failed');
      return false;
    }
  }

  // ------------------------------------------------------------------ session events

  private onQr(qr: string): void {
    this.qrCount++;
    // Baileys: the first code of a link attempt lasts qrTimeout (60 s), later ones 20 s.
    const validFor = this.qrCount === 1 ? (this.d.timeouts.qrTimeoutMs ?? 60_000) : 20_000;
    void this.d.qr.publishQr(this.accountId, qr, validFor);
    this.report({ phase: 'awaitingScan', reason: 'QrCodeReady', message: 'Scan the QR code with WhatsApp on the phone (Linked devices).' });
  }

  private onPairingCode(code: string): void {
    void this.d.qr.publishPairingCode(this.accountId, code, 180_000);
    this.report({ phase: 'awaitingScan', reason: 'PairingCodeReady', message: 'Enter the pairing code on the phone (Linked devices → Link with phone number).' });
  }

  private onOpen(info: { meJid: string | null }): void {
    this.d.metrics?.connectLatency(Date.now() - this.connectStartedAt);
    this.linkAllowed = false;
    this.stop = null;
    this.attempt = 0;
    this.nextRetryAt = 0;
    void this.d.qr.clear(this.accountId);
    this.report({
      phase: 'connected',
      reason: 'Connected',
      message: 'Connected to WhatsApp.',
      linkedPhoneMasked: maskPhone(info.meJid),
      lastConnectedAt: Timestamp.now(),
      reconnectAttempt: 0,
      nextRetryAt: null,
    });
    for (const type of INCIDENTS_CLEARED_BY_CONNECTING) void this.d.incidents.resolve(this.accountId, this.accountId, type);
    const sock = this.driver?.socket;
    if (sock) this.d.messaging?.opened(this.accountId, sock);
    // The circuit breaker closes after a stable period, not at the first success.
    if (this.stableTimer) clearTimeout(this.stableTimer);
    this.stableTimer = setTimeout(() => {
      if (this.driver?.state === 'open') {
        this.failures.reset();
        void this.d.incidents.resolve(this.accountId, this.accountId, FLAPPING);
      }
    }, 10 * 60_000);
    this.stableTimer.unref();
    if (this.newLogin) {
      this.newLogin = false;
      this.scheduleBackup(0);
    }
  }

  private onClosed(driver: SessionDriver, info: SessionClosed): void {
    if (this.driver !== driver) return;
    this.driver = null;
    this.d.messaging?.closed(this.accountId);
    if (this.stableTimer) clearTimeout(this.stableTimer);
    if (info.cause === 'requested') return;
    const decision = this.decide(info);
    this.d.metrics?.disconnect(info.code, decision.reason);
    // A 515 is WhatsApp's routine restart right after linking, not a problem.
    const level = decision.retry === 'now' ? 'info' : 'warn';
    this.d.log[level]({ accountId: this.accountId, code: info.code, cause: info.cause, reason: decision.reason }, 'session closed');
    const now = Date.now();
    const lastDisconnect = { code: info.code, reason: decision.reason, at: Timestamp.fromMillis(now) };
    if (decision.incident) {
      void this.d.incidents.raise(this.accountId, decision.incident.fleetWide ? null : this.accountId, decision.incident.type, decision.incident.severity, decision.message);
    }
    if (decision.wipeCredentials) this.pendingWipe = true;
    if (decision.verifyOwnership) this.verifyOwnership = true;
    if (decision.retry === 'never') {
      this.stop = decision.phase === 'banned' ? 'banned' : decision.phase === 'loggedOut' ? 'loggedOut' : 'needsLink';
      this.linkAllowed = false;
      if (this.stop !== 'banned') void this.d.qr.clear(this.accountId);
      else void this.d.messaging?.banned(this.accountId);
      this.report({ phase: decision.phase, reason: decision.reason, message: decision.message, lastDisconnect, reconnectAttempt: 0, nextRetryAt: null });
      this.d.requeue();
      return;
    }
    if (decision.retry === 'now') {
      this.report({ phase: decision.phase, reason: decision.reason, message: decision.message, lastDisconnect });
      this.d.requeue();
      return;
    }
    if (this.failures.record(now)) {
      void this.d.incidents.raise(this.accountId, this.accountId, FLAPPING, 'warning', `The connection failed ${this.failures.count(now)} times in the last hour (last: ${decision.reason}).`);
    }
    // 440 waits at least the base delay: reconnecting at once is how conflict loops start.
    const delay = Math.max(decision.verifyOwnership ? 5_000 : 1_000, backoffDelay(this.attempt, { baseMs: 2_000, maxMs: 5 * 60_000, jitter: 'equal' }));
    this.attempt++;
    this.nextRetryAt = now + delay;
    this.report({
      phase: decision.phase,
      reason: decision.reason,
      message: decision.message,
      lastDisconnect,
      reconnectAttempt: this.attempt,
      nextRetryAt: Timestamp.fromMillis(this.nextRetryAt),
    });
    // After a 440 the next pass re-acquires the lease first: the ownership check.
    this.d.requeue(delay);
  }

  private decide(info: SessionClosed): DisconnectDecision {
    if (info.cause === 'connectDeadline') {
      return { ...decideOnDisconnect(408, { linked: true }), reason: 'ConnectTimeout', message: 'The connection did not open in time; retrying with backoff.' };
    }
    if (info.cause === 'zombie') {
      return { ...decideOnDisconnect(408, { linked: true }), reason: 'ZombieConnection', message: 'The connection stopped receiving data; it was closed and will be retried.' };
    }
    return decideOnDisconnect(info.code, { linked: info.linked, detail: info.detail });
  }

  private resetRetries(): void {
    this.attempt = 0;
    this.nextRetryAt = 0;
  }

  // ------------------------------------------------------------------ status

  /** Re-reports the current status with the newest spec time (no write when nothing changed). */
  private reportObserved(): void {
    const cur = this.d.status.current(this.accountId);
    if (!cur || !this.d.leases.held(this.accountId)) return;
    const { since: _since, handled: _handled, ...rest } = cur;
    this.report({ ...rest, observedSpecTime: this.spec?.updateTime ?? null });
  }

  private report(r: Omit<StatusReport, 'observedSpecTime'> & { observedSpecTime?: Timestamp | null }): void {
    this.phase = r.phase;
    void this.d.status.report(this.accountId, {
      ...r,
      observedSpecTime: r.observedSpecTime ?? this.spec?.updateTime ?? null,
      handled: { qrRequestedAt: this.handledQrAt, relinkRequestedAt: this.handledRelinkAt },
    });
  }

  // ------------------------------------------------------------------ backups

  private scheduleBackup(delayMs = this.d.backupDebounceMs): void {
    this.backupDirty = true;
    if (this.backupTimer) {
      if (delayMs > 0) return; // one is already scheduled; it will include this change
      clearTimeout(this.backupTimer);
    }
    this.backupTimer = setTimeout(() => {
      this.backupTimer = null;
      void this.flushBackup();
    }, delayMs);
    this.backupTimer.unref();
  }

  /**
   * Backs up until no change is left: a change that lands while a backup is being written is
   * caught by the same run, so whoever awaits it (shutdown) knows the newest credentials are saved.
   */
  private flushBackup(): Promise<void> {
    this.backupRunning ??= (async () => {
      try {
        while (this.backupDirty) {
          this.backupDirty = false;
          try {
            const blob = await this.d.store.snapshot(this.accountId);
            await this.d.backups.save(this.accountId, blob);
          } catch (err) {
            this.d.log.warn({ accountId: this.accountId, err: String(err) }, 'session backup failed; will retry');
            this.scheduleBackup(30_000);
            return;
          }
        }
      } finally {
        this.backupRunning = null;
      }
    })();
    return this.backupRunning;
  }

  // ------------------------------------------------------------------ teardown

  private async wipeCredentials(): Promise<void> {
    if (this.backupTimer) clearTimeout(this.backupTimer);
    this.backupTimer = null;
    this.backupDirty = false;
    this.newLogin = false;
    await this.backupRunning;
    await this.closeAuth(false);
    await this.d.store.wipe(this.accountId);
    await this.d.backups.delete(this.accountId);
  }

  private async finishDeletion(): Promise<void> {
    this.d.log.info({ accountId: this.accountId }, 'deleting account: logging out and wiping credentials');
    if (this.driver?.state === 'open') await this.driver.logout();
    await this.closeSession();
    await this.wipeCredentials();
    await Promise.all([this.d.qr.clear(this.accountId), this.d.status.remove(this.accountId)]);
    await this.d.messaging?.deleted(this.accountId);
    for (const type of [...INCIDENTS_CLEARED_BY_CONNECTING, FLAPPING]) void this.d.incidents.resolve(this.accountId, this.accountId, type);
    await this.d.leases.fenced(this.accountId, (tx) => {
      tx.delete(this.d.db.collection(Collections.accounts).doc(this.accountId));
    });
    await this.d.leases.release([this.accountId]);
  }

  /** Closes the socket (never a logout). */
  async closeSession(timeoutMs = 5_000): Promise<void> {
    const driver = this.driver;
    this.driver = null;
    this.d.messaging?.closed(this.accountId);
    this.d.governor.cancel(this.accountId);
    if (this.stableTimer) clearTimeout(this.stableTimer);
    if (driver) await driver.close(timeoutMs);
  }

  private async closeAuth(flush = true): Promise<void> {
    const auth = this.auth;
    this.auth = null;
    if (auth && !auth.closed) await auth.close({ flush });
  }

  /** The lease was lost (a fenced write was refused): stop driving the device at once. */
  async onLostOwnership(): Promise<void> {
    this.lostOwnership = true;
    this.d.log.warn({ accountId: this.accountId }, 'lost ownership: closing the session');
    await this.closeSession();
    await this.closeAuth();
    this.d.status.forget(this.accountId);
    this.d.requeue(1_000);
  }

  /** Heartbeat lost: close the socket before the lease may lapse; no Firestore writes here. */
  async fence(): Promise<void> {
    await this.closeSession(2_000);
    this.resetRetries();
  }

  /** Graceful shutdown: close the socket, flush credentials, take a last backup (bounded by the caller). */
  async shutdown(): Promise<void> {
    await this.closeSession();
    if (this.backupTimer) clearTimeout(this.backupTimer);
    this.backupTimer = null;
    if (this.backupDirty || this.backupRunning) await this.flushBackup();
    await this.closeAuth();
  }
}
