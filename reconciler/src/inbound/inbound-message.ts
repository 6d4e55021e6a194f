/** What the writer stores and the journal keeps for one inbound text message. */
import { isLidUser, isPnUser, jidNormalizedUser, type WAMessage } from '@whiskeysockets/baileys';

export interface InboundMessage {
  accountId: string;
  /** The chat as WhatsApp addressed this message (a phone-number JID, a LID or a group), no device part. */
  chatJid: string;
  /** The one-to-one chat's phone-number JID, when known (the chat itself, or its alternate address). */
  pnJid?: string | null;
  /** The one-to-one chat's LID, when known. */
  lidJid?: string | null;
  waId: string;
  from: string;
  fromName: string | null;
  text: string;
  sentAtMs: number;
  handedOverAt: number;
  /** Stored from the decrypt-time capture after Baileys dropped it (see inbound-capture.ts). */
  recovered?: boolean;
}

/** The text of a text message, or null for anything else (media, reactions, protocol messages). */
export function textOf(m: Pick<WAMessage, 'message'>): string | null {
  const msg = m.message;
  const text = msg?.conversation ?? msg?.extendedTextMessage?.text ?? null;
  return typeof text === 'string' && text.length > 0 ? text : null;
}

/**
 * The message to store for `m`, or null for what is not stored: our own, status and newsletter
 * posts, and (`nonText`) anything that is not text. Applied alike to what Baileys upserts and to
 * what it decrypts, so both describe a message identically.
 */
export function toInbound(accountId: string, m: Pick<WAMessage, 'key' | 'message' | 'messageTimestamp' | 'pushName'>, now = Date.now()): InboundMessage | 'nonText' | null {
  const key = m.key;
  if (!key || key.fromMe || !key.id || !key.remoteJid) return null;
  if (key.remoteJid === 'status@broadcast' || key.remoteJid.endsWith('@newsletter')) return null;
  const text = textOf(m);
  if (text === null) return 'nonText';
  const chatJid = jidNormalizedUser(key.remoteJid);
  const ts = Number(m.messageTimestamp ?? 0);
  return {
    accountId,
    chatJid,
    ...chatAddresses(chatJid, key.remoteJidAlt),
    waId: key.id,
    from: key.participant ? jidNormalizedUser(key.participant) : chatJid,
    fromName: m.pushName ? m.pushName.slice(0, 256) : null,
    text: text.slice(0, 65_536),
    sentAtMs: ts > 0 ? ts * 1000 : now,
    handedOverAt: now,
  };
}

/**
 * The phone-number JID and LID of a one-to-one chat from what the message carries: the chat as
 * addressed and Baileys' `remoteJidAlt` (WhatsApp's `sender_pn` on a LID-addressed message,
 * `sender_lid` on a phone-number one). Groups and anything else: neither.
 */
export function chatAddresses(chatJid: string, alt: string | null | undefined): { pnJid: string | null; lidJid: string | null } {
  const other = alt ? jidNormalizedUser(alt) : null;
  if (isPnUser(chatJid)) return { pnJid: chatJid, lidJid: other && isLidUser(other) ? other : null };
  if (isLidUser(chatJid)) return { pnJid: other && isPnUser(other) ? other : null, lidJid: chatJid };
  return { pnJid: null, lidJid: null };
}

/** `15550001@s.whatsapp.net` → `+15550001` (the E.164 the data model stores), or null for anything else. */
export function phoneOfJid(pnJid: string | null | undefined): string | null {
  if (!pnJid || !isPnUser(pnJid)) return null;
  const user = jidNormalizedUser(pnJid).split('@')[0] ?? '';
  return /^[1-9]\d{5,14}$/.test(user) ? `+${user}` : null;
}
