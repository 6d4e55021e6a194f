/**
 * `npm run grant-role -- <email | --uid <uid>> <admin|operator|viewer|none> [--project <id>] [--allow-unverified]`
 * Gives the first admin (or any role) without going through the callables, which need an admin.
 * Against the emulator when FIREBASE_AUTH_EMULATOR_HOST is set (e.g. inside emulators:exec);
 * otherwise against the real project with Application Default Credentials
 * (`gcloud auth application-default login`).
 *
 * By email, the user must have verified the address: with open sign-up anyone can register an
 * address before its owner does and would receive the owner's role. `--allow-unverified` is for
 * users whose provider never marks addresses verified (accounts created in the console or the
 * emulator); whoever runs it vouches for who owns that user. Granting by `--uid` checks nothing:
 * the uid names the very user meant. Taking privileges away also revokes the user's refresh
 * tokens, as setUserRole does.
 */
import { parseArgs } from 'node:util';
import { RoleSchema } from '@wafleet/contract';
import { initializeApp } from 'firebase-admin/app';
import { getAuth, type UserRecord } from 'firebase-admin/auth';
import { applyRole, losesPrivilege } from '../functions/src/roles.ts';

const USAGE = 'usage: npm run grant-role -- <email | --uid <uid>> <admin|operator|viewer|none> [--project <id>] [--allow-unverified]';

function usage(problem: string): never {
  console.error(`${problem}\n${USAGE}`);
  process.exit(2);
}

let parsed;
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: { uid: { type: 'string' }, project: { type: 'string' }, 'allow-unverified': { type: 'boolean', default: false } },
  });
} catch (err) {
  usage((err as Error).message);
}
const { values, positionals } = parsed;
const uid = values.uid;
const [email, roleArg] = uid === undefined ? positionals : [undefined, positionals[0]];
if (!roleArg || positionals.length !== (uid === undefined ? 2 : 1)) usage(uid === undefined ? 'expected an email and a role' : 'expected a role after --uid <uid>');
const projectId = values.project ?? process.env.GCLOUD_PROJECT ?? process.env.GOOGLE_CLOUD_PROJECT;
if (!projectId) usage('no project: pass --project <id> or set GCLOUD_PROJECT');
const role = roleArg === 'none' ? null : RoleSchema.safeParse(roleArg).data;
if (role === undefined) usage(`unknown role "${roleArg}"`);

const auth = getAuth(initializeApp({ projectId }));
const target = process.env.FIREBASE_AUTH_EMULATOR_HOST ? `the Auth emulator at ${process.env.FIREBASE_AUTH_EMULATOR_HOST}` : `project ${projectId}`;
const who = uid !== undefined ? `uid ${uid}` : `email ${email}`;
let user: UserRecord;
try {
  user = uid !== undefined ? await auth.getUser(uid) : await auth.getUserByEmail(email!);
} catch (err) {
  if ((err as { code?: string }).code === 'auth/user-not-found') {
    console.error(`no user with ${who} in ${target}; the user must sign up first`);
    process.exit(1);
  }
  throw err;
}
if (uid === undefined && role !== null && !user.emailVerified && !values['allow-unverified']) {
  console.error(
    `${email} (uid ${user.uid}) in ${target} has not verified the address, so it may not be its owner's. ` +
      'Have them verify it, grant by --uid once you know it is theirs, or pass --allow-unverified if you are sure.',
  );
  process.exit(1);
}
const previous = await applyRole(auth, user, role);
const revoked = losesPrivilege(previous, role);
if (revoked) await auth.revokeRefreshTokens(user.uid);
console.log(
  `${user.email ?? '(no email)'} (uid ${user.uid}) in ${target}: role ${previous ?? 'none'} → ${role ?? 'none'}.` +
    (revoked ? ' Their refresh tokens were revoked: callables refuse them at once, apps must sign in again.' : " It applies to the callables at once, to the rules at the user's next sign-in or token refresh."),
);
