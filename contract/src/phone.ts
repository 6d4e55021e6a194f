import { parsePhoneNumberFromString } from 'libphonenumber-js';
import { z } from 'zod';

/**
 * Phone numbers are stored in E.164 ("+14155550123"). We accept any *possible* number
 * (right length for its country) rather than only numbers libphonenumber knows to be assigned:
 * new ranges appear faster than the library updates, and WhatsApp itself is the authority.
 */
export function normalizeE164(input: string): string | null {
  const trimmed = input.trim();
  if (!/^\+[1-9][0-9 ().-]{5,20}$/.test(trimmed)) return null;
  const parsed = parsePhoneNumberFromString(trimmed);
  if (!parsed || !parsed.isPossible()) return null;
  return parsed.number;
}

export const E164Schema = z
  .string()
  .max(32)
  .transform((value, ctx) => {
    const e164 = normalizeE164(value);
    if (!e164) {
      ctx.addIssue({ code: 'custom', message: 'must be a phone number in international format, e.g. +14155550123' });
      return z.NEVER;
    }
    return e164;
  });

/** A WhatsApp JID wafleet can address: a user, a LID or a group. */
export const JID_RE = /^(?:[0-9]{5,20}(?::[0-9]{1,3})?@s\.whatsapp\.net|[0-9]{5,20}@lid|[0-9]{5,30}(?:-[0-9]{5,15})?@g\.us)$/;

/** Recipient of an outgoing message: E.164 (normalized) or a JID (kept as given). */
export const RecipientSchema = z
  .string()
  .max(64)
  .transform((value, ctx) => {
    const v = value.trim();
    if (v.includes('@')) {
      if (JID_RE.test(v)) return v;
      ctx.addIssue({ code: 'custom', message: 'must be an E.164 phone number or a WhatsApp JID (…@s.whatsapp.net, …@lid, …@g.us)' });
      return z.NEVER;
    }
    const e164 = normalizeE164(v);
    if (!e164) {
      ctx.addIssue({ code: 'custom', message: 'must be an E.164 phone number or a WhatsApp JID (…@s.whatsapp.net, …@lid, …@g.us)' });
      return z.NEVER;
    }
    return e164;
  });

/** The JID a recipient resolves to for sending. */
export function recipientToJid(recipient: string): string {
  if (recipient.includes('@')) return recipient;
  return `${recipient.replace(/^\+/, '')}@s.whatsapp.net`;
}

/**
 * "+14155550123" → "+1415•••••23". Enough for an operator to tell accounts apart, not enough to
 * identify a person from a log line or a status document.
 */
export function maskPhone(input: string | null | undefined): string | null {
  if (!input) return null;
  const digits = input.replace(/@.*$/, '').replace(/:.*$/, '').replace(/[^0-9]/g, '');
  if (digits.length < 6) return '•'.repeat(digits.length);
  const head = digits.slice(0, Math.min(4, digits.length - 4));
  const tail = digits.slice(-2);
  return `+${head}${'•'.repeat(digits.length - head.length - tail.length)}${tail}`;
}
