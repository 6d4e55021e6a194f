import type { UserRecord } from 'firebase-admin/auth';
import { HttpsError } from 'firebase-functions/v2/https';
import { audit } from '../audit.ts';
import { defineCallable } from '../callable.ts';
import { auth } from '../firebase.ts';
import { applyRole } from '../roles.ts';

export const setUserRole = defineCallable('setUserRole', async (input, caller) => {
  let user: UserRecord;
  try {
    user = input.uid ? await auth().getUser(input.uid) : await auth().getUserByEmail(input.email!);
  } catch (err) {
    if ((err as { code?: string }).code === 'auth/user-not-found') {
      throw new HttpsError('not-found', input.uid ? `no user with uid "${input.uid}"` : 'no user with that email');
    }
    throw err;
  }
  // An admin demoting themselves could leave the fleet without any admin.
  if (user.uid === caller.uid && input.role !== 'admin') {
    throw new HttpsError('failed-precondition', 'you cannot change your own admin role; ask another admin');
  }
  const previous = await applyRole(auth(), user, input.role);
  await audit(caller, {
    action: 'setUserRole',
    target: { collection: 'users', id: user.uid },
    details: { role: input.role, previousRole: previous },
  });
  // Claims reach the user's ID token on its next refresh (at most an hour, or at once on sign-in).
  return { uid: user.uid, role: input.role };
});
