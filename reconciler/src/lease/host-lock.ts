/**
 * One reconciler process per sessions directory. The lock is a Unix socket bound inside the
 * directory: while its owner lives, connecting to it succeeds; once the owner is gone (even by
 * kill -9) connecting is refused and the stale socket file can be replaced. Unlike a pid file this
 * needs no clock and no pid namespace agreement (containers on one host share it), and unlike a
 * lock held by mtime it never waits out a timeout.
 */
import { connect, createServer, type Server } from 'node:net';
import { unlink } from 'node:fs/promises';
import path from 'node:path';
import { isErrno } from '../util/fs-atomic.ts';
import { sleep } from '../util/deadline.ts';

export const HOST_LOCK_NAME = '.reconciler.lock.sock';

export interface HostLock {
  readonly path: string;
  release(): Promise<void>;
}

export interface HostLockOptions {
  /** Give up after this long while another live process holds the lock. */
  waitMs: number;
  /** Called once when the lock is busy, so the caller can say what it is waiting for. */
  onWaiting?: () => void;
  pollMs?: number;
  signal?: AbortSignal;
}

export class HostLockBusyError extends Error {
  constructor(readonly lockPath: string, waitedMs: number) {
    super(`another reconciler still runs on ${path.dirname(lockPath)} (lock ${lockPath} held for ${waitedMs} ms); stop it first, or give each process its own SESSIONS_PATH`);
    this.name = 'HostLockBusyError';
  }
}

export async function acquireHostLock(dir: string, opts: HostLockOptions): Promise<HostLock> {
  const lockPath = path.join(dir, HOST_LOCK_NAME);
  const started = Date.now();
  let warned = false;
  for (;;) {
    const server = await tryBind(lockPath);
    if (server) return { path: lockPath, release: () => closeServer(server, lockPath) };
    if (await ownerAlive(lockPath)) {
      if (!warned) opts.onWaiting?.();
      warned = true;
      if (Date.now() - started >= opts.waitMs) throw new HostLockBusyError(lockPath, Date.now() - started);
      await sleep(opts.pollMs ?? 200, opts.signal);
      continue;
    }
    // The owner is gone; its socket file is left behind. Remove it and race for the bind again.
    await unlink(lockPath).catch((err: unknown) => {
      if (!isErrno(err, 'ENOENT')) throw err;
    });
  }
}

function tryBind(lockPath: string): Promise<Server | null> {
  return new Promise((resolve, reject) => {
    const server = createServer((socket) => socket.end());
    server.once('error', (err) => (isErrno(err, 'EADDRINUSE') ? resolve(null) : reject(err)));
    server.listen(lockPath, () => {
      // The lock must not keep the process alive by itself.
      server.unref();
      resolve(server);
    });
  });
}

function ownerAlive(lockPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(lockPath);
    const done = (alive: boolean) => {
      socket.destroy();
      resolve(alive);
    };
    socket.setTimeout(2_000, () => done(true)); // a hung owner is still an owner
    socket.once('connect', () => done(true));
    socket.once('error', (err) => done(!isErrno(err, 'ECONNREFUSED', 'ENOENT')));
  });
}

function closeServer(server: Server, lockPath: string): Promise<void> {
  return new Promise((resolve) => {
    // close() unlinks the socket file on Unix; remove it ourselves too in case it does not.
    server.close(() => {
      unlink(lockPath).catch(() => undefined).finally(resolve);
    });
  });
}
