/** Errors of the auth-state store, typed so the session driver can pick a recovery. */

/**
 * Stored state exists but cannot be read back: a file that does not parse or lacks required
 * fields. The caller's move is to restore the account from its last backup (or re-link it);
 * retrying will not help.
 */
export class CorruptAuthStateError extends Error {
  override readonly name = 'CorruptAuthStateError';
  constructor(
    readonly accountId: string,
    /** Path relative to the account directory, e.g. "creds.json" or "keys/session/0a.json". */
    readonly file: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`auth state of ${accountId} is corrupt: ${file}: ${reason}`, options);
  }
}

/** A snapshot blob given to `restore` is not one `snapshot` produced (or was truncated). */
export class InvalidAuthSnapshotError extends Error {
  override readonly name = 'InvalidAuthSnapshotError';
  constructor(
    readonly accountId: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`snapshot for ${accountId} is invalid: ${reason}`, options);
  }
}

/** The account is open in this process; close its handle before wiping, restoring or reopening. */
export class AuthStateInUseError extends Error {
  override readonly name = 'AuthStateInUseError';
  constructor(readonly accountId: string, operation: string) {
    super(`cannot ${operation} auth state of ${accountId}: it is open; close it first`);
  }
}

/** A write was attempted through a handle after `close()`; the change was not stored. */
export class AuthStateClosedError extends Error {
  override readonly name = 'AuthStateClosedError';
  constructor(readonly accountId: string) {
    super(`auth state of ${accountId} is closed; the write was discarded`);
  }
}

/** `snapshot` of an account that has no stored credentials. */
export class AuthStateNotFoundError extends Error {
  override readonly name = 'AuthStateNotFoundError';
  constructor(readonly accountId: string) {
    super(`no stored auth state for ${accountId}`);
  }
}
