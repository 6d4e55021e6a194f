import { WA_CERT_DETAILS } from '@whiskeysockets/baileys';
import { ROOT_SERIAL } from './cert-chain.ts';

/**
 * Makes Baileys (this process's single module instance) trust the simulator's root instead of
 * WhatsApp's. Baileys reads `WA_CERT_DETAILS.PUBLIC_KEY` on every handshake, so the swap is global:
 * call the returned restore function when done (tests: afterAll/afterEach).
 */
export function trustSimulatorRoot(rootPublicKey: Uint8Array | string): () => void {
  const key = typeof rootPublicKey === 'string' ? Buffer.from(rootPublicKey, 'base64') : Buffer.from(rootPublicKey);
  if (key.byteLength !== 32) throw new Error(`root public key must be 32 bytes, got ${key.byteLength}`);
  const previous = { PUBLIC_KEY: WA_CERT_DETAILS.PUBLIC_KEY, SERIAL: WA_CERT_DETAILS.SERIAL };
  WA_CERT_DETAILS.PUBLIC_KEY = key;
  WA_CERT_DETAILS.SERIAL = ROOT_SERIAL;
  let restored = false;
  return () => {
    if (restored) return;
    restored = true;
    WA_CERT_DETAILS.PUBLIC_KEY = previous.PUBLIC_KEY;
    WA_CERT_DETAILS.SERIAL = previous.SERIAL;
  };
}
