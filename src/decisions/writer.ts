import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { ArbiterError } from '../errors.ts';
import { chainHash, GENESIS_HASH, markFromRow, markSignatureValid, signMark } from './chain.ts';
import type { CheckpointKey, MarkRow, SignedMark } from './chain.ts';
import type { DecisionRecord, IndexColumns } from './record.ts';
import { reasonSetKey } from './schema.ts';

/**
 * A (masked) record made ready for the chain at append time, so a commit only numbers,
 * hashes and inserts. Flat and small: it is what crosses to the writer thread.
 */
export type PreparedDecision = Pick<DecisionRecord, 'decision_id' | 'timestamp' | 'endpoint' | 'caller' | 'bundle' | 'revision'> & {
  columns: IndexColumns;
  /** Canonical JSON of the masked record: what is stored and hashed. */
  body: string;
};

/** Where a committed record landed in the chain. */
export interface ChainLink {
  seq: number;
  prev_hash: string;
  hash: string;
}

export interface CheckpointPolicy {
  /** A checkpoint is signed at the latest with the everyRecords-th record after the last one. */
  everyRecords: number;
  intervalMs: number;
}

export interface ChainHead {
  seq: number;
  hash: string;
}

/**
 * Records after the newest checkpoint (or the anchor) that no checkpoint signs: what a writer
 * killed before it could sign leaves, and what a record chained on behind a stopped server
 * looks like once the checkpoint its shutdown signed is deleted (which takes no key).
 */
export interface UnsignedTail {
  from: number;
  to: number;
  /** The seq of the checkpoint (or anchor) they follow. */
  checkpoint: number;
}

/** Reason sets the writer remembers; a log normally has a few dozen. */
const CACHED_REASON_SETS = 10_000;
/** Longest set key remembered: codes are short names, but a policy may mint long ones from its input. */
const CACHED_REASON_SET_KEY_LENGTH = 1_024;

/**
 * The only writer of a decision log. Each commit is one transaction that extends the
 * chain and, when one is due, adds a signed checkpoint. The head in memory moves only
 * after COMMIT succeeds, so a failed batch leaves nothing half-chained behind.
 *
 * Each checkpoint signs next_by = its seq + everyRecords, and the record at next_by is
 * committed with the next checkpoint (unless one came sooner), in the middle of a group
 * commit if that is where it falls. No commit leaves more than everyRecords - 1 records
 * after a checkpoint without the next, even one killed before it could sign at shutdown,
 * so verify can report a longer run as checkpoints deleted. A writer started with a
 * larger everyRecords keeps the next_by the last mark signed until its next checkpoint.
 * Signing inside the loop costs one comparison per record, and a signature per
 * everyRecords records (one per group commit or fewer at the default 10,000).
 */
export class ChainWriter {
  readonly #db: DatabaseSync;
  readonly #key: CheckpointKey;
  readonly #policy: CheckpointPolicy;
  readonly #insertDecision: StatementSync;
  readonly #insertReasonSet: StatementSync;
  readonly #insertReasonSetCode: StatementSync;
  readonly #insertCheckpoint: StatementSync;
  /**
   * Reason sets by key (reasonSetKey), read once, then kept current by commits. Bounded:
   * a policy minting codes per request must not grow it for ever; sets past the bound are
   * looked up in the database instead.
   */
  readonly #reasonSets = new Map<string, number>();
  readonly #findReasonSet: StatementSync;
  readonly #cachedReasonSets: number;
  #nextReasonSetId = 1;
  #head: ChainHead;
  /** The newest checkpoint (or anchor) and when it was signed, for the interval. */
  #lastCheckpoint: { seq: number; at: number };
  /** The seq whose record must be committed with a checkpoint (unless one comes sooner). */
  #nextBy: number;

  constructor(db: DatabaseSync, key: CheckpointKey, policy: CheckpointPolicy, cachedReasonSets = CACHED_REASON_SETS) {
    this.#db = db;
    this.#key = key;
    this.#policy = policy;
    this.#insertDecision = db.prepare(
      `INSERT INTO decisions (seq, decision_id, timestamp, endpoint, caller, bundle, revision, iss, sub, client_id,
         action, resource_type, resource_id, allow, reason_set, body, prev_hash, hash)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.#insertReasonSet = db.prepare('INSERT INTO reason_sets (id, codes) VALUES (?, ?)');
    this.#insertReasonSetCode = db.prepare('INSERT INTO reason_set_codes (code, reason_set) VALUES (?, ?)');
    this.#findReasonSet = db.prepare('SELECT id FROM reason_sets WHERE codes = ?');
    this.#cachedReasonSets = cachedReasonSets;
    for (const { id, codes } of db.prepare('SELECT id, codes FROM reason_sets ORDER BY id').all() as { id: number; codes: string }[]) {
      this.#remember(codes, id);
      this.#nextReasonSetId = id + 1;
    }
    this.#insertCheckpoint = db.prepare(
      'INSERT INTO checkpoints (seq, hash, record_count, created_at, key_id, signature, next_by) VALUES (?, ?, ?, ?, ?, ?, ?)',
    );
    this.#head = readHead(db);
    // The count goes on from the newest mark, and never past the bound it signed, which
    // an earlier run may have set closer than everyRecords does now.
    const checkpoint = db.prepare('SELECT seq, created_at FROM checkpoints ORDER BY seq DESC LIMIT 1').get() as
      | { seq: number; created_at: number }
      | undefined;
    const anchorSeq = (db.prepare('SELECT max(seq) AS seq FROM anchors').get() as { seq: number | null }).seq ?? 0;
    this.#lastCheckpoint =
      checkpoint && checkpoint.seq >= anchorSeq ? { seq: checkpoint.seq, at: checkpoint.created_at } : { seq: anchorSeq, at: Date.now() };
    const signed = readNextBy(db);
    this.#nextBy = Math.min(this.#lastCheckpoint.seq + policy.everyRecords, signed ?? Infinity);
  }

  /** The last record chained (or the anchor / genesis it continues from). */
  get head(): Readonly<ChainHead> {
    return this.#head;
  }

  /** The records after the newest checkpoint (or anchor) that none signs yet, if any. */
  get unsignedTail(): UnsignedTail | undefined {
    const { seq } = this.#head;
    const checkpoint = this.#lastCheckpoint.seq;
    return seq > checkpoint ? { from: checkpoint + 1, to: seq, checkpoint } : undefined;
  }

  /**
   * Appends `batch` in one transaction, numbered on from the head; returns the records'
   * hashes. Throws (having rolled back) if it cannot be committed.
   */
  commit(batch: readonly PreparedDecision[], now = Date.now()): string[] {
    let { seq, hash } = this.#head;
    const hashes: string[] = [];
    // Sets first seen in this batch join #reasonSets only once it is committed; likewise
    // checkpoints signed in it move #lastCheckpoint and #nextBy.
    const newSets = new Map<string, number>();
    let lastCheckpoint = this.#lastCheckpoint;
    let nextBy = this.#nextBy;
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      for (const { body, columns, ...record } of batch) {
        const prevHash = hash;
        seq += 1;
        hash = chainHash(prevHash, seq, body);
        this.#insertDecision.run(
          seq, record.decision_id, record.timestamp, record.endpoint, record.caller, record.bundle, record.revision,
          columns.iss, columns.sub, columns.client_id, columns.action, columns.resource_type, columns.resource_id,
          columns.allow, this.#reasonSetId(columns.reason_codes, newSets), body, prevHash, hash,
        );
        hashes.push(hash);
        if (seq >= nextBy) {
          nextBy = this.#signCheckpoint(seq, hash, now);
          lastCheckpoint = { seq, at: now };
        }
      }
      if (seq !== lastCheckpoint.seq && now - lastCheckpoint.at >= this.#policy.intervalMs) {
        nextBy = this.#signCheckpoint(seq, hash, now);
        lastCheckpoint = { seq, at: now };
      }
      this.#db.exec('COMMIT');
      for (const [key, id] of newSets) this.#remember(key, id);
      this.#nextReasonSetId += newSets.size;
      this.#head = { seq, hash };
      this.#lastCheckpoint = lastCheckpoint;
      this.#nextBy = nextBy;
      return hashes;
    } catch (error) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      throw error;
    }
  }

  /**
   * Commits a transaction that writes one page (the header's user_version, set to what it
   * is) and changes nothing else: whether a commit can go through now (the write lock taken,
   * the WAL appended to and fsynced), asked while strict commits keep failing and no decision
   * may come to try (see DecisionStore.unavailable). Throws (having rolled back) if it cannot.
   */
  probe(): void {
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      const { user_version: version } = this.#db.prepare('PRAGMA user_version').get() as { user_version: number };
      this.#db.exec(`PRAGMA user_version = ${version}`);
      this.#db.exec('COMMIT');
    } catch (error) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      throw error;
    }
  }

  #remember(key: string, id: number): void {
    if (key.length <= CACHED_REASON_SET_KEY_LENGTH && this.#reasonSets.size < this.#cachedReasonSets) this.#reasonSets.set(key, id);
  }

  /** Forgets reason sets retention deleted, so that no later record points at a set that is gone. */
  forgetReasonSets(keys: readonly string[]): void {
    for (const key of keys) this.#reasonSets.delete(key);
  }

  /** The id of the set of `codes`, inserting the set (into this transaction, noted in `newSets`) the first time it is seen. */
  #reasonSetId(codes: readonly string[], newSets: Map<string, number>): number {
    const key = reasonSetKey(codes);
    let id = this.#reasonSets.get(key) ?? newSets.get(key);
    // Not remembered is not new: the cache is bounded, and retention frees slots in it.
    if (id === undefined) id = (this.#findReasonSet.get(key) as { id: number } | undefined)?.id;
    if (id === undefined) {
      id = this.#nextReasonSetId + newSets.size;
      this.#insertReasonSet.run(id, key);
      for (const code of new Set(codes)) this.#insertReasonSetCode.run(code, id);
      newSets.set(key, id);
    }
    return id;
  }

  /**
   * Signs the head if records were appended since the last checkpoint and the interval
   * has passed, or unconditionally with `force`. Returns whether a checkpoint was written.
   * A clean shutdown signs with seal() instead, which leaves no unsigned tail and no room after it.
   */
  checkpoint(now = Date.now(), force = false): boolean {
    const head = this.#head;
    if (head.seq === this.#lastCheckpoint.seq) return false;
    if (!force && now - this.#lastCheckpoint.at < this.#policy.intervalMs) return false;
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      const nextBy = this.#signCheckpoint(head.seq, head.hash, now);
      this.#db.exec('COMMIT');
      this.#lastCheckpoint = { seq: head.seq, at: now };
      this.#nextBy = nextBy;
      return true;
    } catch (error) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      throw error;
    }
  }

  /**
   * Signs the head on shutdown with next_by = head + 1: no record may follow it without a
   * checkpoint of its own. A record chained onto the file while no server runs (by someone
   * without the key) then shows as checkpoint_missing, even once the next start has chained
   * on from it and signed; that start signs the first record it commits. A head signed
   * already (a checkpoint, or the anchor when no record follows it) has its mark signed again
   * with the bound, only while the mark holds for that head: re-signing an edited mark would
   * launder the edit. Returns whether anything was signed.
   */
  seal(now = Date.now()): boolean {
    const head = this.#head;
    const nextBy = head.seq + 1;
    if (this.#nextBy <= nextBy) return false;
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      let signed = true;
      if (head.seq !== this.#lastCheckpoint.seq) this.#signCheckpoint(head.seq, head.hash, now, nextBy);
      else signed = this.#tightenMark(head, nextBy);
      this.#db.exec(signed ? 'COMMIT' : 'ROLLBACK');
      if (!signed) return false;
      if (head.seq !== this.#lastCheckpoint.seq) this.#lastCheckpoint = { seq: head.seq, at: now };
      this.#nextBy = nextBy;
      return true;
    } catch (error) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      throw error;
    }
  }

  /** Signs the mark at the head (its checkpoint, else the anchor) again with `nextBy`, if it is signed by the key for this head. */
  #tightenMark(head: ChainHead, nextBy: number): boolean {
    for (const kind of ['checkpoint', 'anchor'] as const) {
      const table = kind === 'checkpoint' ? 'checkpoints' : 'anchors';
      const row = this.#db.prepare(`SELECT * FROM ${table} WHERE seq = ?`).get(head.seq) as MarkRow | undefined;
      if (row === undefined) continue;
      const mark = markFromRow(row, kind);
      if (mark.hash !== head.hash || !markSignatureValid(mark, this.#key)) return false;
      const { signature: _signature, key_id: _keyId, ...unsigned } = mark;
      const tightened = signMark({ ...unsigned, next_by: nextBy }, this.#key);
      this.#db.prepare(`UPDATE ${table} SET next_by = ?, signature = ? WHERE seq = ?`).run(nextBy, tightened.signature, head.seq);
      return true;
    }
    return false;
  }

  /** Inserts a signed checkpoint of the record at `seq` (in the open transaction); returns its next_by. */
  #signCheckpoint(seq: number, hash: string, now: number, nextBy = seq + this.#policy.everyRecords): number {
    const mark: SignedMark = signMark({ kind: 'checkpoint', seq, hash, record_count: seq, created_at: now, next_by: nextBy }, this.#key);
    this.#insertCheckpoint.run(mark.seq, mark.hash, mark.record_count, mark.created_at, mark.key_id, mark.signature, nextBy);
    return nextBy;
  }
}

/**
 * The next_by in force: that of the newest checkpoint that signed one, else the anchor's
 * (checkpoints at or below the anchor are pruned with the records). Checkpoints signed
 * before schema version 3 carry none and leave it as it was. Undefined when nothing signed
 * one (a log never sealed, or whose anchor was deleted).
 */
export function readNextBy(db: DatabaseSync, atOrBelow = Number.MAX_SAFE_INTEGER): number | undefined {
  const row = (db
    .prepare('SELECT next_by FROM checkpoints WHERE seq <= ? AND next_by IS NOT NULL ORDER BY seq DESC LIMIT 1')
    .get(atOrBelow) ?? db.prepare('SELECT next_by FROM anchors ORDER BY seq DESC LIMIT 1').get()) as { next_by: number | null } | undefined;
  return row?.next_by ?? undefined;
}

/**
 * Signs, when a log is created or upgraded to schema version 3 (inside that transaction,
 * see migrate), the anchor the chain is verified from, with the next_by of its first
 * stretch. A new log gets an anchor at seq 0 (genesis; nothing pruned) whose next_by is
 * everyRecords. A log written before version 3 has no signed next_by anywhere: its head
 * is signed as found (a checkpoint, replacing one already there) and the anchor (its
 * retention anchor, re-signed, or one at genesis) gets next_by = that head. Its records
 * are vouched for no further than before: its old checkpoints are checked as before, and
 * the new checkpoint signs the hash the chain already ends with.
 */
export function sealChainStart(db: DatabaseSync, key: CheckpointKey, everyRecords: number, now = Date.now()): void {
  const head = readHead(db);
  const row = db.prepare('SELECT * FROM anchors ORDER BY seq DESC LIMIT 1').get() as MarkRow | undefined;
  // Re-signed below with a bound: never an anchor the key did not sign (the upgrade stops instead).
  if (row !== undefined && !markSignatureValid(markFromRow(row, 'anchor'), key)) {
    throw new ArbiterError('decision_log_tampered', `the decision log's anchor at seq ${row.seq} is not signed by the checkpoint key: it is not upgraded (run arbiter decisions verify with the previous version)`);
  }
  const start = row === undefined ? { seq: 0, hash: GENESIS_HASH, record_count: 0, created_at: now } : { seq: row.seq, hash: row.hash, record_count: row.record_count, created_at: row.created_at };
  let nextBy = start.seq + everyRecords;
  if (head.seq > start.seq) {
    const checkpoint = signMark(
      { kind: 'checkpoint', seq: head.seq, hash: head.hash, record_count: head.seq, created_at: now, next_by: head.seq + everyRecords },
      key,
    );
    db.prepare(
      'INSERT OR REPLACE INTO checkpoints (seq, hash, record_count, created_at, key_id, signature, next_by) VALUES (?, ?, ?, ?, ?, ?, ?)',
    ).run(checkpoint.seq, checkpoint.hash, checkpoint.record_count, checkpoint.created_at, checkpoint.key_id, checkpoint.signature, head.seq + everyRecords);
    nextBy = head.seq;
  }
  db.prepare('DELETE FROM anchors').run();
  insertAnchor(db, signMark({ kind: 'anchor', ...start, next_by: nextBy }, key));
}

export function insertAnchor(db: DatabaseSync, anchor: SignedMark): void {
  db.prepare(
    'INSERT INTO anchors (seq, hash, record_count, created_at, key_id, signature, next_by) VALUES (?, ?, ?, ?, ?, ?, ?)',
  ).run(anchor.seq, anchor.hash, anchor.record_count, anchor.created_at, anchor.key_id, anchor.signature, anchor.next_by ?? null);
}

/**
 * The chain continues from the newest record, or from the newest anchor when retention
 * has pruned everything, so seq is never reused.
 */
function readHead(db: DatabaseSync): ChainHead {
  const last = db.prepare('SELECT seq, hash FROM decisions ORDER BY seq DESC LIMIT 1').get() as ChainHead | undefined;
  if (last) return { seq: last.seq, hash: last.hash };
  const anchor = db.prepare('SELECT seq, hash FROM anchors ORDER BY seq DESC LIMIT 1').get() as ChainHead | undefined;
  return anchor ? { seq: anchor.seq, hash: anchor.hash } : { seq: 0, hash: GENESIS_HASH };
}
