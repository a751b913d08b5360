import { randomUUID } from 'node:crypto';
import { closeSync, fsyncSync, linkSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { mkdir } from 'node:fs/promises';

/**
 * Arbiter's state (live data and revocations, the decision log, stored bundles, keys) is for
 * its own user alone, whatever the umask: a directory others can write lets them delete a
 * database (and with it the audit trail or every revocation), and a database others can read
 * shows what decision_log.mask hides. Directories Arbiter creates are 0700; existing ones are
 * left as they are.
 */
const PRIVATE_DIR_MODE = 0o700;

export function makePrivateDirSync(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
}

export async function makePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
}

/**
 * Creates an empty SQLite database file with mode 0600 unless it exists, before SQLite opens
 * it: SQLite would create it 0644 (less the umask), and its -wal and -shm files copy the
 * database file's mode.
 */
export function ensurePrivateDatabaseFile(path: string): void {
  try {
    closeSync(openSync(path, 'wx', 0o600));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
}

/** A temporary file of createPrivateFileWhole older than this was left by a crash, not by a start racing this one. */
const STALE_TEMP_MS = 60_000;

/** Filesystems without hard links (some FUSE and SMB mounts) answer link() with these. */
const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS']);

/**
 * Creates `path` holding `content`, mode 0600, whole or not at all, and on disk (its bytes and
 * its directory entry fsynced) before it returns: written under a name of its own, then linked
 * into place. A crash never leaves a key file cut short (every start would stop on it), and
 * when another process created `path` first, its file is kept: `false`, read that one instead.
 * What a crash left under a temporary name (a private key) is deleted by the next call. On a
 * filesystem without hard links the file is created in place, as exclusive but not crash-safe.
 */
export function createPrivateFileWhole(path: string, content: string): boolean {
  removeStaleTemporaries(path);
  const temp = `${path}.${randomUUID()}.tmp`;
  writeNewFile(temp, content);
  try {
    linkSync(temp, path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? '';
    if (code === 'EEXIST') return false;
    if (!NO_HARD_LINKS.has(code)) throw error;
    // No link: exclusive creation in place, as exclusive but not crash-safe.
    try {
      writeNewFile(path, content);
    } catch (inPlace) {
      if ((inPlace as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw inPlace;
    }
  } finally {
    rmSync(temp, { force: true });
  }
  const dir = openSync(dirname(path), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
  return true;
}

/** Creates `path` (mode 0600; EEXIST when it exists) holding `content`, fsynced. */
function writeNewFile(path: string, content: string): void {
  const fd = openSync(path, 'wx', 0o600);
  try {
    writeFileSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function removeStaleTemporaries(path: string): void {
  const prefix = `${basename(path)}.`;
  const dir = dirname(path);
  for (const name of readdirSync(dir)) {
    if (!name.startsWith(prefix) || !/^[0-9a-f-]{36}\.tmp$/.test(name.slice(prefix.length))) continue;
    const temp = join(dir, name);
    try {
      if (Date.now() - statSync(temp).mtimeMs > STALE_TEMP_MS) rmSync(temp, { force: true });
    } catch {
      // Gone meanwhile: the start that wrote it linked or removed it.
    }
  }
}

/**
 * A private file's JSON (a key), or undefined when its text is not JSON. Said without V8's
 * SyntaxError, which quotes the text around the fault: part of the private key, in an error
 * start-up prints and logs. A file that cannot be read throws as readFileSync does.
 */
export function readPrivateJson(path: string): unknown {
  const text = readFileSync(path, 'utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    if (error instanceof SyntaxError) return undefined;
    throw error;
  }
}
