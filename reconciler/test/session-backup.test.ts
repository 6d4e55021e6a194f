import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { getApps, initializeApp } from 'firebase-admin/app';
import { getFirestore, type Firestore } from 'firebase-admin/firestore';
import pino from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import { isolatedProjectId } from '../../test/support/emulators.ts';
import { Heartbeat } from '../src/lease/heartbeat.ts';
import { LeaseManager, StaleOwnerError, type Identity } from '../src/lease/lease-manager.ts';
import { BackupUnreadableError, SessionBackupStore } from '../src/store/session-backup.ts';

let db: Firestore;
let leases: LeaseManager;
const key = createHash('sha256').update('test backup key').digest();

beforeAll(async () => {
  const app = getApps().find((a) => a.name === 'backup') ?? initializeApp({ projectId: isolatedProjectId('backup') }, 'backup');
  db = getFirestore(app);
  const me: Identity = { instanceId: 'backup-test', incarnation: randomUUID(), host: 'h', storagePath: '/s' };
  await new Heartbeat(db, me, {
    renewMs: 3_600_000, ttlMs: 60_000, version: 't', log: pino({ level: 'silent' }),
    summary: () => ({ accounts: {}, storageFreeBytes: null }), onFence: () => {}, onRecover: () => {}, onIdentityConflict: () => {},
  }).start();
  leases = new LeaseManager(db, me, { ttlMs: 60_000, hostLockHeld: false });
});

async function ownedAccount(): Promise<string> {
  const id = `b-${randomUUID().slice(0, 8)}`;
  expect((await leases.acquire(id)).acquired).toBe(true);
  return id;
}

describe('session backups', () => {
  it('round-trips a multi-chunk backup, replacing the previous generation', async () => {
    const id = await ownedAccount();
    const store = new SessionBackupStore(db, key, leases);
    const big = randomBytes(2_500_000); // incompressible: three chunks
    expect(await store.save(id, big)).toBe(1);
    expect((await store.load(id))!.equals(big)).toBe(true);
    expect((await db.collection(`sessionBackups/${id}/chunks`).get()).size).toBe(3);

    const small = Buffer.from(JSON.stringify({ creds: { noiseKey: 'k'.repeat(100) } }));
    expect(await store.save(id, small)).toBe(2);
    expect((await store.load(id))!.equals(small)).toBe(true);
    const chunks = await db.collection(`sessionBackups/${id}/chunks`).get();
    expect(chunks.docs.map((d) => d.id)).toEqual(['2-0']);
    expect((await db.doc(`sessionBackups/${id}`).get()).get('owner')).toMatchObject({ instanceId: 'backup-test', epoch: 1 });
  });

  it('stores no plaintext', async () => {
    const id = await ownedAccount();
    const secret = Buffer.from(`{"advSecretKey":"${'Z'.repeat(64)}"}`);
    await new SessionBackupStore(db, key, leases).save(id, secret);
    const stored = (await db.collection(`sessionBackups/${id}/chunks`).get()).docs.map((d) => Buffer.from(d.get('data')));
    expect(Buffer.concat(stored).includes(Buffer.from('advSecretKey'))).toBe(false);
    expect(JSON.stringify((await db.doc(`sessionBackups/${id}`).get()).data())).not.toContain('ZZZZ');
  });

  it('says so when the key is wrong or the backup was tampered with', async () => {
    const id = await ownedAccount();
    const store = new SessionBackupStore(db, key, leases);
    await store.save(id, Buffer.from('state'));
    await expect(new SessionBackupStore(db, randomBytes(32), leases).load(id)).rejects.toThrow(/another BACKUP_KEY/);

    const chunk = db.doc(`sessionBackups/${id}/chunks/1-0`);
    const data = Buffer.from((await chunk.get()).get('data'));
    data[0] = data[0]! ^ 0xff;
    await chunk.set({ data });
    await expect(store.load(id)).rejects.toThrow(/do not match the manifest/);
    // Consistent-looking but forged: the manifest hash is updated too; GCM still refuses it.
    await db.doc(`sessionBackups/${id}`).update({ sha256: createHash('sha256').update(data).digest('hex') });
    await expect(store.load(id)).rejects.toBeInstanceOf(BackupUnreadableError);
    await expect(store.load(id)).rejects.toThrow(/authentication failed/);
  });

  it('refuses saves and deletes from a process that does not own the account', async () => {
    const id = `b-${randomUUID().slice(0, 8)}`;
    const store = new SessionBackupStore(db, key, leases);
    await expect(store.save(id, Buffer.from('x'))).rejects.toBeInstanceOf(StaleOwnerError);
    expect((await db.doc(`sessionBackups/${id}`).get()).exists).toBe(false);
  });

  it('deletes the manifest and every chunk', async () => {
    const id = await ownedAccount();
    const store = new SessionBackupStore(db, key, leases);
    await store.save(id, randomBytes(1_000_000));
    await store.delete(id);
    expect(await store.load(id)).toBeNull();
    expect((await db.collection(`sessionBackups/${id}/chunks`).get()).size).toBe(0);
  });
});
