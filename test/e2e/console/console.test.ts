/**
 * Issue 12: the operator console in a real browser (headless Chromium, playwright-core) against the
 * real Auth, Firestore and Functions emulators, a real reconciler and the WhatsApp simulator.
 * The console is built with Vite and served as Hosting would (tools/dev/console-server.ts).
 *
 * Runs in the `through-callables` group (vitest.config.ts): the page calls the callables, which the
 * Functions emulator serves for `demo-wafleet` only.
 *
 * Prints the console's figures (first load, status change to pixel, bundle size, memory) as one
 * `[console figures]` line; WAFLEET_CONSOLE_SCREENSHOTS=<dir> also saves screenshots there.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import type { Contact } from '@wafleet/wa-sim';
import { deleteApp, getApps } from 'firebase-admin/app';
import { FieldValue } from 'firebase-admin/firestore';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHarness, type Harness } from '../../../reconciler/test/e2e/harness.ts';
import { waitFor } from '../../../reconciler/test/helpers.ts';
import { buildConsole, CONSOLE_DIST, emulatorHostsFromEnv, serveConsole, type ConsoleServer } from '../../../tools/dev/console-server.ts';
import { adminAuth, signInAs, type TestUser } from '../../support/auth.ts';
import { clearFirestore, FUNCTIONS_PROJECT } from '../../support/emulators.ts';
import { launchChromium, quantile, readQrFromPage } from './browser.ts';

const ACCOUNT = 'con-01';
const CONTACT = '15550009101';
const figures: Record<string, string | number> = {};
const shots = process.env.WAFLEET_CONSOLE_SCREENSHOTS;

let h: Harness;
let server: ConsoleServer;
let browser: Browser;
const users: Record<'viewer' | 'operator' | 'admin', TestUser> = {} as never;
const contexts: BrowserContext[] = [];
let operatorPage: Page;
let contact: Contact;
const pageErrors: string[] = [];
/** WAFLEET_CONSOLE_STEPS=1 prints when each step of a test ends (the harness captures console.log). */
const started = Date.now();
const step = (what: string) => void (process.env.WAFLEET_CONSOLE_STEPS && process.stdout.write(`[console step] ${((Date.now() - started) / 1000).toFixed(1)} s ${what}\n`));

interface StatusRender {
  id: string;
  phase: string;
  writtenAt: number | null;
  shownAt: number;
}

async function openAs(role: keyof typeof users, hash = '#/'): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  contexts.push(context);
  const page = await context.newPage();
  // What went wrong in the page, for a failure's message (never printed otherwise).
  page.on('pageerror', (err) => pageErrors.push(`${role}: ${err.message}`));
  page.on('console', (m) => m.type() === 'error' && pageErrors.push(`${role} console: ${m.text()}`));
  await page.goto(`${server.url}/${hash}`);
  await page.locator('#email').fill(users[role].email);
  await page.locator('#password').fill(users[role].password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#role', { hasText: role }).waitFor({ timeout: 30_000 });
  return page;
}

/** What the page and Firestore say about the account's link code, for a failed wait's message. */
async function explainQr(page: Page): Promise<string> {
  const [qrDoc, status] = await Promise.all([h.db.doc(`accountQr/${ACCOUNT}`).get(), h.db.doc(`accountStatus/${ACCOUNT}`).get()]);
  const q = qrDoc.data();
  const pageSays = await page.locator('#qr-note').textContent({ timeout: 1000 }).catch(() => '(no account view)');
  return `the page says "${pageSays}" (${await page.locator('#qr').getAttribute('data-drawn', { timeout: 1000 }).catch(() => null)} codes drawn); accountQr: ${q ? `kind ${q.kind}, sequence ${q.sequence}, written ${q.updatedAt?.toDate?.().toISOString()}` : 'none'}; status: ${status.get('phase')} ${status.get('reason')}; page errors: ${pageErrors.join(' | ') || 'none'}\nreconciler log:\n${h.recentLog(ACCOUNT, 20)}`;
}

const accountDoc = async (id: string) => (await h.db.doc(`accounts/${id}`).get()).data();
const renders = (page: Page) => page.evaluate('window.__wafleet.statusRenders') as Promise<StatusRender[]>;

/** Decodes the QR the page shows (from its pixels) and has `phone` scan it; a code that rotated meanwhile is read again. */
async function scanFromPage(page: Page, phoneNumber: string, minDrawn = 1): Promise<void> {
  const phone = h.sim.phones().find((p) => p.number === phoneNumber) ?? h.sim.createPhone({ number: phoneNumber });
  let last = 'no QR shown yet';
  await waitFor(
    async () => {
      const drawn = Number(await page.locator('#qr').getAttribute('data-drawn', { timeout: 1000 }).catch(() => '0'));
      if (drawn < minDrawn || !(await page.locator('#qr').isVisible())) return undefined;
      const qr = await readQrFromPage(page, '#qr');
      if (!qr) {
        last = 'the QR on the page did not decode';
        return undefined;
      }
      return phone.scanQr(qr).then(
        () => true,
        (err: Error) => void (last = `scanning failed: ${err.message}`),
      );
    },
    { timeoutMs: 90_000, intervalMs: 250, label: 'scanning the QR shown on the page' },
  ).catch((err: Error) => {
    throw new Error(`${err.message} (${last}); reconciler log:\n${h.recentLog(ACCOUNT)}`);
  });
}

/**
 * The e2e files share one process (vitest.config.ts: singleFork) and firebase-admin is not
 * re-imported per file, so the apps another file's harness and reconciler left for this project
 * (named after it, and `reconciler-<project>-<instance>`) would hand ours a Firestore whose
 * settings are already fixed: they are deleted before and after.
 */
async function dropAdminApp(): Promise<void> {
  const ours = getApps().filter((a) => a.name === FUNCTIONS_PROJECT || a.name.startsWith(`reconciler-${FUNCTIONS_PROJECT}-`));
  await Promise.all(ours.map((a) => deleteApp(a)));
}

beforeAll(async () => {
  await dropAdminApp();
  // A freshly started emulator on a busy machine can take longer than clearFirestore's 10 s.
  await waitFor(() => clearFirestore(FUNCTIONS_PROJECT).then(() => true, () => undefined), { timeoutMs: 60_000, intervalMs: 500, label: 'clearing Firestore' });
  const [harness] = await Promise.all([startHarness('console', {}, { projectId: FUNCTIONS_PROJECT }), buildConsole()]);
  h = harness;
  server = await serveConsole(emulatorHostsFromEnv());
  const [b, viewer, operator, admin] = await Promise.all([launchChromium(), signInAs('viewer', 'con-viewer'), signInAs('operator', 'con-operator'), signInAs('admin', 'con-admin')]);
  browser = b;
  Object.assign(users, { viewer, operator, admin });
  contact = h.sim.createContact({ number: CONTACT, name: 'Console contact', receiptDelays: { deliveredMs: 200, readMs: 400 } });
  await h.startReconciler();
}, 240_000);

afterAll(async () => {
  await Promise.all(contexts.map((c) => c.close().catch(() => undefined)));
  await browser?.close();
  await server?.close();
  await h?.close();
  await dropAdminApp();
  if (Object.keys(figures).length) console.log(`[console figures] ${JSON.stringify(figures)}`);
  if (pageErrors.length) console.log(`[console page errors]\n${pageErrors.slice(-30).join('\n')}`);
});

describe('operator console', () => {
  it('1. an operator creates an account, the QR appears on the page, a phone scans it from the pixels, the row turns connected without a reload', async () => {
    operatorPage = await openAs('operator');
    const page = operatorPage;
    await page.evaluate('window.__noReload = true');
    await page.locator('#c-id').fill(ACCOUNT);
    await page.locator('#c-name').fill('Console one');
    await page.locator('#c-labels').fill('team=a');
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.waitForURL(`**/#/account/${ACCOUNT}`);
    expect(await page.locator('#notice').textContent()).toBe(`Account ${ACCOUNT} created.`);
    expect(await accountDoc(ACCOUNT)).toMatchObject({ displayName: 'Console one', desiredState: 'connected', updatedBy: users.operator.uid });

    // The reconciler's first code can take a while on a busy machine (the other e2e tests allow 90 s).
    await page
      .locator('#qr[data-drawn]')
      .waitFor({ timeout: 120_000 })
      .catch(async (err: Error) => {
        throw new Error(`${err.message}; ${await explainQr(page)}`);
      });
    {
      // Evidence for slow runs: which code the page showed first, and how long after the create.
      const [qrNow, created] = await Promise.all([h.db.doc(`accountQr/${ACCOUNT}`).get(), accountDoc(ACCOUNT)]);
      figures.firstQrShownAfterCreateMs = Date.now() - (created?.createdAt?.toMillis() ?? Date.now());
      figures.firstQrSequenceShown = Number(await page.locator('#qr').getAttribute('data-sequence'));
      figures.firstQrWrittenAfterCreateMs = (qrNow.get('updatedAt')?.toMillis() ?? 0) - (created?.createdAt?.toMillis() ?? 0);
      step(`1: QR drawn ${JSON.stringify(figures)}`);
    }
    await expect.poll(() => page.locator('#qr-info').textContent()).toMatch(/^Code #\d+ · expires in \d+ s$/);
    if (shots) {
      mkdirSync(shots, { recursive: true });
      await page.screenshot({ path: path.join(shots, 'console-account.png') });
    }
    await scanFromPage(page, '15550009001');
    await page
      .locator('#acct-phase[data-phase="connected"]')
      .waitFor({ timeout: 60_000 })
      .catch(async (err: Error) => {
        throw new Error(`${err.message}; the page shows ${await page.locator('#acct-phase').textContent()} (${await page.locator('#acct-message').textContent()}); reconciler log:\n${h.recentLog(ACCOUNT)}`);
      });

    await page.getByRole('link', { name: 'Fleet', exact: true }).click();
    const row = page.locator(`tr[data-account="${ACCOUNT}"]`);
    await expect.poll(() => row.getAttribute('data-phase'), { timeout: 30_000 }).toBe('connected');
    await expect.poll(() => row.locator('td[data-label="Linked phone"]').textContent()).toMatch(/^\+1555•+01$/);
    expect(await page.locator('#fleet-counts').textContent()).toBe('1/1 connected');
    expect(await page.evaluate('window.__noReload')).toBe(true);
  }, 240_000);

  it('2. a status change the reconciler writes reaches the page within 1 s (p99 over ≥ 20 changes)', async () => {
    const page = operatorPage;
    const before = (await renders(page)).length;
    const row = page.locator(`tr[data-account="${ACCOUNT}"]`);
    for (let i = 0; i < 10; i++) {
      for (const [desired, phase] of [['disconnected', 'disconnected'], ['connected', 'connected']] as const) {
        await h.db.doc(`accounts/${ACCOUNT}`).update({ desiredState: desired, updatedAt: FieldValue.serverTimestamp(), updatedBy: 'test' });
        await expect.poll(() => row.getAttribute('data-phase'), { timeout: 30_000, interval: 50 }).toBe(phase);
      }
    }
    const changes = (await renders(page)).slice(before).filter((r) => r.id === ACCOUNT && r.writtenAt !== null);
    const latencies = changes.map((r) => r.shownAt - r.writtenAt!);
    expect(changes.length).toBeGreaterThanOrEqual(20);
    const p50 = quantile(latencies, 0.5);
    const p99 = quantile(latencies, 0.99);
    Object.assign(figures, { statusToPixelChanges: latencies.length, statusToPixelP50Ms: p50, statusToPixelP99Ms: p99, statusToPixelMaxMs: Math.max(...latencies) });
    expect(p99).toBeLessThan(1000);
  }, 180_000);

  it('3. a viewer sees no QR (the rules refuse it, the page says so) and no actions; an operator cannot delete; an admin can', async () => {
    const viewer = await openAs('viewer', `#/account/${ACCOUNT}`);
    await expect.poll(() => viewer.locator('#qr-note').getAttribute('data-denied'), { timeout: 30_000 }).toBe('true');
    expect(await viewer.locator('#qr-note').textContent()).toMatch(/operators and admins only/);
    expect(await viewer.locator('#qr').isVisible()).toBe(false);
    expect(await viewer.locator('[data-action]').count()).toBe(0);
    await viewer.getByRole('link', { name: 'Fleet', exact: true }).click();
    await viewer.locator(`tr[data-account="${ACCOUNT}"][data-phase="connected"]`).waitFor();
    expect(await viewer.locator('[data-action], #create-form').count()).toBe(0);

    await operatorPage.goto(`${server.url}/#/account/${ACCOUNT}`);
    await operatorPage.locator('[data-action="requestQr"]').waitFor();
    expect(await operatorPage.locator('[data-action="delete"]').count()).toBe(0);
    expect(await operatorPage.getByRole('link', { name: 'Users' }).count()).toBe(0);

    await h.createAccount('con-del', { desiredState: 'disconnected' });
    const admin = await openAs('admin', '#/account/con-del');
    admin.once('dialog', (d) => void d.accept());
    await admin.locator('[data-action="delete"]').click();
    await admin.locator('#notice', { hasText: 'Deleting con-del' }).waitFor({ timeout: 30_000 });
    // deleteRequestedAt is set; the reconciler may already have finished and removed the document.
    const deleting = await accountDoc('con-del');
    if (deleting) expect(deleting.deleteRequestedAt).toBeTruthy();
    // The reconciler finishes the deletion; the fleet row goes away by itself.
    await admin.getByRole('link', { name: 'Fleet', exact: true }).click();
    await admin.locator('tr[data-account="con-del"]').waitFor({ state: 'detached', timeout: 60_000 });
    expect(await accountDoc('con-del')).toBeUndefined();

    // An open incident (written as the reconciler would): highlighted in the fleet, acknowledged from the page.
    const now = new Date();
    await h.db.doc(`incidents/${ACCOUNT}__FlappingConnection`).set({ accountId: ACCOUNT, type: 'FlappingConnection', severity: 'warning', message: 'The connection dropped 5 times in 10 minutes.', open: true, count: 5, firstSeenAt: now, lastSeenAt: now, resolvedAt: null, acknowledgedBy: null, acknowledgedAt: null });
    await admin.locator(`tr[data-account="${ACCOUNT}"][data-incident="open"]`).waitFor({ timeout: 30_000 });
    await admin.getByRole('link', { name: 'Incidents', exact: true }).click();
    await admin.locator(`li[data-incident="${ACCOUNT}__FlappingConnection"] [data-action="acknowledge"]`).click();
    await admin.locator(`li[data-incident="${ACCOUNT}__FlappingConnection"]`, { hasText: 'acknowledged' }).waitFor({ timeout: 30_000 });
    expect((await h.db.doc(`incidents/${ACCOUNT}__FlappingConnection`).get()).get('acknowledgedBy')).toBe(users.admin.uid);
    await h.db.doc(`incidents/${ACCOUNT}__FlappingConnection`).update({ open: false, resolvedAt: new Date() });
    await admin.getByRole('link', { name: 'Fleet', exact: true }).click();
    await admin.locator(`tr[data-account="${ACCOUNT}"]:not([data-incident])`).waitFor({ timeout: 30_000 });

    // Users: the admin grants the viewer the operator role and takes it back (setUserRole), by uid.
    await admin.getByRole('link', { name: 'Users', exact: true }).click();
    await admin.locator('#u-who').fill(users.viewer.uid);
    await admin.locator('#u-role').selectOption('operator');
    await admin.getByRole('button', { name: 'Set role' }).click();
    await admin.locator('#notice', { hasText: 'is now operator' }).waitFor({ timeout: 30_000 });
    expect((await adminAuth().getUser(users.viewer.uid)).customClaims?.role).toBe('operator');
    await admin.locator('#u-role').selectOption('viewer');
    await admin.getByRole('button', { name: 'Set role' }).click();
    await admin.locator('#notice', { hasText: 'is now viewer' }).waitFor({ timeout: 30_000 });
    expect((await adminAuth().getUser(users.viewer.uid)).customClaims?.role).toBe('viewer');
    // Nobody changes their own role: the callable's refusal, in plain words.
    await admin.locator('#u-who').fill(users.admin.uid);
    await admin.getByRole('button', { name: 'Set role' }).click();
    await admin.locator('#notice[data-kind="error"]', { hasText: 'Setting the role failed. Not possible right now' }).waitFor({ timeout: 30_000 });
  }, 180_000);

  it('4. request QR, relink and a test message through the page change Firestore as the callables promise', async () => {
    const page = operatorPage;
    await page.goto(`${server.url}/#/account/${ACCOUNT}`);
    await page.locator('#acct-phase[data-phase="connected"]').waitFor({ timeout: 30_000 });

    // A test message: queued through sendMessage, then sent and receipted, live on the page.
    await page.locator('#s-to').fill(`+${CONTACT}`);
    await page.locator('#s-text').fill('hello from the console');
    await page.getByRole('button', { name: 'Send test message' }).click();
    const sent = await waitFor(async () => (await h.db.collection('outbox').where('accountId', '==', ACCOUNT).get()).docs.find((d) => d.get('text') === 'hello from the console'), { timeoutMs: 30_000, label: 'outbox document' });
    expect(sent.data()).toMatchObject({ to: `+${CONTACT}`, createdBy: users.operator.uid });
    await page.locator(`#outbox li[data-message="${sent.id}"] [data-status="read"]`).waitFor({ timeout: 60_000 });
    expect(contact.received().filter((m) => m.text === 'hello from the console')).toHaveLength(1);
    step('4: message read');

    // requestQr on a connected account: refused, and the page says why in plain words.
    await page.locator('[data-action="requestQr"]').click();
    await page.locator('#notice[data-kind="error"]', { hasText: 'Request QR failed. Not possible right now' }).waitFor({ timeout: 30_000 });
    expect(await page.locator('#notice').textContent()).toMatch(/connected/);
    expect((await accountDoc(ACCOUNT))?.qrRequestedAt ?? null).toBeNull();
    step('4: requestQr refused');

    // Relink: the request time lands on the account, the link is dropped and a new QR shows.
    const drawn = Number((await page.locator('#qr').getAttribute('data-drawn')) ?? 0);
    page.once('dialog', (d) => void d.accept());
    await page.locator('[data-action="relink"]').click();
    await page.locator('#notice', { hasText: 'drop its link' }).waitFor({ timeout: 30_000 });
    expect((await accountDoc(ACCOUNT))?.relinkRequestedAt).toBeTruthy();
    step('4: relink asked');
    await page.locator('#acct-phase[data-phase="awaitingScan"]').waitFor({ timeout: 60_000 });
    step('4: awaiting scan');
    try {
      // What Firestore holds meanwhile (for WAFLEET_CONSOLE_STEPS): tells a late write from a late page.
      const seenInFirestore: string[] = [];
      await expect
        .poll(
          async () => {
            const q = (await h.db.doc(`accountQr/${ACCOUNT}`).get()).data();
            const entry = q ? `#${q.sequence}@${q.updatedAt?.toDate().toISOString().slice(11, 19)}` : 'none';
            if (seenInFirestore.at(-1) !== entry) seenInFirestore.push(entry);
            return Number(await page.locator('#qr').getAttribute('data-drawn'));
          },
          { timeout: 120_000 },
        )
        .toBeGreaterThan(drawn);
      step(`4: new QR drawn (page shows #${await page.locator('#qr').getAttribute('data-sequence')}; accountQr meanwhile: ${seenInFirestore.join(' → ')})`);
    } catch (err) {
      throw new Error(`${(err as Error).message}; ${await explainQr(page)}`);
    }

    // requestQr while waiting for a scan is accepted: qrRequestedAt is the request time.
    await page.locator('[data-action="requestQr"]').click();
    await page.locator('#notice[data-kind="ok"]', { hasText: 'new link code' }).waitFor({ timeout: 30_000 });
    expect((await accountDoc(ACCOUNT))?.qrRequestedAt).toBeTruthy();
    step('4: requestQr accepted');

    // Linked again from the page's pixels, by another phone.
    await scanFromPage(page, '15550009002', drawn + 1);
    step('4: scanned');
    await page.locator('#acct-phase[data-phase="connected"]').waitFor({ timeout: 60_000 });
    await expect.poll(() => page.locator('#acct-phase').textContent()).toBe('Connected');
  }, 240_000);

  it('5. 30 accounts render and stay live; rows are updated in place and the page stays responsive', async () => {
    const ids = Array.from({ length: 29 }, (_, i) => `con-${String(i + 2).padStart(2, '0')}`);
    await Promise.all(ids.map((id, i) => h.createAccount(id, { displayName: `Fleet ${id}`, desiredState: 'disconnected', labels: { team: i % 2 ? 'a' : 'b' } })));
    const page = operatorPage;
    await page.goto(`${server.url}/#/`);
    await expect.poll(() => page.locator('#fleet tbody tr').count(), { timeout: 60_000 }).toBe(30);
    await expect.poll(() => page.locator('#fleet tbody tr[data-phase="disconnected"]').count(), { timeout: 90_000 }).toBe(29);
    expect(await page.locator('#fleet-counts').textContent()).toBe('1/30 connected');

    // Mark every row node, then change every account three times.
    await page.evaluate(`(() => {
      window.__longTasks = [];
      new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__longTasks.push(e.duration); }).observe({ type: 'longtask' });
      document.querySelectorAll('#fleet tbody tr').forEach((tr) => { tr.__mark = true; });
    })()`);
    const createdBefore = Number(await page.evaluate('window.__wafleet.rowsCreated'));
    for (let round = 1; round <= 3; round++) {
      const batch = h.db.batch();
      for (const id of [ACCOUNT, ...ids]) batch.update(h.db.doc(`accounts/${id}`), { displayName: `Fleet ${id} r${round}` });
      await batch.commit();
      await expect.poll(() => page.locator('#fleet tbody tr a', { hasText: new RegExp(`r${round}$`) }).count(), { timeout: 30_000, interval: 50 }).toBe(30);
      const t0 = Date.now();
      await page.evaluate('1');
      expect(Date.now() - t0).toBeLessThan(1000);
    }
    // A reconciler-written status change on top, while the rest stay.
    await h.db.doc('accounts/con-02').update({ desiredState: 'connected', updatedAt: FieldValue.serverTimestamp(), updatedBy: 'test' });
    await expect.poll(() => page.locator('tr[data-account="con-02"]').getAttribute('data-phase'), { timeout: 60_000 }).not.toBe('disconnected');
    await h.db.doc('accounts/con-02').update({ desiredState: 'disconnected', updatedAt: FieldValue.serverTimestamp(), updatedBy: 'test' });

    expect(await page.evaluate(`[...document.querySelectorAll('#fleet tbody tr')].filter((tr) => tr.__mark === true).length`)).toBe(30);
    expect(Number(await page.evaluate('window.__wafleet.rowsCreated'))).toBe(createdBefore);
    const longTasks = (await page.evaluate('window.__longTasks')) as number[];
    // Wall-clock times on a shared 2-core machine: the bound is generous, the figure is reported.
    figures.longestTaskMs = Math.round(Math.max(0, ...longTasks));
    const applyMs = (await page.evaluate('window.__wafleet.applyMs')) as number[];
    figures.snapshotApplyP50Ms = Number(quantile(applyMs, 0.5).toFixed(1));
    figures.snapshotApplyMaxMs = Number(Math.max(...applyMs).toFixed(1));
    expect(figures.longestTaskMs).toBeLessThan(1000);
    expect(figures.snapshotApplyMaxMs).toBeLessThan(250);

    // A status the watchdog marked not live (its owner went silent) is marked on its row.
    await h.db.doc('accountStatus/con-03').update({ stale: { reason: 'ReconcilerSilent', since: new Date(), instanceId: 'rec-a', lastHeartbeatAt: new Date(Date.now() - 120_000) } });
    await page.locator('tr[data-account="con-03"][data-stale="ReconcilerSilent"]', { hasText: 'reconciler unreachable since' }).waitFor({ timeout: 30_000 });
    expect(await page.locator('#fleet tbody tr[data-stale]').count()).toBe(1);

    // Filters: by label, by phase, by name.
    await page.locator('#f-label').selectOption('team=a');
    expect(await page.locator('#fleet tbody tr:not([hidden])').count()).toBe(15); // con-01 and 14 of the new ones
    await page.locator('#f-label').selectOption('');
    await page.locator('#f-phase').selectOption('connected');
    await expect.poll(() => page.locator('#fleet tbody tr:not([hidden])').count()).toBe(1);
    await page.locator('#f-phase').selectOption('');
    await page.locator('#f-search').fill('con-1');
    expect(await page.locator('#fleet tbody tr:not([hidden])').count()).toBe(10);
    await page.locator('#f-search').fill('');
    if (shots) await page.screenshot({ path: path.join(shots, 'console-fleet.png'), fullPage: false });

    // A phone screen: one card per account, nothing wider than the screen.
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2, storageState: await page.context().storageState({ indexedDB: true }) });
    contexts.push(phone);
    const small = await phone.newPage();
    await small.goto(`${server.url}/#/`);
    await expect.poll(() => small.locator('#fleet tbody tr').count(), { timeout: 30_000 }).toBe(30);
    expect(await small.evaluate('document.documentElement.scrollWidth <= window.innerWidth')).toBe(true);
    if (shots) await small.screenshot({ path: path.join(shots, 'console-phone.png') });

    // Figures: first load to fleet visible (signed in already), memory with 30 live accounts, bundle.
    const fresh = await page.context().newPage();
    await fresh.goto(`${server.url}/#/`);
    // Polled with evaluate, not waitForFunction: Playwright's polling eval()s its predicate in the page, which the CSP refuses.
    await expect.poll(() => fresh.evaluate('window.__wafleet?.fleetShownAt ?? null'), { timeout: 30_000, interval: 50 }).not.toBeNull();
    expect(await fresh.locator('#fleet tbody tr').count()).toBe(30);
    figures.firstLoadToFleetMs = Math.round(Number(await fresh.evaluate('window.__wafleet.fleetShownAt')));
    await fresh.close();
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('HeapProfiler.collectGarbage');
    await cdp.send('Performance.enable');
    const { metrics } = await cdp.send('Performance.getMetrics');
    figures.jsHeapUsedMB = Number(((metrics.find((m) => m.name === 'JSHeapUsedSize')?.value ?? 0) / 1048576).toFixed(1));
    figures.domNodes = metrics.find((m) => m.name === 'Nodes')?.value ?? 0;
    const files = ['index.html', ...readdirSync(path.join(CONSOLE_DIST, 'assets')).map((f) => `assets/${f}`)];
    const sizes = files.map((f) => readFileSync(path.join(CONSOLE_DIST, f)));
    figures.bundleBytes = sizes.reduce((n, b) => n + b.length, 0);
    figures.bundleGzipKB = Number((sizes.reduce((n, b) => n + gzipSync(b, { level: 9 }).length, 0) / 1024).toFixed(1));
    expect(figures.bundleGzipKB).toBeLessThan(250);
    if (shots) writeFileSync(path.join(shots, 'console-figures.json'), `${JSON.stringify(figures, null, 2)}\n`);
  }, 240_000);
});
