/**
 * The reconciler's logger: pino, one JSON object per line on stdout, with secrets and personal
 * data removed before anything is written. Logs leave the machine (Cloud Logging, support
 * tickets); session keys in a log line are a stolen WhatsApp account, phone numbers are personal
 * data. Baileys logs both freely, so scrubbing is not optional and not left to call sites.
 *
 * Three layers, each catching what the previous cannot:
 * 1. Structure (`formatters.log`, `formatters.bindings`): values under secret-named keys become
 *    "[redacted]" at any depth, bytes (Buffer, Uint8Array) become "[binary N bytes]", errors are
 *    serialized with scrubbed message and stack. Caller objects are copied, never mutated.
 * 2. pino `redact` paths for the same names at the top level and one level down, a second net if
 *    a serializer ever bypasses layer 1.
 * 3. Text (`hooks.logMethod` for messages and format arguments, `hooks.streamWrite` for the final
 *    line): JIDs and +phone numbers are masked as `maskPhone` does, base64 blobs of 40+ characters
 *    and hex of 64+ (key-sized) are replaced.
 *
 * main creates one logger with `createLogger({ level: config.logLevel })` and hands out children.
 */
import { maskPhone } from '@wafleet/contract';
import { createGcpLoggingPinoConfig } from '@google-cloud/pino-logging-gcp-config';
import { pino, stdTimeFunctions } from 'pino';
import type { DestinationStream, Level, LevelWithSilent, Logger, LoggerOptions } from 'pino';

export type { Logger } from 'pino';

export const REDACTED = '[redacted]';

/** Keys whose values never reach a log, at any depth (compared case-insensitively). */
export const SECRET_KEYS: readonly string[] = [
  'creds',
  'keys',
  'noiseKey',
  'signedIdentityKey',
  'signedPreKey',
  'identityKey',
  'advSecretKey',
  'pairingEphemeralKeyPair',
  'keyPair',
  'privKey',
  'private',
  'privateKey',
  'mediaKey',
  'keyData',
  'signature',
  'token',
  'idToken',
  'accessToken',
  'refreshToken',
  'authorization',
  'cookie',
  'password',
  'secret',
  'BACKUP_KEY',
  'backupKey',
  'qr',
  'qrPng',
  'qrCode',
  'pairingCode',
  'text',
  'caption',
  'conversation',
];
const SECRET_KEY_SET = new Set(SECRET_KEYS.map((k) => k.toLowerCase()));
// Catches the variants nobody listed: clientSecret, x-auth-token, dbPassword, …
const SECRET_KEY_PATTERN = /secret|passw|token|privatekey|authoriz|cookie/i;
// Values under these keys are phone numbers or JIDs even without "+" or "@": mask digit runs.
// (LID addressing adds Baileys' `senderAlt`/`remoteJidAlt`, `pnUser`/`lidUser`, `sender_pn`, `lids`.)
const PHONE_KEY_PATTERN = /phone|msisdn|^pns?$|jid|participant|recipient|^lids?$|^user$|^number$|^sender(alt)?$|sender_?(pn|lid)|(latest|assigned)lid|_pn$|pnuser|liduser/i;
// Baileys keys maps by phone number or LID user (`{ [pnUser]: lidUser, [lidUser + "_reverse"]: pnUser }`).
const DIGIT_KEY = /^[0-9]{5,20}(_reverse)?$/;

/** pino `redact` paths: each secret key at the top level and one level down. */
export const REDACT_PATHS: readonly string[] = SECRET_KEYS.flatMap((key) => [key, `*.${key}`]);

const MAX_DEPTH = 8;
const MAX_ARRAY_ITEMS = 50;
const MAX_STRING_LENGTH = 8_192;

// A JID's user part: phone numbers, LIDs, and the creator phone inside legacy group ids.
const JID_IN_TEXT = /(?<![0-9A-Za-z])([0-9]{5,20})(-[0-9]{5,15})?(:[0-9]{1,3})?@(s\.whatsapp\.net|c\.us|lid|g\.us|broadcast|hosted(?:\.lid)?)\b/g;
const PHONE_IN_TEXT = /(?<![0-9A-Za-z+])\+[0-9](?:[ -]?[0-9]){7,14}(?![0-9])/g;
const BASE64_RUN = /[A-Za-z0-9+/_-]{40,}={0,2}/g;
const HEX_RUN = /(?<![0-9A-Za-z])[0-9A-Fa-f]{64,}(?![0-9A-Za-z])/g;
const DIGIT_RUN = /[0-9]{6,}/g;

function maskDigits(digits: string): string {
  return (maskPhone(digits) ?? '').replace(/^\+/, '');
}

/**
 * Masks JIDs and phone numbers and removes base64/hex blobs from free text. Random base64 of 40+
 * characters practically always mixes digits, upper and lower case; requiring all three spares
 * long words, paths and ids that are not key material.
 */
export function scrubText(text: string): string {
  return scrubPatterns(text.length > MAX_STRING_LENGTH ? `${text.slice(0, MAX_STRING_LENGTH)}…[truncated]` : text);
}

/** scrubText without truncation, for whole serialized lines (truncating would break their JSON). */
function scrubPatterns(text: string): string {
  return text
    .replace(BASE64_RUN, (run) => (/[0-9]/.test(run) && /[A-Z]/.test(run) && /[a-z]/.test(run) ? REDACTED : run))
    .replace(HEX_RUN, REDACTED)
    .replace(JID_IN_TEXT, (_m, user: string, group = '', device = '', domain: string) => `${maskDigits(user)}${group}${device}@${domain}`)
    .replace(PHONE_IN_TEXT, (phone) => maskPhone(phone) ?? REDACTED);
}

function isSecretKey(key: string): boolean {
  return SECRET_KEY_SET.has(key.toLowerCase()) || SECRET_KEY_PATTERN.test(key);
}

/**
 * A log-safe deep copy of `value` (see the module comment). Exported for code that puts data into
 * places other than logs that people read, e.g. status messages.
 */
export function scrubValue(value: unknown): unknown {
  return walk(value, 0, new WeakSet(), undefined);
}

function walk(value: unknown, depth: number, seen: WeakSet<object>, key: string | undefined): unknown {
  switch (typeof value) {
    case 'string': {
      const text = scrubText(value);
      return key !== undefined && PHONE_KEY_PATTERN.test(key) ? text.replace(DIGIT_RUN, maskDigits) : text;
    }
    case 'number':
    case 'boolean':
    case 'undefined':
      return value;
    case 'bigint':
      return value.toString();
    case 'function':
    case 'symbol':
      return undefined;
  }
  if (value === null) return null;
  const obj = value as object;
  if (ArrayBuffer.isView(obj)) return `[binary ${obj.byteLength} bytes]`;
  if (obj instanceof ArrayBuffer || obj instanceof SharedArrayBuffer) return `[binary ${obj.byteLength} bytes]`;
  if (obj instanceof Date) return Number.isNaN(obj.getTime()) ? 'Invalid Date' : obj.toISOString();
  if (seen.has(obj)) return '[circular]';
  if (depth >= MAX_DEPTH) return '[depth limit]';
  seen.add(obj);
  try {
    if (obj instanceof Error) return walkError(obj, depth, seen);
    if (Array.isArray(obj)) return walkArray(obj, depth, seen, key);
    if (obj instanceof Set) return walkArray([...obj], depth, seen, key);
    if (obj instanceof Map) return walkEntries([...obj].map(([k, v]) => [String(k), v]), depth, seen);
    return walkEntries(Object.entries(obj), depth, seen);
  } finally {
    seen.delete(obj);
  }
}

function walkArray(items: unknown[], depth: number, seen: WeakSet<object>, key: string | undefined): unknown[] {
  const out = items.slice(0, MAX_ARRAY_ITEMS).map((item) => walk(item, depth + 1, seen, key));
  if (items.length > MAX_ARRAY_ITEMS) out.push(`[${items.length - MAX_ARRAY_ITEMS} more]`);
  return out;
}

function walkEntries(entries: Array<[string, unknown]>, depth: number, seen: WeakSet<object>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of entries) {
    if (isSecretKey(k)) {
      out[k] = v === undefined || v === null ? v : REDACTED;
      continue;
    }
    const digitKey = DIGIT_KEY.test(k);
    // A map keyed by phone number holds LIDs (and the reverse): its values are masked too.
    const scrubbed = walk(v, depth + 1, seen, digitKey ? 'pn' : k);
    if (scrubbed !== undefined) out[digitKey ? k.replace(DIGIT_RUN, maskDigits) : k] = scrubbed;
  }
  return out;
}

/** pino's err shape ({type, message, stack, …own props}), scrubbed. Boom's `data` and `output` included. */
function walkError(error: Error, depth: number, seen: WeakSet<object>): Record<string, unknown> {
  const out: Record<string, unknown> = {
    type: error.constructor?.name || error.name,
    message: scrubText(String(error.message)),
    stack: error.stack === undefined ? undefined : scrubText(error.stack),
  };
  for (const [k, v] of Object.entries(error)) {
    if (k === 'message' || k === 'stack') continue;
    out[k] = isSecretKey(k) && v !== undefined && v !== null ? REDACTED : walk(v, depth + 1, seen, k);
  }
  if (error.cause !== undefined) out.cause = walk(error.cause, depth + 1, seen, 'cause');
  if (error instanceof AggregateError) out.errors = walk(error.errors, depth + 1, seen, 'errors');
  return out;
}

const SEVERITY: Record<string, string> = {
  trace: 'DEBUG',
  debug: 'DEBUG',
  info: 'INFO',
  warn: 'WARNING',
  error: 'ERROR',
  fatal: 'CRITICAL',
};

/** Cloud Logging's special field for a line's labels: a flat map of strings, indexed for filtering. */
export const LABELS_KEY = 'logging.googleapis.com/labels';
/** Binding and log fields that become labels, so that a person can filter by account or instance. */
const LABEL_FIELDS = ['accountId', 'instanceId', 'component'] as const;

export interface CreateLoggerOptions {
  level: LevelWithSilent;
  /** Where lines go; default stdout (synchronous, so a crash does not eat its own last lines). */
  destination?: DestinationStream;
  /** Fields on every line; default pid and hostname. */
  base?: Record<string, unknown>;
  /** What Error Reporting groups errors under (`serviceContext`). */
  service?: { service: string; version: string };
}

/**
 * THE logger factory. See the module comment for what it removes. Lines are Cloud Logging
 * structured entries (https://cloud.google.com/logging/docs/structured-logging), laid out by
 * Google's own pino configuration: the text under `message`, `severity`, `serviceContext` and a
 * sequential `logging.googleapis.com/insertId`; on top of it an RFC 3339 `time`, the labels, and
 * errors as objects (`err`: type, message, stack) plus `stack_trace`, which Error Reporting reads.
 * `level` stays as pino's label, for people and for grep.
 */
export function createLogger({ level, destination, base, service }: CreateLoggerOptions): Logger {
  const ours: LoggerOptions = {
    level,
    formatters: {
      bindings: (bindings) => scrubValue(bindings) as Record<string, unknown>,
      log: (object) => {
        const out = scrubValue(object) as Record<string, unknown>;
        const stack = (out.err as { stack?: unknown } | undefined)?.stack;
        if ((object as { err?: unknown }).err instanceof Error && typeof stack === 'string') out.stack_trace = stack;
        return out;
      },
    },
    // One labels object per line, from the line's own fields and the logger's bindings.
    mixin: (object, _level, logger) => labelsOf(object as Record<string, unknown>, logger.bindings()),
    // Layer 1 already turned errors into plain objects; pino's default serializer would re-wrap
    // them (and mislabel their type), so pass them through, serializing any that arrive unscrubbed.
    serializers: { err: (value: unknown) => (value instanceof Error ? scrubValue(value) : value) },
    redact: { paths: [...REDACT_PATHS], censor: REDACTED },
    hooks: {
      logMethod(args, method) {
        const scrubbed: unknown[] = args.map((arg, i) => (typeof arg === 'string' ? scrubText(arg) : i === 0 ? arg : scrubValue(arg)));
        const [first] = scrubbed;
        // pino falls back to err.message for the line's message; supply it scrubbed instead.
        if (scrubbed.length === 1 && typeof first === 'object' && first !== null) {
          const err = first instanceof Error ? first : (first as { err?: unknown }).err;
          if (err instanceof Error && (first as { message?: unknown }).message === undefined) scrubbed.push(scrubText(err.message));
        }
        (method as (...a: unknown[]) => void).apply(this, scrubbed);
      },
      streamWrite: (line) => scrubPatterns(line),
    },
  };
  if (base !== undefined) ours.base = base;
  // No project id for trace links and no detection of the service: both would ask the metadata
  // server, which is not there off Google Cloud; the one-off diagnostic line is noise.
  const options = createGcpLoggingPinoConfig(
    { serviceContext: service ?? { service: 'wafleet-reconciler', version: 'dev' }, traceGoogleCloudProjectId: '', inihibitDiagnosticMessage: true },
    ours as never,
  ) as unknown as LoggerOptions;
  options.formatters = { ...options.formatters, level: (label) => ({ level: label, severity: SEVERITY[label] ?? 'DEFAULT' }) };
  // RFC 3339, which Cloud Logging reads from `time` as it reads its {seconds, nanos} `timestamp`.
  options.timestamp = stdTimeFunctions.isoTime;
  return destination ? pino(options, destination) : pino(options);
}

function labelsOf(object: Record<string, unknown>, bindings: Record<string, unknown>): Record<string, unknown> {
  const labels: Record<string, string> = {};
  for (const field of LABEL_FIELDS) {
    const value = object[field] ?? bindings[field];
    if (typeof value === 'string' && value.length > 0) labels[field] = value;
  }
  return Object.keys(labels).length > 0 ? { [LABELS_KEY]: labels } : {};
}

const LEVEL_ORDER: readonly string[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/**
 * A child logger to pass as Baileys' `logger` option. Baileys is chatty (every frame at debug,
 * much at info), so it defaults to `warn`, or the parent's level if that is stricter. Everything
 * it logs goes through the same scrubbing as our own lines.
 */
export function baileysLogger(parent: Logger, accountId: string, options: { level?: Level | 'silent' } = {}): Logger {
  const fallback = LEVEL_ORDER.indexOf(parent.level) > LEVEL_ORDER.indexOf('warn') ? parent.level : 'warn';
  return parent.child({ component: 'baileys', accountId }, { level: options.level ?? fallback });
}

const CONSOLE_LEVELS = { trace: 'trace', debug: 'debug', log: 'debug', info: 'debug', warn: 'warn', error: 'error' } as const;
type ConsoleMethod = keyof typeof CONSOLE_LEVELS;

/**
 * Sends everything written through `console` to the logger instead of raw stdout, and returns a
 * function that restores the console. libsignal (under Baileys) prints every Signal session it
 * opens or closes with `console.info("Closing session:", session)`, which is the session's root
 * and chain keys and the private ephemeral key, on every line, in plain text, bypassing pino.
 *
 * Only the string arguments are kept (scrubbed like any message); objects become their type name,
 * so no console call can leak what it passes along. libsignal's info chatter goes to debug.
 */
export function routeConsoleToLogger(log: Logger): () => void {
  const target = log.child({ component: 'console' });
  const saved = new Map<ConsoleMethod, (...args: unknown[]) => void>();
  for (const method of Object.keys(CONSOLE_LEVELS) as ConsoleMethod[]) {
    saved.set(method, console[method]);
    const level = CONSOLE_LEVELS[method];
    console[method] = (...args: unknown[]) => {
      if (!target.isLevelEnabled(level)) return;
      const text = args.map((a) => (typeof a === 'string' ? a : typeof a === 'object' && a !== null ? `[${a.constructor?.name ?? 'object'}]` : String(a))).join(' ');
      target[level](text);
    };
  }
  return () => {
    for (const [method, fn] of saved) console[method] = fn;
  };
}
