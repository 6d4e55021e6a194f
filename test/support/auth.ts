import type { Role } from '@wafleet/contract';
import { getApps, initializeApp } from 'firebase-admin/app';
import { getAuth } from 'firebase-admin/auth';
import { randomUUID } from 'node:crypto';
import { signIn } from '../../tools/callables-client.ts';
import { emulatorHosts, FUNCTIONS_PROJECT } from './emulators.ts';

export interface TestUser {
  uid: string;
  email: string;
  password: string;
  idToken: string;
}

export function adminAuth() {
  const app = getApps().find((a) => a.name === 'test-auth') ?? initializeApp({ projectId: FUNCTIONS_PROJECT }, 'test-auth');
  return getAuth(app);
}

export interface SignInOptions {
  /** Whether Auth marks the address verified (default false, as after an open sign-up). */
  emailVerified?: boolean;
}

/**
 * A real Auth-emulator user with the given role claim (or none, or any string to test bogus
 * roles), signed in through the emulator's REST API so the ID token carries the claim.
 */
export async function signInAs(role: Role | string | null, label = 'user', opts: SignInOptions = {}): Promise<TestUser> {
  const email = `${label}-${randomUUID().slice(0, 8)}@test.wafleet.local`;
  const password = `pw-${randomUUID()}`;
  const user = await adminAuth().createUser({ email, password, emailVerified: opts.emailVerified ?? false });
  if (role !== null) await adminAuth().setCustomUserClaims(user.uid, { role });
  return { uid: user.uid, email, password, idToken: await idTokenFor(email, password) };
}

export function idTokenFor(email: string, password: string): Promise<string> {
  return signIn(emulatorHosts().auth, email, password);
}

/** The sign-in time (`auth_time`, seconds) an ID token carries; the emulator's tokens are plain JWTs. */
export function authTimeOf(idToken: string): number {
  const payload = JSON.parse(Buffer.from(idToken.split('.')[1] ?? '', 'base64url').toString('utf8')) as { auth_time?: unknown };
  if (typeof payload.auth_time !== 'number') throw new Error('the ID token has no auth_time');
  return payload.auth_time;
}
