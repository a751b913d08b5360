import type { DatabaseSync } from 'node:sqlite';
import { ArbiterError } from '../errors.ts';

const SCHEMA_VERSION = 3;

/**
 * Filterable columns are indexed together with timestamp (seq, the rowid, is appended to
 * every index by SQLite): a filter plus "newest first" plus the keyset cursor is then one
 * index range scan.
 *
 * Reason codes are indexed through the set of codes a decision carries. Decisions repeat
 * a few combinations (an allow of the default policy always explains itself with the same
 * six codes), so each distinct set is stored once in reason_sets, reason_set_codes says
 * which sets contain a code, and a decision carries the id of its set: one index entry per
 * decision instead of two per reason (which cost the writer ~18 µs per allow). A filter on
 * a code scans the decisions of each set containing it, newest first, and merges them.
 */
const DDL = `
CREATE TABLE IF NOT EXISTS decisions (
  seq INTEGER PRIMARY KEY,
  decision_id TEXT NOT NULL UNIQUE,
  timestamp INTEGER NOT NULL,
  endpoint TEXT NOT NULL,
  caller TEXT,
  bundle TEXT,
  revision TEXT,
  iss TEXT,
  sub TEXT,
  client_id TEXT,
  action TEXT,
  resource_type TEXT,
  resource_id TEXT,
  allow INTEGER NOT NULL,
  reason_set INTEGER NOT NULL,
  body TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_by_time ON decisions (timestamp);
CREATE INDEX IF NOT EXISTS decisions_by_iss ON decisions (iss, timestamp);
CREATE INDEX IF NOT EXISTS decisions_by_sub ON decisions (sub, timestamp);
CREATE INDEX IF NOT EXISTS decisions_by_client_id ON decisions (client_id, timestamp);
CREATE INDEX IF NOT EXISTS decisions_by_action ON decisions (action, timestamp);
CREATE INDEX IF NOT EXISTS decisions_by_resource_type ON decisions (resource_type, timestamp);
CREATE INDEX IF NOT EXISTS decisions_by_resource_id ON decisions (resource_id, timestamp);
CREATE INDEX IF NOT EXISTS decisions_by_allow ON decisions (allow, timestamp);
CREATE INDEX IF NOT EXISTS decisions_by_bundle ON decisions (bundle, timestamp);
CREATE INDEX IF NOT EXISTS decisions_by_revision ON decisions (revision, timestamp);
CREATE INDEX IF NOT EXISTS decisions_by_reason_set ON decisions (reason_set, timestamp);

CREATE TABLE IF NOT EXISTS reason_sets (
  id INTEGER PRIMARY KEY,
  -- JSON array of the set's distinct codes, sorted
  codes TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS reason_set_codes (
  code TEXT NOT NULL,
  reason_set INTEGER NOT NULL,
  PRIMARY KEY (code, reason_set)
) WITHOUT ROWID;

-- next_by (signed, see SignedMark): the seq by which the next checkpoint follows; NULL in
-- marks signed before version 3, which did not sign one.
CREATE TABLE IF NOT EXISTS checkpoints (
  seq INTEGER PRIMARY KEY,
  hash TEXT NOT NULL,
  record_count INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  key_id TEXT NOT NULL,
  signature TEXT NOT NULL,
  next_by INTEGER
);

CREATE TABLE IF NOT EXISTS anchors (
  seq INTEGER PRIMARY KEY,
  hash TEXT NOT NULL,
  record_count INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  key_id TEXT NOT NULL,
  signature TEXT NOT NULL,
  next_by INTEGER
);
`;

/** The key a set of reason codes is stored and looked up by: its distinct codes, sorted, as JSON. */
export function reasonSetKey(codes: readonly string[]): string {
  return JSON.stringify([...new Set(codes)].sort());
}

/**
 * Creates the tables on a new database, upgrades one written by an older Arbiter (in one
 * transaction: a failed upgrade leaves it as it was) and refuses one written by a newer.
 *
 * `seal` runs inside that transaction when the log is created or upgraded from before
 * version 3: it signs what version 3 verifies from (sealChainStart), so no crash can leave
 * a version 3 log without it.
 */
export function migrate(db: DatabaseSync, seal?: (db: DatabaseSync) => void): void {
  const { user_version: version } = db.prepare('PRAGMA user_version').get() as { user_version: number };
  if (version > SCHEMA_VERSION) {
    throw new ArbiterError(
      'decision_log_schema_unsupported',
      `decision log schema version ${version} is newer than this Arbiter supports (${SCHEMA_VERSION})`,
    );
  }
  db.exec('BEGIN IMMEDIATE');
  try {
    if (!tablesMatchVersion(db, version)) {
      throw new ArbiterError(
        'decision_log_schema_mismatch',
        `the decision log's schema version ${version} does not match its tables: the file was changed outside Arbiter or written by another version (keep it as evidence and start on another decision_log.path: arbiter decisions verify asks a server, and none opens this file until its user_version is restored)`,
      );
    }
    if (version === 0 || version === SCHEMA_VERSION) {
      db.exec(DDL);
    } else {
      if (version === 1) upgradeFromVersion1(db);
      upgradeFromVersion2(db);
    }
    if (version < SCHEMA_VERSION) seal?.(db);
    db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
    db.exec('COMMIT');
  } catch (error) {
    db.exec('ROLLBACK');
    throw error;
  }
}

/** Tables some version of the schema has; a new log (version 0) has none of them. */
const LOG_TABLES = ['decisions', 'decision_reasons', 'reason_sets', 'reason_set_codes', 'checkpoints', 'anchors'];

/**
 * Whether the tables are those of `version`, told by what each upgrade changes. Upgraded or
 * created as another version, they would fail half-way (a column added twice) or worse: a log
 * taken for a new one (its user_version set to 0) has its chain start and head signed again,
 * as found, which would vouch for records rewritten with their hashes recomputed.
 */
function tablesMatchVersion(db: DatabaseSync, version: number): boolean {
  const present = new Set(
    (db.prepare(`SELECT name FROM sqlite_schema WHERE type = 'table' AND name IN (${LOG_TABLES.map(() => '?').join(', ')})`).all(...LOG_TABLES) as { name: string }[]).map(
      ({ name }) => name,
    ),
  );
  const hasColumn = (table: string, column: string) => db.prepare('SELECT 1 FROM pragma_table_info(?) WHERE name = ?').get(table, column) !== undefined;
  switch (version) {
    case 0:
      return present.size === 0;
    case 1:
      return present.has('decisions') && present.has('decision_reasons') && !hasColumn('decisions', 'reason_set');
    case 2:
      return present.has('decisions') && !present.has('decision_reasons') && hasColumn('decisions', 'reason_set') && !hasColumn('checkpoints', 'next_by') && !hasColumn('anchors', 'next_by');
    default:
      return !present.has('decision_reasons') && hasColumn('decisions', 'reason_set') && hasColumn('checkpoints', 'next_by') && hasColumn('anchors', 'next_by');
  }
}

/**
 * Version 1 indexed reason codes in a decision_reasons table (a row per code per decision).
 * Each decision gets the id of its set of codes instead; the table is then dropped. Once the
 * column exists, DDL creates the tables version 2 adds (its IF NOT EXISTS keeps the rest as
 * it is); the version 2 upgrade follows.
 */
function upgradeFromVersion1(db: DatabaseSync): void {
  db.exec('ALTER TABLE decisions ADD COLUMN reason_set INTEGER NOT NULL DEFAULT 0');
  db.exec(DDL);
  const sets = new Map<string, number>();
  const insertSet = db.prepare('INSERT INTO reason_sets (id, codes) VALUES (?, ?)');
  const insertCode = db.prepare('INSERT INTO reason_set_codes (code, reason_set) VALUES (?, ?)');
  const assign = db.prepare('UPDATE decisions SET reason_set = ? WHERE seq = ?');
  const rows = db
    .prepare(`SELECT d.seq, (SELECT json_group_array(r.code) FROM decision_reasons r WHERE r.seq = d.seq) AS codes FROM decisions d`)
    .all() as { seq: number; codes: string }[];
  for (const { seq, codes } of rows) {
    const list = JSON.parse(codes) as string[];
    const key = reasonSetKey(list);
    let id = sets.get(key);
    if (id === undefined) {
      id = sets.size + 1;
      sets.set(key, id);
      insertSet.run(id, key);
      for (const code of new Set(list)) insertCode.run(code, id);
    }
    assign.run(id, seq);
  }
  db.exec('DROP TABLE decision_reasons');
}

/**
 * Version 2 signed checkpoints and anchors without the bound on the next checkpoint.
 * Their rows keep next_by NULL (their signatures do not cover one); the seal run after
 * the upgrade signs the bound the log is verified from.
 */
function upgradeFromVersion2(db: DatabaseSync): void {
  db.exec('ALTER TABLE checkpoints ADD COLUMN next_by INTEGER');
  db.exec('ALTER TABLE anchors ADD COLUMN next_by INTEGER');
}
