/**
 * Inbound text messages into `threads/{accountId}__{chatJid}/messages/{messageId}`: exactly one
 * document per WhatsApp message id, however often WhatsApp redelivers it or the session
 * reconnects. Each message is written in a transaction that creates it only if absent and moves
 * the thread's `lastMessageAt` forward only; writes are serialized per thread (no contention
 * between our own writes) and retried with backoff until they land.
 *
 * Not fenced by the lease: a message that reached this process is a fact whoever owns the
 * account now, and the document id makes a second writer harmless.
 */
import { createHash } from 'node:crypto';
import { Collections, Subcollections, threadId } from '@wafleet/contract';
import { jidNormalizedUser, type WAMessage, type WASocket } from '@whiskeysockets/baileys';
import { FieldValue, Timestamp, type Firestore } from 'firebase-admin/firestore';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics.ts';
import { withTimeout } from '../util/deadline.ts';
import { KeyedRetryQueue } from '../util/keyed-retry-queue.ts';

const DAY_MS = 86_400_000;
const SAFE_ID_RE = /^[A-Za-z0-9_-]{1,128}$/;

/** The document id of a WhatsApp message id: itself when Firestore-safe, else a hash of it. */
export function messageDocId(waId: string): string {
  return SAFE_ID_RE.test(waId) ? waId : `h-${createHash('sha256').update(waId).digest('hex').slice(0, 40)}`;
}

export interface InboundMessage {
  accountId: string;
  chatJid: string;
  waId: string;
  from: string;
  fromName: string | null;
  text: string;
  sentAtMs: number;
  handedOverAt: number;
  /** Stored from the decrypt-time capture after Baileys dropped it (see attach). */
  recovered?: boolean;
}

/** The text of a text message, or null for anything else (media, reactions, protocol messages). */
export function textOf(m: WAMessage): string | null {
  const msg = m.message;
  const text = msg?.conversation ?? msg?.extendedTextMessage?.text ?? null;
  return typeof text === 'string' && text.length > 0 ? text : null;
}

export class InboundWriter {
  private readonly queue: KeyedRetryQueue;

  constructor(
    private readonly db: Firestore,
    private readonly log: Logger,
    private readonly metrics: Metrics['inbound'],
    private readonly retentionDays: number,
  ) {
    this.queue = new KeyedRetryQueue({ log, failureMessage: 'storing an inbound message failed; retrying' });
  }

  /**
   * `isOwnSend` tells our outgoing ids apart: Baileys records sent messages in the same cache.
   *
   * Baileys 7 loses an inbound message when the connection drops between decrypting it and
   * sending its receipt: the handler throws before `messages.upsert`, and WhatsApp's redelivery
   * of the same ciphertext then fails to decrypt ("Key used already") and is nacked. Every
   * successfully decrypted message passes through `messageRetryManager.addRecentMessage` before
   * the receipt, so we note it there and, when the socket closes, store the ones that never
   * reached `messages.upsert` (with what is known: no push name, our clock as the time).
   */
  attach(accountId: string, sock: WASocket, isOwnSend: (waId: string) => boolean): void {
    const decrypted = new Map<string, { remoteJid: string; message: WAMessage['message']; at: number }>();
    let closed = false;
    const recover = (id: string) => {
      const d = decrypted.get(id);
      if (!d) return;
      decrypted.delete(id);
      this.log.warn({ accountId, waId: id }, 'storing an inbound message Baileys dropped when the connection closed before its receipt');
      this.accept(accountId, { key: { id, remoteJid: d.remoteJid, fromMe: false }, message: d.message, messageTimestamp: Math.floor(d.at / 1000) } as WAMessage, true);
    };
    const manager = sock.messageRetryManager;
    if (manager) {
      const original = manager.addRecentMessage.bind(manager);
      manager.addRecentMessage = (to, id, message) => {
        original(to, id, message);
        const self = sock.user?.id ? jidNormalizedUser(sock.user.id) : null;
        if (isOwnSend(id) || jidNormalizedUser(to) === self) return;
        decrypted.set(id, { remoteJid: to, message, at: Date.now() });
        if (decrypted.size > 5_000) decrypted.delete(decrypted.keys().next().value!);
        // Decrypted after the close: its receipt cannot go out, so no upsert will follow.
        if (closed) recover(id);
      };
    }
    sock.ev.on('messages.upsert', ({ messages }) => {
      for (const m of messages) {
        if (m.key?.id) decrypted.delete(m.key.id);
        this.accept(accountId, m);
      }
    });
    sock.ev.on('connection.update', ({ connection }) => {
      if (connection !== 'close') return;
      closed = true;
      // Handlers that sent their receipt just before the close upsert right after it.
      setTimeout(() => {
        for (const id of [...decrypted.keys()]) recover(id);
      }, 1_000).unref();
    });
  }

  private accept(accountId: string, m: WAMessage, recovered = false): void {
    const key = m.key;
    if (!key || key.fromMe || !key.id || !key.remoteJid) return;
    if (key.remoteJid === 'status@broadcast' || key.remoteJid.endsWith('@newsletter')) return;
    const text = textOf(m);
    if (text === null) {
      this.metrics.result('skipped');
      return;
    }
    const chatJid = jidNormalizedUser(key.remoteJid);
    const ts = Number(m.messageTimestamp ?? 0);
    this.enqueue({
      accountId,
      chatJid,
      waId: key.id,
      from: key.participant ? jidNormalizedUser(key.participant) : chatJid,
      fromName: m.pushName ? m.pushName.slice(0, 256) : null,
      text: text.slice(0, 65_536),
      sentAtMs: ts > 0 ? ts * 1000 : Date.now(),
      handedOverAt: Date.now(),
      recovered,
    });
  }

  enqueue(msg: InboundMessage): Promise<void> {
    const write = async () => {
      // A bounded attempt, like every other write: a transaction that hangs is retried (and
      // finds its document if the first attempt landed after all: counted as a duplicate).
      const stored = await withTimeout(this.write(msg), 10_000, 'inbound write');
      this.metrics.result(!stored ? 'duplicate' : msg.recovered ? 'recovered' : 'stored');
      if (stored) this.metrics.stored(Date.now() - msg.handedOverAt);
    };
    return this.queue.enqueue(threadId(msg.accountId, msg.chatJid), write, { accountId: msg.accountId }).then((landed) => {
      if (!landed) this.log.error({ accountId: msg.accountId, waId: msg.waId }, 'inbound message not stored before shutdown');
    });
  }

  /** Creates the message document if absent; true when it did. */
  private write(msg: InboundMessage): Promise<boolean> {
    const threadRef = this.db.collection(Collections.threads).doc(threadId(msg.accountId, msg.chatJid));
    const msgRef = threadRef.collection(Subcollections.threadMessages).doc(messageDocId(msg.waId));
    const expireAt = this.retentionDays > 0 ? Timestamp.fromMillis(Date.now() + this.retentionDays * DAY_MS) : null;
    return this.db.runTransaction(async (tx) => {
      const [existing, thread] = await Promise.all([tx.get(msgRef), tx.get(threadRef)]);
      if (existing.exists) return false;
      const sentAt = Timestamp.fromMillis(msg.sentAtMs);
      tx.create(msgRef, {
        accountId: msg.accountId,
        chatJid: msg.chatJid,
        waMessageId: msg.waId,
        direction: 'inbound',
        from: msg.from,
        fromName: msg.fromName,
        text: msg.text,
        sentAt,
        receivedAt: FieldValue.serverTimestamp(),
        expireAt,
      });
      const last = thread.exists ? (thread.get('lastMessageAt') as Timestamp | undefined)?.toMillis() ?? 0 : 0;
      const newer = msg.sentAtMs >= last;
      tx.set(
        threadRef,
        {
          accountId: msg.accountId,
          chatJid: msg.chatJid,
          ...(newer || !thread.exists ? { lastMessageAt: sentAt, lastMessageId: msg.waId } : {}),
          updatedAt: FieldValue.serverTimestamp(),
          // The thread lives as long as its newest message.
          ...(newer || !thread.exists ? { expireAt } : {}),
        },
        { merge: true },
      );
      return true;
    });
  }

  /** Waits (bounded) for the writes in progress; stops retrying after the deadline. */
  drain(timeoutMs: number): Promise<boolean> {
    return this.queue.drain(timeoutMs);
  }
}
