/**
 * A decryption's Signal state reaches the disk only after its plaintext was journaled.
 *
 * Baileys 7 (Socket/messages-recv.js, handleMessage) decrypts inside a key transaction that
 * commits (our `keys.set`, durable) before `messageRetryManager.addRecentMessage`, where
 * inbound-capture.ts journals the plaintext. A kill -9 between the two left the ratchet advanced
 * on disk and the message nowhere: WhatsApp redelivers the same ciphertext, it fails with "Key
 * used already or never filled", and Baileys nacks it without asking for a retry (seen in CI: one
 * message in 500 lost over two kills).
 *
 * So every decrypt runs under `AccountAuthState.deferWrites`, and its changes are committed right
 * after `addRecentMessage`: the inbound capture wraps that method afterwards (the socket is handed
 * to it later) and journals synchronously inside it, so a microtask queued here runs after the
 * journal append. Decryptions are serialized by Baileys' message mutex, so the deferrals open at
 * `addRecentMessage` are those of that message. A decrypt that fails, or a message that never
 * reaches `addRecentMessage`, commits on its own (the fallback timer): nothing stays held long.
 */
import type { WASocket } from '@whiskeysockets/baileys';
import type { AccountAuthState } from '../store/auth-state.ts';
import { installSignalDecryptRollback, type SignalDecryptRollbackStatus } from './signal-decrypt-rollback.ts';

/**
 * libsignal's rollback of failed decrypt attempts (signal-decrypt-rollback.ts, issue 16), installed
 * once when the first session driver loads this module, before any socket decrypts. Without it
 * (an unverified libsignal) a message on one of two crossed sessions can break the other for
 * good: `reason` says why, for the session driver to log as a warning.
 */
export const signalDecryptRollback: SignalDecryptRollbackStatus = installSignalDecryptRollback();

/** Longest a successful decryption's state waits for its message to reach the journal hook. */
const FALLBACK_COMMIT_MS = 2_000;

type Decrypt = (args: never) => Promise<Uint8Array>;

/** Installs the deferral on `sock`. Returns false (plain durable writes) without the hook it needs. */
export function commitDecryptsAfterJournal(sock: WASocket, auth: AccountAuthState): boolean {
  const manager = sock.messageRetryManager;
  const repo = sock.signalRepository as unknown as Record<'decryptMessage' | 'decryptGroupMessage', Decrypt>;
  if (!manager || typeof repo.decryptMessage !== 'function' || typeof repo.decryptGroupMessage !== 'function') return false;
  const open: Array<() => void> = [];
  for (const name of ['decryptMessage', 'decryptGroupMessage'] as const) {
    const original = repo[name].bind(sock.signalRepository) as Decrypt;
    repo[name] = (async (args: never) => {
      const deferred = auth.deferWrites(() => original(args));
      try {
        const plaintext = await deferred.result;
        open.push(deferred.commit);
        setTimeout(deferred.commit, FALLBACK_COMMIT_MS).unref();
        return plaintext;
      } catch (err) {
        // libsignal stores nothing for a ciphertext it could not decrypt; whatever the
        // transaction staged is of no message, so it may go to disk as it would have.
        deferred.commit();
        throw err;
      }
    }) as Decrypt;
  }
  const addRecentMessage = manager.addRecentMessage.bind(manager);
  manager.addRecentMessage = (...args: Parameters<typeof manager.addRecentMessage>) => {
    addRecentMessage(...args);
    const commits = open.splice(0);
    queueMicrotask(() => {
      for (const commit of commits) commit();
    });
  };
  return true;
}
