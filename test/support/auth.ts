import type { Role } from '@wafleet/contract';
import { getApps, initializeApp } from 'firebase-admin/app';
import { getAuth } from 'firebase-admin/auth';
import { randomUUID } from 'node:crypto';
import { signIn } from '../../tools/callables-client.ts';
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

export function idTokenFor(email: string, password: string): Promise<string> {
  return signIn(emulatorHosts().auth, email, password);
}
