import { ROLES, type Role } from '@wafleet/contract';
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

/** Privilege rank; unknown or missing roles rank below viewer, as they grant nothing. */
function rank(role: string | null): number {
  return ROLES.indexOf(role as Role);
}

/**
 * True when the change takes privileges away. Such a user's refresh tokens are revoked, so their
 * apps cannot keep minting ID tokens and the old token is refused by every callable at once.
 */
export function losesPrivilege(previous: string | null, next: Role | null): boolean {
  return rank(next) < rank(previous);
}
