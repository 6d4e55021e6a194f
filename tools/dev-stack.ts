/**
 * Runs inside the emulator suite for `npm run dev`: creates the demo users and prints how to
 * reach everything, then stays up until interrupted.
 */
import { getApps, initializeApp } from 'firebase-admin/app';
import { getAuth, type UserRecord } from 'firebase-admin/auth';
import { applyRole } from '../functions/src/roles.ts';

const DEMO_PASSWORD = 'wafleet-dev-only';
const projectId = process.env.GCLOUD_PROJECT ?? 'demo-wafleet';
const app = getApps()[0] ?? initializeApp({ projectId });
const auth = getAuth(app);

async function demoUser(email: string, role: 'admin' | 'operator' | 'viewer'): Promise<UserRecord> {
  const user = await auth.getUserByEmail(email).catch(() => auth.createUser({ email, password: DEMO_PASSWORD, emailVerified: true }));
  await applyRole(auth, user, role);
  return user;
}

await demoUser('admin@wafleet.local', 'admin');
await demoUser('operator@wafleet.local', 'operator');
await demoUser('viewer@wafleet.local', 'viewer');

const functionsUrl = process.env.WAFLEET_FUNCTIONS_URL!;
const authHost = process.env.FIREBASE_AUTH_EMULATOR_HOST!;
console.log(`
wafleet dev stack is up (project ${projectId}; everything is local and in memory).

  Firestore emulator   ${process.env.FIRESTORE_EMULATOR_HOST}
  Auth emulator        ${authHost}
  Callables            ${functionsUrl}/<name>   (createAccount, sendMessage, …; see docs/data-model.md)

  Demo users (password "${DEMO_PASSWORD}"): admin@wafleet.local, operator@wafleet.local, viewer@wafleet.local

  Try it:
    TOKEN=$(curl -s 'http://${authHost}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=any' \\
      -H 'content-type: application/json' \\
      -d '{"email":"operator@wafleet.local","password":"${DEMO_PASSWORD}","returnSecureToken":true}' | node -pe 'JSON.parse(require("fs").readFileSync(0)).idToken')
    curl -s ${functionsUrl}/createAccount -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \\
      -d '{"data":{"accountId":"wa-01","displayName":"Support line"}}'

Press Ctrl-C to stop.
`);

// Stay up until the developer stops the stack; firebase-tools shuts the emulators down after us.
// (A pending promise alone does not keep Node running; the timer does.)
const keepAlive = setInterval(() => {}, 60_000);
await new Promise<void>((resolve) => {
  process.once('SIGINT', resolve);
  process.once('SIGTERM', resolve);
});
clearInterval(keepAlive);
