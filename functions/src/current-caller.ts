import { roleAtLeast, type Role } from '@wafleet/contract';
import type { Auth, UserRecord } from 'firebase-admin/auth';
import { HttpsError } from 'firebase-functions/v2/https';
import { withDeadline } from './deadline.ts';

export interface Caller {
  uid: string;
  role: Role;
  email: string | null;
}

/** What a verified ID token tells us; `auth_time` is when the user signed in, in seconds. */
export interface TokenFacts {
  uid: string;
  auth_time: number;
}

/** Kept well inside the callables' 30 s budget: Auth answers in milliseconds when it is well. */
export const AUTH_READ_DEADLINE_MS = 5_000;

export async function getUserOrNull(auth: Auth, uid: string): Promise<UserRecord | null> {
  try {
    return await withDeadline(auth.getUser(uid), AUTH_READ_DEADLINE_MS, 'reading the user from Auth');
  } catch (err) {
    if ((err as { code?: string }).code === 'auth/user-not-found') return null;
    throw err;
  }
}

/**
 * The caller as Auth knows them NOW, refused unless they still exist, are enabled, have not had
 * their sessions revoked since this token's sign-in (the check verifyIdToken(token, true) makes)
 * and hold at least `need` in their current custom claims.
 */
export async function currentCaller(auth: Auth, token: TokenFacts, need: Role): Promise<Caller> {
  const user = await getUserOrNull(auth, token.uid);
  if (!user) throw new HttpsError('unauthenticated', 'your user no longer exists');
  if (user.disabled) throw new HttpsError('unauthenticated', 'your user is disabled');
  // Second precision on both sides, compared as firebase-admin does: a sign-in in the very
  // second of the revocation still counts as after it.
  if (user.tokensValidAfterTime && token.auth_time * 1000 < Date.parse(user.tokensValidAfterTime)) {
    throw new HttpsError('unauthenticated', 'your sign-in was revoked; sign in again');
  }
  const role = user.customClaims?.role;
  if (!roleAtLeast(role, need)) {
    const have = typeof role === 'string' ? `role "${role}"` : 'no role';
    throw new HttpsError('permission-denied', `this needs role "${need}" or higher; you have ${have}`);
  }
  return { uid: user.uid, role: role as Role, email: user.email ?? null };
}
