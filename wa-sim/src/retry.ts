import type { BinaryNode } from '@whiskeysockets/baileys';
import { bytesEqual, decodeUint, verify } from './keys.ts';
import { bytesOf, child, children } from './nodes.ts';
import type { PreKeyBundle } from './signal-party.ts';

/**
 * How many retry receipts one message gets answered per device. Baileys' default
 * `maxMsgRetryCount` (Defaults/index.js) caps both sides: as a receiver `sendRetryRequest` stops
 * asking once its count reaches it, as a sender `willSendMessageAgain` stops resending.
 */
export const MAX_MSG_RETRY_COUNT = 5;

/**
 * Without a key bundle in the receipt, a sender rebuilds a session for a retry (count >= 2) at
 * most once an hour per device: whatsmeow's `recreateSessionTimeout`, Baileys' `RECREATE_SESSION_TIMEOUT`.
 */
export const RECREATE_SESSION_TIMEOUT_MS = 60 * 60 * 1000;

/**
 * Retry reasons that mean the session is out of sync (Baileys' `MAC_ERROR_CODES` in
 * Utils/message-retry-manager.js: SignalErrorInvalidMessage 4, SignalErrorBadMac 7), for which its
 * `shouldRecreateSession` rebuilds at once. WhatsApp Web sends 7 for a MAC failure; Baileys rc14
 * always sends `error="0"`.
 */
const MAC_ERROR_CODES = new Set([4, 7]);

/** WhatsApp's key type byte (Curve25519), Baileys' `KEY_BUNDLE_TYPE`. */
const KEY_TYPE_DJB = 5;

export interface RetryReceipt {
  /** The message id the device could not decrypt. */
  id: string;
  /** The device's retry count for this message (1 on its first retry receipt). */
  count: number;
  /** `<retry error>`, the device's retry reason (Baileys' `RetryReason`), when it is a number. */
  errorCode?: number;
  /** The device's registration id, when the receipt carried a well-formed `<registration>`. */
  registrationId?: number;
  /** A valid pre-key bundle from `<keys>` (Baileys and whatsmeow send one when count > 1). */
  keys?: PreKeyBundle;
  /** Why a `<keys>` node that was present could not be used; the receipt is otherwise handled. */
  keysError?: string;
}

export type ParsedRetryReceipt = { ok: true; receipt: RetryReceipt } | { ok: false; error: string };

function exactBytes(node: BinaryNode | undefined, length: number): Uint8Array | undefined {
  const b = node && node.content instanceof Uint8Array ? node.content : undefined;
  return b && b.byteLength === length ? b : undefined;
}

/**
 * Reads a `<receipt type="retry">` as Baileys' `sendRetryRequest` (Socket/messages-recv.js) and
 * whatsmeow's `sendRetryReceipt` build it:
 *
 *     <receipt id to type="retry">
 *       <retry count id t v="1" [error]/>
 *       <registration>4-byte big-endian</registration>
 *       [<keys><type>05</type><identity>32B</identity><key><id>3B</id><value>32B</value></key>
 *              <skey><id>3B</id><value>32B</value><signature>64B</signature></skey>
 *              <device-identity/></keys>]
 *     </receipt>
 *
 * Never throws. A receipt without a usable `<retry count>` is malformed as a whole (whatsmeow
 * rejects it too); a `<keys>` node that fails validation (sizes, the type byte, a signed pre-key
 * not signed by the identity, an identity other than `expectedIdentity`) is reported in
 * `keysError` and the receipt is handled as one without keys, as Baileys' sender does when
 * `extractE2ESessionFromRetryReceipt` returns null (Utils/signal.js).
 */
export function parseRetryReceipt(node: BinaryNode, opts: { expectedIdentity?: Uint8Array } = {}): ParsedRetryReceipt {
  try {
    const retry = child(node, 'retry');
    if (!retry) return { ok: false, error: 'no <retry> child' };
    const id = node.attrs['id'] || retry.attrs['id'];
    if (!id) return { ok: false, error: 'no message id' };
    const countText = retry.attrs['count'] ?? '';
    const count = /^\d{1,6}$/.test(countText) ? Number(countText) : NaN;
    if (!Number.isInteger(count) || count < 1) return { ok: false, error: `bad retry count ${JSON.stringify(countText)}` };
    const receipt: RetryReceipt = { id, count };
    const errorText = retry.attrs['error'];
    if (errorText !== undefined && /^\d{1,3}$/.test(errorText)) receipt.errorCode = Number(errorText);
    const registration = exactBytes(child(node, 'registration'), 4);
    if (registration) receipt.registrationId = decodeUint(registration);

    const keysNode = child(node, 'keys');
    if (keysNode) {
      const result = parseKeys(keysNode, receipt.registrationId, opts.expectedIdentity);
      if (typeof result === 'string') receipt.keysError = result;
      else receipt.keys = result;
    }
    return { ok: true, receipt };
  } catch (err) {
    // Defensive: the checks above should not throw on any node shape; never let one crash a connection.
    return { ok: false, error: `unreadable receipt: ${err instanceof Error ? err.message : String(err)}` };
  }
}

function parseKeys(keys: BinaryNode, registrationId: number | undefined, expectedIdentity: Uint8Array | undefined): PreKeyBundle | string {
  if (!Array.isArray(keys.content)) return '<keys> has no children';
  const type = bytesOf(child(keys, 'type'));
  if (!type || type.byteLength !== 1 || type[0] !== KEY_TYPE_DJB) return '<keys><type> is not 05';
  const identity = exactBytes(child(keys, 'identity'), 32);
  if (!identity) return '<keys><identity> is not 32 bytes';
  if (registrationId === undefined) return '<registration> missing or not 4 bytes';

  const skey = child(keys, 'skey');
  if (!skey) return '<keys> has no <skey>';
  const skeyId = exactBytes(child(skey, 'id'), 3);
  const skeyValue = exactBytes(child(skey, 'value'), 32);
  const skeySignature = exactBytes(child(skey, 'signature'), 64);
  if (!skeyId || !skeyValue || !skeySignature) return '<skey> needs <id> (3 bytes), <value> (32) and <signature> (64)';
  // X3DH: the signed pre-key must be signed by the identity (libsignal 6 skips this in initOutgoing).
  if (!verify(identity, Buffer.concat([Buffer.from([KEY_TYPE_DJB]), skeyValue]), skeySignature)) return '<skey> signature does not verify';
  if (expectedIdentity && !bytesEqual(identity, expectedIdentity)) return '<keys><identity> is not the linked device identity';

  const bundle: PreKeyBundle = {
    registrationId,
    identityKey: identity,
    signedPreKey: { keyId: decodeUint(skeyId), publicKey: skeyValue, signature: skeySignature },
  };
  const keyNodes = children(keys, 'key');
  if (keyNodes.length > 1) return '<keys> has more than one <key>';
  if (keyNodes[0]) {
    const preKeyId = exactBytes(child(keyNodes[0], 'id'), 3);
    const preKeyValue = exactBytes(child(keyNodes[0], 'value'), 32);
    if (!preKeyId || !preKeyValue) return '<key> needs <id> (3 bytes) and <value> (32)';
    bundle.preKey = { keyId: decodeUint(preKeyId), publicKey: preKeyValue };
  }
  return bundle;
}

export type RetryDecision =
  | { action: 'refuse'; reason: string }
  | { action: 'resend'; rebuild?: { from: 'receipt-keys' | 'server-bundle'; reason: string } };

export interface RetryInput {
  messageId: string;
  deviceJid: string;
  /** The sender's libsignal address for the device. */
  address: string;
  count: number;
  /** `<retry error>` when present. */
  errorCode?: number;
  hasKeys: boolean;
  hasSession: boolean;
  /** The receipt's registration id differs from the one the current session was built with. */
  registrationChanged: boolean;
}

const MAX_TRACKED = 20_000;

/**
 * A sending phone's rules for a retry receipt, from whatsmeow's `handleRetryReceipt` /
 * `shouldRecreateSession` (retry.go) and Baileys' `sendMessagesAgain` (Socket/messages-recv.js):
 *
 * 1. past `MAX_MSG_RETRY_COUNT` answers for this message and device: refuse (Baileys' sender);
 * 2. the receipt carries a valid key bundle: build a new session from it (both);
 * 3. no session with the device: build one from a bundle fetched from the server (both);
 * 4. the device's registration id changed: drop the session and fetch a bundle (Baileys);
 * 5. the retry reason is a MAC error (4 or 7): fetch a bundle (Baileys' MessageRetryManager);
 * 6. count >= 2 and no rebuild for this device in the last hour: fetch a bundle (whatsmeow);
 * 7. otherwise: encrypt again on the current session.
 *
 * Like the real clients' (in-memory caches with TTLs), these counters are not persisted; the
 * sessions they rebuild are.
 */
export class RetryPolicy {
  private readonly answered = new Map<string, number>();
  private readonly rebuiltAt = new Map<string, number>();

  decide(input: RetryInput, now = Date.now()): RetryDecision {
    const key = `${input.messageId} ${input.deviceJid}`;
    const answered = this.answered.get(key) ?? 0;
    if (answered >= MAX_MSG_RETRY_COUNT) return { action: 'refuse', reason: `already answered ${answered} retry receipts for this message and device` };
    this.answered.delete(key);
    this.answered.set(key, answered + 1);
    trim(this.answered);

    let rebuild: { from: 'receipt-keys' | 'server-bundle'; reason: string } | undefined;
    if (input.hasKeys) rebuild = { from: 'receipt-keys', reason: 'the receipt carries a key bundle' };
    else if (!input.hasSession) rebuild = { from: 'server-bundle', reason: 'no session with the device' };
    else if (input.registrationChanged) rebuild = { from: 'server-bundle', reason: 'the device registration id changed' };
    else if (input.errorCode !== undefined && MAC_ERROR_CODES.has(input.errorCode)) rebuild = { from: 'server-bundle', reason: `retry reason ${input.errorCode} (a MAC error)` };
    else if (input.count >= 2) {
      const last = this.rebuiltAt.get(input.address);
      if (last === undefined || now - last > RECREATE_SESSION_TIMEOUT_MS) rebuild = { from: 'server-bundle', reason: `retry count ${input.count} and no rebuild in the last hour` };
    }
    return rebuild ? { action: 'resend', rebuild } : { action: 'resend' };
  }

  /** Called once a session was rebuilt from a server bundle (whatsmeow's `sessionRecreateHistory`; a rebuild from receipt keys does not count). */
  recordRebuild(address: string, now = Date.now()): void {
    this.rebuiltAt.delete(address);
    this.rebuiltAt.set(address, now);
    trim(this.rebuiltAt);
  }
}

function trim(map: Map<string, number>): void {
  while (map.size > MAX_TRACKED) map.delete(map.keys().next().value!);
}
