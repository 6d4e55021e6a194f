/**
 * The session driver with the real Baileys against the simulator, and credentials in the real
 * durable store: linking, restart, login from disk, and the two watchdogs.
 */
import { startSimulator, trustSimulatorRoot, type Simulator } from '@wafleet/wa-sim';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SessionDriver, type SessionClosed, type SessionEvents, type SessionTimeouts } from '../src/session/session-driver.ts';
import { AuthStore } from '../src/store/auth-state.ts';
import { tempDir, waitFor } from './helpers.ts';

const log = pino({ level: 'silent' });
const FAST: SessionTimeouts = {
  connectTimeoutMs: 5_000,
  keepAliveIntervalMs: 1_000,
  defaultQueryTimeoutMs: 5_000,
  connectDeadlineMs: 3_000,
  zombieAfterMs: 60_000,
};

let sim: Simulator;
let restoreTrust: () => void;
let store: AuthStore;
let cleanup: () => Promise<void>;
const drivers: SessionDriver[] = [];

beforeAll(async () => {
  sim = await startSimulator({ controlPort: null });
  restoreTrust = trustSimulatorRoot(sim.rootPublicKey);
  const tmp = await tempDir('wafleet-driver-');
  cleanup = tmp.cleanup;
  store = await AuthStore.create({ root: tmp.dir });
});

afterEach(async () => {
  sim.clearFaults();
  await Promise.all(drivers.splice(0).map((d) => d.close()));
  await store.closeAll();
});

afterAll(async () => {
  restoreTrust();
  await sim.stop();
  await cleanup();
});

interface Recorder extends SessionEvents {
  qrs: string[];
  opened: Array<{ meJid: string | null }>;
  newLogins: number;
  closed: SessionClosed[];
}

function recorder(): Recorder {
  const r: Recorder = {
    qrs: [],
    opened: [],
    closed: [],
    newLogins: 0,
    onConnecting: () => undefined,
    onQr: (qr) => r.qrs.push(qr),
    onPairingCode: () => undefined,
    onOpen: (info) => r.opened.push(info),
    onClosed: (info) => r.closed.push(info),
    onCredsSaved: () => undefined,
    onNewLogin: () => void r.newLogins++,
  };
  return r;
}

async function drive(accountId: string, timeouts: Partial<SessionTimeouts> = {}): Promise<{ driver: SessionDriver; events: Recorder }> {
  const auth = await store.open(accountId);
  const events = recorder();
  const driver = new SessionDriver({ accountId, auth, log, baileysLog: log, timeouts: { ...FAST, ...timeouts }, socketUrl: sim.wsUrl, events });
  drivers.push(driver);
  driver.start();
  return { driver, events };
}

/** Links an account by QR and returns once its post-link session is open. */
async function link(accountId: string, number: string) {
  const phone = sim.createPhone({ number });
  const first = await drive(accountId);
  await waitFor(() => first.events.qrs[0], { timeoutMs: 10_000 });
  await phone.scanQr(first.events.qrs[0]!);
  const restart = await waitFor(() => first.events.closed[0], { timeoutMs: 10_000 });
  expect(restart).toMatchObject({ code: 515, cause: 'server', linked: true });
  // The link is announced by the socket that was scanned, once its new credentials are on disk.
  await waitFor(() => first.events.newLogins === 1, { timeoutMs: 5_000, label: 'new login announced' });
  await first.driver.close();
  await store.closeAll();
  const second = await drive(accountId);
  await waitFor(() => second.events.opened[0], { timeoutMs: 10_000 });
  expect(second.events.newLogins).toBe(0);
  return { phone, ...second };
}

describe('session driver', () => {
  it('links by QR, restarts on 515, and logs in from the credentials on disk', async () => {
    const { driver, events, phone } = await link('drv-link', '15550002001');
    expect(events.opened[0]!.meJid).toMatch(/^15550002001:\d+@s\.whatsapp\.net$/);
    expect(driver.linked).toBe(true);
    expect(phone.linkedDevices()).toHaveLength(1);
    await driver.close();
    await store.closeAll();
    // A fresh process would read the same files: open them again and log in without any QR.
    const again = await drive('drv-link');
    await waitFor(() => again.events.opened[0], { timeoutMs: 10_000 });
    expect(again.events.qrs).toEqual([]);
    expect(sim.totalConflicts()).toBe(0);
  });

  it('ends a connection stuck in connecting after a rejected WebSocket upgrade', async () => {
    sim.injectFault({ kind: 'reject-upgrade', status: 403 });
    const { events, driver } = await drive('drv-reject', { connectDeadlineMs: 1_500 });
    const closed = await waitFor(() => events.closed[0], { timeoutMs: 10_000 });
    expect(closed).toMatchObject({ cause: 'connectDeadline', code: null, wasOpen: false });
    expect(driver.state).toBe('closed');
  });

  it('ends an open connection that stops receiving frames', async () => {
    const linked = await link('drv-zombie', '15550002002');
    await linked.driver.close();
    await store.closeAll();
    const { events } = await drive('drv-zombie', { zombieAfterMs: 1_500, keepAliveIntervalMs: 60_000 });
    await waitFor(() => events.opened[0], { timeoutMs: 10_000 });
    sim.injectFault({ kind: 'stall', target: '15550002002' });
    const closed = await waitFor(() => events.closed[0], { timeoutMs: 15_000 });
    expect(closed).toMatchObject({ cause: 'zombie', wasOpen: true });
  });
});

describe('session driver while linking', () => {
  it('keeps a socket that shows a QR past the connect deadline, until the scan', { timeout: 60_000 }, async () => {
    const phone = sim.createPhone({ number: '15550002003' });
    // The first QR outlives the 3 s connect deadline; a second QR proves the socket was still
    // there after the deadline passed.
    const { events } = await drive('drv-slow-scan', { connectDeadlineMs: 3_000, qrTimeoutMs: 6_000 });
    await waitFor(() => events.qrs.length >= 2, { timeoutMs: 30_000, label: 'QR rotation' });
    expect(events.closed).toEqual([]);
    await phone.scanQr(events.qrs.at(-1)!);
    expect(await waitFor(() => events.closed[0], { timeoutMs: 10_000 })).toMatchObject({ code: 515 });
  });
});
