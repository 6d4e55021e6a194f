/**
 * What tests need from the emulator suite that `npm test` runs them in (tools/test.mjs →
 * tools/emulators.ts). Tests that cross the Firestore boundary use their own project id so
 * they can run in parallel without seeing each other's documents; only tests of the callables
 * use `demo-wafleet`, the project the Functions emulator serves.
 */
export const FUNCTIONS_PROJECT = 'demo-wafleet';

export function emulatorHosts(): { firestore: string; auth: string; functionsUrl: string } {
  const firestore = process.env.FIRESTORE_EMULATOR_HOST;
  const auth = process.env.FIREBASE_AUTH_EMULATOR_HOST;
  const functionsUrl = process.env.WAFLEET_FUNCTIONS_URL;
  if (!firestore || !auth || !functionsUrl) {
    throw new Error('the Firebase emulators are not running: run tests with `npm test` (or inside `npm run emulators:exec -- "…"`)');
  }
  return { firestore, auth, functionsUrl };
}

/** Deletes every document of a project in the Firestore emulator. */
export async function clearFirestore(projectId: string): Promise<void> {
  const { firestore } = emulatorHosts();
  const res = await fetch(`http://${firestore}/emulator/v1/projects/${projectId}/databases/(default)/documents`, {
    method: 'DELETE',
    signal: AbortSignal.timeout(10_000),
  });
  if (!res.ok) throw new Error(`clearing Firestore emulator data failed: HTTP ${res.status}`);
}

/** A project id of its own for one test file: `demo-` keeps firebase-admin off real credentials. */
export function isolatedProjectId(name: string): string {
  return `demo-t-${name.toLowerCase().replace(/[^a-z0-9-]/g, '-').slice(0, 20)}-${process.pid}`;
}
