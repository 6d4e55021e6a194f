/** What the writer stores and the journal keeps for one inbound text message. */
import { jidNormalizedUser, type WAMessage } from '@whiskeysockets/baileys';

export interface InboundMessage {
  accountId: string;
  chatJid: string;
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
    waId: key.id,
    from: key.participant ? jidNormalizedUser(key.participant) : chatJid,
    fromName: m.pushName ? m.pushName.slice(0, 256) : null,
    text: text.slice(0, 65_536),
    sentAtMs: ts > 0 ? ts * 1000 : now,
    handedOverAt: now,
  };
}
