/**
 * The history sync a phone sends a companion right after it linked: one `protocolMessage` of type
 * HISTORY_SYNC_NOTIFICATION, peer-addressed from the phone to the new device, as Baileys 7 reads it
 * (Utils/history.js, Utils/process-message.js):
 *
 * - `syncType` INITIAL_BOOTSTRAP: the recent chats with a few dozen messages each, and
 *   `phoneNumberToLidMappings` (every contact's phone number ↔ LID). Each conversation also names its
 *   other address (`lidJid` on a phone-number chat, `pnJid` on a LID chat), the second place Baileys
 *   takes mappings from.
 * - The payload travels inline, zlib-deflated, in `initialHistBootstrapInlinePayload` (what WhatsApp
 *   sends for the initial bootstrap when the `inline_initial_payload_in_e2ee_msg` AB prop is on, and
 *   what Baileys decodes before trying a download). WhatsApp's other chunks (RECENT, FULL,
 *   PUSH_NAME, NON_BLOCKING_DATA) are encrypted blobs on its media servers (`directPath`,
 *   `mediaKey`); Baileys fetches them from `https://<host><directPath>`, which a local simulator
 *   without WhatsApp's TLS hosts cannot serve, so they are not sent (see README, Known gaps).
 */
import { deflateSync } from 'node:zlib';
import { proto } from '@whiskeysockets/baileys';
import type { SimUser } from './world.ts';

export interface HistorySyncOptions {
  /** Messages per chat in the bootstrap (chat history the companion may keep or discard). */
  messagesPerChat: number;
  /** Most chats in the bootstrap (WhatsApp sends the most recent ones). */
  maxChats: number;
}

export const DEFAULT_HISTORY_SYNC: HistorySyncOptions = { messagesPerChat: 40, maxChats: 200 };

const FILLER = 'Thanks, see you tomorrow at the shop. Could you also bring the invoice for last month, please?';

/** The decoded HistorySync of the initial bootstrap `phone` sends a new companion. */
export function initialBootstrap(phone: SimUser, contacts: SimUser[], opts: HistorySyncOptions, nowSec = Math.floor(Date.now() / 1000)): proto.IHistorySync {
  const chats = contacts.slice(0, opts.maxChats);
  const conversations: proto.IConversation[] = chats.map((c, ci) => {
    const chatId = c.addressing === 'lid' ? c.lid : c.jid;
    const messages: proto.IHistorySyncMsg[] = [];
    for (let i = 0; i < opts.messagesPerChat; i++) {
      const fromMe = i % 2 === 1;
      const t = nowSec - 86_400 - (opts.messagesPerChat - i) * 60 - ci;
      messages.push({
        msgOrderId: i + 1,
        message: {
          key: { remoteJid: chatId, fromMe, id: `HIST${ci.toString(16).padStart(4, '0')}${i.toString(16).padStart(4, '0')}${c.number.slice(-6)}` },
          message: { conversation: `${fromMe ? phone.name : c.name}: ${FILLER} (${i + 1})` },
          messageTimestamp: t,
          status: fromMe ? proto.WebMessageInfo.Status.READ : undefined,
          pushName: fromMe ? undefined : c.name,
        },
      });
    }
    // Newest first, as WhatsApp orders them.
    messages.reverse();
    return {
      id: chatId,
      ...(c.addressing === 'lid' ? { pnJid: c.jid } : { lidJid: c.lid }),
      name: c.name,
      conversationTimestamp: nowSec - 86_400 - ci,
      unreadCount: 0,
      messages,
    };
  });
  return {
    syncType: proto.HistorySync.HistorySyncType.INITIAL_BOOTSTRAP,
    conversations,
    phoneNumberToLidMappings: contacts.map((c) => ({ pnJid: c.jid, lidJid: c.lid })),
    chunkOrder: 1,
    progress: 100,
  };
}

/** The protocol message carrying `sync` inline, as Baileys' downloadAndProcessHistorySyncNotification reads it. */
export function historySyncNotification(sync: proto.IHistorySync): { message: proto.IMessage; payloadBytes: number; inflatedBytes: number } {
  const encoded = proto.HistorySync.encode(sync).finish();
  const payload = deflateSync(encoded);
  return {
    message: {
      protocolMessage: {
        type: proto.Message.ProtocolMessage.Type.HISTORY_SYNC_NOTIFICATION,
        historySyncNotification: {
          syncType: sync.syncType ?? null,
          chunkOrder: sync.chunkOrder ?? null,
          progress: sync.progress ?? null,
          fileLength: encoded.length,
          initialHistBootstrapInlinePayload: payload,
        },
      },
    },
    payloadBytes: payload.length,
    inflatedBytes: encoded.length,
  };
}
