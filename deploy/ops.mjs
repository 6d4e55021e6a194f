#!/usr/bin/env node
// The operator's command line against a deployed project, signed in as a Firebase Auth user (the
// callables check the user's role; nothing here needs Google credentials).
//   node deploy/ops.mjs call <callable> '<json data>'   e.g. call createAccount '{"accountId":"wa-01","displayName":"Sales 1"}'
//   node deploy/ops.mjs link-code <accountId>            shows the account's QR code or pairing code until it is connected
// Environment: WAFLEET_PROJECT, WAFLEET_API_KEY (the web app's apiKey), WAFLEET_EMAIL, WAFLEET_PASSWORD
// (asked for when unset), WAFLEET_REGION (default us-central1). Inside `npm run emulators:exec` the
// emulators are used instead (FIREBASE_AUTH_EMULATOR_HOST, FIRESTORE_EMULATOR_HOST, WAFLEET_FUNCTIONS_URL).
// Run from the repository root, after `npm ci` (the QR code is drawn with the qrcode package).
import { createInterface } from 'node:readline/promises';
import { createRequire } from 'node:module';

const env = process.env;
const project = env.WAFLEET_PROJECT ?? env.GCLOUD_PROJECT;
const [command, ...args] = process.argv.slice(2);
const USAGE = "usage: node deploy/ops.mjs call <callable> '<json>' | link-code <accountId>";

function fail(message) {
  console.error(message);
  process.exit(2);
}
if (!project) fail('set WAFLEET_PROJECT to the Firebase project id');

const authBase = env.FIREBASE_AUTH_EMULATOR_HOST ? `http://${env.FIREBASE_AUTH_EMULATOR_HOST}/identitytoolkit.googleapis.com` : 'https://identitytoolkit.googleapis.com';
const firestoreBase = env.FIRESTORE_EMULATOR_HOST ? `http://${env.FIRESTORE_EMULATOR_HOST}` : 'https://firestore.googleapis.com';
const functionsBase = env.WAFLEET_FUNCTIONS_URL ?? `https://${env.WAFLEET_REGION ?? 'us-central1'}-${project}.cloudfunctions.net`;

async function signIn() {
  const apiKey = env.WAFLEET_API_KEY ?? (env.FIREBASE_AUTH_EMULATOR_HOST ? 'emulator' : undefined);
  if (!apiKey) fail('set WAFLEET_API_KEY (firebase apps:sdkconfig WEB --project <id> shows apiKey)');
  const email = env.WAFLEET_EMAIL ?? fail('set WAFLEET_EMAIL to your user');
  let password = env.WAFLEET_PASSWORD;
  if (!password) {
    const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
    process.stderr.write(`password for ${email}: `);
    rl._writeToOutput = () => {}; // do not echo
    password = await rl.question('');
    rl.close();
    process.stderr.write('\n');
  }
  const res = await fetch(`${authBase}/v1/accounts:signInWithPassword?key=${encodeURIComponent(apiKey)}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password, returnSecureToken: true }),
    signal: AbortSignal.timeout(15_000),
  });
  const body = await res.json();
  if (!res.ok || !body.idToken) fail(`sign-in as ${email} failed: ${body.error?.message ?? res.status}`);
  return body.idToken;
}

async function call(idToken, name, data) {
  const res = await fetch(`${functionsBase}/${name}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${idToken}` },
    body: JSON.stringify({ data }),
    signal: AbortSignal.timeout(60_000),
  });
  const body = await res.json().catch(() => ({ error: { status: `HTTP ${res.status}`, message: 'not JSON' } }));
  if (!res.ok || body.error) {
    console.error(`${name}: ${body.error?.status ?? res.status}: ${body.error?.message ?? ''}${body.error?.details ? ` ${JSON.stringify(body.error.details)}` : ''}`);
    process.exit(1);
  }
  return body.result;
}

async function readDoc(idToken, path) {
  const res = await fetch(`${firestoreBase}/v1/projects/${project}/databases/(default)/documents/${path}`, {
    headers: { authorization: `Bearer ${idToken}` },
    signal: AbortSignal.timeout(15_000),
  });
  if (res.status === 404) return null;
  if (!res.ok) fail(`reading ${path}: HTTP ${res.status} ${await res.text()}`);
  const fields = (await res.json()).fields ?? {};
  const value = (v) => v?.stringValue ?? v?.integerValue ?? v?.timestampValue ?? (v && 'nullValue' in v ? null : v?.mapValue ? Object.fromEntries(Object.entries(v.mapValue.fields ?? {}).map(([k, x]) => [k, value(x)])) : undefined);
  return Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, value(v)]));
}

async function linkCode(idToken, accountId) {
  const qrcode = createRequire(import.meta.url)('qrcode');
  let shown = null;
  for (;;) {
    const status = await readDoc(idToken, `accountStatus/${accountId}`);
    if (status?.phase === 'connected') {
      console.log(`${accountId}: connected`);
      return;
    }
    const code = await readDoc(idToken, `accountQr/${accountId}`);
    const fresh = code && Date.parse(code.expiresAt) > Date.now();
    const key = fresh ? `${code.kind}:${code.sequence}` : null;
    if (key && key !== shown) {
      shown = key;
      if (code.kind === 'pairingCode') console.log(`${accountId}: on the phone, WhatsApp → Linked devices → Link with phone number, enter: ${code.pairingCode}`);
      else console.log(`${await qrcode.toString(code.qr, { type: 'terminal', small: true })}\n${accountId}: scan with WhatsApp → Linked devices → Link a device (expires ${code.expiresAt})`);
    } else if (!key && status) {
      process.stderr.write(`\r${accountId}: ${status.phase}${status.reason ? ` (${status.reason})` : ''}      `);
      if (status.phase === 'needsLink') console.error(`\n${accountId}: no code under way; node deploy/ops.mjs call requestQr '{"accountId":"${accountId}"}'`);
    }
    await new Promise((resolve) => setTimeout(resolve, 2_000));
  }
}

if (command === 'call' && args.length >= 1 && args.length <= 2) {
  let data = {};
  try {
    data = args[1] ? JSON.parse(args[1]) : {};
  } catch (err) {
    fail(`the data is not JSON: ${err.message}`);
  }
  console.log(JSON.stringify(await call(await signIn(), args[0], data), null, 2));
} else if (command === 'link-code' && args.length === 1) {
  await linkCode(await signIn(), args[0]);
} else {
  fail(USAGE);
}
