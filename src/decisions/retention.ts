import type { DatabaseSync } from 'node:sqlite';
import { ArbiterError } from '../errors.ts';
import { markFromRow, markSignatureValid, signMark } from './chain.ts';
import type { CheckpointKey, MarkRow, SignedMark } from './chain.ts';
import { insertAnchor } from './writer.ts';

export interface RetentionPolicy {
  maxAgeDays?: number | undefined;
  maxRecords?: number | undefined;
}

const DAY_MS = 86_400_000;

/** Retention by age at `now` deletes records made before this time, and only those. */
export function ageCutoff(now: number, maxAgeDays: number): number {
  return now - maxAgeDays * DAY_MS;
}

/**
 * The highest seq retention wants gone, or 0 for none. Only a prefix of the chain is
 * ever pruned, so what remains still verifies from an anchor: by age, the prefix before
 * the oldest record young enough to keep (a record committed a moment before an older
 * one is kept with it).
 */
export function pruneTarget(db: DatabaseSync, policy: RetentionPolicy, now: number): number {
  let target = 0;
  if (policy.maxAgeDays !== undefined) {
    const cutoff = ageCutoff(now, policy.maxAgeDays);
    const young = db.prepare('SELECT min(seq) AS seq FROM decisions WHERE timestamp >= ?').get(cutoff) as { seq: number | null };
    const head = db.prepare('SELECT max(seq) AS seq FROM decisions').get() as { seq: number | null };
    target = Math.max(target, young.seq !== null ? young.seq - 1 : (head.seq ?? 0));
  }
  if (policy.maxRecords !== undefined) {
    const oldestKept = db
      .prepare('SELECT seq FROM decisions ORDER BY seq DESC LIMIT 1 OFFSET ?')
      .get(policy.maxRecords - 1) as { seq: number } | undefined;
    if (oldestKept) target = Math.max(target, oldestKept.seq - 1);
  }
  return target;
}

/**
 * The mark the query finds, or undefined when there is none; throws when its signature does
 * not hold, so that retention stops (and verify keeps reporting it) instead of signing over it.
 */
function signedMark(db: DatabaseSync, key: CheckpointKey, sql: string, params: number[], kind: SignedMark['kind']): SignedMark | undefined {
  const row = db.prepare(sql).get(...params) as MarkRow | undefined;
  if (row === undefined) return undefined;
  const mark = markFromRow(row, kind);
  if (!markSignatureValid(mark, key)) {
    throw new ArbiterError('decision_log_tampered', `retention stopped: the ${kind} at seq ${mark.seq} is not signed by the checkpoint key (run verify)`);
  }
  return mark;
}

/** What one prune step removed. */
export interface PruneStep {
  /** Records deleted. */
  deleted: number;
  /**
   * Keys (reasonSetKey) of the reason sets no remaining record uses, deleted with them: codes
   * can carry request data (OPA-style deny messages), which must not outlive retention. The
   * writer must forget these sets before its next commit.
   */
  droppedReasonSets: string[];
}

/**
 * Deletes records up to `throughSeq` (at most `maxRecords` of them, oldest first, so a
 * large backlog is pruned in short transactions), the reason sets only they used, and
 * replaces the anchor with a signed one for the last record deleted.
 */
export function pruneStep(db: DatabaseSync, key: CheckpointKey, throughSeq: number, maxRecords: number, now: number): PruneStep {
  db.exec('BEGIN IMMEDIATE');
  try {
    const range = db
      .prepare(
        `SELECT seq, hash FROM decisions WHERE seq <= ? ORDER BY seq LIMIT 1 OFFSET ?`,
      )
      .get(throughSeq, maxRecords - 1) as { seq: number; hash: string } | undefined;
    const last = (range ??
      db.prepare('SELECT seq, hash FROM decisions WHERE seq <= ? ORDER BY seq DESC LIMIT 1').get(throughSeq)) as
      | { seq: number; hash: string }
      | undefined;
    if (!last) {
      db.exec('COMMIT');
      return { deleted: 0, droppedReasonSets: [] };
    }
    const previous = signedMark(db, key, 'SELECT * FROM anchors ORDER BY seq DESC LIMIT 1', [], 'anchor');
    // The anchor carries on the bound in force where it stands (the next checkpoint
    // after it, or the end of the log, lies within it), read before its source is pruned,
    // and only from a mark whose signature holds: re-signing an edited bound (or a forged
    // anchor) would launder a rewrite of the chain that verify reports today.
    const source =
      signedMark(db, key, 'SELECT * FROM checkpoints WHERE seq <= ? AND next_by IS NOT NULL ORDER BY seq DESC LIMIT 1', [last.seq], 'checkpoint') ??
      previous;
    const nextBy = source?.next_by;
    const usedByPruned = db.prepare('SELECT DISTINCT reason_set FROM decisions WHERE seq <= ?').all(last.seq) as { reason_set: number }[];
    const { changes } = db.prepare('DELETE FROM decisions WHERE seq <= ?').run(last.seq);
    const droppedReasonSets = dropUnusedReasonSets(db, usedByPruned.map((row) => row.reason_set));
    // Checkpoints over pruned records can no longer be checked against them; the anchor
    // now vouches for that part of the chain.
    db.prepare('DELETE FROM checkpoints WHERE seq <= ?').run(last.seq);
    db.prepare('DELETE FROM anchors').run();
    const anchor = signMark(
      {
        kind: 'anchor',
        seq: last.seq,
        hash: last.hash,
        record_count: (previous?.record_count ?? 0) + Number(changes),
        created_at: now,
        next_by: nextBy,
      },
      key,
    );
    insertAnchor(db, anchor);
    db.exec('COMMIT');
    return { deleted: Number(changes), droppedReasonSets };
  } catch (error) {
    if (db.isTransaction) db.exec('ROLLBACK');
    throw error;
  }
}

/** Deletes those of `candidates` no record uses any more (index decisions_by_reason_set); returns their keys. */
function dropUnusedReasonSets(db: DatabaseSync, candidates: readonly number[]): string[] {
  const stillUsed = db.prepare('SELECT 1 FROM decisions WHERE reason_set = ? LIMIT 1');
  const keyOf = db.prepare('SELECT codes FROM reason_sets WHERE id = ?');
  const deleteCodes = db.prepare('DELETE FROM reason_set_codes WHERE reason_set = ?');
  const deleteSet = db.prepare('DELETE FROM reason_sets WHERE id = ?');
  const dropped: string[] = [];
  for (const id of candidates) {
    if (stillUsed.get(id) !== undefined) continue;
    const row = keyOf.get(id) as { codes: string } | undefined;
    deleteCodes.run(id);
    deleteSet.run(id);
    if (row) dropped.push(row.codes);
  }
  return dropped;
}
