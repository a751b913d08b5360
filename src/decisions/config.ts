import { z } from 'zod';
import { timerIntervalSeconds } from '../config/timer-delay.ts';
import { maskRuleSchema } from './mask.ts';

/**
 * `decision_log` in the Arbiter configuration. Everything but `path` has a default, so
 * `decision_log: { path: ./decisions.db }` is a complete, strict, audited setup.
 */
export const decisionLogConfigSchema = z.strictObject({
  /** SQLite database file; `-wal`/`-shm` files and the checkpoint key are created next to it. */
  path: z.string().min(1),
  /**
   * `strict`: append resolves once the record is committed and fsynced (survives kill -9
   * and power loss, on a disk that honours fsync). `relaxed`: append resolves at once and
   * records are committed within flush_interval_ms (a crash loses at most that window).
   */
  durability: z.enum(['strict', 'relaxed']).default('strict').describe('strict: a decision is answered only once its record is committed and fsynced (else deny audit_unavailable); relaxed: answered first, committed within flush_interval_ms (the loss window on a crash).'),
  /** relaxed only: the longest a record waits before it is committed. */
  flush_interval_ms: z.number().int().min(1).max(60_000).default(100).describe('relaxed only: the longest a record waits before it is committed.'),
  /** Most records per transaction; a larger backlog is committed in several. */
  max_batch: z.number().int().min(1).max(100_000).default(2_000).describe('Most records per transaction (group commit).'),
  /** relaxed only: records accepted but not yet committed beyond which append rejects. */
  max_pending: z.number().int().min(1).default(100_000).describe('relaxed only: records waiting beyond which decisions are denied audit_unavailable.'),
  /**
   * How long a commit waits for a lock held by another process (a backup, an sqlite3
   * shell) before failing; in strict mode the decision waiting on it is then denied.
   */
  busy_timeout_ms: z.number().int().min(0).max(60_000).default(2_000).describe('How long a commit waits for a lock held by another process.'),
  /** Applied to each record before it is hashed and stored; only `/input/...` can be masked. */
  mask: z
    .array(maskRuleSchema.refine((rule) => rule.pointer.startsWith('/input/'), 'only pointers under /input/ can be masked'))
    .default([])
    .describe('JSON pointers under /input/ to erase or replace by a sha256 hash before a record is hashed and stored.'),
  retention: z
    .strictObject({
      max_age_days: z.number().positive().optional().describe('Delete records older than this (the remaining chain stays verifiable from a signed anchor).'),
      max_records: z.number().int().positive().optional().describe('Keep at most this many records, deleting the oldest.'),
      check_interval_s: timerIntervalSeconds('delete old records').default(3_600).describe('How often retention runs; at least 1 s.'),
    })
    .prefault({}),
  checkpoint: z
    .strictObject({
      every_records: z.number().int().positive().default(10_000).describe('Sign a checkpoint of the hash chain after this many records...'),
      interval_s: timerIntervalSeconds('sign checkpoints').default(60).describe('...or after this long, whichever comes first; at least 1 s.'),
      /**
       * Private Ed25519 JWK; default `<path>.checkpoint-key.jwk`, generated with a new log. A
       * log already signed is not opened without the key that signed it.
       */
      key_path: z.string().min(1).optional().describe('Private Ed25519 JWK signing checkpoints; default <path>.checkpoint-key.jwk, generated with a new log (mode 0600). A log already signed does not open without the key that signed it.'),
    })
    .prefault({}),
});

export type DecisionLogConfig = z.infer<typeof decisionLogConfigSchema>;
export type DecisionLogConfigInput = z.input<typeof decisionLogConfigSchema>;
