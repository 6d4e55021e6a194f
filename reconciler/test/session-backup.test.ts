/**
 * Session backups against the real Firestore emulator, with real leases. Takeovers use a second
 * LeaseManager on the same host and disk (it proves the first holder dead through the host lock),
 * so a "stale writer" here is exactly what a reconciler is after another instance took its lease.
 */
import { createCipheriv, createHash, randomBytes, randomUUID } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { getApps, initializeApp } from 'firebase-admin/app';
import { getFirestore, type Firestore } from 'firebase-admin/firestore';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolatedProjectId } from '../../test/support/emulators.ts';
import { TcpProxy } from '../../test/support/tcp-proxy.ts';
import { Heartbeat } from '../src/lease/heartbeat.ts';
import { LeaseManager, StaleOwnerError, type Identity } from '../src/lease/lease-manager.ts';
import { CredentialsUnavailableError, openCredentials } from '../src/session/credentials-loader.ts';
import { AuthStore } from '../src/store/auth-state.ts';
import { BackupRefusedError, BackupUnreadableError, SessionBackupStore, keyFingerprint, type SessionBackupStoreOptions } from '../src/store/session-backup.ts';
import { TimeoutError } from '../src/util/deadline.ts';
import { tempDir } from './helpers.ts';

const projectId = isolatedProjectId('backup');
let db: Firestore;
let leases: LeaseManager;
const key = createHash('sha256').update('test backup key').digest();
const linked = { linked: true, expectedGeneration: null } as const;
const unlinked = { linked: false, expectedGeneration: null } as const;
const me: Identity = { instanceId: 'backup-test', incarnation: randomUUID(), host: 'h', storagePath: '/s' };
const proxies: TcpProxy[] = [];

beforeAll(async () => {
  const app = getApps().find((a) => a.name === 'backup') ?? initializeApp({ projectId }, 'backup');
  db = getFirestore(app);
  await new Heartbeat(db, me, {
    renewMs: 3_600_000, ttlMs: 60_000, version: 't', log: pino({ level: 'silent' }),
    summary: () => ({ accounts: {}, storageFreeBytes: null, maxAccounts: 30, slotsUsed: 0 }), onFence: () => {}, onRecover: () => {}, onIdentityConflict: () => {},
  }).start();
  leases = new LeaseManager(db, me, { ttlMs: 60_000, hostLockHeld: false });
});
afterAll(() => Promise.all(proxies.map((p) => p.stop())));

async function ownedAccount(): Promise<string> {
  const id = `b-${randomUUID().slice(0, 8)}`;
  expect((await leases.acquire(id)).acquired).toBe(true);
  return id;
}

/** Another instance on the same host and disk: it may take any lease of `me` at once. */
function rival(): LeaseManager {
  return new LeaseManager(db, { instanceId: `rival-${randomUUID().slice(0, 6)}`, incarnation: randomUUID(), host: me.host, storagePath: me.storagePath }, { ttlMs: 60_000, hostLockHeld: true });
}

async function takeOver(id: string): Promise<LeaseManager> {
  const other = rival();
  const result = await other.acquire(id);
  expect(result.acquired && result.grant.epoch).toBeGreaterThan(1);
  return other;
}

function store(manager = leases, options?: SessionBackupStoreOptions): SessionBackupStore {
  return new SessionBackupStore(db, key, manager, options);
}

async function chunkIds(id: string): Promise<string[]> {
  return (await db.collection(`sessionBackups/${id}/chunks`).listDocuments()).map((d) => d.id).sort();
}

/** Chunk ids the manifest points at (both formats). */
async function manifestChunkIds(id: string): Promise<string[]> {
  const m = (await db.doc(`sessionBackups/${id}`).get()).data()!;
  const prefix = (m.chunkPrefix as string | undefined) ?? String(m.generation);
  return Array.from({ length: m.chunkCount as number }, (_, i) => `${prefix}-${i}`).sort();
}

/** A backup exactly as the code before chunk prefixes wrote it: chunk ids `${generation}-${i}`, no `linked`. */
async function writeOldFormatBackup(id: string, plaintext: Buffer, generation: number): Promise<void> {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(`wafleet-backup:v1:${id}:${generation}`));
  const ciphertext = Buffer.concat([cipher.update(gzipSync(plaintext)), cipher.final()]);
  await db.doc(`sessionBackups/${id}/chunks/${generation}-0`).set({ data: ciphertext });
  await db.doc(`sessionBackups/${id}`).set({
    format: 'aes-256-gcm+gzip/v1',
    generation,
    chunkCount: 1,
    ciphertextBytes: ciphertext.length,
    sha256: createHash('sha256').update(ciphertext).digest('hex'),
    iv: iv.toString('base64'),
    authTag: cipher.getAuthTag().toString('base64'),
    keyId: keyFingerprint(key),
    owner: { instanceId: me.instanceId, epoch: 1 },
  });
}

describe('session backups: save and read', () => {
  it('round-trips a multi-chunk backup, replacing the previous generation and its chunks', async () => {
    const id = await ownedAccount();
    const s = store();
    const big = randomBytes(2_500_000); // incompressible: three chunks
    expect(await s.save(id, big, linked)).toBe(1);
    const first = await s.read(id);
    expect(first?.generation).toBe(1);
    expect(first!.plaintext.equals(big)).toBe(true);
    expect(await chunkIds(id)).toHaveLength(3);

    const small = Buffer.from(JSON.stringify({ creds: { noiseKey: 'k'.repeat(100) } }));
    expect(await s.save(id, small, linked)).toBe(2);
    expect((await s.read(id))!.plaintext.equals(small)).toBe(true);
    expect(await chunkIds(id)).toEqual(await manifestChunkIds(id));
    expect(await chunkIds(id)).toHaveLength(1);
    expect((await db.doc(`sessionBackups/${id}`).get()).get('owner')).toMatchObject({ instanceId: 'backup-test', epoch: 1 });
    // The call the supervisor makes today still works: plaintext only, linked assumed.
    expect((await s.load(id))!.equals(small)).toBe(true);
  });

  it('stores no plaintext', async () => {
    const id = await ownedAccount();
    const secret = Buffer.from(`{"advSecretKey":"${'Z'.repeat(64)}"}`);
    await store().save(id, secret, linked);
    const stored = (await db.collection(`sessionBackups/${id}/chunks`).get()).docs.map((d) => Buffer.from(d.get('data')));
    expect(Buffer.concat(stored).includes(Buffer.from('advSecretKey'))).toBe(false);
    expect(JSON.stringify((await db.doc(`sessionBackups/${id}`).get()).data())).not.toContain('ZZZZ');
  });

  it('head() is the manifest only: generation, linked, owner, and whether our key can read it', async () => {
    const id = await ownedAccount();
    const s = store();
    expect(await s.head(id)).toBeNull();
    await s.save(id, Buffer.from('a'), unlinked);
    expect(await s.head(id)).toEqual({ generation: 1, linked: false, owner: { instanceId: 'backup-test', epoch: 1 }, key: 'current' });
    await s.save(id, Buffer.from('b'), linked);
    expect(await s.head(id)).toMatchObject({ generation: 2, linked: true });
    expect(await new SessionBackupStore(db, randomBytes(32), leases).head(id)).toMatchObject({ generation: 2, key: 'unknown' });
  });

  it('read() returns null only when there is no backup; unusable data throws with a kind', async () => {
    const id = await ownedAccount();
    const s = store();
    expect(await s.read(id)).toBeNull();
    await s.save(id, Buffer.from('state'), linked);
    const wrongKey = new SessionBackupStore(db, randomBytes(32), leases).read(id);
    await expect(wrongKey).rejects.toBeInstanceOf(BackupUnreadableError);
    await expect(new SessionBackupStore(db, randomBytes(32), leases).read(id)).rejects.toMatchObject({ kind: 'keyMismatch' });

    const [chunkId] = await manifestChunkIds(id);
    const chunk = db.doc(`sessionBackups/${id}/chunks/${chunkId}`);
    const good = Buffer.from((await chunk.get()).get('data'));
    const data = Buffer.from(good);
    data[0] = data[0]! ^ 0xff;
    await chunk.set({ data });
    await expect(s.read(id)).rejects.toMatchObject({ name: 'BackupUnreadableError', kind: 'corrupt' });
    // Consistent-looking but forged: the manifest hash is updated too; GCM still refuses it.
    const manifest = db.doc(`sessionBackups/${id}`);
    const goodSha = (await manifest.get()).get('sha256') as string;
    await manifest.update({ sha256: createHash('sha256').update(data).digest('hex') });
    await expect(s.read(id)).rejects.toMatchObject({ kind: 'corrupt', message: expect.stringMatching(/authentication failed/) });

    await manifest.update({ sha256: goodSha });
    await chunk.delete();
    await expect(s.read(id)).rejects.toMatchObject({ kind: 'corrupt', message: expect.stringMatching(/missing/) });
    await chunk.set({ data: good });
    expect((await s.read(id))!.plaintext.toString()).toBe('state');

    await manifest.update({ format: 'aes-256-gcm+gzip/v9' });
    await expect(s.read(id)).rejects.toMatchObject({ kind: 'format' });
    await manifest.update({ format: 'aes-256-gcm+gzip/v1', chunkCount: 'three' });
    await expect(s.read(id)).rejects.toMatchObject({ kind: 'format' });
  });

  it('refuses an authentication tag shorter than 16 bytes (GCM would accept a truncated one)', async () => {
    const id = await ownedAccount();
    const s = store();
    await s.save(id, Buffer.from('state'), linked);
    const manifest = db.doc(`sessionBackups/${id}`);
    const tag = Buffer.from((await manifest.get()).get('authTag') as string, 'base64');
    expect(tag).toHaveLength(16);
    for (const length of [4, 8, 12, 15]) {
      await manifest.update({ authTag: tag.subarray(0, length).toString('base64') });
      await expect(s.read(id)).rejects.toMatchObject({ name: 'BackupUnreadableError', kind: 'corrupt' });
    }
    await manifest.update({ authTag: tag.toString('base64') });
    expect((await s.read(id))!.plaintext.toString()).toBe('state');
  });

  it('reads a backup written in the format before chunk prefixes, and replaces it cleanly', async () => {
    const id = await ownedAccount();
    const s = store();
    await writeOldFormatBackup(id, Buffer.from('old-format state'), 4);
    expect(await s.read(id)).toEqual({ plaintext: Buffer.from('old-format state'), generation: 4, key: 'current' });
    // Without the field it was linked (today's code only backs up after a link).
    expect(await s.head(id)).toMatchObject({ generation: 4, linked: true, key: 'current' });
    await expect(s.save(id, Buffer.from('fresh'), unlinked)).rejects.toMatchObject({ reason: 'unlinkedOverLinked' });
    expect(await s.save(id, Buffer.from('new'), { linked: true, expectedGeneration: 4 })).toBe(5);
    expect((await s.read(id))!.plaintext.toString()).toBe('new');
    expect(await chunkIds(id)).toEqual(await manifestChunkIds(id));
    expect(await chunkIds(id)).not.toContain('4-0');
  });

  it('a reader that sees the generation switch mid-read returns the new backup, not "corrupt"', async () => {
    const id = await ownedAccount();
    const owner = store();
    await owner.save(id, Buffer.from('one'), linked);
    let switched = false;
    const reader = store(leases, {
      hooks: {
        beforeChunkRead: async () => {
          if (switched) return;
          switched = true;
          await owner.save(id, Buffer.from('two'), linked); // deletes generation 1's chunks
        },
      },
    });
    expect(await reader.read(id)).toEqual({ plaintext: Buffer.from('two'), generation: 2, key: 'current' });
    expect(switched).toBe(true);
  });
});

describe('session backups: what a save may not overwrite', () => {
  it('unlinked credentials never replace a linked backup', async () => {
    const id = await ownedAccount();
    const s = store();
    await s.save(id, Buffer.from('linked identity'), linked);
    const refused = s.save(id, Buffer.from('fresh pairing creds'), unlinked);
    await expect(refused).rejects.toBeInstanceOf(BackupRefusedError);
    await expect(s.save(id, Buffer.from('fresh pairing creds'), unlinked)).rejects.toMatchObject({ reason: 'unlinkedOverLinked' });
    expect(await s.read(id)).toEqual({ plaintext: Buffer.from('linked identity'), generation: 1, key: 'current' });
    expect(await chunkIds(id)).toEqual(await manifestChunkIds(id)); // the refused save left nothing behind
    // Linked over linked, linked over unlinked and unlinked over unlinked are fine.
    expect(await s.save(id, Buffer.from('linked again'), linked)).toBe(2);
    const other = await ownedAccount();
    expect(await s.save(other, Buffer.from('pairing'), unlinked)).toBe(1);
    expect(await s.save(other, Buffer.from('pairing 2'), unlinked)).toBe(2);
    expect(await s.save(other, Buffer.from('linked'), linked)).toBe(3);
  });

  it('a disk restored from an older generation never replaces a newer backup', async () => {
    const id = await ownedAccount();
    const s = store();
    await s.save(id, Buffer.from('g1'), linked);
    await s.save(id, Buffer.from('g2'), { linked: true, expectedGeneration: 1 });
    await expect(s.save(id, Buffer.from('stale disk'), { linked: true, expectedGeneration: 1 })).rejects.toMatchObject({
      name: 'BackupRefusedError',
      reason: 'newerBackup',
      storedGeneration: 2,
    });
    expect(await s.read(id)).toEqual({ plaintext: Buffer.from('g2'), generation: 2, key: 'current' });
    expect(await s.save(id, Buffer.from('g3'), { linked: true, expectedGeneration: 2 })).toBe(3);
    expect(await s.save(id, Buffer.from('g4'), linked)).toBe(4); // null: unknown base, no check
  });

  it('refuses a save from a process that does not own the account, before writing any chunk', async () => {
    const nobody = `b-${randomUUID().slice(0, 8)}`;
    await expect(store().save(nobody, Buffer.from('x'), linked)).rejects.toBeInstanceOf(StaleOwnerError);
    expect((await db.doc(`sessionBackups/${nobody}`).get()).exists).toBe(false);
    expect(await chunkIds(nobody)).toEqual([]);

    const id = await ownedAccount();
    const s = store();
    await s.save(id, Buffer.from('owner state'), linked);
    const before = await chunkIds(id);
    const newOwner = await takeOver(id);
    await expect(s.save(id, randomBytes(1000), linked)).rejects.toBeInstanceOf(StaleOwnerError);
    expect(await chunkIds(id)).toEqual(before);
    expect((await store(newOwner).read(id))!.plaintext.toString()).toBe('owner state');
  });

  it("a stale writer whose chunk writes land after the new owner's save leaves that backup intact", async () => {
    const id = await ownedAccount();
    await store().save(id, Buffer.from('generation one'), linked);
    let newOwner: LeaseManager | null = null;
    let ownersGeneration = 0;
    const ownerState = randomBytes(50_000);
    // The stale writer passed its ownership check; before its chunks go out, another instance
    // takes the lease and saves. Then the stale writer's chunks land.
    const stale = store(leases, {
      hooks: {
        beforeChunkWrite: async () => {
          if (newOwner) return;
          newOwner = await takeOver(id);
          ownersGeneration = await store(newOwner).save(id, ownerState, linked);
        },
      },
    });
    await expect(stale.save(id, randomBytes(50_000), linked)).rejects.toBeInstanceOf(StaleOwnerError);
    expect(newOwner).not.toBeNull();
    expect(ownersGeneration).toBe(2);
    const read = await store(newOwner!).read(id);
    expect(read?.generation).toBe(2);
    expect(read!.plaintext.equals(ownerState)).toBe(true);
    // The stale writer removed the chunks it wrote; only the owner's remain.
    expect(await chunkIds(id)).toEqual(await manifestChunkIds(id));
  });

  it('sweeps chunks a crashed writer left behind once a newer generation is in place', async () => {
    const id = await ownedAccount();
    const s = store();
    await s.save(id, Buffer.from('one'), linked);
    // A writer killed between its chunk writes and its manifest commit (or whose commit timed out).
    await db.doc(`sessionBackups/${id}/chunks/2-7-deadbeef-0`).set({ data: Buffer.from('orphan') });
    await s.save(id, Buffer.from('two'), linked);
    expect(await chunkIds(id)).toEqual(await manifestChunkIds(id));
  });
});

describe('session backups: delete', () => {
  it('deletes the manifest and every chunk', async () => {
    const id = await ownedAccount();
    const s = store();
    await s.save(id, randomBytes(1_000_000), linked);
    expect(await s.delete(id)).toBe(true);
    expect(await s.read(id)).toBeNull();
    expect(await s.head(id)).toBeNull();
    expect((await db.doc(`sessionBackups/${id}`).get()).exists).toBe(false);
    expect(await chunkIds(id)).toEqual([]);
    expect(await s.delete(id)).toBe(false);
  });

  it('with ifGeneration, leaves a newer backup alone (a 401 on stale local credentials)', async () => {
    const id = await ownedAccount();
    const s = store();
    await s.save(id, Buffer.from('g1'), linked);
    await s.save(id, Buffer.from('g2'), linked);
    expect(await s.delete(id, { ifGeneration: 1 })).toBe(false);
    expect(await s.read(id)).toEqual({ plaintext: Buffer.from('g2'), generation: 2, key: 'current' });
    expect(await s.delete(id, { ifGeneration: 2 })).toBe(true);
    expect(await s.read(id)).toBeNull();
  });

  it('never hands out a generation twice, even after a delete', async () => {
    const id = await ownedAccount();
    const s = store();
    await s.save(id, Buffer.from('g1'), linked);
    await s.save(id, Buffer.from('g2'), linked);
    await s.delete(id);
    // A disk still based on generation 2 is older than anything saved after the delete.
    const next = await s.save(id, Buffer.from('relinked elsewhere'), linked);
    expect(next).toBeGreaterThan(2);
    await expect(s.save(id, Buffer.from('stale disk'), { linked: true, expectedGeneration: 2 })).rejects.toMatchObject({ reason: 'newerBackup' });
    expect(await s.delete(id, { ifGeneration: 2 })).toBe(false);
    expect((await s.read(id))!.plaintext.toString()).toBe('relinked elsewhere');
  });

  it('is fenced', async () => {
    const id = await ownedAccount();
    await store().save(id, Buffer.from('x'), linked);
    const newOwner = await takeOver(id);
    await expect(store().delete(id)).rejects.toBeInstanceOf(StaleOwnerError);
    expect((await store(newOwner).read(id))!.plaintext.toString()).toBe('x');
  });
});

describe('session backups: a Firestore that stops answering', () => {
  it('every call gives up at its deadline with a transient error, not "unreadable"', async () => {
    const proxy = TcpProxy.forHostPort(process.env.FIRESTORE_EMULATOR_HOST!);
    await proxy.start();
    proxies.push(proxy);
    const emulator = process.env.FIRESTORE_EMULATOR_HOST;
    process.env.FIRESTORE_EMULATOR_HOST = proxy.address; // the SDK reads it when the client is made
    let silent: Firestore;
    try {
      silent = getFirestore(initializeApp({ projectId }, `backup-silent-${randomUUID()}`));
    } finally {
      process.env.FIRESTORE_EMULATOR_HOST = emulator;
    }
    const id = await ownedAccount();
    await store().save(id, Buffer.from('state'), linked);
    const silentLeases = new LeaseManager(silent, me, { ttlMs: 60_000, hostLockHeld: false });
    expect((await silentLeases.acquire(id)).acquired).toBe(true); // same identity: still ours
    const s = new SessionBackupStore(silent, key, silentLeases, { timeoutMs: 500 });
    proxy.blackhole();
    for (const call of [() => s.head(id), () => s.read(id), () => s.save(id, Buffer.from('y'), linked), () => s.delete(id)]) {
      const started = Date.now();
      const error = await call().then(() => null, (e: unknown) => e);
      expect(error).toBeInstanceOf(TimeoutError);
      expect(Date.now() - started).toBeLessThan(5_000);
    }
    proxy.heal();
    expect((await store().read(id))!.plaintext.toString()).toBe('state');
  }, 30_000);
});

describe('session backups: rotating BACKUP_KEY (read old, write new)', () => {
  const oldKey = createHash('sha256').update('rotation: old key').digest();
  const newKey = createHash('sha256').update('rotation: new key').digest();
  const rotating = (manager = leases) => new SessionBackupStore(db, newKey, manager, { previousKey: oldKey });
  const keyIdOf = async (id: string) => (await db.doc(`sessionBackups/${id}`).get()).get('keyId') as string;

  it('reads a backup under the previous key, and every save writes under the current key', async () => {
    const id = await ownedAccount();
    const before = new SessionBackupStore(db, oldKey, leases);
    const state = Buffer.from(JSON.stringify({ creds: { advSecretKey: 'x'.repeat(40) } }));
    expect(await before.save(id, state, linked)).toBe(1);
    expect(await keyIdOf(id)).toBe(keyFingerprint(oldKey));

    const s = rotating();
    expect(s.keyId).toBe(keyFingerprint(newKey));
    expect(s.previousKeyId).toBe(keyFingerprint(oldKey));
    expect(await s.head(id)).toMatchObject({ generation: 1, linked: true, key: 'previous' });
    const read = await s.read(id);
    expect(read).toMatchObject({ generation: 1, key: 'previous' });
    expect(read!.plaintext.equals(state)).toBe(true);

    // The re-save: a new generation under the new key, readable with the new key alone.
    expect(await s.save(id, read!.plaintext, { linked: true, expectedGeneration: 1 })).toBe(2);
    expect(await keyIdOf(id)).toBe(keyFingerprint(newKey));
    expect(await s.head(id)).toMatchObject({ generation: 2, key: 'current' });
    const after = new SessionBackupStore(db, newKey, leases);
    expect(await after.read(id)).toMatchObject({ generation: 2, key: 'current' });
    expect((await after.read(id))!.plaintext.equals(state)).toBe(true);
    expect(await chunkIds(id)).toEqual(await manifestChunkIds(id));
    // And the old key alone cannot read it any more.
    await expect(before.read(id)).rejects.toMatchObject({ name: 'BackupUnreadableError', kind: 'keyMismatch' });
  });

  it('a backup under neither key stays keyMismatch, naming the fingerprints, not the keys', async () => {
    const id = await ownedAccount();
    const other = createHash('sha256').update('rotation: some other key').digest();
    await new SessionBackupStore(db, other, leases).save(id, Buffer.from('state'), linked);
    const s = rotating();
    expect(await s.head(id)).toMatchObject({ generation: 1, key: 'unknown' });
    const error = await s.read(id).then(
      () => null,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(BackupUnreadableError);
    expect(error).toMatchObject({ kind: 'keyMismatch' });
    const message = (error as Error).message;
    for (const k of [keyFingerprint(other), keyFingerprint(newKey), keyFingerprint(oldKey)]) expect(message).toContain(k);
    for (const k of [other, newKey, oldKey]) {
      expect(message).not.toContain(k.toString('hex'));
      expect(message).not.toContain(k.toString('base64'));
    }
  });

  it('pins the 16-byte tag for backups under the previous key too, and tells tampering from a key mismatch', async () => {
    const id = await ownedAccount();
    await new SessionBackupStore(db, oldKey, leases).save(id, Buffer.from('state'), linked);
    const manifest = db.doc(`sessionBackups/${id}`);
    const tag = Buffer.from((await manifest.get()).get('authTag') as string, 'base64');
    const s = rotating();
    for (const length of [4, 12]) {
      await manifest.update({ authTag: tag.subarray(0, length).toString('base64') });
      await expect(s.read(id)).rejects.toMatchObject({ name: 'BackupUnreadableError', kind: 'corrupt' });
    }
    const flipped = Buffer.from(tag);
    flipped[0] = flipped[0]! ^ 1;
    await manifest.update({ authTag: flipped.toString('base64') });
    await expect(s.read(id)).rejects.toMatchObject({ kind: 'corrupt', message: expect.stringMatching(/authentication failed/) });
    await manifest.update({ authTag: tag.toString('base64') });
    expect((await s.read(id))!.plaintext.toString()).toBe('state');
  });

  it('refuses a previous key that is not 32 bytes or is the current key', () => {
    expect(() => new SessionBackupStore(db, newKey, leases, { previousKey: Buffer.alloc(31) })).toThrow(/32 bytes/);
    expect(() => new SessionBackupStore(db, newKey, leases, { previousKey: Buffer.from(newKey) })).toThrow(/must not be the current/);
  });

  describe('openCredentials saves a backup under the previous key again under the current key', () => {
    const log = pino({ level: 'silent' });

    /** Linked credentials on disk, backed up under `key` as generation 1 (as the supervisor does). */
    async function linkedAccount(key: Buffer): Promise<{ id: string; auth: AuthStore; cleanup: () => Promise<void> }> {
      const id = await ownedAccount();
      const { dir, cleanup } = await tempDir();
      const auth = await AuthStore.create({ root: dir });
      const open = await auth.open(id);
      open.state.creds.me = { id: '15550001001:3@s.whatsapp.net', lid: '123456789012345:3@lid', name: 'Test' };
      open.state.creds.registered = true;
      await open.saveCreds();
      const generation = await new SessionBackupStore(db, key, leases).save(id, await auth.snapshot(id), { linked: true, expectedGeneration: null });
      await auth.setBackupGeneration(id, generation);
      await open.close();
      return { id, auth, cleanup };
    }

    it('from the local disk at start, then restores from it with only the new key after the disk is lost', async () => {
      const { id, auth, cleanup } = await linkedAccount(oldKey);
      try {
        const opened = await openCredentials(id, { store: auth, backups: rotating(), log });
        expect(opened.state.creds.registered).toBe(true);
        expect(await keyIdOf(id)).toBe(keyFingerprint(newKey));
        expect((await db.doc(`sessionBackups/${id}`).get()).get('generation')).toBe(2);
        // The local marker follows, so the next open does not take its own backup for a newer one.
        expect(await auth.backupGeneration(id)).toBe(2);
        await opened.close();

        // The old key is dropped, and the disk lost: restored from the re-saved backup.
        await auth.wipe(id);
        const restored = await openCredentials(id, { store: auth, backups: new SessionBackupStore(db, newKey, leases), log });
        expect(restored.state.creds.registered).toBe(true);
        expect(restored.state.creds.me?.id).toBe('15550001001:3@s.whatsapp.net');
        expect(await auth.backupGeneration(id)).toBe(2);
        await restored.close();
      } finally {
        await cleanup();
      }
    });

    it('after restoring a lost disk from a backup under the previous key', async () => {
      const { id, auth, cleanup } = await linkedAccount(oldKey);
      try {
        await auth.wipe(id);
        const opened = await openCredentials(id, { store: auth, backups: rotating(), log });
        expect(opened.state.creds.registered).toBe(true);
        expect(await keyIdOf(id)).toBe(keyFingerprint(newKey));
        expect(await auth.backupGeneration(id)).toBe(2);
        await opened.close();
        // Already under the current key: the next open saves nothing.
        const again = await openCredentials(id, { store: auth, backups: rotating(), log });
        expect((await db.doc(`sessionBackups/${id}`).get()).get('generation')).toBe(2);
        await again.close();
      } finally {
        await cleanup();
      }
    });

    it('only while owning the account: a process without the lease opens the credentials but writes nothing', async () => {
      const { id, auth, cleanup } = await linkedAccount(oldKey);
      try {
        const other = await takeOver(id);
        expect(other).toBeDefined();
        const opened = await openCredentials(id, { store: auth, backups: rotating(), log });
        expect(opened.state.creds.registered).toBe(true);
        expect(await keyIdOf(id)).toBe(keyFingerprint(oldKey));
        expect((await db.doc(`sessionBackups/${id}`).get()).get('generation')).toBe(1);
        expect(await auth.backupGeneration(id)).toBe(1);
        await opened.close();
      } finally {
        await cleanup();
      }
    });

    it('a lost disk whose backup is under neither key stays BackupUnreadable, and nothing is written', async () => {
      const { id, auth, cleanup } = await linkedAccount(createHash('sha256').update('rotation: a third key').digest());
      try {
        await auth.wipe(id);
        await expect(openCredentials(id, { store: auth, backups: rotating(), log })).rejects.toSatisfy(
          (err: unknown) => err instanceof CredentialsUnavailableError && err.reason === 'BackupUnreadable',
        );
        expect((await db.doc(`sessionBackups/${id}`).get()).get('generation')).toBe(1);
        expect(await auth.exists(id)).toBe(false);
      } finally {
        await cleanup();
      }
    });
  });
});
