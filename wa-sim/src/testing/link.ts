import type { AuthenticationState } from '@whiskeysockets/baileys';
import type { SimulatedUser, Simulator } from '../simulator.ts';
import { type ClientOptions, connectClient, type SimClient } from './client.ts';
import { memoryAuthState } from './memory-auth.ts';

/**
 * Links a fresh Baileys auth state to `phone` the way a person would: open a socket, take its
 * QR, let the phone scan it, and wait for the 515 restart. Returns the auth to log in with.
 */
export async function linkWithQr(
  sim: Simulator,
  phone: SimulatedUser,
  opts: ClientOptions = {},
): Promise<{ auth: AuthenticationState; deviceJid: string }> {
  const auth = memoryAuthState();
  const client = connectClient(sim.wsUrl, auth, opts);
  try {
    const qr = await client.waitForQr();
    const { deviceJid } = await phone.scanQr(qr);
    const code = await client.waitForClose();
    if (code !== 515) throw new Error(`expected 515 after pairing, got ${code}`);
    return { auth, deviceJid };
  } finally {
    await client.end();
  }
}

/** Opens a socket with stored auth and waits for `open`. */
export async function loginClient(sim: Simulator, auth: AuthenticationState, opts: ClientOptions = {}): Promise<SimClient> {
  const client = connectClient(sim.wsUrl, auth, opts);
  try {
    await client.waitForOpen();
  } catch (err) {
    await client.end();
    throw err;
  }
  return client;
}
