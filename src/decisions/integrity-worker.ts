/**
 * Entry point of the thread that runs SQLite's integrity check of what queries read for
 * verify: it reads every index entry against its row, seconds for a large log, which must
 * not hold the event loop that serves decisions.
 */
import { DatabaseSync } from 'node:sqlite';
import { parentPort, workerData } from 'node:worker_threads';

/**
 * The decisions table with its indexes, and reason_set_codes: a reason filter looks its sets
 * up by code in that table's own b-tree, which verify's walk reads in full (every entry, in
 * whatever order it is stored) and so cannot find out of order.
 */
const CHECKED_TABLES = ['decisions', 'reason_set_codes'];

const { path } = workerData as { path: string };
const db = new DatabaseSync(path, { readOnly: true });
try {
  const messages = CHECKED_TABLES.flatMap((table) =>
    (db.prepare(`PRAGMA integrity_check(${table})`).all() as { integrity_check: string }[]).map((row) => row.integrity_check),
  );
  parentPort?.postMessage(messages);
} finally {
  db.close();
}
