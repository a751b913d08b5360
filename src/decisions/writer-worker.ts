/**
 * Entry point of the decision log's writer thread. It owns the only write connection:
 * hashing, inserting, fsyncing and pruning happen here, so the event loop that serves
 * requests only prepares records and settles promises.
 */
import { DatabaseSync } from 'node:sqlite';
import { parentPort, workerData } from 'node:worker_threads';
import { pruneStep, pruneTarget } from './retention.ts';
import { migrate } from './schema.ts';
import { ChainWriter, sealChainStart } from './writer.ts';
import type { PreparedDecision } from './writer.ts';
import { decodeBatch } from './writer-thread.ts';
import type { CommitResult, WriterOpened, WriterReply, WriterRequest, WriterSetup } from './writer-thread.ts';

/** SQLite primary result codes a record causes by itself (a duplicate decision_id, a body too big): retrying it cannot help. */
const SQLITE_TOOBIG = 18;
const SQLITE_CONSTRAINT = 19;

const setup = workerData as WriterSetup;
const port = parentPort;
if (!port) throw new Error('writer-worker.ts runs as a worker thread only');

const db = new DatabaseSync(setup.path, { timeout: setup.busyTimeoutMs });
db.exec('PRAGMA journal_mode = WAL');
db.exec(`PRAGMA synchronous = ${setup.synchronous}`);
// Ten indexes take inserts all over their b-trees; the default 2 MB page cache would
// re-read index pages from the OS for almost every insert once the log is large.
db.exec('PRAGMA cache_size = -65536');
// A checkpoint copies the WAL into the database and fsyncs it, inside whichever commit
// crosses the threshold. At the default (1,000 pages, ~4 MB) a busy log checkpoints at
// almost every group commit; at 10,000 pages it checkpoints several times less often and
// writes each hot index page once per checkpoint instead of once per commit. The WAL is
// then cut back to 64 MB, so one burst does not leave a large file behind.
db.exec('PRAGMA wal_autocheckpoint = 10000');
db.exec('PRAGMA journal_size_limit = 67108864');
// Retention deletes records so that what they held is gone: without this, SQLite keeps the
// bytes of deleted rows (bodies, index entries, reason codes) in free pages, readable in the
// file until reused. Decisions never delete otherwise, so it costs pruning alone.
db.exec('PRAGMA secure_delete = ON');
migrate(db, (migrating) => sealChainStart(migrating, setup.key, setup.checkpoint.everyRecords));
// Keeps the planner's statistics current, so a query with several filters is driven by
// its most selective index (SQLite's recommendation for long-lived connections).
db.exec('PRAGMA optimize = 0x10002');
const writer = new ChainWriter(db, setup.key, setup.checkpoint);
const loggedAlready = db.prepare('SELECT 1 FROM decisions WHERE decision_id = ?');
let closing = false;

port.on('message', (request: WriterRequest) => {
  void handle(request).then(
    (result) => reply({ id: request.id, ok: true, result }),
    (error: Error) => reply({ id: request.id, ok: false, error: { message: error.message } }),
  );
});
// What the chain looked like when opened, before this writer signs anything: see WriterThread.unsignedAtOpen.
const opened: WriterOpened = { unsignedTail: writer.unsignedTail };
reply({ id: 0, ok: true, result: opened });

function reply(message: WriterReply): void {
  port?.postMessage(message);
}

async function handle(request: WriterRequest): Promise<unknown> {
  switch (request.op) {
    case 'commit':
      return commit(decodeBatch(request.batch));
    case 'checkpoint':
      return writer.checkpoint(Date.now(), request.force);
    case 'probe':
      return writer.probe();
    case 'prune':
      return prune(request);
    case 'close':
      closing = true;
      try {
        writer.seal(Date.now());
        db.exec('PRAGMA optimize');
      } finally {
        // A checkpoint that cannot be signed now (a lock, a full disk) is reported, and the
        // connection still goes: the next writer signs the records it left unsigned.
        db.close();
      }
      return undefined;
  }
}

function commit(batch: readonly PreparedDecision[]): CommitResult {
  const head = writer.head;
  try {
    return { firstSeq: head.seq + 1, prevHash: head.hash, hashes: writer.commit(batch).join(''), failures: [] };
  } catch (error) {
    // A record the database refuses fails alone, not its batch-mates: retry them one by one.
    // Anything else (I/O, lock, full disk) leaves the whole batch to be tried again.
    if (refusesRecord(error)) return commitOneByOne(batch);
    return { firstSeq: head.seq + 1, prevHash: head.hash, hashes: '', failures: [], unfinished: { from: 0, message: (error as Error).message } };
  }
}

function commitOneByOne(batch: readonly PreparedDecision[]): CommitResult {
  const head = writer.head;
  const hashes: string[] = [];
  const result: CommitResult = { firstSeq: head.seq + 1, prevHash: head.hash, hashes: '', failures: [] };
  for (const [index, prepared] of batch.entries()) {
    try {
      hashes.push(...writer.commit([prepared]));
    } catch (error) {
      let message = (error as Error).message;
      // A constraint is the record's own fault only when its decision_id is taken. Otherwise
      // the log moved under this writer (another process chained on: its seq is taken), and
      // dropping the record would lose a decision relaxed mode has already answered.
      const ownFault = isConstraint(error) ? loggedAlready.get(prepared.decision_id) !== undefined : refusesRecord(error);
      if (!ownFault) {
        if (isConstraint(error)) message += ': the log was changed by another writer (is another Arbiter process using this decision_log.path?)';
        // The rest stays in order for the next attempt, chained on from what did commit.
        result.unfinished = { from: index, message };
        break;
      }
      result.failures.push({ index, message });
    }
  }
  result.hashes = hashes.join('');
  return result;
}

function refusesRecord(error: unknown): boolean {
  const code = ((error as { errcode?: number }).errcode ?? 0) % 256;
  return code === SQLITE_CONSTRAINT || code === SQLITE_TOOBIG;
}

function isConstraint(error: unknown): boolean {
  return ((error as { errcode?: number }).errcode ?? 0) % 256 === SQLITE_CONSTRAINT;
}

/** Deletes in short transactions and lets commits in between, so pruning never stalls decisions. */
async function prune(request: WriterRequest & { op: 'prune' }): Promise<number> {
  const target = pruneTarget(db, request.policy, request.now);
  let pruned = 0;
  while (!closing) {
    const { deleted, droppedReasonSets } = pruneStep(db, setup.key, target, request.stepRecords, request.now);
    // Before any commit can run (the next await): a cached id of a deleted set must not be reused.
    writer.forgetReasonSets(droppedReasonSets);
    if (deleted === 0) break;
    pruned += deleted;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  if (pruned > 0 && !closing) {
    db.exec('PRAGMA optimize');
    // The WAL still holds the pruned records' pages as they were written, until SQLite reuses
    // it: copy it into the database (where secure_delete zeroed them) and cut it to nothing.
    // Best effort: a reader mid-query makes it stop short (SQLITE_BUSY in its row, no throw),
    // and the next prune tries again.
    db.prepare('PRAGMA wal_checkpoint(TRUNCATE)').get();
  }
  return pruned;
}
