/**
 * On-disk format (v1) of one account's Baileys auth state, and its codecs.
 *
 *   <SESSIONS_PATH>/<accountId>/          mode 0700
 *     creds.json                           AuthenticationCreds as BufferJSON (the format Baileys'
 *                                          useMultiFileAuthState writes, so its creds import as is)
 *     keys/<type>/<shard>.json             {"format":"wafleet-keys","v":1,"type","shard","shards",
 *                                           "entries":{"<id>": <BufferJSON value>, …}}
 *     backup-generation.json               {"format":"wafleet-backup-generation","v":1,"generation"}:
 *                                          the session backup generation this state was restored
 *                                          from or last backed up as (absent: unknown). Lets the
 *                                          owner tell a newer backup from a stale disk.
 *
 * Why shards, not one file per key nor one file per type:
 * - One file per key turns the 812 pre-keys of a first link into 812 fsync+rename cycles, and key
 *   ids (JIDs with ":" and "/") would need escaping into file names.
 * - One file per type makes every Signal message rewrite *all* sessions: with thousands of
 *   contacts that is megabytes per message.
 * - Hashing ids into a fixed number of shards per type bounds both: a first link writes 8 pre-key
 *   files, and a message rewrites 1/64 of the sessions. Every shard is replaced atomically (temp
 *   file, fsync, rename, fsync dir), so after a kill -9 each file is wholly old or wholly new.
 *
 * The shard counts are part of the format: changing them needs a new `v` and a migration (a
 * snapshot/restore round trip is one, since snapshots do not depend on the layout).
 */
import { BufferJSON, proto } from '@whiskeysockets/baileys';
import type { AuthenticationCreds } from '@whiskeysockets/baileys';
import { z } from 'zod';

export const FORMAT_VERSION = 1;
export const CREDS_FILE = 'creds.json';
export const KEYS_DIR = 'keys';
export const BACKUP_GENERATION_FILE = 'backup-generation.json';

/** Key types become directory names, so they are held to a safe alphabet. */
export const KEY_TYPE_RE = /^[a-z][a-z0-9-]{0,63}$/;

/**
 * Shards per key type, sized by how many entries a type holds and how often one changes.
 * Types Baileys may add later get DEFAULT_SHARDS.
 */
export const SHARD_COUNTS: Readonly<Record<string, number>> = Object.freeze({
  // 812 at first link, then consumed one by one as contacts start sessions: few large writes.
  'pre-key': 8,
  // One per contact device, rewritten on every message: the hot, large type.
  session: 64,
  'sender-key': 32,
  'sender-key-memory': 16,
  // A handful of entries.
  'app-state-sync-key': 4,
  // Five collections, each an LTHash whose index map can be large: spread them out.
  'app-state-sync-version': 8,
  'lid-mapping': 32,
  'device-list': 32,
  tctoken: 16,
  'identity-key': 32,
});
export const DEFAULT_SHARDS = 16;

export function shardCount(type: string): number {
  return SHARD_COUNTS[type] ?? DEFAULT_SHARDS;
}

/** FNV-1a (32-bit) of the id, modulo the type's shard count: stable across processes and versions. */
export function shardOf(id: string, shards: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) {
    hash ^= id.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % shards;
}

export function shardFileName(shard: number): string {
  return `${shard.toString(16).padStart(2, '0')}.json`;
}

const SHARD_FILE_RE = /^([0-9a-f]{2})\.json$/;
export function parseShardFileName(name: string): number | null {
  const match = SHARD_FILE_RE.exec(name);
  return match?.[1] === undefined ? null : Number.parseInt(match[1], 16);
}

/** A key value as stored: its BufferJSON text. Keeping text in memory isolates callers from each other's mutations. */
export function encodeKeyValue(value: unknown): string {
  return JSON.stringify(value, BufferJSON.replacer);
}

export function decodeKeyValue(type: string, text: string): unknown {
  const value: unknown = JSON.parse(text, BufferJSON.reviver);
  // Baileys expects a protobuf instance here (useMultiFileAuthState does the same conversion).
  if (type === 'app-state-sync-key' && value) {
    return proto.Message.AppStateSyncKeyData.fromObject(value as Record<string, unknown>);
  }
  return value;
}

export function encodeShard(type: string, shard: number, shards: number, entries: ReadonlyMap<string, string>): string {
  const parts: string[] = [];
  for (const [id, text] of entries) parts.push(`${JSON.stringify(id)}:${text}`);
  const header = JSON.stringify({ format: 'wafleet-keys', v: FORMAT_VERSION, type, shard, shards });
  return `${header.slice(0, -1)},"entries":{${parts.join(',')}}}\n`;
}

const ShardFileSchema = z.object({
  format: z.literal('wafleet-keys'),
  v: z.literal(FORMAT_VERSION),
  type: z.string(),
  shard: z.int().min(0),
  shards: z.int().min(1),
  entries: z.record(z.string(), z.unknown()),
});

/**
 * Parses a shard file into id → value text. Throws an Error whose message is the reason when
 * the file is not a well-formed shard of `expect`, or holds an id that belongs in another shard.
 */
export function decodeShard(text: string, expect: { type: string; shard: number; shards: number }): Map<string, string> {
  const parsed = ShardFileSchema.safeParse(parseJson(text));
  if (!parsed.success) throw new Error(`not a key shard (${z.prettifyError(parsed.error).replace(/\n/g, ' ')})`);
  const file = parsed.data;
  if (file.type !== expect.type || file.shard !== expect.shard || file.shards !== expect.shards) {
    throw new Error(`shard header ${file.type}/${file.shard} of ${file.shards} does not match its path (${expect.type}/${expect.shard} of ${expect.shards})`);
  }
  const entries = new Map<string, string>();
  for (const [id, value] of Object.entries(file.entries)) {
    if (value === null || value === undefined) continue;
    if (shardOf(id, expect.shards) !== expect.shard) throw new Error(`id ${JSON.stringify(id)} does not belong in this shard`);
    entries.set(id, JSON.stringify(value));
  }
  return entries;
}

export function encodeCreds(creds: AuthenticationCreds): string {
  return JSON.stringify(creds, BufferJSON.replacer);
}

const bytes = (length: number) =>
  z.custom<Buffer>((v) => Buffer.isBuffer(v) && v.length === length, { message: `must be ${length} bytes` });
const KeyPairSchema = z.object({ public: bytes(32), private: bytes(32) });

/** The fields without which Baileys cannot log in; anything else is passed through untouched. */
const CredsSchema = z.looseObject({
  noiseKey: KeyPairSchema,
  pairingEphemeralKeyPair: KeyPairSchema,
  signedIdentityKey: KeyPairSchema,
  signedPreKey: z.looseObject({ keyPair: KeyPairSchema, signature: bytes(64), keyId: z.int() }),
  registrationId: z.int(),
  advSecretKey: z.string().min(1),
  nextPreKeyId: z.int(),
  firstUnuploadedPreKeyId: z.int(),
  accountSyncCounter: z.number(),
  registered: z.boolean(),
  processedHistoryMessages: z.array(z.unknown()),
  accountSettings: z.looseObject({}),
});

/** Parses creds.json; throws an Error whose message is the reason if it is unusable. */
export function decodeCreds(text: string): AuthenticationCreds {
  const value = parseJson(text, BufferJSON.reviver);
  const parsed = CredsSchema.safeParse(value);
  if (!parsed.success) throw new Error(`invalid credentials (${z.prettifyError(parsed.error).replace(/\n/g, ' ')})`);
  // Return the revived object itself, not zod's copy: unknown fields Baileys added must survive.
  return value as AuthenticationCreds;
}

export function encodeBackupGeneration(generation: number): string {
  if (!Number.isSafeInteger(generation) || generation < 1) throw new RangeError(`invalid backup generation ${generation}`);
  return `${JSON.stringify({ format: 'wafleet-backup-generation', v: FORMAT_VERSION, generation })}\n`;
}

const BackupGenerationSchema = z.object({
  format: z.literal('wafleet-backup-generation'),
  v: z.literal(FORMAT_VERSION),
  generation: z.int().min(1),
});

/** Parses backup-generation.json; throws an Error whose message is the reason if it is unusable. */
export function decodeBackupGeneration(text: string): number {
  const parsed = BackupGenerationSchema.safeParse(parseJson(text));
  if (!parsed.success) throw new Error(`not a backup generation marker (${z.prettifyError(parsed.error).replace(/\n/g, ' ')})`);
  return parsed.data.generation;
}

function parseJson(text: string, reviver?: (key: string, value: unknown) => unknown): unknown {
  try {
    return JSON.parse(text, reviver);
  } catch (error) {
    throw new Error(`not JSON (${(error as Error).message})`);
  }
}
