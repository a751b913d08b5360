import { dirname, resolve } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { ConfigError } from './errors.ts';
import { ensurePrivateDatabaseFile, makePrivateDirSync } from './private-files.ts';

/**
 * Holds `<path>.lock` for as long as this server uses the state file at `path`, and refuses it
 * when another server holds it. SQLite would let two processes share the file, but each keeps
 * state in memory that only its own writes update: revocations and live data written through one
 * never reach the other's decisions (a revoked token stays accepted there), and once one has
 * chained a decision onto the log, every commit of the other fails (audit_unavailable).
 *
 * The lock is SQLite's write lock on an empty database file: a POSIX advisory lock, which
 * the system releases when the process ends, however it ends (kill -9 included), so a crashed
 * server never leaves a stale lock behind. Returns the release.
 */
export function lockStateFile(path: string, key: string): () => void {
  // Resolved, as lockStateFiles compares paths: `store/` must lock the same file as `store`
  // (not `store/.lock`), or two servers would share a bundles.store spelled two ways.
  const lockPath = `${resolve(path)}.lock`;
  let lock: DatabaseSync | undefined;
  try {
    makePrivateDirSync(dirname(lockPath));
    ensurePrivateDatabaseFile(lockPath);
    lock = new DatabaseSync(lockPath, { timeout: 0 });
    // A write transaction never committed: one holder at a time. The journal in memory, so
    // holding it leaves no -journal file beside the lock.
    lock.exec('PRAGMA journal_mode = MEMORY; BEGIN IMMEDIATE');
  } catch (error) {
    lock?.close();
    const busy = (error as { errcode?: number }).errcode === SQLITE_BUSY;
    throw new ConfigError([
      {
        path: key,
        message: busy
          ? `${path} is in use by another Arbiter process (it holds ${lockPath}): stop that one first, or give this one its own ${key}`
          : `cannot use ${path}: its lock file ${lockPath} cannot be created or locked: ${(error as Error).message}`,
      },
    ]);
  }
  const held = lock;
  return () => {
    if (held.isOpen) held.close();
  };
}

/** Locks each state file once, whichever keys name it; releases what it took if one is refused. */
export function lockStateFiles(files: readonly { path: string; key: string }[]): () => void {
  const releases: (() => void)[] = [];
  const releaseAll = () => {
    for (const release of releases.splice(0).reverse()) release();
  };
  const seen = new Set<string>();
  try {
    for (const { path, key } of files) {
      if (path === ':memory:' || seen.has(resolve(path))) continue;
      seen.add(resolve(path));
      releases.push(lockStateFile(path, key));
    }
  } catch (error) {
    releaseAll();
    throw error;
  }
  return releaseAll;
}

const SQLITE_BUSY = 5;
