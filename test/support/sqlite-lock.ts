import { DatabaseSync } from 'node:sqlite';

/**
 * Runs `body` while another connection holds an exclusive lock on the SQLite file at `path`,
 * as another process (or a disk that refuses writes) would keep Arbiter from writing it.
 * `release` ends the lock early, for tests of what happens once writes succeed again.
 */
export async function whileLocked<T>(path: string, body: (release: () => void) => Promise<T>): Promise<T> {
  const lock = new DatabaseSync(path);
  const release = () => {
    if (lock.isTransaction) lock.exec('ROLLBACK');
  };
  try {
    lock.exec('BEGIN EXCLUSIVE');
    return await body(release);
  } finally {
    release();
    lock.close();
  }
}
