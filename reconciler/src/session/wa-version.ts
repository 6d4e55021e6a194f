/**
 * Which WhatsApp Web version every session announces (ClientPayload userAgent.appVersion, Baileys'
 * `version` option). WhatsApp refuses versions it no longer supports with a 405 at login, for every
 * account at once. In order of precedence:
 *   1. the override in `fleetConfig/whatsapp` (admins write it from the console; watched live),
 *   2. with WA_VERSION_CHECK=latest, the current WhatsApp Web version, fetched once at start,
 *   3. the version bundled with Baileys.
 * docs/deploy.md, step 14, is the runbook.
 */
import { formatWaVersion, WaWebVersionSchema } from '@wafleet/contract';
import { DEFAULT_CONNECTION_CONFIG, fetchLatestWaWebVersion, type WAVersion } from '@whiskeysockets/baileys';
import type { Logger } from 'pino';
import { withTimeout } from '../util/deadline.ts';

export type WaVersionSource = 'override' | 'latest' | 'bundled';

export interface ResolvedWaVersion {
  version: WAVersion;
  source: WaVersionSource;
}

/** The version this Baileys release was built for. */
export const BUNDLED_WA_VERSION: WAVersion = [...DEFAULT_CONNECTION_CONFIG.version] as WAVersion;

/** The start-up fetch may delay the start by at most this much. */
export const LATEST_FETCH_TIMEOUT_MS = 5_000;

/** Baileys' `fetchLatestWaWebVersion` (it reads web.whatsapp.com/sw.js); tests inject their own. */
export type LatestVersionFetcher = (init: { signal: AbortSignal }) => Promise<{ version: WAVersion; isLatest: boolean; error?: unknown }>;

const baileysFetcher: LatestVersionFetcher = (init) => fetchLatestWaWebVersion({ signal: init.signal });

export interface StartupVersionOptions {
  check: 'off' | 'latest';
  log: Logger;
  fetcher?: LatestVersionFetcher;
  timeoutMs?: number;
}

/**
 * The version to use when no override is set. With `check: 'latest'` one fetch, bounded by
 * `timeoutMs`; anything short of a valid version (timeout, network error, a page Baileys could not
 * read, a nonsense number) falls back to the bundled version, with a warning saying why.
 */
export async function resolveStartupVersion(opts: StartupVersionOptions): Promise<ResolvedWaVersion> {
  const bundled: ResolvedWaVersion = { version: BUNDLED_WA_VERSION, source: 'bundled' };
  if (opts.check === 'off') return bundled;
  const timeoutMs = opts.timeoutMs ?? LATEST_FETCH_TIMEOUT_MS;
  const controller = new AbortController();
  const fallback = { bundled: formatWaVersion(BUNDLED_WA_VERSION) };
  try {
    const result = await withTimeout((opts.fetcher ?? baileysFetcher)({ signal: controller.signal }), timeoutMs, 'WhatsApp Web version fetch', () => controller.abort());
    if (!result.isLatest) {
      opts.log.warn({ ...fallback, err: result.error }, 'WA_VERSION_CHECK=latest: could not read the current WhatsApp Web version; using the bundled one');
      return bundled;
    }
    const parsed = WaWebVersionSchema.safeParse(result.version);
    if (!parsed.success) {
      opts.log.warn({ ...fallback, fetched: String(result.version).slice(0, 100) }, 'WA_VERSION_CHECK=latest: the fetched WhatsApp Web version is not a valid version; using the bundled one');
      return bundled;
    }
    opts.log.info({ version: formatWaVersion(parsed.data), ...fallback }, 'WA_VERSION_CHECK=latest: using the current WhatsApp Web version');
    return { version: parsed.data, source: 'latest' };
  } catch (err) {
    opts.log.warn({ ...fallback, err }, 'WA_VERSION_CHECK=latest: fetching the current WhatsApp Web version failed; using the bundled one');
    return bundled;
  }
}

/**
 * The version in use, fleet-wide in this process: the start-up version plus the live override.
 * Also remembers whether a ClientOutdated incident may be open, so that only the first connection
 * after one pays the transaction that resolves it.
 */
export class WaVersionState {
  private override: WAVersion | null = null;
  /** True at start too: an incident an earlier process left open is resolved by the first connection. */
  private outdatedIncident = true;

  constructor(private readonly base: ResolvedWaVersion) {}

  current(): ResolvedWaVersion {
    return this.override ? { version: this.override, source: 'override' } : this.base;
  }

  /** Sets (or clears, with null) the override; true when the version in use changed. */
  setOverride(version: WAVersion | null): boolean {
    const before = this.current().version;
    this.override = version ? ([...version] as WAVersion) : null;
    const after = this.current().version;
    return before.some((part, i) => part !== after[i]);
  }

  /** A session was refused with 405: the fleet-wide ClientOutdated incident is (about to be) open. */
  markOutdated(): void {
    this.outdatedIncident = true;
  }

  /** A session opened: true once per possibly-open ClientOutdated incident (the caller resolves it). */
  takeResolve(): boolean {
    const take = this.outdatedIncident;
    this.outdatedIncident = false;
    return take;
  }
}
