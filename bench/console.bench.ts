/**
 * The operator console (issue 12) in headless Chromium against the emulators: first load to the
 * fleet on screen, a status written in Firestore to its pixel, the built bundle gzipped, and the
 * page's JS heap with 30 live accounts after a soak of status changes.
 *
 * The bench plays the reconciler itself: it writes the 30 accounts, their statuses and an owner's
 * heartbeat with the Admin SDK, as the reconciler would (the write path is not what is measured
 * here; bench/reconciler.bench.ts measures that). The soak lasts CONSOLE_BENCH_SOAK_MS (default
 * 10 minutes), one status change every CONSOLE_BENCH_CHANGE_MS (default 1000).
 *
 * The page signs in through the Auth emulator, so it uses the emulators' own project
 * (demo-wafleet) on this bench's emulator ports: its documents are cleared before and after.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { deleteApp, getApps, initializeApp } from 'firebase-admin/app';
import { FieldValue, getFirestore, Timestamp, type Firestore } from 'firebase-admin/firestore';
import type { Page } from 'playwright-core';
import { launchChromium } from '../test/e2e/console/browser.ts';
import { signInAs } from '../test/support/auth.ts';
import { clearFirestore, FUNCTIONS_PROJECT } from '../test/support/emulators.ts';
import { buildConsole, CONSOLE_DIST, emulatorHostsFromEnv, serveConsole } from '../tools/dev/console-server.ts';
import { waitFor } from '../wa-sim/src/index.ts';
import { type BenchSuite, type Figure, median, percentile } from './suite.ts';

const ACCOUNTS = 30;
const LOADS = 5;
const LATENCY_CHANGES = 40;
const OWNER = { instanceId: 'bench-console', epoch: 1 };
const PHASES = ['connected', 'reconnecting', 'connecting', 'connected', 'disconnected', 'awaitingScan'] as const;

// An environment variable, not an argument: bench/run.ts takes its arguments as suite names.
function soakMs(): number {
  const v = Number(process.env.CONSOLE_BENCH_SOAK_MS ?? 600_000);
  if (!Number.isFinite(v) || v < 0) throw new Error(`CONSOLE_BENCH_SOAK_MS must be a number of ms ≥ 0, not ${process.env.CONSOLE_BENCH_SOAK_MS}`);
  return v;
}

interface StatusRender {
  id: string;
  phase: string;
  writtenAt: number | null;
  shownAt: number;
}

const ids = Array.from({ length: ACCOUNTS }, (_, i) => `cb-${String(i + 1).padStart(2, '0')}`);

function status(phase: string, n: number) {
  return {
    phase,
    reason: phase === 'connected' ? 'Connected' : 'BenchChange',
    message: `bench change ${n}`,
    since: FieldValue.serverTimestamp(),
    observedSpecTime: null,
    owner: OWNER,
    linkedPhoneMasked: '+1555•••••01',
    lastConnectedAt: null,
    lastDisconnect: null,
    reconnectAttempt: 0,
    nextRetryAt: null,
    updatedAt: FieldValue.serverTimestamp(),
  };
}

async function heartbeat(db: Firestore): Promise<void> {
  await db.doc(`reconcilers/${OWNER.instanceId}`).set({ heartbeatAt: FieldValue.serverTimestamp(), leaseTtlMs: 30_000, stoppedAt: null }, { merge: true });
}

async function heapMB(page: Page): Promise<number> {
  const cdp = await page.context().newCDPSession(page);
  try {
    await cdp.send('HeapProfiler.collectGarbage');
    await cdp.send('Performance.enable');
    const { metrics } = await cdp.send('Performance.getMetrics');
    return Number(((metrics.find((m) => m.name === 'JSHeapUsedSize')?.value ?? 0) / 1048576).toFixed(1));
  } finally {
    await cdp.detach();
  }
}

function bundleGzipKB(): { kb: number; files: number } {
  const files = ['index.html', ...readdirSync(path.join(CONSOLE_DIST, 'assets')).map((f) => `assets/${f}`)];
  const gz = files.reduce((n, f) => n + gzipSync(readFileSync(path.join(CONSOLE_DIST, f)), { level: 9 }).length, 0);
  return { kb: Number((gz / 1024).toFixed(1)), files: files.length };
}

export const consoleBench: BenchSuite = {
  name: 'console',
  needsEmulators: true,
  async run() {
    const soak = soakMs();
    const hosts = emulatorHostsFromEnv();
    await clearFirestore(FUNCTIONS_PROJECT);
    const app = initializeApp({ projectId: FUNCTIONS_PROJECT }, `bench-console-${process.pid}`);
    const db = getFirestore(app);
    const [, operator] = await Promise.all([buildConsole(), signInAs('operator', 'bench-console')]);
    const server = await serveConsole(hosts);
    const browser = await launchChromium();
    try {
      const now = Timestamp.now();
      await heartbeat(db);
      const batch = db.batch();
      ids.forEach((id, i) => {
        batch.set(db.doc(`accounts/${id}`), { displayName: `Bench ${id}`, desiredState: 'connected', labels: { team: i % 2 ? 'a' : 'b' }, createdAt: now, updatedAt: now, updatedBy: 'bench' });
        batch.set(db.doc(`accountStatus/${id}`), status('connected', 0));
      });
      await batch.commit();

      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const page = await context.newPage();
      await page.goto(`${server.url}/#/`);
      await page.locator('#email').fill(operator.email);
      await page.locator('#password').fill(operator.password);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.locator('#fleet tbody tr').nth(ACCOUNTS - 1).waitFor({ timeout: 60_000 });

      // First load, signed in already (the session persists): navigation start → fleet with every status shown.
      const loads: number[] = [];
      for (let i = 0; i < LOADS; i++) {
        const fresh = await context.newPage();
        await fresh.goto(`${server.url}/#/`);
        // Polled with evaluate, not waitForFunction: Playwright's polling eval()s its predicate in the page, which the CSP refuses.
        await waitFor(async () => ((await fresh.evaluate('window.__wafleet?.fleetShownAt ?? null')) === null ? undefined : true), { timeoutMs: 30_000, intervalMs: 50 });
        const rows = await fresh.locator('#fleet tbody tr').count();
        if (rows !== ACCOUNTS) throw new Error(`the fleet showed ${rows} rows, not ${ACCOUNTS}`);
        loads.push(Number(await fresh.evaluate('window.__wafleet.fleetShownAt')));
        await fresh.close();
      }
      process.stdout.write(`   first load to fleet: ${loads.map((v) => Math.round(v)).join(', ')} ms\n`);

      // Status written → row repainted, one change at a time so each is timed on its own.
      const renders = () => page.evaluate('window.__wafleet.statusRenders') as Promise<StatusRender[]>;
      const before = (await renders()).length;
      let n = 0;
      for (let i = 0; i < LATENCY_CHANGES; i++) {
        const id = ids[i % ACCOUNTS]!;
        const phase = i % 2 ? 'connected' : 'reconnecting';
        await db.doc(`accountStatus/${id}`).set(status(phase, ++n));
        await page.locator(`tr[data-account="${id}"][data-phase="${phase}"]`).waitFor({ timeout: 30_000 });
      }
      const latencies = (await renders())
        .slice(before)
        .filter((r) => r.writtenAt !== null)
        .map((r) => r.shownAt - r.writtenAt!);
      if (latencies.length < 20) throw new Error(`only ${latencies.length} status changes were timed on the page`);

      const heapStart = await heapMB(page);
      // The soak: a status change every CONSOLE_BENCH_CHANGE_MS, round the fleet, and the owner's
      // heartbeat as the reconciler writes it (which re-judges every row's liveness).
      const changeMs = Number(process.env.CONSOLE_BENCH_CHANGE_MS ?? 1000);
      const soakStarted = Date.now();
      let changes = 0;
      let lastBeat = Date.now();
      while (Date.now() - soakStarted < soak) {
        const id = ids[changes % ACCOUNTS]!;
        await db.doc(`accountStatus/${id}`).set(status(PHASES[(changes + Math.floor(changes / ACCOUNTS)) % PHASES.length]!, ++n));
        changes++;
        if (Date.now() - lastBeat > 5_000) {
          await heartbeat(db);
          lastBeat = Date.now();
        }
        await new Promise((r) => setTimeout(r, changeMs));
      }
      // The page still follows: the last change is on screen.
      const lastId = ids[(changes - 1 + ACCOUNTS) % ACCOUNTS]!;
      const lastPhase = (await db.doc(`accountStatus/${lastId}`).get()).get('phase') as string;
      await waitFor(async () => (await page.locator(`tr[data-account="${lastId}"]`).getAttribute('data-phase')) === lastPhase || undefined, { timeoutMs: 30_000, intervalMs: 100 });
      const heapEnd = await heapMB(page);
      const nodes = Number(await page.evaluate('document.getElementsByTagName("*").length'));
      const bundle = bundleGzipKB();
      const soakMin = Number((soak / 60_000).toFixed(2));
      await context.close();

      const figures: Record<string, Figure> = {
        consoleFirstLoadToFleetMs: { value: Math.round(median(loads)), note: `navigation start → ${ACCOUNTS} rows with their statuses on screen, signed in already; median of ${LOADS} loads` },
        consoleStatusToPixelP50Ms: { value: Math.round(percentile(latencies, 50)), note: `accountStatus.updatedAt (server) → the frame after the row changed; ${latencies.length} changes` },
        consoleStatusToPixelP99Ms: { value: Math.round(percentile(latencies, 99)), target: '< 1000', note: `${latencies.length} changes, max ${Math.round(Math.max(...latencies))} ms` },
        consoleBundleGzipKB: { value: bundle.kb, target: '≤ 250', note: `console/dist, ${bundle.files} files (index.html, one script holding the app and the Firebase SDK, the CSS), gzip -9 each` },
        consoleHeapAfterSoakMB: { value: heapEnd, note: `JS heap used after GC (CDP Performance.getMetrics), ${ACCOUNTS} live accounts after a ${soakMin} min soak of ${changes} status changes; ${heapStart} MB before the soak; ${nodes} DOM elements` },
        consoleHeapGrowthDuringSoakMB: { value: Number((heapEnd - heapStart).toFixed(1)), note: `over the ${soakMin} min soak` },
      };
      return figures;
    } finally {
      await browser.close().catch(() => undefined);
      await server.close();
      await deleteApp(app);
      for (const a of getApps().filter((x) => x.name === 'test-auth')) await deleteApp(a);
      await clearFirestore(FUNCTIONS_PROJECT).catch(() => undefined);
    }
  },
};
