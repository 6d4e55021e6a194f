/**
 * Issue 11, item 3: the reconciler's lines are Cloud Logging structured entries. Real lines from
 * the real logger go through the parsing rules Cloud Logging documents for JSON written to stdout
 * by its agents (https://cloud.google.com/logging/docs/structured-logging, "Special fields in
 * structured payloads") and through Error Reporting's rules for log entries
 * (https://cloud.google.com/error-reporting/docs/formatting-error-messages).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { baileysLogger, createLogger, LABELS_KEY } from '../src/log.ts';

/** LogSeverity values (google.logging.type.LogSeverity). */
const SEVERITIES = ['DEFAULT', 'DEBUG', 'INFO', 'NOTICE', 'WARNING', 'ERROR', 'CRITICAL', 'ALERT', 'EMERGENCY'];
// RFC 3339 with a time zone, as the `time` field must be.
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$/;
// A Node.js stack as Error Reporting recognises it: "<Type>: <message>" then "    at …" frames.
const NODE_STACK = /^[A-Za-z]*Error(?: \[[A-Z_]+\])?: .*\n(?:\s+at .+(?:\n|$))+/;

interface LogEntry {
  severity: string;
  timestamp: Date;
  insertId: string | undefined;
  labels: Record<string, string>;
  /** What Logs Explorer shows as the line's summary. */
  message: string | undefined;
  jsonPayload: Record<string, unknown>;
}

/** What Cloud Logging makes of one line, or the reason it would not parse it as intended. */
function parseAsCloudLogging(line: string): LogEntry {
  const payload = JSON.parse(line) as Record<string, unknown>;
  const severity = payload.severity;
  if (typeof severity !== 'string' || !SEVERITIES.includes(severity)) throw new Error(`severity ${JSON.stringify(severity)} is not a LogSeverity`);
  const time = payload.time;
  if (typeof time !== 'string' || !RFC3339.test(time)) throw new Error(`time ${JSON.stringify(time)} is not RFC 3339`);
  const labels = payload[LABELS_KEY] ?? {};
  if (typeof labels !== 'object' || labels === null || Object.values(labels).some((v) => typeof v !== 'string')) {
    throw new Error(`${LABELS_KEY} must map strings to strings, got ${JSON.stringify(labels)}`);
  }
  const insertId = payload['logging.googleapis.com/insertId'];
  if (insertId !== undefined && typeof insertId !== 'string') throw new Error('insertId must be a string');
  const jsonPayload = { ...payload };
  // The special fields are taken out of the payload; the rest stays as jsonPayload.
  for (const key of ['severity', 'time', LABELS_KEY, 'logging.googleapis.com/insertId']) delete jsonPayload[key];
  const message = typeof payload.message === 'string' ? payload.message : undefined;
  return { severity, timestamp: new Date(time), insertId: insertId as string | undefined, labels: labels as Record<string, string>, message, jsonPayload };
}

/** Error Reporting's reading of an entry: a stack trace in `stack_trace` (or `message`), and the service. */
function errorEvent(entry: LogEntry): { stack: string; service: string } | null {
  const stack = typeof entry.jsonPayload.stack_trace === 'string' ? entry.jsonPayload.stack_trace : entry.message;
  if (!stack || !NODE_STACK.test(stack)) return null;
  const ctx = entry.jsonPayload.serviceContext as { service?: unknown } | undefined;
  return { stack, service: typeof ctx?.service === 'string' ? ctx.service : 'unknown' };
}

function capture() {
  const raw: string[] = [];
  const destination = { write: (line: string) => void raw.push(line) };
  return { destination, entries: () => raw.flatMap((chunk) => chunk.split('\n').filter(Boolean)).map(parseAsCloudLogging) };
}

describe('logs as Cloud Logging structured entries', () => {
  it('every line parses: severity, RFC 3339 time, text under message, labels for account, instance and component, ordered insertIds', () => {
    const out = capture();
    const log = createLogger({ level: 'debug', destination: out.destination, base: { instanceId: 'vm-1' }, service: { service: 'wafleet-reconciler', version: '1.2.3' } });
    const before = Date.now();
    log.info('configuration');
    log.child({ accountId: 'wa-01' }).warn({ code: 428 }, 'session closed');
    log.child({ component: 'inbound' }).debug({ accountId: 'wa-02' }, 'stored');
    baileysLogger(log, 'wa-03').error('stream errored');
    const entries = out.entries();
    expect(entries.map((e) => [e.severity, e.message])).toEqual([
      ['INFO', 'configuration'],
      ['WARNING', 'session closed'],
      ['DEBUG', 'stored'],
      ['ERROR', 'stream errored'],
    ]);
    expect(entries.map((e) => e.labels)).toEqual([
      { instanceId: 'vm-1' },
      { accountId: 'wa-01', instanceId: 'vm-1' },
      { accountId: 'wa-02', instanceId: 'vm-1', component: 'inbound' },
      { accountId: 'wa-03', instanceId: 'vm-1', component: 'baileys' },
    ]);
    for (const e of entries) {
      expect(e.timestamp.getTime()).toBeGreaterThanOrEqual(before - 1);
      expect(e.timestamp.getTime()).toBeLessThanOrEqual(Date.now() + 1);
      expect(e.jsonPayload.serviceContext).toEqual({ service: 'wafleet-reconciler', version: '1.2.3' });
    }
    // Lines within one millisecond keep their order by insertId.
    const ids = entries.map((e) => e.insertId!);
    expect(ids.every(Boolean)).toBe(true);
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
    // The text is not repeated under pino's own key.
    expect(entries.every((e) => e.jsonPayload.msg === undefined)).toBe(true);
  });

  it('errors are objects with type and stack, and Error Reporting finds the stack, scrubbed like the rest', () => {
    const out = capture();
    const log = createLogger({ level: 'info', destination: out.destination });
    const err = new TypeError('no session for 15550001234@s.whatsapp.net');
    log.warn({ accountId: 'wa-01', err }, 'reconcile pass failed; retrying');
    log.error(new RangeError('boom at +15550001234'));
    const [first, second] = out.entries();

    expect(first!.jsonPayload.err).toMatchObject({ type: 'TypeError', message: 'no session for 1555•••••34@s.whatsapp.net' });
    const event = errorEvent(first!);
    expect(event?.service).toBe('wafleet-reconciler');
    expect(event?.stack).toMatch(/^TypeError: no session for 1555•••••34@s\.whatsapp\.net\n\s+at /);
    expect(JSON.stringify(first)).not.toContain('15550001234');

    // An error as the only argument: its (scrubbed) message becomes the line's text.
    expect(second!.message).toBe('boom at +1555•••••34');
    expect(errorEvent(second!)?.stack).toMatch(/^RangeError: boom at \+1555•••••34\n/);
  });

  it('a line without an error carries no stack_trace (Error Reporting must not see warnings as crashes)', () => {
    const out = capture();
    createLogger({ level: 'info', destination: out.destination }).warn({ err: 'a plain string' }, 'something odd');
    const [entry] = out.entries();
    expect(entry!.jsonPayload.stack_trace).toBeUndefined();
    expect(errorEvent(entry!)).toBeNull();
  });

  it('no log call turns an error into a string: they are logged as objects under err', () => {
    const offenders: string[] = [];
    const scan = (dir: string) => {
      for (const entry of readdirSync(dir)) {
        const full = path.join(dir, entry);
        if (statSync(full).isDirectory()) scan(full);
        else if (full.endsWith('.ts')) {
          readFileSync(full, 'utf8').split('\n').forEach((line, i) => {
            if (/\berr(?:or)?: (?:String\(|[a-z]+ instanceof Error \?)/.test(line) && /\blog\b|\.(?:warn|error|info|debug|fatal)\(/.test(line)) offenders.push(`${path.basename(full)}:${i + 1}: ${line.trim()}`);
          });
        }
      }
    };
    scan(path.resolve(import.meta.dirname, '../src'));
    expect(offenders).toEqual([]);
  });
});
