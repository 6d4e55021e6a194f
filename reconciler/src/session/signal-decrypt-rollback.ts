/**
 * Makes a failed attempt to decrypt a Signal `msg` leave the session it was tried on untouched.
 *
 * libsignal 6.0.0 (src/session_cipher.js), which Baileys' Signal/libsignal.js calls through
 * `SessionCipher.decryptWhisperMessage` for every `msg`, tries each session of the peer's record
 * in `decryptWithSessions`, most recently used first. `doDecryptWhisperMessage` edits the session
 * it is given before it knows the message is for it: `maybeStepRatchet` closes the receiving
 * chain and replaces the root key and our ratchet key pair, `fillMessageKeys` advances the chain,
 * the message key is deleted, and only then does `verifyMAC` throw "Bad MAC". Nothing undoes
 * that, and when a later session of the record decrypts the message, `decryptWhisperMessage`
 * stores the whole record (`storeRecord`), the wrecked session included. With two sessions for
 * one peer (after a retry receipt or a session rebuild: "crossed sessions"), a message on one
 * session thus destroys the other, and every later message on it fails with "Bad MAC" for good:
 * issue 16, an inbound message lost in a soak.
 *
 * The other paths store nothing after a failed attempt: when every session fails,
 * `decryptWithSessions` throws before `storeRecord`, and `decryptPreKeyWhisperMessage` throws out
 * of its single `doDecryptWhisperMessage` before storing; Baileys deserializes a fresh record on
 * every `loadSession`, so what those attempts edited is dropped. Only `decryptWithSessions` needs
 * the copy below.
 *
 * The patch replaces `SessionCipher.prototype.decryptWithSessions` with the same loop run on a
 * copy of each session (libsignal's own `SessionEntry` serialize/deserialize, the format the
 * record is stored in anyway), and writes the copy into the record's entry only when it
 * decrypted. Errors, their order, the console report and the session order stay libsignal's.
 * It is written against 6.0.0's source, so it applies to that exact version only.
 */
import { createRequire } from 'node:module';

/** The libsignal release whose session_cipher.js the patch reproduces. */
export const VERIFIED_LIBSIGNAL_VERSION = '6.0.0';

export interface SignalDecryptRollbackStatus {
  installed: boolean;
  /** Why it was not installed. */
  reason?: string;
}

/** A session entry, as far as the patch touches it (src/session_record.js, SessionEntry). */
interface SessionEntryLike {
  serialize(): unknown;
  indexInfo: { used?: number };
}

interface SessionEntryClass {
  deserialize(data: unknown): SessionEntryLike;
}

interface CipherLike {
  doDecryptWhisperMessage(data: Buffer, session: SessionEntryLike): Promise<Buffer>;
}

/** What the patch needs of one loaded copy of libsignal. */
export interface LibsignalModule {
  /** `libsignal/package.json`'s version. */
  version: unknown;
  /** The class whose prototype is patched (Baileys' `libsignal.SessionCipher`, or a subclass in tests). */
  SessionCipher: { prototype: object };
  SessionRecord: { createEntry?: () => unknown };
  SessionError: new (message: string) => Error;
}

/** Marks a prototype already patched, across copies of this module (one process, one patch). */
const PATCHED = Symbol.for('wafleet.signal-decrypt-rollback');

/**
 * The libsignal Baileys itself loads: resolved from Baileys' package directory, so the patched
 * class is the one its signal repository instantiates. libsignal stays out of the esbuild bundle
 * (it is loaded at run time from node_modules, as Baileys loads it).
 */
export function loadBaileysLibsignal(): LibsignalModule {
  const fromHere = createRequire(import.meta.url);
  const fromBaileys = createRequire(fromHere.resolve('@whiskeysockets/baileys/package.json'));
  const lib = fromBaileys('libsignal') as Omit<LibsignalModule, 'version'>;
  const pkg = fromBaileys('libsignal/package.json') as { version?: unknown };
  return { version: pkg.version, SessionCipher: lib.SessionCipher, SessionRecord: lib.SessionRecord, SessionError: lib.SessionError };
}

/** Whether `cipherClass`'s own prototype carries the patch. */
export function isSignalDecryptRollbackInstalled(cipherClass: { prototype: object }): boolean {
  return Object.hasOwn(cipherClass.prototype, PATCHED);
}

/**
 * Installs the patch on `lib.SessionCipher.prototype` (by default Baileys' libsignal), once.
 * Never throws: a libsignal it was not verified against, or one it cannot find, leaves libsignal
 * as it is and says why, for the caller to log.
 */
export function installSignalDecryptRollback(lib?: LibsignalModule): SignalDecryptRollbackStatus {
  let target: LibsignalModule;
  try {
    target = lib ?? loadBaileysLibsignal();
  } catch (err) {
    return { installed: false, reason: `libsignal not found: ${err instanceof Error ? err.message : typeof err}` };
  }
  if (target.version !== VERIFIED_LIBSIGNAL_VERSION) {
    const found = typeof target.version === 'string' ? target.version : typeof target.version;
    return { installed: false, reason: `libsignal ${found} is not the verified ${VERIFIED_LIBSIGNAL_VERSION}` };
  }
  const proto = target.SessionCipher?.prototype as Record<string | symbol, unknown> | undefined;
  if (!proto) return { installed: false, reason: 'libsignal has no SessionCipher' };
  if (Object.hasOwn(proto, PATCHED)) return { installed: true };
  for (const method of ['decryptWithSessions', 'doDecryptWhisperMessage', 'decryptWhisperMessage'] as const) {
    if (typeof proto[method] !== 'function') return { installed: false, reason: `libsignal SessionCipher has no ${method}` };
  }
  if (typeof target.SessionError !== 'function') return { installed: false, reason: 'libsignal has no SessionError' };
  const probe = typeof target.SessionRecord?.createEntry === 'function' ? target.SessionRecord.createEntry() : undefined;
  if (!hasEntryShape(probe)) return { installed: false, reason: 'libsignal SessionEntry cannot be serialized and restored' };

  const SessionError = target.SessionError;
  // Same loop as libsignal's decryptWithSessions, on copies.
  proto.decryptWithSessions = async function decryptWithSessions(this: CipherLike, data: Buffer, sessions: SessionEntryLike[]) {
    if (!sessions.length) throw new SessionError('No sessions available');
    const errs: unknown[] = [];
    for (const session of sessions) {
      let trial: SessionEntryLike;
      let plaintext: Buffer;
      try {
        // Inside the try: libsignal reports a session it cannot read like any failed attempt.
        trial = copyEntry(session);
        plaintext = await this.doDecryptWhisperMessage(data, trial);
      } catch (e) {
        errs.push(e);
        continue;
      }
      trial.indexInfo.used = Date.now();
      // Into the object the record holds, so the caller's storeRecord saves it; own fields only
      // (the attempt may have deleted pendingPreKey).
      for (const key of Object.keys(session)) delete (session as unknown as Record<string, unknown>)[key];
      Object.assign(session, trial);
      return { session, plaintext };
    }
    // libsignal's console report, line for line (the soak and tests read "Session error:...").
    console.error('Failed to decrypt message with any known session...');
    for (const e of errs) console.error(`Session error:${describe(e)}`, e instanceof Error ? e.stack : undefined);
    throw new SessionError('No matching sessions found for message');
  };
  Object.defineProperty(proto, PATCHED, { value: true });
  return { installed: true };
}

function hasEntryShape(entry: unknown): entry is SessionEntryLike {
  if (typeof entry !== 'object' || entry === null) return false;
  const cls = (entry as { constructor?: Partial<SessionEntryClass> }).constructor;
  return typeof (entry as Partial<SessionEntryLike>).serialize === 'function' && typeof cls?.deserialize === 'function';
}

/** A deep copy through the entry's own storage format (Buffers stay Buffers). */
function copyEntry(session: SessionEntryLike): SessionEntryLike {
  const cls = (session as unknown as { constructor: SessionEntryClass }).constructor;
  return cls.deserialize(session.serialize());
}

/** What `"" + e` gives for an Error ("Error: Bad MAC"), without stringifying anything else. */
function describe(e: unknown): string {
  if (!(e instanceof Error)) return typeof e;
  return e.message ? `${e.name}: ${e.message}` : e.name;
}
