import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { chainHash, GENESIS_HASH, signMark } from './chain.ts';
import type { CheckpointKey, SignedMark } from './chain.ts';
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
  everyRecords: number;
  intervalMs: number;
}

export interface ChainHead {
  seq: number;
  hash: string;
}

/** Reason sets the writer remembers; a log normally has a few dozen. */
const CACHED_REASON_SETS = 10_000;

/**
 * The only writer of a decision log. Each commit is one transaction that extends the
 * chain and, when one is due, adds a signed checkpoint. The head in memory moves only
 * after COMMIT succeeds, so a failed batch leaves nothing half-chained behind.
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
  #lastCheckpoint: { seq: number; at: number };

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
      if (this.#reasonSets.size < this.#cachedReasonSets) this.#reasonSets.set(codes, id);
      this.#nextReasonSetId = id + 1;
    }
    this.#insertCheckpoint = db.prepare(
      'INSERT INTO checkpoints (seq, hash, record_count, created_at, key_id, signature) VALUES (?, ?, ?, ?, ?, ?)',
    );
    this.#head = readHead(db);
    const checkpoint = db.prepare('SELECT seq, created_at FROM checkpoints ORDER BY seq DESC LIMIT 1').get() as
      | { seq: number; created_at: number }
      | undefined;
    this.#lastCheckpoint = checkpoint ? { seq: checkpoint.seq, at: checkpoint.created_at } : { seq: 0, at: Date.now() };
  }

  /** The last record chained (or the anchor / genesis it continues from). */
  get head(): Readonly<ChainHead> {
    return this.#head;
  }

  /**
   * Appends `batch` in one transaction, numbered on from the head; returns the records'
   * hashes. Throws (having rolled back) if it cannot be committed.
   */
  commit(batch: readonly PreparedDecision[], now = Date.now()): string[] {
    let { seq, hash } = this.#head;
    const hashes: string[] = [];
    // Sets first seen in this batch join #reasonSets only once it is committed.
    const newSets = new Map<string, number>();
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
      }
      const head = { seq, hash };
      const checkpointed = this.#checkpointIfDue(head, now, false);
      this.#db.exec('COMMIT');
      for (const [key, id] of newSets) if (this.#reasonSets.size < this.#cachedReasonSets) this.#reasonSets.set(key, id);
      this.#nextReasonSetId += newSets.size;
      this.#head = head;
      if (checkpointed) this.#lastCheckpoint = { seq, at: now };
      return hashes;
    } catch (error) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      throw error;
    }
  }

  /** The id of the set of `codes`, inserting the set (into this transaction, noted in `newSets`) the first time it is seen. */
  #reasonSetId(codes: readonly string[], newSets: Map<string, number>): number {
    const key = reasonSetKey(codes);
    let id = this.#reasonSets.get(key) ?? newSets.get(key);
    if (id === undefined && this.#reasonSets.size >= this.#cachedReasonSets) {
      id = (this.#findReasonSet.get(key) as { id: number } | undefined)?.id;
    }
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
   * has passed, or unconditionally with `force` (on close, so a clean shutdown leaves
   * no unsigned tail). Returns whether a checkpoint was written.
   */
  checkpoint(now = Date.now(), force = false): boolean {
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      const written = this.#checkpointIfDue(this.#head, now, force);
      this.#db.exec('COMMIT');
      if (written) this.#lastCheckpoint = { seq: this.#head.seq, at: now };
      return written;
    } catch (error) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      throw error;
    }
  }

  #checkpointIfDue(head: ChainHead, now: number, force: boolean): boolean {
    const since = this.#lastCheckpoint;
    if (head.seq === since.seq) return false;
    const due =
      force || head.seq - since.seq >= this.#policy.everyRecords || now - since.at >= this.#policy.intervalMs;
    if (!due) return false;
    const mark: SignedMark = signMark(
      { kind: 'checkpoint', seq: head.seq, hash: head.hash, record_count: head.seq, created_at: now },
      this.#key,
    );
    this.#insertCheckpoint.run(mark.seq, mark.hash, mark.record_count, mark.created_at, mark.key_id, mark.signature);
    return true;
  }
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
