/**
 * setUserRole's work. A role lives in Auth custom claims, outside Firestore, so the change and
 * its audit entry cannot share a transaction. Instead:
 *
 *   1. one transaction takes the role-change lock and writes the audit entry, `status: "requested"`;
 *   2. with the lock held, the caller is re-read (still an enabled admin?) and the claim is set;
 *      a demotion revokes the user's refresh tokens;
 *   3. the entry is settled (`"applied"` or `"failed"`) and the lock released.
 *
 * A crash or a failed write after step 2 leaves the entry "requested": the change is never
 * unaudited, and the user's current claims tell whether it took effect. The lock serializes role
 * changes, so two admins demoting each other at the same moment cannot both succeed: with the
 * caller re-read under the lock and no one allowed to change their own role, the caller is still an
 * admin after every change, and no callable can leave the project without one.
 */
import { Collections, type CallableInput, type Role } from '@wafleet/contract';
import type { Auth, UserRecord } from 'firebase-admin/auth';
import { FieldValue, Timestamp, type DocumentReference, type Firestore } from 'firebase-admin/firestore';
import { logger } from 'firebase-functions';
import { HttpsError } from 'firebase-functions/v2/https';
import { auditDoc } from './audit.ts';
import { getUserOrNull, type Caller } from './current-caller.ts';
import { withDeadline } from './deadline.ts';
import { applyRole, losesPrivilege } from './roles.ts';

export interface RoleChangeDeps {
  auth: Auth;
  db: Firestore;
}

/** Server-only (the rules deny every client): role changes hold `locks/userRoles` while they run. */
const ROLE_LOCK = 'userRoles';
/** Longer than the callable's 30 s timeout, so an expired lock can only be a dead invocation's. */
export const ROLE_LOCK_TTL_MS = 60_000;
const AUTH_WRITE_DEADLINE_MS = 8_000;
/** Each of the two transactions; together with the Auth calls well inside the 30 s. */
const FIRESTORE_DEADLINE_MS = 5_000;

type Input = CallableInput<'setUserRole'>;

export async function changeUserRole(deps: RoleChangeDeps, caller: Caller, input: Input): Promise<{ uid: string; role: Role | null }> {
  const target = await findTarget(deps.auth, input);
  if (target.uid === caller.uid) {
    // Covers the last admin demoting themselves, and a demoted admin (whose old token may still
    // carry the claim) giving it back to themselves.
    throw new HttpsError('failed-precondition', 'you cannot change your own role; ask another admin');
  }
  if (input.email !== undefined && input.role !== null && !target.emailVerified) {
    // With open sign-up anyone can register an address before its owner does.
    throw new HttpsError('failed-precondition', 'that user has not verified their email address; have them verify it, or grant the role by uid', { field: 'email' });
  }

  const entry = await begin(deps.db, caller, target, input.role);
  let outcome: Record<string, unknown>;
  try {
    outcome = await apply(deps.auth, caller, target.uid, input.role);
  } catch (err) {
    if (err instanceof OutcomeUnknown) {
      // The entry stays "requested", which is the truth: the claim may or may not have changed.
      await settle(deps.db, entry, { error: 'outcome-unknown' });
      throw new HttpsError('unavailable', "the role change may or may not have been made; check the user's role before you try again");
    }
    await settle(deps.db, entry, { status: 'failed', error: err instanceof HttpsError ? err.code : 'internal' });
    throw err;
  }
  await settle(deps.db, entry, { status: 'applied', ...outcome });
  if (outcome['details.refreshTokensRevoked'] === false) {
    throw new HttpsError(
      'unavailable',
      `the role is now ${input.role ?? 'none'} (callables honour it at once), but revoking the user's sessions failed; revoke them with the Admin SDK (revokeRefreshTokens) or disable the user`,
    );
  }
  // Rules see the new claim when the user's ID token is next refreshed (at most an hour).
  return { uid: target.uid, role: input.role };
}

/** The claim write was sent but not answered. */
class OutcomeUnknown extends Error {}

async function findTarget(auth: Auth, input: Input): Promise<UserRecord> {
  try {
    const lookup = input.uid !== undefined ? auth.getUser(input.uid) : auth.getUserByEmail(input.email!);
    return await withDeadline(lookup, AUTH_WRITE_DEADLINE_MS, 'looking the user up');
  } catch (err) {
    if ((err as { code?: string }).code === 'auth/user-not-found') {
      throw new HttpsError('not-found', input.uid !== undefined ? `no user with uid "${input.uid}"` : 'no user with that email');
    }
    throw err;
  }
}

/** Takes the lock and writes the "requested" entry in one transaction; returns the entry. */
async function begin(db: Firestore, caller: Caller, target: UserRecord, role: Role | null): Promise<DocumentReference> {
  const lock = db.collection(Collections.locks).doc(ROLE_LOCK);
  const entry = db.collection(Collections.auditLog).doc();
  const previousRole = typeof target.customClaims?.role === 'string' ? target.customClaims.role : null;
  const taking = db.runTransaction(async (tx) => {
    const held = await tx.get(lock);
    const until = held.get('until') as Timestamp | undefined;
    if (held.exists && until && until.toMillis() > Date.now()) {
      throw new HttpsError('aborted', 'another role change is in progress; try again in a few seconds');
    }
    tx.set(lock, { entryId: entry.id, holderUid: caller.uid, until: Timestamp.fromMillis(Date.now() + ROLE_LOCK_TTL_MS) });
    tx.create(entry, {
      ...auditDoc(caller, { action: 'setUserRole', target: { collection: 'users', id: target.uid }, details: { role, previousRole } }),
      status: 'requested',
    });
  });
  await withDeadline(taking, FIRESTORE_DEADLINE_MS, 'taking the role-change lock');
  return entry;
}

/** Under the lock: the caller must still be an enabled admin; then the claim, then the sessions. */
async function apply(auth: Auth, caller: Caller, uid: string, role: Role | null): Promise<Record<string, unknown>> {
  const [me, target] = await Promise.all([getUserOrNull(auth, caller.uid), getUserOrNull(auth, uid)]);
  if (!me || me.disabled || me.customClaims?.role !== 'admin') {
    throw new HttpsError('permission-denied', 'you are no longer an admin');
  }
  if (!target) throw new HttpsError('not-found', `no user with uid "${uid}"`);
  let previous: string | null;
  try {
    previous = await withDeadline(applyRole(auth, target, role), AUTH_WRITE_DEADLINE_MS, 'setting the role claim');
  } catch (err) {
    // Auth's own refusals are answers; a timeout or a broken connection is not.
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('auth/') && code !== 'auth/internal-error') throw err;
    logger.error('setUserRole: setting the claim ended without an answer', { uid, error: err instanceof Error ? err.message : String(err) });
    throw new OutcomeUnknown();
  }
  const outcome: Record<string, unknown> = { 'details.previousRole': previous };
  if (losesPrivilege(previous, role)) {
    try {
      await withDeadline(auth.revokeRefreshTokens(uid), AUTH_WRITE_DEADLINE_MS, 'revoking refresh tokens');
      outcome['details.refreshTokensRevoked'] = true;
    } catch (err) {
      logger.error('setUserRole: revoking refresh tokens failed', { uid, error: err instanceof Error ? err.message : String(err) });
      outcome['details.refreshTokensRevoked'] = false;
    }
  }
  return outcome;
}

/**
 * Records the outcome and releases the lock if it is still ours. Failing here leaves the entry
 * "requested" and the lock to expire: logged, not thrown, because the claim is already as the
 * caller asked and an error would only invite a retry of a change that took effect.
 */
async function settle(db: Firestore, entry: DocumentReference, fields: Record<string, unknown>): Promise<void> {
  const lock = db.collection(Collections.locks).doc(ROLE_LOCK);
  try {
    const settling = db.runTransaction(async (tx) => {
      const held = await tx.get(lock);
      tx.update(entry, { ...fields, settledAt: FieldValue.serverTimestamp() });
      if (held.get('entryId') === entry.id) tx.delete(lock);
    });
    await withDeadline(settling, FIRESTORE_DEADLINE_MS, 'settling the audit entry');
  } catch (err) {
    logger.error('setUserRole: settling the audit entry failed; it stays "requested"', { entry: entry.id, error: err instanceof Error ? err.message : String(err) });
  }
}
