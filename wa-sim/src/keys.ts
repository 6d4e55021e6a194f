import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { Curve, generateSignalPubKey } from '@whiskeysockets/baileys';
import * as signalCurve from 'libsignal/src/curve.js';

/** Curve25519 key pair with a raw 32-byte public key (no 0x05 type prefix), as Baileys stores them. */
export interface KeyPair {
  public: Uint8Array;
  private: Uint8Array;
}

export function newKeyPair(): KeyPair {
  const kp = Curve.generateKeyPair();
  return { public: new Uint8Array(kp.public), private: new Uint8Array(kp.private) };
}

/** XEdDSA signature, the scheme WhatsApp uses for certificates, ADV identities and signed pre-keys. */
export function sign(privateKey: Uint8Array, message: Uint8Array): Uint8Array {
  return new Uint8Array(Curve.sign(Buffer.from(privateKey), message));
}

/**
 * A verify that actually rejects bad signatures. Baileys' `Curve.verify` only fails when libsignal
 * throws, but libsignal 6 returns false instead, so it accepts anything; the simulator must not.
 */
export function verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  try {
    return signalCurve.verifySignature(generateSignalPubKey(publicKey), message, signature) === true;
  } catch {
    return false;
  }
}

export function sharedKey(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  return new Uint8Array(Curve.sharedKey(Buffer.from(privateKey), publicKey));
}

export function hkdf(ikm: Uint8Array, length: number, salt: Uint8Array = new Uint8Array(0), info = ''): Uint8Array {
  return new Uint8Array(hkdfSync('sha256', ikm, salt, Buffer.from(info, 'utf8'), length));
}

export function hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac('sha256', key).update(data).digest());
}

export function randomUint32(): number {
  return randomBytes(4).readUInt32BE(0);
}

export const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64');
export const fromB64 = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'base64'));

export function keyPairToJSON(kp: KeyPair): { public: string; private: string } {
  return { public: b64(kp.public), private: b64(kp.private) };
}

export function keyPairFromJSON(json: { public: string; private: string }): KeyPair {
  return { public: fromB64(json.public), private: fromB64(json.private) };
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;
}

/** Big-endian unsigned integer of `length` bytes, as WhatsApp encodes registration and key ids. */
export function encodeUint(value: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let v = value;
  for (let i = length - 1; i >= 0; i--) {
    out[i] = v & 0xff;
    v = Math.floor(v / 256);
  }
  return out;
}

export function decodeUint(bytes: Uint8Array): number {
  let v = 0;
  for (const b of bytes) v = v * 256 + b;
  return v;
}
