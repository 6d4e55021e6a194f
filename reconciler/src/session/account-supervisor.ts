/**
 * Drives one account towards its desired state. Level-triggered: Baileys events only record what
 * happened (and report status) and ask for another pass; every action — connect, log out, wipe,
 * restore, delete — happens inside `reconcile`, which the work queue never runs twice at once for
 * one account. See docs/reconciler-design.md.
 */
import { Collections, maskPhone, type AccountDoc, type DesiredState, type Phase } from '@wafleet/contract';
import { Timestamp, type Firestore } from 'firebase-admin/firestore';
import type { WASocket } from '@whiskeysockets/baileys';
import type { Logger } from 'pino';
import type { LeaseManager } from '../lease/lease-manager.ts';
import type { Placement } from '../lease/placement.ts';
import type { CapacityGate } from '../queue/capacity-gate.ts';
import { ConnectPriority, type ConnectGovernor } from '../queue/connect-governor.ts';
import type { ReconcileResult } from '../queue/work-queue.ts';
import type { IncidentWriter } from '../status/incident-writer.ts';
import type { QrWriter } from '../status/qr-writer.ts';
import type { StatusReport, StatusWriter } from '../status/status-writer.ts';
import type { AccountAuthState, AuthStore } from '../store/auth-state.ts';
import { BackupRefusedError, type SessionBackupStore } from '../store/session-backup.ts';
import { backoffDelay } from '../util/backoff.ts';
import { withTimeout } from '../util/deadline.ts';
import { BackupScheduler } from './backup-scheduler.ts';
import { CredentialsUnavailableError, openCredentials } from './credentials-loader.ts';
import { decideOnDisconnect, FailureWindow, type DisconnectDecision } from './disconnect-policy.ts';
import { credsAreLinked, SessionDriver, type SessionClosed, type SessionEvents, type SessionTimeouts } from './session-driver.ts';
import type { WaVersionState } from './wa-version.ts';

/** What the accounts listener knows of the desired state. */
export interface AccountSpec {
  exists: boolean;
  doc: AccountDoc | null;
  /** Why the document is unusable, for the status message; null when valid. */
  error: string | null;
  updateTime: Timestamp | null;
  /**
   * What an invalid document still says about stopping: a delete or logout must go through even
   * when another field is bad, or the account stays linked with nothing but a console edit to
   * repair it. Null for a valid document (read `doc`).
   */
  intent?: StopIntent | null;
}

export interface StopIntent {
  deleteRequested: boolean;
  desiredState: DesiredState | null;
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
  /** MAX_ACCOUNTS: which accounts this process may drive. */
  capacity: CapacityGate;
  /** Several reconcilers: which instance takes an account nobody drives (lease/placement.ts). */
  placement?: Placement;
  timeouts: SessionTimeouts;
  socketUrl?: string;
  /** Ask for another reconcile pass of this account, now or after a delay. */
  requeue: (delayMs?: number) => void;
  backupDebounceMs: number;
  /**
   * How long a connection must stay open before its reconnect backoff starts again from the
   * first step: an open-then-kicked loop (440, 500 or 428 right after login) must slow down
   * instead of reconnecting every few seconds, the pattern that gets numbers banned.
   */
  stableAfterMs?: number;
  /** The outbox and inbound messages ride on the session (absent in tests of the session alone). */
  messaging?: SessionMessaging;
  metrics?: SupervisorMetrics;
  /** The WhatsApp Web version to announce (fleetConfig/whatsapp override, else start-up); Baileys' bundled one when absent. */
  waVersion?: WaVersionState;
}

export interface SupervisorMetrics {
  disconnect(code: number | null, reason: string): void;
  connectLatency(ms: number): void;
}

/** Conditions that stop reconnecting until the operator acts (new QR request, relink). */
type Stop = 'needsLink' | 'loggedOut' | 'banned';

const FLAPPING = 'FlappingConnection';
const UNLINK_PENDING = 'UnlinkPending';
/** Tries (a short login each) before a wipe goes ahead with the device possibly still listed. */
const UNLINK_ATTEMPTS = 3;
const UNLINK_LOGIN_TIMEOUT_MS = 20_000;
const CAPACITY = 'CapacityExceeded';
/** An account waiting for a slot looks again this often, besides being woken when one frees. */
const CAPACITY_RECHECK_MS = 60_000;
/** WhatsApp asks for one restart after linking; more than this in a row is a loop, not routine. */
const MAX_RESTARTS_IN_A_ROW = 3;
const DEFAULT_STABLE_AFTER_MS = 60_000;
/** Incidents of credentials that could not be opened; cleared once they open. */
const CREDENTIAL_INCIDENTS = ['RestoreFailed', 'BackupUnreadable', 'CredentialsCorrupt'] as const;
const INCIDENTS_CLEARED_BY_CONNECTING = ['LoggedOut', 'Banned', 'NeedsRelink', 'ConnectionReplaced'];
/** Fleet-wide (405): resolved by the first session that opens after it (WaVersionState.takeResolve). */
const CLIENT_OUTDATED = 'ClientOutdated';
/** After a handover: past the receiver's reservation (lease-manager.ts), in case it never took it. */
const HANDOVER_LOOK_AGAIN_MS = 35_000;
/** Phases of an account that was linked and online: never linked anew without an operator. */
const ONLINE_PHASES: ReadonlySet<Phase> = new Set(['connected', 'connecting', 'reconnecting', 'disconnected']);

export interface SessionMessaging {
  /** Whether a send is in flight or waiting (a handover waits for an idle outbox). */
  busy(accountId: string): boolean;
  attach(accountId: string, sock: WASocket): void;
  opened(accountId: string, sock: WASocket): void;
  closed(accountId: string): void;
  banned(accountId: string): Promise<void>;
  deleted(accountId: string): Promise<void>;
}

interface LinkTarget {
  method: 'qr' | 'pairingCode';
  /** The number a pairing code is for; null for a QR. */
  phone: string | null;
}

/** A pairing code needs a number; without one the account links by QR. */
function linkTarget(doc: AccountDoc): LinkTarget {
  return doc.linkMethod === 'pairingCode' && doc.phoneNumber ? { method: 'pairingCode', phone: doc.phoneNumber } : { method: 'qr', phone: null };
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
  private readonly backups: BackupScheduler;
  /** Linked since the last open: back up as soon as the session opens, not after the debounce. */
  private newLogin = false;
  private stableTimer: NodeJS.Timeout | null = null;
  private breakerTimer: NodeJS.Timeout | null = null;
  private waitingForSlot = false;
  /** 515s since the last stable connection. */
  private restartsInRow = 0;
  /** How the link attempt in progress was started (null when the credentials are linked). */
  private linkAttempt: LinkTarget | null = null;
  /** Failed attempts to unlink the device before a delete, relink or logout. */
  private unlinkFailures = 0;
  /** A RestoreFailed/BackupUnreadable/CredentialsCorrupt incident may be open for this account. */
  private credentialIncident = false;
  private phase: Phase = 'pending';
  /** The last close was a 405: a new WhatsApp Web version retries at once (onWaVersionChanged). */
  private clientOutdated = false;
  /** When this process last acquired the lease (0: not held). */
  private ownedSinceMs = 0;
  /** A graceful handover to another instance, asked for by the rebalancer or a drain. */
  private handoverRequest: { to: string; why: 'rebalance' | 'drain'; done: (moved: boolean) => void } | null = null;

  constructor(
    readonly accountId: string,
    private readonly d: SupervisorDeps,
  ) {
    this.backups = new BackupScheduler({
      accountId,
      log: d.log,
      debounceMs: d.backupDebounceMs,
      owned: () => Boolean(d.leases.held(accountId)),
      backup: async () => void (await this.backupNow()),
    });
  }

  /**
   * One backup of the open credentials, checked against the generation they are based on: a
   * stale disk never replaces a newer backup, and unlinked credentials never a linked one.
   */
  private async backupNow(): Promise<boolean> {
    const { store, backups, log } = this.d;
    const auth = this.auth;
    // Nothing open: nothing changed since the last backup that this process could know of.
    if (!auth || auth.closed) return false;
    const linked = credsAreLinked(auth.state.creds);
    const blob = await store.snapshot(this.accountId);
    const expectedGeneration = await store.backupGeneration(this.accountId);
    let generation: number;
    try {
      generation = await backups.save(this.accountId, blob, { linked, expectedGeneration });
    } catch (err) {
      if (!(err instanceof BackupRefusedError) || err.reason === 'concurrentSave') throw err;
      // Refusals are final for these credentials: retrying would be refused the same way.
      log[err.reason === 'unlinkedOverLinked' ? 'info' : 'warn']({ accountId: this.accountId, reason: err.reason, storedGeneration: err.storedGeneration }, 'session backup not replaced');
      return false;
    }
    // Only while the same credentials are open: a wipe in between must not get a marker back.
    if (this.auth === auth && !auth.closed) await store.setBackupGeneration(this.accountId, generation);
    log.debug({ accountId: this.accountId, generation, linked }, 'session backed up');
    return true;
  }

  get currentPhase(): Phase {
    return this.phase;
  }

  /** How long this process has driven the account (0 when it does not hold the lease). */
  heldForMs(now = Date.now()): number {
    return this.ownedSinceMs > 0 && this.d.leases.held(this.accountId) ? now - this.ownedSinceMs : 0;
  }

  /**
   * Moves the account to `to` at its next pass (rebalancing, drain): socket closed, credentials
   * backed up, lease handed over; `to` restores and connects. Resolves with whether it moved: an
   * account that is not connected, or whose outbox is busy, stays (the caller picks again later).
   */
  handOver(to: string, why: 'rebalance' | 'drain'): Promise<boolean> {
    this.handoverRequest?.done(false);
    return new Promise<boolean>((done) => {
      this.handoverRequest = { to, why, done };
      this.d.requeue();
    });
  }

  /** The live socket, for sending (issue 5). */
  get socket() {
    return this.driver?.socket ?? null;
  }

  // ------------------------------------------------------------------ the reconcile pass

  async reconcile(spec: AccountSpec): Promise<ReconcileResult | void> {
    this.spec = spec;
    let result: ReconcileResult | void;
    try {
      result = await this.pass(spec);
    } catch (err) {
      if (!(err instanceof CredentialsUnavailableError)) throw err;
      result = this.credentialsUnavailable(err);
    }
    // Whatever the pass did, the status names the spec version it has now seen.
    this.reportObserved();
    return result;
  }

  private async pass(spec: AccountSpec): Promise<ReconcileResult | void> {
    const handover = this.handoverRequest;
    this.handoverRequest = null;
    if (handover) {
      // Never with a send in flight or a delete to finish; rebalancing moves connected accounts
      // only (a drain moves every one: none may stay behind).
      const settled = handover.why === 'drain' || (spec.doc?.desiredState === 'connected' && this.phase === 'connected');
      const movable = spec.exists && !!spec.doc && !spec.doc.deleteRequestedAt && settled && !!this.d.leases.held(this.accountId) && !this.d.messaging?.busy(this.accountId);
      if (!movable) handover.done(false);
      else {
        try {
          const moved = await this.moveTo(handover.to, handover.why);
          handover.done(moved);
        } catch (err) {
          handover.done(false);
          throw err;
        }
        // The receiver has HANDOVER_RESERVE_MS to take it; after that anyone may, us included.
        return { requeueAfterMs: HANDOVER_LOOK_AGAIN_MS };
      }
    }
    if (!spec.exists) {
      // Removed without deleteAccount (e.g. from the console): stop, keep credentials, let go.
      await this.closeSession();
      await this.backups.cancel();
      await this.closeAuth();
      this.releaseSlot();
      if (this.d.leases.held(this.accountId)) await this.d.leases.release([this.accountId]);
      this.d.status.forget(this.accountId);
      return;
    }
    // A lease we hold stays ours while our heartbeat lives (we fence ourselves before it could
    // lapse), so routine passes need no Firestore round trip: a reconnect works during an
    // outage. After a 440 the device may have another owner: that needs proof first.
    if (!this.d.leases.held(this.accountId) || this.verifyOwnership) {
      if (!this.d.leases.held(this.accountId) && this.d.placement) {
        // Another instance may be the better home (more free slots, or ours are all used).
        // (An invalid document may name an id no directory can have: it has no credentials here.)
        const local = !spec.error && spec.doc ? await this.d.store.exists(this.accountId) : false;
        const wait = this.d.placement.beforeAcquire(this.accountId, local);
        if (wait !== null) {
          await this.closeSession();
          this.releaseSlot();
          return { requeueAfterMs: wait };
        }
      }
      const wasHeld = !!this.d.leases.held(this.accountId);
      const lease = await this.d.leases.acquire(this.accountId);
      if (!lease.acquired) {
        // Someone else owns it; never touch the device. Look again when their lease could lapse.
        await this.closeSession();
        this.releaseSlot();
        this.ownedSinceMs = 0;
        return { requeueAfterMs: Math.max(1_000, lease.retryAfterMs) };
      }
      if (!wasHeld) this.ownedSinceMs = Date.now();
      this.verifyOwnership = false;
      this.d.placement?.forget(this.accountId);
    }
    if (this.lostOwnership) {
      this.lostOwnership = false;
      this.initialized = false;
    }
    if (!this.initialized) await this.initFromStatus();

    if (spec.error || !spec.doc) return this.invalidSpec(spec);
    const doc = spec.doc;
    if (doc.deleteRequestedAt) return this.finishDeletion();
    if (!this.d.capacity.take(this.accountId)) return this.waitForCapacity();
    if (this.waitingForSlot) {
      this.waitingForSlot = false;
      if (this.d.capacity.waitingCount === 0) void this.d.incidents.resolve(this.accountId, null, CAPACITY);
    }

    if (this.pendingWipe) {
      this.pendingWipe = false;
      if (await this.wipeCredentials({ keepNewerBackup: true })) {
        this.d.log.warn({ accountId: this.accountId }, 'the rejected credentials were older than the backup: restoring the backup');
        if (this.stop === 'loggedOut') this.stop = null;
        this.linkAllowed = false;
        this.resetRetries();
      }
    }
    const desiredChanged = this.lastDesired !== null && this.lastDesired !== doc.desiredState;
    this.lastDesired = doc.desiredState;

    if (doc.desiredState === 'disconnected') {
      await this.closeSession();
      this.report({ phase: 'disconnected', reason: 'DesiredDisconnected', message: 'Disconnected as requested; credentials are kept.' });
      return;
    }
    if (doc.desiredState === 'loggedOut') return this.logOut();

    // desiredState: connected
    if (desiredChanged) {
      this.linkAllowed = true;
      if (this.stop !== 'banned') this.stop = null;
    }
    const relinkAt = doc.relinkRequestedAt?.toMillis() ?? 0;
    if (relinkAt > this.handledRelinkAt) {
      this.d.log.info({ accountId: this.accountId }, 'relink requested: unlinking the current device');
      const retry = await this.ensureUnlinked('relink');
      if (retry) return retry;
      this.handledRelinkAt = relinkAt;
      await this.wipeCredentials();
      this.stop = null;
      this.linkAllowed = true;
      this.resetRetries();
    }
    const qrAt = doc.qrRequestedAt?.toMillis() ?? 0;
    if (qrAt > this.handledQrAt) {
      // Read first: credentials that cannot be opened now leave the request for a later pass.
      const linked = await this.isLinked();
      this.handledQrAt = qrAt;
      if (!linked) {
        this.linkAllowed = true;
        this.stop = null;
        this.resetRetries();
      }
    }
    if (this.stop) return;
    // A link attempt shows a code for the method and number it started with; a document that now
    // asks for another (pairing code for a new number, or QR instead) starts the attempt over.
    const attempt = this.linkAttempt;
    if (this.driver && this.driver.state !== 'closed' && attempt && !this.driver.linked) {
      const wanted = linkTarget(doc);
      if (wanted.method !== attempt.method || wanted.phone !== attempt.phone) {
        this.d.log.info({ accountId: this.accountId, method: wanted.method }, 'the link method or number changed: starting the link attempt over');
        await this.closeSession();
      }
    }
    if (this.driver && this.driver.state !== 'closed') return;

    const wait = this.nextRetryAt - Date.now();
    if (wait > 0) return { requeueAfterMs: wait };
    if (!this.linkAllowed && !(await this.isLinked())) {
      this.stop = 'needsLink';
      const lost = ONLINE_PHASES.has(this.phase);
      const message = lost
        ? 'Linked before, but its credentials are neither on this disk nor in a backup (the disk it ran on is gone and no backup was written yet). Request a QR code (or pairing code) to link it again.'
        : 'Not linked. Request a QR code (or pairing code) to link this account.';
      this.report({ phase: 'needsLink', reason: 'LinkRequired', message });
      return;
    }
    await this.connect(doc);
  }

  /**
   * The document is invalid: only this account is affected, and its session (if any) keeps
   * running as it was, except that what it says about stopping is obeyed.
   */
  private async invalidSpec(spec: AccountSpec): Promise<ReconcileResult | void> {
    const intent = spec.intent;
    if (intent?.deleteRequested) return this.finishDeletion();
    if (intent?.desiredState === 'loggedOut') return this.logOut(spec.error);
    if (intent?.desiredState === 'disconnected') await this.closeSession();
    this.report({ phase: 'error', reason: 'InvalidSpec', message: `accounts/${this.accountId} is invalid: ${spec.error}` });
  }

  /** Gives the slot back (or stops waiting for one); the last waiter to go resolves the incident. */
  private releaseSlot(): void {
    this.d.capacity.release(this.accountId);
    if (!this.waitingForSlot) return;
    this.waitingForSlot = false;
    if (this.d.capacity.waitingCount === 0) void this.d.incidents.resolve(this.accountId, null, CAPACITY);
  }

  private async waitForCapacity(): Promise<ReconcileResult> {
    const { limit } = this.d.capacity;
    const peer = this.d.placement?.peerWithRoom();
    if (peer) {
      // Full here, room there: handed over to it (its listener wakes it at once; placement.ts
      // keeps us from taking it back). A plain release waited for whoever looked next (28 s in
      // the fleet bench, for an account handed to us on counts that were stale).
      this.d.log.info({ accountId: this.accountId, peer }, 'no free slot here; handing the account to a reconciler with room');
      this.releaseSlot();
      this.d.status.forget(this.accountId);
      await this.d.leases.handOver(this.accountId, peer);
      this.ownedSinceMs = 0;
      return { requeueAfterMs: CAPACITY_RECHECK_MS };
    }
    const message = `No reconciler has a free slot: this one already drives its maximum of ${limit} accounts (MAX_ACCOUNTS), and so does every other live one; this account waits for a free slot.`;
    if (!this.waitingForSlot) {
      this.waitingForSlot = true;
      void this.d.incidents.raise(this.accountId, null, CAPACITY, 'warning', `More accounts than the live reconcilers have slots for (this one: MAX_ACCOUNTS ${limit}): at least one account is not driven.`);
    }
    this.report({ phase: 'pending', reason: 'NoCapacity', message });
    return { requeueAfterMs: CAPACITY_RECHECK_MS };
  }

  private async logOut(invalid: string | null = null): Promise<ReconcileResult | void> {
    const retry = await this.ensureUnlinked('logout');
    if (retry) return retry;
    await this.wipeCredentials();
    this.stop = null;
    const note = invalid ? ` (accounts/${this.accountId} is invalid: ${invalid})` : '';
    this.report({ phase: 'loggedOut', reason: 'LoggedOutByOperator', message: `Logged out as requested; linking again needs a new QR scan.${note}` });
  }

  /** Reads the last status this account had, so a restarted process continues where it left off. */
  private async initFromStatus(): Promise<void> {
    this.initialized = true;
    const snap = await withTimeout(this.d.db.collection(Collections.accountStatus).doc(this.accountId).get(), 15_000, `status read of ${this.accountId}`);
    if (!snap.exists) return;
    const s = snap.data()!;
    this.handledQrAt = (s.handledQrRequestedAt as Timestamp | undefined)?.toMillis() ?? 0;
    this.handledRelinkAt = (s.handledRelinkRequestedAt as Timestamp | undefined)?.toMillis() ?? 0;
    const phase = s.phase as Phase;
    if (phase === 'error' && (CREDENTIAL_INCIDENTS as readonly string[]).includes(s.reason as string)) this.credentialIncident = true;
    // It waited for a slot on another instance (or before a restart): the slot it gets here may
    // be the last one the CapacityExceeded incident waits for.
    if (phase === 'pending' && s.reason === 'NoCapacity') this.waitingForSlot = true;
    // It was linked and online (here before a restart, or on another instance before a takeover):
    // credentials that cannot be found now (a lost disk and no backup yet) are no reason to start
    // a new link by ourselves; the pass reports needsLink and waits for an operator's request.
    if (s.lastConnectedAt && ONLINE_PHASES.has(phase)) this.linkAllowed = false;
    if (phase === 'banned' || phase === 'loggedOut' || phase === 'needsLink') {
      this.stop = phase;
      this.linkAllowed = false;
    }
    // "Not linked" is a fact about the credentials, not about the last status: an outage or a
    // lost lease can leave needsLink behind while the disk (or the backup) still holds a linked
    // device, which must come back by itself. A 411 asks for a relink whatever the disk says.
    if (phase === 'needsLink' && s.reason !== 'MultideviceMismatch') {
      // Unopenable credentials are not "unlinked": the connect path reports them, with backoff.
      const linked = await this.isLinked().catch((err: unknown) => {
        if (err instanceof CredentialsUnavailableError) return true;
        throw err;
      });
      if (linked) this.stop = null;
    }
    this.phase = phase;
  }

  /**
   * The account stays as it is, linked in the backup or on disk, until the credentials can be
   * opened: it retries with backoff and never falls back to a fresh link, which only an
   * operator's relink (or delete, or logout) may start.
   */
  private credentialsUnavailable(err: CredentialsUnavailableError): ReconcileResult {
    const transient = err.reason === 'RestoreFailed';
    this.credentialIncident = true;
    this.d.log.error({ accountId: this.accountId, reason: err.reason, err: err.detail }, 'cannot open the credentials');
    const delay = backoffDelay(this.attempt++, { baseMs: transient ? 2_000 : 30_000, maxMs: 5 * 60_000, jitter: 'equal' });
    this.nextRetryAt = Date.now() + delay;
    const what: Record<CredentialsUnavailableError['reason'], string> = {
      RestoreFailed: 'The encrypted backup could not be read; retrying.',
      BackupUnreadable: 'The encrypted backup cannot be decrypted or is damaged (check BACKUP_KEY); nothing was overwritten. Retrying; a relink starts over.',
      CredentialsCorrupt: 'The stored credentials are unreadable and there is no backup. A relink (new QR scan) starts over.',
    };
    void this.d.incidents.raise(this.accountId, this.accountId, err.reason, transient ? 'warning' : 'critical', `${what[err.reason]} (${err.detail})`.slice(0, 1000));
    this.report({ phase: 'error', reason: err.reason, message: what[err.reason], reconnectAttempt: this.attempt, nextRetryAt: Timestamp.fromMillis(this.nextRetryAt) });
    return { requeueAfterMs: delay };
  }

  /** Whether the credentials (the live session's, else those on disk or in the backup) are linked. */
  private async isLinked(): Promise<boolean> {
    if (this.driver) return this.driver.linked;
    return credsAreLinked((await this.openAuth()).state.creds);
  }

  // ------------------------------------------------------------------ connecting

  private async connect(doc: AccountDoc): Promise<void> {
    let auth = await this.openAuth();
    const linked = credsAreLinked(auth.state.creds);
    if (!linked && auth.state.creds.me) {
      // requestPairingCode stores `me` (the number) before the phone accepts anything; Baileys
      // then logs in as that number instead of registering, and WhatsApp answers 401 (unknown
      // device): an unfinished pairing attempt must not outlive itself.
      this.d.log.info({ accountId: this.accountId }, 'discarding the credentials of an unfinished link attempt');
      await this.closeAuth(false);
      await this.d.store.wipe(this.accountId);
      auth = await this.openAuth();
    }
    this.report({
      phase: this.attempt > 0 ? 'reconnecting' : 'connecting',
      reason: linked ? 'Connecting' : 'StartingLink',
      message: linked ? 'Connecting to WhatsApp.' : 'Starting to link: a code will appear shortly.',
    });
    const target = linkTarget(doc);
    const pairingPhone = !linked ? target.phone : null;
    this.linkAttempt = linked ? null : target;
    let settle: () => void = () => undefined;
    const settled = new Promise<void>((r) => (settle = r));
    const driver = this.newDriver(auth, pairingPhone, {
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
      onCredsSaved: () => this.backups.schedule(),
      onSocket: (sock) => this.d.messaging?.attach(this.accountId, sock),
      onNewLogin: () => {
        this.newLogin = true;
        this.backups.schedule();
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
        this.d.log.warn({ accountId: this.accountId, err }, 'connect cancelled');
        if (this.driver === driver && driver.state === 'idle') this.driver = null;
      });
  }

  private async openAuth(): Promise<AccountAuthState> {
    if (this.auth && !this.auth.closed) return this.auth;
    this.auth = await openCredentials(this.accountId, this.d);
    // Only when one may be open: each resolve is a transaction, and every open would pay three.
    if (this.credentialIncident) {
      this.credentialIncident = false;
      for (const type of CREDENTIAL_INCIDENTS) void this.d.incidents.resolve(this.accountId, this.accountId, type);
    }
    return this.auth;
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
    this.nextRetryAt = 0;
    void this.d.qr.clear(this.accountId);
    // The backoff starts from the first step again only once the connection has proven stable:
    // a session kicked right after every login keeps backing off (reconnectAttempt keeps counting).
    this.report({
      phase: 'connected',
      reason: 'Connected',
      message: 'Connected to WhatsApp.',
      linkedPhoneMasked: maskPhone(info.meJid),
      lastConnectedAt: Timestamp.now(),
      reconnectAttempt: this.attempt,
      nextRetryAt: null,
    });
    for (const type of INCIDENTS_CLEARED_BY_CONNECTING) void this.d.incidents.resolve(this.accountId, this.accountId, type);
    this.clientOutdated = false;
    if (this.d.waVersion?.takeResolve()) void this.d.incidents.resolve(this.accountId, null, CLIENT_OUTDATED);
    const sock = this.driver?.socket;
    if (sock) this.d.messaging?.opened(this.accountId, sock);
    this.clearStableTimers();
    const driver = this.driver;
    this.stableTimer = setTimeout(() => {
      if (this.driver !== driver || driver?.state !== 'open') return;
      this.resetRetries();
      this.restartsInRow = 0;
      if (this.attempt === 0 && this.d.status.current(this.accountId)?.reconnectAttempt) this.reportObserved({ reconnectAttempt: 0 });
    }, this.d.stableAfterMs ?? DEFAULT_STABLE_AFTER_MS);
    this.stableTimer.unref();
    // The circuit breaker closes after a longer stable period, not at the first success.
    this.breakerTimer = setTimeout(() => {
      if (this.driver === driver && driver?.state === 'open') {
        this.failures.reset();
        void this.d.incidents.resolve(this.accountId, this.accountId, FLAPPING);
      }
    }, 10 * 60_000);
    this.breakerTimer.unref();
    if (this.newLogin) {
      this.newLogin = false;
      this.backups.schedule(0);
    }
  }

  private clearStableTimers(): void {
    if (this.stableTimer) clearTimeout(this.stableTimer);
    if (this.breakerTimer) clearTimeout(this.breakerTimer);
    this.stableTimer = null;
    this.breakerTimer = null;
  }

  private onClosed(driver: SessionDriver, info: SessionClosed): void {
    if (this.driver !== driver) return;
    this.driver = null;
    this.d.messaging?.closed(this.accountId);
    this.clearStableTimers();
    if (info.cause === 'requested') return;
    let decision = this.decide(info);
    if (decision.retry === 'now' && ++this.restartsInRow > MAX_RESTARTS_IN_A_ROW) {
      // One restart after linking is routine; an endless series of them is a loop to slow down.
      decision = { ...decision, phase: 'reconnecting', retry: 'backoff', message: `WhatsApp asked for a restart ${this.restartsInRow} times in a row; retrying with backoff.` };
    }
    this.clientOutdated = decision.reason === CLIENT_OUTDATED;
    if (this.clientOutdated && this.d.waVersion) {
      this.d.waVersion.markOutdated();
      const { version, source } = this.d.waVersion.current();
      decision = { ...decision, message: `${decision.message} Version in use: ${version.join('.')} (${source}).` };
    }
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
    // A fleet-wide refusal (405) is not this account flapping: its one incident says it all.
    if (!decision.incident?.fleetWide && this.failures.record(now)) {
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
  private reportObserved(changes: Partial<StatusReport> = {}): void {
    const cur = this.d.status.current(this.accountId);
    if (!cur || !this.d.leases.held(this.accountId)) return;
    const { since: _since, handled: _handled, ...rest } = cur;
    this.report({ ...rest, observedSpecTime: this.spec?.updateTime ?? null, ...changes });
  }

  private report(r: Omit<StatusReport, 'observedSpecTime'> & { observedSpecTime?: Timestamp | null }): void {
    this.phase = r.phase;
    void this.d.status.report(this.accountId, {
      ...r,
      observedSpecTime: r.observedSpecTime ?? this.spec?.updateTime ?? null,
      handled: { qrRequestedAt: this.handledQrAt, relinkRequestedAt: this.handledRelinkAt },
    });
  }

  // ------------------------------------------------------------------ teardown

  /**
   * Removes the local credentials and the backup. `keepNewerBackup` (a 401): the credentials that
   * were rejected may be older than the backup (relinked elsewhere); a newer backup stays and is
   * restored next. Returns true when it did.
   */
  private async wipeCredentials({ keepNewerBackup = false } = {}): Promise<boolean> {
    this.newLogin = false;
    await this.backups.cancel();
    await this.closeAuth(false);
    const marker = keepNewerBackup ? await this.d.store.backupGeneration(this.accountId) : null;
    await this.d.store.wipe(this.accountId);
    const deleted = await this.d.backups.delete(this.accountId, marker === null ? {} : { ifGeneration: marker });
    return !deleted && marker !== null && (await this.d.backups.head(this.accountId)) !== null;
  }

  private async finishDeletion(): Promise<ReconcileResult | void> {
    this.d.log.info({ accountId: this.accountId }, 'deleting account: logging out and wiping credentials');
    const retry = await this.ensureUnlinked('delete');
    if (retry) return retry;
    await this.wipeCredentials();
    await Promise.all([this.d.qr.clear(this.accountId), this.d.status.remove(this.accountId)]);
    await this.d.messaging?.deleted(this.accountId);
    for (const type of [...INCIDENTS_CLEARED_BY_CONNECTING, FLAPPING, ...(this.credentialIncident ? CREDENTIAL_INCIDENTS : [])]) {
      void this.d.incidents.resolve(this.accountId, this.accountId, type);
    }
    await this.d.leases.fenced(this.accountId, (tx) => {
      tx.delete(this.d.db.collection(Collections.accounts).doc(this.accountId));
    });
    this.releaseSlot();
    await this.d.leases.release([this.accountId]);
  }

  /**
   * Before credentials are wiped (delete, relink, logout), the device leaves the phone's "Linked
   * devices": wiped credentials with the device still listed leave it there, uncontrolled. With
   * no open socket that takes a short login. When WhatsApp cannot be reached the pass is retried
   * with backoff (null: go on); after UNLINK_ATTEMPTS the wipe goes ahead and an UnlinkPending
   * incident tells the operator to remove the device on the phone.
   */
  private async ensureUnlinked(why: 'delete' | 'relink' | 'logout'): Promise<ReconcileResult | null> {
    const done = await this.unlinkDevice();
    if (done) {
      if (this.unlinkFailures > 0) void this.d.incidents.resolve(this.accountId, this.accountId, UNLINK_PENDING);
      this.unlinkFailures = 0;
      return null;
    }
    this.unlinkFailures++;
    const message = `The device could not be unlinked from WhatsApp before the ${why} (${this.unlinkFailures} attempt${this.unlinkFailures === 1 ? '' : 's'}).`;
    if (this.unlinkFailures < UNLINK_ATTEMPTS) {
      const delay = backoffDelay(this.unlinkFailures - 1, { baseMs: 5_000, maxMs: 60_000, jitter: 'equal' });
      this.d.log.warn({ accountId: this.accountId, why, retryInMs: delay }, 'cannot unlink the device now; retrying');
      return { requeueAfterMs: delay };
    }
    this.d.log.error({ accountId: this.accountId, why }, 'giving up unlinking the device; it may still be listed on the phone');
    void this.d.incidents.raise(this.accountId, this.accountId, UNLINK_PENDING, 'warning', `${message} Remove it on the phone: Linked devices → this device → Log out.`);
    this.unlinkFailures = 0;
    return null;
  }

  /** True once the device is not linked any more (or never was); false when WhatsApp could not be reached. */
  private async unlinkDevice(): Promise<boolean> {
    if (this.driver?.state === 'open') {
      await this.driver.logout();
      await this.closeSession();
      return true;
    }
    await this.closeSession();
    let auth: AccountAuthState;
    try {
      auth = await this.openAuth();
    } catch (err) {
      // Nothing usable to log in with: there is no way to reach the device from here.
      if (err instanceof CredentialsUnavailableError) return true;
      throw err;
    }
    if (!credsAreLinked(auth.state.creds)) return true;
    this.d.log.info({ accountId: this.accountId }, 'logging in briefly to unlink the device');
    let settle: (outcome: 'open' | 'gone' | 'failed') => void = () => undefined;
    const outcome = new Promise<'open' | 'gone' | 'failed' | 'timeout'>((resolve) => {
      settle = resolve;
      setTimeout(() => resolve('timeout'), UNLINK_LOGIN_TIMEOUT_MS).unref();
    });
    const driver = this.newDriver(auth, null, {
      onConnecting: () => undefined,
      onQr: () => settle('failed'),
      onPairingCode: () => settle('failed'),
      onOpen: () => settle('open'),
      // 401: the phone removed the device already.
      onClosed: (info) => settle(info.code === 401 ? 'gone' : 'failed'),
      onCredsSaved: () => undefined,
      onNewLogin: () => undefined,
      // Messages waiting offline arrive during the login: they are stored like any other.
      onSocket: (sock) => this.d.messaging?.attach(this.accountId, sock),
    });
    driver.start();
    const result = await outcome;
    if (result === 'open') await driver.logout();
    else await driver.close(2_000);
    this.d.messaging?.closed(this.accountId);
    return result === 'open' || result === 'gone';
  }

  private newDriver(auth: AccountAuthState, pairingPhone: string | null, events: SessionEvents): SessionDriver {
    const { log, baileysLog, timeouts, socketUrl } = this.d;
    const version = this.d.waVersion?.current().version;
    return new SessionDriver({ accountId: this.accountId, auth, log, baileysLog, timeouts, ...(socketUrl ? { socketUrl } : {}), ...(version ? { version } : {}), pairingPhone, events });
  }

  /**
   * The WhatsApp Web version changed (fleetConfig/whatsapp): an account refused with 405 retries
   * now instead of after its backoff. Healthy sessions keep running on the version they opened with.
   */
  onWaVersionChanged(): void {
    if (!this.clientOutdated) return;
    this.resetRetries();
    this.d.requeue();
  }

  /**
   * The graceful handover itself. The receiver restores from the backup, so the backup must hold
   * what this disk holds once the socket is closed: one is written now, whatever the debounce
   * says. Whatever fails before the lease is handed over leaves the account here: the next pass
   * connects it again.
   */
  private async moveTo(to: string, why: 'rebalance' | 'drain'): Promise<boolean> {
    const { log, leases, status } = this.d;
    const started = Date.now();
    log.info({ accountId: this.accountId, to, why }, 'handing the account over');
    await this.closeSession();
    await this.backups.cancel();
    const backedUp = await this.backupNow();
    await this.closeAuth();
    // Its status is the receiver's to write now; ours (fenced) would be refused mid-flight.
    status.forget(this.accountId);
    const moved = await leases.handOver(this.accountId, to);
    // One disk holds the live credentials: the backup carries them to the receiver, and a copy
    // left here would be stale the moment it connects.
    // (Credentials this process did not have open stay: the backup may not hold their latest.)
    if (moved && backedUp) await this.d.store.wipe(this.accountId);
    this.releaseSlot();
    this.ownedSinceMs = 0;
    this.initialized = false;
    log.info({ accountId: this.accountId, to, why, moved, ms: Date.now() - started }, moved ? 'account handed over' : 'handover refused: the lease was not ours any more');
    return moved;
  }

  /** Closes the socket (never a logout). */
  async closeSession(timeoutMs = 5_000): Promise<void> {
    const driver = this.driver;
    this.driver = null;
    this.d.messaging?.closed(this.accountId);
    this.d.governor.cancel(this.accountId);
    this.clearStableTimers();
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
    this.ownedSinceMs = 0;
    this.d.log.warn({ accountId: this.accountId }, 'lost ownership: closing the session');
    await this.closeSession();
    await this.backups.cancel();
    await this.closeAuth();
    this.releaseSlot();
    this.d.status.forget(this.accountId);
    this.d.requeue(1_000);
  }

  /** Heartbeat lost: close the socket before the lease may lapse; no Firestore writes here. */
  async fence(): Promise<void> {
    await this.closeSession(2_000);
    // Whoever takes over may write the backup next; ours would race theirs.
    await this.backups.cancel();
    // And may relink: the next open compares our credentials with the backup again.
    await this.closeAuth();
    this.resetRetries();
  }

  /** Where a graceful shutdown is: for the log line of a shutdown that ran out of time. */
  shutdownStage: 'socket' | 'last backup' | 'credentials flush' | 'done' | null = null;

  /** Graceful shutdown: close the socket, flush credentials, take a last backup (bounded by the caller). */
  async shutdown(): Promise<void> {
    this.shutdownStage = 'socket';
    await this.closeSession();
    this.shutdownStage = 'last backup';
    if (this.backups.pending) await this.backups.flush();
    this.shutdownStage = 'credentials flush';
    await this.closeAuth();
    this.shutdownStage = 'done';
  }
}
