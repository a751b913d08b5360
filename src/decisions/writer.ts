import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { chainHash, GENESIS_HASH, signMark } from './chain.ts';
import type { CheckpointKey, SignedMark } from './chain.ts';
import type { DecisionRecord, IndexColumns } from './record.ts';

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
  readonly #insertReason: StatementSync;
  readonly #insertCheckpoint: StatementSync;
  #head: ChainHead;
  #lastCheckpoint: { seq: number; at: number };

  constructor(db: DatabaseSync, key: CheckpointKey, policy: CheckpointPolicy) {
    this.#db = db;
    this.#key = key;
    this.#policy = policy;
    this.#insertDecision = db.prepare(
      `INSERT INTO decisions (seq, decision_id, timestamp, endpoint, caller, bundle, revision, iss, sub, client_id,
         action, resource_type, resource_id, allow, body, prev_hash, hash)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.#insertReason = db.prepare('INSERT INTO decision_reasons (seq, code, timestamp) VALUES (?, ?, ?)');
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
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      for (const { body, columns, ...record } of batch) {
        const prevHash = hash;
        seq += 1;
        hash = chainHash(prevHash, seq, body);
        this.#insertDecision.run(
          seq, record.decision_id, record.timestamp, record.endpoint, record.caller, record.bundle, record.revision,
          columns.iss, columns.sub, columns.client_id, columns.action, columns.resource_type, columns.resource_id,
          columns.allow, body, prevHash, hash,
        );
        for (const code of columns.reason_codes) this.#insertReason.run(seq, code, record.timestamp);
        hashes.push(hash);
      }
      const head = { seq, hash };
      const checkpointed = this.#checkpointIfDue(head, now, false);
      this.#db.exec('COMMIT');
      this.#head = head;
      if (checkpointed) this.#lastCheckpoint = { seq, at: now };
      return hashes;
    } catch (error) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      throw error;
    }
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
