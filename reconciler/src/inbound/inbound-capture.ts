/**
 * The earliest point a decrypted inbound message can be seen, and so journaled. In Baileys 7
 * (Socket/messages-recv.js, handleMessage) a message goes:
 *
 *   frame 'CB:message' → decodeMessageNode (attributes only) → await … decrypt()
 *     → messageRetryManager.addRecentMessage(remoteJid, id, plaintext)   (synchronous)
 *     → sendReceipt(…)   (no await between the two: the receipt frame is built and written next)
 *     → upsertMessage → 'messages.upsert'
 *
 * So `addRecentMessage` is the only place the plaintext exists before the receipt can leave, and
 * it sees only (remoteJid, id, message). The rest of what the writer stores (sender in a group,
 * push name, timestamp, whether it is our own from another device) comes from the stanza's
 * attributes, which our own 'CB:message' listener keeps: it runs right after Baileys' (listeners
 * run in order, synchronously) and long before the decrypt, which always yields first.
 *
 * Nothing here can hold the receipt back until the journal is fsynced (the hook cannot be async),
 * which is why the journal appends synchronously (see inbound-journal.ts for the window left).
 */
import { decodeMessageNode, type BinaryNode, type proto, type WASocket } from '@whiskeysockets/baileys';
import { toInbound, type InboundMessage } from './inbound-message.ts';

/** Stanzas received but not decrypted yet; an offline backlog of this many is far past normal. */
const MAX_WAITING = 10_000;

/**
 * Calls `onDecrypted` with each inbound text message of `sock` as soon as Baileys has decrypted
 * it, before its receipt is sent. Returns false if this Baileys has no decrypt-time hook.
 */
export function captureDecrypted(accountId: string, sock: WASocket, isOwnSend: (waId: string) => boolean, onDecrypted: (msg: InboundMessage) => void): boolean {
  const manager = sock.messageRetryManager;
  if (!manager) return false;
  // Counted: a redelivery can arrive while the first copy is still being decrypted.
  const waiting = new Map<string, { stanza: BinaryNode; copies: number }>();
  sock.ws.on('CB:message', (node: BinaryNode) => {
    const id = node.attrs.id;
    if (!id) return;
    // Attributes only: the ciphertext is not needed once decrypted, and must not be retained.
    const copies = (waiting.get(id)?.copies ?? 0) + 1;
    waiting.set(id, { stanza: { tag: node.tag, attrs: { ...node.attrs } }, copies });
    if (waiting.size > MAX_WAITING) waiting.delete(waiting.keys().next().value!);
  });
  const original = manager.addRecentMessage.bind(manager);
  manager.addRecentMessage = (to: string, id: string, message: proto.IMessage) => {
    original(to, id, message);
    const received = waiting.get(id);
    // Our own sends pass through here too; they have no received stanza.
    if (!received) return;
    const { stanza } = received;
    if (--received.copies === 0) waiting.delete(id);
    const me = sock.authState.creds.me;
    if (!me || isOwnSend(id)) return;
    let msg: ReturnType<typeof toInbound>;
    try {
      const { fullMessage } = decodeMessageNode(stanza, me.id, me.lid ?? '');
      msg = toInbound(accountId, { ...fullMessage, key: { ...fullMessage.key, remoteJid: fullMessage.key.remoteJid ?? to }, message });
    } catch {
      // Baileys decoded this same stanza a moment ago; if we cannot, the upsert still stores it.
      return;
    }
    if (msg && msg !== 'nonText') onDecrypted(msg);
  };
  return true;
}
