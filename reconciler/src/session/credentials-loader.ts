/**
 * Opens an account's credentials for a session, deciding between the local disk and the
 * encrypted backup. The rules, each from a way real deployments lose accounts:
 *
 * - No local state and a backup exists (or cannot be checked): restore it. If the backup cannot be read now (Firestore
 *   unavailable, a timeout) or ever (another BACKUP_KEY, bad chunks), the account is blocked with
 *   that reason; it never starts a fresh link by itself, whose first save would replace the only
 *   linked backup.
 * - Local state and a newer backup generation: the account was relinked (or advanced) elsewhere
 *   while this disk slept; the backup wins, or the old identity logs in, gets 401 and the wipe
 *   that follows takes the newer backup with it.
 * - A corrupt file: repaired from the backup file by file when there is one; otherwise the
 *   corrupt key shards are dropped (a few Signal sessions renegotiate), never the link itself.
 *   Only unreadable creds with no backup leave nothing to save: that is reported, not hidden.
 * - Local state and the backup cannot be checked: the local state is used; only the check for a
 *   newer generation waits for the next open.
 * - The backup is under BACKUP_KEY_PREVIOUS (a key rotation): it is read like any other, and once
 *   the credentials are open they are saved again under the current key, at once rather than at
 *   the next credentials write, so the old key can be dropped soon. The save is fenced by the
 *   lease like every backup; a failed one is logged and the credentials are used all the same.
 */
import type { Logger } from 'pino';
import { StaleOwnerError } from '../lease/lease-manager.ts';
import { CorruptAuthStateError, InvalidAuthSnapshotError } from '../store/auth-errors.ts';
import type { AccountAuthState, AuthStore } from '../store/auth-state.ts';
import { BackupRefusedError, BackupUnreadableError, type BackupHead, type SessionBackupStore } from '../store/session-backup.ts';
import { credsAreLinked } from './session-driver.ts';

/** Why the credentials could not be opened; the account waits (with backoff) instead of linking. */
export class CredentialsUnavailableError extends Error {
  override readonly name = 'CredentialsUnavailableError';
  constructor(
    readonly accountId: string,
    /**
     * - RestoreFailed: the backup could not be read now; retrying may fix it.
     * - BackupUnreadable: the backup exists but no retry will read it (key, chunks, format).
     * - CredentialsCorrupt: the local creds are unreadable and there is no backup to repair from.
     */
    readonly reason: 'RestoreFailed' | 'BackupUnreadable' | 'CredentialsCorrupt',
    readonly detail: string,
  ) {
    super(`credentials of ${accountId} are unavailable (${reason}): ${detail}`);
  }
}

export interface CredentialsLoaderDeps {
  store: AuthStore;
  backups: SessionBackupStore;
  log: Logger;
}

export async function openCredentials(accountId: string, d: CredentialsLoaderDeps): Promise<AccountAuthState> {
  const seen: Seen = { local: false, head: null };
  const auth = await openLocalOrBackup(accountId, d, seen);
  // Not for fresh credentials over an unlinked backup: nothing of this account's to move yet.
  if (seen.head?.key === 'previous' && (seen.local || seen.head.linked)) await reencrypt(accountId, d, auth);
  return auth;
}

/** What the open found: whether there was local state, and the backup's manifest (if it could be read). */
interface Seen {
  local: boolean;
  head: BackupHead | null;
}

async function openLocalOrBackup(accountId: string, d: CredentialsLoaderDeps, seen: Seen): Promise<AccountAuthState> {
  const { store, log } = d;
  const local = await store.exists(accountId);
  seen.local = local;
  let head: BackupHead | null;
  let headError: CredentialsUnavailableError | null = null;
  try {
    head = await backupHead(accountId, d);
  } catch (err) {
    // Good local credentials are not held hostage by a Firestore hiccup or a damaged manifest:
    // only the check for a newer backup is skipped (the next open makes it again).
    if (!local) throw err;
    log.warn({ accountId, err: (err as Error).message }, 'cannot check the backup; using the local credentials');
    head = null;
    headError = err as CredentialsUnavailableError;
  }
  seen.head = head;
  // An unlinked backup holds nothing a fresh start lacks (and maybe an unfinished pairing).
  if (!local && head?.linked) {
    await restore(accountId, d, 'no local credentials');
  } else if (local && head?.linked) {
    const marker = await store.backupGeneration(accountId);
    // An unknown marker (state from before generations were kept) is trusted as it is.
    if (marker !== null && head.generation > marker) {
      if (head.key !== 'unknown') {
        log.warn({ accountId, localGeneration: marker, backupGeneration: head.generation }, 'the backup is newer than the local credentials: restoring it');
        await restore(accountId, d, 'newer backup');
      } else {
        log.error(
          { accountId, localGeneration: marker, backupGeneration: head.generation },
          'the backup is newer than the local credentials but encrypted with a key that is neither BACKUP_KEY nor BACKUP_KEY_PREVIOUS: using the local ones',
        );
      }
    }
  }
  try {
    return await store.open(accountId);
  } catch (err) {
    if (!(err instanceof CorruptAuthStateError)) throw err;
    log.error({ accountId, err: err.message }, 'local credentials are corrupt');
  }
  // Damaged local state is repaired from the backup if there may be one: wait until it can be read.
  if (headError) throw headError;
  if (head) {
    const backup = await readBackup(accountId, d);
    try {
      const { replaced } = await store.repair(accountId, backup.plaintext);
      log.warn({ accountId, files: replaced.length }, 'repaired corrupt credential files from the backup');
      return await store.open(accountId);
    } catch (err) {
      if (!(err instanceof InvalidAuthSnapshotError) && !(err instanceof CorruptAuthStateError)) throw err;
      log.error({ accountId, err: err.message }, 'the backup cannot repair the local credentials');
    }
  }
  try {
    const auth = await store.open(accountId, { dropCorruptShards: true });
    if (auth.droppedShards.length > 0) log.warn({ accountId, files: auth.droppedShards.length }, 'dropped corrupt key shards; the link is kept');
    return auth;
  } catch (err) {
    if (!(err instanceof CorruptAuthStateError)) throw err;
    throw new CredentialsUnavailableError(accountId, 'CredentialsCorrupt', 'creds.json is unreadable and no backup can replace it; a relink starts over');
  }
}

async function backupHead(accountId: string, d: CredentialsLoaderDeps): Promise<BackupHead | null> {
  try {
    return await d.backups.head(accountId);
  } catch (err) {
    if (err instanceof BackupUnreadableError) throw new CredentialsUnavailableError(accountId, 'BackupUnreadable', err.message);
    throw new CredentialsUnavailableError(accountId, 'RestoreFailed', `the backup could not be checked: ${String(err)}`);
  }
}

async function readBackup(accountId: string, d: CredentialsLoaderDeps) {
  let backup;
  try {
    backup = await d.backups.read(accountId);
  } catch (err) {
    if (err instanceof BackupUnreadableError) throw new CredentialsUnavailableError(accountId, 'BackupUnreadable', err.message);
    throw new CredentialsUnavailableError(accountId, 'RestoreFailed', `the backup could not be read: ${String(err)}`);
  }
  // Deleted between the head and the read (a logout elsewhere): nothing to restore after all.
  if (!backup) throw new CredentialsUnavailableError(accountId, 'RestoreFailed', 'the backup disappeared while it was being read');
  return backup;
}

async function restore(accountId: string, d: CredentialsLoaderDeps, why: string): Promise<void> {
  const backup = await readBackup(accountId, d);
  await d.store.restore(accountId, backup.plaintext, { generation: backup.generation });
  d.log.info({ accountId, why, generation: backup.generation }, 'credentials restored from the encrypted backup');
}

/**
 * Saves the open credentials again under the current key, after a read of a backup that was under
 * BACKUP_KEY_PREVIOUS: the same checks as every backup (the lease, linked over unlinked, no newer
 * generation replaced), and the marker moves to the new generation. Never throws: the backup
 * under the previous key stays readable, and the next credentials write (or open) tries again.
 */
async function reencrypt(accountId: string, d: CredentialsLoaderDeps, auth: AccountAuthState): Promise<void> {
  const { store, backups, log } = d;
  try {
    const blob = await store.snapshot(accountId);
    const expectedGeneration = await store.backupGeneration(accountId);
    const generation = await backups.save(accountId, blob, { linked: credsAreLinked(auth.state.creds), expectedGeneration });
    if (!auth.closed) await store.setBackupGeneration(accountId, generation);
    log.info({ accountId, generation, keyId: backups.keyId }, 'the backup was under BACKUP_KEY_PREVIOUS: saved it again under BACKUP_KEY');
  } catch (err) {
    if (err instanceof BackupRefusedError || err instanceof StaleOwnerError) {
      log.info({ accountId, err }, 'the backup under BACKUP_KEY_PREVIOUS was not saved again under BACKUP_KEY');
      return;
    }
    log.warn({ accountId, err }, 'saving the backup again under BACKUP_KEY failed; the next backup of these credentials retries');
  }
}
