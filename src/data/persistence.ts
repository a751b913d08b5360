import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { ArbiterError, ConfigError } from '../errors.ts';
import { ensurePrivateDatabaseFile, makePrivateDirSync } from '../private-files.ts';

/** Bumped when the tables change shape; a file from a newer Arbiter is refused, not misread. */
const SCHEMA_VERSION = 1;

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS live_documents (
    name    TEXT PRIMARY KEY,
    json    TEXT NOT NULL,
    meta    TEXT NOT NULL,
    version INTEGER NOT NULL
  ) STRICT;
  CREATE TABLE IF NOT EXISTS live_data_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
  ) STRICT;
  CREATE TABLE IF NOT EXISTS revocations (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    value      TEXT,
    iss        TEXT,
    before     INTEGER,
    reason     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    created_by TEXT
  ) STRICT;
  -- The greatest revocation id ever minted, deleted or not: ids of the next run sort after it.
  CREATE TABLE IF NOT EXISTS revocation_ids (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    last TEXT NOT NULL
  ) STRICT;
  -- Documents data.seed has loaded once: a seed never brings back a document deleted since.
  CREATE TABLE IF NOT EXISTS seeded_documents (
    name TEXT PRIMARY KEY
  ) STRICT;
  CREATE INDEX IF NOT EXISTS revocations_by_kind ON revocations (kind, id);
  CREATE INDEX IF NOT EXISTS revocations_by_expiry ON revocations (expires_at) WHERE expires_at IS NOT NULL;
`;

/**
 * Opens (creating if needed) the SQLite file that holds live data documents and
 * revocations. WAL with `synchronous = FULL` makes every commit durable before it
 * returns, which is what lets both stores acknowledge a write only after it survives a
 * crash. Throws a ConfigError naming data.path when the file cannot be opened or prepared.
 */
export function openDataDatabase(path: string): DatabaseSync {
  let db: DatabaseSync | undefined;
  try {
    if (path !== ':memory:') {
      makePrivateDirSync(dirname(path));
      ensurePrivateDatabaseFile(path);
    }
    const opened = new DatabaseSync(path);
    db = opened;
    const { journal_mode: journalMode } = opened.prepare('PRAGMA journal_mode = WAL').get() as { journal_mode: string };
    if (path !== ':memory:' && journalMode !== 'wal') throw new Error(`journal_mode is ${journalMode}, WAL is required`);
    opened.exec('PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;');
    const { user_version: found } = opened.prepare('PRAGMA user_version').get() as { user_version: number };
    if (found > SCHEMA_VERSION) {
      throw new ArbiterError('data_store_incompatible', `${path} has schema version ${found}; this Arbiter understands up to ${SCHEMA_VERSION}`);
    }
    transaction(opened, () => {
      opened.exec(SCHEMA);
      opened.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
    });
    return opened;
  } catch (error) {
    db?.close();
    if (error instanceof ArbiterError) throw error;
    // Only start-up opens it, from data.path: name the key to fix, as for every other state file.
    throw new ConfigError([{ path: 'data.path', message: `cannot open the data store at ${path}: ${(error as Error).message}` }]);
  }
}

/**
 * The documents data.seed would not load into the store at `path`: those it holds and those it
 * was seeded with once (deleted since). Read only: `config check` asks it.
 */
export function documentsNotToSeed(path: string): Set<string> {
  return readExistingStore(path, new Set<string>(), (db) => {
    const names = (table: string) => (db.prepare(`SELECT name FROM ${table}`).all() as { name: string }[]).map((row) => row.name);
    const seeded = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'seeded_documents'").get() ? names('seeded_documents') : [];
    return new Set([...names('live_documents'), ...seeded]);
  });
}

/**
 * The bytes of live data the store at `path` holds, as the store counts them against
 * data.max_size_bytes. Read only: `config check` asks it.
 */
export function storedLiveDataBytes(path: string): number {
  return readExistingStore(path, 0, (db) => {
    const rows = db.prepare('SELECT json FROM live_documents').all() as { json: string }[];
    return rows.reduce((total, row) => total + Buffer.byteLength(row.json), 0);
  });
}

/**
 * `read` on the store at `path` opened read only, never creating it: `none` for a store that
 * does not exist yet or is not (yet) an Arbiter data store. A file that cannot be opened throws.
 */
function readExistingStore<T>(path: string, none: T, read: (db: DatabaseSync) => T): T {
  if (path === ':memory:' || !existsSync(path)) return none;
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(path, { readOnly: true });
  } catch (error) {
    throw new Error(`cannot open the data store ${path}: ${(error as Error).message}`, { cause: error });
  }
  try {
    return read(db);
  } catch {
    return none;
  } finally {
    db.close();
  }
}

/** Runs `work` in one write transaction: committed (durably) if it returns, rolled back if it throws. */
export function transaction<T>(db: DatabaseSync, work: () => T): T {
  db.exec('BEGIN IMMEDIATE');
  try {
    const result = work();
    db.exec('COMMIT');
    return result;
  } catch (error) {
    if (db.isTransaction) db.exec('ROLLBACK');
    throw error;
  }
}
