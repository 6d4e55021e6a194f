import { createHash } from 'node:crypto';
import type { BinaryNode } from '@whiskeysockets/baileys';
import type { ClientConnection } from './connection.ts';
import type { SimCore } from './core.ts';
import { parseJid } from './ids.ts';
import { decodeUint, encodeUint } from './keys.ts';
import { child, childBytes, children, iqError, iqResult } from './nodes.ts';
import { handleUsync } from './usync.ts';
import type { LinkedDevice, SimUser } from './world.ts';

const KEY_TYPE = new Uint8Array([5]);

function bytesNode(tag: string, content: Uint8Array): BinaryNode {
  return { tag, attrs: {}, content };
}

/** The account's own linked device behind an online connection. */
function ownDevice(core: SimCore, conn: ClientConnection): { user: SimUser; device: LinkedDevice } | undefined {
  if (conn.phase !== 'online' || !conn.deviceJid) return undefined;
  const r = core.world.resolve(conn.deviceJid);
  const device = r?.user.devices.get(r.device);
  return r && device ? { user: r.user, device } : undefined;
}

/** Answers every iq Baileys sends; anything unknown gets a 501 error so no query hangs. */
export async function handleIq(core: SimCore, conn: ClientConnection, node: BinaryNode): Promise<void> {
  const { type, xmlns } = node.attrs;
  if (type === 'result' || type === 'error') {
    core.pairing.onIqResponse(conn, node);
    return;
  }
  const first = children(node)[0];
  switch (xmlns) {
    case 'w:p':
      conn.send(iqResult(node));
      return;
    case 'passive':
    case 'w:stats':
      conn.send(iqResult(node));
      return;
    case 'md':
      return handleMd(core, conn, node, first);
    case 'encrypt':
      return handleEncrypt(core, conn, node, first);
    case 'usync': {
      const requester = ownDevice(core, conn);
      if (!requester) return void conn.send(iqError(node, 401, 'not-authorized'));
      conn.send(handleUsync(core.world, node));
      return;
    }
    case 'abt':
      conn.send(iqResult(node, [{ tag: 'props', attrs: { protocol: '1', hash: 'sim-props-1' }, content: [] }]));
      return;
    case 'blocklist':
      conn.send(iqResult(node, [{ tag: 'list', attrs: {} }]));
      return;
    case 'privacy':
      if (type === 'get' && first?.tag === 'privacy') {
        const categories = ['last', 'online', 'profile', 'status', 'groupadd', 'readreceipts', 'calladd'].map((name) => ({
          tag: 'category',
          attrs: { name, value: name === 'readreceipts' ? 'all' : 'contacts' },
        }));
        conn.send(iqResult(node, [{ tag: 'privacy', attrs: {}, content: categories }]));
      } else {
        conn.send(iqResult(node));
      }
      return;
    default:
      unhandled(core, conn, node, first);
  }
}

/** Unknown iqs get an error reply (so no Baileys query waits for its timeout) and are logged. */
function unhandled(core: SimCore, conn: ClientConnection, node: BinaryNode, first: BinaryNode | undefined): void {
  core.log.record({
    type: 'error',
    connectionId: conn.id,
    ...(conn.deviceJid ? { deviceJid: conn.deviceJid } : {}),
    detail: `unhandled iq xmlns=${node.attrs['xmlns'] ?? ''} type=${node.attrs['type'] ?? ''} child=${first?.tag ?? ''}`,
  });
  conn.send(iqError(node, 501, 'feature-not-implemented'));
}

function handleMd(core: SimCore, conn: ClientConnection, node: BinaryNode, first: BinaryNode | undefined): void {
  if (first?.tag === 'link_code_companion_reg') return core.pairing.onLinkCodeIq(conn, node, first);
  if (first?.tag === 'remove-companion-device') {
    // Logout from the companion itself: the phone forgets the device.
    const jid = first.attrs['jid'] ?? conn.deviceJid ?? '';
    const own = ownDevice(core, conn);
    const target = core.world.resolve(jid);
    if (own && target && target.user === own.user) {
      conn.send(iqResult(node));
      core.removeDevice(target.user, target.device, `logout: ${first.attrs['reason'] ?? 'unknown'}`);
      return;
    }
    conn.send(iqError(node, 403, 'forbidden'));
    return;
  }
  unhandled(core, conn, node, first);
}

function handleEncrypt(core: SimCore, conn: ClientConnection, node: BinaryNode, first: BinaryNode | undefined): void {
  const own = ownDevice(core, conn);
  if (!own) return void conn.send(iqError(node, 401, 'not-authorized'));
  const { device } = own;
  const type = node.attrs['type'];
  if (type === 'get' && first?.tag === 'count') {
    conn.send(iqResult(node, [{ tag: 'count', attrs: { value: String(device.preKeys.size) } }]));
    return;
  }
  if (type === 'get' && first?.tag === 'digest') {
    conn.send(iqResult(node, [digest(device)]));
    return;
  }
  if (type === 'get' && first?.tag === 'key') {
    conn.send(iqResult(node, [{ tag: 'list', attrs: {}, content: children(first, 'user').map((u) => bundleFor(core, u.attrs['jid'] ?? '')) }]));
    return;
  }
  if (type === 'set' && first?.tag === 'rotate') {
    const skey = child(first, 'skey');
    const id = childBytes(skey, 'id');
    const value = childBytes(skey, 'value');
    const signature = childBytes(skey, 'signature');
    if (!id || !value || !signature) return void conn.send(iqError(node, 400, 'bad-request'));
    device.signedPreKey = { keyId: decodeUint(id), publicKey: value, signature };
    core.markDirty();
    conn.send(iqResult(node));
    return;
  }
  if (type === 'set' && child(node, 'list')) {
    // Pre-key upload: <registration/><type/><identity/><list><key><id/><value/></key>…</list><skey/>.
    for (const key of children(child(node, 'list'), 'key')) {
      const id = childBytes(key, 'id');
      const value = childBytes(key, 'value');
      if (id && value) device.preKeys.set(decodeUint(id), value);
    }
    const skey = child(node, 'skey');
    const id = childBytes(skey, 'id');
    const value = childBytes(skey, 'value');
    const signature = childBytes(skey, 'signature');
    if (id && value && signature) device.signedPreKey = { keyId: decodeUint(id), publicKey: value, signature };
    const reg = childBytes(node, 'registration');
    if (reg) device.registrationId = decodeUint(reg);
    core.markDirty();
    conn.send(iqResult(node));
    return;
  }
  unhandled(core, conn, node, first);
}

function digest(device: LinkedDevice): BinaryNode {
  const ids = [...device.preKeys.keys()];
  const hash = createHash('sha1');
  hash.update(device.identityPublicKey).update(device.signedPreKey.publicKey).update(device.signedPreKey.signature);
  for (const id of ids) hash.update(device.preKeys.get(id)!);
  return {
    tag: 'digest',
    attrs: {},
    content: [
      ...identityNodes(device.registrationId, device.identityPublicKey, device.signedPreKey),
      { tag: 'list', attrs: {}, content: ids.map((id) => bytesNode('id', encodeUint(id, 3))) },
      bytesNode('hash', hash.digest()),
    ],
  };
}

/** The identity part shared by a digest reply and a pre-key bundle: registration, key type, identity, signed pre-key. */
function identityNodes(registrationId: number, identity: Uint8Array, skey: LinkedDevice['signedPreKey']): BinaryNode[] {
  return [
    bytesNode('registration', encodeUint(registrationId, 4)),
    bytesNode('type', KEY_TYPE),
    bytesNode('identity', identity),
    {
      tag: 'skey',
      attrs: {},
      content: [bytesNode('id', encodeUint(skey.keyId, 3)), bytesNode('value', skey.publicKey), bytesNode('signature', skey.signature)],
    },
  ];
}

/** One `<user>` of an `iq encrypt get <key>` reply, consuming a one-time pre-key as the server does. */
function bundleFor(core: SimCore, jid: string): BinaryNode {
  const notFound: BinaryNode = { tag: 'user', attrs: { jid }, content: [{ tag: 'error', attrs: { code: '404', text: 'item-not-found' } }] };
  const resolved = core.world.resolve(jid);
  if (!resolved || !parseJid(jid)) return notFound;
  const { user, device } = resolved;
  let bundle: { registrationId: number; identity: Uint8Array; skey: LinkedDevice['signedPreKey']; preKey?: { keyId: number; publicKey: Uint8Array } };
  if (device === 0) {
    const b = user.signal.takeBundle();
    bundle = { registrationId: b.registrationId, identity: b.identityKey, skey: b.signedPreKey, ...(b.preKey ? { preKey: b.preKey } : {}) };
  } else {
    const d = user.devices.get(device);
    if (!d) return notFound;
    const pre = takeUploadedPreKey(d);
    core.markDirty();
    bundle = { registrationId: d.registrationId, identity: d.identityPublicKey, skey: d.signedPreKey, ...(pre ? { preKey: pre } : {}) };
  }
  return {
    tag: 'user',
    attrs: { jid },
    content: [
      ...identityNodes(bundle.registrationId, bundle.identity, bundle.skey),
      ...(bundle.preKey
        ? [{ tag: 'key', attrs: {}, content: [bytesNode('id', encodeUint(bundle.preKey.keyId, 3)), bytesNode('value', bundle.preKey.publicKey)] }]
        : []),
    ],
  };
}

export function takeUploadedPreKey(device: LinkedDevice): { keyId: number; publicKey: Uint8Array } | undefined {
  const first = device.preKeys.entries().next();
  if (first.done) return undefined;
  const [keyId, publicKey] = first.value;
  device.preKeys.delete(keyId);
  return { keyId, publicKey };
}

