/**
 * Entry point of the thread that runs SQLite's integrity check of the decisions table for
 * verify: it reads every index entry against its row, seconds for a large log, which must
 * not hold the event loop that serves decisions.
 */
import { DatabaseSync } from 'node:sqlite';
import { parentPort, workerData } from 'node:worker_threads';

const { path } = workerData as { path: string };
const db = new DatabaseSync(path, { readOnly: true });
try {
  const rows = db.prepare('PRAGMA integrity_check(decisions)').all() as { integrity_check: string }[];
  parentPort?.postMessage(rows.map((row) => row.integrity_check));
} finally {
  db.close();
}
