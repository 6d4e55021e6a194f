/**
 * Encrypted session backups in Firestore, `sessionBackups/{accountId}`: so an account whose disk
 * copy is missing or corrupt, or that moves to another VM, reconnects without a new QR scan.
 *
 * Format: gzip, then AES-256-GCM (16-byte tag) with a fresh 96-bit IV and the account id and
 * generation as associated data (a backup cannot be replayed onto another account or generation).
 * Ciphertext is split into chunk documents under the 1 MiB document limit.
 *
 * What a save must never do is lose the good credentials, hence:
 * - Chunks are written under ids no other writer uses (`<generation>-<epoch>-<random>-<i>`, the
 *   manifest records the prefix), so a writer that lost its lease while its chunk writes were in
 *   flight cannot overwrite chunks the real owner's manifest points at. Ownership is checked
 *   before the chunks and again in the transaction that switches the manifest.
 * - A save is refused when it would replace a linked backup with unlinked credentials, or a
 *   generation newer than the one the local state is based on (`expectedGeneration`).
 * - Generations never repeat, even across a delete: a delete leaves a tombstone
 *   (`sessionBackups/{id}/meta/tombstone`, no key material) holding the generation it consumed,
 *   so a disk based on a deleted backup is older than anything saved after it.
 *
 * Backups written before chunk prefixes (chunk ids `<generation>-<i>`, no `linked` field) are still
 * read, and count as linked. Every Firestore call has a deadline. No plaintext leaves the process.
 *
 * Key rotation ("read old, write new"): a store may hold a previous key (BACKUP_KEY_PREVIOUS) besides
 * the current one. The manifest's `keyId` (a fingerprint) picks the key a backup is read with; a
 * save always encrypts with the current key, so each save moves a backup onto it.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { gunzip, gzip } from 'node:zlib';
import { Collections, OwnerSchema, type Owner } from '@wafleet/contract';
import { FieldValue, type DocumentReference, type DocumentSnapshot, type Firestore, type Transaction } from 'firebase-admin/firestore';
import { z } from 'zod';
import type { LeaseManager } from '../lease/lease-manager.ts';
import { TimeoutError, withTimeout } from '../util/deadline.ts';

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

export const BACKUP_FORMAT = 'aes-256-gcm+gzip/v1';
/** Well under Firestore's 1 MiB document limit, leaving room for field overhead. */
export const CHUNK_BYTES = 900 * 1024;
/** Node accepts GCM tags as short as 4 bytes unless told otherwise; a short tag is forgeable. */
const AUTH_TAG_BYTES = 16;
const IV_BYTES = 12;
/** Same bound as auth snapshots: a corrupt or hostile backup cannot inflate without limit. */
const MAX_PLAINTEXT_BYTES = 256 * 1024 * 1024;
/** Chunks per batch: keeps each commit under Firestore's request size limit. */
const CHUNKS_PER_BATCH = 8;
const READ_ATTEMPTS = 3;
export const DEFAULT_BACKUP_TIMEOUT_MS = 20_000;

const ManifestSchema = z.object({
  format: z.string(),
  generation: z.int().min(1),
  chunkCount: z.int().min(1),
  ciphertextBytes: z.int().min(0),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  iv: z.string(),
  authTag: z.string(),
  /** Fingerprint of the key (not the key): tells "wrong BACKUP_KEY" apart from corruption. */
  keyId: z.string(),
  /** Absent in backups written before chunk prefixes: their chunks are `<generation>-<i>`. */
  chunkPrefix: z.string().min(1).optional(),
  /** Absent in backups written before this field: those were all taken after a link. */
  linked: z.boolean().optional(),
  owner: OwnerSchema.nullish(),
});
export type BackupManifest = z.infer<typeof ManifestSchema>;

/**
 * Which of the store's keys a backup is under: `current` (BACKUP_KEY), `previous`
 * (BACKUP_KEY_PREVIOUS: readable, and due for a save under the current key), or `unknown`
 * (neither: `read` throws keyMismatch).
 */
export type BackupKeyUsed = 'current' | 'previous' | 'unknown';

/** What `head` tells without reading chunks. */
export interface BackupHead {
  generation: number;
  linked: boolean;
  owner: Owner | null;
  /** 'unknown': encrypted with a key this store does not hold; `read` will throw keyMismatch. */
  key: BackupKeyUsed;
}

export interface LoadedBackup {
  plaintext: Buffer;
  generation: number;
  /** The key it was decrypted with. */
  key: 'current' | 'previous';
}

export interface SaveOptions {
  /** Whether the credentials in `plaintext` are linked to a WhatsApp device. */
  linked: boolean;
  /** The generation the local state was restored from or last backed up as; null: unknown, no check. */
  expectedGeneration: number | null;
}

/**
 * - keyMismatch: encrypted with a key that is neither BACKUP_KEY nor BACKUP_KEY_PREVIOUS.
 * - corrupt: chunks missing or not matching the manifest, authentication failed, bad tag.
 * - format: a manifest this code does not understand.
 * None of these goes away by retrying; transient failures throw other errors (TimeoutError, Firestore's).
 */
export type BackupUnreadableKind = 'keyMismatch' | 'corrupt' | 'format';

export class BackupUnreadableError extends Error {
  override readonly name = 'BackupUnreadableError';
  constructor(
    readonly accountId: string,
    readonly kind: BackupUnreadableKind,
    detail: string,
  ) {
    super(`session backup of ${accountId} cannot be used: ${detail}`);
  }
}

/**
 * - unlinkedOverLinked: unlinked credentials would replace a linked backup.
 * - newerBackup: the stored generation is newer than the one the local state is based on.
 * - concurrentSave: another save or delete switched the backup while this one wrote its chunks.
 */
export type BackupRefusalReason = 'unlinkedOverLinked' | 'newerBackup' | 'concurrentSave';

export class BackupRefusedError extends Error {
  override readonly name = 'BackupRefusedError';
  constructor(
    readonly accountId: string,
    readonly reason: BackupRefusalReason,
    /** The newest generation stored (or consumed by a delete) when the save was refused. */
    readonly storedGeneration: number,
  ) {
    super(`session backup of ${accountId} not saved: ${reason} (stored generation ${storedGeneration})`);
  }
}

export interface SessionBackupStoreOptions {
  /**
   * BACKUP_KEY_PREVIOUS: a key backups are still read with (never written with) while a rotation
   * moves them onto the current key. 32 bytes, not the current key.
   */
  previousKey?: Buffer | null;
  /** Deadline of each Firestore call. Default DEFAULT_BACKUP_TIMEOUT_MS. */
  timeoutMs?: number;
  logger?: { warn(obj: object, msg?: string): void };
  /** Points where tests interleave another writer or reader; not for production use. */
  hooks?: {
    beforeChunkWrite?: (accountId: string) => Promise<void> | void;
    beforeChunkRead?: (accountId: string) => Promise<void> | void;
  };
}

export function keyFingerprint(key: Buffer): string {
  return createHash('sha256').update('wafleet-backup-key-id').update(key).digest('hex').slice(0, 16);
}

function aad(accountId: string, generation: number): Buffer {
  return Buffer.from(`wafleet-backup:v1:${accountId}:${generation}`);
}

/** The generation a chunk id was written for (both id formats), or null for ids of neither. */
function chunkGeneration(id: string): number | null {
  const head = id.slice(0, id.indexOf('-'));
  return /^[1-9][0-9]*$/.test(head) ? Number(head) : null;
}

/** The stored state a save or delete decides on. */
interface Stored {
  exists: boolean;
  linked: boolean;
  /** The newest generation stored or consumed by a delete: the next save gets floor + 1. */
  floor: number;
  chunkPrefix: string | null;
}

function storedState(manifest: DocumentSnapshot, tombstone: DocumentSnapshot): Stored {
  const generationOf = (snap: DocumentSnapshot): number => {
    const g: unknown = snap.exists ? snap.get('generation') : 0;
    return Number.isSafeInteger(g) ? (g as number) : 0;
  };
  return {
    exists: manifest.exists,
    // A manifest this code cannot parse may still be a linked identity: treat it as one.
    linked: manifest.exists && manifest.get('linked') !== false,
    floor: Math.max(generationOf(manifest), generationOf(tombstone)),
    chunkPrefix: manifest.exists ? ((manifest.get('chunkPrefix') as string | undefined) ?? null) : null,
  };
}

function errorName(error: unknown): string {
  return error instanceof Error ? error.name : typeof error;
}

export class SessionBackupStore {
  /** The fingerprint of the current key: every save writes it as the manifest's `keyId`. */
  readonly keyId: string;
  /** The fingerprint of the previous key, or null without one. */
  readonly previousKeyId: string | null;
  private readonly previousKey: Buffer | null;
  private readonly timeoutMs: number;

  constructor(
    private readonly db: Firestore,
    private readonly key: Buffer,
    private readonly leases: LeaseManager,
    private readonly options: SessionBackupStoreOptions = {},
  ) {
    if (key.length !== 32) throw new Error('BACKUP_KEY must be 32 bytes');
    const previous = options.previousKey ?? null;
    if (previous && previous.length !== 32) throw new Error('BACKUP_KEY_PREVIOUS must be 32 bytes');
    if (previous?.equals(key)) throw new Error('BACKUP_KEY_PREVIOUS must not be the current BACKUP_KEY');
    this.keyId = keyFingerprint(key);
    this.previousKey = previous;
    this.previousKeyId = previous ? keyFingerprint(previous) : null;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_BACKUP_TIMEOUT_MS;
  }

  /** Which key a manifest's `keyId` names. */
  private keyUsed(keyId: string): BackupKeyUsed {
    if (keyId === this.keyId) return 'current';
    if (this.previousKeyId !== null && keyId === this.previousKeyId) return 'previous';
    return 'unknown';
  }

  private manifestRef(accountId: string): DocumentReference {
    return this.db.collection(Collections.sessionBackups).doc(accountId);
  }

  private tombstoneRef(accountId: string): DocumentReference {
    return this.manifestRef(accountId).collection('meta').doc('tombstone');
  }

  private chunkRef(accountId: string, prefix: string, index: number): DocumentReference {
    return this.manifestRef(accountId).collection('chunks').doc(`${prefix}-${index}`);
  }

  private deadline<T>(promise: PromiseLike<T>, what: string, accountId: string): Promise<T> {
    return withTimeout(promise, this.timeoutMs, `session backup ${what} of ${accountId}`);
  }

  /** A fenced transaction that also reads the manifest and the tombstone. */
  private fenced<T>(accountId: string, what: string, fn: (tx: Transaction, owner: Owner, stored: Stored) => T): Promise<T> {
    const work = this.leases.fencedGetAll(accountId, [this.manifestRef(accountId), this.tombstoneRef(accountId)], (tx, owner, [m, t]) =>
      fn(tx, owner, storedState(m!, t!)),
    );
    return this.deadline(work, what, accountId);
  }

  /** The manifest only (one read): whether there is a backup, how new, and whether it is linked. */
  async head(accountId: string): Promise<BackupHead | null> {
    const snap = await this.deadline(this.manifestRef(accountId).get(), 'head', accountId);
    if (!snap.exists) return null;
    const m = this.parseManifest(accountId, snap);
    const key = this.keyUsed(m.keyId);
    return { generation: m.generation, linked: m.linked !== false, owner: m.owner ?? null, key };
  }

  /**
   * The latest backup, or null when there is none. Throws BackupUnreadableError for data no retry
   * will fix; any other error (timeout, Firestore unavailable) is transient.
   */
  async read(accountId: string): Promise<LoadedBackup | null> {
    for (let attempt = 1; ; attempt++) {
      const snap = await this.deadline(this.manifestRef(accountId).get(), 'manifest read', accountId);
      if (!snap.exists) return null;
      const m = this.parseManifest(accountId, snap);
      const key = this.keyUsed(m.keyId);
      if (key === 'unknown') {
        // Fingerprints, not keys: they tell the operator which secret version the backup needs.
        const held = this.previousKeyId ? `BACKUP_KEY's ${this.keyId} nor BACKUP_KEY_PREVIOUS's ${this.previousKeyId}` : `BACKUP_KEY's ${this.keyId}`;
        throw new BackupUnreadableError(accountId, 'keyMismatch', `it was encrypted with another key (keyId ${m.keyId}, not ${held})`);
      }
      await this.options.hooks?.beforeChunkRead?.(accountId);
      const prefix = m.chunkPrefix ?? String(m.generation);
      const refs = Array.from({ length: m.chunkCount }, (_, i) => this.chunkRef(accountId, prefix, i));
      const chunks = await this.deadline(this.db.getAll(...refs), 'chunk read', accountId);
      const ciphertext = this.assemble(chunks, m);
      if (typeof ciphertext === 'string') {
        // The owner may have switched generations (deleting these chunks) between our two reads.
        const again = await this.deadline(this.manifestRef(accountId).get(), 'manifest re-read', accountId);
        const switched = !again.exists || !again.updateTime || !snap.updateTime || !again.updateTime.isEqual(snap.updateTime);
        if (switched && attempt < READ_ATTEMPTS) continue;
        throw new BackupUnreadableError(accountId, 'corrupt', ciphertext);
      }
      const plaintext = await this.decrypt(accountId, m, ciphertext, key === 'current' ? this.key : this.previousKey!);
      return { plaintext, generation: m.generation, key };
    }
  }

  /** @deprecated Use `read`, which also says which generation the plaintext is. */
  async load(accountId: string): Promise<Buffer | null> {
    return (await this.read(accountId))?.plaintext ?? null;
  }

  /**
   * Stores a new backup generation; only the account's lease holder may. Returns the generation.
   * Throws BackupRefusedError when the stored backup must not be replaced (see SaveOptions), and
   * StaleOwnerError when the lease is not ours, in both cases without writing a chunk that stays.
   * Without options (the older call), the credentials count as linked and no generation is checked.
   */
  async save(accountId: string, plaintext: Buffer, options: SaveOptions = { linked: true, expectedGeneration: null }): Promise<number> {
    const check = (stored: Stored): void => {
      if (!options.linked && stored.linked) throw new BackupRefusedError(accountId, 'unlinkedOverLinked', stored.floor);
      if (options.expectedGeneration !== null && stored.floor > options.expectedGeneration) {
        throw new BackupRefusedError(accountId, 'newerBackup', stored.floor);
      }
    };
    // Before any chunk: a writer that is not the owner, or would be refused, writes nothing.
    const before = await this.fenced(accountId, 'ownership check', (_tx, owner, stored) => {
      check(stored);
      return { owner, stored };
    });
    const generation = before.stored.floor + 1;
    const prefix = `${generation}-${before.owner.epoch}-${randomBytes(4).toString('hex')}`;

    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv, { authTagLength: AUTH_TAG_BYTES });
    cipher.setAAD(aad(accountId, generation));
    const ciphertext = Buffer.concat([cipher.update(await gzipAsync(plaintext)), cipher.final()]);
    const chunkCount = Math.max(1, Math.ceil(ciphertext.length / CHUNK_BYTES));
    const ours = Array.from({ length: chunkCount }, (_, i) => this.chunkRef(accountId, prefix, i));
    const manifest: BackupManifest = {
      format: BACKUP_FORMAT,
      generation,
      chunkCount,
      ciphertextBytes: ciphertext.length,
      sha256: createHash('sha256').update(ciphertext).digest('hex'),
      iv: iv.toString('base64'),
      authTag: cipher.getAuthTag().toString('base64'),
      keyId: this.keyId,
      chunkPrefix: prefix,
      linked: options.linked,
    };

    await this.options.hooks?.beforeChunkWrite?.(accountId);
    try {
      for (let start = 0; start < chunkCount; start += CHUNKS_PER_BATCH) {
        const batch = this.db.batch();
        ours.slice(start, start + CHUNKS_PER_BATCH).forEach((ref, k) => {
          const i = start + k;
          batch.set(ref, { data: ciphertext.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES) });
        });
        await this.deadline(batch.commit(), 'chunk write', accountId);
      }
      await this.fenced(accountId, 'manifest switch', (tx, owner, stored) => {
        // An earlier attempt of this transaction committed but its answer was lost: done.
        if (stored.chunkPrefix === prefix) return;
        // Any save or delete since our check raised the floor: theirs is newer than ours.
        if (stored.floor !== before.stored.floor) throw new BackupRefusedError(accountId, 'concurrentSave', stored.floor);
        check(stored);
        tx.set(this.manifestRef(accountId), { ...manifest, owner, updatedAt: FieldValue.serverTimestamp() });
      });
    } catch (error) {
      await this.abandonChunks(accountId, prefix, ours, error);
      throw error;
    }
    await this.sweep(accountId, generation, prefix);
    return generation;
  }

  /**
   * Removes the backup (after a logout, a 401, or an account deletion). Only the lease holder may.
   * With `ifGeneration`, only when the stored backup is not newer than that: stale local
   * credentials that were rejected must not take a newer backup with them. Returns whether a
   * backup was deleted.
   */
  async delete(accountId: string, { ifGeneration }: { ifGeneration?: number } = {}): Promise<boolean> {
    const outcome = await this.fenced(accountId, 'delete', (tx, owner, stored) => {
      if (!stored.exists) return { deleted: false, sweepUpTo: stored.floor };
      if (ifGeneration !== undefined && stored.floor > ifGeneration) return { deleted: false, sweepUpTo: 0 };
      const consumed = stored.floor + 1;
      tx.delete(this.manifestRef(accountId));
      tx.set(this.tombstoneRef(accountId), { generation: consumed, owner, deletedAt: FieldValue.serverTimestamp() });
      return { deleted: true, sweepUpTo: consumed };
    });
    // Also when there was nothing to delete: a repeated delete finishes an interrupted sweep.
    if (outcome.sweepUpTo > 0) await this.sweep(accountId, outcome.sweepUpTo, null);
    return outcome.deleted;
  }

  private parseManifest(accountId: string, snap: DocumentSnapshot): BackupManifest {
    const format: unknown = snap.get('format');
    if (format !== BACKUP_FORMAT) throw new BackupUnreadableError(accountId, 'format', `unknown format ${JSON.stringify(format)}`);
    const parsed = ManifestSchema.safeParse(snap.data());
    if (!parsed.success) throw new BackupUnreadableError(accountId, 'format', `malformed manifest (${z.prettifyError(parsed.error).replace(/\n/g, ' ')})`);
    return parsed.data;
  }

  /** The ciphertext, or why the chunks do not match the manifest. */
  private assemble(chunks: DocumentSnapshot[], m: BackupManifest): Buffer | string {
    const parts: Buffer[] = [];
    for (const c of chunks) {
      const data: unknown = c.exists ? c.get('data') : undefined;
      if (!(data instanceof Uint8Array)) return `chunk ${c.id} is missing`;
      parts.push(Buffer.from(data));
    }
    const ciphertext = Buffer.concat(parts);
    if (ciphertext.length !== m.ciphertextBytes || createHash('sha256').update(ciphertext).digest('hex') !== m.sha256) {
      return 'its chunks do not match the manifest';
    }
    return ciphertext;
  }

  private async decrypt(accountId: string, m: BackupManifest, ciphertext: Buffer, key: Buffer): Promise<Buffer> {
    const iv = Buffer.from(m.iv, 'base64');
    const tag = Buffer.from(m.authTag, 'base64');
    if (iv.length !== IV_BYTES) throw new BackupUnreadableError(accountId, 'corrupt', `its IV is ${iv.length} bytes, not ${IV_BYTES}`);
    if (tag.length !== AUTH_TAG_BYTES) {
      throw new BackupUnreadableError(accountId, 'corrupt', `its authentication tag is ${tag.length} bytes, not ${AUTH_TAG_BYTES}`);
    }
    let compressed: Buffer;
    try {
      // The tag length is pinned whichever key decrypts: Node would otherwise accept a truncated tag.
      const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: AUTH_TAG_BYTES });
      decipher.setAAD(aad(accountId, m.generation));
      decipher.setAuthTag(tag);
      compressed = Buffer.concat([decipher.update(ciphertext), decipher.final()]);
    } catch {
      throw new BackupUnreadableError(accountId, 'corrupt', 'authentication failed (tampered or corrupt)');
    }
    try {
      return await gunzipAsync(compressed, { maxOutputLength: MAX_PLAINTEXT_BYTES });
    } catch {
      throw new BackupUnreadableError(accountId, 'corrupt', 'its content does not decompress');
    }
  }

  /**
   * Deletes chunks of generations up to `upTo` except `keepPrefix`'s: those of replaced
   * generations, of writers refused or killed before their manifest switch. Chunks of newer
   * generations may belong to a save in flight and stay. Best effort: what is left is swept next time.
   */
  private async sweep(accountId: string, upTo: number, keepPrefix: string | null): Promise<void> {
    try {
      const refs = await this.deadline(this.manifestRef(accountId).collection('chunks').listDocuments(), 'chunk listing', accountId);
      const dead = refs.filter((ref) => {
        const generation = chunkGeneration(ref.id);
        return generation !== null && generation <= upTo && (keepPrefix === null || !ref.id.startsWith(`${keepPrefix}-`));
      });
      await this.deleteRefs(accountId, dead);
    } catch (error) {
      this.options.logger?.warn({ accountId, error: errorName(error) }, 'removing old session backup chunks failed; the next save retries');
    }
  }

  /**
   * Removes the chunks of a save that failed, once it is certain the manifest does not name them.
   * After a deadline a manifest switch may still commit (and Firestore is likely unreachable
   * anyway), so the chunks stay: the next save sweeps them if nothing points at them.
   */
  private async abandonChunks(accountId: string, prefix: string, refs: DocumentReference[], cause: unknown): Promise<void> {
    if (cause instanceof TimeoutError) return;
    try {
      const now = await this.deadline(this.manifestRef(accountId).get(), 'manifest re-read', accountId);
      if (now.get('chunkPrefix') === prefix) return;
      await this.deleteRefs(accountId, refs);
    } catch (error) {
      this.options.logger?.warn({ accountId, error: errorName(error) }, 'removing chunks of an abandoned session backup failed; a later save sweeps them');
    }
  }

  private async deleteRefs(accountId: string, refs: DocumentReference[]): Promise<void> {
    for (let start = 0; start < refs.length; start += 400) {
      const batch = this.db.batch();
      for (const ref of refs.slice(start, start + 400)) batch.delete(ref);
      await this.deadline(batch.commit(), 'chunk delete', accountId);
    }
  }
}
