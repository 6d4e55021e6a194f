/**
 * Issue 11, item 1: rotating BACKUP_KEY without relinking anyone ("read old, write new").
 * An account linked under K1; restarted with BACKUP_KEY=K2 and BACKUP_KEY_PREVIOUS=K1 it connects
 * without a QR and its backup moves onto K2; after that K1 can go, even on a lost disk.
 * The emulator, the simulator and real Baileys, with reconcilers started and stopped as a VM would.
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { Timestamp } from 'firebase-admin/firestore';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyFingerprint } from '../../src/store/session-backup.ts';
import { waitFor } from '../helpers.ts';
import { scanPublishedQr, startHarness, type Harness } from './harness.ts';

let h: Harness;

beforeAll(async () => {
  h = await startHarness('keyrot');
}, 60_000);
afterAll(() => h.close());

const qrExists = async (id: string) => (await h.db.doc(`accountQr/${id}`).get()).exists;
const manifest = async (id: string) => (await h.db.doc(`sessionBackups/${id}`).get()).data();
const connectedSince = (at: number) => (s: Record<string, unknown>) => s.phase === 'connected' && (s.lastConnectedAt as Timestamp).toMillis() >= at;

describe('rotating BACKUP_KEY', () => {
  it('reads the old key, writes the new one, and needs only the new one afterwards, even on a lost disk', async () => {
    // k-01 keeps its disk through the rotation; k-02 loses it during the rotation, so only a read
    // of the backup under the previous key can bring it back without a QR.
    const accounts = [
      { id: 'k-01', phone: '15550008001' },
      { id: 'k-02', phone: '15550008002' },
    ];
    const k1 = randomBytes(32);
    const k2 = randomBytes(32);
    const lostDisk = (dir: string, id: string) => rm(path.join(dir, id), { recursive: true, force: true });

    // Linked under K1.
    let rec = await h.startReconciler({ env: { BACKUP_KEY: k1.toString('base64') } });
    const dir = rec.sessionsPath;
    for (const { id, phone } of accounts) {
      await h.createAccount(id);
      await scanPublishedQr(h, id, phone, 60_000);
      await h.waitForPhase(id, 'connected', 60_000);
      await waitFor(async () => (await manifest(id))?.linked === true, { timeoutMs: 15_000, label: `backup of ${id}` });
      expect((await manifest(id))!.keyId).toBe(keyFingerprint(k1));
    }
    await rec.stop('rotating');
    await lostDisk(dir, 'k-02');

    // The rotation: K2 current, K1 previous. Both connect with their device, no QR, and both backups move to K2.
    const rotatedAt = Date.now();
    rec = await h.startReconciler({ sessionsPath: dir, env: { BACKUP_KEY: k2.toString('base64'), BACKUP_KEY_PREVIOUS: k1.toString('base64') } });
    for (const { id } of accounts) {
      await h.waitForPhase(id, connectedSince(rotatedAt), 60_000);
      await waitFor(async () => (await manifest(id))?.keyId === keyFingerprint(k2), { timeoutMs: 15_000, label: `backup of ${id} under K2` });
      expect(await manifest(id)).toMatchObject({ linked: true, keyId: keyFingerprint(k2) });
      expect(await qrExists(id)).toBe(false);
    }
    await rec.stop('rotation done');

    // K1 dropped, and every disk lost: restored from the backups under K2, connected, no QR.
    for (const { id } of accounts) await lostDisk(dir, id);
    const restoredAt = Date.now();
    rec = await h.startReconciler({ sessionsPath: dir, env: { BACKUP_KEY: k2.toString('base64') } });
    for (const { id, phone } of accounts) {
      await h.waitForPhase(id, connectedSince(restoredAt), 60_000);
      expect(await qrExists(id)).toBe(false);
      expect(h.sim.phones().find((p) => p.number === phone)!.linkedDevices()).toHaveLength(1);
      expect((await h.db.doc(`incidents/${id}__BackupUnreadable`).get()).get('open')).not.toBe(true);
    }
    await rec.stop('test over');
  }, 300_000);
});
