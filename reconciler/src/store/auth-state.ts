/**
 * Durable Baileys auth state, one directory per account under SESSIONS_PATH (layout and its
 * rationale: auth-layout.ts). Replaces Baileys' useMultiFileAuthState, which its authors call unfit
 * for production: it writes files in place (a crash tears them) and one file per key.
 *
 * Guarantees:
 * - Every file is replaced atomically, so after a kill -9 at any instant each file parses.
 * - `keys.set` resolves once the change is on disk. Sets that arrive while a write is running (or
 *   within `coalesceMs`) share the next write: group commit. Durable sets matter because Baileys
 *   uploads pre-keys right after storing them; if the upload could outlive the write, a crash would
 *   leave the server handing out pre-keys we no longer have.
 *   The one exception is `deferWrites`: a decryption's changes wait for its plaintext to be
 *   journaled (see there).
 * - `saveCreds` writes pending keys first, then creds.json: creds never reference keys (e.g. a
 *   `nextPreKeyId`) that are not yet stored.
 * - Whole-account operations (wipe, restore) switch the directory by rename, with a recovery
 *   sweep that finishes or rolls back an interrupted one; see `restore`.
 * - The backup generation the state is based on is kept beside it (`backupGeneration`), and a
 *   restore writes it together with the state, so the two never disagree after a crash.
 * - A corrupt file costs only what it holds: `repair` replaces just the files that fail to decode
 *   from a backup, and `open` with `dropCorruptShards` gives up corrupt key shards (some Signal
 *   sessions) rather than the link. Corrupt creds are never silently replaced by fresh ones.
 *
 * One process owns SESSIONS_PATH and one handle owns an account: the reconciler's lease decides
 * which instance runs an account, and this store refuses a second open in the same process.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { ACCOUNT_ID_RE } from '@wafleet/contract';
import { initAuthCreds } from '@whiskeysockets/baileys';
import type { AuthenticationCreds, AuthenticationState, SignalDataSet, SignalDataTypeMap, SignalKeyStore } from '@whiskeysockets/baileys';
import { sleep } from '../util/deadline.ts';
import {
  PRIVATE_DIR_MODE,
  cleanTempFiles,
  fsyncDir,
  isErrno,
  mkdirDurable,
  readFileIfExists,
  removeDirAtomic,
  removeFileDurable,
  writeFilesAtomic,
  type AtomicFile,
} from '../util/fs-atomic.ts';
import { KeyedMutex, Mutex } from '../util/mutex.ts';
import { AuthStateClosedError, AuthStateInUseError, AuthStateNotFoundError, CorruptAuthStateError, InvalidAuthSnapshotError } from './auth-errors.ts';
import {
  BACKUP_GENERATION_FILE,
  CREDS_FILE,
  KEYS_DIR,
  KEY_TYPE_RE,
  decodeBackupGeneration,
  decodeCreds,
  decodeKeyValue,
  decodeShard,
  encodeBackupGeneration,
  encodeCreds,
  encodeKeyValue,
  encodeShard,
  parseShardFileName,
  shardCount,
  shardFileName,
  shardOf,
} from './auth-layout.ts';
import { decodeSnapshot, encodeSnapshot } from './auth-snapshot.ts';

export { AuthStateClosedError, AuthStateInUseError, AuthStateNotFoundError, CorruptAuthStateError, InvalidAuthSnapshotError } from './auth-errors.ts';

/** One file written or removed by the store; for metrics, and for tests that count writes. */
export interface AuthWriteEvent {
  accountId: string;
  /** Relative to the account directory, e.g. "creds.json", "keys/pre-key/03.json". */
  file: string;
  op: 'write' | 'remove';
  bytes: number;
}

/** The slice of a pino logger the store uses. */
export interface AuthStoreLogger {
  warn(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
}

export interface AuthStoreOptions {
  /** SESSIONS_PATH. Created (0700) if missing. */
  root: string;
  /**
   * Extra time a write waits to gather more changes. Default 0: a write starts on the next turn
   * of the event loop and whatever arrives while it runs goes into the next one, which already
   * batches bursts without delaying a lone set.
   */
  coalesceMs?: number;
  onWrite?: (event: AuthWriteEvent) => void;
  logger?: AuthStoreLogger;
}

const TRASH_RE = /^\.trash-(.+)-[0-9a-f]{8}$/;
const STAGING_RE = /^\.staging-(.+)-[0-9a-f]{8}$/;
const READY_PREFIX = '.ready-';

type Shards = Map<number, Map<string, string>>;

interface StoredState {
  credsText: string | null;
  /** type → shard index → id → value text */
  keys: Map<string, Shards>;
  /** Shard files that failed to decode (only when read with `tolerateCorruptShards`). */
  corruptShards: CorruptShard[];
}

interface CorruptShard {
  /** Relative to the account directory. */
  file: string;
  type: string;
  shard: number;
  reason: string;
}

export interface OpenOptions {
  /**
   * Open despite key shards that fail to decode, removing them (their entries are lost: for a
   * session shard, some contacts' Signal sessions, which WhatsApp re-establishes). For when there
   * is no backup to `repair` from. A corrupt creds.json still throws CorruptAuthStateError.
   */
  dropCorruptShards?: boolean;
}

export interface RestoreOptions {
  /** The backup generation the snapshot came from; recorded atomically with the restored state. */
  generation?: number;
}

export class AuthStore {
  readonly root: string;
  readonly #options: AuthStoreOptions;
  readonly #open = new Map<string, AccountAuthState>();
  readonly #locks = new KeyedMutex<string>();

  private constructor(options: AuthStoreOptions) {
    this.root = path.resolve(options.root);
    this.#options = options;
  }

  /** Opens the store: creates the root if needed and finishes or discards what a crash interrupted. */
  static async create(options: AuthStoreOptions): Promise<AuthStore> {
    const store = new AuthStore(options);
    await mkdirDurable(store.root);
    await store.#recoverAll();
    return store;
  }

  accountDir(accountId: string): string {
    assertAccountId(accountId);
    return path.join(this.root, accountId);
  }

  isOpen(accountId: string): boolean {
    return this.#open.has(accountId);
  }

  /**
   * Loads an account's state (fresh creds if it has none) and returns the handle Baileys uses.
   * Throws CorruptAuthStateError if a stored file is unreadable: `repair` from a backup, then
   * reopen (or reopen with `dropCorruptShards` when there is no backup).
   */
  async open(accountId: string, { dropCorruptShards = false }: OpenOptions = {}): Promise<AccountAuthState> {
    const dir = this.accountDir(accountId);
    return this.#locks.runExclusive(accountId, async () => {
      if (this.#open.has(accountId)) throw new AuthStateInUseError(accountId, 'open');
      await this.#recover(accountId);
      await mkdirDurable(dir);
      await chmod(dir, PRIVATE_DIR_MODE);
      await this.#sweepAccountDir(dir);
      const stored = await readStoredState(accountId, dir, {
        onIgnored: (file) => this.#options.logger?.warn({ accountId, file }, 'ignoring unexpected file in auth state directory'),
        tolerateCorruptShards: dropCorruptShards,
      });
      // Creds first: a corrupt creds.json must fail the open before any shard is dropped.
      const storedCreds = stored.credsText === null ? null : decodeCredsOrThrow(accountId, stored.credsText);
      for (const { file, reason } of stored.corruptShards) {
        this.#options.logger?.warn({ accountId, file, reason }, 'dropping a corrupt key shard');
        await removeFileDurable(path.join(dir, file));
        this.#options.onWrite?.({ accountId, file, op: 'remove', bytes: 0 });
      }
      const isNew = storedCreds === null;
      if (storedCreds === null) {
        if (stored.keys.size > 0) {
          // Keys without creds are left over from a link that never saved its creds: they belong
          // to an identity that no longer exists and would only confuse the new one.
          this.#options.logger?.warn({ accountId }, 'discarding signal keys stored without credentials');
          await removeDirAtomic(path.join(dir, KEYS_DIR));
          stored.keys.clear();
        }
        // Fresh creds are based on no backup; a marker left here would claim otherwise.
        await removeFileDurable(path.join(dir, BACKUP_GENERATION_FILE));
      }
      const creds: AuthenticationCreds = storedCreds ?? initAuthCreds();
      const handle = new AccountAuthState({
        accountId,
        dir,
        creds,
        isNew,
        keys: stored.keys,
        droppedShards: stored.corruptShards.map((c) => c.file),
        coalesceMs: this.#options.coalesceMs ?? 0,
        onWrite: this.#options.onWrite,
        onClosed: () => {
          if (this.#open.get(accountId) === handle) this.#open.delete(accountId);
        },
      });
      this.#open.set(accountId, handle);
      return handle;
    });
  }

  /** True if the account has stored credentials. */
  async exists(accountId: string): Promise<boolean> {
    const dir = this.accountDir(accountId);
    return this.#locks.runExclusive(accountId, async () => {
      await this.#recover(accountId);
      return hasCreds(dir);
    });
  }

  /** Accounts with stored credentials, sorted. */
  async listAccounts(): Promise<string[]> {
    const names = await readdir(this.root);
    const ids = new Set<string>();
    for (const name of names) {
      // A committed-but-unfinished restore counts: the next operation on it completes the swap.
      const id = name.startsWith(READY_PREFIX) ? name.slice(READY_PREFIX.length) : name;
      if (!ACCOUNT_ID_RE.test(id)) continue;
      if (await hasCreds(path.join(this.root, name))) ids.add(id);
    }
    return [...ids].sort();
  }

  /**
   * Deletes an account's state. Atomic: the directory is renamed away before it is deleted, so a
   * crash never leaves half a state under the account's name. Returns false if there was none.
   */
  async wipe(accountId: string): Promise<boolean> {
    const dir = this.accountDir(accountId);
    return this.#locks.runExclusive(accountId, async () => {
      if (this.#open.has(accountId)) throw new AuthStateInUseError(accountId, 'wipe');
      await this.#recover(accountId);
      return removeDirAtomic(dir);
    });
  }

  /**
   * The account's whole state as one blob (gzipped JSON; see auth-snapshot.ts). If the account is
   * open, pending writes are flushed first and no write runs while it is read, so the blob is a
   * consistent point in time.
   */
  async snapshot(accountId: string): Promise<Buffer> {
    const dir = this.accountDir(accountId);
    return this.#locks.runExclusive(accountId, async () => {
      await this.#recover(accountId);
      const read = async (): Promise<Buffer> => {
        const stored = await readStoredState(accountId, dir, { onIgnored: () => undefined });
        if (stored.credsText === null) throw new AuthStateNotFoundError(accountId);
        decodeCredsOrThrow(accountId, stored.credsText);
        const keys = new Map<string, Map<string, string>>();
        for (const [type, shards] of stored.keys) {
          const flat = new Map<string, string>();
          for (const entries of shards.values()) for (const [id, text] of entries) flat.set(id, text);
          keys.set(type, flat);
        }
        return encodeSnapshot({ accountId, createdAt: new Date().toISOString(), credsText: stored.credsText, keys });
      };
      const handle = this.#open.get(accountId);
      return handle ? handle.withFlushed(read) : read();
    });
  }

  /**
   * Replaces the account's state with a snapshot, atomically:
   *   1. write everything into `.staging-<id>-<rand>/` and fsync it;
   *   2. rename it to `.ready-<id>` — the commit point;
   *   3. move the live directory to trash, rename `.ready-<id>` to `<id>`, delete the trash.
   * A crash before 2 leaves the old state (the staging directory is swept); after 2, recovery
   * finishes step 3. Either way the account is wholly old or wholly new, and so is its backup
   * generation marker: `generation` is written into the staging directory (without it, the
   * restored state's generation is unknown and `backupGeneration` returns null).
   */
  async restore(accountId: string, blob: Uint8Array, { generation }: RestoreOptions = {}): Promise<void> {
    const dir = this.accountDir(accountId);
    const content = await decodeSnapshot(blob, accountId);
    await this.#locks.runExclusive(accountId, async () => {
      if (this.#open.has(accountId)) throw new AuthStateInUseError(accountId, 'restore');
      await this.#recover(accountId);
      const staging = path.join(this.root, `.staging-${accountId}-${randomBytes(4).toString('hex')}`);
      try {
        await mkdir(staging, { mode: PRIVATE_DIR_MODE });
        const files: AtomicFile[] = [{ file: path.join(staging, CREDS_FILE), data: content.credsText }];
        if (generation !== undefined) files.push({ file: path.join(staging, BACKUP_GENERATION_FILE), data: encodeBackupGeneration(generation) });
        for (const [type, entries] of content.keys) {
          const shards = shardEntries(type, entries);
          if (shards.size === 0) continue;
          const typeDir = path.join(staging, KEYS_DIR, type);
          await mkdir(typeDir, { recursive: true, mode: PRIVATE_DIR_MODE });
          for (const [shard, map] of shards) {
            files.push({ file: path.join(typeDir, shardFileName(shard)), data: encodeShard(type, shard, shardCount(type), map) });
          }
        }
        await writeFilesAtomic(files);
        if (content.keys.size > 0) await fsyncDir(path.join(staging, KEYS_DIR)).catch(ignoreMissing);
        await fsyncDir(staging);
        await fsyncDir(this.root);
      } catch (error) {
        await rm(staging, { recursive: true, force: true });
        throw error;
      }
      await rename(staging, path.join(this.root, `${READY_PREFIX}${accountId}`));
      await fsyncDir(this.root);
      await this.#recover(accountId);
    });
  }

  /**
   * The session backup generation the account's state is based on: the one it was restored from
   * or last backed up as. Null when unknown (never backed up, state from before this marker, or
   * fresh creds). Allowed while the account is open.
   */
  async backupGeneration(accountId: string): Promise<number | null> {
    const dir = this.accountDir(accountId);
    return this.#locks.runExclusive(accountId, async () => {
      await this.#recover(accountId);
      const bytes = await readFileIfExists(path.join(dir, BACKUP_GENERATION_FILE));
      if (bytes === null) return null;
      try {
        return decodeBackupGeneration(bytes.toString('utf8'));
      } catch (error) {
        // Written atomically, so only outside damage gets here; "unknown" is what it then is.
        this.#options.logger?.warn({ accountId, reason: (error as Error).message }, 'ignoring an unreadable backup generation marker');
        return null;
      }
    });
  }

  /** Records that the account's state is based on backup `generation` (after a backup was saved). */
  async setBackupGeneration(accountId: string, generation: number): Promise<void> {
    const dir = this.accountDir(accountId);
    const data = encodeBackupGeneration(generation);
    await this.#locks.runExclusive(accountId, async () => {
      await this.#recover(accountId);
      // Not for an account without state: the marker would outlive nothing it describes.
      if (!(await hasCreds(dir))) throw new AuthStateNotFoundError(accountId);
      await writeFilesAtomic([{ file: path.join(dir, BACKUP_GENERATION_FILE), data }]);
      this.#options.onWrite?.({ accountId, file: BACKUP_GENERATION_FILE, op: 'write', bytes: Buffer.byteLength(data) });
    });
  }

  /**
   * Replaces exactly the files that fail to decode (creds.json and/or key shards) with what the
   * snapshot holds for them, each atomically; every good file stays as it is, so newer local
   * state (sessions established since the backup) survives. A corrupt shard for which the
   * snapshot has no entries is removed. Returns the replaced files, relative to the account
   * directory. The account must be closed.
   *
   * When creds.json is readable, the snapshot must be of the same identity (signed identity key):
   * another identity's keys would be garbage to this one. With creds.json itself corrupt there is
   * nothing local to compare against, and the snapshot's creds are taken.
   */
  async repair(accountId: string, blob: Uint8Array): Promise<{ replaced: string[] }> {
    const dir = this.accountDir(accountId);
    const content = await decodeSnapshot(blob, accountId);
    return this.#locks.runExclusive(accountId, async () => {
      if (this.#open.has(accountId)) throw new AuthStateInUseError(accountId, 'repair');
      await this.#recover(accountId);
      if (!(await pathExists(dir))) return { replaced: [] };
      await this.#sweepAccountDir(dir);
      const stored = await readStoredState(accountId, dir, { onIgnored: () => undefined, tolerateCorruptShards: true });
      let credsCorrupt = false;
      if (stored.credsText !== null) {
        let local: AuthenticationCreds | null = null;
        try {
          local = decodeCreds(stored.credsText);
        } catch {
          credsCorrupt = true;
        }
        const identity = (creds: AuthenticationCreds): Buffer => Buffer.from(creds.signedIdentityKey.public);
        if (local && stored.corruptShards.length > 0 && !identity(local).equals(identity(decodeCreds(content.credsText)))) {
          throw new InvalidAuthSnapshotError(accountId, 'it holds another identity than the local credentials');
        }
      }
      const replaced: string[] = [];
      for (const { file, type, shard } of stored.corruptShards) {
        const entries = shard < shardCount(type) ? shardEntries(type, content.keys.get(type) ?? new Map()).get(shard) : undefined;
        if (entries && entries.size > 0) {
          const data = encodeShard(type, shard, shardCount(type), entries);
          await writeFilesAtomic([{ file: path.join(dir, file), data }]);
          this.#options.onWrite?.({ accountId, file, op: 'write', bytes: Buffer.byteLength(data) });
        } else {
          await removeFileDurable(path.join(dir, file));
          this.#options.onWrite?.({ accountId, file, op: 'remove', bytes: 0 });
        }
        replaced.push(file);
      }
      // Creds last, as saveCreds orders them: never creds referencing keys not yet in place.
      if (credsCorrupt) {
        await writeFilesAtomic([{ file: path.join(dir, CREDS_FILE), data: content.credsText }]);
        this.#options.onWrite?.({ accountId, file: CREDS_FILE, op: 'write', bytes: Buffer.byteLength(content.credsText) });
        replaced.push(CREDS_FILE);
      }
      if (replaced.length > 0) this.#options.logger?.warn({ accountId, replaced }, 'repaired corrupt auth state files from the backup');
      return { replaced };
    });
  }

  /** Flushes and closes every open account (shutdown). */
  async closeAll(): Promise<void> {
    await Promise.all([...this.#open.values()].map((handle) => handle.close()));
  }

  /** Completes a committed restore and removes leftovers of interrupted operations on one account. */
  async #recover(accountId: string): Promise<void> {
    const live = path.join(this.root, accountId);
    const ready = path.join(this.root, `${READY_PREFIX}${accountId}`);
    if (await pathExists(ready)) {
      this.#options.logger?.info({ accountId }, 'completing an interrupted restore');
      if (await pathExists(live)) {
        await rename(live, path.join(this.root, `.trash-${accountId}-${randomBytes(4).toString('hex')}`));
      }
      await rename(ready, live);
      await fsyncDir(this.root);
    }
    for (const name of await readdir(this.root)) {
      const match = TRASH_RE.exec(name) ?? STAGING_RE.exec(name);
      if (match?.[1] === accountId) await rm(path.join(this.root, name), { recursive: true, force: true });
    }
  }

  async #recoverAll(): Promise<void> {
    const ids = new Set<string>();
    for (const name of await readdir(this.root)) {
      const id = name.startsWith(READY_PREFIX) ? name.slice(READY_PREFIX.length) : (TRASH_RE.exec(name) ?? STAGING_RE.exec(name))?.[1];
      if (id !== undefined && ACCOUNT_ID_RE.test(id)) ids.add(id);
    }
    for (const id of ids) await this.#locks.runExclusive(id, () => this.#recover(id));
  }

  /** Removes temp files and trash a crash left inside an account directory. */
  async #sweepAccountDir(dir: string): Promise<void> {
    await cleanTempFiles(dir);
    for (const name of await readdir(dir)) {
      if (name.startsWith('.trash-')) await rm(path.join(dir, name), { recursive: true, force: true });
    }
    const keysDir = path.join(dir, KEYS_DIR);
    for (const type of await readdirIfExists(keysDir)) await cleanTempFiles(path.join(keysDir, type));
  }
}

interface HandleInit {
  accountId: string;
  dir: string;
  creds: AuthenticationCreds;
  isNew: boolean;
  keys: Map<string, Shards>;
  droppedShards: string[];
  coalesceMs: number;
  onWrite: ((event: AuthWriteEvent) => void) | undefined;
  onClosed: () => void;
}

/** Key changes held back by `AccountAuthState.deferWrites`, until `commit`. */
interface Deferral {
  readonly handle: AccountAuthState;
  readonly keys: Set<string>;
  open: boolean;
}

/** The deferral a key change belongs to: whichever `deferWrites` call it was made under. */
const deferrals = new AsyncLocalStorage<Deferral>();

export interface DeferredWrites<T> {
  result: Promise<T>;
  /** Lets the held changes be written (with the next write). Idempotent. */
  commit(): void;
}

/**
 * An open account: `state` goes to Baileys' `auth` option, `saveCreds` to its `creds.update` event.
 * Obtain one from `AuthStore.open`; `close()` it before wiping or restoring the account.
 */
export class AccountAuthState {
  readonly accountId: string;
  /** The account directory. */
  readonly dir: string;
  /** True if no creds were stored: these are fresh, unlinked creds. */
  readonly isNew: boolean;
  /** Corrupt key shards `open` removed (with `dropCorruptShards`), relative to `dir`. */
  readonly droppedShards: readonly string[];
  readonly state: AuthenticationState;

  readonly #keys: Map<string, Shards>;
  readonly #dirty = new Set<string>();
  /** Deferrals not committed yet (see `deferWrites`). */
  readonly #deferrals = new Set<Deferral>();
  readonly #io = new Mutex();
  readonly #typeDirs = new Set<string>();
  readonly #coalesceMs: number;
  readonly #onWrite: ((event: AuthWriteEvent) => void) | undefined;
  readonly #onClosed: () => void;
  #credsDirty = false;
  #scheduled: Promise<void> | null = null;
  #closed = false;

  constructor(init: HandleInit) {
    this.accountId = init.accountId;
    this.dir = init.dir;
    this.isNew = init.isNew;
    this.droppedShards = Object.freeze([...init.droppedShards]);
    this.#keys = init.keys;
    this.#coalesceMs = init.coalesceMs;
    this.#onWrite = init.onWrite;
    this.#onClosed = init.onClosed;
    for (const type of init.keys.keys()) this.#typeDirs.add(type);
    const keys: SignalKeyStore = {
      get: (type, ids) => this.#get(type, ids),
      set: (data) => this.#set(data),
      clear: () => this.#clear(),
    };
    this.state = { creds: init.creds, keys };
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Persists `state.creds` (after any pending key writes). Wire to Baileys' `creds.update`. */
  saveCreds(): Promise<void> {
    if (this.#closed) return Promise.reject(new AuthStateClosedError(this.accountId));
    this.#credsDirty = true;
    return this.#schedule();
  }

  /** Writes every pending change now. */
  flush(): Promise<void> {
    return this.#io.runExclusive(() => this.#writeDirty());
  }

  /**
   * Stops accepting writes, then (by default) flushes what is pending. Resolves once no write of
   * this handle is in progress, so the directory can be wiped or restored right after.
   */
  async close({ flush = true }: { flush?: boolean } = {}): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      for (const d of this.#deferrals) {
        d.open = false;
        if (flush) for (const key of d.keys) this.#dirty.add(key);
      }
      this.#deferrals.clear();
      if (!flush) {
        this.#dirty.clear();
        this.#credsDirty = false;
      }
      await this.flush();
    } finally {
      this.#onClosed();
    }
  }

  /** Number of stored keys, optionally of one type. */
  keyCount(type?: string): number {
    let count = 0;
    for (const [t, shards] of this.#keys) {
      if (type !== undefined && t !== type) continue;
      for (const entries of shards.values()) count += entries.size;
    }
    return count;
  }

  /**
   * Runs `work` with the key changes it makes kept in memory only (its `keys.set` calls resolve
   * at once) until `commit()`. For a decryption: the Signal state that decrypted a message must
   * not reach the disk before the plaintext is journaled, or a kill -9 in between leaves a
   * message that was never stored and can never be decrypted again (WhatsApp's redelivery fails
   * with "Key used already" and Baileys nacks it without a retry). Held changes are lost only
   * when the process dies first, which is the point: the message was not receipted either, and its
   * redelivery decrypts with the state on disk. `close` writes them: Baileys may still journal and
   * receipt that message on its way down, and a receipted message whose ratchet step is lost
   * leaves the next messages of that chat undecryptable (seen in the soak after fences, with
   * "Bad MAC" on every session). A change that shares a shard file with a later ordinary write is
   * written with it.
   */
  deferWrites<T>(work: () => Promise<T>): DeferredWrites<T> {
    const d: Deferral = { handle: this, keys: new Set(), open: true };
    this.#deferrals.add(d);
    return {
      result: deferrals.run(d, work),
      commit: () => {
        if (!d.open) return;
        d.open = false;
        this.#deferrals.delete(d);
        if (d.keys.size === 0 || this.#closed) return;
        for (const key of d.keys) this.#dirty.add(key);
        // A failed write leaves these dirty for the next one; nobody waits on this one.
        this.#schedule().catch(() => undefined);
      },
    };
  }

  /** Runs `fn` with nothing pending and no write in flight (for snapshots). @internal */
  withFlushed<T>(fn: () => Promise<T>): Promise<T> {
    return this.#io.runExclusive(async () => {
      await this.#writeDirty();
      return fn();
    });
  }

  async #get<T extends keyof SignalDataTypeMap>(type: T, ids: string[]): Promise<{ [id: string]: SignalDataTypeMap[T] }> {
    const result: { [id: string]: SignalDataTypeMap[T] } = {};
    const shards = this.#keys.get(type);
    if (!shards) return result;
    const count = shardCount(type);
    for (const id of ids) {
      const text = shards.get(shardOf(id, count))?.get(id);
      if (text !== undefined) result[id] = decodeKeyValue(type, text) as SignalDataTypeMap[T];
    }
    return result;
  }

  #set(data: SignalDataSet): Promise<void> {
    if (this.#closed) return Promise.reject(new AuthStateClosedError(this.accountId));
    const held = deferrals.getStore();
    const dirty = held?.handle === this && held.open ? held.keys : this.#dirty;
    for (const [type, values] of Object.entries(data)) {
      if (!values) continue;
      if (!KEY_TYPE_RE.test(type)) return Promise.reject(new TypeError(`invalid signal key type ${JSON.stringify(type)}`));
    }
    for (const [type, values] of Object.entries(data) as Array<[string, Record<string, unknown> | undefined]>) {
      if (!values) continue;
      let shards = this.#keys.get(type);
      if (!shards) {
        shards = new Map();
        this.#keys.set(type, shards);
      }
      const count = shardCount(type);
      for (const [id, value] of Object.entries(values)) {
        const shard = shardOf(id, count);
        let entries = shards.get(shard);
        if (value === null || value === undefined) {
          if (!entries?.delete(id)) continue;
        } else {
          if (!entries) {
            entries = new Map();
            shards.set(shard, entries);
          }
          entries.set(id, encodeKeyValue(value));
        }
        dirty.add(dirtyKey(type, shard));
      }
    }
    return dirty === this.#dirty ? this.#schedule() : Promise.resolve();
  }

  #clear(): Promise<void> {
    if (this.#closed) return Promise.reject(new AuthStateClosedError(this.accountId));
    for (const [type, shards] of this.#keys) {
      for (const [shard, entries] of shards) {
        entries.clear();
        this.#dirty.add(dirtyKey(type, shard));
      }
    }
    return this.#schedule();
  }

  /** The write that will include every change made so far (group commit). */
  #schedule(): Promise<void> {
    if (!this.#scheduled) {
      const gather = this.#coalesceMs > 0 ? sleep(this.#coalesceMs) : new Promise<void>((resolve) => setImmediate(resolve));
      this.#scheduled = gather.then(() => {
        // From here on, new changes schedule the next write; this one takes whatever is dirty
        // once it holds the lock, which includes every change made before this point.
        this.#scheduled = null;
        return this.#io.runExclusive(() => this.#writeDirty());
      });
    }
    return this.#scheduled;
  }

  /** Writes dirty shards, then creds. Runs under #io. On failure, everything stays dirty for the next try. */
  async #writeDirty(): Promise<void> {
    if (this.#dirty.size === 0 && !this.#credsDirty) return;
    const dirty = [...this.#dirty];
    const credsDirty = this.#credsDirty;
    this.#dirty.clear();
    this.#credsDirty = false;
    try {
      const writes: Array<AtomicFile & { rel: string }> = [];
      const removes: string[] = [];
      for (const key of dirty) {
        const [type, shardText] = splitDirtyKey(key);
        const shard = Number(shardText);
        const rel = path.join(KEYS_DIR, type, shardFileName(shard));
        const entries = this.#keys.get(type)?.get(shard);
        if (!entries || entries.size === 0) {
          removes.push(rel);
          this.#keys.get(type)?.delete(shard);
        } else {
          if (!this.#typeDirs.has(type)) {
            await mkdirDurable(path.join(this.dir, KEYS_DIR, type));
            this.#typeDirs.add(type);
          }
          writes.push({ rel, file: path.join(this.dir, rel), data: encodeShard(type, shard, shardCount(type), entries) });
        }
      }
      if (writes.length > 0) {
        await writeFilesAtomic(writes);
        for (const { rel, data } of writes) this.#emit(rel, 'write', Buffer.byteLength(data));
      }
      for (const rel of removes) {
        if (await removeFileDurable(path.join(this.dir, rel))) this.#emit(rel, 'remove', 0);
      }
      if (credsDirty) {
        const data = encodeCreds(this.state.creds);
        await writeFilesAtomic([{ file: path.join(this.dir, CREDS_FILE), data }]);
        this.#emit(CREDS_FILE, 'write', Buffer.byteLength(data));
      }
    } catch (error) {
      for (const key of dirty) this.#dirty.add(key);
      if (credsDirty) this.#credsDirty = true;
      throw error;
    }
  }

  #emit(file: string, op: 'write' | 'remove', bytes: number): void {
    this.#onWrite?.({ accountId: this.accountId, file, op, bytes });
  }
}

// Type names match KEY_TYPE_RE, so "/" cannot occur in them.
function dirtyKey(type: string, shard: number): string {
  return `${type}/${shard}`;
}

function splitDirtyKey(key: string): [string, string] {
  const at = key.lastIndexOf('/');
  return [key.slice(0, at), key.slice(at + 1)];
}

function shardEntries(type: string, entries: ReadonlyMap<string, string>): Shards {
  const count = shardCount(type);
  const shards: Shards = new Map();
  for (const [id, text] of entries) {
    const shard = shardOf(id, count);
    let map = shards.get(shard);
    if (!map) {
      map = new Map();
      shards.set(shard, map);
    }
    map.set(id, text);
  }
  return shards;
}

/**
 * Reads and validates everything stored for an account. Temp files are skipped, not removed. A
 * shard that fails to decode throws CorruptAuthStateError, or with `tolerateCorruptShards` is left
 * out of `keys` and listed in `corruptShards`. creds.json is returned as text, not validated.
 */
async function readStoredState(
  accountId: string,
  dir: string,
  { onIgnored, tolerateCorruptShards = false }: { onIgnored: (file: string) => void; tolerateCorruptShards?: boolean },
): Promise<StoredState> {
  const corruptShards: CorruptShard[] = [];
  const credsBytes = await readFileIfExists(path.join(dir, CREDS_FILE));
  const keys = new Map<string, Shards>();
  const keysDir = path.join(dir, KEYS_DIR);
  for (const type of await readdirIfExists(keysDir)) {
    const rel = path.join(KEYS_DIR, type);
    if (!KEY_TYPE_RE.test(type)) {
      if (!type.startsWith('.')) onIgnored(rel);
      continue;
    }
    const count = shardCount(type);
    const shards: Shards = new Map();
    for (const name of await readdirIfExists(path.join(keysDir, type))) {
      const shard = parseShardFileName(name);
      if (shard === null) {
        if (!name.startsWith('.')) onIgnored(path.join(rel, name));
        continue;
      }
      const fileRel = path.join(rel, name);
      const corrupt = (reason: string, cause?: unknown): void => {
        if (!tolerateCorruptShards) throw new CorruptAuthStateError(accountId, fileRel, reason, { cause });
        corruptShards.push({ file: fileRel, type, shard, reason });
      };
      if (shard >= count) {
        corrupt(`shard ${shard} is outside this layout's ${count} shards`);
        continue;
      }
      const text = await readFile(path.join(keysDir, type, name), 'utf8');
      let entries: Map<string, string>;
      try {
        entries = decodeShard(text, { type, shard, shards: count });
      } catch (error) {
        corrupt((error as Error).message, error);
        continue;
      }
      if (entries.size > 0) shards.set(shard, entries);
    }
    if (shards.size > 0) keys.set(type, shards);
  }
  return { credsText: credsBytes === null ? null : credsBytes.toString('utf8'), keys, corruptShards };
}

function decodeCredsOrThrow(accountId: string, text: string): AuthenticationCreds {
  try {
    return decodeCreds(text);
  } catch (error) {
    throw new CorruptAuthStateError(accountId, CREDS_FILE, (error as Error).message, { cause: error });
  }
}

function assertAccountId(accountId: string): void {
  // Also what keeps ids from escaping the root or colliding with the store's ".trash-" names.
  if (!ACCOUNT_ID_RE.test(accountId)) throw new TypeError(`invalid account id ${JSON.stringify(accountId)}`);
}

async function readdirIfExists(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (error) {
    if (isErrno(error, 'ENOENT', 'ENOTDIR')) return [];
    throw error;
  }
}

async function hasCreds(dir: string): Promise<boolean> {
  try {
    return (await stat(path.join(dir, CREDS_FILE))).isFile();
  } catch (error) {
    if (isErrno(error, 'ENOENT', 'ENOTDIR')) return false;
    throw error;
  }
}

async function pathExists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch (error) {
    if (isErrno(error, 'ENOENT')) return false;
    throw error;
  }
}

function ignoreMissing(error: unknown): void {
  if (!isErrno(error, 'ENOENT')) throw error;
}
