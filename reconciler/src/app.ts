/**
 * Wires the reconciler together and owns its life cycle: boot (health first, then the disk lock,
 * heartbeat, listener and a paced restore of every account) and a bounded graceful shutdown.
 */
import { randomUUID } from 'node:crypto';
import { statfs, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { getApps, initializeApp } from 'firebase-admin/app';
import { Collections } from '@wafleet/contract';
import type { Firestore } from 'firebase-admin/firestore';
import type { Logger } from 'pino';
import type { Config } from './config.ts';
import type { FirestoreChannels } from './firestore/channel.ts';
import { openFirestore } from './firestore/open-firestore.ts';
import { startHttpServer } from './http/server.ts';
import { Heartbeat } from './lease/heartbeat.ts';
import { acquireHostLock, type HostLock } from './lease/host-lock.ts';
import { LeaseManager, type Identity } from './lease/lease-manager.ts';
import { HandoverWatcher, PeerWatcher, Placement } from './lease/placement.ts';
import { Rebalancer } from './lease/rebalancer.ts';
import { baileysLogger } from './log.ts';
import { InboundWriter } from './inbound/inbound-writer.ts';
import { createMetrics, type Metrics } from './metrics.ts';
import { OutboxProcessor } from './outbox/outbox-processor.ts';
import { CapacityGate } from './queue/capacity-gate.ts';
import { ConnectGovernor } from './queue/connect-governor.ts';
import { connectGovernorMetrics, workQueueMetrics } from './queue/metrics.ts';
import { WorkQueue } from './queue/work-queue.ts';
import { AccountSupervisor, type SessionMessaging } from './session/account-supervisor.ts';
import { DEFAULT_TIMEOUTS, type SessionTimeouts } from './session/session-driver.ts';
import { resolveStartupVersion, WaVersionState, type LatestVersionFetcher } from './session/wa-version.ts';
import { CoalescingWriter } from './status/coalescing-writer.ts';
import { FleetConfigIncident } from './status/fleet-config-incident.ts';
import { IncidentWriter } from './status/incident-writer.ts';
import { QrWriter } from './status/qr-writer.ts';
import { StatusWriter } from './status/status-writer.ts';
import { AuthStore } from './store/auth-state.ts';
import { SessionBackupStore } from './store/session-backup.ts';
import { backoffDelay } from './util/backoff.ts';
import { sleep, withTimeout } from './util/deadline.ts';
import { AccountsWatcher } from './watch/accounts-watcher.ts';
import { FleetConfigWatcher } from './watch/fleet-config-watcher.ts';

/**
 * How long an instance that is not the preferred home of a free account waits before taking it
 * anyway (lease/placement.ts): long enough for the preferred one's next pass, short enough that
 * a dead preferred instance costs seconds.
 */
const PLACEMENT_DEFER_MS = 5_000;

/** Crashed predecessors whose leases may be adopted; a longer chain is taken over by writes. */
const MAX_ADOPTED = 5;

export const VERSION = '0.1.0';

export interface AppOptions {
  config: Config;
  log: Logger;
  /** Tests shorten Baileys' and the watchdogs' timeouts. */
  timeouts?: Partial<SessionTimeouts>;
  backupDebounceMs?: number;
  resyncEveryMs?: number;
  /** Tests replace the WA_VERSION_CHECK=latest fetch (web.whatsapp.com). */
  fetchLatestWaVersion?: LatestVersionFetcher;
}

export class ReconcilerApp {
  private readonly supervisors = new Map<string, AccountSupervisor>();
  private readonly stopping = new AbortController();
  /** A drain before the stop is running (a second signal does not start another stop). */
  private draining = false;
  private ready = false;
  private http: Awaited<ReturnType<typeof startHttpServer>> | null = null;
  private hostLock: HostLock | null = null;
  private heartbeat: Heartbeat | null = null;
  private watcher: AccountsWatcher | null = null;
  private peers: PeerWatcher | null = null;
  private handovers: HandoverWatcher | null = null;
  private placement: Placement | null = null;
  private rebalancer: Rebalancer | null = null;
  private capacity: CapacityGate | null = null;
  private fleetConfig: FleetConfigWatcher | null = null;
  private queue: WorkQueue<string> | null = null;
  private governor: ConnectGovernor | null = null;
  private store: AuthStore | null = null;
  private leases: LeaseManager | null = null;
  private writer: CoalescingWriter | null = null;
  private incidents: IncidentWriter | null = null;
  private statusWriter: StatusWriter | null = null;
  private outbox: OutboxProcessor | null = null;
  private inbound: InboundWriter | null = null;
  readonly metrics: Metrics;
  readonly db: Firestore;
  private readonly channels: FirestoreChannels;

  constructor(private readonly opts: AppOptions) {
    const { config } = opts;
    const name = `reconciler-${config.firestore.projectId}-${config.instanceId}`;
    const app = getApps().find((a) => a.name === name) ?? initializeApp({ projectId: config.firestore.projectId }, name);
    ({ db: this.db, channels: this.channels } = openFirestore(app, opts.log));
    this.metrics = createMetrics({
      phases: () => [...this.supervisors.values()].filter((s) => this.leases?.held(s.accountId)).map((s) => s.currentPhase),
      leasesHeld: () => this.leases?.heldAccounts().length ?? 0,
      heartbeatLastSuccessAt: () => this.heartbeat?.lastSuccess ?? 0,
    });
  }

  get httpPort(): number | null {
    return this.http?.port ?? null;
  }

  get isReady(): boolean {
    return this.ready;
  }

  supervisor(accountId: string): AccountSupervisor | undefined {
    return this.supervisors.get(accountId);
  }

  async start(): Promise<void> {
    const { config, log } = this.opts;
    this.http = await startHttpServer({
      host: config.http.host,
      port: config.http.port,
      registry: this.metrics.registry,
      checks: this.metrics.readiness(() => [
        { name: 'booted', check: () => this.ready },
        { name: 'firestore', check: () => this.heartbeat?.healthy ?? false },
        { name: 'listener', check: () => this.watcher?.healthy ?? false },
        { name: 'storage', check: () => storageWritable(config.sessionsPath) },
      ]),
    });
    log.info({ port: this.http.port }, 'serving /healthz, /readyz and /metrics');

    // One process per sessions directory; during a redeploy the new process waits here for the old one.
    this.hostLock = await acquireHostLock(config.sessionsPath, {
      waitMs: config.shutdownTimeoutMs + 15_000,
      onWaiting: () => log.warn({ sessionsPath: config.sessionsPath }, 'another reconciler still uses this sessions directory; waiting for it to stop'),
      signal: this.stopping.signal,
    });

    const identity: Identity = { instanceId: config.instanceId, incarnation: randomUUID(), host: os.hostname(), storagePath: config.sessionsPath };
    const adopt = await this.predecessorsOnThisDisk(identity);
    const leases = (this.leases = new LeaseManager(this.db, identity, { ttlMs: config.lease.ttlMs, hostLockHeld: true, adopt }));
    this.heartbeat = new Heartbeat(this.db, identity, {
      adoptedIncarnations: adopt,
      renewMs: config.lease.renewMs,
      ttlMs: config.lease.ttlMs,
      version: VERSION,
      log,
      summary: async () => ({
        accounts: Object.fromEntries(leases.heldAccounts().map((id) => [id, this.supervisors.get(id)?.currentPhase ?? 'pending'])),
        storageFreeBytes: await freeBytes(config.sessionsPath),
        maxAccounts: config.maxAccounts,
        slotsUsed: this.capacity?.used ?? 0,
        drain: this.rebalancer?.drainState() ?? null,
      }),
      onFence: () => {
        for (const s of this.supervisors.values()) void s.fence();
        leases.dropAll();
      },
      onRecover: () => {
        // Firestore is back: every account now, not after the backoff its failed passes ran up
        // during the outage (up to minutes, with jitter).
        for (const id of this.supervisors.keys()) {
          this.queue?.forget(id);
          this.queue?.add(id);
        }
      },
      onStall: () => this.channels.reset('heartbeat writes keep timing out'),
      onMarkedSilent: () => {
        for (const id of leases.heldAccounts()) void this.statusWriter?.rewrite(id);
      },
      onIdentityConflict: (other) => {
        log.fatal({ instanceId: config.instanceId, otherIncarnation: other }, 'another process runs with this INSTANCE_ID; stopping every session');
        for (const s of this.supervisors.values()) void s.fence();
        process.exitCode = 1;
        void this.stop('identity conflict');
      },
    });
    await this.startHeartbeat();

    this.store = await AuthStore.create({ root: config.sessionsPath, logger: log });
    this.writer = new CoalescingWriter({
      leases,
      log,
      onStale: (accountId) => void this.supervisors.get(accountId)?.onLostOwnership(),
      onWrite: (collection, ok) => this.metrics.firestoreWrite(collection, ok),
    });
    this.incidents = new IncidentWriter(this.db, leases, log, (ok) => this.metrics.firestoreWrite('incidents', ok));
    const status = (this.statusWriter = new StatusWriter(this.db, this.writer));
    const qr = new QrWriter(this.db, this.writer);
    const backups = new SessionBackupStore(this.db, config.backup.key, leases, { previousKey: config.backup.previousKey ?? null });
    this.governor = new ConnectGovernor({ concurrency: config.connect.concurrency, intervalMs: config.connect.intervalMs, hooks: connectGovernorMetrics(this.metrics.registry) });
    const queue = (this.queue = new WorkQueue<string>({
      hooks: {
        ...workQueueMetrics(this.metrics.registry, 'accounts'),
        // A pass that throws is retried with backoff; without this line nothing would say why.
        onError: (accountId, err, { attempt, delayMs }) => log.warn({ accountId, err, attempt, retryInMs: delayMs }, 'reconcile pass failed; retrying'),
      },
    }));
    const capacity = (this.capacity = new CapacityGate(config.maxAccounts, (id) => queue.add(id)));
    // The other reconcilers, by their heartbeats: where an account nobody drives should go.
    const placement = (this.placement = new Placement({ self: config.instanceId, slots: capacity, deferMs: PLACEMENT_DEFER_MS }));
    let draining = false;
    this.peers = new PeerWatcher(this.db, placement, log, () => {
      if (capacity.waitingCount > 0 && placement.peerWithRoom()) capacity.wakeWaiting();
      // An operator asked for (or cancelled) a drain: act now, not at the next round.
      if (placement.draining !== draining) {
        draining = placement.draining;
        this.rebalancer?.poke();
      }
      // A peer stopped (a redeploy, a drain): its accounts are free now, not after a lease retry.
      if (placement.takePeerStopped()) {
        for (const id of this.supervisors.keys()) {
          if (leases.held(id)) continue;
          queue.forget(id);
          queue.add(id);
        }
      }
    });
    // Awaited before the first pass (an instance that starts blind would take every account it
    // can), meanwhile the rest of the start-up goes on.
    const peersSeen = this.peers.start(5_000);
    // Leases handed over to us: taken at once, not at whatever time their account looks next.
    this.handovers = new HandoverWatcher(this.db, config.instanceId, placement, log, (id) => {
      queue.forget(id);
      queue.add(id);
    });
    this.handovers.start();
    const timeouts: SessionTimeouts = { ...DEFAULT_TIMEOUTS, ...this.opts.timeouts };
    const outbox = (this.outbox = new OutboxProcessor({
      db: this.db,
      leases,
      log,
      metrics: this.metrics,
      incidents: this.incidents,
      config: config.outbox,
      phaseOf: (id) => this.supervisors.get(id)?.currentPhase ?? 'pending',
    }));
    // Before any account connects: what the journal kept from the last run is stored first.
    const inbound = (this.inbound = await InboundWriter.open({ db: this.db, log: log.child({ component: 'inbound' }), metrics: this.metrics.inbound, retentionDays: config.inboundRetentionDays, sessionsPath: config.sessionsPath }));
    const messaging: SessionMessaging = {
      busy: (id) => outbox.busy(id),
      attach: (id, sock) => {
        outbox.attach(id, sock);
        inbound.attach(id, sock, (waId) => outbox.account(id).isOwnSend(waId));
      },
      opened: (id, sock) => outbox.opened(id, sock),
      closed: (id) => outbox.closed(id),
      banned: (id) => outbox.banned(id),
      deleted: (id) => outbox.deleted(id),
    };

    // The WhatsApp Web version comes before any login: an override in fleetConfig/whatsapp is
    // read (bounded) first, so that a fleet refused with 405 does not log in once more to learn it.
    const waVersion = new WaVersionState(
      await resolveStartupVersion({ check: config.waVersionCheck, log, ...(this.opts.fetchLatestWaVersion ? { fetcher: this.opts.fetchLatestWaVersion } : {}) }),
    );
    const fleetIncident = new FleetConfigIncident({ leases, incidents: this.incidents, log, signal: this.stopping.signal });
    this.fleetConfig = new FleetConfigWatcher({
      db: this.db,
      log,
      onChange: (state) => {
        fleetIncident.report(state.error);
        if (!waVersion.setOverride(state.waWebVersion)) return;
        const { version, source } = waVersion.current();
        log.warn({ waWebVersion: version.join('.'), source }, 'the WhatsApp Web version changed: sessions refused with 405 retry now; open sessions keep theirs until they reconnect');
        for (const s of this.supervisors.values()) s.onWaVersionChanged();
      },
    });
    const initial = await this.fleetConfig.start();
    // An InvalidFleetConfig incident left open by an earlier process is resolved once we know better.
    if (!initial.error) fleetIncident.report(null);
    {
      const { version, source } = waVersion.current();
      log.info({ waWebVersion: version.join('.'), source }, 'WhatsApp Web version');
    }

    await peersSeen;

    const supervisorFor = (accountId: string): AccountSupervisor => {
      let s = this.supervisors.get(accountId);
      if (!s) {
        s = new AccountSupervisor(accountId, {
          db: this.db,
          log: log.child({ accountId }),
          baileysLog: baileysLogger(log, accountId),
          store: this.store!,
          backups,
          leases,
          status,
          qr,
          incidents: this.incidents!,
          governor: this.governor!,
          capacity,
          placement,
          timeouts,
          ...(config.waSimulator ? { socketUrl: config.waSimulator.socketUrl } : {}),
          requeue: (delayMs) => (delayMs ? queue.addAfter(accountId, delayMs) : queue.add(accountId)),
          backupDebounceMs: this.opts.backupDebounceMs ?? 3_000,
          metrics: this.metrics,
          messaging,
          waVersion,
        });
        this.supervisors.set(accountId, s);
      }
      return s;
    };

    this.watcher = new AccountsWatcher({ db: this.db, log, onChange: (id) => queue.add(id), ...(this.opts.resyncEveryMs ? { resyncEveryMs: this.opts.resyncEveryMs } : {}) });
    queue.start(
      async (accountId) => {
        const spec = this.watcher!.get(accountId);
        const result = await supervisorFor(accountId).reconcile(spec);
        if (!spec.exists && !leases.held(accountId)) this.supervisors.delete(accountId);
        return result;
      },
      { concurrency: 8 },
    );
    outbox.start();
    this.rebalancer = new Rebalancer({
      self: config.instanceId,
      placement,
      used: () => leases.heldAccounts().length,
      candidates: (why) =>
        leases.heldAccounts().filter((id) => {
          const s = this.supervisors.get(id);
          if (!s || outbox.busy(id)) return false;
          return why === 'drain' || (s.currentPhase === 'connected' && s.heldForMs() >= config.fleet.rebalanceMinHoldMs);
        }),
      handOver: (id, to, why) => this.supervisors.get(id)?.handOver(to, why) ?? Promise.resolve(false),
      rebalance: config.fleet.rebalance,
      everyMs: Math.max(1_000, config.lease.renewMs),
      log,
    });
    this.rebalancer.start();
    // Deterministic restore order (account id); the governor paces the logins.
    const ids = await this.watcher.start();
    log.info({ accounts: ids.length, instanceId: config.instanceId }, 'reconciler started');
    this.ready = true;
  }

  /**
   * The incarnations of this instance id that last ran on this disk (the previous process and
   * the ones it adopted, at most MAX_ADOPTED): we hold the host lock, so they are gone, and their
   * leases can be taken without a write (lease-manager.ts `acquire`). Read before our first
   * heartbeat replaces the document; none when it cannot be read in time.
   */
  private async predecessorsOnThisDisk(identity: Identity): Promise<string[]> {
    try {
      const snap = await withTimeout(this.db.collection(Collections.reconcilers).doc(identity.instanceId).get(), 10_000, 'previous heartbeat read');
      const prev = snap.data() as { incarnation?: unknown; adoptedIncarnations?: unknown; host?: unknown; storagePath?: unknown } | undefined;
      if (!prev || prev.host !== identity.host || prev.storagePath !== identity.storagePath || typeof prev.incarnation !== 'string') return [];
      const older = Array.isArray(prev.adoptedIncarnations) ? prev.adoptedIncarnations.filter((i): i is string => typeof i === 'string') : [];
      return [prev.incarnation, ...older].filter((i) => i !== identity.incarnation).slice(0, MAX_ADOPTED);
    } catch (err) {
      this.opts.log.warn({ err }, 'cannot read the previous heartbeat; leases are taken over by writing them');
      return [];
    }
  }

  private async startHeartbeat(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.heartbeat!.start();
        return;
      } catch (err) {
        const delay = backoffDelay(attempt, { baseMs: 1_000, maxMs: 30_000, jitter: 'full' });
        this.opts.log.warn({ err, retryInMs: delay }, 'cannot reach Firestore yet');
        await sleep(delay, this.stopping.signal);
      }
    }
  }

  /**
   * Graceful and bounded: stop taking work, close sockets (no logout), flush credentials and a
   * last backup, let pending status writes land, release leases, mark the heartbeat stopped.
   */
  async stop(reason: string, opts: { drain?: boolean } = {}): Promise<{ graceful: boolean }> {
    if (this.stopping.signal.aborted || this.draining) return { graceful: false };
    const { log, config } = this.opts;
    if (opts.drain && this.rebalancer && this.placement && this.ready) {
      // Every account is handed over (seconds each) before the stop proper: the rest of the fleet
      // keeps them online instead of taking them over after this process is gone.
      this.draining = true;
      this.placement.drainForShutdown();
      log.info({ reason, timeoutMs: config.fleet.drainTimeoutMs }, 'draining before the stop');
      const drained = await this.rebalancer.drain(config.fleet.drainTimeoutMs);
      log[drained ? 'info' : 'warn']({ accountsLeft: this.leases?.heldAccounts().length ?? 0 }, drained ? 'drained' : 'drain ran out of time; stopping with the accounts left');
      this.draining = false;
    }
    const deadline = Date.now() + config.shutdownTimeoutMs;
    const left = () => Math.max(500, deadline - Date.now());
    this.stopping.abort();
    this.ready = false;
    log.info({ reason }, 'shutting down');
    let graceful = true;
    /** `optional`: the step's purpose is already served; not finishing it is no loss. */
    const step = async (name: string, work: Promise<unknown>, share: number, optional = false): Promise<boolean> => {
      let failed = false;
      const ok = await Promise.race([work.then(() => true, (err: unknown) => (log.warn({ step: name, err }, 'shutdown step failed'), (failed = true), false)), sleep(Math.max(500, left() * share)).then(() => false)]);
      if (!ok) {
        if (!optional) graceful = false;
        if (!failed) log.warn({ step: name, optional }, 'shutdown step did not finish in time');
      }
      return ok;
    };
    this.watcher?.stop();
    this.fleetConfig?.stop();
    this.peers?.stop();
    this.handovers?.stop();
    this.rebalancer?.stop();
    this.governor?.cancelAll(new Error('shutting down'));
    if (this.queue) await step('work queue', this.queue.shutdown({ drain: false, timeoutMs: Math.min(5_000, left() / 4) }), 0.25);
    // The message in flight settles (acked, or back to queued) before its socket closes.
    if (this.outbox) await step('outbox', this.outbox.stop(left() * 0.25), 0.3);
    // Which accounts were still closing when the step gave up, and where: usually a last backup
    // waiting behind Firestore (locks a killed predecessor's transactions still hold, an outage).
    const sessions = [...this.supervisors.values()];
    if (!(await step('sessions', Promise.all(sessions.map((s) => s.shutdown())), 0.4))) {
      const closing = sessions.filter((s) => s.shutdownStage !== 'done').slice(0, 50);
      if (closing.length > 0) log.warn({ closing: Object.fromEntries(closing.map((s) => [s.accountId, s.shutdownStage])) }, 'accounts that had not finished closing');
    }
    if (this.writer) await step('status writes', this.writer.drain(left() / 3), 0.35);
    if (this.incidents) await step('incident writes', this.incidents.drain(left() / 4), 0.3);
    if (this.inbound) await step('inbound writes', this.inbound.drain(left() / 4), 0.3);
    // The stopped heartbeat frees every lease we hold at once (a holder that says it stopped
    // counts as gone), so it goes first; releasing each lease is then a courtesy. A lease write
    // can wait behind Firestore locks that transactions cut off mid-flight (an outage, a killed
    // predecessor) hold until Firestore expires them: that wait must not cost the stop marker.
    const marked = this.heartbeat ? await step('final heartbeat', this.heartbeat.stop({ markStopped: true, timeoutMs: Math.min(5_000, left()) }), 0.5) : false;
    if (this.leases) await step('lease release', this.leases.release(), 0.8, marked);
    if (this.store) await step('credentials', this.store.closeAll(), 0.8);
    await this.hostLock?.release();
    await new Promise<void>((r) => (this.http ? this.http.close(() => r()) : r()));
    this.http?.closeAllConnections();
    log.info({ graceful }, 'stopped');
    return { graceful };
  }
}

async function freeBytes(dir: string): Promise<number | null> {
  try {
    const s = await statfs(dir);
    return s.bavail * s.bsize;
  } catch {
    return null;
  }
}

async function storageWritable(dir: string): Promise<boolean> {
  const probe = path.join(dir, `.probe-writable-${process.pid}`);
  try {
    await writeFile(probe, 'ok');
    await unlink(probe);
    return true;
  } catch {
    return false;
  }
}
