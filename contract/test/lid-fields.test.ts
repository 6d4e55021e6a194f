import { describe, expect, it } from 'vitest';
import { OutboxDocSchema, ThreadDocSchema, ThreadMessageDocSchema, threadId, recipientToJid } from '../src/index.ts';

const ts = { toMillis: () => 1_700_000_000_000 };
const thread = { accountId: 'wa-01', chatJid: '14155550123@s.whatsapp.net', lastMessageAt: ts, lastMessageId: 'ABC', updatedAt: ts, expireAt: null };
const message = {
  accountId: 'wa-01',
  chatJid: '14155550123@s.whatsapp.net',
  waMessageId: 'ABC',
  direction: 'inbound',
  from: '123456789012345@lid',
  fromName: null,
  text: 'hi',
  sentAt: ts,
  receivedAt: ts,
  expireAt: null,
};
const outbox = { accountId: 'wa-01', to: '+14155550123', text: 'hello', createdAt: ts, createdBy: 'uid', status: 'sent' };

describe('LID addressing fields (issue 14)', () => {
  it('threads and messages written before them stay valid', () => {
    expect(ThreadDocSchema.safeParse(thread).success).toBe(true);
    expect(ThreadMessageDocSchema.safeParse({ ...message, from: message.chatJid }).success).toBe(true);
    expect(OutboxDocSchema.safeParse(outbox).success).toBe(true);
  });

  it('threads and messages carry phone (E.164) and lid (…@lid) when known', () => {
    expect(ThreadDocSchema.parse({ ...thread, phone: '+14155550123', lid: '123456789012345@lid' })).toMatchObject({ phone: '+14155550123', lid: '123456789012345@lid' });
    expect(ThreadMessageDocSchema.parse({ ...message, phone: '+14155550123', lid: '123456789012345@lid' })).toMatchObject({ from: '123456789012345@lid' });
    // A thread first known by LID only.
    expect(ThreadDocSchema.safeParse({ ...thread, chatJid: '123456789012345@lid', lid: '123456789012345@lid', phone: null }).success).toBe(true);
    for (const bad of [{ phone: '14155550123' }, { phone: '+1415 555' }, { lid: '14155550123@s.whatsapp.net' }, { lid: '123:4@lid' }]) {
      expect(ThreadDocSchema.safeParse({ ...thread, ...bad }).success, JSON.stringify(bad)).toBe(false);
    }
  });

  it('the outbox records the chat a message went to', () => {
    expect(OutboxDocSchema.parse({ ...outbox, sentToJid: '123456789012345@lid' }).sentToJid).toBe('123456789012345@lid');
    expect(OutboxDocSchema.safeParse({ ...outbox, sentToJid: 'x' }).success).toBe(false);
  });

  it('an app finds the phone-number thread from the outbox recipient', () => {
    expect(threadId('wa-01', recipientToJid('+14155550123'))).toBe('wa-01__14155550123@s.whatsapp.net');
  });
});
