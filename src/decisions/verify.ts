import { existsSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { pathToFileURL } from 'node:url';
import { withNumbers } from './big-integers.ts';
import { chainHash, GENESIS_HASH, markFromRow, markSignatureValid } from './chain.ts';
import type { CheckpointPublicKey, MarkRow, SignedMark } from './chain.ts';
import { decisionIndexProblems, problemSeq } from './integrity.ts';
import { deriveIndexColumns } from './record.ts';
import type { DecisionRecord, IndexColumns } from './record.ts';
import { reasonSetKey } from './schema.ts';

export type MismatchReason =
  /** The anchor the chain starts from (at genesis, or left by retention) is not signed by the checkpoint key. */
  | 'anchor_signature_invalid'
  /** There are records but no anchor to start from: it was deleted (with the checkpoint bound it signs). */
  | 'anchor_missing'
  /**
   * A record at or below the seq the chain starts from (the retention anchor's, or 0):
   * planted where nothing chains or signs it, yet get and queries would serve it.
   */
  | 'record_before_start'
  /** seq skips: records before this one were deleted (other than by retention). */
  | 'record_missing'
  /** prev_hash is not the hash of the record before. */
  | 'prev_hash_mismatch'
  /** The stored record (or its hash) was changed after it was chained. */
  | 'hash_mismatch'
  /** An index column says something the stored record does not (edited to mislead queries). */
  | 'index_mismatch'
  /**
   * An index of the decisions table no longer matches its rows, or reason_set_codes (the
   * index of reason codes) is stored out of order (SQLite's integrity check): edited in the
   * file, it hides this record (seq 0 for reason codes) from filtered queries or lookups by
   * id, or serves it for values it does not hold.
   */
  | 'index_corrupt'
  /** A checkpoint's signature is invalid (or made with another key). */
  | 'checkpoint_signature_invalid'
  /** A signed checkpoint names another hash for this record: the chain was rewritten. */
  | 'checkpoint_mismatch'
  /** A signed checkpoint covers records that are no longer there: the log was truncated. */
  | 'records_missing_at_end'
  /**
   * This record is at or past the next_by signed by the checkpoint (or anchor) before it,
   * and no checkpoint was signed with it: the writer never leaves one so, checkpoints
   * were deleted (as a rewrite without the key must).
   */
  | 'checkpoint_missing';

export interface VerifyReport {
  /** false when a record does not match, or when the checkpoint signatures could not be checked (not_checked). */
  ok: boolean;
  /** Records whose chain link was checked before the first mismatch (all of them when ok). */
  checked: number;
  checkpoints_verified: number;
  first_mismatch?: {
    /** The record at fault, or null when it no longer exists (a truncated tail, a bad anchor). */
    decision_id: string | null;
    seq: number;
    reason: MismatchReason;
  };
  /**
   * Offline verify without the checkpoint key only (the server always has it): the chain and
   * the checkpoints' hashes and bounds were checked, not the signatures, so a log rewritten
   * whole (hashes recomputed, checkpoints re-made) would pass. ok is false: nothing vouches for it.
   */
  not_checked?: 'checkpoint_signatures';
}

interface ChainRow {
  seq: number;
  decision_id: string;
  timestamp: number;
  endpoint: string;
  caller: string | null;
  bundle: string | null;
  revision: string | null;
  iss: string | null;
  sub: string | null;
  client_id: string | null;
  action: string | null;
  resource_type: string | null;
  resource_id: string | null;
  allow: number;
  reason_set: number;
  body: string;
  prev_hash: string;
  hash: string;
}

/** The reason sets a record's reason_set can point to, with those whose code index was edited. */
interface ReasonSets {
  keys: Map<number | bigint, string>;
  /** Sets that reason_set_codes files under other codes than their own: their records would be misfiled. */
  misfiled: Set<number | bigint>;
}

/** Rows handled between two yields to the event loop, so a long walk does not stall requests. */
const ROWS_PER_TURN = 2_000;

/**
 * Walks the whole chain in seq order, from the anchor (at genesis, or left by retention),
 * on its own connection inside one read transaction: a consistent snapshot even while
 * appends and pruning go on, streamed row by row rather than loaded.
 *
 * Besides each link, it checks the checkpoints are all there: the anchor and each
 * checkpoint sign next_by, the seq whose record the writer commits with the next
 * checkpoint at the latest (see ChainWriter). Checkpoints signed before schema version 3
 * carry none and leave the bound in force as it was.
 *
 * The walk reads rows; queries read indexes too, which SQLite trusts without looking at
 * the rows: a chain that holds is then checked to have indexes that match it.
 *
 * Without a key (offline, none given) the signatures are not checked: see not_checked.
 */
export async function verifyChain(path: string, key: CheckpointPublicKey | undefined): Promise<VerifyReport> {
  // On a thread of its own, beside the walk: seconds for a large log.
  const indexes = decisionIndexProblems(path);
  // A walk that finds a mismatch answers without it.
  indexes.catch(() => undefined);
  const report = await walkChain(path, key);
  // Not `ok`: a walk without the key (not_checked) still has its indexes checked.
  if (report.first_mismatch) return report;
  const problems = await indexes;
  if (problems.length === 0) return report;
  // The message names the row (its seq) when there is one; "wrong # of entries" names none.
  const seq = problems.map(problemSeq).find((found) => found !== undefined);
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const row = seq === undefined ? undefined : (db.prepare('SELECT decision_id FROM decisions NOT INDEXED WHERE seq = ?').get(seq) as { decision_id: string } | undefined);
    return { ...report, ok: false, first_mismatch: { decision_id: row?.decision_id ?? null, seq: seq ?? 0, reason: 'index_corrupt' } };
  } finally {
    db.close();
  }
}

/**
 * verifyChain on a log file no server of this process holds open: a backup copy, or the live
 * file while a server appends to it (`arbiter decisions verify --db`). Read-only either way.
 *
 * A log with a -wal file beside it may be in use: it is read as the server reads it, in WAL
 * mode, whose readers never block the writer. One without (closed cleanly, or copied alone)
 * holds everything in the file itself: it is read as immutable, taking no lock and leaving no
 * -wal/-shm files behind, which a read-only connection otherwise creates next to a copy. Should
 * a server open it meanwhile, its checkpoints may have changed pages under that lock-free walk:
 * it is then walked again, the WAL way.
 */
export async function verifyLogFile(path: string, key: CheckpointPublicKey | undefined): Promise<VerifyReport> {
  const wal = `${path}-wal`;
  if (existsSync(wal)) return verifyChain(path, key);
  const immutable = pathToFileURL(path);
  immutable.searchParams.set('immutable', '1');
  // A string: it also goes to the integrity check's worker thread, which a URL cannot.
  const report = await verifyChain(immutable.href, key);
  return existsSync(wal) ? verifyChain(path, key) : report;
}

/** The chain, its checkpoints and anchor, walked from the anchor in one read snapshot. */
async function walkChain(path: string, key: CheckpointPublicKey | undefined): Promise<VerifyReport> {
  // BigInts: node:sqlite throws on an integer past 2^53, and an edited file can hold one in any
  // integer column; read as integers(), it is a mismatch to report, not a walk that stops.
  const db = new DatabaseSync(path, { readOnly: true, readBigInts: true });
  try {
    db.exec('BEGIN');
    const anchorRow = integers(db.prepare('SELECT * FROM anchors ORDER BY seq DESC LIMIT 1').get()) as MarkRow | undefined;
    const anchor = anchorRow && markFromRow(anchorRow, 'anchor');
    if (!anchor) {
      // Every log has one from its creation (or upgrade to schema version 3) on. Without
      // it the first stretch has no signed bound: deleting it with the checkpoints must show.
      if (db.prepare('SELECT 1 FROM decisions LIMIT 1').get()) {
        return { ok: false, checked: 0, checkpoints_verified: 0, first_mismatch: { decision_id: null, seq: 0, reason: 'anchor_missing' } };
      }
    } else if (key && !markSignatureValid(anchor, key)) {
      return { ok: false, checked: 0, checkpoints_verified: 0, first_mismatch: { decision_id: null, seq: anchor.seq, reason: 'anchor_signature_invalid' } };
    }
    const start = anchor?.seq ?? 0;
    // The walk below starts after `start`: a row at or below it would never be looked at.
    const planted = integers(db.prepare('SELECT seq, decision_id FROM decisions WHERE seq <= ? ORDER BY seq LIMIT 1').get(start)) as
      | { seq: number; decision_id: string }
      | undefined;
    if (planted) {
      return { ok: false, checked: 0, checkpoints_verified: 0, first_mismatch: { decision_id: planted.decision_id, seq: planted.seq, reason: 'record_before_start' } };
    }
    const checkpoints = checkpointMarks(db.prepare('SELECT * FROM checkpoints WHERE seq > ? ORDER BY seq').iterate(start) as Iterable<MarkRow>);
    const reasonSets = readReasonSets(db);
    const rows = db.prepare('SELECT * FROM decisions WHERE seq > ? ORDER BY seq').iterate(start) as Iterable<ChainRow>;

    let expectedSeq = start + 1;
    let expectedPrev = anchor?.hash ?? GENESIS_HASH;
    let checked = 0;
    let checkpointsVerified = 0;
    let checkpoint = checkpoints.next().value;
    // The record at this seq must come with a checkpoint, if none came sooner. An anchor
    // without one (signed before version 3, which the upgrade re-signs: only an edited log
    // has one) leaves no room, failing closed: the first record must come with a checkpoint.
    let nextBy = anchor?.next_by ?? start;
    const fail = (decisionId: string | null, seq: number, reason: MismatchReason): VerifyReport => ({
      ok: false,
      checked,
      checkpoints_verified: checkpointsVerified,
      first_mismatch: { decision_id: decisionId, seq, reason },
    });

    for (const raw of rows) {
      const row = integers(raw) as ChainRow;
      if (row.seq !== expectedSeq) return fail(row.decision_id, row.seq, 'record_missing');
      if (row.prev_hash !== expectedPrev) return fail(row.decision_id, row.seq, 'prev_hash_mismatch');
      if (chainHash(row.prev_hash, row.seq, row.body) !== row.hash) return fail(row.decision_id, row.seq, 'hash_mismatch');
      if (!indexColumnsMatch(row, reasonSets)) return fail(row.decision_id, row.seq, 'index_mismatch');
      if (checkpoint?.seq === row.seq) {
        if (key && !markSignatureValid(checkpoint, key)) {
          return fail(row.decision_id, row.seq, 'checkpoint_signature_invalid');
        }
        if (checkpoint.hash !== row.hash || checkpoint.record_count !== row.seq) {
          return fail(row.decision_id, row.seq, 'checkpoint_mismatch');
        }
        if (checkpoint.next_by !== undefined) nextBy = checkpoint.next_by;
        if (key) checkpointsVerified += 1;
        checkpoint = checkpoints.next().value;
      } else if (row.seq >= nextBy) {
        return fail(row.decision_id, row.seq, 'checkpoint_missing');
      }
      checked += 1;
      expectedSeq += 1;
      expectedPrev = row.hash;
      if (checked % ROWS_PER_TURN === 0) await new Promise<void>((resolve) => setImmediate(resolve));
    }
    if (checkpoint) return fail(null, checkpoint.seq, 'records_missing_at_end');
    if (!key) return { ok: false, checked, checkpoints_verified: 0, not_checked: 'checkpoint_signatures' };
    return { ok: true, checked, checkpoints_verified: checkpointsVerified };
  } finally {
    db.close();
  }
}

function* checkpointMarks(rows: Iterable<MarkRow>): Generator<SignedMark, undefined> {
  for (const row of rows) yield markFromRow(integers(row) as MarkRow, 'checkpoint');
}

/** A row read with readBigInts, as withNumbers gives it (undefined and null as they are). */
function integers(row: unknown): unknown {
  return row === undefined || row === null ? row : withNumbers(row as Record<string, unknown>).row;
}

function readReasonSets(db: DatabaseSync): ReasonSets {
  const keys = new Map<number | bigint, string>();
  for (const { id, codes } of db.prepare('SELECT id, codes FROM reason_sets').all() as { id: bigint; codes: string }[]) keys.set(setId(id), codes);
  const filed = new Map<number | bigint, string[]>();
  for (const { code, reason_set } of db.prepare('SELECT code, reason_set FROM reason_set_codes').all() as { code: string; reason_set: bigint }[]) {
    const codes = filed.get(setId(reason_set));
    if (codes) codes.push(code);
    else filed.set(setId(reason_set), [code]);
  }
  const misfiled = new Set<number | bigint>();
  for (const [id, key] of keys) {
    // A set's key is its codes sorted; the codes it is filed under must be exactly those.
    if (reasonSetKey(filed.get(id) ?? []) !== key) misfiled.add(id);
  }
  return { keys, misfiled };
}

/**
 * A reason set id as a map key: a number, or the BigInt itself past 2^53, so that no record
 * (whose reason_set integers() reads as NaN there) is taken to point at it.
 */
function setId(id: bigint): number | bigint {
  return id >= BigInt(Number.MIN_SAFE_INTEGER) && id <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(id) : id;
}

function indexColumnsMatch(row: ChainRow, reasonSets: ReasonSets): boolean {
  let record: DecisionRecord;
  let columns: IndexColumns;
  try {
    record = JSON.parse(row.body) as DecisionRecord;
    // A body rechained by someone without the key need not be a record at all: one whose
    // columns cannot even be derived matches none (a mismatch to report, not a crash).
    columns = deriveIndexColumns(record);
  } catch {
    return false;
  }
  return (
    row.decision_id === stored(record.decision_id) &&
    row.timestamp === record.timestamp &&
    row.endpoint === stored(record.endpoint) &&
    row.caller === stored(record.caller) &&
    row.bundle === stored(record.bundle) &&
    row.revision === stored(record.revision) &&
    row.iss === columns.iss &&
    row.sub === columns.sub &&
    row.client_id === columns.client_id &&
    row.action === columns.action &&
    row.resource_type === columns.resource_type &&
    row.resource_id === columns.resource_id &&
    row.allow === columns.allow &&
    reasonSets.keys.get(row.reason_set) === reasonSetKey(columns.reason_codes) &&
    !reasonSets.misfiled.has(row.reason_set)
  );
}

/** A text column as SQLite keeps it (UTF-8: a lone surrogate reads back as U+FFFD). */
function stored(value: unknown): unknown {
  return typeof value === 'string' ? value.toWellFormed() : value;
}
