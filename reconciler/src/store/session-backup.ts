/**
 * Encrypted session backups in Firestore, `sessionBackups/{accountId}`: so an account whose disk
 * copy is missing or corrupt, or that moves to another VM, reconnects without a new QR scan.
 *
 * Format: gzip, then AES-256-GCM with a fresh 96-bit IV and the account id and generation as
 * associated data (a backup cannot be replayed onto another account or generation). Ciphertext is
 * split into chunk documents under the 1 MiB document limit, written first under a new generation;
 * the manifest then switches generations in a fenced transaction, so a crash mid-backup leaves the
 * previous backup intact. No plaintext key material leaves the process.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { gunzip, gzip } from 'node:zlib';
import { Collections } from '@wafleet/contract';
import { FieldValue, type Firestore } from 'firebase-admin/firestore';
import type { LeaseManager } from '../lease/lease-manager.ts';

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

export const BACKUP_FORMAT = 'aes-256-gcm+gzip/v1';
/** Well under Firestore's 1 MiB document limit, leaving room for field overhead. */
export const CHUNK_BYTES = 900 * 1024;

export interface BackupManifest {
  format: string;
  generation: number;
  chunkCount: number;
  ciphertextBytes: number;
  sha256: string;
  iv: string;
  authTag: string;
  /** Fingerprint of the key (not the key): tells "wrong BACKUP_KEY" apart from corruption. */
  keyId: string;
}

export class BackupUnreadableError extends Error {
  constructor(readonly accountId: string, detail: string) {
    super(`session backup of ${accountId} cannot be used: ${detail}`);
    this.name = 'BackupUnreadableError';
  }
}

export function keyFingerprint(key: Buffer): string {
  return createHash('sha256').update('wafleet-backup-key-id').update(key).digest('hex').slice(0, 16);
}

function aad(accountId: string, generation: number): Buffer {
  return Buffer.from(`wafleet-backup:v1:${accountId}:${generation}`);
}

export class SessionBackupStore {
  private readonly keyId: string;

  constructor(
    private readonly db: Firestore,
    private readonly key: Buffer,
    private readonly leases: LeaseManager,
  ) {
    if (key.length !== 32) throw new Error('BACKUP_KEY must be 32 bytes');
    this.keyId = keyFingerprint(key);
  }

  private manifestRef(accountId: string) {
    return this.db.collection(Collections.sessionBackups).doc(accountId);
  }

  private chunkRef(accountId: string, generation: number, index: number) {
    return this.manifestRef(accountId).collection('chunks').doc(`${generation}-${index}`);
  }

  /** Stores a new backup generation; only the account's lease holder may. Returns the generation. */
  async save(accountId: string, plaintext: Buffer): Promise<number> {
    const current = await this.manifestRef(accountId).get();
    const previous = current.exists ? (current.data() as BackupManifest) : null;
    const generation = (previous?.generation ?? 0) + 1;

    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(aad(accountId, generation));
    const ciphertext = Buffer.concat([cipher.update(await gzipAsync(plaintext)), cipher.final()]);
    const authTag = cipher.getAuthTag();

    const chunkCount = Math.max(1, Math.ceil(ciphertext.length / CHUNK_BYTES));
    // A few chunks per batch keeps each commit under Firestore's request size limit.
    for (let start = 0; start < chunkCount; start += 8) {
      const batch = this.db.batch();
      for (let i = start; i < Math.min(chunkCount, start + 8); i++) {
        batch.set(this.chunkRef(accountId, generation, i), { data: ciphertext.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES) });
      }
      await batch.commit();
    }

    const manifest: BackupManifest = {
      format: BACKUP_FORMAT,
      generation,
      chunkCount,
      ciphertextBytes: ciphertext.length,
      sha256: createHash('sha256').update(ciphertext).digest('hex'),
      iv: iv.toString('base64'),
      authTag: authTag.toString('base64'),
      keyId: this.keyId,
    };
    await this.leases.fenced(accountId, async (tx, owner) => {
      const now = await tx.get(this.manifestRef(accountId));
      const nowGeneration = now.exists ? (now.get('generation') as number) : 0;
      if (nowGeneration !== (previous?.generation ?? 0)) {
        throw new Error(`backup of ${accountId} changed underneath (generation ${nowGeneration}); retry`);
      }
      tx.set(this.manifestRef(accountId), { ...manifest, owner, updatedAt: FieldValue.serverTimestamp() });
    });
    if (previous) await this.deleteChunks(accountId, previous.generation, previous.chunkCount);
    return generation;
  }

  /** The latest backup's plaintext, or null when there is none. */
  async load(accountId: string): Promise<Buffer | null> {
    const snap = await this.manifestRef(accountId).get();
    if (!snap.exists) return null;
    const m = snap.data() as BackupManifest;
    if (m.format !== BACKUP_FORMAT) throw new BackupUnreadableError(accountId, `unknown format ${m.format}`);
    if (m.keyId !== this.keyId) throw new BackupUnreadableError(accountId, 'it was encrypted with another BACKUP_KEY');
    const chunks = await this.db.getAll(...Array.from({ length: m.chunkCount }, (_, i) => this.chunkRef(accountId, m.generation, i)));
    const parts: Buffer[] = [];
    for (const c of chunks) {
      if (!c.exists) throw new BackupUnreadableError(accountId, `chunk ${c.id} is missing`);
      parts.push(Buffer.from(c.get('data') as Uint8Array));
    }
    const ciphertext = Buffer.concat(parts);
    if (ciphertext.length !== m.ciphertextBytes || createHash('sha256').update(ciphertext).digest('hex') !== m.sha256) {
      throw new BackupUnreadableError(accountId, 'its chunks do not match the manifest');
    }
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, Buffer.from(m.iv, 'base64'));
      decipher.setAAD(aad(accountId, m.generation));
      decipher.setAuthTag(Buffer.from(m.authTag, 'base64'));
      return await gunzipAsync(Buffer.concat([decipher.update(ciphertext), decipher.final()]));
    } catch {
      throw new BackupUnreadableError(accountId, 'authentication failed (tampered or corrupt)');
    }
  }

  /** Removes the backup (after a logout or an account deletion). Only the lease holder may. */
  async delete(accountId: string): Promise<void> {
    await this.leases.fenced(accountId, async (tx) => {
      tx.delete(this.manifestRef(accountId));
    });
    // Chunks of any generation, including orphans of an interrupted save.
    const chunks = await this.manifestRef(accountId).collection('chunks').listDocuments();
    await Promise.all(chunks.map((c) => c.delete()));
  }

  private async deleteChunks(accountId: string, generation: number, count: number): Promise<void> {
    const batch = this.db.batch();
    for (let i = 0; i < count; i++) batch.delete(this.chunkRef(accountId, generation, i));
    await batch.commit();
  }
}
