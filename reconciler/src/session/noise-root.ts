import { WA_CERT_DETAILS } from '@whiskeysockets/baileys';

/**
 * Makes Baileys trust a WhatsApp simulator's certificate root instead of WhatsApp's (development
 * and tests only; config refuses it in production). Baileys reads the key on every handshake.
 */
export function trustNoiseRoot(publicKey: Buffer): void {
  if (publicKey.length !== 32) throw new Error('WA_NOISE_ROOT_PUBKEY must be a 32-byte key');
  WA_CERT_DETAILS.PUBLIC_KEY = Buffer.from(publicKey);
}
