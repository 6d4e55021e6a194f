/**
 * Watches `fleetConfig/whatsapp` (admins write it from the console): the WhatsApp Web version
 * override. A document that does not validate changes nothing: the last good override stays in
 * use and `error` says what is wrong (the app raises the InvalidFleetConfig incident with it). A
 * missing document means no override. Supervised like the accounts listener: a failed listener
 * re-subscribes with backoff (resilient-listener.ts); nothing here can stop the reconciler.
 */
import { Collections, FleetConfigDocs, FleetConfigWhatsAppDocSchema, formatZodError } from '@wafleet/contract';
import type { WAVersion } from '@whiskeysockets/baileys';
import type { DocumentSnapshot, Firestore, QuerySnapshot } from 'firebase-admin/firestore';
import type { Logger } from 'pino';
import { withTimeout } from '../util/deadline.ts';
import { ResilientListener } from '../util/resilient-listener.ts';

/** Past this size the document is refused before parsing (a paste gone wrong). */
const MAX_DOC_BYTES = 16 * 1024;

export const FLEET_CONFIG_PATH = `${Collections.fleetConfig}/${FleetConfigDocs.whatsapp}`;

export interface FleetConfigState {
  /** The override in use: the last valid document's, or null (none, or no valid document yet). */
  waWebVersion: WAVersion | null;
  /** Why the current document is refused; null when it is valid or absent. */
  error: string | null;
}

export interface FleetConfigWatcherOptions {
  db: Firestore;
  log: Logger;
  /** Called whenever the override or the error changes. */
  onChange: (state: FleetConfigState) => void;
  readTimeoutMs?: number;
}

export class FleetConfigWatcher {
  private state: FleetConfigState = { waWebVersion: null, error: null };
  private readonly listener: ResilientListener;

  constructor(private readonly opts: FleetConfigWatcherOptions) {
    this.listener = new ResilientListener({
      name: 'fleetConfig',
      // The whole collection (a document per concern, a handful at most): the resilient listener
      // supervises queries, and an unfiltered one needs no entry in the query registry.
      query: () => opts.db.collection(Collections.fleetConfig),
      onSnapshot: (snap) => this.onSnapshot(snap),
      log: opts.log,
    });
  }

  /**
   * Reads the document once (bounded), so that the first logins already use the override, then
   * listens. A failed read is logged and leaves the bundled version in use until the listener answers.
   */
  async start(): Promise<FleetConfigState> {
    try {
      const snap = await withTimeout(this.opts.db.doc(FLEET_CONFIG_PATH).get(), this.opts.readTimeoutMs ?? 10_000, `${FLEET_CONFIG_PATH} read`);
      this.apply(snap);
    } catch (err) {
      this.opts.log.warn({ err }, `cannot read ${FLEET_CONFIG_PATH} yet; its listener will bring it`);
    }
    this.listener.subscribe();
    return this.state;
  }

  stop(): void {
    this.listener.stop();
  }

  private onSnapshot(snap: QuerySnapshot): void {
    const doc = snap.docs.find((d) => d.id === FleetConfigDocs.whatsapp);
    this.apply(doc ?? null);
  }

  private apply(doc: DocumentSnapshot | null): void {
    const next = parseFleetConfig(doc, this.state.waWebVersion);
    const same = next.error === this.state.error && sameVersion(next.waWebVersion, this.state.waWebVersion);
    if (same) return;
    this.state = next;
    if (next.error) this.opts.log.error({ problem: next.error }, `${FLEET_CONFIG_PATH} is invalid; keeping the previous WhatsApp version setting`);
    else this.opts.log.info({ waWebVersion: next.waWebVersion?.join('.') ?? null }, `${FLEET_CONFIG_PATH} changed`);
    try {
      this.opts.onChange(next);
    } catch (err) {
      this.opts.log.error({ err }, 'applying the fleet configuration failed');
    }
  }
}

/** The state a document leads to; an invalid one keeps `previous`. */
export function parseFleetConfig(doc: DocumentSnapshot | null, previous: WAVersion | null): FleetConfigState {
  if (!doc || !doc.exists) return { waWebVersion: null, error: null };
  const data = doc.data() ?? {};
  const size = JSON.stringify(data).length;
  if (size > MAX_DOC_BYTES) return { waWebVersion: previous, error: `the document is too large (${size} bytes; the limit is ${MAX_DOC_BYTES})` };
  const parsed = FleetConfigWhatsAppDocSchema.safeParse(data);
  if (!parsed.success) return { waWebVersion: previous, error: formatZodError(parsed.error) };
  return { waWebVersion: parsed.data.waWebVersion ? ([...parsed.data.waWebVersion] as WAVersion) : null, error: null };
}

function sameVersion(a: WAVersion | null, b: WAVersion | null): boolean {
  if (a === null || b === null) return a === b;
  return a.every((part, i) => part === b[i]);
}
