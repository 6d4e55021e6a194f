import type { Role } from '@wafleet/contract';
import type { Auth, UserRecord } from 'firebase-admin/auth';

/**
 * Sets or removes the `role` claim, keeping any other custom claims. Shared by the setUserRole
 * callable and the grant-role bootstrap tool. Returns the role the user had before.
 */
export async function applyRole(auth: Auth, user: UserRecord, role: Role | null): Promise<string | null> {
  const claims = { ...(user.customClaims ?? {}) } as Record<string, unknown>;
  const previous = typeof claims.role === 'string' ? claims.role : null;
  if (role === null) delete claims.role;
  else claims.role = role;
  await auth.setCustomUserClaims(user.uid, Object.keys(claims).length ? claims : null);
  return previous;
}
