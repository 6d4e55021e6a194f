/**
 * Issue 16, items 3 and 4: a failed restore never destroys the only good backup, a corrupt key
 * shard costs a shard and not the link, and the newest credentials win over a stale disk.
 * The emulator, the simulator and real Baileys, with reconcilers started and stopped as a VM would.
 */
import { randomBytes } from 'node:crypto';
import { readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FieldValue, Timestamp } from 'firebase-admin/firestore';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers.ts';
import { scanPublishedQr, startHarness, type Harness } from './harness.ts';

let h: Harness;

beforeAll(async () => {
  h = await startHarness('backuprec');
}, 60_000);
afterAll(() => h.close());

const qrExists = async (id: string) => (await h.db.doc(`accountQr/${id}`).get()).exists;
const manifest = async (id: string) => (await h.db.doc(`sessionBackups/${id}`).get()).data();
const connectedSince = (at: number) => (s: Record<string, unknown>) => s.phase === 'connected' && (s.lastConnectedAt as Timestamp).toMillis() >= at;

/** Links `id` on a fresh reconciler and waits for its first backup. */
async function linkOn(id: string, phone: string, opts: Parameters<Harness['startReconciler']>[0] = {}) {
  const rec = await h.startReconciler(opts);
  await h.createAccount(id);
  await scanPublishedQr(h, id, phone, 60_000);
  await h.waitForPhase(id, 'connected', 60_000);
  await waitFor(async () => (await manifest(id))?.linked === true, { timeoutMs: 15_000, label: `backup of ${id}` });
  return rec;
}

describe('restoring from the backup', () => {
  it('a backup this key cannot read blocks the account with an incident: no new link, the backup untouched', async () => {
    const id = 'b-01';
    let rec = await linkOn(id, '15550009001');
    const dir = rec.sessionsPath;
    await rec.stop('disk lost');
    const before = await manifest(id);
    await rm(path.join(dir, id), { recursive: true, force: true });

    // Redeployed with the wrong BACKUP_KEY, on an empty disk.
    rec = await h.startReconciler({ sessionsPath: dir, env: { BACKUP_KEY: randomBytes(32).toString('base64') } });
    const blocked = await h.waitForPhase(id, (s) => s.phase === 'error' && s.reason === 'BackupUnreadable', 30_000);
    expect(blocked.message).toMatch(/BACKUP_KEY/);
    const incident = await waitFor(async () => (await h.db.doc(`incidents/${id}__BackupUnreadable`).get()).data(), { timeoutMs: 10_000, label: 'incident' });
    expect(incident).toMatchObject({ open: true, severity: 'critical', accountId: id });
    // It keeps retrying with backoff and still never links.
    await waitFor(async () => Number((await h.status(id))?.reconnectAttempt) >= 2, { timeoutMs: 90_000, label: 'a retry' });
    expect(await qrExists(id)).toBe(false);
    expect(await manifest(id)).toMatchObject({ generation: before!.generation, linked: true, chunkPrefix: before!.chunkPrefix });
    expect(h.sim.phones().find((p) => p.number === '15550009001')!.linkedDevices()).toHaveLength(1);

    // The right key again: the same device comes back, with no QR and the incident resolved.
    await rec.stop('key fixed');
    const fixedAt = Date.now();
    rec = await h.startReconciler({ sessionsPath: dir });
    await h.waitForPhase(id, connectedSince(fixedAt), 60_000);
    expect(await qrExists(id)).toBe(false);
    await waitFor(async () => (await h.db.doc(`incidents/${id}__BackupUnreadable`).get()).get('open') === false, { timeoutMs: 10_000, label: 'incident resolved' });
    await rec.stop('next test');
  }, 240_000);

  it('an account that was online, taken over with neither its disk nor a backup, asks for a link instead of showing a QR by itself', async () => {
    // A VM died right after linking, before the first backup landed; another instance takes over.
    const id = 'b-04';
    const rec = await linkOn(id, '15550009004');
    await rec.stop('VM and disk gone');
    await h.db.recursiveDelete(h.db.doc(`sessionBackups/${id}`));
    const other = await h.startReconciler({ instanceId: 'rec-other' });
    const s = await h.waitForPhase(id, (s) => s.phase === 'needsLink' && s.reason === 'LinkRequired', 30_000);
    expect(s.message).toMatch(/Linked before/);
    expect(await qrExists(id)).toBe(false);
    // An operator's request links it again, on this instance.
    await h.db.doc(`accounts/${id}`).update({ qrRequestedAt: FieldValue.serverTimestamp() });
    await scanPublishedQr(h, id, '15550009004', 60_000);
    await h.waitForPhase(id, 'connected', 60_000);
    await other.stop('next test');
  }, 180_000);

  it('a corrupt key shard with no backup to repair from costs the shard, not the link', async () => {
    const id = 'b-02';
    let rec = await linkOn(id, '15550009002');
    const dir = rec.sessionsPath;
    await rec.stop('corrupting');
    await h.db.recursiveDelete(h.db.doc(`sessionBackups/${id}`));
    const keysDir = path.join(dir, id, 'keys');
    const types = await readdir(keysDir);
    const type = types.find((t) => t.startsWith('pre-key')) ?? types[0]!;
    const shard = (await readdir(path.join(keysDir, type)))[0]!;
    await writeFile(path.join(keysDir, type, shard), '{"format":"wafleet-keys", torn');

    const restartAt = Date.now();
    rec = await h.startReconciler({ sessionsPath: dir });
    await h.waitForPhase(id, connectedSince(restartAt), 60_000);
    expect(await qrExists(id)).toBe(false);
    expect(h.sim.phones().find((p) => p.number === '15550009002')!.linkedDevices()).toHaveLength(1);
    // A new backup follows on its own.
    await waitFor(async () => (await manifest(id))?.linked === true, { timeoutMs: 15_000, label: 'new backup' });
    await rec.stop('next test');
  }, 180_000);

  it('a disk older than the backup (relinked elsewhere meanwhile): the backup wins and survives', async () => {
    const id = 'b-03';
    const recA = await linkOn(id, '15550009003', { instanceId: 'vm-a' });
    const diskA = recA.sessionsPath;
    await recA.stop('vm-a down');

    // vm-b takes over from the backup and the operator relinks the account to another phone.
    const takeoverAt = Date.now();
    const recB = await h.startReconciler({ instanceId: 'vm-b' });
    await h.waitForPhase(id, connectedSince(takeoverAt), 60_000);
    const oldGeneration = (await manifest(id))!.generation as number;
    await h.db.doc(`accounts/${id}`).update({ relinkRequestedAt: FieldValue.serverTimestamp(), updatedAt: Timestamp.now() });
    await h.waitForPhase(id, 'awaitingScan', 30_000);
    await scanPublishedQr(h, id, '15550009013');
    await h.waitForPhase(id, (s) => s.phase === 'connected' && s.linkedPhoneMasked === '+1555•••••13', 60_000);
    await waitFor(async () => Number((await manifest(id))?.generation) > oldGeneration && (await manifest(id))?.linked === true, { timeoutMs: 15_000, label: 'backup of the new link' });
    const newGeneration = (await manifest(id))!.generation as number;
    await recB.stop('vm-b down');

    // vm-a returns with its old disk: it must use the new link, not log in as the removed device.
    const returnAt = Date.now();
    const recA2 = await h.startReconciler({ instanceId: 'vm-a', sessionsPath: diskA });
    const s = await h.waitForPhase(id, connectedSince(returnAt), 60_000);
    expect(s.linkedPhoneMasked).toBe('+1555•••••13');
    expect(await qrExists(id)).toBe(false);
    expect((await manifest(id))!.generation).toBeGreaterThanOrEqual(newGeneration);
    expect(h.sim.phones().find((p) => p.number === '15550009003')!.linkedDevices()).toHaveLength(0);
    expect(h.sim.phones().find((p) => p.number === '15550009013')!.linkedDevices()).toHaveLength(1);
    const lastDisconnect = s.lastDisconnect as { code: number } | null;
    expect(lastDisconnect?.code).not.toBe(401);
    await recA2.stop('test over');
  }, 300_000);
});
