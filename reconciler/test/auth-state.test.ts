import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import {
  Curve,
  addTransactionCapability,
  initAuthCreds,
  makeCacheableSignalKeyStore,
  proto,
  type AuthenticationState,
  type SignalDataTypeMap,
  type UserFacingSocketConfig,
} from '@whiskeysockets/baileys';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { baileysLogger, createLogger } from '../src/log.ts';
import {
  AuthStateClosedError,
  AuthStateInUseError,
  AuthStore,
  CorruptAuthStateError,
  InvalidAuthSnapshotError,
  AuthStateNotFoundError,
  type AccountAuthState,
  type AuthWriteEvent,
} from '../src/store/auth-state.ts';
import { shardCount, shardFileName, shardOf } from '../src/store/auth-layout.ts';
import { LineCollector, tempDir } from './helpers.ts';

let root: string;
let cleanup: () => Promise<void>;
let writes: AuthWriteEvent[];
let store: AuthStore;

beforeEach(async () => {
  ({ dir: root, cleanup } = await tempDir());
  writes = [];
  store = await AuthStore.create({ root, onWrite: (event) => writes.push(event) });
});

afterEach(async () => {
  await store.closeAll();
  await cleanup();
});

function preKeys(count: number, firstId = 1): Record<string, SignalDataTypeMap['pre-key']> {
  const out: Record<string, SignalDataTypeMap['pre-key']> = {};
  for (let i = 0; i < count; i++) out[firstId + i] = Curve.generateKeyPair();
  return out;
}

const appStateKey = proto.Message.AppStateSyncKeyData.fromObject({
  keyData: Buffer.from('a'.repeat(32)),
  fingerprint: { rawId: 7, currentIndex: 2, deviceIndexes: [0, 1] },
  timestamp: 1_732_000_000,
});

/** Fills an open account with one of every kind of key Baileys stores. */
async function populate(auth: AccountAuthState): Promise<void> {
  await auth.state.keys.set({
    'pre-key': preKeys(30),
    session: { '15550001001.0': new Uint8Array([1, 2, 3, 4]), '15550001002:3.0': new Uint8Array([9, 9]) },
    'sender-key': { '120363000000000001@g.us::15550001001::0': new Uint8Array([5, 6, 7]) },
    'sender-key-memory': { '120363000000000001@g.us': { '15550001001:3@s.whatsapp.net': true } },
    'app-state-sync-key': { AAAAAOqs: appStateKey },
    'app-state-sync-version': { regular: { version: 3, hash: Buffer.alloc(128, 1), indexValueMap: { 'aGVsbG8=': { valueMac: Buffer.from([1, 2]) } } } },
    'lid-mapping': { '15550001001': '123456789012345@lid', '123456789012345_reverse': '15550001001' },
    'device-list': { '15550001001': ['0', '3'] },
    tctoken: { '15550001001@s.whatsapp.net': { token: Buffer.from([4, 2]), timestamp: '1732000000' } },
  });
  auth.state.creds.me = { id: '15550001001:3@s.whatsapp.net', lid: '123456789012345:3@lid', name: 'Test' };
  auth.state.creds.registered = true;
  await auth.saveCreds();
}

describe('AuthStore: round trip with real Baileys types', () => {
  it('stores creds and every key type, and reads them back after reopening', async () => {
    const first = await store.open('wa-01');
    expect(first.isNew).toBe(true);
    const creds = first.state.creds;
    const pk = preKeys(3, 500);
    await populate(first);
    await first.state.keys.set({ 'pre-key': pk });
    await first.close();

    const again = await store.open('wa-01');
    expect(again.isNew).toBe(false);
    // Buffers survive as Buffers (BufferJSON), not as {type,data} or number arrays.
    expect(Buffer.isBuffer(again.state.creds.noiseKey.private)).toBe(true);
    expect(Buffer.from(again.state.creds.noiseKey.private).equals(Buffer.from(creds.noiseKey.private))).toBe(true);
    expect(again.state.creds.signedPreKey.signature).toEqual(Buffer.from(creds.signedPreKey.signature));
    expect(again.state.creds.registrationId).toBe(creds.registrationId);
    expect(again.state.creds.advSecretKey).toBe(creds.advSecretKey);
    expect(again.state.creds.me?.id).toBe('15550001001:3@s.whatsapp.net');

    const gotPk = await again.state.keys.get('pre-key', ['500', '501', '502', '999']);
    expect(Object.keys(gotPk).sort()).toEqual(['500', '501', '502']); // missing ids are absent, not null
    expect(Buffer.from(gotPk['501']!.private).equals(Buffer.from(pk['501']!.private))).toBe(true);

    const sessions = await again.state.keys.get('session', ['15550001001.0', '15550001002:3.0']);
    expect([...sessions['15550001001.0']!]).toEqual([1, 2, 3, 4]);
    expect([...sessions['15550001002:3.0']!]).toEqual([9, 9]);
    const senderKeys = await again.state.keys.get('sender-key', ['120363000000000001@g.us::15550001001::0']);
    expect([...senderKeys['120363000000000001@g.us::15550001001::0']!]).toEqual([5, 6, 7]);
    expect(await again.state.keys.get('sender-key-memory', ['120363000000000001@g.us'])).toEqual({
      '120363000000000001@g.us': { '15550001001:3@s.whatsapp.net': true },
    });

    const { AAAAAOqs: key } = await again.state.keys.get('app-state-sync-key', ['AAAAAOqs']);
    expect(key).toBeInstanceOf(proto.Message.AppStateSyncKeyData);
    expect(Buffer.from(key!.keyData!).equals(Buffer.from(appStateKey.keyData!))).toBe(true);
    expect(key!.fingerprint?.rawId).toBe(7);
    expect(key!.fingerprint?.deviceIndexes).toEqual([0, 1]);
    expect(Number(key!.timestamp)).toBe(1_732_000_000);

    const { regular } = await again.state.keys.get('app-state-sync-version', ['regular']);
    expect(regular?.version).toBe(3);
    expect(Buffer.isBuffer(regular?.hash) && regular.hash.equals(Buffer.alloc(128, 1))).toBe(true);
    expect(await again.state.keys.get('lid-mapping', ['15550001001', '123456789012345_reverse'])).toEqual({
      '15550001001': '123456789012345@lid',
      '123456789012345_reverse': '15550001001',
    });
    expect(await again.state.keys.get('device-list', ['15550001001'])).toEqual({ '15550001001': ['0', '3'] });
    expect(again.keyCount('pre-key')).toBe(33);
  });

  it('deletes keys set to null, and removes shard files that become empty', async () => {
    const auth = await store.open('wa-01');
    await auth.state.keys.set({ 'pre-key': preKeys(2) });
    await auth.saveCreds();
    await auth.state.keys.set({ 'pre-key': { '1': null, '2': null } });
    await auth.close();
    const again = await store.open('wa-01');
    expect(await again.state.keys.get('pre-key', ['1', '2'])).toEqual({});
    expect(await readdir(path.join(again.dir, 'keys', 'pre-key'))).toEqual([]);
    expect(writes.filter((w) => w.op === 'remove').map((w) => w.file).sort()).toEqual(
      [...new Set(writes.filter((w) => w.file.startsWith('keys/pre-key/')).map((w) => w.file))].sort(),
    );
  });

  it('returned values are copies: mutating one does not change the store', async () => {
    const auth = await store.open('wa-01');
    await auth.state.keys.set({ 'sender-key-memory': { g: { a: true } } });
    const { g } = await auth.state.keys.get('sender-key-memory', ['g']);
    g!.b = true;
    expect(await auth.state.keys.get('sender-key-memory', ['g'])).toEqual({ g: { a: true } });
  });

  it('works under Baileys’ own wrappers (transactions, cache) and satisfies its types', async () => {
    const auth = await store.open('wa-01');
    const state: AuthenticationState = auth.state;
    const logger = baileysLogger(createLogger({ level: 'silent' }), 'wa-01');
    // Compile-time: the handle and logger plug straight into a socket config.
    const socketConfig: Partial<UserFacingSocketConfig> = { auth: { creds: state.creds, keys: makeCacheableSignalKeyStore(state.keys, logger) }, logger };
    expect(socketConfig.auth?.creds).toBe(auth.state.creds);

    // Baileys wraps `keys` in addTransactionCapability inside makeSocket; drive the same wrapper.
    const keys = addTransactionCapability(state.keys, logger, { maxCommitRetries: 3, delayBetweenTriesMs: 10 });
    await keys.transaction(async () => {
      await keys.set({ session: { '15550001001.0': new Uint8Array([42]) } });
      await keys.set({ 'pre-key': preKeys(5) });
      // Inside the transaction nothing is written yet.
      expect(writes.filter((w) => w.file.startsWith('keys/'))).toEqual([]);
    }, 'wa-01');
    expect(writes.some((w) => w.file.startsWith('keys/session/'))).toBe(true);
    await auth.saveCreds();
    await auth.close();
    const again = await store.open('wa-01');
    expect([...(await again.state.keys.get('session', ['15550001001.0']))['15550001001.0']!]).toEqual([42]);
    expect(again.keyCount('pre-key')).toBe(5);
  });
});

describe('AuthStore: writes', () => {
  it('812 pre-keys in one set become one write per shard (8), not 812', async () => {
    const auth = await store.open('wa-01');
    await auth.state.keys.set({ 'pre-key': preKeys(812) });
    const files = writes.filter((w) => w.op === 'write').map((w) => w.file);
    expect(files).toHaveLength(8);
    expect(new Set(files).size).toBe(8);
    expect(files.every((f) => /^keys\/pre-key\/0[0-7]\.json$/.test(f))).toBe(true);
  });

  it('812 separate concurrent sets coalesce into a bounded number of writes', async () => {
    const auth = await store.open('wa-01');
    const keys = preKeys(812);
    await Promise.all(Object.entries(keys).map(([id, pair]) => auth.state.keys.set({ 'pre-key': { [id]: pair } })));
    expect(writes.length).toBeLessThanOrEqual(16);
    expect(auth.keyCount('pre-key')).toBe(812);
  });

  it('concurrent saveCreds calls coalesce, and keys are written before the creds that follow them', async () => {
    const auth = await store.open('wa-01');
    const pending = [auth.state.keys.set({ 'pre-key': preKeys(10) })];
    for (let i = 0; i < 50; i++) {
      auth.state.creds.nextPreKeyId = i;
      pending.push(auth.saveCreds());
    }
    await Promise.all(pending);
    const credsWrites = writes.filter((w) => w.file === 'creds.json');
    expect(credsWrites.length).toBeGreaterThanOrEqual(1);
    expect(credsWrites.length).toBeLessThanOrEqual(2);
    const firstCreds = writes.findIndex((w) => w.file === 'creds.json');
    const lastKey = writes.findLastIndex((w) => w.file.startsWith('keys/'));
    expect(lastKey).toBeLessThan(firstCreds);
    const stored = JSON.parse(await readFile(path.join(auth.dir, 'creds.json'), 'utf8')) as { nextPreKeyId: number };
    expect(stored.nextPreKeyId).toBe(49); // the last value wins
  });

  it('set resolves only once the change is on disk', async () => {
    const auth = await store.open('wa-01');
    await auth.state.keys.set({ session: { s1: new Uint8Array([1]) } });
    // Read the file directly, bypassing the store's memory.
    const shardDir = path.join(auth.dir, 'keys', 'session');
    const texts = await Promise.all((await readdir(shardDir)).map((f) => readFile(path.join(shardDir, f), 'utf8')));
    expect(texts.some((t) => t.includes('"s1"'))).toBe(true);
  });

  it('deferWrites: a decryption\'s changes stay off the disk until committed, through Baileys\' transaction and cache layers; others stay durable', async () => {
    const auth = await store.open('wa-01');
    // The stack Baileys 7 puts over our keys (session-driver.ts, then makeSocket).
    const logger = baileysLogger(createLogger({ level: 'silent' }), 'wa-01');
    const keys = addTransactionCapability(makeCacheableSignalKeyStore(auth.state.keys, logger), logger, { maxCommitRetries: 1, delayBetweenTriesMs: 1 });
    const onDisk = (type: string, id: string) => shardFileOf(auth.dir, type, id).then(() => true, () => false);
    const deferred = auth.deferWrites(() => keys.transaction(async () => keys.set({ session: { 'alice.0': new Uint8Array([7]) } }), 'alice'));
    await deferred.result;
    // Meanwhile an ordinary write of another kind (an encrypt elsewhere, a pre-key upload).
    await keys.set({ 'pre-key': preKeys(1, 500) });
    expect(await onDisk('pre-key', '500')).toBe(true);
    expect(await onDisk('session', 'alice.0')).toBe(false);
    // Read back from memory all the same: Baileys sees its own change.
    expect(Object.keys(await auth.state.keys.get('session', ['alice.0']))).toEqual(['alice.0']);
    deferred.commit();
    await auth.flush();
    expect(await onDisk('session', 'alice.0')).toBe(true);
  });

  it('deferWrites: changes never committed stay off the disk (the kill -9 case: the message was neither journaled nor receipted)', async () => {
    const auth = await store.open('wa-01');
    await populate(auth);
    await auth.state.keys.set({ session: { 'bob.0': new Uint8Array([1]) } });
    await auth.deferWrites(async () => auth.state.keys.set({ session: { 'bob.0': new Uint8Array([2]) } })).result;
    // What a process that dies now leaves: only what was written.
    await auth.flush();
    const text = await readFile(path.join(auth.dir, await shardFileOf(auth.dir, 'session', 'bob.0')), 'utf8');
    expect(text).toContain(JSON.stringify(Buffer.from([1]).toString('base64')).slice(1, -1));
    expect(text).not.toContain(Buffer.from([2]).toString('base64'));
  });

  it('deferWrites: close writes changes not committed yet (Baileys may still receipt that message on its way down; losing its ratchet step would break the chat)', async () => {
    const auth = await store.open('wa-01');
    await populate(auth);
    await auth.state.keys.set({ session: { 'bob.0': new Uint8Array([1]) } });
    const held = auth.deferWrites(async () => auth.state.keys.set({ session: { 'bob.0': new Uint8Array([2]) } }));
    await held.result;
    await auth.close();
    held.commit(); // after the close: nothing more to do, and no error
    const reopened = await store.open('wa-01');
    expect(Buffer.from((await reopened.state.keys.get('session', ['bob.0']))['bob.0']!)).toEqual(Buffer.from([2]));
  });

  it('stores secrets with owner-only permissions (dirs 0700, files 0600)', async () => {
    const auth = await store.open('wa-01');
    await populate(auth);
    expect((await stat(auth.dir)).mode & 0o777).toBe(0o700);
    expect((await stat(path.join(auth.dir, 'keys', 'session'))).mode & 0o777).toBe(0o700);
    expect((await stat(path.join(auth.dir, 'creds.json'))).mode & 0o777).toBe(0o600);
    for (const type of await readdir(path.join(auth.dir, 'keys'))) {
      for (const file of await readdir(path.join(auth.dir, 'keys', type))) {
        expect((await stat(path.join(auth.dir, 'keys', type, file))).mode & 0o777).toBe(0o600);
      }
    }
  });
});

describe('AuthStore: corruption and recovery', () => {
  it('an unparsable creds.json is a CorruptAuthStateError naming the file', async () => {
    const auth = await store.open('wa-01');
    await populate(auth);
    await auth.close();
    await writeFile(path.join(root, 'wa-01', 'creds.json'), '{"noiseKey": {"public": {"type":"Buf');
    await expect(store.open('wa-01')).rejects.toSatisfy((e: unknown) => e instanceof CorruptAuthStateError && e.accountId === 'wa-01' && e.file === 'creds.json');
    expect(store.isOpen('wa-01')).toBe(false);
  });

  it('creds missing a key pair, or with a short key, are corrupt', async () => {
    const creds = initAuthCreds();
    const dir = path.join(root, 'wa-01');
    await mkdir(dir);
    await writeFile(path.join(dir, 'creds.json'), JSON.stringify({ ...creds, noiseKey: undefined }));
    await expect(store.open('wa-01')).rejects.toThrow(/creds\.json.*noiseKey/s);
    await writeFile(path.join(dir, 'creds.json'), JSON.stringify({ ...creds, signedIdentityKey: { public: { type: 'Buffer', data: 'AAAA' }, private: { type: 'Buffer', data: 'AAAA' } } }));
    await expect(store.open('wa-01')).rejects.toBeInstanceOf(CorruptAuthStateError);
  });

  it('a truncated or misplaced key shard is corrupt, and so is its snapshot', async () => {
    const auth = await store.open('wa-01');
    await populate(auth);
    await auth.close();
    const shardDir = path.join(root, 'wa-01', 'keys', 'pre-key');
    const [file] = await readdir(shardDir);
    const full = await readFile(path.join(shardDir, file!), 'utf8');
    await writeFile(path.join(shardDir, file!), full.slice(0, full.length / 2));
    await expect(store.open('wa-01')).rejects.toSatisfy((e: unknown) => e instanceof CorruptAuthStateError && e.file === `keys/pre-key/${file}`);
    await expect(store.snapshot('wa-01')).rejects.toBeInstanceOf(CorruptAuthStateError);
    // A well-formed file under the wrong name (its ids hash elsewhere) is caught too.
    const other = file === '00.json' ? '01.json' : '00.json';
    await writeFile(path.join(shardDir, file!), full);
    await writeFile(path.join(shardDir, other), full.replace(/"shard":\d+/, `"shard":${Number.parseInt(other, 16)}`));
    await expect(store.open('wa-01')).rejects.toThrow(/does not belong in this shard/);
  });

  it('sweeps temp files a crash left, and drops keys that were stored without creds', async () => {
    const dir = path.join(root, 'wa-01');
    await mkdir(path.join(dir, 'keys', 'pre-key'), { recursive: true });
    await writeFile(path.join(dir, '.creds.json.1234.deadbeef.tmp'), '{"torn');
    await writeFile(path.join(dir, 'keys', 'pre-key', '.00.json.1234.deadbeef.tmp'), '{"torn');
    const orphan = await (async () => {
      const other = await AuthStore.create({ root: path.join(root, 'scratch') });
      const a = await other.open('wa-01');
      await a.state.keys.set({ 'pre-key': preKeys(3) });
      await a.close();
      return path.join(root, 'scratch', 'wa-01', 'keys', 'pre-key');
    })();
    for (const f of await readdir(orphan)) await writeFile(path.join(dir, 'keys', 'pre-key', f), await readFile(path.join(orphan, f)));

    const auth = await store.open('wa-01');
    expect(auth.isNew).toBe(true);
    expect(auth.keyCount()).toBe(0);
    expect(await readdir(dir)).toEqual([]);
  });

  it('finishes a restore that was committed but not swapped in (crash after the commit point)', async () => {
    const auth = await store.open('wa-01');
    await populate(auth);
    const blob = await store.snapshot('wa-01');
    await auth.state.keys.set({ session: { extra: new Uint8Array([1]) } });
    await auth.close();
    // Stage the snapshot as restore would, up to and including the commit rename, then "crash".
    const staging = await AuthStore.create({ root: path.join(root, 'staging-area') });
    await staging.restore('wa-01', blob);
    const { rename } = await import('node:fs/promises');
    await rename(path.join(root, 'staging-area', 'wa-01'), path.join(root, '.ready-wa-01'));

    expect(await store.listAccounts()).toEqual(['wa-01']);
    const reopened = await (await AuthStore.create({ root })).open('wa-01');
    expect(await reopened.state.keys.get('session', ['extra'])).toEqual({}); // the restored state, not the old one
    expect(reopened.keyCount('pre-key')).toBe(30);
    expect((await readdir(root)).filter((n) => n.startsWith('.'))).toEqual([]);
    await reopened.close();
  });

  it('discards an uncommitted restore (crash before the commit point) and stale trash', async () => {
    const auth = await store.open('wa-01');
    await populate(auth);
    await auth.close();
    await mkdir(path.join(root, '.staging-wa-01-0badc0de', 'keys'), { recursive: true });
    await writeFile(path.join(root, '.staging-wa-01-0badc0de', 'creds.json'), '{"half');
    await mkdir(path.join(root, '.trash-wa-01-12345678'));
    await AuthStore.create({ root });
    expect(await readdir(root)).toEqual(['wa-01']);
    const again = await store.open('wa-01');
    expect(again.keyCount('pre-key')).toBe(30);
  });
});

describe('AuthStore: snapshot, restore, wipe, list', () => {
  it('snapshot → wipe → restore gives back the same state', async () => {
    const auth = await store.open('wa-01');
    await populate(auth);
    const before = auth.state.creds;
    await auth.close();
    const blob = await store.snapshot('wa-01');
    expect(blob.subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b])); // gzip

    expect(await store.wipe('wa-01')).toBe(true);
    expect(await store.exists('wa-01')).toBe(false);
    await store.restore('wa-01', blob);
    expect(await store.exists('wa-01')).toBe(true);

    const again = await store.open('wa-01');
    expect(Buffer.from(again.state.creds.noiseKey.private).equals(Buffer.from(before.noiseKey.private))).toBe(true);
    expect(again.state.creds.me?.id).toBe('15550001001:3@s.whatsapp.net');
    expect(again.keyCount()).toBe(30 + 2 + 1 + 1 + 1 + 1 + 2 + 1 + 1);
    const { AAAAAOqs: key } = await again.state.keys.get('app-state-sync-key', ['AAAAAOqs']);
    expect(key).toBeInstanceOf(proto.Message.AppStateSyncKeyData);
    expect((await stat(again.dir)).mode & 0o777).toBe(0o700);
  });

  it('restore replaces the whole state: keys absent from the snapshot are gone', async () => {
    const auth = await store.open('wa-01');
    await populate(auth);
    await auth.close();
    const blob = await store.snapshot('wa-01');
    const later = await store.open('wa-01');
    await later.state.keys.set({ session: { newer: new Uint8Array([7]) }, 'pre-key': preKeys(1, 9000) });
    await later.close();
    await store.restore('wa-01', blob);
    const again = await store.open('wa-01');
    expect(await again.state.keys.get('session', ['newer'])).toEqual({});
    expect(await again.state.keys.get('pre-key', ['9000'])).toEqual({});
  });

  it('a snapshot of an open account includes changes not yet flushed', async () => {
    const auth = await store.open('wa-01');
    await populate(auth);
    const unflushed = auth.state.keys.set({ session: { late: new Uint8Array([3]) } });
    const blob = await store.snapshot('wa-01');
    await unflushed;
    await auth.close();
    await store.wipe('wa-01');
    await store.restore('wa-01', blob);
    const again = await store.open('wa-01');
    expect([...(await again.state.keys.get('session', ['late'])).late!]).toEqual([3]);
  });

  it('rejects snapshots that are garbage, truncated, or another account’s', async () => {
    const auth = await store.open('wa-01');
    await populate(auth);
    await auth.close();
    const blob = await store.snapshot('wa-01');
    await expect(store.restore('wa-01', Buffer.from('not a snapshot'))).rejects.toBeInstanceOf(InvalidAuthSnapshotError);
    await expect(store.restore('wa-01', blob.subarray(0, blob.length - 20))).rejects.toBeInstanceOf(InvalidAuthSnapshotError);
    await expect(store.restore('wa-02', blob)).rejects.toThrow(/belongs to account wa-01/);
    await expect(store.restore('wa-01', gzipSync(JSON.stringify({ format: 'wafleet-auth-snapshot', v: 1, accountId: 'wa-01', createdAt: 'x', creds: {}, keys: {} })))).rejects.toThrow(/noiseKey/);
    expect(await store.exists('wa-02')).toBe(false);
    // The failed attempts left the original untouched.
    const again = await store.open('wa-01');
    expect(again.keyCount('pre-key')).toBe(30);
  });

  it('snapshot of an account without creds fails clearly', async () => {
    await expect(store.snapshot('wa-nobody')).rejects.toThrow(/no stored auth state/);
  });

  it('wipe, restore and a second open are refused while the account is open', async () => {
    const auth = await store.open('wa-01');
    await populate(auth);
    const blob = await store.snapshot('wa-01');
    await expect(store.open('wa-01')).rejects.toBeInstanceOf(AuthStateInUseError);
    await expect(store.wipe('wa-01')).rejects.toBeInstanceOf(AuthStateInUseError);
    await expect(store.restore('wa-01', blob)).rejects.toBeInstanceOf(AuthStateInUseError);
    await auth.close();
    await expect(auth.state.keys.set({ session: { x: new Uint8Array([1]) } })).rejects.toBeInstanceOf(AuthStateClosedError);
    await expect(auth.saveCreds()).rejects.toBeInstanceOf(AuthStateClosedError);
    expect(await store.wipe('wa-01')).toBe(true);
    expect(await readdir(root)).toEqual([]); // no trash left behind
  });

  it('close without flush discards pending changes', async () => {
    const auth = await store.open('wa-01');
    await populate(auth);
    const discarded = auth.state.keys.set({ session: { dropped: new Uint8Array([1]) } });
    await auth.close({ flush: false });
    await discarded; // resolves: the scheduled write found nothing to do
    const again = await store.open('wa-01');
    expect(await again.state.keys.get('session', ['dropped'])).toEqual({});
  });

  it('lists accounts with stored creds only, and refuses unsafe account ids', async () => {
    for (const id of ['wa-02', 'wa-01']) {
      const auth = await store.open(id);
      await auth.saveCreds();
      await auth.close();
    }
    await (await store.open('wa-unsaved')).close(); // opened, never saved
    await mkdir(path.join(root, 'Not-An-Account'));
    await writeFile(path.join(root, 'stray-file'), 'x');
    expect(await store.listAccounts()).toEqual(['wa-01', 'wa-02']);
    await expect(store.open('../etc')).rejects.toBeInstanceOf(TypeError);
    await expect(store.wipe('.trash-wa-01-00000000')).rejects.toBeInstanceOf(TypeError);
  });
});

/** Every file of an account directory, relative path → bytes. */
async function filesOf(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const full = path.join(entry.parentPath, entry.name);
    out.set(path.relative(dir, full), await readFile(full));
  }
  return out;
}

/** The shard file holding `id` of `type`. */
async function shardFileOf(dir: string, type: string, id: string): Promise<string> {
  for (const name of await readdir(path.join(dir, 'keys', type))) {
    if ((await readFile(path.join(dir, 'keys', type, name), 'utf8')).includes(JSON.stringify(id))) return `keys/${type}/${name}`;
  }
  throw new Error(`no shard holds ${type} ${id}`);
}

describe('AuthStore: backup generation marker', () => {
  it('is null until set, survives reopening the store, and does not disturb open()', async () => {
    const lines = new LineCollector();
    const logged = await AuthStore.create({ root, logger: createLogger({ level: 'trace', destination: lines }) });
    const auth = await logged.open('wa-01');
    await populate(auth);
    expect(await logged.backupGeneration('wa-01')).toBeNull();
    await logged.setBackupGeneration('wa-01', 5); // while open: a backup was just saved
    expect(await logged.backupGeneration('wa-01')).toBe(5);
    await auth.close();

    const again = await AuthStore.create({ root, logger: createLogger({ level: 'trace', destination: lines }) });
    expect(await again.backupGeneration('wa-01')).toBe(5);
    const reopened = await again.open('wa-01');
    expect(reopened.isNew).toBe(false);
    expect(reopened.keyCount('pre-key')).toBe(30);
    await reopened.close();
    expect(lines.text).not.toMatch(/unexpected file/);
    expect(await again.listAccounts()).toEqual(['wa-01']);
    expect((await stat(path.join(root, 'wa-01', 'backup-generation.json'))).mode & 0o777).toBe(0o600);
  });

  it('goes with the state: wipe removes it, restore writes the given generation (or none)', async () => {
    const auth = await store.open('wa-01');
    await populate(auth);
    await auth.close();
    const blob = await store.snapshot('wa-01');
    await store.setBackupGeneration('wa-01', 3);
    await store.restore('wa-01', blob, { generation: 8 });
    expect(await store.backupGeneration('wa-01')).toBe(8);
    // A restore without a generation replaces the whole directory, the marker included.
    await store.restore('wa-01', blob);
    expect(await store.backupGeneration('wa-01')).toBeNull();
    await store.setBackupGeneration('wa-01', 9);
    expect(await store.wipe('wa-01')).toBe(true);
    expect(await store.backupGeneration('wa-01')).toBeNull();
    await expect(store.setBackupGeneration('wa-01', 10)).rejects.toBeInstanceOf(AuthStateNotFoundError);
    await expect(store.setBackupGeneration('wa-02', 0)).rejects.toBeInstanceOf(RangeError);
  });

  it('is written into the staging directory, so a crash after the commit point finds it with the state', async () => {
    const auth = await store.open('wa-01');
    await populate(auth);
    await auth.close();
    const blob = await store.snapshot('wa-01');
    const staging = await AuthStore.create({ root: path.join(root, 'staging-area') });
    await staging.restore('wa-01', blob, { generation: 12 });
    const { rename } = await import('node:fs/promises');
    await rename(path.join(root, 'staging-area', 'wa-01'), path.join(root, '.ready-wa-01'));
    expect(await (await AuthStore.create({ root })).backupGeneration('wa-01')).toBe(12);
  });

  it('fresh creds opened over a stray marker drop it: they are based on no backup', async () => {
    await mkdir(path.join(root, 'wa-01'), { recursive: true });
    await writeFile(path.join(root, 'wa-01', 'backup-generation.json'), '{"format":"wafleet-backup-generation","v":1,"generation":4}\n');
    const auth = await store.open('wa-01');
    expect(auth.isNew).toBe(true);
    expect(await store.backupGeneration('wa-01')).toBeNull();
  });

  it('an unreadable marker reads as unknown, not as an error', async () => {
    const auth = await store.open('wa-01');
    await populate(auth);
    await store.setBackupGeneration('wa-01', 2);
    await writeFile(path.join(root, 'wa-01', 'backup-generation.json'), '{"gen');
    expect(await store.backupGeneration('wa-01')).toBeNull();
  });
});

describe('AuthStore: repairing corrupt files from a backup', () => {
  /** A populated account, its snapshot, then newer local changes the snapshot does not have. */
  async function backedUpThenChanged(): Promise<{ blob: Buffer; dir: string }> {
    const auth = await store.open('wa-01');
    await populate(auth);
    await auth.state.keys.set({ session: { 'old.0': new Uint8Array([1]) } });
    const blob = await store.snapshot('wa-01');
    const newSessions: Record<string, Uint8Array> = {};
    for (let i = 0; i < 40; i++) newSessions[`newer-${i}.0`] = new Uint8Array([2, i]);
    await auth.state.keys.set({ session: newSessions, 'pre-key': preKeys(5, 100) });
    auth.state.creds.nextPreKeyId = 105;
    await auth.saveCreds();
    await auth.close();
    return { blob, dir: path.join(root, 'wa-01') };
  }

  it('replaces only the corrupt shard; every good file stays byte-identical and newer keys survive', async () => {
    const { blob, dir } = await backedUpThenChanged();
    const corrupt = await shardFileOf(dir, 'session', 'old.0');
    const before = await filesOf(dir);
    await writeFile(path.join(dir, corrupt), before.get(corrupt)!.subarray(0, 10)); // torn by outside damage
    await expect(store.open('wa-01')).rejects.toBeInstanceOf(CorruptAuthStateError);

    expect(await store.repair('wa-01', blob)).toEqual({ replaced: [corrupt] });
    const after = await filesOf(dir);
    expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
    for (const [file, bytes] of before) if (file !== corrupt) expect(after.get(file)!.equals(bytes), file).toBe(true);

    const auth = await store.open('wa-01');
    expect(auth.state.creds.nextPreKeyId).toBe(105); // local creds, not the backup's
    expect([...(await auth.state.keys.get('session', ['old.0']))['old.0']!]).toEqual([1]); // from the backup
    const ids = Array.from({ length: 40 }, (_, i) => `newer-${i}.0`);
    const newer = await auth.state.keys.get('session', ids);
    // Sessions newer than the backup survive, except those that lived in the corrupt shard.
    const lost = ids.filter((id) => shardFileName(shardOf(id, shardCount('session'))) === path.basename(corrupt));
    expect(Object.keys(newer).sort()).toEqual(ids.filter((id) => !lost.includes(id)).sort());
    expect(lost.length).toBeLessThan(5);
    expect(auth.keyCount('pre-key')).toBe(35);
  });

  it('replaces a corrupt creds.json from the backup and leaves the shards alone', async () => {
    const { blob, dir } = await backedUpThenChanged();
    const before = await filesOf(dir);
    await writeFile(path.join(dir, 'creds.json'), '{"noiseKey":');
    expect(await store.repair('wa-01', blob)).toEqual({ replaced: ['creds.json'] });
    const after = await filesOf(dir);
    for (const [file, bytes] of before) if (file !== 'creds.json') expect(after.get(file)!.equals(bytes), file).toBe(true);
    const auth = await store.open('wa-01');
    expect(auth.state.creds.me?.id).toBe('15550001001:3@s.whatsapp.net');
    expect(auth.keyCount('pre-key')).toBe(35);
  });

  it('removes a corrupt shard the backup has nothing for', async () => {
    const { blob, dir } = await backedUpThenChanged();
    const auth = await store.open('wa-01');
    await auth.state.keys.set({ 'identity-key': { '15550009999.0': new Uint8Array(32) } }); // a type the backup lacks
    await auth.close();
    const onlyLocal = await shardFileOf(dir, 'identity-key', '15550009999.0');
    await writeFile(path.join(dir, onlyLocal), 'garbage');
    expect(await store.repair('wa-01', blob)).toEqual({ replaced: [onlyLocal] });
    expect((await filesOf(dir)).has(onlyLocal)).toBe(false);
    expect((await store.open('wa-01')).keyCount('pre-key')).toBe(35);
  });

  it('does nothing when nothing is corrupt, and refuses while open or with another identity', async () => {
    const { blob, dir } = await backedUpThenChanged();
    const before = await filesOf(dir);
    writes.length = 0;
    expect(await store.repair('wa-01', blob)).toEqual({ replaced: [] });
    expect(writes).toEqual([]);
    expect(await filesOf(dir)).toEqual(before);

    const corrupt = await shardFileOf(dir, 'session', 'old.0');
    await writeFile(path.join(dir, corrupt), 'garbage');
    const other = await AuthStore.create({ root: path.join(root, 'other') });
    const stranger = await other.open('wa-01');
    await populate(stranger);
    await stranger.close();
    await expect(store.repair('wa-01', await other.snapshot('wa-01'))).rejects.toThrow(/another identity/);
    await expect(store.repair('wa-02', blob)).rejects.toBeInstanceOf(InvalidAuthSnapshotError);
    const held = await store.open('wa-01', { dropCorruptShards: true });
    await expect(store.repair('wa-01', blob)).rejects.toBeInstanceOf(AuthStateInUseError);
    await held.close();
  });
});

describe('AuthStore: opening despite corrupt shards, without a backup', () => {
  it('drops exactly the corrupt shards and says which; the link and every other key stay', async () => {
    const auth = await store.open('wa-01');
    await populate(auth);
    await auth.close();
    const dir = path.join(root, 'wa-01');
    const corrupt = await shardFileOf(dir, 'session', '15550001001.0');
    await writeFile(path.join(dir, corrupt), '{"format":"wafleet-keys","v":1,"type":"session","shard":');
    await expect(store.open('wa-01')).rejects.toBeInstanceOf(CorruptAuthStateError);

    const opened = await store.open('wa-01', { dropCorruptShards: true });
    expect(opened.droppedShards).toEqual([corrupt]);
    expect(opened.isNew).toBe(false);
    expect(opened.state.creds.me?.id).toBe('15550001001:3@s.whatsapp.net');
    expect(await opened.state.keys.get('session', ['15550001001.0'])).toEqual({});
    expect(opened.keyCount('pre-key')).toBe(30);
    expect((await filesOf(dir)).has(corrupt)).toBe(false);
    await opened.close();
    expect((await store.open('wa-01')).droppedShards).toEqual([]);
  });

  it('a corrupt creds.json is still an error: never silently fresh credentials', async () => {
    const auth = await store.open('wa-01');
    await populate(auth);
    await auth.close();
    await writeFile(path.join(root, 'wa-01', 'creds.json'), 'not json');
    await expect(store.open('wa-01', { dropCorruptShards: true })).rejects.toSatisfy((e: unknown) => e instanceof CorruptAuthStateError && e.file === 'creds.json');
    expect((await readFile(path.join(root, 'wa-01', 'creds.json'), 'utf8'))).toBe('not json');
  });
});

describe('Baileys logger through the store', () => {
  it('keeps key material out of logs when Baileys logs store activity', async () => {
    const lines = new LineCollector();
    const logger = baileysLogger(createLogger({ level: 'trace', destination: lines }), 'wa-01', { level: 'trace' });
    const auth = await store.open('wa-01');
    const keys = makeCacheableSignalKeyStore(auth.state.keys, logger);
    const pairs = preKeys(3);
    await keys.set({ 'pre-key': pairs });
    await keys.get('pre-key', ['1', '2', '3']);
    logger.trace({ pairs }, 'dumping keys');
    expect(lines.lines().length).toBeGreaterThan(0);
    for (const pair of Object.values(pairs)) {
      expect(lines.text).not.toContain(Buffer.from(pair.private).toString('base64'));
    }
  });
});
