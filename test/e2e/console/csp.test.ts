/**
 * The built console under firebase.json's security headers: the server sends what Hosting would
 * (tools/dev/console-server.ts reads `hosting.headers`), and signing in, the fleet, an account's
 * QR code on its canvas and a callable all work without one Content-Security-Policy violation.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { deleteApp, initializeApp, type App } from 'firebase-admin/app';
import { FieldValue, getFirestore, Timestamp, type Firestore } from 'firebase-admin/firestore';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../../reconciler/test/helpers.ts';
import { buildConsole, CONSOLE_DIST, emulatorHostsFromEnv, FIREBASE_JSON, serveConsole, type ConsoleServer } from '../../../tools/dev/console-server.ts';
import { signInAs, type TestUser } from '../../support/auth.ts';
import { clearFirestore, FUNCTIONS_PROJECT } from '../../support/emulators.ts';
import { launchChromium, readQrFromPage } from './browser.ts';

interface Violation {
  directive: string;
  blocked: string;
  sample: string;
}

let app: App;
let db: Firestore;
let server: ConsoleServer;
let browser: Browser;
let operator: TestUser;

/** firebase.json's headers for every path (`source: "**"`), as Hosting sends them. */
function productionHeaders(): Record<string, string> {
  const config = JSON.parse(readFileSync(FIREBASE_JSON, 'utf8')) as { hosting: { headers: Array<{ source: string; headers: Array<{ key: string; value: string }> }> } };
  const all = config.hosting.headers.find((r) => r.source === '**');
  if (!all) throw new Error('firebase.json hosting.headers has no rule for every path ("**")');
  return Object.fromEntries(all.headers.map((hh) => [hh.key.toLowerCase(), hh.value]));
}

function directives(csp: string): Map<string, string[]> {
  return new Map(
    csp
      .split(';')
      .map((d) => d.trim().split(/\s+/))
      .filter((d) => d[0])
      .map(([name, ...values]) => [name!, values]),
  );
}

const violations = (page: Page) => page.evaluate('window.__cspViolations') as Promise<Violation[]>;

beforeAll(async () => {
  await waitFor(() => clearFirestore(FUNCTIONS_PROJECT).then(() => true, () => undefined), { timeoutMs: 60_000, intervalMs: 500, label: 'clearing Firestore' });
  app = initializeApp({ projectId: FUNCTIONS_PROJECT }, `console-csp-${process.pid}`);
  db = getFirestore(app);
  await buildConsole();
  server = await serveConsole(emulatorHostsFromEnv());
  [browser, operator] = await Promise.all([launchChromium(), signInAs('operator', 'csp-operator')]);
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  if (app) await deleteApp(app);
});

describe('console under the Content-Security-Policy', () => {
  it("firebase.json's policy is strict: no inline or eval'd code, the page may not be framed, connections only to the Firebase endpoints", () => {
    const hs = productionHeaders();
    const csp = directives(hs['content-security-policy'] ?? '');
    expect(csp.get('default-src')).toEqual(["'self'"]);
    expect(csp.get('script-src')).toEqual(["'self'"]);
    expect(csp.get('style-src')).toEqual(["'self'"]);
    expect(csp.get('frame-ancestors')).toEqual(["'none'"]);
    expect(csp.get('object-src')).toEqual(["'none'"]);
    expect(hs['content-security-policy']).not.toMatch(/unsafe-|\*\.googleapis\.com|localhost|127\.0\.0\.1|\bhttp:/);
    expect(csp.get('connect-src')).toEqual(["'self'", 'https://firestore.googleapis.com', 'https://identitytoolkit.googleapis.com', 'https://securetoken.googleapis.com', 'https://*.cloudfunctions.net']);
    expect(hs).toMatchObject({ 'x-content-type-options': 'nosniff', 'x-frame-options': 'DENY', 'referrer-policy': 'no-referrer' });
    // What Vite emits must fit it: no inline script or style, no inline event handler.
    const html = readFileSync(path.join(CONSOLE_DIST, 'index.html'), 'utf8');
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(html).not.toMatch(/<style\b|\sstyle=|\son[a-z]+=/i);
    expect(readdirSync(path.join(CONSOLE_DIST, 'assets')).some((f) => f.endsWith('.js'))).toBe(true);
  });

  it('the server sends those headers, connect-src widened only by the emulators it points the page at', async () => {
    const hs = productionHeaders();
    const hosts = emulatorHostsFromEnv();
    const script = readdirSync(path.join(CONSOLE_DIST, 'assets')).find((f) => f.endsWith('.js'))!;
    for (const p of ['/', '/#/account/x', '/incidents', `/assets/${script}`]) {
      const res = await fetch(`${server.url}${p}`);
      expect(res.status, p).toBe(200);
      for (const key of ['x-content-type-options', 'x-frame-options', 'referrer-policy']) expect(res.headers.get(key), `${p} ${key}`).toBe(hs[key]);
      const sent = directives(res.headers.get('content-security-policy') ?? '');
      const prod = directives(hs['content-security-policy']!);
      for (const [name, values] of prod) {
        if (name === 'connect-src') expect(sent.get(name), p).toEqual([...values, ...[hosts.auth, hosts.firestore, hosts.functions].map((hp) => `http://${hp}`)]);
        else expect(sent.get(name), `${p} ${name}`).toEqual(values);
      }
      expect([...sent.keys()].sort()).toEqual([...prod.keys()].sort());
    }
  });

  it('signing in, the fleet, a QR code and a callable work without a violation; an inline script is refused and reported', async () => {
    const now = Timestamp.now();
    await db.doc('accounts/csp-01').set({ displayName: 'CSP one', desiredState: 'connected', createdAt: now, updatedAt: now, updatedBy: 'test' });
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    await context.addInitScript(`
      window.__cspViolations = [];
      document.addEventListener('securitypolicyviolation', (e) => window.__cspViolations.push({ directive: e.effectiveDirective, blocked: e.blockedURI, sample: e.sample }));
    `);
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    page.on('pageerror', (e) => errors.push(e.message));
    try {
      await page.goto(`${server.url}/#/`);
      await page.locator('#email').fill(operator.email);
      await page.locator('#password').fill(operator.password);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.locator('#role', { hasText: 'operator' }).waitFor({ timeout: 30_000 });
      await page.locator('tr[data-account="csp-01"]').waitFor({ timeout: 30_000 });

      // A callable (Functions), then the account view drawing a code on its canvas (Firestore).
      await page.locator('#c-id').fill('csp-02');
      await page.locator('#c-name').fill('CSP two');
      await page.getByRole('button', { name: 'Create account' }).click();
      await page.waitForURL('**/#/account/csp-02', { timeout: 30_000 });
      expect((await db.doc('accounts/csp-02').get()).get('updatedBy')).toBe(operator.uid);
      const qr = 'csp-test-code,abcdefghijklmnopqrstuvwxyz0123456789';
      await db.doc('accountQr/csp-02').set({ kind: 'qr', qr, qrPng: null, pairingCode: null, sequence: 1, expiresAt: Timestamp.fromMillis(Date.now() + 60_000), owner: { instanceId: 'test', epoch: 1 }, updatedAt: FieldValue.serverTimestamp() });
      await page.locator('#qr[data-sequence="1"]').waitFor({ timeout: 30_000 });
      expect(await readQrFromPage(page, '#qr')).toBe(qr);
      await page.getByRole('link', { name: 'Fleet', exact: true }).click();
      await expect.poll(() => page.locator('#fleet tbody tr').count(), { timeout: 30_000 }).toBe(2);

      expect(await violations(page)).toEqual([]);
      expect(errors.filter((e) => /Content Security Policy|Refused to/i.test(e))).toEqual([]);

      // The policy is enforced and the watch above would have seen a breach: an inline script is refused.
      await page.evaluate(`document.head.append(Object.assign(document.createElement('script'), { textContent: 'window.__inlineRan = true' }))`);
      await expect.poll(() => violations(page).then((v) => v.map((x) => x.directive))).toContain('script-src-elem');
      expect(await page.evaluate('window.__inlineRan')).toBeUndefined();
    } finally {
      await context.close();
    }
  }, 120_000);
});
