import type { BinaryNode } from '@whiskeysockets/baileys';
import { isValidNumber, pnJid } from './ids.ts';
import { child, children, iqResult, textOf } from './nodes.ts';
import type { SimUser, World } from './world.ts';

/**
 * `iq usync`: device lists (phone = device 0 plus linked companions with their key index),
 * LID mappings and "is on WhatsApp" (contact protocol). An unregistered user's `<devices>`
 * carries a 404 error, which makes Baileys' sendMessage to it fail.
 */
export function handleUsync(world: World, node: BinaryNode): BinaryNode {
  const usync = child(node, 'usync');
  const protocols = children(child(usync, 'query')).map((p) => p.tag);
  const users = children(child(usync, 'list'), 'user');
  const list = users.map((u) => userResult(world, u, protocols));
  return iqResult(node, [
    {
      tag: 'usync',
      attrs: { sid: usync?.attrs['sid'] ?? '', index: '0', last: 'true' },
      content: [
        { tag: 'result', attrs: {}, content: protocols.map((p) => ({ tag: p, attrs: {} })) },
        { tag: 'list', attrs: {}, content: list },
      ],
    },
  ]);
}

function userResult(world: World, request: BinaryNode, protocols: string[]): BinaryNode {
  const jid = request.attrs['jid'];
  const phone = textOf(child(request, 'contact'))?.replace(/^\+/, '');
  let user: SimUser | undefined;
  if (jid) user = world.resolve(jid)?.user;
  else if (phone && isValidNumber(phone)) user = world.user(phone);
  const replyJid = jid ?? (phone ? pnJid(phone) : '');
  const content: BinaryNode[] = [];
  for (const protocol of protocols) {
    if (protocol === 'devices') content.push(devices(user));
    // The lid protocol maps a phone number to its LID; a user asked for by LID gets no mapping
    // back (Baileys would refuse a LID→LID pair: "Invalid LID-PN mapping").
    else if (protocol === 'lid' && user && !replyJid.endsWith('@lid')) content.push({ tag: 'lid', attrs: { val: user.lid } });
    else if (protocol === 'contact') content.push({ tag: 'contact', attrs: { type: user ? 'in' : 'out' } });
  }
  return { tag: 'user', attrs: { jid: replyJid }, content };
}

function devices(user: SimUser | undefined): BinaryNode {
  if (!user) return { tag: 'devices', attrs: {}, content: [{ tag: 'error', attrs: { code: '404', text: 'item-not-found' } }] };
  const list: BinaryNode[] = [{ tag: 'device', attrs: { id: '0' } }];
  for (const d of user.devices.values()) list.push({ tag: 'device', attrs: { id: String(d.id), 'key-index': String(d.keyIndex) } });
  return { tag: 'devices', attrs: {}, content: [{ tag: 'device-list', attrs: {}, content: list }] };
}
