/**
 * The single-blob form of an account's auth state, for backups. Gzipped JSON, independent of the
 * on-disk sharding (restore re-shards), so the file layout can change without invalidating backups.
 * Encryption is the backup module's job: this blob holds secrets in the clear.
 */
import { promisify } from 'node:util';
import { gunzip, gzip } from 'node:zlib';
import { z } from 'zod';
import { InvalidAuthSnapshotError } from './auth-errors.ts';
import { KEY_TYPE_RE, decodeCreds } from './auth-layout.ts';

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

export const SNAPSHOT_FORMAT = 'wafleet-auth-snapshot';
export const SNAPSHOT_VERSION = 1;
/** A restore never inflates beyond this: guards against a corrupt or hostile blob. */
const MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024;

export interface AuthSnapshotContent {
  accountId: string;
  createdAt: string;
  /** creds.json text (BufferJSON). */
  credsText: string;
  /** type → id → BufferJSON value text. */
  keys: Map<string, Map<string, string>>;
}

export async function encodeSnapshot(content: AuthSnapshotContent): Promise<Buffer> {
  // Assembled from the stored texts rather than re-serialized objects: no parse/stringify of every key.
  const types: string[] = [];
  for (const [type, entries] of content.keys) {
    if (entries.size === 0) continue;
    const parts: string[] = [];
    for (const [id, text] of entries) parts.push(`${JSON.stringify(id)}:${text}`);
    types.push(`${JSON.stringify(type)}:{${parts.join(',')}}`);
  }
  const header = JSON.stringify({ format: SNAPSHOT_FORMAT, v: SNAPSHOT_VERSION, accountId: content.accountId, createdAt: content.createdAt });
  const json = `${header.slice(0, -1)},"creds":${content.credsText},"keys":{${types.join(',')}}}`;
  return gzipAsync(Buffer.from(json, 'utf8'));
}

const SnapshotSchema = z.object({
  format: z.literal(SNAPSHOT_FORMAT),
  v: z.literal(SNAPSHOT_VERSION),
  accountId: z.string(),
  createdAt: z.string(),
  creds: z.record(z.string(), z.unknown()),
  keys: z.record(z.string().regex(KEY_TYPE_RE), z.record(z.string(), z.unknown())),
});

/** Decodes and fully validates a blob for `accountId`; throws InvalidAuthSnapshotError. */
export async function decodeSnapshot(blob: Uint8Array, accountId: string): Promise<AuthSnapshotContent> {
  let json: string;
  try {
    json = (await gunzipAsync(blob, { maxOutputLength: MAX_SNAPSHOT_BYTES })).toString('utf8');
  } catch (error) {
    throw new InvalidAuthSnapshotError(accountId, `not a gzip stream or too large (${(error as Error).message})`, { cause: error });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (error) {
    throw new InvalidAuthSnapshotError(accountId, 'not JSON', { cause: error });
  }
  const parsed = SnapshotSchema.safeParse(raw);
  if (!parsed.success) {
    throw new InvalidAuthSnapshotError(accountId, z.prettifyError(parsed.error).replace(/\n/g, ' '));
  }
  const snapshot = parsed.data;
  if (snapshot.accountId !== accountId) {
    // Restoring another account's identity would put two accounts on one WhatsApp device.
    throw new InvalidAuthSnapshotError(accountId, `it belongs to account ${snapshot.accountId}`);
  }
  const credsText = JSON.stringify(snapshot.creds);
  try {
    decodeCreds(credsText);
  } catch (error) {
    throw new InvalidAuthSnapshotError(accountId, (error as Error).message, { cause: error });
  }
  const keys = new Map<string, Map<string, string>>();
  for (const [type, entries] of Object.entries(snapshot.keys)) {
    const map = new Map<string, string>();
    for (const [id, value] of Object.entries(entries)) {
      if (value !== null && value !== undefined) map.set(id, JSON.stringify(value));
    }
    keys.set(type, map);
  }
  return { accountId, createdAt: snapshot.createdAt, credsText, keys };
}
