import { Curve, initAuthCreds } from '@whiskeysockets/baileys';
import { SessionRecord } from 'libsignal';
import { describe, expect, it } from 'vitest';
import { baileysLogger, createLogger, routeConsoleToLogger, scrubText, scrubValue } from '../src/log.ts';
import { LineCollector } from './helpers.ts';

const PHONE = '15550001001';
const OTHER_PHONE = '447700900123';
const LID = '123456789012345';

function capture(level: 'trace' | 'info' = 'trace') {
  const out = new LineCollector();
  return { out, log: createLogger({ level, destination: out }) };
}

/** Every textual form a key could leak in: base64, hex, and JSON's number-array form of a Buffer. */
function leakForms(bytes: Uint8Array): string[] {
  const b = Buffer.from(bytes);
  return [b.toString('base64'), b.toString('base64').slice(0, 16), b.toString('hex'), `${b[0]},${b[1]},${b[2]},${b[3]}`];
}

describe('log scrubbing', () => {
  it('keeps phone numbers, JIDs and key material out of realistic log lines', () => {
    const { out, log } = capture();
    const creds = initAuthCreds();
    const identity = Curve.generateKeyPair();
    const secrets: Uint8Array[] = [creds.noiseKey.private, creds.noiseKey.public, creds.signedIdentityKey.private, creds.signedPreKey.keyPair.private, creds.signedPreKey.signature, identity.private, Buffer.from(creds.advSecretKey, 'base64')];

    log.info({ creds }, 'loaded credentials');
    log.info({ account: { creds, id: 'wa-01' } }, 'nested creds');
    log.info({ state: { deep: { deeper: { signedIdentityKey: creds.signedIdentityKey, other: identity } } } }, 'very nested');
    log.debug({ keyPair: { public: identity.public, private: identity.private } }, 'raw key pair');
    log.debug({ node: { tag: 'message', attrs: { to: `${PHONE}@s.whatsapp.net`, participant: `${OTHER_PHONE}:3@s.whatsapp.net` }, content: [{ tag: 'enc', content: Buffer.from(identity.private) }] } }, 'sending node');
    log.warn(new Error(`failed to send to ${PHONE}:12@s.whatsapp.net (lid ${LID}@lid)`));
    log.error({ err: Object.assign(new Error(`decrypt failed for ${PHONE}@s.whatsapp.net`), { data: { key: identity.private, jid: `${OTHER_PHONE}@s.whatsapp.net` }, isBoom: true }) }, 'Bad MAC');
    log.error({ err: new Error('outer', { cause: new Error(`inner ${PHONE}@c.us`) }) }, 'wrapped');
    log.info(`incoming call from +${OTHER_PHONE} and +1 555 000 1001`);
    log.info('noise key %s for %s', Buffer.from(creds.noiseKey.private).toString('base64'), `${PHONE}@s.whatsapp.net`);
    log.info({ key: Buffer.from(creds.noiseKey.private).toString('hex') }, 'hex key in a string field');
    log.info({ phoneNumber: PHONE, pn: OTHER_PHONE, remoteJid: `${LID}@lid` }, 'bare numbers under phone-ish keys');
    log.info({ qr: `2@abc,${Buffer.from(creds.noiseKey.public).toString('base64')},x`, pairingCode: 'ABCD1234', text: `call me on +${PHONE}` }, 'link material');
    log.info({ group: `${PHONE}-1600000000@g.us` }, 'legacy group id');
    log.child({ jid: `${PHONE}@s.whatsapp.net`, accountId: 'wa-01' }).info('child bindings');
    log.info({ trace: new Error(`at ${PHONE}@s.whatsapp.net`).stack }, 'baileys-style stack string');
    log.info({ map: new Map([['k', Buffer.from(identity.private)]]), set: new Set([`${PHONE}@s.whatsapp.net`]) }, 'collections');

    const text = out.text;
    expect(out.lines()).toHaveLength(17); // every line is JSON, nothing was dropped
    for (const needle of [PHONE, OTHER_PHONE, LID, '5550001001', '555 000 1001', 'ABCD1234']) expect(text).not.toContain(needle);
    expect(text).not.toMatch(/[0-9]{5,}(:[0-9]+)?@(s\.whatsapp\.net|lid|c\.us|g\.us)/);
    for (const secret of secrets) for (const form of leakForms(secret)) expect(text).not.toContain(form);
    // Masking keeps enough to tell accounts apart.
    expect(text).toContain('1555•••••01:12@s.whatsapp.net');
    expect(text).toContain('+4477••••••23');
    expect(text).toContain('"accountId":"wa-01"');
    expect(text).toContain('[binary 32 bytes]');
    expect(text).toContain('Bad MAC');
  });

  it('masks what LID addressing logs: alternates, bare LID users and Baileys’ mapping tables', () => {
    const { out, log } = capture();
    // As Baileys 7 logs them (decode-wa-message.js, lid-mapping.js, process-message.js).
    log.debug({ sender: `${PHONE}@s.whatsapp.net`, senderAlt: `${LID}@lid` }, 'Stored LID mapping from envelope');
    log.trace({ pairMap: { [PHONE]: LID } }, 'Storing 1 pn mappings');
    log.debug({ 'lid-mapping': { [PHONE]: LID, [`${LID}_reverse`]: PHONE } }, 'key write');
    log.debug({ pnToLidMappings: [{ pn: PHONE, latestLid: LID, assignedLid: LID }] }, 'got lid mappings');
    log.debug({ lids: [LID], pnUser: PHONE, lidUser: LID, sender_pn: `${PHONE}@s.whatsapp.net` }, 'misc');
    const text = out.text;
    expect(out.lines()).toHaveLength(5);
    for (const needle of [PHONE, LID, '5550001001', '3456789012']) expect(text).not.toContain(needle);
  });

  it('derives a scrubbed message from an error and keeps pino’s error shape', () => {
    const { out, log } = capture();
    log.error(new TypeError(`no session for ${PHONE}@s.whatsapp.net`));
    const [line] = out.lines();
    expect(line?.message).toBe('no session for 1555•••••01@s.whatsapp.net');
    expect(line?.err).toMatchObject({ type: 'TypeError', message: 'no session for 1555•••••01@s.whatsapp.net' });
    expect(String((line?.err as { stack: string }).stack)).toContain('log.test.ts');
    expect(line).toMatchObject({ level: 'error', severity: 'ERROR' });
  });

  it('does not mutate the objects it logs', () => {
    const { log } = capture();
    const creds = initAuthCreds();
    const payload = { creds, to: `${PHONE}@s.whatsapp.net` };
    log.info(payload, 'x');
    expect(payload.creds).toBe(creds);
    expect(Buffer.isBuffer(creds.noiseKey.private)).toBe(true);
    expect(payload.to).toBe(`${PHONE}@s.whatsapp.net`);
  });

  it('survives circular structures and very deep objects', () => {
    const { out, log } = capture();
    const a: Record<string, unknown> = { name: 'a' };
    a.self = a;
    let deep: Record<string, unknown> = { leaf: `${PHONE}@s.whatsapp.net` };
    for (let i = 0; i < 50; i++) deep = { next: deep };
    log.info({ a, deep }, 'odd shapes');
    const text = out.text;
    expect(text).toContain('[circular]');
    expect(text).toContain('[depth limit]');
    expect(text).not.toContain(PHONE);
  });

  it('scrubText leaves ordinary text alone', () => {
    for (const ok of [
      'connected wa-01 in 1532 ms',
      'reconciler-7f9c2e1d-0a4b-4c1e-9f3a-2b7c8d9e0f1a',
      '/app/node_modules/@whiskeysockets/baileys/lib/Socket/socket.js:123:45',
      'epoch 1732000000123 lease renewed',
      'message id 3EB0C767D0D2A4B1F0E9',
    ]) {
      expect(scrubText(ok)).toBe(ok);
    }
    expect(scrubText(`x ${'Ab1'.repeat(20)} y`)).toBe('x [redacted] y');
  });

  it('scrubValue redacts secret-named fields at any depth', () => {
    expect(scrubValue({ a: { b: { clientSecret: 's', idToken: 't', Authorization: 'Bearer x', keep: 1 } } })).toEqual({
      a: { b: { clientSecret: '[redacted]', idToken: '[redacted]', Authorization: '[redacted]', keep: 1 } },
    });
  });
});

describe('baileysLogger', () => {
  it('defaults Baileys to warn, tags lines with the account, and scrubs them', () => {
    const { out, log } = capture('info');
    const baileys = baileysLogger(log, 'wa-07');
    expect(baileys.level).toBe('warn');
    baileys.info({ jid: `${PHONE}@s.whatsapp.net` }, 'chatty frame log');
    baileys.debug('noise');
    const child = baileys.child({ class: 'baileys' });
    child.warn({ recv: { tag: 'iq', attrs: { from: `${PHONE}@s.whatsapp.net` } }, key: Curve.generateKeyPair() }, `stream errored for ${PHONE}@s.whatsapp.net`);
    const lines = out.lines();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ component: 'baileys', accountId: 'wa-07', class: 'baileys', level: 'warn', message: 'stream errored for 1555•••••01@s.whatsapp.net' });
    expect(out.text).not.toContain(PHONE);
  });

  it('follows a stricter parent level and accepts an explicit one', () => {
    const { log } = capture('info');
    log.level = 'error';
    expect(baileysLogger(log, 'wa-01').level).toBe('error');
    expect(baileysLogger(log, 'wa-01', { level: 'debug' }).level).toBe('debug');
    // Has the surface Baileys calls (ILogger): level, child and the level methods.
    const b = baileysLogger(log, 'wa-01');
    for (const m of ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'child'] as const) expect(typeof b[m]).toBe('function');
  });
});

// libsignal's typings leave out the session-entry calls its own code (and Baileys) makes.
const Signal = SessionRecord as unknown as { new (): { setSession(e: object): void; closeSession(e: object): void }; createEntry(): object };

describe('routeConsoleToLogger', () => {
  // The leak this closes: libsignal prints every Signal session it closes, keys and all, with
  // console.info, straight to stdout. Seen in CI output from real sessions.
  it('keeps libsignal’s "Closing session" keys out of stdout and out of the log', () => {
    const raw: unknown[][] = [];
    const methods = ['log', 'info', 'warn', 'error', 'debug', 'trace'] as const;
    const original = methods.map((m) => console[m]);
    // Stands in for the terminal: whatever still reaches the console itself is recorded here.
    for (const m of methods) console[m] = (...args: unknown[]) => void raw.push(args);
    try {
      const { out, log } = capture('trace');
      const restore = routeConsoleToLogger(log);
      const privKey = Curve.generateKeyPair().private;
      const rootKey = Buffer.from(Curve.generateKeyPair().private);
      const record = new Signal();
      const entry = Signal.createEntry();
      Object.assign(entry, {
        registrationId: 42,
        currentRatchet: { ephemeralKeyPair: { pubKey: Buffer.alloc(33, 5), privKey: Buffer.from(privKey) }, lastRemoteEphemeralKey: Buffer.alloc(33, 7), previousCounter: 0, rootKey },
        indexInfo: { baseKey: Buffer.alloc(33, 9), baseKeyType: 1, closed: -1, used: Date.now(), created: Date.now(), remoteIdentityKey: Buffer.alloc(33, 3) },
      });
      record.setSession(entry);
      record.closeSession(entry);
      console.warn('Session error: for', `${PHONE}@s.whatsapp.net`, { privKey });
      restore();

      expect(raw).toEqual([]);
      const lines = out.lines();
      expect(lines.map((l) => [l.level, l.component, l.message])).toEqual([
        ['debug', 'console', 'Closing session: [SessionEntry]'],
        ['warn', 'console', 'Session error: for 1555•••••01@s.whatsapp.net [Object]'],
      ]);
      for (const secret of [privKey, rootKey]) for (const form of leakForms(secret)) expect(out.text).not.toContain(form);
      // Restored: the console is what it was before.
      console.info('after restore');
      expect(raw).toEqual([['after restore']]);
    } finally {
      methods.forEach((m, i) => (console[m] = original[i]!));
    }
  });

  it('drops console lines below the logger’s level', () => {
    const { out, log } = capture('info');
    const restore = routeConsoleToLogger(log);
    try {
      console.info('libsignal chatter');
      console.error('a real problem');
    } finally {
      restore();
    }
    expect(out.lines().map((l) => l.message)).toEqual(['a real problem']);
  });
});
