import { createCipheriv, createDecipheriv, createHash } from 'node:crypto';
import { NOISE_MODE, NOISE_WA_HEADER, proto } from '@whiskeysockets/baileys';
import type { ServerNoiseIdentity } from './cert-chain.ts';
import { hkdf, type KeyPair, newKeyPair, sharedKey } from './keys.ts';

const TAG_LENGTH = 16;
const MAX_FRAME = 0xffffff;

function iv(counter: number): Buffer {
  const out = Buffer.alloc(12);
  out.writeUInt32BE(counter >>> 0, 8);
  return out;
}

function gcmEncrypt(plain: Uint8Array, key: Uint8Array, counter: number, aad: Uint8Array): Buffer {
  const c = createCipheriv('aes-256-gcm', key, iv(counter));
  c.setAAD(aad);
  return Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);
}

function gcmDecrypt(data: Uint8Array, key: Uint8Array, counter: number, aad: Uint8Array): Buffer {
  const d = createDecipheriv('aes-256-gcm', key, iv(counter));
  d.setAAD(aad);
  d.setAuthTag(data.subarray(data.byteLength - TAG_LENGTH));
  return Buffer.concat([d.update(data.subarray(0, data.byteLength - TAG_LENGTH)), d.final()]);
}

/** Post-handshake cipher: each direction has its own key and counter, no associated data. */
export class NoiseTransport {
  private readCounter = 0;
  private writeCounter = 0;
  constructor(
    private readonly readKey: Uint8Array,
    private readonly writeKey: Uint8Array,
  ) {}
  encrypt(plain: Uint8Array): Buffer {
    return gcmEncrypt(plain, this.writeKey, this.writeCounter++, new Uint8Array(0));
  }
  decrypt(cipher: Uint8Array): Buffer {
    return gcmDecrypt(cipher, this.readKey, this.readCounter++, new Uint8Array(0));
  }
}

export interface ClientFinishResult {
  clientStaticPublic: Uint8Array;
  payload: proto.ClientPayload;
  transport: NoiseTransport;
}

/**
 * Responder side of WhatsApp's Noise_XX_25519_AESGCM_SHA256 (mirrors Baileys' noise-handler.js):
 * the 32-byte protocol name is used unhashed as h and ck, and a single counter serves both
 * directions until the next MixKey.
 */
export class ServerHandshake {
  private hash: Buffer;
  private salt: Uint8Array;
  private key: Uint8Array;
  private counter = 0;
  private readonly ephemeral: KeyPair = newKeyPair();
  private clientEphemeral: Uint8Array | undefined;

  constructor(private readonly identity: ServerNoiseIdentity) {
    const mode = Buffer.from(NOISE_MODE);
    this.hash = mode;
    this.salt = mode;
    this.key = mode;
    this.authenticate(NOISE_WA_HEADER);
  }

  private authenticate(data: Uint8Array): void {
    this.hash = createHash('sha256').update(this.hash).update(data).digest();
  }

  private mixIntoKey(ikm: Uint8Array): void {
    const out = hkdf(ikm, 64, this.salt);
    this.salt = out.subarray(0, 32);
    this.key = out.subarray(32);
    this.counter = 0;
  }

  private encrypt(plain: Uint8Array): Buffer {
    const out = gcmEncrypt(plain, this.key, this.counter++, this.hash);
    this.authenticate(out);
    return out;
  }

  private decrypt(cipher: Uint8Array): Buffer {
    const out = gcmDecrypt(cipher, this.key, this.counter++, this.hash);
    this.authenticate(cipher);
    return out;
  }

  /** Consumes the ClientHello frame and returns the encoded ServerHello frame body. */
  serverHello(frame: Uint8Array): Uint8Array {
    const msg = proto.HandshakeMessage.decode(frame);
    const clientEphemeral = msg.clientHello?.ephemeral;
    if (!clientEphemeral || clientEphemeral.byteLength !== 32) throw new Error('ClientHello without a 32-byte ephemeral');
    this.clientEphemeral = clientEphemeral;
    this.authenticate(clientEphemeral);
    this.authenticate(this.ephemeral.public);
    this.mixIntoKey(sharedKey(this.ephemeral.private, clientEphemeral));
    const staticEnc = this.encrypt(this.identity.serverStatic.public);
    this.mixIntoKey(sharedKey(this.identity.serverStatic.private, clientEphemeral));
    const payloadEnc = this.encrypt(this.identity.certChain);
    return proto.HandshakeMessage.encode({
      serverHello: { ephemeral: this.ephemeral.public, static: staticEnc, payload: payloadEnc },
    }).finish();
  }

  /** Consumes ClientFinish: authenticates the client's static (noise) key and decrypts its ClientPayload. */
  clientFinish(frame: Uint8Array): ClientFinishResult {
    if (!this.clientEphemeral) throw new Error('ClientFinish before ClientHello');
    const msg = proto.HandshakeMessage.decode(frame);
    const fin = msg.clientFinish;
    if (!fin?.static || !fin.payload) throw new Error('malformed ClientFinish');
    const clientStatic = this.decrypt(fin.static);
    this.mixIntoKey(sharedKey(this.ephemeral.private, clientStatic));
    const payloadBytes = this.decrypt(fin.payload);
    const keys = hkdf(new Uint8Array(0), 64, this.salt);
    // The client writes with the first half and reads with the second.
    const transport = new NoiseTransport(keys.subarray(0, 32), keys.subarray(32));
    return {
      clientStaticPublic: new Uint8Array(clientStatic),
      payload: proto.ClientPayload.decode(payloadBytes),
      transport,
    };
  }
}

/**
 * Splits the client's byte stream into frames: strips the one-time intro (`WA 6 3`, or
 * `ED 0 1 <len24> <routing info> WA 6 3`) and then reads 3-byte big-endian length prefixes.
 */
export class FrameReader {
  private buffer: Buffer = Buffer.alloc(0);
  private introDone = false;

  push(chunk: Uint8Array): Buffer[] {
    this.buffer = this.buffer.byteLength ? Buffer.concat([this.buffer, chunk]) : Buffer.from(chunk);
    if (!this.introDone && !this.consumeIntro()) return [];
    const frames: Buffer[] = [];
    while (this.buffer.byteLength >= 3) {
      const size = (this.buffer[0]! << 16) | (this.buffer[1]! << 8) | this.buffer[2]!;
      if (this.buffer.byteLength < size + 3) break;
      frames.push(this.buffer.subarray(3, size + 3));
      this.buffer = this.buffer.subarray(size + 3);
    }
    return frames;
  }

  private consumeIntro(): boolean {
    const b = this.buffer;
    if (b.byteLength < 4) return false;
    let offset = 0;
    if (b[0] === 0x45 && b[1] === 0x44) {
      if (b.byteLength < 7) return false;
      const len = (b[4]! << 16) | b.readUInt16BE(5);
      offset = 7 + len;
      if (b.byteLength < offset + 4) return false;
    }
    if (!b.subarray(offset, offset + 4).equals(NOISE_WA_HEADER)) {
      throw new Error('client intro is not a WhatsApp noise header');
    }
    this.buffer = b.subarray(offset + 4);
    this.introDone = true;
    return true;
  }
}

export function encodeFrame(body: Uint8Array): Buffer {
  if (body.byteLength > MAX_FRAME) throw new Error(`frame too large: ${body.byteLength}`);
  const out = Buffer.allocUnsafe(3 + body.byteLength);
  out[0] = (body.byteLength >>> 16) & 0xff;
  out[1] = (body.byteLength >>> 8) & 0xff;
  out[2] = body.byteLength & 0xff;
  out.set(body, 3);
  return out;
}
