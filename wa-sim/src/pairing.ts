import { createDecipheriv, pbkdf2, randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { type BinaryNode, proto } from '@whiskeysockets/baileys';
import type { ClientConnection } from './connection.ts';
import type { SimCore } from './core.ts';
import { SimConflictError, SimInputError, SimNotFoundError } from './errors.ts';
import { lidJid, newMessageId, newRef, pnJid, S_WHATSAPP_NET } from './ids.ts';
import {
  bytesEqual,
  decodeUint,
  fromB64,
  hkdf,
  hmacSha256,
  type KeyPair,
  newKeyPair,
  randomUint32,
  sharedKey,
  sign,
  verify,
} from './keys.ts';
import { child, childBytes, iqError, iqResult, unixNow } from './nodes.ts';
import { MAX_LINKED_DEVICES, type SimUser } from './world.ts';

const pbkdf2Async = promisify(pbkdf2);

/** What Baileys puts in a QR (companion-reg-client-utils.js): `…#ref,noiseKey,identityKey,advSecret,platform`. */
export const QR_PREFIX = 'https://wa.me/settings/linked_devices#';

export interface ParsedQr {
  ref: string;
  noisePublicKey: Uint8Array;
  identityPublicKey: Uint8Array;
  advSecret: Uint8Array;
  platformId: string;
}

export function parseQr(qr: string): ParsedQr {
  if (typeof qr !== 'string') throw new SimInputError('qr must be a string');
  const body = qr.startsWith(QR_PREFIX) ? qr.slice(QR_PREFIX.length) : qr;
  const parts = body.split(',');
  if (parts.length < 4) throw new SimInputError(`not a WhatsApp linking QR (expected ${QR_PREFIX}ref,noise,identity,adv[,platform])`);
  const [ref, noise, identity, adv, platformId] = parts as [string, string, string, string, string | undefined];
  const noisePublicKey = fromB64(noise);
  const identityPublicKey = fromB64(identity);
  const advSecret = fromB64(adv);
  if (noisePublicKey.byteLength !== 32 || identityPublicKey.byteLength !== 32 || advSecret.byteLength !== 32) {
    throw new SimInputError('QR keys must be base64 of 32 bytes each');
  }
  return { ref, noisePublicKey, identityPublicKey, advSecret, platformId: platformId ?? '0' };
}

/** What the companion declared in its registration payload. */
interface Registration {
  identityPublicKey: Uint8Array;
  registrationId: number;
  signedPreKey: { keyId: number; publicKey: Uint8Array; signature: Uint8Array };
  platform: string;
  refs: string[];
}

interface PendingPair {
  iqId: string;
  user: SimUser;
  deviceId: number;
  keyIndex: number;
  accountSignatureKey: Uint8Array;
  timer: NodeJS.Timeout;
  resolve: (r: { deviceJid: string }) => void;
  reject: (err: Error) => void;
}

/** A `link_code_companion_reg` companion_hello the phone has not answered yet. */
interface LinkCodeRequest {
  number: string;
  ref: Uint8Array;
  wrappedCompanionEphemeral: Uint8Array;
  at: number;
  /** Set once the phone entered a code and sent primary_hello. */
  phone?: {
    user: SimUser;
    primaryEphemeral: KeyPair;
    companionEphemeralPublic: Uint8Array;
    resolve: (r: { deviceJid: string }) => void;
    reject: (err: Error) => void;
    timer: NodeJS.Timeout;
  };
}

const REG = 'registration';
const PAIR = 'pendingPair';
const LINK = 'linkCode';

/**
 * Linking: QR registration (pair-device refs, a phone scanning the QR, pair-success, the
 * companion's pair-device-sign, then stream error 515) and the pairing-code variant
 * (link_code_companion_reg), in which the phone derives the same ADV secret from the typed code.
 */
export class Pairing {
  private readonly refs = new Map<string, ClientConnection>();
  private readonly linkRequests = new Map<ClientConnection, LinkCodeRequest>();

  constructor(private readonly core: SimCore) {}

  stop(): void {
    for (const conn of [...this.refs.values()]) this.onConnectionClosed(conn);
  }

  startRegistration(conn: ClientConnection): void {
    const data = conn.payload!.devicePairingData!;
    const identityPublicKey = data.eIdent ?? new Uint8Array();
    const skey = {
      keyId: decodeUint(data.eSkeyId ?? new Uint8Array()),
      publicKey: data.eSkeyVal ?? new Uint8Array(),
      signature: data.eSkeySig ?? new Uint8Array(),
    };
    // A real server refuses a registration whose signed pre-key is not signed by its identity key.
    const prefixed = Buffer.concat([Buffer.from([5]), skey.publicKey]);
    if (identityPublicKey.byteLength !== 32 || !verify(identityPublicKey, prefixed, skey.signature)) {
      this.core.log.record({ type: 'login-failed', connectionId: conn.id, code: 400, detail: 'bad registration signature' });
      conn.endWith({ tag: 'failure', attrs: { reason: '400', location: 'sim' } });
      return;
    }
    let platform = 'unknown';
    try {
      platform = proto.DeviceProps.decode(data.deviceProps ?? new Uint8Array()).os ?? platform;
    } catch {
      // deviceProps is informational only.
    }
    const refs = Array.from({ length: this.core.config.qrRefs }, () => newRef());
    const reg: Registration = {
      identityPublicKey,
      registrationId: decodeUint(data.eRegid ?? new Uint8Array()),
      signedPreKey: skey,
      platform,
      refs,
    };
    conn.data[REG] = reg;
    for (const ref of refs) this.refs.set(ref, conn);
    this.core.log.record({ type: 'register', connectionId: conn.id, detail: `${refs.length} refs` });
    conn.send({
      tag: 'iq',
      attrs: { from: S_WHATSAPP_NET, type: 'set', id: newMessageId(), xmlns: 'md' },
      content: [{ tag: 'pair-device', attrs: {}, content: refs.map((ref) => ({ tag: 'ref', attrs: {}, content: Buffer.from(ref) })) }],
    });
  }

  onConnectionClosed(conn: ClientConnection): void {
    const reg = conn.data[REG] as Registration | undefined;
    if (reg) for (const ref of reg.refs) this.refs.delete(ref);
    const pending = conn.data[PAIR] as PendingPair | undefined;
    if (pending) {
      clearTimeout(pending.timer);
      delete conn.data[PAIR];
      pending.reject(new SimConflictError('the companion disconnected before confirming the pairing'));
    }
    const link = this.linkRequests.get(conn);
    if (link?.phone) {
      clearTimeout(link.phone.timer);
      link.phone.reject(new SimConflictError('the companion disconnected before finishing code pairing'));
    }
    this.linkRequests.delete(conn);
  }

  /** The phone scans a QR shown by a companion that is waiting on one of its refs. */
  async scanQr(user: SimUser, qr: string): Promise<{ deviceJid: string }> {
    const parsed = parseQr(qr);
    const conn = this.refs.get(parsed.ref);
    const reg = conn?.data[REG] as Registration | undefined;
    if (!conn || !reg || !conn.isOpen) {
      throw new SimNotFoundError('no companion is waiting on this QR (expired ref or the socket closed)');
    }
    if (!conn.clientStatic || !bytesEqual(parsed.noisePublicKey, conn.clientStatic)) {
      throw new SimInputError('QR noise key does not match the waiting companion');
    }
    if (!bytesEqual(parsed.identityPublicKey, reg.identityPublicKey)) {
      throw new SimInputError('QR identity key does not match the waiting companion');
    }
    return this.completePairing(conn, user, parsed.advSecret);
  }

  private linkedOrPending(user: SimUser): number {
    let pending = 0;
    for (const conn of this.core.connections) {
      if ((conn.data[PAIR] as PendingPair | undefined)?.user === user) pending++;
    }
    return user.devices.size + pending;
  }

  /** Sends pair-success (ADV identity signed by the phone, HMAC'd with the companion's ADV secret). */
  private completePairing(conn: ClientConnection, user: SimUser, advSecret: Uint8Array): Promise<{ deviceJid: string }> {
    const reg = conn.data[REG] as Registration;
    if (conn.data[PAIR]) throw new SimConflictError('this companion is already being paired');
    if (this.linkedOrPending(user) >= MAX_LINKED_DEVICES) {
      throw new SimConflictError(`phone ${user.number} already has ${MAX_LINKED_DEVICES} linked devices`);
    }
    const deviceId = user.nextDeviceId++;
    const keyIndex = user.nextKeyIndex++;
    this.core.markDirty();
    const details = proto.ADVDeviceIdentity.encode({
      rawId: randomUint32(),
      timestamp: Math.floor(Date.now() / 1000),
      keyIndex,
      accountType: proto.ADVEncryptionType.E2EE,
      deviceType: proto.ADVEncryptionType.E2EE,
    }).finish();
    const accountKey = user.accountKey;
    const accountSignature = sign(accountKey.private, Buffer.concat([Buffer.from([6, 0]), details, reg.identityPublicKey]));
    const signed = proto.ADVSignedDeviceIdentity.encode({ details, accountSignatureKey: accountKey.public, accountSignature }).finish();
    const container = proto.ADVSignedDeviceIdentityHMAC.encode({
      details: signed,
      hmac: hmacSha256(advSecret, signed),
      accountType: proto.ADVEncryptionType.E2EE,
    }).finish();
    const iqId = newMessageId();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        delete conn.data[PAIR];
        reject(new SimConflictError('the companion did not confirm the pairing in time'));
      }, this.core.config.pairTimeoutMs);
      timer.unref();
      conn.data[PAIR] = { iqId, user, deviceId, keyIndex, accountSignatureKey: accountKey.public, timer, resolve, reject } satisfies PendingPair;
      conn.send({
        tag: 'iq',
        attrs: { from: S_WHATSAPP_NET, type: 'set', id: iqId, t: unixNow() },
        content: [
          {
            tag: 'pair-success',
            attrs: {},
            content: [
              { tag: 'device-identity', attrs: {}, content: container },
              { tag: 'platform', attrs: { name: 'android' } },
              { tag: 'device', attrs: { jid: pnJid(user.number, deviceId), lid: lidJid(user.lidUser, deviceId) } },
            ],
          },
        ],
      });
    });
  }

  /** iq results/errors from a companion; returns true if it was part of pairing. */
  onIqResponse(conn: ClientConnection, node: BinaryNode): boolean {
    const pending = conn.data[PAIR] as PendingPair | undefined;
    if (!pending || node.attrs['id'] !== pending.iqId) return false;
    clearTimeout(pending.timer);
    delete conn.data[PAIR];
    const reg = conn.data[REG] as Registration;
    const identityBytes = childBytes(child(node, 'pair-device-sign'), 'device-identity');
    if (node.attrs['type'] !== 'result' || !identityBytes) {
      pending.reject(new SimConflictError('the companion rejected the pairing'));
      return true;
    }
    const signed = proto.ADVSignedDeviceIdentity.decode(identityBytes);
    const deviceMsg = Buffer.concat([Buffer.from([6, 1]), signed.details ?? new Uint8Array(), reg.identityPublicKey, pending.accountSignatureKey]);
    if (!signed.deviceSignature || !verify(reg.identityPublicKey, deviceMsg, signed.deviceSignature)) {
      pending.reject(new SimConflictError('the companion returned an invalid device signature'));
      conn.endWith({ tag: 'failure', attrs: { reason: '401', location: 'sim' } });
      return true;
    }
    const user = pending.user;
    user.devices.set(pending.deviceId, {
      id: pending.deviceId,
      noisePublicKey: conn.clientStatic!,
      identityPublicKey: reg.identityPublicKey,
      registrationId: reg.registrationId,
      signedPreKey: reg.signedPreKey,
      preKeys: new Map(),
      keyIndex: pending.keyIndex,
      platform: reg.platform,
      linkedAt: Date.now(),
      historySynced: false,
    });
    for (const ref of reg.refs) this.refs.delete(ref);
    delete conn.data[REG];
    this.core.markDirty();
    const deviceJid = user.deviceJid(pending.deviceId);
    conn.deviceJid = deviceJid;
    this.core.log.record({ type: 'pair', connectionId: conn.id, deviceJid });
    pending.resolve({ deviceJid });
    // As WhatsApp does after pairing: the companion must reconnect and log in.
    this.core.sendStreamError(conn, 515, 'pairing complete');
    return true;
  }

  // ---- pairing code ---------------------------------------------------------------------

  /** `iq md set <link_code_companion_reg stage=…>` from a registering companion. */
  onLinkCodeIq(conn: ClientConnection, node: BinaryNode, reg: BinaryNode): void {
    const stage = reg.attrs['stage'];
    if (stage === 'companion_hello') {
      const number = (reg.attrs['jid'] ?? '').split('@')[0]?.split(':')[0] ?? '';
      const wrapped = childBytes(reg, 'link_code_pairing_wrapped_companion_ephemeral_pub');
      if (!conn.data[REG] || !wrapped || wrapped.byteLength !== 80) {
        conn.send(iqError(node, 400, 'bad-request'));
        return;
      }
      if (!this.core.world.user(number)) {
        conn.send(iqError(node, 404, 'item-not-found'));
        return;
      }
      const ref = Buffer.from(newRef());
      this.linkRequests.set(conn, { number, ref, wrappedCompanionEphemeral: wrapped, at: Date.now() });
      this.core.log.record({ type: 'register', connectionId: conn.id, detail: `pairing code requested for ${number}` });
      conn.send(iqResult(node, [{ tag: 'link_code_companion_reg', attrs: {}, content: [{ tag: 'link_code_pairing_ref', attrs: {}, content: ref }] }]));
      return;
    }
    if (stage === 'companion_finish') {
      void this.onCompanionFinish(conn, node, reg);
      return;
    }
    conn.send(iqError(node, 400, 'bad-request'));
  }

  /** Phone numbers with a companion currently waiting for its pairing code to be entered. */
  pendingCodeRequests(number?: string): Array<{ number: string; connectionId: number; at: number }> {
    return [...this.linkRequests]
      .filter(([conn, r]) => conn.isOpen && !r.phone && (!number || r.number === number))
      .map(([conn, r]) => ({ number: r.number, connectionId: conn.id, at: r.at }));
  }

  /** The phone's user types the code the companion shows (as in Settings → Linked devices → link with phone number). */
  async enterPairingCode(user: SimUser, rawCode: string): Promise<{ deviceJid: string }> {
    if (typeof rawCode !== 'string') throw new SimInputError('code must be a string');
    const code = rawCode.replace(/[\s-]/g, '').toUpperCase();
    if (!/^[0-9A-Z]{8}$/.test(code)) throw new SimInputError('a pairing code has 8 letters/digits');
    const candidates = [...this.linkRequests].filter(([conn, r]) => conn.isOpen && !r.phone && r.number === user.number);
    const latest = candidates.sort((a, b) => b[1].at - a[1].at)[0];
    if (!latest) throw new SimNotFoundError(`no companion is waiting for a pairing code for ${user.number}`);
    const [conn, request] = latest;
    if (this.linkedOrPending(user) >= MAX_LINKED_DEVICES) {
      throw new SimConflictError(`phone ${user.number} already has ${MAX_LINKED_DEVICES} linked devices`);
    }
    const w = request.wrappedCompanionEphemeral;
    const key = await pbkdf2Async(code, w.subarray(0, 32), 2 << 16, 32, 'sha256');
    const companionEphemeralPublic = aesCtr(w.subarray(48, 80), key, w.subarray(32, 48));
    const primaryEphemeral = newKeyPair();
    const salt = randomBytes(32);
    const iv = randomBytes(16);
    const wrapKey = await pbkdf2Async(code, salt, 2 << 16, 32, 'sha256');
    const wrappedPrimary = Buffer.concat([salt, iv, aesCtr(primaryEphemeral.public, wrapKey, iv)]);
    if (!conn.isOpen) throw new SimNotFoundError('the companion disconnected');
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (request.phone) delete request.phone;
        reject(new SimConflictError('the companion did not answer primary_hello in time'));
      }, this.core.config.pairTimeoutMs);
      timer.unref();
      request.phone = { user, primaryEphemeral, companionEphemeralPublic, resolve, reject, timer };
      conn.send({
        tag: 'notification',
        attrs: { from: S_WHATSAPP_NET, type: 'link_code_companion_reg', id: newMessageId(), t: unixNow() },
        content: [
          {
            tag: 'link_code_companion_reg',
            attrs: { stage: 'primary_hello' },
            content: [
              { tag: 'link_code_pairing_ref', attrs: {}, content: request.ref },
              { tag: 'primary_identity_pub', attrs: {}, content: user.accountKey.public },
              { tag: 'link_code_pairing_wrapped_primary_ephemeral_pub', attrs: {}, content: wrappedPrimary },
            ],
          },
        ],
      });
    });
  }

  private async onCompanionFinish(conn: ClientConnection, node: BinaryNode, reg: BinaryNode): Promise<void> {
    const request = this.linkRequests.get(conn);
    const phone = request?.phone;
    const bundle = childBytes(reg, 'link_code_pairing_wrapped_key_bundle');
    const companionIdentity = childBytes(reg, 'companion_identity_public');
    if (!request || !phone || !bundle || !companionIdentity) {
      conn.send(iqError(node, 400, 'bad-request'));
      return;
    }
    clearTimeout(phone.timer);
    delete request.phone;
    const companionShared = sharedKey(phone.primaryEphemeral.private, phone.companionEphemeralPublic);
    let plain: Buffer;
    try {
      const key = hkdf(companionShared, 32, bundle.subarray(0, 32), 'link_code_pairing_key_bundle_encryption_key');
      const d = createDecipheriv('aes-256-gcm', key, bundle.subarray(32, 44));
      d.setAuthTag(bundle.subarray(bundle.byteLength - 16));
      plain = Buffer.concat([d.update(bundle.subarray(44, bundle.byteLength - 16)), d.final()]);
    } catch {
      // With a mistyped code the phone unwrapped a garbage ephemeral key, so nothing decrypts.
      conn.send(iqError(node, 400, 'bad-request'));
      phone.reject(new SimInputError('wrong pairing code'));
      return;
    }
    const [bundleCompanionIdentity, bundlePrimaryIdentity, random] = [plain.subarray(0, 32), plain.subarray(32, 64), plain.subarray(64, 96)];
    const registration = conn.data[REG] as Registration | undefined;
    if (
      !registration ||
      !bytesEqual(bundleCompanionIdentity, companionIdentity) ||
      !bytesEqual(companionIdentity, registration.identityPublicKey) ||
      !bytesEqual(bundlePrimaryIdentity, phone.user.accountKey.public)
    ) {
      conn.send(iqError(node, 400, 'bad-request'));
      phone.reject(new SimInputError('the companion key bundle does not match'));
      return;
    }
    const identityShared = sharedKey(phone.user.accountKey.private, companionIdentity);
    const advSecret = hkdf(Buffer.concat([companionShared, identityShared, random]), 32, undefined, 'adv_secret');
    conn.send(iqResult(node));
    this.linkRequests.delete(conn);
    this.core.log.record({ type: 'register', connectionId: conn.id, detail: 'pairing code accepted' });
    try {
      phone.resolve(await this.completePairing(conn, phone.user, advSecret));
    } catch (err) {
      phone.reject(err as Error);
    }
  }
}

function aesCtr(data: Uint8Array, key: Uint8Array, iv: Uint8Array): Buffer {
  const d = createDecipheriv('aes-256-ctr', key, iv);
  return Buffer.concat([d.update(data), d.final()]);
}
