import type { DatabaseSync } from 'node:sqlite';
import { ArbiterError } from '../errors.ts';

const SCHEMA_VERSION = 1;

/**
 * Filterable columns are indexed together with timestamp (seq, the rowid, is appended to
 * every index by SQLite): a filter plus "newest first" plus the keyset cursor is then one
 * index range scan. Reason codes live in their own table, with the timestamp copied in,
 * so `reason = X` is an index range too.
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

CREATE TABLE IF NOT EXISTS decision_reasons (
  seq INTEGER NOT NULL,
  code TEXT NOT NULL,
  timestamp INTEGER NOT NULL,
  PRIMARY KEY (seq, code)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS decision_reasons_by_code ON decision_reasons (code, timestamp, seq);

CREATE TABLE IF NOT EXISTS checkpoints (
  seq INTEGER PRIMARY KEY,
  hash TEXT NOT NULL,
  record_count INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  key_id TEXT NOT NULL,
  signature TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS anchors (
  seq INTEGER PRIMARY KEY,
  hash TEXT NOT NULL,
  record_count INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  key_id TEXT NOT NULL,
  signature TEXT NOT NULL
);
`;

/** Creates the tables on a new database and refuses one written by a newer Arbiter. */
export function migrate(db: DatabaseSync): void {
  const { user_version: version } = db.prepare('PRAGMA user_version').get() as { user_version: number };
  if (version > SCHEMA_VERSION) {
    throw new ArbiterError(
      'decision_log_schema_unsupported',
      `decision log schema version ${version} is newer than this Arbiter supports (${SCHEMA_VERSION})`,
    );
  }
  db.exec('BEGIN IMMEDIATE');
  try {
    db.exec(DDL);
    db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
    db.exec('COMMIT');
  } catch (error) {
    db.exec('ROLLBACK');
    throw error;
  }
}
