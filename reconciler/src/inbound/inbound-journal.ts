/**
 * The inbound journal: every decrypted inbound text, on the sessions disk, from the moment Baileys
 * decrypts it until its Firestore document has landed. Once Baileys has sent its delivery receipt
 * WhatsApp never sends the message again, so without this a kill -9 (or a power loss) between the
 * receipt and the Firestore commit loses it for good.
 *
 * Durability, and what window is left (see inbound-capture.ts for where `record` is called):
 * - `record` appends with a synchronous write(2) inside Baileys' synchronous decrypt-time hook, so
 *   the entry is in the kernel before Baileys has even built the receipt. Killing the process at
 *   any later point (kill -9, OOM, a crash) cannot lose it: the kernel writes it out regardless.
 * - Surviving a power loss or kernel crash needs fdatasync, which takes milliseconds and cannot
 *   finish before the receipt (Baileys sends it right after the hook returns, without yielding).
 *   The fsyncs run in the background as a group commit (one per segment in flight; entries that
 *   arrive meanwhile share the next), so a burst costs a few fsyncs, not one per message. A machine
 *   that loses power within that one fsync latency of a receipt can still lose that message.
 *
 * Layout: `<SESSIONS_PATH>/.inbound-journal/seg-<seq>.log`, directory 0700, files 0600 (message
 * text and phone numbers are personal data; they are never logged). Each line is one entry:
 * `<sha256 prefix> <json>\n`. A line that is torn (a power loss mid-write, a full disk) or does not
 * verify is skipped with a warning on replay; it never stops the replay.
 *
 * Removal: a segment is deleted once every entry in it has been stored; the active segment is
 * truncated instead whenever it holds nothing unstored (the common case between bursts), so stored
 * text does not linger on disk. An entry stored while its segment must stay gets a small `stored`
 * line (ids only, not fsynced) so a replay skips it; should that line be lost, the writer
 * recognises the replayed message as a duplicate (documents are keyed by WhatsApp id).
 *
 * Bounded: past `maxBytes` on disk, or when a write fails (ENOSPC, EIO), a message is not journaled
 * (counted and warned about, without content) and still goes to Firestore exactly as before the
 * journal existed; it is then only as safe as it was then.
 */
import { createHash } from 'node:crypto';
import { closeSync, fdatasync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { chmod, readdir, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import { z } from 'zod';
import { fsyncDir, mkdirDurable, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE } from '../util/fs-atomic.ts';
import type { InboundMessage } from './inbound-message.ts';

export const JOURNAL_DIR = '.inbound-journal';
const SEGMENT_RE = /^seg-(\d{12})\.log$/;
const HASH_CHARS = 16;
const fdatasyncAsync = promisify(fdatasync);

export type JournalEvent = 'journaled' | 'replayed' | 'torn' | 'unjournaled' | 'fsync';

export interface JournalOptions {
  dir: string;
  log: Logger;
  /** Journal size on disk past which new messages are not journaled. Default 64 MiB. */
  maxBytes?: number;
  /** A segment this large is closed and the next entry starts a new one. Default 1 MiB. */
  segmentBytes?: number;
  onEvent?: (event: JournalEvent, count?: number) => void;
  onBytes?: (bytes: number) => void;
}

const StoredSchema = z.object({ stored: z.object({ accountId: z.string().min(1), waId: z.string().min(1) }) }).strict();
const EntrySchema = z.object({
  accountId: z.string().min(1),
  chatJid: z.string().min(1),
  // Absent in entries journaled before LID addressing: the writer then knows only chatJid.
  pnJid: z.string().min(1).nullish(),
  lidJid: z.string().min(1).nullish(),
  waId: z.string().min(1),
  from: z.string().min(1),
  fromName: z.string().nullable(),
  text: z.string(),
  sentAtMs: z.number().finite(),
  handedOverAt: z.number().finite(),
});

class Segment {
  fd: number | null = null;
  size = 0;
  /** Entries in this segment not stored yet. */
  live = 0;
  /** A write or fsync failed: nothing more is appended; it goes once its entries are stored. */
  broken = false;
  /** Set once the directory entry is known durable (replayed segments already are). */
  dirSynced = false;
  dirty = false;
  syncing: Promise<void> | null = null;
  deleted = false;
  constructor(
    readonly seq: number,
    readonly file: string,
  ) {}
}

const keyOf = (accountId: string, waId: string) => `${accountId}\u0000${waId}`;

export function encodeEntry(msg: InboundMessage): string {
  const json = JSON.stringify({
    accountId: msg.accountId,
    chatJid: msg.chatJid,
    ...(msg.pnJid ? { pnJid: msg.pnJid } : {}),
    ...(msg.lidJid ? { lidJid: msg.lidJid } : {}),
    waId: msg.waId,
    from: msg.from,
    fromName: msg.fromName,
    text: msg.text,
    sentAtMs: msg.sentAtMs,
    handedOverAt: msg.handedOverAt,
  });
  return line(json);
}

function encodeStored(accountId: string, waId: string): string {
  return line(JSON.stringify({ stored: { accountId, waId } }));
}

function line(json: string): string {
  return `${hashOf(json)} ${json}\n`;
}

type JournalRecord = { entry: InboundMessage } | { stored: { accountId: string; waId: string } };

function hashOf(json: string): string {
  return createHash('sha256').update(json).digest('hex').slice(0, HASH_CHARS);
}

/** The records of one segment's bytes, in order, and how many lines did not verify. */
export function decodeSegment(bytes: Buffer): { records: JournalRecord[]; torn: number } {
  const lines = bytes.toString('utf8').split('\n');
  // Whatever follows the last newline is a record whose write did not finish.
  let torn = lines.pop() ? 1 : 0;
  const records: JournalRecord[] = [];
  for (const text of lines) {
    if (text === '') continue;
    const record = decodeLine(text);
    if (record) records.push(record);
    else torn++;
  }
  return { records, torn };
}

function decodeLine(text: string): JournalRecord | null {
  const json = text.slice(HASH_CHARS + 1);
  if (text[HASH_CHARS] !== ' ' || hashOf(json) !== text.slice(0, HASH_CHARS)) return null;
  try {
    const value: unknown = JSON.parse(json);
    const stored = StoredSchema.safeParse(value);
    if (stored.success) return stored.data;
    const entry = EntrySchema.safeParse(value);
    return entry.success ? { entry: entry.data } : null;
  } catch {
    return null;
  }
}

export class InboundJournal {
  private active: Segment | null = null;
  private readonly segments = new Set<Segment>();
  /** Unstored entry → the segments holding a copy of it. */
  private readonly entries = new Map<string, Set<Segment>>();
  private bytes = 0;
  private nextSeq: number;
  private closed = false;
  private fullWarned = false;
  /** While replaying, segments are retired only once every record has been read. */
  private opening = true;

  private constructor(
    private readonly o: Required<Pick<JournalOptions, 'dir' | 'log' | 'maxBytes' | 'segmentBytes'>> & Pick<JournalOptions, 'onEvent' | 'onBytes'>,
    nextSeq: number,
  ) {
    this.nextSeq = nextSeq;
  }

  /**
   * Opens the journal and reads what an earlier process left: the unstored messages, oldest first,
   * each once. They stay journaled until `stored` is called for them.
   */
  static async open(options: JournalOptions): Promise<{ journal: InboundJournal; replay: InboundMessage[] }> {
    const { dir, log } = options;
    await mkdirDurable(dir, PRIVATE_DIR_MODE);
    await chmod(dir, PRIVATE_DIR_MODE);
    const names = (await readdir(dir)).filter((n) => SEGMENT_RE.test(n)).sort();
    const lastSeq = names.length ? Number(SEGMENT_RE.exec(names.at(-1)!)![1]) : 0;
    const journal = new InboundJournal({ maxBytes: 64 * 1024 * 1024, segmentBytes: 1024 * 1024, ...options }, lastSeq + 1);
    const replay = new Map<string, InboundMessage>();
    let torn = 0;
    for (const name of names) {
      const seg = new Segment(Number(SEGMENT_RE.exec(name)![1]), path.join(dir, name));
      seg.dirSynced = true;
      seg.broken = true; // an earlier process's segment: read, never appended to
      let bytes: Buffer;
      try {
        bytes = await readFile(seg.file);
      } catch (err) {
        // Left in place for the next start; the messages in it are not lost, only late.
        log.warn({ segment: name, code: (err as NodeJS.ErrnoException).code }, 'cannot read an inbound journal segment; skipping it');
        continue;
      }
      const decoded = decodeSegment(bytes);
      if (decoded.torn > 0) log.warn({ segment: name, skipped: decoded.torn, records: decoded.records.length }, 'skipping torn entries in the inbound journal');
      torn += decoded.torn;
      seg.size = bytes.length;
      journal.bytes += bytes.length;
      journal.segments.add(seg);
      for (const record of decoded.records) {
        if ('stored' in record) {
          replay.delete(keyOf(record.stored.accountId, record.stored.waId));
          journal.release(record.stored.accountId, record.stored.waId, false);
          continue;
        }
        const key = keyOf(record.entry.accountId, record.entry.waId);
        if (!replay.has(key)) replay.set(key, record.entry);
        journal.hold(key, seg);
      }
    }
    journal.opening = false;
    for (const seg of journal.segments) if (seg.live === 0) journal.retire(seg);
    if (torn > 0) options.onEvent?.('torn', torn);
    if (replay.size > 0) options.onEvent?.('replayed', replay.size);
    options.onBytes?.(journal.bytes);
    return { journal, replay: [...replay.values()] };
  }

  /** Messages journaled and not yet stored. */
  get pending(): number {
    return this.entries.size;
  }

  /**
   * Appends `msg` (synchronously: see the module comment) and starts its fsync. False when it was
   * not journaled (full, or the disk failed); the caller stores it anyway.
   */
  record(msg: InboundMessage): boolean {
    if (this.closed) return false;
    const line = Buffer.from(encodeEntry(msg));
    if (this.bytes + line.length > this.o.maxBytes) {
      if (!this.fullWarned) this.o.log.warn({ bytes: this.bytes, maxBytes: this.o.maxBytes }, 'inbound journal full; new messages go to Firestore unjournaled until it drains');
      this.fullWarned = true;
      this.o.onEvent?.('unjournaled');
      return false;
    }
    let seg: Segment | null = null;
    try {
      seg = this.writable();
      const written = writeSync(seg.fd!, line);
      seg.size += written;
      this.bytes += written;
      if (written !== line.length) throw Object.assign(new Error('short write'), { code: 'ESHORT' });
    } catch (err) {
      this.o.log.warn({ code: (err as NodeJS.ErrnoException).code ?? 'unknown' }, 'cannot append to the inbound journal; the message goes to Firestore unjournaled');
      this.o.onEvent?.('unjournaled');
      // A partly written line would glue onto the next one: never append to this segment again.
      if (seg) this.breakSegment(seg);
      return false;
    } finally {
      this.o.onBytes?.(this.bytes);
    }
    this.fullWarned = false;
    this.hold(keyOf(msg.accountId, msg.waId), seg);
    this.scheduleSync(seg);
    this.o.onEvent?.('journaled');
    return true;
  }

  /** The message's document has landed (or it was never going to be stored): forget it. */
  stored(accountId: string, waId: string): void {
    this.release(accountId, waId, true);
  }

  private release(accountId: string, waId: string, markStored: boolean): void {
    const key = keyOf(accountId, waId);
    const segs = this.entries.get(key);
    if (!segs) return;
    this.entries.delete(key);
    let kept = false;
    for (const seg of segs) {
      seg.live--;
      if (seg.live > 0) kept = true;
      else if (seg === this.active && !seg.broken) this.truncate(seg);
      else if (!this.opening) this.retire(seg);
    }
    if (kept && markStored) this.appendStored(accountId, waId);
    // Nothing unstored anywhere: `stored` lines left in the open segment refer to nothing now.
    const active = this.active;
    if (this.entries.size === 0 && active && !active.broken && active.size > 0 && !this.opening) this.truncate(active);
  }

  /** Best effort: if this line is lost, a replay stores the message again as a duplicate. */
  private appendStored(accountId: string, waId: string): void {
    if (this.closed) return;
    let seg: Segment | null = null;
    try {
      // Into the open segment even past its size: a new segment just for ids would outlive its use.
      seg = this.active && !this.active.broken ? this.active : this.writable();
      const bytes = Buffer.from(encodeStored(accountId, waId));
      const written = writeSync(seg.fd!, bytes);
      seg.size += written;
      this.bytes += written;
      if (written !== bytes.length) throw Object.assign(new Error('short write'), { code: 'ESHORT' });
    } catch {
      if (seg) this.breakSegment(seg);
    }
  }

  /** Resolves once everything appended so far has been fsynced (as far as the disk allowed). */
  async flush(): Promise<void> {
    for (;;) {
      const busy = [...this.segments].map((s) => s.syncing).filter((p): p is Promise<void> => p !== null);
      if (busy.length === 0) return;
      await Promise.all(busy);
    }
  }

  /** Flushes and closes the files; unstored entries stay on disk for the next start. */
  async close(): Promise<void> {
    this.closed = true;
    await this.flush();
    for (const seg of this.segments) this.closeFd(seg);
    this.active = null;
  }

  private hold(key: string, seg: Segment): void {
    let segs = this.entries.get(key);
    if (!segs) this.entries.set(key, (segs = new Set()));
    if (segs.has(seg)) return;
    segs.add(seg);
    seg.live++;
  }

  private writable(): Segment {
    const current = this.active;
    if (current && !current.broken && current.size < this.o.segmentBytes) return current;
    if (current) {
      this.active = null;
      if (current.live === 0) this.retire(current);
    }
    const seq = this.nextSeq++;
    const seg = new Segment(seq, path.join(this.o.dir, `seg-${String(seq).padStart(12, '0')}.log`));
    seg.fd = openSync(seg.file, 'a', PRIVATE_FILE_MODE);
    this.segments.add(seg);
    this.active = seg;
    return seg;
  }

  private breakSegment(seg: Segment): void {
    seg.broken = true;
    if (this.active === seg) this.active = null;
    if (seg.live === 0) this.retire(seg);
  }

  /** Everything in the active segment is stored: drop its bytes rather than start a new file. */
  private truncate(seg: Segment): void {
    try {
      ftruncateSync(seg.fd!, 0);
      this.bytes -= seg.size;
      seg.size = 0;
      this.o.onBytes?.(this.bytes);
      this.scheduleSync(seg);
    } catch (err) {
      this.o.log.warn({ code: (err as NodeJS.ErrnoException).code ?? 'unknown' }, 'cannot truncate the inbound journal; starting a new segment');
      this.breakSegment(seg);
    }
  }

  /** Group commit: one fdatasync in flight per segment; appends meanwhile share the next one. */
  private scheduleSync(seg: Segment): void {
    seg.dirty = true;
    if (seg.syncing) return;
    seg.syncing = (async () => {
      while (seg.dirty && seg.fd !== null) {
        seg.dirty = false;
        try {
          await fdatasyncAsync(seg.fd);
          this.o.onEvent?.('fsync');
          if (!seg.dirSynced) {
            await fsyncDir(this.o.dir);
            seg.dirSynced = true;
          }
        } catch (err) {
          // After a failed fsync the kernel may have dropped the pages: this segment cannot be
          // trusted any more. Its messages are still in memory and on their way to Firestore.
          this.o.log.warn({ code: (err as NodeJS.ErrnoException).code ?? 'unknown' }, 'inbound journal fsync failed; starting a new segment');
          seg.dirty = false;
          if (!seg.broken) this.breakSegment(seg);
        }
      }
    })().finally(() => {
      seg.syncing = null;
    });
  }

  /** Deletes a segment none of whose entries is still unstored (after its fsync in flight). */
  private retire(seg: Segment): void {
    if (seg.deleted) return;
    seg.deleted = true;
    if (this.active === seg) this.active = null;
    void (async () => {
      while (seg.syncing) await seg.syncing;
      this.closeFd(seg);
      try {
        await unlink(seg.file);
        this.bytes -= seg.size;
        this.segments.delete(seg);
        this.o.onBytes?.(this.bytes);
        await fsyncDir(this.o.dir);
      } catch (err) {
        this.o.log.warn({ code: (err as NodeJS.ErrnoException).code ?? 'unknown' }, 'cannot delete a stored inbound journal segment');
      }
    })();
  }

  private closeFd(seg: Segment): void {
    if (seg.fd === null) return;
    try {
      closeSync(seg.fd);
    } catch {
      // Closing can report a deferred write error; the segment is being dropped or kept as is.
    }
    seg.fd = null;
  }
}
