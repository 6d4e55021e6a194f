import { type BinaryNode, encodeWAMessage, proto, unpadRandomMax16 } from '@whiskeysockets/baileys';
import type { ClientConnection } from './connection.ts';
import type { ReceiptDelays, SimCore } from './core.ts';
import { SimConflictError, SimInputError, SimNotFoundError } from './errors.ts';
import { isValidNumber, newMessageId, parseJid } from './ids.ts';
import { takeUploadedPreKey } from './iq.ts';
import { children, unixNow } from './nodes.ts';
import { parseRetryReceipt, type RetryDecision, RetryPolicy, type RetryReceipt } from './retry.ts';
import { historySyncNotification, initialBootstrap } from './history-sync.ts';
import { yieldIfBusy } from './scheduling.ts';
import type { PreKeyBundle } from './signal-party.ts';
import type { LinkedDevice, SentText, SimUser } from './world.ts';

const UNACKED = 'unackedMessages';

function unackedOf(conn: ClientConnection): Map<string, BinaryNode> {
  return (conn.data[UNACKED] ??= new Map<string, BinaryNode>()) as Map<string, BinaryNode>;
}

/**
 * How a 1:1 stanza from `sender` names it (Baileys' extractAddressingContext): by phone number with
 * the LID beside it (`sender_lid`), or, once its chats moved to LIDs, by LID with `addressing_mode`
 * and the phone number beside it (`sender_pn`).
 */
export function addressingAttrs(sender: SimUser): Record<string, string> {
  return sender.addressing === 'lid'
    ? { from: sender.lid, addressing_mode: 'lid', sender_pn: sender.jid }
    : { from: sender.jid, sender_lid: sender.lid };
}

function textOfMessage(message: proto.IMessage | null | undefined): string | undefined {
  if (!message) return undefined;
  return message.conversation ?? message.extendedTextMessage?.text ?? undefined;
}

/**
 * Message routing: stanzas from companions are acked, decrypted by simulated primaries
 * (device 0) or forwarded to other companions, and answered with receipts; simulated users
 * send encrypted texts to companions. Stanzas for offline devices wait in a queue, and
 * messages a device did not ack before disconnecting are queued again (WhatsApp redelivers).
 */
export class Messaging {
  private readonly offline = new Map<string, BinaryNode[]>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly retries = new RetryPolicy();
  /** Decryption failures at simulated primaries, for diagnosis. */
  readonly decryptErrors: Array<{ at: number; from: string; to: string; id: string; error: string }> = [];

  constructor(private readonly core: SimCore) {}

  // ---- delivery plumbing ---------------------------------------------------------------

  /** Sends to the device's live connection, or queues for its next login. */
  deliver(deviceJid: string, node: BinaryNode): void {
    const live = this.core.onlineConnections(deviceJid);
    const track = node.tag === 'message';
    if (live.length === 0) {
      let q = this.offline.get(deviceJid);
      if (!q) this.offline.set(deviceJid, (q = []));
      q.push(node);
      return;
    }
    for (const conn of live) {
      if (track) unackedOf(conn).set(node.attrs['id'] ?? '', node);
      conn.send(node);
    }
  }

  flushOffline(conn: ClientConnection): number {
    const jid = conn.deviceJid;
    if (!jid) return 0;
    const q = this.offline.get(jid) ?? [];
    this.offline.delete(jid);
    for (const node of q) {
      if (node.tag === 'message') unackedOf(conn).set(node.attrs['id'] ?? '', node);
      conn.send(node);
    }
    return q.length;
  }

  dropOffline(deviceJid: string): void {
    this.offline.delete(deviceJid);
  }

  offlineCount(deviceJid: string): number {
    return this.offline.get(deviceJid)?.length ?? 0;
  }

  onConnectionClosed(conn: ClientConnection): void {
    const unacked = conn.data[UNACKED] as Map<string, BinaryNode> | undefined;
    const jid = conn.deviceJid;
    if (!unacked?.size || !jid) return;
    const r = this.core.world.resolve(jid);
    if (!r || !r.user.devices.has(r.device)) return;
    const q = this.offline.get(jid) ?? [];
    this.offline.set(jid, [...unacked.values(), ...q]);
    unacked.clear();
  }

  // ---- stanzas from companions ----------------------------------------------------------

  onClientAck(conn: ClientConnection, node: BinaryNode): void {
    if (node.attrs['class'] === 'message') unackedOf(conn).delete(node.attrs['id'] ?? '');
  }

  onClientMessage(conn: ClientConnection, node: BinaryNode): void {
    const senderJid = conn.deviceJid!;
    const sender = this.core.world.resolve(senderJid);
    const id = node.attrs['id'];
    const to = node.attrs['to'];
    if (!sender || !id || !to) return;
    const stats = this.core.log.device(senderJid);
    stats.messagesSent++;
    this.core.log.global.messagesSent++;

    const nack = this.core.faults.take('nack', senderJid);
    if (nack) {
      this.core.recordFault(conn, nack);
      const sendNack = () => conn.send({ tag: 'ack', attrs: { class: 'message', id, from: to, t: unixNow(), error: String(nack.spec.error) } });
      if (nack.spec.delayMs > 0) this.core.later(nack.spec.delayMs, sendNack);
      else sendNack();
      return;
    }
    const noAck = this.core.faults.take('no-ack', senderJid);
    if (noAck) this.core.recordFault(conn, noAck);
    else {
      const delayed = this.core.faults.take('ack-delay', senderJid);
      if (delayed) this.core.recordFault(conn, delayed);
      const sendAck = () => {
        if (conn.send({ tag: 'ack', attrs: { class: 'message', id, from: to, t: unixNow() } })) {
          stats.messagesAcked++;
          this.core.log.global.messagesAcked++;
        }
      };
      if (delayed && delayed.spec.ms > 0) this.core.later(delayed.spec.ms, sendAck);
      else sendAck();
    }
    void this.relay(conn, node, sender.user, sender.device).catch((err: unknown) => this.core.onError(conn, err));
  }

  private async relay(conn: ClientConnection, node: BinaryNode, sender: SimUser, senderDevice: number): Promise<void> {
    const id = node.attrs['id']!;
    const to = node.attrs['to']!;
    const t = unixNow();
    const conversation = this.core.world.resolve(to)?.user;
    const targets: Array<{ jid: string; enc: BinaryNode }> = [];
    for (const p of children(children(node, 'participants')[0], 'to')) {
      const enc = children(p, 'enc')[0];
      if (enc && p.attrs['jid']) targets.push({ jid: p.attrs['jid'], enc });
    }
    for (const enc of children(node, 'enc')) targets.push({ jid: to, enc });

    const reached = new Set<SimUser>();
    const work: Array<Promise<void>> = [];
    for (const { jid, enc } of targets) {
      const r = this.core.world.resolve(jid);
      if (!r) continue;
      const ciphertext = enc.content instanceof Uint8Array ? enc.content : undefined;
      const encType = enc.attrs['type'] ?? '';
      if (!ciphertext) continue;
      if (r.device === 0) {
        work.push(this.decryptAtPrimary(r.user, sender, senderDevice, id, encType, ciphertext).then((ok) => void (ok && reached.add(r.user))));
      } else if (r.user.devices.has(r.device)) {
        const ownCopy = r.user === sender;
        this.deliver(r.user.deviceJid(r.device), {
          tag: 'message',
          attrs: {
            from: sender.deviceJid(senderDevice),
            id,
            t,
            type: node.attrs['type'] ?? 'text',
            notify: sender.name,
            ...(ownCopy && conversation ? { recipient: conversation.jid } : {}),
          },
          content: [{ tag: 'enc', attrs: { v: '2', type: encType }, content: ciphertext }],
        });
        reached.add(r.user);
      }
    }
    await Promise.all(work);
    if (conversation && conversation !== sender && reached.has(conversation)) {
      this.scheduleReceipts(sender.deviceJid(senderDevice), conversation, id, parseJid(to)?.server === 'lid');
    }
  }

  private async decryptAtPrimary(
    recipient: SimUser,
    sender: SimUser,
    senderDevice: number,
    id: string,
    encType: string,
    ciphertext: Uint8Array,
  ): Promise<boolean> {
    const address = `${sender.number}.${senderDevice}`;
    try {
      // One queue per (recipient, sender device) keeps Signal messages in order across yields.
      const padded = await this.withLock(`${recipient.number}<${address}`, async () => {
        await yieldIfBusy();
        return recipient.signal.decrypt(address, encType, ciphertext);
      });
      const msg = proto.Message.decode(unpadRandomMax16(padded));
      const inner = msg.deviceSentMessage?.message ?? msg;
      recipient.received.push({
        id,
        from: sender.deviceJid(senderDevice),
        fromNumber: sender.number,
        text: textOfMessage(inner),
        at: Date.now(),
        encType: encType === 'pkmsg' ? 'pkmsg' : 'msg',
        fromOwnDevice: recipient === sender,
      });
      return true;
    } catch (err) {
      this.decryptErrors.push({ at: Date.now(), from: address, to: recipient.number, id, error: err instanceof Error ? err.message : String(err) });
      return false;
    }
  }

  private receiptDelays(senderDeviceJid: string, recipient: SimUser): ReceiptDelays | undefined {
    const none = this.core.faults.take('no-receipts', senderDeviceJid);
    if (none) return undefined;
    const delayed = this.core.faults.take('receipt-delay', senderDeviceJid);
    if (delayed) return { deliveredMs: delayed.spec.deliveredMs, readMs: delayed.spec.readMs };
    return recipient.receiptDelays ?? this.core.config.receiptDelays;
  }

  /**
   * Receipts come from the chat as WhatsApp addresses it: the recipient's LID when the message went
   * to its LID or the recipient's chats moved to LID addressing, else its phone number. Either way
   * the id is the message's (Baileys matches receipts by id).
   */
  private scheduleReceipts(senderDeviceJid: string, recipient: SimUser, id: string, toLid: boolean): void {
    const delays = this.receiptDelays(senderDeviceJid, recipient);
    if (!delays) return;
    const from = toLid || recipient.addressing === 'lid' ? recipient.lid : recipient.jid;
    const receipt = (type?: string): BinaryNode => ({
      tag: 'receipt',
      attrs: { id, from, t: unixNow(), ...(type ? { type } : {}) },
    });
    if (delays.deliveredMs === 0) this.deliver(senderDeviceJid, receipt());
    else if (delays.deliveredMs !== null) this.core.later(delays.deliveredMs, () => this.deliver(senderDeviceJid, receipt()));
    if (delays.readMs !== null) {
      const readAt = Math.max(delays.readMs, delays.deliveredMs ?? 0);
      this.core.later(readAt, () => this.deliver(senderDeviceJid, receipt('read')));
    }
  }

  /** Receipts a companion sends for messages it got from a simulated user. */
  onClientReceipt(conn: ClientConnection, node: BinaryNode): void {
    const to = node.attrs['to'] ?? '';
    const type = node.attrs['type'];
    const ids = [node.attrs['id'] ?? '', ...children(children(node, 'list')[0], 'item').map((i) => i.attrs['id'] ?? '')];
    const user = this.core.world.resolve(to)?.user;
    if (type === 'retry') {
      // The device could not decrypt: the sender's phone answers as real senders do (see retry.ts).
      this.onRetryReceipt(conn, user, node);
      conn.send({ tag: 'ack', attrs: { class: 'receipt', id: node.attrs['id'] ?? '', from: to, type } });
      return;
    }
    for (const id of ids) {
      // For a message it decrypted, Baileys answers with this receipt instead of an ack.
      unackedOf(conn).delete(id);
      const sent = user?.sent.get(id);
      if (!sent || !conn.deviceJid) continue;
      // Baileys reports delivery as `inactive` unless it marks itself online.
      if ((!type || type === 'inactive') && !sent.deliveredTo.includes(conn.deviceJid)) sent.deliveredTo.push(conn.deviceJid);
      if ((type === 'read' || type === 'read-self') && !sent.readBy.includes(conn.deviceJid)) sent.readBy.push(conn.deviceJid);
    }
    conn.send({ tag: 'ack', attrs: { class: 'receipt', id: node.attrs['id'] ?? '', from: to, ...(type ? { type } : {}) } });
  }

  // ---- simulated users sending ----------------------------------------------------------

  private resolveTarget(to: string): SimUser {
    if (typeof to !== 'string') throw new SimInputError('to must be a phone number or a JID');
    const user = isValidNumber(to) ? this.core.world.user(to) : parseJid(to) ? this.core.world.resolve(to)?.user : undefined;
    if (!user) {
      if (!isValidNumber(to) && !parseJid(to)) throw new SimInputError(`to must be a phone number or a JID, got ${JSON.stringify(to)}`);
      throw new SimNotFoundError(`no simulated user ${to}`);
    }
    return user;
  }

  async sendText(sender: SimUser, to: string, text: string, opts: { id?: string } = {}): Promise<{ id: string; devices: number }> {
    if (typeof text !== 'string' || text.length === 0) throw new SimInputError('text must be a non-empty string');
    const target = this.resolveTarget(to);
    if (target === sender) throw new SimInputError('a user cannot send to itself');
    const id = opts.id ?? newMessageId();
    if (typeof id !== 'string' || !/^[A-Za-z0-9._-]{1,128}$/.test(id)) throw new SimInputError('id must be 1-128 of [A-Za-z0-9._-]');
    if (sender.sent.has(id)) throw new SimConflictError(`message id ${id} was already sent by ${sender.number}; use redeliver`);
    const entry: SentText = { id, to: target.number, text, t: Math.floor(Date.now() / 1000), deliveredTo: [], readBy: [] };
    sender.sent.set(id, entry);
    this.core.markDirty();
    return { id, devices: await this.encryptAndDeliver(sender, target, entry) };
  }

  private onRetryReceipt(conn: ClientConnection, sender: SimUser | undefined, node: BinaryNode): void {
    const deviceJid = conn.deviceJid;
    const r = deviceJid ? this.core.world.resolve(deviceJid) : undefined;
    const device = r?.user.devices.get(r.device);
    if (!deviceJid || !r || !device) return;
    const parsed = parseRetryReceipt(node, { expectedIdentity: device.identityPublicKey });
    if (!parsed.ok) return this.malformedRetry(conn, `retry receipt ${node.attrs['id'] ?? '?'} ignored: ${parsed.error}`);
    const { receipt } = parsed;
    // Only messages a simulated user sent can be resent; a companion's own messages are its business.
    const entry = sender?.sent.get(receipt.id);
    if (!sender || !entry) return;
    if (receipt.keysError) this.malformedRetry(conn, `retry receipt ${receipt.id} count=${receipt.count}: keys rejected (${receipt.keysError}), handled as without keys`);
    void this.answerRetry(conn, sender, r.user, device, entry, receipt).catch((err: unknown) => this.core.onError(conn, err));
  }

  private malformedRetry(conn: ClientConnection, detail: string): void {
    this.core.log.global.retryReceiptsMalformed++;
    this.core.log.record({ type: 'error', connectionId: conn.id, ...(conn.deviceJid ? { deviceJid: conn.deviceJid } : {}), detail });
  }

  /**
   * Resends `entry` to the one device that asked, after rebuilding the session when the rules say
   * so (RetryPolicy): a rebuilt session's first message is a `pkmsg` the device can decrypt even
   * when it has lost, or never had, the state the old session relied on.
   */
  private async answerRetry(
    conn: ClientConnection,
    sender: SimUser,
    target: SimUser,
    device: LinkedDevice,
    entry: SentText,
    { count, errorCode, registrationId, keys }: RetryReceipt,
  ): Promise<void> {
    const deviceJid = target.deviceJid(device.id);
    const address = `${target.number}.${device.id}`;
    const stats = this.core.log.device(deviceJid);
    const record = (detail: string) => this.core.log.record({ type: 'retry', connectionId: conn.id, deviceJid, detail: `${entry.id} count=${count} from ${sender.number}: ${detail}` });
    const sent = await this.withLock(`${sender.number}>${address}`, async () => {
      const hasSession = sender.signal.hasSession(address);
      const known = sender.signal.remoteRegistrationId(address);
      const decision: RetryDecision = this.retries.decide({
        messageId: entry.id,
        deviceJid,
        address,
        count,
        ...(errorCode !== undefined ? { errorCode } : {}),
        hasKeys: keys !== undefined,
        hasSession,
        registrationChanged: hasSession && registrationId !== undefined && known !== undefined && known !== registrationId,
      });
      if (decision.action === 'refuse') return { refused: decision.reason };
      const { rebuild } = decision;
      if (rebuild) {
        const bundle = rebuild.from === 'receipt-keys' ? keys! : this.serverBundle(device);
        await sender.signal.initOutgoing(address, bundle);
        if (rebuild.from === 'server-bundle') this.retries.recordRebuild(address);
        this.core.markDirty();
        stats.retrySessionRebuilds++;
        this.core.log.global.retrySessionRebuilds++;
      }
      const encrypted = await sender.signal.encrypt(address, encodeWAMessage({ conversation: entry.text }));
      return { ...encrypted, rebuild };
    });
    if ('refused' in sent) {
      this.core.log.global.retryLimitReached++;
      record(`not answered: ${sent.refused}`);
      return;
    }
    this.deliverEncrypted(sender, target, device.id, entry, sent.type, sent.ciphertext, { count: String(count) });
    stats.retryReceipts++;
    this.core.log.global.retryReceipts++;
    record(`resent as ${sent.type} ${sent.rebuild ? `on a new session from ${sent.rebuild.from} (${sent.rebuild.reason})` : 'on the current session'}`);
  }

  /** What `iq encrypt get <key>` would hand out for a companion: its signed pre-key and one uploaded one-time pre-key. */
  private serverBundle(device: LinkedDevice): PreKeyBundle {
    const preKey = takeUploadedPreKey(device);
    this.core.markDirty();
    return {
      registrationId: device.registrationId,
      identityKey: device.identityPublicKey,
      signedPreKey: device.signedPreKey,
      ...(preKey ? { preKey } : {}),
    };
  }

  /** Sends an already sent message again: same id and content, freshly encrypted (WhatsApp's redelivery). */
  async redeliver(sender: SimUser, id: string): Promise<{ id: string; devices: number }> {
    const entry = sender.sent.get(id);
    if (!entry) throw new SimNotFoundError(`${sender.number} never sent message ${id}`);
    const target = this.core.world.user(entry.to);
    if (!target) throw new SimNotFoundError(`recipient ${entry.to} no longer exists`);
    return { id, devices: await this.encryptAndDeliver(sender, target, entry) };
  }

  private async encryptAndDeliver(sender: SimUser, target: SimUser, entry: SentText): Promise<number> {
    const plaintext = encodeWAMessage({ conversation: entry.text });
    let count = 0;
    for (const device of [...target.devices.values()]) {
      const address = `${target.number}.${device.id}`;
      const { type, ciphertext } = await this.withLock(`${sender.number}>${address}`, async () => {
        if (!sender.signal.hasSession(address)) await sender.signal.initOutgoing(address, this.serverBundle(device));
        return sender.signal.encrypt(address, plaintext);
      });
      this.deliverEncrypted(sender, target, device.id, entry, type, ciphertext);
      count++;
    }
    return count;
  }

  private deliverEncrypted(
    sender: SimUser,
    target: SimUser,
    deviceId: number,
    entry: SentText,
    type: 'pkmsg' | 'msg',
    ciphertext: Uint8Array,
    encAttrs: Record<string, string> = {},
  ): void {
    this.deliver(target.deviceJid(deviceId), {
      tag: 'message',
      attrs: { ...addressingAttrs(sender), id: entry.id, t: String(entry.t), type: 'text', notify: sender.name },
      content: [{ tag: 'enc', attrs: { v: '2', type, ...encAttrs }, content: ciphertext }],
    });
  }

  /**
   * The phone's history sync to a device it just linked (history-sync.ts): a peer message from the
   * phone's own JID (`category="peer"`), encrypted on the phone's Signal session with that device.
   * Sent once per link, after the device's first login; queued like any message while it is offline.
   */
  async sendHistorySync(phone: SimUser, device: LinkedDevice): Promise<{ id: string; payloadBytes: number; inflatedBytes: number } | null> {
    const options = this.core.config.historySync;
    if (!options || device.historySynced) return null;
    device.historySynced = true;
    this.core.markDirty();
    const contacts = this.core.world.users().filter((u) => u !== phone && u.kind === 'contact');
    const { message, payloadBytes, inflatedBytes } = historySyncNotification(initialBootstrap(phone, contacts, options));
    const address = `${phone.number}.${device.id}`;
    const { type, ciphertext } = await this.withLock(`${phone.number}>${address}`, async () => {
      if (!phone.signal.hasSession(address)) await phone.signal.initOutgoing(address, this.serverBundle(device));
      return phone.signal.encrypt(address, encodeWAMessage(message));
    });
    const id = newMessageId();
    this.deliver(phone.deviceJid(device.id), {
      tag: 'message',
      attrs: { from: phone.jid, id, t: unixNow(), type: 'text', category: 'peer', push_priority: 'high_force' },
      content: [{ tag: 'enc', attrs: { v: '2', type }, content: ciphertext }],
    });
    return { id, payloadBytes, inflatedBytes };
  }

  private async withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(key) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.locks.set(key, tail);
    try {
      return await run;
    } finally {
      if (this.locks.get(key) === tail) this.locks.delete(key);
    }
  }
}
