/**
 * Issue 4, done-when 6, 7 and 9: desired-state round trips without a QR, relink, delete; a wiped
 * sessions directory restored from the encrypted backups; malformed documents isolated.
 */
import { rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { FieldValue, Timestamp } from 'firebase-admin/firestore';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers.ts';
import { scanPublishedQr, startHarness, type Harness } from './harness.ts';

let h: Harness;
let rec: Awaited<ReturnType<Harness['startReconciler']>>;

beforeAll(async () => {
  h = await startHarness('life');
  rec = await h.startReconciler();
  await Promise.all(['l-01', 'l-02', 'l-03'].map((id) => h.createAccount(id)));
  await Promise.all(['l-01', 'l-02', 'l-03'].map((id, i) => scanPublishedQr(h, id, `1555000500${i}`, 90_000)));
  await Promise.all(['l-01', 'l-02', 'l-03'].map((id) => h.waitForPhase(id, 'connected', 90_000)));
}, 240_000);
afterAll(() => h.close());

const qrExists = async (id: string) => (await h.db.doc(`accountQr/${id}`).get()).exists;
const touch = (id: string, fields: Record<string, unknown>) => h.db.doc(`accounts/${id}`).update({ ...fields, updatedAt: Timestamp.now() });

describe('account lifecycle', () => {
  it('disconnects and reconnects on desiredState without a new QR', async () => {
    const before = h.sim.deviceStats().find((d) => d.deviceJid.startsWith('15550005000:'));
    await touch('l-01', { desiredState: 'disconnected' });
    const down = await h.waitForPhase('l-01', 'disconnected');
    expect(down.reason).toBe('DesiredDisconnected');
    await waitFor(() => h.sim.deviceStats().find((d) => d.deviceJid === before!.deviceJid)?.openConnections === 0, { timeoutMs: 10_000 });
    await touch('l-01', { desiredState: 'connected' });
    await h.waitForPhase('l-01', 'connected');
    expect(await qrExists('l-01')).toBe(false);
    // The status names the spec version it acted on.
    const spec = await h.db.doc('accounts/l-01').get();
    const status = await h.status('l-01');
    expect((status!.observedSpecTime as Timestamp).toMillis()).toBe(spec.updateTime!.toMillis());
  });

  it('relinks: unlinks the device, wipes its credentials, and links a new one by QR', async () => {
    const phone = h.sim.phones().find((p) => p.number === '15550005001')!;
    expect(phone.linkedDevices()).toHaveLength(1);
    const oldBackup = (await h.db.doc('sessionBackups/l-02').get()).get('generation') as number;
    await touch('l-02', { relinkRequestedAt: FieldValue.serverTimestamp() });
    await h.waitForPhase('l-02', 'awaitingScan');
    await waitFor(() => phone.linkedDevices().length === 0, { timeoutMs: 10_000, label: 'old device unlinked' });
    await scanPublishedQr(h, 'l-02', '15550005101');
    const s = await h.waitForPhase('l-02', 'connected');
    expect(s.linkedPhoneMasked).toBe('+1555•••••01');
    expect(h.sim.phones().find((p) => p.number === '15550005101')!.linkedDevices()).toHaveLength(1);
    // The new link is backed up at once (the restore below depends on it, not on the shutdown's flush).
    let manifest: Record<string, unknown> | undefined;
    await waitFor(async () => {
      manifest = (await h.db.doc('sessionBackups/l-02').get()).data();
      return manifest?.linked === true && (manifest.generation as number) > oldBackup;
    }, { timeoutMs: 30_000, label: 'backup of the new link' }).catch((err: Error) => {
      throw new Error(`${err.message}; backup before the relink: generation ${oldBackup}; now: ${JSON.stringify({ generation: manifest?.generation, linked: manifest?.linked, owner: manifest?.owner })}`);
    });
  });

  it('restores a wiped sessions directory from the backups and reconnects with no QR', async () => {
    const rec2Dir = rec.sessionsPath;
    await rec.stop('wipe test');
    await rm(path.join(rec2Dir, 'l-01'), { recursive: true, force: true });
    await rm(path.join(rec2Dir, 'l-02'), { recursive: true, force: true });
    await rm(path.join(rec2Dir, 'l-03', 'creds.json'), { force: true });
    const restartAt = Date.now();
    rec = await h.startReconciler({ sessionsPath: rec2Dir });
    for (const id of ['l-01', 'l-02', 'l-03']) {
      await h.waitForPhase(id, (s) => s.phase === 'connected' && (s.lastConnectedAt as Timestamp).toMillis() >= restartAt);
      expect(await qrExists(id)).toBe(false);
    }
    expect(existsSync(path.join(rec2Dir, 'l-01', 'creds.json'))).toBe(true);
    expect(h.sim.totalConflicts()).toBe(0);
  });

  it('puts only the malformed account in error, saying what is wrong', async () => {
    const now = Timestamp.now();
    await h.db.doc('accounts/bad-1').set({ displayName: 42, desiredState: 'online', createdAt: now, updatedAt: now });
    await h.db.doc('accounts/bad-2').set({ displayName: 'x'.repeat(100_000), desiredState: 'connected' });
    await h.db.doc('accounts/Bad Id').set({ displayName: 'ok', desiredState: 'connected' });
    const s1 = await h.waitForPhase('bad-1', 'error');
    expect(s1.reason).toBe('InvalidSpec');
    expect(s1.message).toMatch(/displayName: .*desiredState: /s);
    expect((await h.waitForPhase('bad-2', 'error')).message).toMatch(/too large/);
    expect((await h.waitForPhase('Bad Id', 'error')).message).toMatch(/not a valid account id|must match/);
    for (const id of ['l-01', 'l-02', 'l-03']) expect((await h.status(id))!.phase).toBe('connected');
  });

  it('deletes: logs out, wipes credentials and backup, removes status and QR, releases the lease', async () => {
    const phone = h.sim.phones().find((p) => p.number === '15550005002')!;
    await touch('l-03', { deleteRequestedAt: FieldValue.serverTimestamp() });
    await waitFor(async () => !(await h.db.doc('accounts/l-03').get()).exists, { timeoutMs: 15_000, label: 'account document deleted' });
    expect((await h.db.doc('accountStatus/l-03').get()).exists).toBe(false);
    expect(await qrExists('l-03')).toBe(false);
    expect((await h.db.doc('sessionBackups/l-03').get()).exists).toBe(false);
    // Released right after the document goes (not in the same write).
    await waitFor(async () => (await h.db.doc('leases/l-03').get()).get('holder') === null, { timeoutMs: 10_000, label: 'lease released' });
    expect(existsSync(path.join(rec.sessionsPath, 'l-03'))).toBe(false);
    expect(phone.linkedDevices()).toHaveLength(0);
  });

  it('an invalid document still deletes: the phone loses the device, the slot and the lease are freed', async () => {
    // Issue 10, item 2: a phone number the rules once accepted and the schema refuses put the
    // account in InvalidSpec before deleteRequestedAt was looked at; the delete never finished.
    // Relinked above to this phone.
    const phone = h.sim.phones().find((p) => p.number === '15550005101')!;
    await h.waitForPhase('l-02', 'connected');
    expect(phone.linkedDevices()).toHaveLength(1);
    await touch('l-02', { phoneNumber: '+1234567' });
    expect((await h.waitForPhase('l-02', 'error')).reason).toBe('InvalidSpec');
    await touch('l-02', { deleteRequestedAt: FieldValue.serverTimestamp() });
    await waitFor(async () => !(await h.db.doc('accounts/l-02').get()).exists, { timeoutMs: 15_000, label: 'invalid account document deleted' });
    expect((await h.db.doc('accountStatus/l-02').get()).exists).toBe(false);
    // The lease is released right after the document goes.
    await waitFor(async () => (await h.db.doc('leases/l-02').get()).get('holder') === null, { timeoutMs: 10_000, label: 'lease released' });
    expect(phone.linkedDevices()).toHaveLength(0);
  });

  it('an invalid document still logs out when asked to', async () => {
    const phone = h.sim.phones().find((p) => p.number === '15550005000')!;
    await h.waitForPhase('l-01', 'connected');
    await touch('l-01', { labels: { 'not a valid key!': 'x' }, desiredState: 'loggedOut' });
    const s = await h.waitForPhase('l-01', 'loggedOut');
    expect(s.message).toMatch(/is invalid/);
    expect(phone.linkedDevices()).toHaveLength(0);
    expect(existsSync(path.join(rec.sessionsPath, 'l-01', 'creds.json'))).toBe(false);
  });
});

describe('unlinking with the socket closed', () => {
  // Issue 16, item 9: with no open socket the credentials were wiped and the device stayed in the
  // phone's "Linked devices", uncontrolled.
  const linkDisconnected = async (id: string, number: string) => {
    await h.createAccount(id);
    await scanPublishedQr(h, id, number, 60_000);
    await h.waitForPhase(id, 'connected', 60_000);
    const phone = h.sim.phones().find((p) => p.number === number)!;
    const device = phone.linkedDevices()[0]!.deviceJid;
    await touch(id, { desiredState: 'disconnected' });
    await h.waitForPhase(id, 'disconnected');
    await waitFor(() => h.sim.deviceStats().find((d) => d.deviceJid === device)?.openConnections === 0, { timeoutMs: 10_000, label: 'socket closed' });
    return phone;
  };

  it('deleting a disconnected account logs in briefly and removes the device from the phone', async () => {
    const phone = await linkDisconnected('l-04', '15550005004');
    expect(phone.linkedDevices()).toHaveLength(1);
    await touch('l-04', { deleteRequestedAt: FieldValue.serverTimestamp() });
    await waitFor(async () => !(await h.db.doc('accounts/l-04').get()).exists, { timeoutMs: 30_000, label: 'account document deleted' });
    expect(phone.linkedDevices()).toHaveLength(0);
    expect(existsSync(path.join(rec.sessionsPath, 'l-04'))).toBe(false);
  }, 120_000);

  it('logging out a disconnected account removes the device from the phone too', async () => {
    const phone = await linkDisconnected('l-05', '15550005005');
    await touch('l-05', { desiredState: 'loggedOut' });
    await h.waitForPhase('l-05', 'loggedOut', 30_000);
    expect(phone.linkedDevices()).toHaveLength(0);
    expect((await h.db.doc('incidents/l-05__UnlinkPending').get()).exists).toBe(false);
  }, 120_000);
});
