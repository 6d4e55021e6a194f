import { randomBytes, randomInt } from 'node:crypto';

export const S_WHATSAPP_NET = 's.whatsapp.net';

export function generateRegistrationId(): number {
  return randomBytes(2).readUInt16BE(0) & 0x3fff;
}

/** E.164 digits only, 6 to 15 of them, no leading zero. */
export function isValidNumber(value: unknown): value is string {
  return typeof value === 'string' && /^[1-9]\d{5,14}$/.test(value);
}

/** A LID user part looks like a long random number, unrelated to the phone number. */
export function newLidUser(taken: (candidate: string) => boolean): string {
  for (;;) {
    const candidate = `${randomInt(1, 10)}${String(randomInt(0, 1e9)).padStart(9, '0')}${String(randomInt(0, 1e5)).padStart(5, '0')}`;
    if (!taken(candidate)) return candidate;
  }
}

export function pnJid(number: string, device = 0): string {
  return device ? `${number}:${device}@${S_WHATSAPP_NET}` : `${number}@${S_WHATSAPP_NET}`;
}

export function lidJid(lidUser: string, device = 0): string {
  return device ? `${lidUser}:${device}@lid` : `${lidUser}@lid`;
}

export interface ParsedJid {
  user: string;
  device: number;
  server: string;
}

/** Parses `user[_agent][:device]@server`; returns undefined for anything else. */
export function parseJid(jid: string): ParsedJid | undefined {
  const at = jid.indexOf('@');
  if (at <= 0) return undefined;
  const server = jid.slice(at + 1);
  const userPart = jid.slice(0, at);
  const [userAgent, device] = userPart.split(':');
  const user = (userAgent ?? '').split('_')[0] ?? '';
  if (!user) return undefined;
  const dev = device === undefined ? 0 : Number(device);
  if (!Number.isInteger(dev) || dev < 0) return undefined;
  return { user, device: dev, server };
}

export function newMessageId(): string {
  return `3EB0${randomBytes(8).toString('hex').toUpperCase()}`;
}

export function newRef(): string {
  return `2@${randomBytes(30).toString('base64')}`;
}
