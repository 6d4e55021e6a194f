import { proto } from '@whiskeysockets/baileys';
import { describe, expect, it } from 'vitest';
import { encodeEntry, InboundJournal } from '../src/inbound/inbound-journal.ts';
import { chatAddresses, phoneOfJid, toInbound, type InboundMessage } from '../src/inbound/inbound-message.ts';
import { threadCandidates } from '../src/inbound/inbound-writer.ts';
import { createLogger } from '../src/log.ts';
import { syncMappingsOnly } from '../src/session/session-driver.ts';
import { tempDir } from './helpers.ts';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

const PN = '15550001001@s.whatsapp.net';
const LID = '123456789012345@lid';

describe('chat addresses of a message', () => {
  it('takes the phone number and LID from the chat as addressed and Baileys’ remoteJidAlt', () => {
    expect(chatAddresses(PN, LID)).toEqual({ pnJid: PN, lidJid: LID });
    expect(chatAddresses(LID, PN)).toEqual({ pnJid: PN, lidJid: LID });
    expect(chatAddresses(LID, '15550001001:3@s.whatsapp.net')).toEqual({ pnJid: PN, lidJid: LID });
    expect(chatAddresses(LID, undefined)).toEqual({ pnJid: null, lidJid: LID });
    expect(chatAddresses(PN, null)).toEqual({ pnJid: PN, lidJid: null });
    // An alternate of the same kind is not the other address.
    expect(chatAddresses(PN, '15550001002@s.whatsapp.net')).toEqual({ pnJid: PN, lidJid: null });
    expect(chatAddresses('120363000000000001@g.us', LID)).toEqual({ pnJid: null, lidJid: null });
  });

  it('toInbound carries both for a LID-addressed message, and keeps `from` as addressed', () => {
    const m = toInbound('wa-01', { key: { remoteJid: '123456789012345:0@lid', remoteJidAlt: PN, fromMe: false, id: 'ID1' }, message: { conversation: 'hi' }, messageTimestamp: 1_700_000_000, pushName: 'Lia' });
    expect(m).toMatchObject({ chatJid: LID, from: LID, pnJid: PN, lidJid: LID, text: 'hi' });
  });

  it('phone numbers are stored in E.164', () => {
    expect(phoneOfJid(PN)).toBe('+15550001001');
    expect(phoneOfJid('15550001001:12@s.whatsapp.net')).toBe('+15550001001');
    expect(phoneOfJid(LID)).toBeNull();
    expect(phoneOfJid(null)).toBeNull();
  });
});

describe('thread candidates', () => {
  it('phone number first, then LID; groups and unknowns by their chat JID', () => {
    expect(threadCandidates({ chatJid: LID, pnJid: PN, lidJid: LID })).toEqual([PN, LID]);
    expect(threadCandidates({ chatJid: LID, pnJid: null, lidJid: LID })).toEqual([LID]);
    expect(threadCandidates({ chatJid: '1203@g.us' })).toEqual(['1203@g.us']);
  });
});

describe('history sync setting', () => {
  it('keeps the mapping-bearing chunks and drops the chat history ones', () => {
    const T = proto.HistorySync.HistorySyncType;
    expect([T.INITIAL_BOOTSTRAP, T.PUSH_NAME, T.NON_BLOCKING_DATA].map((syncType) => syncMappingsOnly({ syncType }))).toEqual([true, true, true]);
    // RECENT off is also what keeps Baileys from waiting 20 s for history after a first link.
    expect([T.RECENT, T.FULL, T.ON_DEMAND, T.INITIAL_STATUS_V3].map((syncType) => syncMappingsOnly({ syncType }))).toEqual([false, false, false, false]);
  });
});

describe('inbound journal and LID addressing', () => {
  it('replays the phone number and LID, and still reads entries written before them', async () => {
    const root = await tempDir('wafleet-journal-lid-');
    try {
      const dir = path.join(root.dir, '.inbound-journal');
      await mkdir(dir, { recursive: true });
      const base: InboundMessage = { accountId: 'wa-01', chatJid: LID, waId: 'A1', from: LID, fromName: null, text: 'x', sentAtMs: 1, handedOverAt: 2 };
      const withBoth = { ...base, pnJid: PN, lidJid: LID };
      const old = { ...base, waId: 'A2', chatJid: PN, from: PN };
      await writeFile(path.join(dir, 'seg-000000000001.log'), encodeEntry(withBoth) + encodeEntry(old));
      const { journal, replay } = await InboundJournal.open({ dir, log: createLogger({ level: 'silent' }) });
      await journal.close();
      expect(replay).toEqual([withBoth, old]);
    } finally {
      await root.cleanup();
    }
  });
});
