import type { Role } from '@wafleet/contract';
import { getApps, initializeApp } from 'firebase-admin/app';
import { getAuth } from 'firebase-admin/auth';
import { randomUUID } from 'node:crypto';
import { emulatorHosts, FUNCTIONS_PROJECT } from './emulators.ts';

export interface TestUser {
  uid: string;
  email: string;
  idToken: string;
}

export function adminAuth() {
  const app = getApps().find((a) => a.name === 'test-auth') ?? initializeApp({ projectId: FUNCTIONS_PROJECT }, 'test-auth');
  return getAuth(app);
}

/**
 * A real Auth-emulator user with the given role claim (or none, or any string to test bogus
 * roles), signed in through the emulator's REST API so the ID token carries the claim.
 */
export async function signInAs(role: Role | string | null, label = 'user'): Promise<TestUser> {
  const email = `${label}-${randomUUID().slice(0, 8)}@test.wafleet.local`;
  const password = `pw-${randomUUID()}`;
  const user = await adminAuth().createUser({ email, password });
  if (role !== null) await adminAuth().setCustomUserClaims(user.uid, { role });
  return { uid: user.uid, email, idToken: await idTokenFor(email, password) };
}

export async function idTokenFor(email: string, password: string): Promise<string> {
  const { auth } = emulatorHosts();
  const res = await fetch(`http://${auth}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=fake-api-key`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password, returnSecureToken: true }),
    signal: AbortSignal.timeout(10_000),
  });
  const body = (await res.json()) as { idToken?: string; error?: unknown };
  if (!res.ok || !body.idToken) throw new Error(`sign-in failed: ${JSON.stringify(body.error)}`);
  return body.idToken;
}
