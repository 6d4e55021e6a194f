/**
 * Inbound text messages into `threads/{accountId}__{chatJid}/messages/{messageId}`: exactly one
 * document per WhatsApp message id, however often WhatsApp redelivers it, the session
 * reconnects or the process is killed. Each message is journaled on the sessions disk the moment
 * Baileys decrypts it (inbound-capture.ts, inbound-journal.ts), written in a transaction that
 * creates it only if absent and moves the thread's `lastMessageAt` forward only, and dropped from
 * the journal once that landed; at start the journal's leftovers are stored first. Writes are
 * serialized per thread (no contention between our own writes) and retried with backoff.
 *
 * Not fenced by the lease: a message that reached this process is a fact whoever owns the
 * account now, and the document id makes a second writer harmless. That is also why the replay
 * at start needs no lease.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { buildQuery, Collections, Subcollections, threadId } from '@wafleet/contract';
import { isLidUser, isPnUser, jidNormalizedUser, type WASocket } from '@whiskeysockets/baileys';
import { FieldValue, Timestamp, type DocumentReference, type DocumentSnapshot, type Firestore, type Transaction } from 'firebase-admin/firestore';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics.ts';
import { withTimeout } from '../util/deadline.ts';
import { KeyedRetryQueue } from '../util/keyed-retry-queue.ts';
import { captureDecrypted } from './inbound-capture.ts';
import { InboundJournal, JOURNAL_DIR } from './inbound-journal.ts';
import { phoneOfJid, toInbound, type InboundMessage } from './inbound-message.ts';


const DAY_MS = 86_400_000;
const SAFE_ID_RE = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * The JIDs a message's thread may be keyed by, preferred first. The canonical thread of a
 * one-to-one chat is keyed by the person's phone-number JID whenever the phone number is known,
 * so an app finds it from the number alone (`threadId(accountId, "<digits>@s.whatsapp.net")`),
 * whichever address WhatsApp used. A thread created while only the LID was known keeps its LID id
 * for good (ids never change): once the number becomes known it is found by its LID (second
 * candidate) and gains `phone`. Groups and other chats: their JID.
 */
export function threadCandidates(msg: Pick<InboundMessage, 'chatJid' | 'pnJid' | 'lidJid'>): string[] {
  const out = [msg.pnJid, msg.lidJid].filter((j): j is string => !!j);
  return out.length > 0 ? [...new Set(out)] : [msg.chatJid];
}

/** The document id of a WhatsApp message id: itself when Firestore-safe, else a hash of it. */
export function messageDocId(waId: string): string {
  return SAFE_ID_RE.test(waId) ? waId : `h-${createHash('sha256').update(waId).digest('hex').slice(0, 40)}`;
}

export interface InboundWriterOptions {
  db: Firestore;
  log: Logger;
  metrics: Metrics['inbound'];
  retentionDays: number;
  /** The journal lives in `<sessionsPath>/.inbound-journal`. */
  sessionsPath: string;
}

export class InboundWriter {
  private readonly queue: KeyedRetryQueue;

  private constructor(
    private readonly db: Firestore,
    private readonly log: Logger,
    private readonly metrics: Metrics['inbound'],
    private readonly retentionDays: number,
    private readonly journal: InboundJournal,
  ) {
    this.queue = new KeyedRetryQueue({ log, failureMessage: 'storing an inbound message failed; retrying' });
  }

  /** Opens the journal and starts storing what an earlier process journaled and did not store. */
  static async open(o: InboundWriterOptions): Promise<InboundWriter> {
    const { journal, replay } = await InboundJournal.open({
      dir: path.join(o.sessionsPath, JOURNAL_DIR),
      log: o.log,
      onEvent: (event, count) => o.metrics.journal(event, count),
      onBytes: (bytes) => o.metrics.journalBytes(bytes),
    });
    const writer = new InboundWriter(o.db, o.log, o.metrics, o.retentionDays, journal);
    if (replay.length > 0) o.log.info({ messages: replay.length }, 'storing inbound messages journaled before the last stop');
    for (const msg of replay) void writer.enqueue(msg);
    return writer;
  }

  /**
   * `isOwnSend` tells our outgoing ids apart: Baileys records sent messages in the same cache.
   *
   * Baileys 7 also loses an inbound message when the connection drops between decrypting it and
   * sending its receipt: the handler throws before `messages.upsert`, and WhatsApp's redelivery
   * of the same ciphertext then fails to decrypt ("Key used already") and is nacked. So the
   * decrypt-time capture is kept until its upsert, and when the socket closes, the ones that
   * never reached `messages.upsert` are stored from it.
   */
  attach(accountId: string, sock: WASocket, isOwnSend: (waId: string) => boolean): void {
    const decrypted = new Map<string, InboundMessage>();
    let closed = false;
    // The other address of a one-to-one chat, when the message did not carry it: Baileys' LID
    // mappings (history sync, earlier messages, usync), which persist with the auth state.
    const complete = async (msg: InboundMessage): Promise<InboundMessage> => {
      if (!msg.pnJid === !msg.lidJid) return msg;
      try {
        const mapping = sock.signalRepository.lidMapping;
        if (msg.lidJid) {
          const pn = await withTimeout(mapping.getPNForLID(msg.lidJid), 5_000, 'LID mapping lookup');
          return pn && isPnUser(pn) ? { ...msg, pnJid: jidNormalizedUser(pn) } : msg;
        }
        const lid = await withTimeout(mapping.getLIDForPN(msg.pnJid!), 5_000, 'LID mapping lookup');
        return lid && isLidUser(lid) ? { ...msg, lidJid: jidNormalizedUser(lid) } : msg;
      } catch {
        // Stored with what the message carried; the thread is still found by the address it has.
        return msg;
      }
    };
    const store = (msg: InboundMessage) => void complete(msg).then((m) => this.enqueue(m));
    const recover = (id: string) => {
      const msg = decrypted.get(id);
      if (!msg) return;
      decrypted.delete(id);
      this.log.warn({ accountId, waId: id }, 'storing an inbound message Baileys dropped when the connection closed before its receipt');
      store({ ...msg, recovered: true });
    };
    const capturing = captureDecrypted(accountId, sock, isOwnSend, (msg) => {
      this.journal.record(msg);
      decrypted.set(msg.waId, msg);
      // Evicted captures stay journaled; the next start stores them if no upsert did.
      if (decrypted.size > 5_000) decrypted.delete(decrypted.keys().next().value!);
      // Decrypted after the close: its receipt cannot go out, so no upsert will follow.
      if (closed) recover(msg.waId);
    });
    if (!capturing) this.log.warn({ accountId }, 'this Baileys has no decrypt-time hook; inbound messages are journaled only at upsert');
    sock.ev.on('messages.upsert', ({ messages }) => {
      for (const m of messages) {
        const id = m.key?.id;
        const captured = id ? decrypted.has(id) : false;
        if (id) decrypted.delete(id);
        const msg = toInbound(accountId, m);
        if (msg === 'nonText') this.metrics.result('skipped');
        if (msg === null || msg === 'nonText') {
          // Captured as an inbound text but not one after all: nothing will store it.
          if (id && captured) this.journal.stored(accountId, id);
          continue;
        }
        if (!captured) this.journal.record(msg);
        store(msg);
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

  enqueue(msg: InboundMessage): Promise<void> {
    const write = async () => {
      // A bounded attempt, like every other write: a transaction that hangs is retried (and
      // finds its document if the first attempt landed after all: counted as a duplicate).
      const stored = await withTimeout(this.write(msg), 10_000, 'inbound write');
      this.metrics.result(!stored ? 'duplicate' : msg.recovered ? 'recovered' : 'stored');
      if (stored) this.metrics.stored(Date.now() - msg.handedOverAt);
    };
    // One queue per person (phone number first), so the two addresses of one chat never race.
    return this.queue.enqueue(threadId(msg.accountId, msg.pnJid ?? msg.lidJid ?? msg.chatJid), write, { accountId: msg.accountId }).then((landed) => {
      if (landed) this.journal.stored(msg.accountId, msg.waId);
      // Still journaled: the next start stores it.
      else this.log.warn({ accountId: msg.accountId, waId: msg.waId }, 'inbound message not stored before shutdown; it stays journaled');
    });
  }

  /**
   * The thread a message belongs to (see threadCandidates): the first candidate that exists, else
   * `elsewhere` (the thread that already carries the chat's LID or phone number, found by
   * `findByIdentity` outside the transaction), else a new one at the first candidate. Read inside
   * the transaction, so the choice and the write are one. With `elsewhere` not looked up yet
   * (undefined) and no candidate there, it throws NeedsLookup: a query inside a transaction would
   * lock the range it read, and every inbound write of the fleet writes into that collection.
   */
  private async threadOf(tx: Transaction, msg: InboundMessage, elsewhere: DocumentReference | null | undefined): Promise<{ ref: DocumentReference; snap: DocumentSnapshot; chatJid: string }> {
    const threads = this.db.collection(Collections.threads);
    const candidates = threadCandidates(msg);
    const refs = candidates.map((jid) => threads.doc(threadId(msg.accountId, jid)));
    // One read for all the candidates (every inbound message pays it).
    const snaps = await tx.getAll(...refs);
    const found = snaps.findIndex((s) => s.exists);
    if (found >= 0) return { ref: refs[found]!, snap: snaps[found]!, chatJid: candidates[found]! };
    if (elsewhere === undefined && (msg.lidJid || phoneOfJid(msg.pnJid))) throw new NeedsLookup();
    if (elsewhere) {
      const doc = await tx.get(elsewhere);
      if (doc.exists) return { ref: doc.ref, snap: doc, chatJid: (doc.get('chatJid') as string | undefined) ?? doc.id.slice(doc.id.lastIndexOf('__') + 2) };
    }
    return { ref: refs[0]!, snap: snaps[0]!, chatJid: candidates[0]! };
  }

  /**
   * A thread under another id that already knows this person (keyed by LID before the phone
   * number was known): equality filters only, served by Firestore's single-field indexes. Run
   * only for a person's first message without a thread at its own ids; messages of one person are
   * written one at a time (the queue), so nothing creates their thread in between.
   */
  private async findByIdentity(msg: InboundMessage): Promise<DocumentReference | null> {
    const threads = this.db.collection(Collections.threads);
    for (const [name, value] of [['threadByLid', msg.lidJid], ['threadByPhone', phoneOfJid(msg.pnJid)]] as const) {
      if (!value) continue;
      const q = await buildQuery(threads, name, [msg.accountId, value]).limit(1).get();
      if (q.docs[0]) return q.docs[0].ref;
    }
    return null;
  }

  /** Creates the message document if absent; true when it did. */
  private write(msg: InboundMessage): Promise<boolean> {
    const expireAt = this.retentionDays > 0 ? Timestamp.fromMillis(Date.now() + this.retentionDays * DAY_MS) : null;
    const phone = phoneOfJid(msg.pnJid);
    const lid = msg.lidJid ?? null;
    let elsewhere: DocumentReference | null | undefined;
    const attempt = () => this.db.runTransaction(async (tx) => {
      const { ref: threadRef, snap: thread, chatJid } = await this.threadOf(tx, msg, elsewhere);
      const msgRef = threadRef.collection(Subcollections.threadMessages).doc(messageDocId(msg.waId));
      const existing = await tx.get(msgRef);
      if (existing.exists) return false;
      const sentAt = Timestamp.fromMillis(msg.sentAtMs);
      tx.create(msgRef, {
        accountId: msg.accountId,
        chatJid,
        ...(phone ? { phone } : {}),
        ...(lid ? { lid } : {}),
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
          chatJid,
          // Added once known, never removed: the thread keeps its id when WhatsApp switches addressing.
          ...(phone ? { phone } : {}),
          ...(lid ? { lid } : {}),
          ...(newer || !thread.exists ? { lastMessageAt: sentAt, lastMessageId: msg.waId } : {}),
          updatedAt: FieldValue.serverTimestamp(),
          // The thread lives as long as its newest message.
          ...(newer || !thread.exists ? { expireAt } : {}),
        },
        { merge: true },
      );
      return true;
    });
    return attempt().catch(async (err: unknown) => {
      if (!(err instanceof NeedsLookup)) throw err;
      elsewhere = await this.findByIdentity(msg);
      return attempt();
    });
  }

  /**
   * Waits (bounded) for the writes in progress, then stops retrying and closes the journal: what
   * did not land stays journaled for the next start.
   */
  async drain(timeoutMs: number): Promise<boolean> {
    const landed = await this.queue.drain(timeoutMs);
    await this.journal.close();
    return landed;
  }
}

/** threadOf needs the identity lookup first (run outside the transaction). */
class NeedsLookup extends Error {
  override readonly name = 'NeedsLookup';
}
