import { generateSignalPubKey, signedKeyPair } from '@whiskeysockets/baileys';
import { ProtocolAddress, SessionBuilder, SessionCipher, SessionRecord, type SignalStorage } from 'libsignal';
import { generateRegistrationId } from './ids.ts';
import { b64, fromB64, type KeyPair, keyPairFromJSON, keyPairToJSON, newKeyPair } from './keys.ts';

/** What a server hands out for one device in an `iq encrypt get <key>` reply. */
export interface PreKeyBundle {
  registrationId: number;
  identityKey: Uint8Array;
  signedPreKey: { keyId: number; publicKey: Uint8Array; signature: Uint8Array };
  preKey?: { keyId: number; publicKey: Uint8Array };
}

export interface SignalPartyJSON {
  registrationId: number;
  identity: { public: string; private: string };
  signedPreKey: { keyId: number; keyPair: { public: string; private: string }; signature: string };
  preKeys: Array<{ keyId: number; keyPair: { public: string; private: string }; handedOut: boolean }>;
  nextPreKeyId: number;
  sessions: Record<string, unknown>;
}

const PRE_KEY_BATCH = 20;

/**
 * The Signal identity of a simulated primary device (a phone's device 0): its keys, the one-time
 * pre-keys the server hands out on its behalf, and its sessions with other devices. Addresses are
 * libsignal "name.device" strings; the simulator uses the sender's phone number as the name.
 */
export class SignalParty {
  readonly registrationId: number;
  readonly identity: KeyPair;
  readonly signedPreKey: { keyId: number; keyPair: KeyPair; signature: Uint8Array };
  private readonly preKeys = new Map<number, { keyPair: KeyPair; handedOut: boolean }>();
  private nextPreKeyId: number;
  private readonly sessions = new Map<string, SessionRecord>();
  private readonly storage: SignalStorage;
  /** Called after any change that must reach the state file. */
  onChange: () => void = () => {};

  private constructor(json?: SignalPartyJSON) {
    if (json) {
      this.registrationId = json.registrationId;
      this.identity = keyPairFromJSON(json.identity);
      this.signedPreKey = {
        keyId: json.signedPreKey.keyId,
        keyPair: keyPairFromJSON(json.signedPreKey.keyPair),
        signature: fromB64(json.signedPreKey.signature),
      };
      for (const p of json.preKeys) this.preKeys.set(p.keyId, { keyPair: keyPairFromJSON(p.keyPair), handedOut: p.handedOut });
      this.nextPreKeyId = json.nextPreKeyId;
      for (const [addr, rec] of Object.entries(json.sessions)) this.sessions.set(addr, SessionRecord.deserialize(rec as never));
    } else {
      this.registrationId = generateRegistrationId();
      this.identity = newKeyPair();
      const spk = signedKeyPair({ public: Buffer.from(this.identity.public), private: Buffer.from(this.identity.private) }, 1);
      this.signedPreKey = {
        keyId: spk.keyId,
        keyPair: { public: new Uint8Array(spk.keyPair.public), private: new Uint8Array(spk.keyPair.private) },
        signature: new Uint8Array(spk.signature),
      };
      this.nextPreKeyId = 1;
    }
    this.storage = this.makeStorage();
  }

  static create(): SignalParty {
    return new SignalParty();
  }

  static fromJSON(json: SignalPartyJSON): SignalParty {
    return new SignalParty(json);
  }

  toJSON(): SignalPartyJSON {
    return {
      registrationId: this.registrationId,
      identity: keyPairToJSON(this.identity),
      signedPreKey: {
        keyId: this.signedPreKey.keyId,
        keyPair: keyPairToJSON(this.signedPreKey.keyPair),
        signature: b64(this.signedPreKey.signature),
      },
      preKeys: [...this.preKeys].map(([keyId, p]) => ({ keyId, keyPair: keyPairToJSON(p.keyPair), handedOut: p.handedOut })),
      nextPreKeyId: this.nextPreKeyId,
      sessions: Object.fromEntries([...this.sessions].map(([addr, rec]) => [addr, rec.serialize() as unknown])),
    };
  }

  /** A bundle with a fresh one-time pre-key; each pre-key is handed out once, as the server does. */
  takeBundle(): PreKeyBundle {
    let entry = [...this.preKeys].find(([, p]) => !p.handedOut);
    if (!entry) {
      for (let i = 0; i < PRE_KEY_BATCH; i++) this.preKeys.set(this.nextPreKeyId++, { keyPair: newKeyPair(), handedOut: false });
      entry = [...this.preKeys].find(([, p]) => !p.handedOut)!;
    }
    const [keyId, preKey] = entry;
    preKey.handedOut = true;
    this.onChange();
    return {
      registrationId: this.registrationId,
      identityKey: this.identity.public,
      signedPreKey: {
        keyId: this.signedPreKey.keyId,
        publicKey: this.signedPreKey.keyPair.public,
        signature: this.signedPreKey.signature,
      },
      preKey: { keyId, publicKey: preKey.keyPair.public },
    };
  }

  hasSession(address: string): boolean {
    return this.sessions.get(address)?.haveOpenSession() ?? false;
  }

  /** The registration id the open session with `address` was built for (undefined without one). */
  remoteRegistrationId(address: string): number | undefined {
    const open = openSessionOf(this.sessions.get(address));
    return typeof open?.registrationId === 'number' ? open.registrationId : undefined;
  }

  /** Whether the open session with `address` still sends pre-key messages (the other side never answered on it). */
  sendsPreKeyMessages(address: string): boolean {
    return !!openSessionOf(this.sessions.get(address))?.pendingPreKey;
  }

  /**
   * Fault for tests: replaces the open session with `address` by one the other device never had
   * (built from a signed pre-key it never owned) and marks it as answered, so the next messages go
   * out as plain `msg` and fail there with "Bad MAC" on every session it keeps for this sender. This
   * is what a device sees after it lost Signal state its sender still relies on.
   */
  async desynchronise(address: string): Promise<void> {
    const open = openSessionOf(this.sessions.get(address));
    if (!open?.indexInfo?.remoteIdentityKey || typeof open.registrationId !== 'number') throw new Error(`no open session with ${address}`);
    const forged = newKeyPair();
    await this.initOutgoing(address, {
      registrationId: open.registrationId,
      // Stored with libsignal's 0x05 type prefix; initOutgoing adds it back.
      identityKey: new Uint8Array(open.indexInfo.remoteIdentityKey).subarray(open.indexInfo.remoteIdentityKey.byteLength === 33 ? 1 : 0),
      // Never sent (no pre-key header below); libsignal's initOutgoing checks only the signature's length.
      signedPreKey: { keyId: 1, publicKey: forged.public, signature: new Uint8Array(64) },
    });
    const record = this.sessions.get(address)!;
    delete openSessionOf(record)!.pendingPreKey;
    await this.storage.storeSession(address, record);
  }

  /** Starts an outgoing session from another device's bundle (the sender's side of X3DH). */
  async initOutgoing(address: string, bundle: PreKeyBundle): Promise<void> {
    const builder = new SessionBuilder(this.storage, toAddress(address));
    await builder.initOutgoing({
      registrationId: bundle.registrationId,
      identityKey: generateSignalPubKey(bundle.identityKey),
      signedPreKey: {
        keyId: bundle.signedPreKey.keyId,
        publicKey: generateSignalPubKey(bundle.signedPreKey.publicKey),
        signature: bundle.signedPreKey.signature,
      },
      // libsignal accepts a bundle without a one-time pre-key; its typings say otherwise.
      preKey: bundle.preKey
        ? { keyId: bundle.preKey.keyId, publicKey: generateSignalPubKey(bundle.preKey.publicKey) }
        : (undefined as never),
    });
  }

  async encrypt(address: string, plaintext: Uint8Array): Promise<{ type: 'pkmsg' | 'msg'; ciphertext: Uint8Array }> {
    const cipher = new SessionCipher(this.storage, toAddress(address));
    const { type, body } = await cipher.encrypt(plaintext);
    return { type: type === 3 ? 'pkmsg' : 'msg', ciphertext: new Uint8Array(Buffer.from(body, 'binary')) };
  }

  async decrypt(address: string, type: string, ciphertext: Uint8Array): Promise<Uint8Array> {
    const cipher = new SessionCipher(this.storage, toAddress(address));
    if (type === 'pkmsg') return new Uint8Array(await cipher.decryptPreKeyWhisperMessage(ciphertext));
    if (type === 'msg') return new Uint8Array(await cipher.decryptWhisperMessage(ciphertext));
    throw new Error(`unsupported enc type ${type}`);
  }

  private makeStorage(): SignalStorage {
    return {
      loadSession: async (id) => this.sessions.get(id),
      storeSession: async (id, record) => {
        this.sessions.set(id, record);
        this.onChange();
      },
      // Trust on first use, as WhatsApp clients do.
      isTrustedIdentity: () => true,
      loadPreKey: async (id) => {
        const p = this.preKeys.get(Number(id));
        return p ? { privKey: Buffer.from(p.keyPair.private), pubKey: Buffer.from(p.keyPair.public) } : undefined;
      },
      removePreKey: (id) => {
        this.preKeys.delete(Number(id));
        this.onChange();
      },
      loadSignedPreKey: () => ({
        privKey: Buffer.from(this.signedPreKey.keyPair.private),
        pubKey: Buffer.from(this.signedPreKey.keyPair.public),
      }),
      getOurRegistrationId: () => this.registrationId,
      getOurIdentity: () => ({
        privKey: Buffer.from(this.identity.private),
        pubKey: Buffer.from(generateSignalPubKey(this.identity.public)),
      }),
    };
  }
}

/** The parts of libsignal's SessionEntry its typings leave out. */
interface OpenSession {
  registrationId?: number;
  pendingPreKey?: unknown;
  indexInfo?: { remoteIdentityKey?: Uint8Array };
}

function openSessionOf(record: SessionRecord | undefined): OpenSession | undefined {
  return (record as unknown as { getOpenSession(): OpenSession | undefined } | undefined)?.getOpenSession();
}

function toAddress(address: string): ProtocolAddress {
  const dot = address.lastIndexOf('.');
  return new ProtocolAddress(address.slice(0, dot), Number(address.slice(dot + 1)));
}
