/**
 * Crash-safe file primitives. The rule they implement: a reader (after any crash, kill -9 or power
 * loss) sees a file either entirely old or entirely new, never torn. That is rename(2) within one
 * directory, preceded by fsync of the data and followed by fsync of the directory (otherwise the
 * rename itself may not survive a power loss, and ext4/xfs may even expose a zero-length file).
 *
 * Temp names start with "." and end with TEMP_SUFFIX so `cleanTempFiles` can sweep what a crash left.
 */
import { randomBytes } from 'node:crypto';
import { open, readdir, readFile, rename, rm, unlink, mkdir } from 'node:fs/promises';
import path from 'node:path';

export const TEMP_SUFFIX = '.tmp';

/** Secrets by default: session keys are credentials. */
export const PRIVATE_FILE_MODE = 0o600;
export const PRIVATE_DIR_MODE = 0o700;

export interface AtomicWriteOptions {
  /** File mode of the new file. Default 0600. */
  mode?: number;
  /** fsync the parent directory after the rename. Default true; only batch helpers turn it off. */
  syncDir?: boolean;
}

export interface AtomicFile {
  file: string;
  data: string | Uint8Array;
}

/** The temp name used for `file`: same directory (rename must not cross filesystems), unique. */
export function tempNameFor(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}${TEMP_SUFFIX}`);
}

export function isTempName(name: string): boolean {
  return name.startsWith('.') && name.endsWith(TEMP_SUFFIX);
}

/** Writes `data` to `file` atomically and durably (see module comment). */
export async function writeFileAtomic(file: string, data: string | Uint8Array, options: AtomicWriteOptions = {}): Promise<void> {
  await writeFilesAtomic([{ file, data }], options);
}

/**
 * Writes several files, each atomically. Not a transaction across files: a crash may leave some
 * new and some old. What batching buys is one fsync per directory instead of one per file.
 */
export async function writeFilesAtomic(files: readonly AtomicFile[], { mode = PRIVATE_FILE_MODE, syncDir = true }: AtomicWriteOptions = {}): Promise<void> {
  const staged: Array<{ tmp: string; file: string }> = [];
  try {
    await Promise.all(
      files.map(async ({ file, data }) => {
        const tmp = tempNameFor(file);
        staged.push({ tmp, file });
        await writeAndSync(tmp, data, mode);
      }),
    );
    for (const { tmp, file } of staged) await rename(tmp, file);
  } catch (error) {
    await Promise.all(staged.map(({ tmp }) => unlink(tmp).catch(() => undefined)));
    throw error;
  }
  if (syncDir) await Promise.all([...new Set(files.map(({ file }) => path.dirname(file)))].map(fsyncDir));
}

async function writeAndSync(file: string, data: string | Uint8Array, mode: number): Promise<void> {
  // 'wx': the temp name is unique; failing on an existing file guards against a logic error.
  const handle = await open(file, 'wx', mode);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** fsync a directory so entries created, renamed or removed in it are durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } catch (error) {
    // Some filesystems (and non-Linux platforms) refuse fsync on directories; the rename is still atomic.
    if (!isErrno(error, 'EINVAL', 'EISDIR', 'ENOTSUP', 'EPERM')) throw error;
  } finally {
    await handle.close();
  }
}

/** Removes a file durably. Returns false if it did not exist. */
export async function removeFileDurable(file: string): Promise<boolean> {
  try {
    await unlink(file);
  } catch (error) {
    if (isErrno(error, 'ENOENT')) return false;
    throw error;
  }
  await fsyncDir(path.dirname(file));
  return true;
}

/**
 * Creates `dir` (and missing parents) with `mode`, fsyncing each new entry's parent so the
 * directory survives a power loss before files are renamed into it.
 */
export async function mkdirDurable(dir: string, mode = PRIVATE_DIR_MODE): Promise<void> {
  const first = await mkdir(dir, { recursive: true, mode });
  if (first === undefined) return;
  // `first` is the topmost directory created; sync its parent and every directory below it.
  let current = path.dirname(first);
  const chain = path.relative(current, dir).split(path.sep);
  for (const part of chain) {
    await fsyncDir(current);
    current = path.join(current, part);
  }
}

/**
 * Removes a directory tree so that, at every instant, it is either fully present or absent under
 * its name: rename it to a hidden trash name in the same parent (atomic), fsync, then delete.
 * A crash mid-delete leaves only a `.trash-*` entry, which `trashPrefix` lets a recovery sweep find.
 * Returns false if `dir` did not exist.
 */
export async function removeDirAtomic(dir: string, trashPrefix = '.trash-'): Promise<boolean> {
  const trash = path.join(path.dirname(dir), `${trashPrefix}${path.basename(dir)}-${randomBytes(4).toString('hex')}`);
  try {
    await rename(dir, trash);
  } catch (error) {
    if (isErrno(error, 'ENOENT')) return false;
    throw error;
  }
  await fsyncDir(path.dirname(dir));
  await rm(trash, { recursive: true, force: true });
  return true;
}

/** Deletes temp files a crash left in `dir` (not recursive). Returns how many were removed. */
export async function cleanTempFiles(dir: string): Promise<number> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (error) {
    if (isErrno(error, 'ENOENT')) return 0;
    throw error;
  }
  const temps = names.filter(isTempName);
  await Promise.all(temps.map((name) => unlink(path.join(dir, name)).catch(() => undefined)));
  return temps.length;
}

/** The file's bytes, or null if it does not exist. */
export async function readFileIfExists(file: string): Promise<Buffer | null> {
  try {
    return await readFile(file);
  } catch (error) {
    if (isErrno(error, 'ENOENT')) return null;
    throw error;
  }
}

export function isErrno(error: unknown, ...codes: string[]): error is NodeJS.ErrnoException {
  return typeof error === 'object' && error !== null && codes.includes((error as NodeJS.ErrnoException).code ?? '');
}
