import { appendFile, cp, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { encodeEntry, InboundJournal, JOURNAL_DIR, type JournalEvent, type JournalOptions } from '../src/inbound/inbound-journal.ts';
import type { InboundMessage } from '../src/inbound/inbound-message.ts';
import { createLogger } from '../src/log.ts';
import { LineCollector, tempDir, waitFor } from './helpers.ts';

let root: { dir: string; cleanup: () => Promise<void> };
let dir: string;
let lines: LineCollector;
let events: Map<JournalEvent, number>;
const open: InboundJournal[] = [];

beforeEach(async () => {
  root = await tempDir('wafleet-journal-');
  dir = path.join(root.dir, JOURNAL_DIR);
  lines = new LineCollector();
  events = new Map();
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((j) => j.close()));
  await root.cleanup();
});

async function openJournal(options: Partial<JournalOptions> = {}) {
  const result = await InboundJournal.open({
    dir,
    log: createLogger({ level: 'debug', destination: lines }),
    onEvent: (e, n = 1) => events.set(e, (events.get(e) ?? 0) + n),
    ...options,
  });
  open.push(result.journal);
  return result;
}

const msg = (i: number, over: Partial<InboundMessage> = {}): InboundMessage => ({
  accountId: 'acc-1',
  chatJid: '15550001111@s.whatsapp.net',
  waId: `WA${String(i).padStart(4, '0')}`,
  from: '15550001111@s.whatsapp.net',
  fromName: 'Ann',
  text: `secret text ${i} ünïcode`,
  sentAtMs: 1_700_000_000_000 + i,
  handedOverAt: 1_700_000_000_500 + i,
  ...over,
});

async function segments(): Promise<Array<{ name: string; size: number }>> {
  const names = (await readdir(dir)).sort();
  return Promise.all(names.map(async (name) => ({ name, size: (await stat(path.join(dir, name))).size })));
}
const diskBytes = async () => (await segments()).reduce((n, s) => n + s.size, 0);

/**
 * What a restarted process would replay. Read from a copy: the host lock keeps a second process
 * off a live journal, and opening one deletes the segments it finds empty.
 */
async function replayedByNextStart(): Promise<string[]> {
  const copy = path.join(root.dir, `copy-${++copies}`);
  await cp(dir, copy, { recursive: true });
  const { journal, replay } = await InboundJournal.open({ dir: copy, log: createLogger({ level: 'silent' }) });
  await journal.close();
  return replay.map((m) => m.waId);
}
let copies = 0;

describe('inbound journal', () => {
  it('keeps every unstored message across a restart, in arrival order, each once, private to the owner', async () => {
    const { journal, replay } = await openJournal();
    expect(replay).toEqual([]);
    for (let i = 0; i < 5; i++) expect(journal.record(msg(i))).toBe(true);
    // A redelivery of a message already journaled.
    expect(journal.record(msg(2))).toBe(true);
    await journal.flush();

    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    const segs = await segments();
    expect(segs).toHaveLength(1);
    expect((await stat(path.join(dir, segs[0]!.name))).mode & 0o777).toBe(0o600);

    await journal.close();
    const next = await openJournal();
    expect(next.replay).toEqual([0, 1, 2, 3, 4].map((i) => msg(i)));
    expect(next.journal.pending).toBe(5);
  });

  it('drops stored messages from disk: the active segment empties, a replayed one is deleted', async () => {
    const { journal } = await openJournal();
    for (let i = 0; i < 3; i++) journal.record(msg(i));
    journal.stored('acc-1', 'WA0001');
    await journal.flush();
    expect(await replayedByNextStart()).toEqual(['WA0000', 'WA0002']);
    journal.stored('acc-1', 'WA0000');
    journal.stored('acc-1', 'WA0002');
    expect(journal.pending).toBe(0);
    await journal.flush();
    // No stored text lingers: the bytes are gone, not just marked done.
    expect(await diskBytes()).toBe(0);
    expect(await replayedByNextStart()).toEqual([]);

    // A crash before storing: the next start replays, and storing those deletes the old segment.
    for (let i = 10; i < 13; i++) journal.record(msg(i));
    await journal.close();
    const next = await openJournal();
    expect(next.replay.map((m) => m.waId)).toEqual(['WA0010', 'WA0011', 'WA0012']);
    const replayed = (await segments()).map((seg) => seg.name);
    for (const m of next.replay) next.journal.stored(m.accountId, m.waId);
    await waitFor(async () => (await diskBytes()) === 0 && !(await segments()).some((seg) => replayed.includes(seg.name)), {
      timeoutMs: 5_000,
      label: 'replayed segment deleted',
    });
  });

  it('skips torn and corrupt entries with a warning and replays the rest', async () => {
    const { journal } = await openJournal();
    for (let i = 0; i < 3; i++) journal.record(msg(i));
    await journal.close();
    const file = path.join(dir, (await segments())[0]!.name);
    const good = await readFile(file, 'utf8');
    const [first, second, third] = good.trimEnd().split('\n');
    // A bit flipped in the middle entry, then a write cut short by a power loss.
    const flipped = second!.replace('secret text 1', 'secret text 7');
    const torn = encodeEntry(msg(3)).slice(0, 40);
    await writeFile(file, [first, flipped, third].join('\n') + '\n' + torn);
    // A segment that is nothing but garbage.
    await writeFile(path.join(dir, 'seg-000000000099.log'), Buffer.from([0xff, 0xfe, 0x00, 0x0a, 0x41]));

    const next = await openJournal();
    expect(next.replay.map((m) => m.waId)).toEqual(['WA0000', 'WA0002']);
    expect(events.get('torn')).toBe(4);
    const warnings = lines.lines().filter((l) => l.message === 'skipping torn entries in the inbound journal');
    expect(warnings).toHaveLength(2);
    // Message text and numbers are personal data: never in a log line.
    expect(lines.text).not.toContain('secret text');
    expect(lines.text).not.toContain('15550001111');
    // The all-garbage segment holds nothing to replay and is deleted; new entries go after it.
    await waitFor(async () => !(await segments()).some((s) => s.name === 'seg-000000000099.log'), { timeoutMs: 5_000, label: 'garbage segment deleted' });
    next.journal.record(msg(20));
    expect((await segments()).map((s) => s.name).at(-1)).toBe('seg-000000000100.log');
  });

  it('rotates segments and deletes each once all of its messages are stored', async () => {
    const { journal } = await openJournal({ segmentBytes: 1_000 });
    for (let i = 0; i < 20; i++) journal.record(msg(i));
    await journal.flush();
    const before = await segments();
    expect(before.length).toBeGreaterThan(3);
    // Storing everything but the newest message frees every older segment.
    for (let i = 0; i < 19; i++) journal.stored('acc-1', msg(i).waId);
    await waitFor(async () => (await segments()).length === 1, { timeoutMs: 5_000, label: 'old segments deleted' });
    expect(await replayedByNextStart()).toEqual(['WA0019']);
  });

  it('a burst shares fsyncs (group commit)', async () => {
    const { journal } = await openJournal();
    for (let i = 0; i < 500; i++) journal.record(msg(i));
    await journal.flush();
    expect(events.get('journaled')).toBe(500);
    expect(events.get('fsync') ?? 0).toBeGreaterThan(0);
    expect(events.get('fsync')!).toBeLessThan(10);
    expect(await replayedByNextStart()).toHaveLength(500);
  });

  it('past its size bound a message is not journaled (the caller still stores it), and journaling resumes once it drains', async () => {
    const entry = Buffer.byteLength(encodeEntry(msg(0)));
    const { journal } = await openJournal({ maxBytes: entry * 3 });
    expect([0, 1, 2, 3].map((i) => journal.record(msg(i)))).toEqual([true, true, true, false]);
    expect(events.get('unjournaled')).toBe(1);
    expect(lines.lines().filter((l) => l.message?.toString().startsWith('inbound journal full'))).toHaveLength(1);
    for (let i = 0; i < 3; i++) journal.stored('acc-1', msg(i).waId);
    expect(journal.record(msg(4))).toBe(true);
    await journal.flush();
    expect(await replayedByNextStart()).toEqual(['WA0004']);
  });

  it('never appends after a torn tail: a new process writes a new segment', async () => {
    const { journal } = await openJournal();
    journal.record(msg(0));
    await journal.flush();
    // A partial line at the end, as a kill mid-write or a full disk leaves: nothing may glue onto it.
    const file = path.join(dir, (await segments())[0]!.name);
    await appendFile(file, '0123');
    await journal.close();
    const next = await openJournal();
    expect(next.replay.map((m) => m.waId)).toEqual(['WA0000']);
    next.journal.record(msg(1));
    await next.journal.flush();
    expect(await replayedByNextStart()).toEqual(['WA0000', 'WA0001']);
  });
});
