import { lstatSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { Config } from './config/schema.ts';
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
function lockStateFile(path: string, key: string): () => void {
  // Canonical, as lockStateFiles compares paths: `store/`, `store` and a symlink to it must
  // lock one file, or two servers would share a state file spelled two ways.
  const lockPath = `${canonicalPath(path)}.lock`;
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

/** A state file or directory the configuration names, by its key. */
export interface StatePath {
  path: string;
  key: string;
  /** SQLite databases are files; the bundle store is a directory. */
  kind: 'file' | 'directory';
  /** What the file is, as a message about one of the wrong kind says it (default: a database file): keys are files too. */
  file?: string;
}

/** The state start-up locks and opens: the data store, the decision log (when enabled) and the bundle store. */
export function statePaths(config: Config): StatePath[] {
  return [
    { path: config.data.path, key: 'data.path', kind: 'file' },
    ...(config.decision_log.enabled ? [{ path: config.decision_log.path, key: 'decision_log.path', kind: 'file' as const }] : []),
    // Two servers on one store would overwrite each other's index, and retention in one would
    // delete archives only the other's index names.
    { path: config.bundles.store, key: 'bundles.store', kind: 'directory' },
  ];
}

/**
 * Refuses, naming its key, a state path that holds the other kind (a directory where a database
 * goes: SQLite says only "disk I/O error") or lies under something that is not a directory.
 * Read-only, so config check asks it too; whether this user may create the path is left to
 * start-up (config check may run as another user).
 */
export function checkStatePath({ path, key, kind, file = 'a database file' }: StatePath): void {
  if (path === ':memory:') return;
  for (let at = resolve(path); ; at = dirname(at)) {
    let isDirectory: boolean;
    try {
      isDirectory = statSync(at).isDirectory();
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      // Not there yet (or under a file, which the next step up finds): it is created at start.
      if ((code === 'ENOENT' || code === 'ENOTDIR') && dirname(at) !== at) continue;
      return;
    }
    const problem =
      at === resolve(path)
        ? isDirectory === (kind === 'directory') ? undefined : `${path} is ${isDirectory ? 'a directory' : 'not a directory'}: ${key} names ${kind === 'file' ? file : 'a directory'} (created if missing)`
        : isDirectory ? undefined : `${at} is not a directory, so ${path} cannot be created in it`;
    if (problem !== undefined) throw new ConfigError([{ path: key, message: problem }]);
    return;
  }
}

/**
 * Locks each state file; releases what it took if one is refused. Two keys naming one file
 * are refused too: the data store and the decision log each take a whole SQLite file (its
 * user_version included), so sharing one, the second would find the file was changed outside it.
 */
export function lockStateFiles(files: readonly StatePath[]): () => void {
  const releases: (() => void)[] = [];
  const releaseAll = () => {
    for (const release of releases.splice(0).reverse()) release();
  };
  const seen = new Map<string, string>();
  try {
    for (const file of files) {
      const { path, key } = file;
      if (path === ':memory:') continue;
      checkStatePath(file);
      const other = seen.get(canonicalPath(path));
      if (other !== undefined) {
        throw new ConfigError([{ path: key, message: `${path} is also ${other}: each state file belongs to one key, give ${key} a file of its own` }]);
      }
      seen.set(canonicalPath(path), key);
      releases.push(lockStateFile(path, key));
    }
  } catch (error) {
    releaseAll();
    throw error;
  }
  return releaseAll;
}

const SQLITE_BUSY = 5;

/**
 * The absolute path with every symlink resolved. A state file or directory not created yet is
 * placed under its nearest existing ancestor, itself resolved (a symlinked state directory);
 * a symlink to one not created yet is followed to where it points.
 */
function canonicalPath(path: string, hops = 0): string {
  const absolute = resolve(path);
  const missing: string[] = [];
  for (let existing = absolute; ; existing = dirname(existing)) {
    try {
      return join(realpathSync(existing), ...missing);
    } catch {
      // Not there, or a symlink to what is not there yet (realpath refuses both).
    }
    const target = danglingLinkTarget(existing);
    if (target !== undefined && hops < MAX_LINK_HOPS) return canonicalPath(join(resolve(dirname(existing), target), ...missing), hops + 1);
    if (dirname(existing) === existing) return absolute;
    missing.unshift(basename(existing));
  }
}

const MAX_LINK_HOPS = 40;

function danglingLinkTarget(path: string): string | undefined {
  try {
    return lstatSync(path).isSymbolicLink() ? readlinkSync(path) : undefined;
  } catch {
    return undefined;
  }
}
