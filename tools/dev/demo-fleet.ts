/**
 * The person in front of the dev stack: watches the link codes the reconciler publishes in
 * `accountQr` and scans each with that account's simulated phone, and follows `accountStatus`
 * to report progress. It reads only what an app reads (Firestore), and scans only through what a
 * phone has (the QR string), so the demo exercises the real path end to end.
 */
import { MAX_LINKED_DEVICES, type Phone, type Simulator } from '@wafleet/wa-sim';
import type { DocumentSnapshot, Firestore } from 'firebase-admin/firestore';

export interface DemoAccount {
  id: string;
  phone: Phone;
}

export interface DemoFleetOptions {
  db: Firestore;
  sim: Simulator;
  accounts: DemoAccount[];
  print: (line: string) => void;
  /** A listener failed; the fleet can no longer follow Firestore. */
  onError: (err: Error) => void;
  /** An account lost its link (needsLink, loggedOut) before the fleet was first all connected. */
  onLinkLost: (accountId: string) => void;
}

// The simulator's own bound on a pairing is 15 s; this only guards against a scan that never settles.
const SCAN_TIMEOUT_MS = 20_000;

export class DemoFleet {
  private readonly byId: Map<string, DemoAccount>;
  private readonly phases = new Map<string, { phase: string; reason: string; message: string }>();
  private readonly latestQr = new Map<string, string>();
  private readonly seen = new Set<string>();
  private readonly relinkAsked = new Set<string>();
  private readonly waiters = new Set<() => void>();
  private readonly unsubscribe: Array<() => void> = [];
  private scans: Promise<void> = Promise.resolve();
  private stopped = false;
  /** Accounts this run linked by scanning a code (the others logged in with stored credentials). */
  readonly linkedByQr = new Set<string>();
  /** After the first "all connected", every phase change is printed, not only progress. */
  verbose = false;

  constructor(private readonly opts: DemoFleetOptions) {
    this.byId = new Map(opts.accounts.map((a) => [a.id, a]));
  }

  start(): void {
    const { db, onError } = this.opts;
    this.unsubscribe.push(
      db.collection('accountQr').onSnapshot(
        (snap) => {
          for (const change of snap.docChanges()) {
            if (change.type === 'removed') this.latestQr.delete(change.doc.id);
            else this.onQr(change.doc);
          }
        },
        (err) => onError(err),
      ),
      db.collection('accountStatus').onSnapshot(
        (snap) => {
          for (const change of snap.docChanges()) if (change.type !== 'removed') this.onStatus(change.doc);
          for (const wake of this.waiters) wake();
        },
        (err) => onError(err),
      ),
    );
  }

  stop(): void {
    this.stopped = true;
    for (const u of this.unsubscribe.splice(0)) u();
    for (const wake of this.waiters) wake();
  }

  connectedCount(): number {
    let n = 0;
    for (const id of this.byId.keys()) if (this.phases.get(id)?.phase === 'connected') n++;
    return n;
  }

  /** Accounts not connected, with what their status says. */
  notConnected(): string[] {
    return [...this.byId.keys()]
      .filter((id) => this.phases.get(id)?.phase !== 'connected')
      .map((id) => {
        const s = this.phases.get(id);
        return s ? `${id} ${s.phase} (${s.reason}: ${s.message})` : `${id} (no status yet)`;
      });
  }

  /** Resolves when every account is connected; rejects on `signal`. */
  allConnected(signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (signal.aborted || this.stopped) {
          this.waiters.delete(check);
          reject(new Error('stopped'));
        } else if (this.connectedCount() === this.byId.size) {
          this.waiters.delete(check);
          resolve();
        }
      };
      this.waiters.add(check);
      signal.addEventListener('abort', check, { once: true });
      check();
    });
  }

  private onStatus(doc: DocumentSnapshot): void {
    if (!this.byId.has(doc.id)) return;
    const next = { phase: String(doc.get('phase')), reason: String(doc.get('reason')), message: String(doc.get('message')) };
    const prev = this.phases.get(doc.id);
    this.phases.set(doc.id, next);
    if (prev?.phase === next.phase) return;
    const { print } = this.opts;
    if (this.verbose) {
      print(`${doc.id}: ${prev?.phase ?? '—'} → ${next.phase} (${next.reason})`);
    } else if (next.phase === 'connected') {
      const how = this.linkedByQr.has(doc.id) ? 'linked by QR' : 'stored credentials';
      print(`${doc.id} connected (${how})  ${this.connectedCount()}/${this.byId.size}`);
    } else if (['error', 'needsLink', 'loggedOut', 'banned'].includes(next.phase)) {
      print(`${doc.id}: ${next.phase} — ${next.reason}: ${next.message}`);
      // E.g. the simulator's state file was deleted but not the credentials: ask for a new code,
      // once, as the operator would; later on the person at the terminal decides.
      if ((next.phase === 'needsLink' || next.phase === 'loggedOut') && !this.relinkAsked.has(doc.id)) {
        this.relinkAsked.add(doc.id);
        this.opts.onLinkLost(doc.id);
      }
    }
  }

  private onQr(doc: DocumentSnapshot): void {
    const account = this.byId.get(doc.id);
    const qr = doc.get('qr') as string | null | undefined;
    if (!account || doc.get('kind') !== 'qr' || !qr) return;
    this.latestQr.set(doc.id, qr);
    const key = `${doc.id}\n${qr}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    const sequence = Number(doc.get('sequence'));
    // One scan at a time, as one person with a stack of phones would; a code that rotated while
    // waiting is skipped in favour of the newer one, which has its own turn.
    this.scans = this.scans.then(() => this.scan(account, qr, sequence));
  }

  private async scan(account: DemoAccount, qr: string, sequence: number): Promise<void> {
    if (this.stopped || this.latestQr.get(account.id) !== qr) return;
    const { print } = this.opts;
    this.freeDeviceSlot(account);
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        account.phone.scanQr(qr),
        new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer in ${SCAN_TIMEOUT_MS} ms`)), SCAN_TIMEOUT_MS))),
      ]);
      this.linkedByQr.add(account.id);
      print(`${account.id}: QR #${sequence} scanned with phone +${account.phone.number}`);
    } catch (err) {
      if (!this.stopped) print(`${account.id}: scanning QR #${sequence} failed (${(err as Error).message}); waiting for the next code`);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * A phone links at most four devices. Devices left from runs whose reconciler credentials were
   * deleted stay in the simulator's state file; an account asking for a QR is not using any of
   * them, so the offline ones are unlinked, as a person would in Linked devices.
   */
  private freeDeviceSlot(account: DemoAccount): void {
    const devices = account.phone.linkedDevices();
    if (devices.length < MAX_LINKED_DEVICES) return;
    const stale = devices.filter((d) => !d.online);
    for (const d of stale) account.phone.removeDevice(d.deviceJid);
    this.opts.print(`${account.id}: phone +${account.phone.number} had ${devices.length} linked devices; unlinked ${stale.length} offline one(s)`);
  }
}
