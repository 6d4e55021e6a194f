/**
 * The reconciler's configuration: every environment variable it reads is parsed here, once, at
 * start. Nothing else reads process.env. A bad environment fails the start with one ConfigError
 * that lists every problem and how to fix it, instead of the first problem only, or a crash later.
 * reconciler/README.md documents each variable; keep the two in step.
 */
import { createHash, randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { open, readFile, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { InstanceIdSchema } from '@wafleet/contract';
import { z } from 'zod';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const NODE_ENVS = ['production', 'development', 'test'] as const;
export type NodeEnv = (typeof NODE_ENVS)[number];

/** Used when the emulator is configured and no project id is given (matches .firebaserc). */
export const EMULATOR_DEFAULT_PROJECT_ID = 'demo-wafleet';

/**
 * The development backup key: public, fixed, so development backups stay readable across
 * restarts. Refused in production. Derived from a phrase so nobody mistakes it for a secret.
 */
export const DEV_BACKUP_KEY: Buffer = createHash('sha256').update('wafleet development backup key - NOT SECRET').digest();

export interface Config {
  /** NODE_ENV; unset means production. */
  readonly nodeEnv: NodeEnv;
  readonly firestore: {
    readonly projectId: string;
    /** "host:port" of the Firestore emulator, or null for real Firestore. */
    readonly emulatorHost: string | null;
  };
  /** Absolute path of the directory holding one subdirectory of auth state per account. */
  readonly sessionsPath: string;
  /** SESSIONS_REQUIRE_VOLUME: the start was refused unless sessionsPath is the prepared persistent disk. */
  readonly sessionsRequireVolume: boolean;
  /** This process's identity in leases and the reconcilers collection. */
  readonly instanceId: string;
  readonly http: { readonly host: string; readonly port: number };
  readonly maxAccounts: number;
  readonly connect: {
    /** Logins in progress at once, fleet-wide. */
    readonly concurrency: number;
    /** Minimum spacing between two login starts. */
    readonly intervalMs: number;
  };
  readonly backup: {
    /** 32-byte key that encrypts session backups. A secret: never log it (see configSummary). */
    readonly key: Buffer;
    /** env: BACKUP_KEY; file: read from BACKUP_KEY_FILE; development-default: the public key. */
    readonly keySource: 'env' | 'file' | 'development-default';
    /**
     * BACKUP_KEY_PREVIOUS(_FILE), during a key rotation: backups under it are still read (and saved
     * again under `key`); nothing is written with it. Absent outside a rotation. A secret too.
     */
    readonly previousKey?: Buffer;
    /** env: BACKUP_KEY_PREVIOUS; file: read from BACKUP_KEY_PREVIOUS_FILE. Absent with previousKey. */
    readonly previousKeySource?: 'env' | 'file';
  };
  /** The local WhatsApp simulator, for development; null means real WhatsApp. */
  readonly waSimulator: { readonly socketUrl: string; readonly noiseRootPubKey: Buffer } | null;
  /**
   * WA_VERSION_CHECK: "latest" fetches the current WhatsApp Web version once at start (5 s
   * timeout, falls back to Baileys' bundled one); "off" (default) uses the bundled version. An
   * override in fleetConfig/whatsapp wins over both.
   */
  readonly waVersionCheck: 'off' | 'latest';
  readonly logLevel: LogLevel;
  readonly lease: { readonly ttlMs: number; readonly renewMs: number };
  readonly shutdownTimeoutMs: number;
  /** Several reconcilers (lease/rebalancer.ts). */
  readonly fleet: {
    /** REBALANCE: hand accounts over to a live instance that drives clearly fewer. */
    readonly rebalance: boolean;
    /** An account driven here for less than this is never handed over by rebalancing (no ping-pong). */
    readonly rebalanceMinHoldMs: number;
    /** DRAIN_ON_SIGTERM: a SIGTERM first hands every account over to the others, then stops. */
    readonly drainOnSigterm: boolean;
    /** How long that drain may take before the stop goes on with what is left. */
    readonly drainTimeoutMs: number;
  };
  readonly outbox: {
    /** Sends per account per minute, spaced evenly; 0 turns per-account pacing off. */
    readonly perAccountPerMinute: number;
    /** Sends per second across the fleet; 0 turns the fleet cap off. */
    readonly fleetPerSecond: number;
    /** Attempts before a message that keeps failing in a retryable way is marked failed. */
    readonly maxAttempts: number;
    /** How long to wait for WhatsApp's ack of a sent message before the attempt counts as failed. */
    readonly ackTimeoutMs: number;
    /** A queued message older than this opens an OutboxStuck incident for its account. */
    readonly stuckAfterMs: number;
  };
  /** Days an inbound message is kept before the TTL policy may delete it; 0 keeps it forever. */
  readonly inboundRetentionDays: number;
  /** Problems that do not stop the start but must be logged loudly (main logs them at warn). */
  readonly warnings: readonly string[];
}

export interface ConfigIssue {
  variable: string;
  message: string;
}

/** The environment is unusable. `message` is the complete, printable explanation. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly issues: readonly ConfigIssue[],
    /** Warnings found on the way; shown too, since a misspelt variable often explains an error. */
    readonly warnings: readonly string[] = [],
  ) {
    const lines = issues.map((issue) => `  - ${issue.variable}: ${issue.message}`);
    const notes = warnings.length > 0 ? `Also:\n${warnings.map((w) => `  - ${w}`).join('\n')}\n` : '';
    super(
      `Invalid reconciler configuration (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n${lines.join('\n')}\n${notes}` +
        'See reconciler/README.md for every variable, its default and its format.',
    );
  }
}

/** Every variable the reconciler reads; anything similar-looking in the environment gets a warning. */
export const CONFIG_VARIABLES = [
  'NODE_ENV',
  'FIRESTORE_EMULATOR_HOST',
  'GCLOUD_PROJECT',
  'GOOGLE_CLOUD_PROJECT',
  'FIREBASE_PROJECT_ID',
  'SESSIONS_PATH',
  'SESSIONS_REQUIRE_VOLUME',
  'INSTANCE_ID',
  'HTTP_PORT',
  'HTTP_HOST',
  'MAX_ACCOUNTS',
  'CONNECT_CONCURRENCY',
  'CONNECT_INTERVAL_MS',
  'BACKUP_KEY',
  'BACKUP_KEY_FILE',
  'BACKUP_KEY_PREVIOUS',
  'BACKUP_KEY_PREVIOUS_FILE',
  'WA_SOCKET_URL',
  'WA_NOISE_ROOT_PUBKEY',
  'WA_VERSION_CHECK',
  'LOG_LEVEL',
  'LEASE_TTL_MS',
  'LEASE_RENEW_MS',
  'SHUTDOWN_TIMEOUT_MS',
  'REBALANCE',
  'REBALANCE_MIN_HOLD_MS',
  'DRAIN_ON_SIGTERM',
  'DRAIN_TIMEOUT_MS',
  'OUTBOX_RATE_PER_MINUTE',
  'OUTBOX_FLEET_RATE_PER_SECOND',
  'OUTBOX_MAX_ATTEMPTS',
  'OUTBOX_ACK_TIMEOUT_MS',
  'OUTBOX_STUCK_AFTER_MS',
  'INBOUND_RETENTION_DAYS',
] as const;
type Variable = (typeof CONFIG_VARIABLES)[number];

// Google Cloud project ids: 6–30 chars, lowercase letters, digits and hyphens, starting with a letter.
const PROJECT_ID_RE = /^[a-z][a-z0-9-]{4,28}[a-z0-9]$/;
const EMULATOR_HOST_RE = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/;
const HOSTNAME_RE = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** An optional whole-number variable with a default and a range. */
function intVar(def: number, min: number, max: number, unit: string) {
  return z
    .string()
    .optional()
    .transform((value, ctx) => {
      if (value === undefined) return def;
      const n = /^[0-9]+$/.test(value) ? Number(value) : Number.NaN;
      if (!(n >= min && n <= max)) {
        ctx.addIssue({ code: 'custom', message: `must be a whole number from ${min} to ${max} (${unit}), got ${JSON.stringify(value)}` });
        return z.NEVER;
      }
      return n;
    });
}

/** 32 bytes as 64 hex chars or base64 (standard or URL-safe, padding optional). Returns null if neither. */
export function decodeKey32(text: string): Buffer | null {
  if (/^[0-9A-Fa-f]{64}$/.test(text)) return Buffer.from(text, 'hex');
  if (!/^[A-Za-z0-9+/_-]{43}={0,1}$/.test(text)) return null;
  const bytes = Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  // Node's decoder skips junk silently; re-encoding proves every character was meaningful.
  if (bytes.length !== 32 || bytes.toString('base64').replace(/=+$/, '') !== text.replace(/-/g, '+').replace(/_/g, '/').replace(/=+$/, '')) {
    return null;
  }
  return bytes;
}

/**
 * The file that marks a directory as the prepared sessions disk (deploy/prepare-disk.sh writes it).
 * With SESSIONS_REQUIRE_VOLUME=true the reconciler refuses a SESSIONS_PATH without it: an empty
 * directory there is an unmounted disk, an anonymous container volume or a new blank disk, and
 * running on it would keep credentials on storage that the next restart loses.
 */
export const VOLUME_MARKER = '.wafleet-volume';

/** A key file longer than this is not a key (a wrong path, e.g. a certificate bundle). */
const MAX_KEY_FILE_BYTES = 4096;

const KEY_FORMAT_HINT = 'must be 32 bytes, as base64 (44 characters; `openssl rand -base64 32`) or as 64 hex characters (`openssl rand -hex 32`)';

/** An optional 32-byte key given in the environment (BACKUP_KEY, BACKUP_KEY_PREVIOUS). */
function keyVar() {
  return z
    .string()
    .transform((v, ctx) => {
      const key = decodeKey32(v);
      // The value is a secret: describe it by length only.
      if (!key) ctx.addIssue({ code: 'custom', message: `${KEY_FORMAT_HINT}; got ${v.length} characters that are neither` });
      return key ?? z.NEVER;
    })
    .optional();
}

/** A key's two variables: the value itself, or a file holding it. */
interface KeyVariables {
  readonly env: 'BACKUP_KEY' | 'BACKUP_KEY_PREVIOUS';
  readonly file: 'BACKUP_KEY_FILE' | 'BACKUP_KEY_PREVIOUS_FILE';
  /** The secret version to name in a fix (`gcloud secrets versions access <version>`). */
  readonly version: string;
  /** What to do about the public development key in production. */
  readonly devKeyFix: string;
}

const CURRENT_KEY_VARIABLES: KeyVariables = {
  env: 'BACKUP_KEY',
  file: 'BACKUP_KEY_FILE',
  version: 'latest',
  devKeyFix: 'generate one with `openssl rand -base64 32`',
};
const PREVIOUS_KEY_VARIABLES: KeyVariables = {
  env: 'BACKUP_KEY_PREVIOUS',
  file: 'BACKUP_KEY_PREVIOUS_FILE',
  version: '<the version before the current one>',
  devKeyFix: 'no production backup can be under it; unset the variable',
};

/**
 * One key from its variable or its file (BACKUP_KEY / BACKUP_KEY_FILE, or the _PREVIOUS pair):
 * the key and its source; null when neither is set; undefined when it is refused (`issues` says why).
 */
async function resolveKey(
  names: KeyVariables,
  raw: Partial<Record<Variable, string>>,
  parsed: Buffer | undefined,
  nodeEnv: NodeEnv,
  issues: ConfigIssue[],
  warnings: string[],
): Promise<{ key: Buffer; source: 'env' | 'file' } | null | undefined> {
  const value = raw[names.env];
  const fileName = raw[names.file];
  if (value !== undefined && fileName !== undefined) {
    issues.push({
      variable: names.file,
      message: `and ${names.env} are both set; set only one. Prefer ${names.file} (the key stays out of environment listings) and unset ${names.env}`,
    });
    return undefined;
  }
  if (fileName !== undefined) {
    const file = path.resolve(fileName);
    const read = await readKeyFile(file, names);
    if ('problem' in read) {
      issues.push({ variable: names.file, message: read.problem });
      return undefined;
    }
    if (read.warning) warnings.push(read.warning);
    if (nodeEnv === 'production' && read.key.equals(DEV_BACKUP_KEY)) {
      issues.push({ variable: names.file, message: `${file} holds the public development key, which is refused in production; ${names.devKeyFix}` });
      return undefined;
    }
    return { key: read.key, source: 'file' };
  }
  if (value === undefined) return null;
  // Set but not parsed: the schema already reported it.
  if (parsed === undefined) return undefined;
  if (nodeEnv === 'production' && parsed.equals(DEV_BACKUP_KEY)) {
    issues.push({ variable: names.env, message: `is the public development key, which is refused in production; ${names.devKeyFix}` });
    return undefined;
  }
  return { key: parsed, source: 'env' };
}

// Values are trimmed and empty strings count as unset before this runs (see loadConfig).
const EnvSchema = z.object({
  NODE_ENV: z
    .enum(NODE_ENVS, { error: (issue) => `must be one of ${NODE_ENVS.join(', ')} (or unset, which means production), got ${JSON.stringify(issue.input)}` })
    .optional(),
  FIRESTORE_EMULATOR_HOST: z
    .string()
    .refine((v) => {
      const port = EMULATOR_HOST_RE.exec(v)?.[1];
      return port !== undefined && Number(port) >= 1 && Number(port) <= 65535;
    }, 'must be host:port of the Firestore emulator, e.g. 127.0.0.1:8080')
    .optional(),
  GCLOUD_PROJECT: z.string().optional(),
  GOOGLE_CLOUD_PROJECT: z.string().optional(),
  FIREBASE_PROJECT_ID: z.string().optional(),
  SESSIONS_PATH: z.string({ error: 'is required: the directory for session keys, e.g. /var/lib/wafleet/sessions (a persistent volume in production)' }),
  SESSIONS_REQUIRE_VOLUME: z
    .enum(['true', 'false'], { error: (issue) => `must be true or false (or unset, which means false), got ${JSON.stringify(issue.input)}` })
    .default('false')
    .transform((v) => v === 'true'),
  INSTANCE_ID: InstanceIdSchema.optional(),
  HTTP_PORT: intVar(8080, 0, 65535, 'a TCP port; 0 picks a free one'),
  HTTP_HOST: z
    .string()
    .refine((v) => isIP(v) !== 0 || HOSTNAME_RE.test(v), 'must be an IP address or a host name, e.g. 0.0.0.0 or 127.0.0.1')
    .default('0.0.0.0'),
  MAX_ACCOUNTS: intVar(30, 1, 1000, 'accounts'),
  CONNECT_CONCURRENCY: intVar(2, 1, 64, 'logins at once'),
  CONNECT_INTERVAL_MS: intVar(250, 0, 60_000, 'milliseconds'),
  BACKUP_KEY: keyVar(),
  BACKUP_KEY_FILE: z.string().optional(),
  BACKUP_KEY_PREVIOUS: keyVar(),
  BACKUP_KEY_PREVIOUS_FILE: z.string().optional(),
  WA_SOCKET_URL: z
    .string()
    .refine((v) => {
      try {
        const url = new URL(v);
        return url.protocol === 'ws:' || url.protocol === 'wss:';
      } catch {
        return false;
      }
    }, 'must be a ws:// or wss:// URL of the WhatsApp simulator, e.g. ws://127.0.0.1:7070/ws/chat')
    .optional(),
  WA_NOISE_ROOT_PUBKEY: z
    .string()
    .transform((v, ctx) => {
      const bytes = /^[A-Za-z0-9+/]{43}=?$/.test(v) ? Buffer.from(v, 'base64') : null;
      if (!bytes || bytes.length !== 32) {
        ctx.addIssue({ code: 'custom', message: 'must be the simulator root public key: 32 bytes (a Curve25519 key) in base64, 44 characters' });
        return z.NEVER;
      }
      return bytes;
    })
    .optional(),
  WA_VERSION_CHECK: z
    .enum(['off', 'latest'], {
      error: (issue) => `must be "off" (the default: Baileys' bundled WhatsApp Web version) or "latest" (fetch the current one from web.whatsapp.com at start), got ${JSON.stringify(issue.input)}`,
    })
    .default('off'),
  LOG_LEVEL: z
    .enum(LOG_LEVELS, { error: (issue) => `must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(issue.input)}` })
    .default('info'),
  // One heartbeat write per LEASE_RENEW_MS keeps every lease alive (docs/reconciler-design.md):
  // 40 s is 90 writes an hour for an idle fleet, and a Firestore outage of up to TTL − renew
  // (80 s) passes without closing a single session.
  LEASE_TTL_MS: intVar(120_000, 1_000, 600_000, 'milliseconds'),
  LEASE_RENEW_MS: intVar(40_000, 100, 300_000, 'milliseconds'),
  SHUTDOWN_TIMEOUT_MS: intVar(20_000, 100, 600_000, 'milliseconds'),
  REBALANCE: z
    .enum(['on', 'off'], { error: (issue) => `must be "on" (the default) or "off", got ${JSON.stringify(issue.input)}` })
    .default('on')
    .transform((v) => v === 'on'),
  // Ten minutes: an account moved (or just restored) settles before it may move again.
  REBALANCE_MIN_HOLD_MS: intVar(600_000, 0, 86_400_000, 'milliseconds'),
  DRAIN_ON_SIGTERM: z
    .enum(['true', 'false'], { error: (issue) => `must be true or false (or unset, which means false), got ${JSON.stringify(issue.input)}` })
    .default('false')
    .transform((v) => v === 'true'),
  DRAIN_TIMEOUT_MS: intVar(120_000, 1_000, 3_600_000, 'milliseconds'),
  // Anti-ban pacing: a new or quiet number sending faster than a person types is what WhatsApp
  // flags. 20 a minute per account (one every 3 s) and 10 a second for the fleet are conservative.
  OUTBOX_RATE_PER_MINUTE: intVar(20, 0, 6_000, 'messages per minute per account; 0 = unpaced'),
  OUTBOX_FLEET_RATE_PER_SECOND: intVar(10, 0, 10_000, 'messages per second for the fleet; 0 = no cap'),
  OUTBOX_MAX_ATTEMPTS: intVar(5, 1, 100, 'attempts'),
  OUTBOX_ACK_TIMEOUT_MS: intVar(15_000, 100, 600_000, 'milliseconds'),
  OUTBOX_STUCK_AFTER_MS: intVar(600_000, 1_000, 86_400_000, 'milliseconds'),
  INBOUND_RETENTION_DAYS: intVar(90, 0, 3_650, 'days; 0 = keep forever'),
});
type Env = z.infer<typeof EnvSchema>;

export interface LoadConfigOptions {
  /** For the INSTANCE_ID default; defaults to os.hostname(). */
  hostname?: string;
  /**
   * For SESSIONS_REQUIRE_VOLUME: a directory on the filesystem that SESSIONS_PATH must not share
   * (the boot disk, or a container's image layers). Defaults to "/".
   */
  rootPath?: string;
}

/**
 * Parses and checks the environment. Resolves to a frozen Config, or rejects with a ConfigError
 * listing every problem. Touches the filesystem only to check SESSIONS_PATH (a probe write, and
 * with SESSIONS_REQUIRE_VOLUME its filesystem and marker) and to read BACKUP_KEY_FILE.
 */
export async function loadConfig(env: NodeJS.ProcessEnv = process.env, options: LoadConfigOptions = {}): Promise<Config> {
  const raw: Partial<Record<Variable, string>> = {};
  for (const name of CONFIG_VARIABLES) {
    const value = env[name]?.trim();
    if (value) raw[name] = value;
  }
  const issues: ConfigIssue[] = [];
  const warnings: string[] = [];
  const parsed = EnvSchema.safeParse(raw);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) issues.push({ variable: String(issue.path[0] ?? '(environment)'), message: issue.message });
  }
  // Cross-variable checks run on whatever parsed, so one bad variable does not hide another.
  const e: Partial<Env> = parsed.success ? parsed.data : partialParse(raw);
  const nodeEnv: NodeEnv = e.NODE_ENV ?? 'production';
  const devLike = nodeEnv === 'development' || nodeEnv === 'test';
  const emulatorHost = e.FIRESTORE_EMULATOR_HOST ?? null;

  const projectId = resolveProjectId(raw, emulatorHost, issues);
  if (emulatorHost && nodeEnv === 'production') {
    warnings.push(`FIRESTORE_EMULATOR_HOST=${emulatorHost} is set with NODE_ENV=production: all Firestore traffic goes to the emulator, not to project ${projectId ?? '?'}`);
  }

  const current = await resolveKey(CURRENT_KEY_VARIABLES, raw, e.BACKUP_KEY, nodeEnv, issues, warnings);
  let backupKey: Buffer | undefined = current?.key;
  let keySource: Config['backup']['keySource'] = current?.source ?? 'env';
  if (current === null) {
    if (devLike) {
      backupKey = DEV_BACKUP_KEY;
      keySource = 'development-default';
      warnings.push(
        `BACKUP_KEY is not set: session backups are encrypted with the PUBLIC development key (NODE_ENV=${nodeEnv}). ` +
          'Anyone can decrypt them. Never use this with real accounts; set BACKUP_KEY (`openssl rand -base64 32`).',
      );
    } else {
      issues.push({
        variable: 'BACKUP_KEY',
        message: `is required when NODE_ENV is ${raw.NODE_ENV ? `"${nodeEnv}"` : 'unset (production)'}: the key that encrypts session backups, ${KEY_FORMAT_HINT}. Keep it in a secret manager; losing it makes existing backups unreadable. Or set BACKUP_KEY_FILE to a file holding it (e.g. fetched from Secret Manager at start), which keeps it out of environment listings`,
      });
    }
  }

  // During a key rotation: the old key, which backups not yet saved again are still read with.
  const previous = await resolveKey(PREVIOUS_KEY_VARIABLES, raw, e.BACKUP_KEY_PREVIOUS, nodeEnv, issues, warnings);
  const previousName = raw.BACKUP_KEY_PREVIOUS_FILE !== undefined ? 'BACKUP_KEY_PREVIOUS_FILE' : 'BACKUP_KEY_PREVIOUS';
  let previousKey: { key: Buffer; source: 'env' | 'file' } | null = null;
  if ((raw.BACKUP_KEY_PREVIOUS !== undefined || raw.BACKUP_KEY_PREVIOUS_FILE !== undefined) && current === null) {
    issues.push({
      variable: previousName,
      message:
        'is set but BACKUP_KEY_FILE (or BACKUP_KEY) is not: a rotation needs both keys named. Set BACKUP_KEY_FILE to the new key and keep the old one here; ' +
        'outside a rotation, unset it',
    });
  } else if (previous && backupKey && previous.key.equals(backupKey)) {
    issues.push({
      variable: previousName,
      message:
        `is the same key as ${current?.source === 'file' ? 'BACKUP_KEY_FILE' : 'BACKUP_KEY'}: set it to the old key (the secret version before the current one), ` +
        'or unset it once every sessionBackups manifest shows the current keyId (docs/deploy.md, "Rotating BACKUP_KEY")',
    });
  } else if (previous) {
    previousKey = previous;
  }

  let waSimulator: Config['waSimulator'] = null;
  if ((raw.WA_SOCKET_URL === undefined) !== (raw.WA_NOISE_ROOT_PUBKEY === undefined)) {
    const missing = raw.WA_SOCKET_URL === undefined ? 'WA_SOCKET_URL' : 'WA_NOISE_ROOT_PUBKEY';
    issues.push({ variable: missing, message: 'WA_SOCKET_URL and WA_NOISE_ROOT_PUBKEY configure the WhatsApp simulator together: set both, or neither for real WhatsApp' });
  } else if (raw.WA_SOCKET_URL !== undefined) {
    if (nodeEnv === 'production') {
      issues.push({
        variable: 'WA_SOCKET_URL',
        message: 'points at the WhatsApp simulator, which is for development only and refused with NODE_ENV=production; unset WA_SOCKET_URL and WA_NOISE_ROOT_PUBKEY',
      });
    } else if (e.WA_SOCKET_URL && e.WA_NOISE_ROOT_PUBKEY) {
      waSimulator = { socketUrl: e.WA_SOCKET_URL, noiseRootPubKey: e.WA_NOISE_ROOT_PUBKEY };
      warnings.push(`WA_SOCKET_URL is set: accounts connect to the WhatsApp simulator at ${e.WA_SOCKET_URL}, not to WhatsApp`);
    }
  }

  const ttl = e.LEASE_TTL_MS ?? 120_000;
  // A TTL set alone brings its renewal along (a third of it), so shortening one is enough.
  const renew = raw.LEASE_RENEW_MS === undefined && raw.LEASE_TTL_MS !== undefined ? Math.floor(ttl / 3) : (e.LEASE_RENEW_MS ?? 40_000);
  if (renew * 2 > ttl) {
    issues.push({
      variable: 'LEASE_RENEW_MS',
      message: `(${renew}) must be at most half of LEASE_TTL_MS (${ttl}), so a failed renewal can be retried before the lease expires`,
    });
  }

  let sessionsPath: string | null = null;
  if (raw.SESSIONS_PATH !== undefined) {
    sessionsPath = path.resolve(raw.SESSIONS_PATH);
    const problem = await checkWritableDir(sessionsPath);
    if (problem) issues.push({ variable: 'SESSIONS_PATH', message: problem });
    else if (e.SESSIONS_REQUIRE_VOLUME) {
      const notVolume = await checkVolume(sessionsPath, path.resolve(options.rootPath ?? '/'));
      if (notVolume) issues.push({ variable: 'SESSIONS_PATH', message: notVolume });
    }
  }

  warnings.push(...lookalikeWarnings(env));
  if (issues.length > 0 || !parsed.success || sessionsPath === null || projectId === null || backupKey === undefined) {
    const order = (variable: string): number => {
      const i = (CONFIG_VARIABLES as readonly string[]).indexOf(variable);
      return i === -1 ? CONFIG_VARIABLES.length : i;
    };
    const sorted = [...issues].sort((a, b) => order(a.variable) - order(b.variable));
    throw new ConfigError(sorted.length > 0 ? sorted : [{ variable: '(environment)', message: 'could not be parsed' }], warnings);
  }

  const data = parsed.data;
  const config: Config = {
    nodeEnv,
    firestore: { projectId, emulatorHost },
    sessionsPath,
    sessionsRequireVolume: data.SESSIONS_REQUIRE_VOLUME,
    instanceId: data.INSTANCE_ID ?? defaultInstanceId(options.hostname ?? hostname(), sessionsPath),
    http: { host: data.HTTP_HOST, port: data.HTTP_PORT },
    maxAccounts: data.MAX_ACCOUNTS,
    connect: { concurrency: data.CONNECT_CONCURRENCY, intervalMs: data.CONNECT_INTERVAL_MS },
    backup: previousKey ? { key: backupKey, keySource, previousKey: previousKey.key, previousKeySource: previousKey.source } : { key: backupKey, keySource },
    waSimulator,
    waVersionCheck: data.WA_VERSION_CHECK,
    logLevel: data.LOG_LEVEL,
    lease: { ttlMs: ttl, renewMs: renew },
    shutdownTimeoutMs: data.SHUTDOWN_TIMEOUT_MS,
    fleet: { rebalance: data.REBALANCE, rebalanceMinHoldMs: data.REBALANCE_MIN_HOLD_MS, drainOnSigterm: data.DRAIN_ON_SIGTERM, drainTimeoutMs: data.DRAIN_TIMEOUT_MS },
    outbox: {
      perAccountPerMinute: data.OUTBOX_RATE_PER_MINUTE,
      fleetPerSecond: data.OUTBOX_FLEET_RATE_PER_SECOND,
      maxAttempts: data.OUTBOX_MAX_ATTEMPTS,
      ackTimeoutMs: data.OUTBOX_ACK_TIMEOUT_MS,
      stuckAfterMs: data.OUTBOX_STUCK_AFTER_MS,
    },
    inboundRetentionDays: data.INBOUND_RETENTION_DAYS,
    warnings,
  };
  return deepFreeze(config);
}

/**
 * The config as it may be logged: the backup key replaced by a fingerprint (the first 8 hex chars
 * of its SHA-256), which lets operators check that instances share a key without revealing it.
 */
export function configSummary(config: Config): Record<string, unknown> {
  return {
    nodeEnv: config.nodeEnv,
    firestore: config.firestore,
    sessionsPath: config.sessionsPath,
    sessionsRequireVolume: config.sessionsRequireVolume,
    instanceId: config.instanceId,
    http: config.http,
    maxAccounts: config.maxAccounts,
    connect: config.connect,
    backup: {
      keySource: config.backup.keySource,
      keyFingerprint: createHash('sha256').update(config.backup.key).digest('hex').slice(0, 8),
      ...(config.backup.previousKey
        ? { previousKeySource: config.backup.previousKeySource, previousKeyFingerprint: createHash('sha256').update(config.backup.previousKey).digest('hex').slice(0, 8) }
        : {}),
    },
    waSimulator: config.waSimulator ? { socketUrl: config.waSimulator.socketUrl } : null,
    waVersionCheck: config.waVersionCheck,
    logLevel: config.logLevel,
    lease: config.lease,
    shutdownTimeoutMs: config.shutdownTimeoutMs,
    fleet: config.fleet,
    outbox: config.outbox,
    inboundRetentionDays: config.inboundRetentionDays,
  };
}

function resolveProjectId(raw: Partial<Record<Variable, string>>, emulatorHost: string | null, issues: ConfigIssue[]): string | null {
  const sources = (['GCLOUD_PROJECT', 'GOOGLE_CLOUD_PROJECT', 'FIREBASE_PROJECT_ID'] as const).filter((name) => raw[name] !== undefined);
  const values = new Set(sources.map((name) => raw[name]));
  if (values.size > 1) {
    // Guessing which one wins could point a fleet at the wrong project's data.
    issues.push({
      variable: sources[0] ?? 'GCLOUD_PROJECT',
      message: `project ids disagree (${sources.map((name) => `${name}=${raw[name]}`).join(', ')}); set one of them, or make them equal`,
    });
    return null;
  }
  const first = sources[0];
  if (first === undefined) {
    if (emulatorHost) return EMULATOR_DEFAULT_PROJECT_ID;
    issues.push({
      variable: 'GCLOUD_PROJECT',
      message: 'is required (or GOOGLE_CLOUD_PROJECT / FIREBASE_PROJECT_ID): the Firebase project id, e.g. my-project; or set FIRESTORE_EMULATOR_HOST to use the emulator with demo-wafleet',
    });
    return null;
  }
  const projectId = raw[first] ?? '';
  if (!PROJECT_ID_RE.test(projectId)) {
    issues.push({ variable: first, message: `must be a Google Cloud project id (6–30 lowercase letters, digits or "-", starting with a letter), got ${JSON.stringify(projectId)}` });
    return null;
  }
  if (projectId.startsWith('demo-') && !emulatorHost) {
    issues.push({ variable: first, message: `"${projectId}" is a demo project, which exists only in the emulator; set FIRESTORE_EMULATOR_HOST or use a real project id` });
    return null;
  }
  return projectId;
}

/** Exists, is a directory, and a file can be created, fsynced and removed in it. Returns the problem, or null. */
async function checkWritableDir(dir: string): Promise<string | null> {
  const owner = typeof process.getuid === 'function' ? `${process.getuid()}:${process.getgid?.() ?? process.getuid()}` : '<user>:<group>';
  const fix = `mkdir -p ${dir} && chown ${owner} ${dir} && chmod 700 ${dir}`;
  try {
    const info = await stat(dir);
    if (!info.isDirectory()) return `${dir} is not a directory. Fix: point SESSIONS_PATH at a directory, or replace the file: rm ${dir} && ${fix}`;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return `${dir} does not exist. Fix: ${fix}`;
    if (code === 'ENOTDIR') return `${dir} is not a directory (a parent of it is a file). Fix: point SESSIONS_PATH at a directory`;
    return `${dir} cannot be examined (${code ?? String(error)}). Fix: ${fix}`;
  }
  const probe = path.join(dir, `.wafleet-write-probe-${process.pid}-${randomBytes(4).toString('hex')}`);
  let created = false;
  try {
    const handle = await open(probe, 'wx', 0o600);
    created = true;
    try {
      await handle.writeFile('probe');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await unlink(probe);
    created = false;
    return null;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (created) await unlink(probe).catch(() => undefined);
    if (code === 'EROFS') return `${dir} is on a read-only filesystem. Fix: mount a writable (persistent) volume at ${dir}`;
    if (code === 'ENOSPC' || code === 'EDQUOT') return `${dir} is full (${code}). Fix: free space or grow the volume`;
    return `${dir} is not writable by this process (uid ${process.getuid?.() ?? '?'}; ${code ?? String(error)}). Fix: chown ${owner} ${dir} && chmod 700 ${dir}`;
  }
}

/**
 * SESSIONS_REQUIRE_VOLUME: `dir` (already known to be a writable directory) must be on another
 * filesystem than `rootPath` and hold the VOLUME_MARKER file. Returns the problem, or null.
 */
async function checkVolume(dir: string, rootPath: string): Promise<string | null> {
  const marker = path.join(dir, VOLUME_MARKER);
  const [dirInfo, rootInfo] = await Promise.all([stat(dir), stat(rootPath).catch(() => null)]);
  if (rootInfo && dirInfo.dev === rootInfo.dev) {
    return (
      `${dir} is on the same filesystem as ${rootPath} (the boot disk or the container's own layers), not on a mounted persistent disk, and SESSIONS_REQUIRE_VOLUME=true. ` +
      `Fix: mount the sessions disk there (on the VM: \`sudo mount <mount point>\` and check with \`findmnt -T ${dir}\`; in a container: ` +
      `\`docker run --mount type=bind,src=/mnt/disks/wafleet/sessions,dst=${dir} …\`), see docs/deploy.md; or set SESSIONS_REQUIRE_VOLUME=false on a machine without one`
    );
  }
  let markerInfo;
  try {
    markerInfo = await stat(marker);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') return `${marker} cannot be examined (${code ?? String(error)}). Fix: chown the sessions disk to this process's user (uid ${process.getuid?.() ?? '?'})`;
  }
  if (markerInfo?.isFile()) return null;
  return (
    `${dir} has no ${VOLUME_MARKER} file, so it is not the prepared sessions disk (an unmounted disk, a container volume Docker made up because none was mounted, or a new blank disk), ` +
    'and SESSIONS_REQUIRE_VOLUME=true. Fix: mount the sessions disk at this path (docs/deploy.md); for a new disk run deploy/prepare-disk.sh, which formats it and writes the marker; ' +
    `for a disk you have checked is the right one (\`findmnt -T ${dir}\`), \`touch ${marker}\``
  );
}

/** Reads a 32-byte key from a file (a trailing newline is fine). Never puts the contents in a message. */
async function readKeyFile(file: string, names: KeyVariables = CURRENT_KEY_VARIABLES): Promise<{ key: Buffer; warning: string | null } | { problem: string }> {
  const fix = `write the key there with mode 0400 owned by uid ${process.getuid?.() ?? '?'} (e.g. \`gcloud secrets versions access ${names.version} --secret=wafleet-backup-key > ${file}\`), or point ${names.file} at the file that holds it`;
  let info;
  try {
    info = await stat(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return { problem: `${file} does not exist. Fix: ${fix}` };
    return { problem: `${file} cannot be examined (${code ?? String(error)}). Fix: ${fix}` };
  }
  if (!info.isFile()) return { problem: `${file} is not a regular file. Fix: ${fix}` };
  if (info.size > MAX_KEY_FILE_BYTES) return { problem: `${file} is ${info.size} bytes, too long to be a key (${KEY_FORMAT_HINT}). Fix: ${fix}` };
  let text: string;
  try {
    text = (await readFile(file, 'utf8')).trim();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return { problem: `${file} is not readable by this process (uid ${process.getuid?.() ?? '?'}; ${code ?? String(error)}). Fix: ${fix}` };
  }
  const key = decodeKey32(text);
  // The contents are a secret: describe them by length only.
  if (!key) return { problem: `${file} ${KEY_FORMAT_HINT}; it holds ${text.length} characters that are neither. Fix: ${fix}` };
  const loose = info.mode & 0o077;
  const warning = loose
    ? `${names.file} ${file} is open to users other than its owner (mode ${(info.mode & 0o777).toString(8).padStart(4, '0')}); \`chmod 400 ${file}\``
    : null;
  return { key, warning };
}

/**
 * The host and the sessions directory, not the process: a restart on the same disk keeps its
 * identity, so it adopts its crashed predecessor's leases without writing them (lease-manager.ts),
 * and the host lock already makes one process per directory. (A pid here made every restart a
 * stranger whose takeover writes waited about a minute behind the dead process's Firestore locks.)
 */
function defaultInstanceId(host: string, sessionsPath: string): string {
  const safeHost = host.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 100) || 'host';
  return `${safeHost}-${createHash('sha256').update(sessionsPath).digest('hex').slice(0, 8)}`;
}

/** The per-variable results of a failed parse, so cross-variable checks still see valid values. */
function partialParse(raw: Partial<Record<Variable, string>>): Partial<Env> {
  const out: Record<string, unknown> = {};
  for (const [name, schema] of Object.entries(EnvSchema.shape)) {
    const result = (schema as z.ZodType).safeParse(raw[name as Variable]);
    if (result.success) out[name] = result.data;
  }
  return out as Partial<Env>;
}

/** Warns about variables one or two typos away from a known one: a misspelt setting is silently ignored otherwise. */
function lookalikeWarnings(env: NodeJS.ProcessEnv): string[] {
  const known = new Set<string>(CONFIG_VARIABLES);
  const warnings: string[] = [];
  for (const name of Object.keys(env)) {
    if (known.has(name)) continue;
    const near = CONFIG_VARIABLES.find((k) => Math.abs(k.length - name.length) <= 2 && editDistance(k, name) <= 2);
    if (near) warnings.push(`${name} is set but is not a reconciler variable; did you mean ${near}?`);
  }
  return warnings;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !ArrayBuffer.isView(value) && !Object.isFrozen(value)) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
