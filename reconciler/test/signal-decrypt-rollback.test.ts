/**
 * Issue 16 with real libsignal: a message on one of two sessions a peer has with us must not wreck
 * the other. The patch is process-global on Baileys' SessionCipher, so every case here patches
 * (or leaves unpatched) a subclass of its own; the class Baileys uses is only patched by the last
 * block, through decrypt-commit.ts, as the reconciler does.
 */
import { createRequire } from 'node:module';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  installSignalDecryptRollback,
  isSignalDecryptRollbackInstalled,
  type LibsignalModule,
  loadBaileysLibsignal,
  VERIFIED_LIBSIGNAL_VERSION,
} from '../src/session/signal-decrypt-rollback.ts';

interface KeyPair {
  pubKey: Buffer;
  privKey: Buffer;
}
interface Entry {
  indexInfo: { baseKey: Buffer; used: number; closed: number };
  serialize(): unknown;
}
interface Record_ {
  getSessions(): Entry[];
  serialize(): unknown;
}
interface Cipher {
  encrypt(data: Buffer): Promise<{ type: number; body: string }>;
  decryptWhisperMessage(data: Buffer): Promise<Buffer>;
  decryptPreKeyWhisperMessage(data: Buffer): Promise<Buffer>;
}
type CipherClass = new (storage: unknown, address: unknown) => Cipher;
interface Libsignal {
  keyhelper: {
    generateIdentityKeyPair(): KeyPair;
    generateRegistrationId(): number;
    generateSignedPreKey(identity: KeyPair, keyId: number): { keyId: number; keyPair: KeyPair; signature: Buffer };
    generatePreKey(keyId: number): { keyId: number; keyPair: KeyPair };
  };
  ProtocolAddress: new (name: string, device: number) => unknown;
  SessionBuilder: new (storage: unknown, address: unknown) => { initOutgoing(bundle: unknown): Promise<void> };
  SessionCipher: CipherClass;
  SessionRecord: { new (): Record_; deserialize(data: unknown): Record_; createEntry(): unknown };
  SessionError: new (message: string) => Error;
}

const libsignal = createRequire(import.meta.url)('libsignal') as Libsignal;
const libsignalVersion = (createRequire(import.meta.url)('libsignal/package.json') as { version: string }).version;

function moduleWith(SessionCipher: { prototype: object }, version: unknown = libsignalVersion): LibsignalModule {
  return { version, SessionCipher, SessionRecord: libsignal.SessionRecord, SessionError: libsignal.SessionError };
}

/** One device's Signal state, stored as Baileys stores it: each record serialized, read back fresh. */
class Device {
  readonly identity = libsignal.keyhelper.generateIdentityKeyPair();
  readonly registrationId = libsignal.keyhelper.generateRegistrationId();
  readonly signedPreKey = libsignal.keyhelper.generateSignedPreKey(this.identity, 1);
  private readonly preKeys = new Map<number, KeyPair>();
  private nextPreKeyId = 1;
  readonly records = new Map<string, string>();
  readonly storage = {
    loadSession: async (id: string) => {
      const stored = this.records.get(id);
      return stored === undefined ? undefined : libsignal.SessionRecord.deserialize(JSON.parse(stored));
    },
    storeSession: async (id: string, record: Record_) => {
      this.records.set(id, JSON.stringify(record.serialize()));
    },
    isTrustedIdentity: () => true,
    loadPreKey: async (id: number | string) => this.preKeys.get(Number(id)),
    removePreKey: (id: number) => {
      this.preKeys.delete(id);
    },
    loadSignedPreKey: () => this.signedPreKey.keyPair,
    getOurRegistrationId: () => this.registrationId,
    getOurIdentity: () => this.identity,
  };

  constructor(readonly name: string) {}

  bundle() {
    const preKey = libsignal.keyhelper.generatePreKey(this.nextPreKeyId++);
    this.preKeys.set(preKey.keyId, preKey.keyPair);
    return {
      registrationId: this.registrationId,
      identityKey: this.identity.pubKey,
      signedPreKey: { keyId: this.signedPreKey.keyId, publicKey: this.signedPreKey.keyPair.pubKey, signature: this.signedPreKey.signature },
      preKey: { keyId: preKey.keyId, publicKey: preKey.keyPair.pubKey },
    };
  }

  address(): unknown {
    return new libsignal.ProtocolAddress(this.name, 1);
  }

  async startSession(peer: Device): Promise<void> {
    await new libsignal.SessionBuilder(this.storage, peer.address()).initOutgoing(peer.bundle());
  }

  async send(peer: Device, text: string): Promise<{ type: number; body: Buffer }> {
    const { type, body } = await new libsignal.SessionCipher(this.storage, peer.address()).encrypt(Buffer.from(text));
    return { type, body: Buffer.from(body, 'binary') };
  }

  async receive(from: Device, msg: { type: number; body: Buffer }, Cipher: CipherClass = libsignal.SessionCipher): Promise<string> {
    const cipher = new Cipher(this.storage, from.address());
    const plain = msg.type === 3 ? await cipher.decryptPreKeyWhisperMessage(msg.body) : await cipher.decryptWhisperMessage(msg.body);
    return plain.toString();
  }

  record(of: Device): Record_ {
    const stored = this.records.get(`${of.name}.1`);
    if (stored === undefined) throw new Error(`${this.name} has no record for ${of.name}`);
    return libsignal.SessionRecord.deserialize(JSON.parse(stored));
  }

  /** The serialized session of `of` whose base key is `baseKey` (as stored right now). */
  storedSession(of: Device, baseKey: Buffer): string {
    const entry = this.record(of).getSessions().find((s) => s.indexInfo.baseKey.equals(baseKey));
    if (!entry) throw new Error('no such session');
    return JSON.stringify(entry.serialize());
  }
}

/** The base key of the open session `device` uses towards `peer` (the other side stores the same one). */
function openBaseKey(device: Device, peer: Device): Buffer {
  const open = device.record(peer).getSessions().find((s) => s.indexInfo.closed === -1);
  if (!open) throw new Error('no open session');
  return open.indexInfo.baseKey;
}

/**
 * Crossed sessions, as after a session rebuild: Alice and Bob talk on session 1; Alice encrypts a
 * message on it that is delayed in transit; she then rebuilds (new pre-key bundle: session 2, on
 * which Bob answers). The late session-1 message reaches Bob after that, so his libsignal tries
 * session 2 first (most recently used), fails with Bad MAC, and decrypts it with session 1.
 * Returns the next genuine message on session 2, and what it takes to check session 2's state.
 */
async function crossedSessions(bob: Device, alice: Device, BobCipher: CipherClass) {
  await alice.startSession(bob);
  expect(await bob.receive(alice, await alice.send(bob, 'hello on 1'), BobCipher)).toBe('hello on 1');
  expect(await alice.receive(bob, await bob.send(alice, 'hi on 1'))).toBe('hi on 1');
  const late = await alice.send(bob, 'late on 1');
  expect(late.type).toBe(1);
  const session1 = openBaseKey(alice, bob);

  await alice.startSession(bob);
  const session2 = openBaseKey(alice, bob);
  expect(await bob.receive(alice, await alice.send(bob, 'rebuilt: 2'), BobCipher)).toBe('rebuilt: 2');
  expect(await alice.receive(bob, await bob.send(alice, 'ack on 2'))).toBe('ack on 2');
  // The precondition of the damage: session 2 is the one tried first.
  expect(bob.record(alice).getSessions().map((s) => s.indexInfo.baseKey.toString('base64'))).toEqual([session2, session1].map((k) => k.toString('base64')));

  const session2Before = bob.storedSession(alice, session2);
  expect(await bob.receive(alice, late, BobCipher)).toBe('late on 1');
  const next = await alice.send(bob, 'next on 2');
  expect(next.type).toBe(1);
  return { next, session2Before, session2After: bob.storedSession(alice, session2) };
}

let errors: ReturnType<typeof vi.spyOn>;
beforeEach(() => {
  // libsignal reports every session change and failed attempt on the console; expected here.
  vi.spyOn(console, 'info').mockImplementation(() => {});
  vi.spyOn(console, 'warn').mockImplementation(() => {});
  errors = vi.spyOn(console, 'error').mockImplementation(() => {});
  // Strictly increasing clock: session 2 is then always "more recently used" than session 1
  // (libsignal orders sessions by Date.now() stamps, which a fast test can otherwise tie).
  let now = Date.now();
  vi.spyOn(Date, 'now').mockImplementation(() => ++now);
});
afterEach(() => {
  vi.restoreAllMocks();
});

describe('libsignal 6.0.0 without the rollback', () => {
  it('stores the session a failed attempt wrecked, so the next message on it fails for good', async () => {
    expect(isSignalDecryptRollbackInstalled(libsignal.SessionCipher)).toBe(false);
    class Unpatched extends libsignal.SessionCipher {}
    const bob = new Device('bob');
    const alice = new Device('alice');
    const { next, session2Before, session2After } = await crossedSessions(bob, alice, Unpatched);
    expect(session2After).not.toBe(session2Before);
    await expect(bob.receive(alice, next, Unpatched)).rejects.toThrow('No matching sessions found for message');
    expect(errors.mock.calls.some((args) => typeof args[0] === 'string' && args[0].includes('Bad MAC'))).toBe(true);
  });
});

describe('with the rollback', () => {
  function patchedCipher(): CipherClass {
    class Patched extends libsignal.SessionCipher {}
    expect(installSignalDecryptRollback(moduleWith(Patched))).toEqual({ installed: true });
    expect(isSignalDecryptRollbackInstalled(Patched)).toBe(true);
    return Patched;
  }

  it('leaves the session a failed attempt was made on as it was, and the next message on it decrypts', async () => {
    const Patched = patchedCipher();
    const bob = new Device('bob');
    const alice = new Device('alice');
    const { next, session2Before, session2After } = await crossedSessions(bob, alice, Patched);
    expect(await bob.receive(alice, next, Patched)).toBe('next on 2');
    expect(session2After).toBe(session2Before);
    // And the conversation goes on both ways.
    expect(await alice.receive(bob, await bob.send(alice, 'reply on 2'))).toBe('reply on 2');
    expect(await bob.receive(alice, await alice.send(bob, 'more on 2'), Patched)).toBe('more on 2');
  });

  it('keeps libsignal errors and reports when no session decrypts, and stores nothing', async () => {
    const Patched = patchedCipher();
    const bob = new Device('bob');
    const alice = new Device('alice');
    const { next } = await crossedSessions(bob, alice, Patched);
    const stored = bob.records.get('alice.1');
    const forged = { type: next.type, body: Buffer.from(next.body) };
    forged.body[forged.body.length - 1]! ^= 0xff; // the MAC's last byte
    errors.mockClear();
    const err = await bob.receive(alice, forged, Patched).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(libsignal.SessionError);
    expect((err as Error).message).toBe('No matching sessions found for message');
    expect(bob.records.get('alice.1')).toBe(stored);
    expect(errors.mock.calls.map((args) => args[0])).toEqual([
      'Failed to decrypt message with any known session...',
      'Session error:Error: Bad MAC',
      'Session error:Error: Bad MAC',
    ]);
    // The genuine message still decrypts; delivered again, it is refused as libsignal refuses it.
    expect(await bob.receive(alice, next, Patched)).toBe('next on 2');
    errors.mockClear();
    await expect(bob.receive(alice, next, Patched)).rejects.toThrow('No matching sessions found for message');
    expect(errors.mock.calls.map((args) => args[0])).toEqual([
      'Failed to decrypt message with any known session...',
      'Session error:MessageCounterError: Key used already or never filled',
      'Session error:Error: Bad MAC',
    ]);
  });

  it('throws libsignal\'s SessionError for a record without sessions', async () => {
    const Patched = patchedCipher();
    const bob = new Device('bob');
    const alice = new Device('alice');
    await bob.storage.storeSession('alice.1', new libsignal.SessionRecord());
    const msg = { type: 1, body: Buffer.from([0x33, 0x0a, 0x00, 1, 2, 3, 4, 5, 6, 7, 8]) };
    const err = await bob.receive(alice, msg, Patched).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(libsignal.SessionError);
    expect((err as Error).message).toBe('No sessions available');
  });

  it('installs once per class', () => {
    class Patched extends libsignal.SessionCipher {}
    expect(installSignalDecryptRollback(moduleWith(Patched))).toEqual({ installed: true });
    const method = (Patched.prototype as { decryptWithSessions?: unknown }).decryptWithSessions;
    expect(installSignalDecryptRollback(moduleWith(Patched))).toEqual({ installed: true });
    expect((Patched.prototype as { decryptWithSessions?: unknown }).decryptWithSessions).toBe(method);
  });
});

describe('version guard', () => {
  it('leaves a libsignal other than the verified version alone, and says so', () => {
    class Other extends libsignal.SessionCipher {}
    const result = installSignalDecryptRollback(moduleWith(Other, '6.0.1'));
    expect(result.installed).toBe(false);
    expect(result.reason).toContain('6.0.1');
    expect(isSignalDecryptRollbackInstalled(Other)).toBe(false);
    expect(Object.hasOwn(Other.prototype, 'decryptWithSessions')).toBe(false);
    expect(installSignalDecryptRollback(moduleWith(Other, null)).installed).toBe(false);
  });

  it('leaves a SessionCipher without the methods it replaces alone', () => {
    class Reworked {
      decryptWhisperMessage() {}
      doDecryptWhisperMessage() {}
    }
    const result = installSignalDecryptRollback(moduleWith(Reworked, VERIFIED_LIBSIGNAL_VERSION));
    expect(result).toEqual({ installed: false, reason: 'libsignal SessionCipher has no decryptWithSessions' });
    expect(isSignalDecryptRollbackInstalled(Reworked)).toBe(false);
  });

  it('targets the libsignal Baileys loads, which is the verified version', () => {
    const baileys = loadBaileysLibsignal();
    expect(baileys.version).toBe(VERIFIED_LIBSIGNAL_VERSION);
    const fromBaileys = createRequire(createRequire(import.meta.url).resolve('@whiskeysockets/baileys/package.json'))('libsignal') as Libsignal;
    expect(baileys.SessionCipher).toBe(fromBaileys.SessionCipher);
  });
});

// Last: this patches the process's libsignal, as the reconciler does when it loads.
describe('decrypt-commit.ts', () => {
  it('installs the rollback on Baileys\' libsignal when loaded', async () => {
    const { signalDecryptRollback } = await import('../src/session/decrypt-commit.ts');
    expect(signalDecryptRollback).toEqual({ installed: true });
    expect(isSignalDecryptRollbackInstalled(loadBaileysLibsignal().SessionCipher)).toBe(true);
  });
});
