/**
 * The Firebase project the page talks to. Production: Hosting's reserved URL
 * /__/firebase/init.json (the project's public web config; no secrets). Dev and tests: the same URL
 * served by tools/dev/console-server.ts, naming the emulator project `demo-wafleet` and, in the
 * extra field `emulators`, where the Auth, Firestore and Functions emulators listen.
 */
import { initializeApp, type FirebaseApp } from 'firebase/app';
import { browserLocalPersistence, connectAuthEmulator, initializeAuth, type Auth } from 'firebase/auth';
import { connectFirestoreEmulator, getFirestore, type Firestore } from 'firebase/firestore';
import { connectFunctionsEmulator, getFunctions, httpsCallable, type Functions } from 'firebase/functions';

export interface InitConfig {
  apiKey: string;
  projectId: string;
  authDomain?: string;
  appId?: string;
  storageBucket?: string;
  messagingSenderId?: string;
  /** Dev only (never in Hosting's own init.json). */
  emulators?: { auth: string; firestore: string; functions: string };
  /** Region of the callables (default us-central1). */
  functionsRegion?: string;
}

export interface Fb {
  app: FirebaseApp;
  auth: Auth;
  db: Firestore;
  functions: Functions;
  projectId: string;
  emulated: boolean;
}

function hostPort(s: string): [string, number] {
  const m = /^(.*):(\d+)$/.exec(s.replace(/^https?:\/\//, ''));
  if (!m) throw new Error(`not host:port: ${s}`);
  return [m[1]!, Number(m[2])];
}

export async function loadFirebase(): Promise<Fb> {
  const res = await fetch('/__/firebase/init.json', { cache: 'no-store' });
  if (!res.ok) throw new Error(`could not load the Firebase configuration (/__/firebase/init.json: HTTP ${res.status})`);
  const cfg = (await res.json()) as InitConfig;
  const { emulators, functionsRegion, ...web } = cfg;
  const app = initializeApp(web);
  // No popup/redirect resolver: email and password only, which keeps the bundle small.
  const auth = initializeAuth(app, { persistence: browserLocalPersistence });
  const db = getFirestore(app);
  const functions = getFunctions(app, functionsRegion ?? 'us-central1');
  if (emulators) {
    connectAuthEmulator(auth, emulators.auth.startsWith('http') ? emulators.auth : `http://${emulators.auth}`, { disableWarnings: true });
    connectFirestoreEmulator(db, ...hostPort(emulators.firestore));
    connectFunctionsEmulator(functions, ...hostPort(emulators.functions));
  }
  return { app, auth, db, functions, projectId: cfg.projectId, emulated: Boolean(emulators) };
}

const WORDS: Record<string, string> = {
  'permission-denied': 'Not allowed',
  unauthenticated: 'Please sign in again',
  'invalid-argument': 'Please check the input',
  'failed-precondition': 'Not possible right now',
  'not-found': 'Not found',
  'already-exists': 'Already exists',
  'resource-exhausted': 'Limit reached',
  aborted: 'Busy, try again in a few seconds',
  unavailable: 'Temporarily unavailable, try again',
  internal: 'Something went wrong on the server',
  'deadline-exceeded': 'The server took too long',
};

/** "Not possible right now: account "wa-01" is already connected (use relinkAccount)". */
export function plainError(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const code = (e.code ?? '').replace(/^(functions|firestore|auth)\//, '');
  const msg = (e.message ?? String(err)).replace(/^Firebase: /, '').replace(/\s*\((auth|functions)\/[a-z-]+\)\.?$/, '');
  if (code === 'invalid-credential' || code === 'wrong-password' || code === 'user-not-found' || code === 'invalid-login-credentials') {
    return 'Wrong email or password.';
  }
  const words = WORDS[code];
  return words ? `${words}: ${msg}` : msg;
}

/** Calls a callable; throws with the callable's message in plain words. */
export async function call<T = unknown>(fb: Fb, name: string, data: unknown): Promise<T> {
  try {
    const res = await httpsCallable<unknown, T>(fb.functions, name)(data);
    return res.data;
  } catch (err) {
    throw new Error(plainError(err));
  }
}
