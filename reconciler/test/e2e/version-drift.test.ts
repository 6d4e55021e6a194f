/**
 * Issue 11, item 5: WhatsApp stops accepting the WhatsApp Web version the fleet announces (405 at
 * login, every account at once, as WhatsApp did to Baileys users in 2024–25). The fleet reports
 * one critical ClientOutdated incident, keeps every credential (no logout, no QR), and an admin's
 * override in fleetConfig/whatsapp brings it back at once, without a redeploy; an invalid override
 * changes nothing but raises InvalidFleetConfig. The emulator, the simulator's version policy and
 * real Baileys announcing the version in its ClientPayload.
 */
import { DEFAULT_CONNECTION_CONFIG, type WAVersion } from '@whiskeysockets/baileys';
import type { Timestamp } from 'firebase-admin/firestore';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ReconcilerApp } from '../../src/app.ts';
import { waitFor } from '../helpers.ts';
import { scanPublishedQr, startHarness, type Harness } from './harness.ts';

const BUNDLED = DEFAULT_CONNECTION_CONFIG.version as WAVersion;
const NEWER: WAVersion = [BUNDLED[0], BUNDLED[1], BUNDLED[2] + 1];
const NEWEST: WAVersion = [BUNDLED[0], BUNDLED[1], BUNDLED[2] + 2];
const accounts = [
  { id: 'v-01', phone: '15550009001' },
  { id: 'v-02', phone: '15550009002' },
];

let h: Harness;
let running: (ReconcilerApp & { sessionsPath: string }) | null = null;
beforeAll(async () => {
  h = await startHarness('wa-version');
}, 60_000);
afterAll(() => h.close());

const incident = async (id: string) => (await h.db.doc(`incidents/${id}`).get()).data();
const fleetConfig = {
  set: (data: Record<string, unknown>) => h.db.doc('fleetConfig/whatsapp').set(data),
  delete: () => h.db.doc('fleetConfig/whatsapp').delete(),
};
const millis = (t: unknown) => (t as Timestamp | null)?.toMillis() ?? 0;
/** The versions the simulator saw at the logins of `accountId`'s device since `since`. */
const loginVersions = (phone: string, since: number) =>
  h.sim
    .events({ type: 'login' })
    .filter((e) => e.at >= since && e.deviceJid?.startsWith(`${phone}:`))
    .map((e) => e.detail);

describe('WhatsApp refuses the client version (405)', () => {
  it('one ClientOutdated incident, credentials kept; an override in fleetConfig/whatsapp reconnects every account at once', async () => {
    const rec = (running = await h.startReconciler());
    for (const { id, phone } of accounts) {
      await h.createAccount(id);
      await scanPublishedQr(h, id, phone, 60_000);
      await h.waitForPhase(id, 'connected', 60_000);
    }

    // WhatsApp moves on: the bundled version is refused from now on, and the sessions drop.
    h.sim.setClientVersionPolicy({ minVersion: NEWER });
    const refusedAt = Date.now();
    h.sim.injectFault({ kind: 'drop' });
    // Retried with backoff: wait until the next retry is far enough away (more than 12 s, on a
    // loaded machine too) that a login attempt before it can only come from the override.
    const waiting = new Map<string, number>();
    for (const { id } of accounts) {
      const s = await h.waitForPhase(id, (s) => s.reason === 'ClientOutdated' && millis(s.nextRetryAt) - Date.now() > 12_000, 90_000);
      expect(s.phase).toBe('error');
      expect(s.message).toContain(`Version in use: ${BUNDLED.join('.')} (bundled)`);
      waiting.set(id, millis(s.nextRetryAt));
    }
    const open = await incident('fleet__ClientOutdated');
    expect(open).toMatchObject({ open: true, severity: 'critical', accountId: null });
    // Fleet-wide, not each account flapping; nothing logged out, no QR.
    for (const { id } of accounts) {
      expect(await incident(`${id}__ConnectionFlapping`)).toBeUndefined();
      expect((await h.db.doc(`accountQr/${id}`).get()).exists).toBe(false);
    }
    expect(h.sim.events({ type: 'login-failed' }).filter((e) => e.at >= refusedAt && e.code === 405).length).toBeGreaterThanOrEqual(accounts.length);

    // The admin sets the version WhatsApp accepts.
    const overrideAt = Date.now();
    await fleetConfig.set({ waWebVersion: NEWER, note: 'e2e: 405 since the simulator moved on' });
    for (const { id, phone } of accounts) {
      await h.waitForPhase(id, (s) => s.phase === 'connected' && millis(s.lastConnectedAt) >= overrideAt, 30_000);
      // The login attempt came before the backoff would have retried: the override woke it.
      const attempt = h.sim.events({ type: 'handshake' }).find((e) => e.at >= overrideAt && e.detail === 'login' && e.deviceJid?.startsWith(`${phone}:`));
      expect(attempt!.at).toBeLessThan(waiting.get(id)!);
      expect(loginVersions(phone, overrideAt)).toContain(`client ${NEWER.join('.')}`);
      expect((await h.db.doc(`accountQr/${id}`).get()).exists).toBe(false);
    }
    await waitFor(async () => (await incident('fleet__ClientOutdated'))?.open === false, { timeoutMs: 15_000, label: 'ClientOutdated resolved' });

    // An invalid override changes nothing (the last good one stays) and says why.
    await fleetConfig.set({ waWebVersion: '2.3000.1' });
    const bad = await waitFor(async () => {
      const d = await incident('fleet__InvalidFleetConfig');
      return d?.open === true ? d : undefined;
    }, { timeoutMs: 15_000, label: 'InvalidFleetConfig open' });
    expect(bad.message).toContain('waWebVersion');
    const droppedAt = Date.now();
    h.sim.injectFault({ kind: 'drop' });
    for (const { id, phone } of accounts) {
      await h.waitForPhase(id, (s) => s.phase === 'connected' && millis(s.lastConnectedAt) >= droppedAt, 30_000);
      expect(loginVersions(phone, droppedAt)).toContain(`client ${NEWER.join('.')}`);
    }

    // Fixed: the incident closes. A restart reads the override before any login: no 405 at all.
    await fleetConfig.set({ waWebVersion: NEWER });
    await waitFor(async () => (await incident('fleet__InvalidFleetConfig'))?.open === false, { timeoutMs: 15_000, label: 'InvalidFleetConfig resolved' });
    await rec.stop('restart');
    const restartAt = Date.now();
    running = await h.startReconciler({ sessionsPath: rec.sessionsPath });
    for (const { id } of accounts) await h.waitForPhase(id, (s) => s.phase === 'connected' && millis(s.lastConnectedAt) >= restartAt, 60_000);
    expect(h.sim.events({ type: 'login-failed' }).filter((e) => e.at >= restartAt)).toEqual([]);
    expect((await incident('fleet__ClientOutdated'))?.open).toBe(false);
  }, 240_000);

  it('WA_VERSION_CHECK=latest announces the version web.whatsapp.com serves, and the bundled one when the fetch fails', async () => {
    // WhatsApp moves on again; no override this time.
    await running!.stop('next test');
    await fleetConfig.delete();
    h.sim.setClientVersionPolicy({ minVersion: NEWEST });
    const { sessionsPath } = running!;

    // The fetch fails (no route to web.whatsapp.com): the bundled version, refused, and the status says which was used.
    const failedAt = Date.now();
    running = await h.startReconciler({ sessionsPath, env: { WA_VERSION_CHECK: 'latest' }, fetchLatestWaVersion: () => Promise.reject(new Error('getaddrinfo ENOTFOUND web.whatsapp.com')) });
    for (const { id } of accounts) {
      const s = await h.waitForPhase(id, (s) => s.reason === 'ClientOutdated' && millis(s.since) >= failedAt, 60_000);
      expect(s.message).toContain(`Version in use: ${BUNDLED.join('.')} (bundled)`);
    }
    await running.stop('next start');

    // The page answers with the version WhatsApp now wants: every account logs in with it.
    const fetchedAt = Date.now();
    running = await h.startReconciler({ sessionsPath, env: { WA_VERSION_CHECK: 'latest' }, fetchLatestWaVersion: async () => ({ version: NEWEST, isLatest: true }) });
    for (const { id, phone } of accounts) {
      await h.waitForPhase(id, (s) => s.phase === 'connected' && millis(s.lastConnectedAt) >= fetchedAt, 60_000);
      expect(loginVersions(phone, fetchedAt)).toEqual([`client ${NEWEST.join('.')}`]);
    }
    await waitFor(async () => (await incident('fleet__ClientOutdated'))?.open === false, { timeoutMs: 15_000, label: 'ClientOutdated resolved again' });
  }, 180_000);
});
