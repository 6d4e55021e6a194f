/**
 * `npm run grant-role -- <email> <admin|operator|viewer|none> [--project <id>]`
 * Gives the first admin (or any role) without going through the callables, which need an admin.
 * Against the emulator when FIREBASE_AUTH_EMULATOR_HOST is set (e.g. inside emulators:exec);
 * otherwise against the real project with Application Default Credentials
 * (`gcloud auth application-default login`).
 */
import { RoleSchema } from '@wafleet/contract';
import { initializeApp } from 'firebase-admin/app';
import { getAuth } from 'firebase-admin/auth';
import { applyRole } from '../functions/src/roles.ts';

function usage(problem: string): never {
  console.error(`${problem}\nusage: npm run grant-role -- <email> <admin|operator|viewer|none> [--project <id>]`);
  process.exit(2);
}

const args = process.argv.slice(2);
const projectFlag = args.indexOf('--project');
const projectId = projectFlag >= 0 ? args[projectFlag + 1] : (process.env.GCLOUD_PROJECT ?? process.env.GOOGLE_CLOUD_PROJECT);
const positional = args.filter((_, i) => i !== projectFlag && i !== projectFlag + 1);
const [email, roleArg] = positional;
if (!email || !roleArg || positional.length !== 2) usage('expected an email and a role');
if (!projectId) usage('no project: pass --project <id> or set GCLOUD_PROJECT');
const role = roleArg === 'none' ? null : RoleSchema.safeParse(roleArg).data;
if (role === undefined) usage(`unknown role "${roleArg}"`);

const auth = getAuth(initializeApp({ projectId }));
const target = process.env.FIREBASE_AUTH_EMULATOR_HOST ? `the Auth emulator at ${process.env.FIREBASE_AUTH_EMULATOR_HOST}` : `project ${projectId}`;
try {
  const user = await auth.getUserByEmail(email);
  const previous = await applyRole(auth, user, role);
  console.log(`${email} (uid ${user.uid}) in ${target}: role ${previous ?? 'none'} → ${role ?? 'none'}. It applies at the user's next sign-in or token refresh.`);
} catch (err) {
  if ((err as { code?: string }).code === 'auth/user-not-found') {
    console.error(`no user with email ${email} in ${target}; the user must sign up first`);
    process.exit(1);
  }
  throw err;
}
