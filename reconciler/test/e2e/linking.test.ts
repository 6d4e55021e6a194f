/** Issue 4, done-when 1: a new account is linked by QR through Firestore and comes online. */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Timestamp } from 'firebase-admin/firestore';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scanPublishedQr, startHarness, type Harness } from './harness.ts';
import { waitFor } from '../helpers.ts';

let h: Harness;
beforeAll(async () => {
  h = await startHarness('link');
});
afterAll(() => h.close());

describe('linking a new account', () => {
  it('publishes a QR, connects after the scan, stores credentials on disk and an encrypted backup', async () => {
    const rec = await h.startReconciler();
    await h.createAccount('wa-01');
    const awaiting = await h.waitForPhase('wa-01', 'awaitingScan');
    expect(awaiting.reason).toBe('QrCodeReady');
    const qrDoc = (await h.db.doc('accountQr/wa-01').get()).data()!;
    expect(qrDoc).toMatchObject({ kind: 'qr', sequence: 1, pairingCode: null, owner: { instanceId: 'rec-a', epoch: 1 } });
    expect(qrDoc.qrPng).toMatch(/^data:image\/png;base64,/);
    expect(qrDoc.expiresAt.toMillis()).toBeGreaterThan(Date.now());

    await scanPublishedQr(h, 'wa-01', '15550003001');
    const connected = await h.waitForPhase('wa-01', 'connected');
    expect(connected).toMatchObject({ reason: 'Connected', linkedPhoneMasked: '+1555•••••01', owner: { instanceId: 'rec-a', epoch: 1 }, reconnectAttempt: 0 });
    // The code is gone as soon as the device is linked.
    await waitFor(async () => !(await h.db.doc('accountQr/wa-01').get()).exists, { timeoutMs: 5_000 });
    expect(existsSync(path.join(rec.sessionsPath, 'wa-01', 'creds.json'))).toBe(true);
    const backup = await waitFor(async () => (await h.db.doc('sessionBackups/wa-01').get()).data(), { timeoutMs: 10_000 });
    expect(backup).toMatchObject({ format: 'aes-256-gcm+gzip/v1', owner: { instanceId: 'rec-a' } });
    expect(h.sim.totalConflicts()).toBe(0);

    // Health, readiness and metrics, as a load balancer and Prometheus see them.
    const base = `http://127.0.0.1:${rec.httpPort}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ ready: true, checks: { booted: true, firestore: true, listener: true, storage: true } });
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/^wafleet_sessions\{phase="connected"\} 1$/m);
    expect(metrics).toMatch(/^wafleet_leases_held 1$/m);
    expect(metrics).toMatch(/^wafleet_connect_latency_seconds_count [1-9]/m);
    expect(metrics).toMatch(/^wafleet_firestore_writes_total\{collection="accountStatus",result="ok"\} [1-9]/m);
    expect(metrics).toMatch(/^wafleet_disconnects_total\{code="515",reason="RestartRequired"\} 1$/m);
    expect((await fetch(`${base}/nope`)).status).toBe(404);

    // The heartbeat says who runs what, and where.
    const hb = (await h.db.doc('reconcilers/rec-a').get()).data()!;
    expect(hb).toMatchObject({ instanceId: 'rec-a', version: '0.1.0', storagePath: rec.sessionsPath, stoppedAt: null });
    expect(hb.storageFreeBytes).toBeGreaterThan(0);
    expect(hb.uptimeSec).toBeGreaterThanOrEqual(0);
    // Liveness of an idle fleet rides on the heartbeat: it lists the phase of every owned account.
    await waitFor(async () => (await h.db.doc('reconcilers/rec-a').get()).get('accounts')?.['wa-01'] === 'connected', { timeoutMs: 10_000 });
    expect((await h.db.doc('reconcilers/rec-a').get()).get('accountsOwned')).toBe(1);
  });
});

describe('link windows and pairing codes', () => {
  let w: Harness;
  beforeAll(async () => {
    // One ref per registration and a 2 s QR: a link window ends unscanned within seconds.
    w = await startHarness('window', { qrRefs: 1 });
    await w.startReconciler({ timeouts: { qrTimeoutMs: 2_000 } });
  });
  afterAll(() => w.close());

  it('an unscanned QR window ends in needsLink until a new QR is requested', async () => {
    await w.createAccount('win-01');
    await w.waitForPhase('win-01', 'awaitingScan');
    const expired = await w.waitForPhase('win-01', 'needsLink');
    expect(expired.reason).toBe('QrExpired');
    await waitFor(async () => !(await w.db.doc('accountQr/win-01').get()).exists, { timeoutMs: 5_000, label: 'stale QR removed' });
    // Nothing happens by itself; a new request opens a new window.
    await w.db.doc('accounts/win-01').update({ qrRequestedAt: Timestamp.now(), updatedAt: Timestamp.now() });
    await w.waitForPhase('win-01', 'awaitingScan');
    await scanPublishedQr(w, 'win-01', '15550003101');
    await w.waitForPhase('win-01', 'connected');
  });

  it('links with a pairing code when the account asks for one', async () => {
    await w.createAccount('pair-01', { linkMethod: 'pairingCode', phoneNumber: '+15550003102' });
    const phone = w.sim.createPhone({ number: '15550003102' });
    const qr = await waitFor(async () => (await w.db.doc('accountQr/pair-01').get()).data(), { timeoutMs: 20_000, label: 'pairing code published' });
    expect(qr).toMatchObject({ kind: 'pairingCode', qr: null, qrPng: null });
    expect(qr.pairingCode).toMatch(/^[A-Z0-9]{8}$/);
    expect((await w.status('pair-01'))!.reason).toBe('PairingCodeReady');
    await phone.enterPairingCode(qr.pairingCode as string);
    const s = await w.waitForPhase('pair-01', 'connected');
    expect(s.linkedPhoneMasked).toBe('+1555•••••02');
    expect(w.sim.totalConflicts()).toBe(0);
  });
});
