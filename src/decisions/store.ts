import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { StatementSync } from 'node:sqlite';
import { z } from 'zod';
import { ArbiterError, atConfigKey, ConfigError } from '../errors.ts';
import type { ThreadHeap } from '../metrics/thread-heap.ts';
import { canonicalJson } from './canonical-json.ts';
import { createCheckpointKey, loadCheckpointKey } from './chain.ts';
import type { CheckpointKey } from './chain.ts';
import { decisionLogConfigSchema } from './config.ts';
import type { DecisionLogConfig, DecisionLogConfigInput } from './config.ts';
import { applyMask } from './mask.ts';
import { ageCutoff } from './retention.ts';
import { exportDecisions, queryDecisions, readRow, toStoredDecision } from './query.ts';
import { DecisionReader, validFilters } from './reader-thread.ts';
import type { DecisionFilters, DecisionPage, PageRequest, StoredRow } from './query.ts';
import { decisionRecordSchema, deriveIndexColumns, isDecisionRecord } from './record.ts';
import type { DecisionRecord, StoredDecision } from './record.ts';
import { verifyChain } from './verify.ts';
import type { VerifyReport } from './verify.ts';
import type { PreparedDecision, UnsignedTail } from './writer.ts';
import { committedLink, WriterThread } from './writer-thread.ts';
import type { CommitResult } from './writer-thread.ts';
import { ensurePrivateDatabaseFile, makePrivateDirSync } from '../private-files.ts';

export type CommittedListener = (decisions: readonly StoredDecision[]) => void;
export type ErrorListener = (error: Error) => void;
/** Seconds the writer took to commit one batch (group commit), for /metrics. */
export type CommitTimeListener = (seconds: number) => void;

export interface DecisionLogStats {
  /** Accepted by append but not yet committed: in relaxed mode, what a crash now would lose. */
  pending: number;
  committed: number;
  /**
   * relaxed only: accepted records that were never committed: refused by the database (a
   * decision_id logged twice), or still waiting when the writer thread stopped or the log
   * was closed (each is also sent to onError). A commit that fails otherwise is retried.
   */
  failed: number;
  /** Transactions committed: committed / commits is the size of a group commit. */
  commits: number;
}

interface Queued {
  /**
   * The masked record, handed to onCommitted listeners once chained; kept only while
   * someone listens, so a backlog holds the compact prepared form alone.
   */
  record: DecisionRecord | undefined;
  prepared: PreparedDecision;
  /** Present in strict mode, where the caller waits for the commit. */
  settle?: { resolve: () => void; reject: (error: Error) => void };
}

/** Records deleted per retention transaction, so pruning a backlog never holds the writer long. */
const PRUNE_STEP_RECORDS = 10_000;

/**
 * strict: how long every commit must have failed (decisions' group commits and the probes
 * below, none going through) before the log counts as unavailable and /readyz says so. One
 * failure (a lock held by a backup for a moment) denies the decisions of that commit only and
 * leaves the replica ready; a disk that stays full or a file that stays read-only takes it
 * out of the load balancer after this long, and so does one commit under way for as long (a
 * disk that stops answering: decisions wait on it instead of failing). Exported for tests.
 */
export const STRICT_OUTAGE_AFTER_MS = 5_000;
/**
 * strict: while commits fail, a commit that changes nothing is tried this often, so the log
 * finds out that writes go through again without a decision to try (a replica the load
 * balancer took out receives none). Only once no decision's commit has failed for this long:
 * a probe writes one page, and can go through where every decision's commit fails (a disk
 * with a little room left, a log another writer has chained on); while decisions come, their
 * commits are what tell.
 */
const STRICT_PROBE_INTERVAL_MS = 1_000;

/**
 * The decision log: an append-only, hash-chained, signed-checkpointed SQLite table of
 * every decision, with indexed queries for auditors.
 *
 * Writes happen on a writer thread (hashing, inserts and fsync would otherwise take
 * the event loop from requests). Appends are group-committed: while one transaction is
 * being committed, every append made meanwhile queues, and the whole queue (up to
 * max_batch) goes into the next one, so the cost of a commit and its fsync is shared by
 * all decisions made during the previous. In strict mode append's promise settles after
 * that commit; in relaxed mode at once.
 */
export class DecisionStore {
  readonly #config: DecisionLogConfig;
  readonly #key: CheckpointKey;
  readonly #writer: WriterThread;
  readonly #readerDb: DatabaseSync;
  /**
   * The HTTP routes' reads, on a thread of their own (the methods below read on the calling
   * thread: for tests, tools and one-record lookups).
   */
  readonly reader: DecisionReader;
  readonly #getById: StatementSync;
  readonly #timers: NodeJS.Timeout[] = [];
  readonly #committedListeners = new Set<CommittedListener>();
  readonly #errorListeners = new Set<ErrorListener>();
  readonly #commitTimeListeners = new Set<CommitTimeListener>();
  #queue: Queued[] = [];
  /** The commit the writer thread is working on; only one at a time, the next group queues. */
  #inFlight: Promise<void> | undefined;
  #committing = 0;
  #flushImmediate: NodeJS.Immediate | undefined;
  #flushTimer: NodeJS.Timeout | undefined;
  /** relaxed: when the oldest record still queued arrived (performance.now()); its commit is due flush_interval_ms later. */
  #queuedSince: number | undefined;
  /**
   * relaxed: why the last commit failed (a lock, a full disk), while its records wait at the
   * head of the queue to be tried again. Appends are refused meanwhile, so the decisions
   * answered without a record stay those of the loss window. Cleared by a commit that goes through.
   */
  #outage: ArbiterError | undefined;
  /**
   * strict: since when (performance.now()) every commit has failed, when a decision's commit
   * last did, and why the last commit or probe did; undefined once one goes through. Probed
   * every STRICT_PROBE_INTERVAL_MS meanwhile, while no decision's commit fails.
   */
  #failing: { since: number; lastDecisionFailure: number; message: string } | undefined;
  #probeTimer: NodeJS.Timeout | undefined;
  #probing = false;
  /** Since when (performance.now()) the commit in flight has been under way; undefined between commits. */
  #commitStarted: number | undefined;
  /** The latest retention run, so the next one starts after it. */
  #pruning: Promise<number> | undefined;
  /**
   * Every record retention has deleted (or is deleting) was made before this time: the age
   * cutoff of the latest run, +Infinity once one ran by count (that deletes records of any age).
   * Set as a run is asked for, before it deletes: an export that sees its deletions sees this too.
   */
  #prunedBefore = -Infinity;
  #closed = false;
  #closing: Promise<void> | undefined;
  #committed = 0;
  #failed = 0;
  #commits = 0;

  /** Opens (creating if needed) the log at `config.path`; throws ConfigError on invalid options. */
  static async open(config: DecisionLogConfigInput): Promise<DecisionStore> {
    const parsed = decisionLogConfigSchema.safeParse(config);
    if (!parsed.success) {
      throw new ConfigError(
        parsed.error.issues.map((issue) => ({ path: ['decision_log', ...issue.path].join('.'), message: issue.message })),
        'decision_log',
      );
    }
    const options = parsed.data;
    atConfigKey('decision_log.path', () => {
      makePrivateDirSync(dirname(options.path));
      ensurePrivateDatabaseFile(options.path);
    });
    const key = checkpointKeyFor(options, options.checkpoint.key_path ?? `${options.path}.checkpoint-key.jwk`);
    const writer = await atConfigKey('decision_log.path', () => WriterThread.start({
      path: options.path,
      // WAL + FULL fsyncs the WAL at every commit: a strict append is then durable across
      // power loss, not only across a crash of this process; the group commit is what
      // makes that affordable. Relaxed mode has already accepted a loss window, so NORMAL
      // (commits survive kill -9; the last ones may not survive power loss) is enough.
      synchronous: options.durability === 'strict' ? 'FULL' : 'NORMAL',
      busyTimeoutMs: options.busy_timeout_ms,
      key,
      checkpoint: { everyRecords: options.checkpoint.every_records, intervalMs: options.checkpoint.interval_s * 1000 },
    }));
    try {
      // Opened once the writer has created the schema. WAL lets reads proceed during commits.
      const reader = new DatabaseSync(options.path, { readOnly: true, timeout: options.busy_timeout_ms });
      return new DecisionStore(options, key, writer, reader);
    } catch (error) {
      await writer.close().catch(() => undefined);
      throw error;
    }
  }

  private constructor(config: DecisionLogConfig, key: CheckpointKey, writer: WriterThread, reader: DatabaseSync) {
    this.#config = config;
    this.#key = key;
    this.#writer = writer;
    this.#readerDb = reader;
    this.reader = new DecisionReader(config.path, config.busy_timeout_ms, key);
    this.#getById = reader.prepare('SELECT seq, timestamp, body, prev_hash, hash FROM decisions WHERE decision_id = ?');

    this.#every(config.checkpoint.interval_s * 1000, () => this.#writer.checkpoint(false));
    const { max_age_days, max_records, check_interval_s } = config.retention;
    if (max_age_days !== undefined || max_records !== undefined) {
      this.#every(check_interval_s * 1000, () => this.prune());
      // A server restarted more often than check_interval_s must still prune.
      this.#after(0, () => this.prune());
    }
  }

  /**
   * Adds a decision. strict: resolves once it is committed and fsynced, rejects with
   * `decision_log_write_failed` / `decision_log_unavailable` if it cannot be (the caller
   * must then not act on the decision). relaxed: resolves at once; rejects with
   * `decision_log_backlog` when max_pending records are already waiting, and with
   * `decision_log_unavailable` while records whose commit failed wait to be retried or
   * once the writer thread has stopped.
   * Both reject `decision_record_invalid` and, after close(), `decision_log_closed`.
   */
  append(record: DecisionRecord): Promise<void> {
    if (this.#closed) return Promise.reject(new ArbiterError('decision_log_closed', 'the decision log is closed'));
    let queued: Queued;
    try {
      queued = this.#prepare(record);
    } catch (error) {
      return Promise.reject(error as Error);
    }

    if (this.#config.durability === 'strict') {
      return new Promise((resolve, reject) => {
        queued.settle = { resolve, reject };
        this.#enqueue(queued);
      });
    }
    const unavailable = this.#writer.failure ?? this.#outage;
    if (unavailable) return Promise.reject(unavailable);
    if (this.stats.pending >= this.#config.max_pending) {
      return Promise.reject(
        new ArbiterError('decision_log_backlog', `${this.stats.pending} decisions are already waiting to be committed`),
      );
    }
    this.#enqueue(queued);
    return Promise.resolve();
  }

  #enqueue(queued: Queued): void {
    if (this.#queue.length === 0) this.#queuedSince = performance.now();
    this.#queue.push(queued);
    this.#scheduleFlush();
  }

  /** The record of a decision id, in any case: ids are minted in lower case, and a UUID read back in capitals (a SIEM, a ticket) is the same id. */
  get(decisionId: string): StoredDecision | undefined {
    const row = readRow<StoredRow>(this.#getById, decisionId.toLowerCase());
    return row && toStoredDecision(row);
  }

  /** One page of matching decisions, newest first; throws `decision_query_invalid`, `decision_cursor_invalid`, or `decision_query_incomplete` for a page after retention pruned since the first. */
  query(filters: DecisionFilters = {}, page: PageRequest = {}): DecisionPage {
    return queryDecisions(this.#readerDb, validFilters(filters), page, () => this.#prunedBefore);
  }

  /** Every matching decision, newest first, streamed (e.g. as NDJSON) without loading them all. */
  export(filters: DecisionFilters = {}): Iterable<StoredDecision> {
    return exportDecisions(this.#readerDb, validFilters(filters), () => this.#prunedBefore);
  }

  /** Checks the whole chain, its checkpoints and retention anchor; yields to the event loop as it goes. */
  verify(): Promise<VerifyReport> {
    return verifyChain(this.#config.path, this.#key);
  }

  /**
   * Applies `retention` now (it also runs every check_interval_s) and resolves with the
   * number of records deleted. Runs one after another: a call made during a run starts
   * its own once that one ends, so it sees everything appended before the call.
   */
  prune(now = Date.now()): Promise<number> {
    const { max_age_days: maxAgeDays, max_records: maxRecords } = this.#config.retention;
    const before = maxRecords !== undefined ? Infinity : maxAgeDays !== undefined ? ageCutoff(now, maxAgeDays) : -Infinity;
    this.#prunedBefore = Math.max(this.#prunedBefore, before);
    this.reader.setPrunedBefore(this.#prunedBefore);
    const run = (this.#pruning ?? Promise.resolve())
      .catch(() => undefined)
      .then(() => this.#writer.prune({ maxAgeDays, maxRecords }, now, PRUNE_STEP_RECORDS));
    this.#pruning = run;
    return run;
  }

  /** Called with each committed batch, in chain order (e.g. to ship records to a log pipeline). */
  onCommitted(listener: CommittedListener): () => void {
    this.#committedListeners.add(listener);
    return () => this.#committedListeners.delete(listener);
  }

  /** Failures nobody awaits: relaxed-mode commits, background checkpoints and pruning, throwing listeners. */
  onError(listener: ErrorListener): () => void {
    this.#errorListeners.add(listener);
    return () => this.#errorListeners.delete(listener);
  }

  /** Called with the duration of each batch the writer committed (not per record: a batch is one transaction). */
  onCommitTime(listener: CommitTimeListener): () => void {
    this.#commitTimeListeners.add(listener);
    return () => this.#commitTimeListeners.delete(listener);
  }

  /**
   * Why decisions cannot be recorded right now, or undefined: the writer thread stopped, a
   * relaxed log waits to retry a failed commit or holds max_pending records (appends are
   * refused either way), a commit has been under
   * way for STRICT_OUTAGE_AFTER_MS, or every commit of a strict log has failed for as long.
   * Every decision is denied audit_unavailable (or, behind a hung commit, waits) meanwhile, so
   * /readyz reports it. A strict log still sends each decision's record to the writer: one
   * commit that goes through (or a probe) ends it.
   */
  get unavailable(): Error | undefined {
    const stopped = this.#writer.failure ?? this.#outage;
    if (stopped) return stopped;
    // relaxed: append refuses every record past max_pending, as it does during an outage.
    const { pending } = this.stats;
    if (this.#config.durability === 'relaxed' && pending >= this.#config.max_pending) {
      return new ArbiterError('decision_log_backlog', `${pending} decisions wait to be committed (decision_log.max_pending): new ones are refused until they are`);
    }
    // A disk that stops answering (a stalled network volume) fails no commit: its fsync does not
    // return, and the decisions of a strict log wait for it with no answer, as long as it hangs.
    const hungMs = this.#commitStarted === undefined ? 0 : performance.now() - this.#commitStarted;
    if (hungMs >= STRICT_OUTAGE_AFTER_MS) {
      return new ArbiterError(
        'decision_log_unavailable',
        `a commit of ${this.#committing} decisions has been under way for ${Math.floor(hungMs / 1000)} s (the disk, or a lock held past it, does not answer): the decisions it records wait`,
      );
    }
    if (!this.#failing) return undefined;
    const failingMs = performance.now() - this.#failing.since;
    if (failingMs < STRICT_OUTAGE_AFTER_MS) return undefined;
    return new ArbiterError(
      'decision_log_unavailable',
      `every commit has failed for ${Math.floor(failingMs / 1000)} s, the last: ${this.#failing.message}`,
    );
  }

  /**
   * relaxed: decisions are answered before their records commit (within flush_interval_ms, and
   * later while commits fail), so a lookup of one just answered may not find it yet. Undefined
   * when strict: a decision is answered only once its record is committed.
   */
  get answeredBeforeCommit(): { flushIntervalMs: number } | undefined {
    return this.#config.durability === 'relaxed' ? { flushIntervalMs: this.#config.flush_interval_ms } : undefined;
  }

  /** The records no checkpoint covered when the log was opened (see WriterThread.unsignedAtOpen); undefined when none. */
  get unsignedAtOpen(): UnsignedTail | undefined {
    return this.#writer.unsignedAtOpen;
  }

  get stats(): DecisionLogStats {
    return { pending: this.#queue.length + this.#committing, committed: this.#committed, failed: this.#failed, commits: this.#commits };
  }

  /** The writer thread's V8 heap, for /metrics. */
  writerHeap(): Promise<ThreadHeap> {
    return this.#writer.heapStatistics();
  }

  /** The reader thread's V8 heap, for /metrics; undefined until a read has started the thread. */
  readerHeap(): Promise<ThreadHeap> | undefined {
    return this.reader.heapStatistics();
  }

  /** Commits everything accepted, signs a final checkpoint and closes the database. */
  /** Commits what is queued and stops the writer. A later call waits for the first; only the first reports a failure. */
  close(): Promise<void> {
    if (this.#closing) return this.#closing.catch(() => undefined);
    return (this.#closing = this.#closeOnce());
  }

  async #closeOnce(): Promise<void> {
    this.#closed = true;
    for (const timer of this.#timers) clearTimeout(timer);
    clearInterval(this.#probeTimer);
    while (this.#inFlight || this.#queue.length > 0) {
      if (!this.#inFlight) this.#flush();
      await this.#inFlight;
    }
    // The reader goes first: the connection that closes last copies the WAL into the database
    // file and removes it, which a read-only one cannot do. Left to the reader, the last records
    // (up to wal_autocheckpoint pages) stay in the -wal file, and a copy of the .db alone lacks them.
    // The reader thread answers the reads queued on it first.
    await this.reader.close();
    this.#readerDb.close();
    await this.#writer.close();
  }

  #prepare(record: DecisionRecord): Queued {
    const masked = applyMask(validRecord(record), this.#config.mask);
    const { decision_id, timestamp, endpoint, caller, bundle, revision } = masked;
    return {
      record: this.#committedListeners.size > 0 ? masked : undefined,
      prepared: {
        decision_id, timestamp, endpoint, caller, bundle, revision,
        columns: deriveIndexColumns(masked),
        body: canonicalJson(masked),
      },
    };
  }

  /**
   * strict: the queue goes to the writer once the current turn's appends are in (or,
   * with a commit in progress, when it completes). relaxed: after flush_interval_ms, or
   * sooner once a full batch is waiting (but not while a failed commit waits to be retried).
   */
  #scheduleFlush(): void {
    if (this.#inFlight || this.#flushImmediate) return;
    if (this.#config.durability === 'strict' || (this.#queue.length >= this.#config.max_batch && !this.#outage)) {
      clearTimeout(this.#flushTimer);
      this.#flushTimer = undefined;
      this.#flushImmediate = setImmediate(() => this.#flush());
    } else {
      // Due flush_interval_ms after the oldest queued record arrived, not after this call: records
      // that queued during a slow commit must not wait for that commit plus a whole interval.
      const since = this.#queuedSince ?? performance.now();
      const due = Math.max(0, since + this.#config.flush_interval_ms - performance.now());
      this.#flushTimer ??= setTimeout(() => this.#flush(), due);
    }
  }

  #flush(): void {
    clearImmediate(this.#flushImmediate);
    clearTimeout(this.#flushTimer);
    this.#flushImmediate = undefined;
    this.#flushTimer = undefined;
    if (this.#inFlight || this.#queue.length === 0) return;
    const { max_batch } = this.#config;
    const batch = this.#queue.length <= max_batch ? this.#queue : this.#queue.slice(0, max_batch);
    this.#queue = this.#queue.length <= max_batch ? [] : this.#queue.slice(max_batch);
    // A backlog left behind keeps its (older) arrival time; an empty queue starts afresh.
    if (this.#queue.length === 0) this.#queuedSince = undefined;
    this.#inFlight = this.#commit(batch).finally(() => {
      this.#inFlight = undefined;
      if (this.#queue.length === 0 || this.#closed) return;
      // What queued during the commit is the next group; strict sends it straight away.
      if (this.#config.durability === 'strict') this.#flush();
      else this.#scheduleFlush();
    });
  }

  async #commit(batch: Queued[]): Promise<void> {
    let result: CommitResult;
    this.#committing = batch.length;
    const started = performance.now();
    this.#commitStarted = started;
    try {
      result = await this.#writer.commit(batch.map((queued) => queued.prepared));
    } catch (error) {
      // The thread did not take the batch (it stopped, or failed to read it): nothing was committed.
      result = { firstSeq: 0, prevHash: '', hashes: '', failures: [], unfinished: { from: 0, message: (error as Error).message } };
    }
    this.#committing = 0;
    this.#commitStarted = undefined;
    if (!result.unfinished) {
      const seconds = (performance.now() - started) / 1000;
      for (const listener of this.#commitTimeListeners) listener(seconds);
    }
    const attempted = result.unfinished ? batch.slice(0, result.unfinished.from) : batch;
    const stored = this.#settle(attempted, result);
    if (result.unfinished) {
      this.#notCommitted(batch.slice(result.unfinished.from), result.unfinished.message);
    } else {
      this.#outage = undefined;
      this.#commitsGoThrough();
    }
    if (!stored || stored.length === 0) return;
    for (const listener of this.#committedListeners) {
      try {
        listener(stored);
      } catch (error) {
        this.#emitError(error as Error);
      }
    }
  }

  /**
   * Settles the records the writer committed or refused (`result.failures`), in batch order;
   * returns the committed ones with their chain links when someone listens.
   */
  #settle(attempted: readonly Queued[], result: CommitResult): StoredDecision[] | undefined {
    // Copies for listeners are made only when someone listens: this runs per decision.
    const stored: StoredDecision[] | undefined = this.#committedListeners.size > 0 ? [] : undefined;
    let committed = 0;
    let failure: ArbiterError | undefined;
    let nextFailure = 0;
    attempted.forEach((queued, index) => {
      const failed = result.failures[nextFailure];
      if (failed?.index === index) {
        nextFailure += 1;
        failure = new ArbiterError('decision_log_write_failed', `decision log commit failed: ${failed.message}`);
        queued.settle?.reject(failure);
        return;
      }
      // A record queued before the first listener was added is not shipped to it.
      if (queued.record) stored?.push({ ...queued.record, ...committedLink(result, committed) });
      committed += 1;
      queued.settle?.resolve();
    });
    this.#committed += committed;
    if (committed > 0) this.#commits += 1;
    if (failure && this.#config.durability === 'relaxed') {
      this.#failed += attempted.length - committed;
      this.#emitError(failure);
    }
    return stored;
  }

  /**
   * Records the writer could not commit through no fault of their own (a lock held past
   * busy_timeout_ms, a full disk, a stopped thread). strict: their callers are waiting and
   * get the error, so the decisions are denied. relaxed: they were answered already, so
   * they go back to the head of the queue, in order, to be tried again flush_interval_ms
   * later, and appends are refused until they commit. They are given up (counted in
   * `failed`) only when no attempt can succeed any more: the writer thread has stopped, or
   * the log is closing.
   */
  #notCommitted(records: Queued[], message: string): void {
    if (this.#config.durability === 'strict') {
      const failure = new ArbiterError('decision_log_write_failed', `decision log commit failed: ${message}`);
      for (const queued of records) queued.settle?.reject(failure);
      this.#commitsFail(message);
      return;
    }
    const stopped = this.#writer.failure;
    if (stopped || this.#closed) {
      this.#failed += records.length;
      this.#emitError(
        stopped ?? new ArbiterError('decision_log_write_failed', `decision log commit failed on close, ${records.length} decisions not recorded: ${message}`),
      );
      return;
    }
    const first = this.#outage === undefined;
    this.#queue = records.concat(this.#queue);
    this.#queuedSince = performance.now();
    this.#outage = new ArbiterError(
      'decision_log_unavailable',
      `decision log commit failed, ${this.#queue.length} decisions wait to be retried and new ones are refused: ${message}`,
    );
    if (first) this.#emitError(this.#outage);
  }

  /**
   * strict: a commit failed through no fault of its records (a decisions' one, or a probe);
   * from the first such, probe until one goes through.
   */
  #commitsFail(message: string, probe = false): void {
    const now = performance.now();
    if (this.#failing) {
      this.#failing.message = message;
      if (!probe) this.#failing.lastDecisionFailure = now;
      return;
    }
    // A probe only runs once a decision's commit has failed: `since` is that failure's.
    this.#failing = { since: now, lastDecisionFailure: now, message };
    if (this.#closed) return;
    this.#probeTimer = setInterval(() => this.#probe(), STRICT_PROBE_INTERVAL_MS);
    this.#probeTimer.unref();
  }

  #commitsGoThrough(): void {
    this.#failing = undefined;
    clearInterval(this.#probeTimer);
    this.#probeTimer = undefined;
  }

  /**
   * Skipped while a commit is in flight (its outcome says the same), and while decisions'
   * commits keep failing: a probe going through then would hide an outage they suffer.
   */
  #probe(): void {
    if (this.#probing || this.#inFlight || this.#closed || !this.#failing) return;
    const sent = performance.now();
    if (sent - this.#failing.lastDecisionFailure < STRICT_PROBE_INTERVAL_MS) return;
    this.#probing = true;
    this.#writer.probe().then(
      () => {
        this.#probing = false;
        // A decision's commit that failed meanwhile outweighs it.
        if (!this.#closed && this.#failing !== undefined && this.#failing.lastDecisionFailure < sent) this.#commitsGoThrough();
      },
      (error: Error) => {
        this.#probing = false;
        // Unless a decision's commit went through meanwhile: that one tells.
        if (!this.#closed && this.#failing !== undefined) this.#commitsFail(error.message, true);
      },
    );
  }

  #every(ms: number, task: () => Promise<unknown>): void {
    const timer = setInterval(() => this.#background(task), ms);
    timer.unref();
    this.#timers.push(timer);
  }

  #after(ms: number, task: () => Promise<unknown>): void {
    const timer = setTimeout(() => this.#background(task), ms);
    timer.unref();
    this.#timers.push(timer);
  }

  #background(task: () => Promise<unknown>): void {
    task().catch((error: Error) => {
      if (!this.#closed) this.#emitError(error);
    });
  }

  #emitError(error: Error): void {
    for (const listener of this.#errorListeners) listener(error);
  }
}

/**
 * The key that signs the log at `path`. A log that already holds signed marks keeps the key
 * that signed them: a key generated in place of a missing file, or another key, would sign
 * on from marks it cannot verify, so verify would report the untouched log as tampered
 * with, and retention would stop for good. Only a log with nothing signed yet gets a new key.
 */
function checkpointKeyFor({ path, busy_timeout_ms }: DecisionLogConfig, keyPath: string): CheckpointKey {
  const signer = atConfigKey('decision_log.path', () => signingKeyId(path, busy_timeout_ms));
  const key = atConfigKey('decision_log.checkpoint.key_path', () => {
    try {
      return loadCheckpointKey(keyPath);
    } catch (error) {
      // An insecure or unreadable key is the operator's file to fix: named like any other
      // configured file (exit 2, the key path), not left as an internal error without it.
      if (error instanceof ArbiterError && (error.code === 'checkpoint_key_insecure' || error.code === 'checkpoint_key_invalid')) {
        throw new ConfigError([{ path: 'decision_log.checkpoint.key_path', message: error.message }], 'decision_log');
      }
      throw error;
    }
  });
  if (signer === undefined) return key ?? atConfigKey('decision_log.checkpoint.key_path', () => createCheckpointKey(keyPath));
  const restore = 'restore the key file that signed it (a new key cannot verify what it signed)';
  if (!key) {
    throw new ConfigError(
      [{ path: 'decision_log.checkpoint.key_path', message: `${keyPath} does not exist, but the decision log ${path} is signed by checkpoint key ${signer}: ${restore}` }],
      'decision_log',
    );
  }
  if (key.id !== signer) {
    throw new ConfigError(
      [{ path: 'decision_log.checkpoint.key_path', message: `${keyPath} holds checkpoint key ${key.id}, but the decision log ${path} is signed by key ${signer}: ${restore}` }],
      'decision_log',
    );
  }
  return key;
}

/** The id of the key that signed the log's anchor (else its newest checkpoint); undefined for a log with nothing signed yet. */
function signingKeyId(path: string, busyTimeoutMs: number): string | undefined {
  if (!existsSync(path)) return undefined;
  const db = new DatabaseSync(path, { readOnly: true, timeout: busyTimeoutMs });
  try {
    const tables = new Set((db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((row) => row.name));
    const newest = (table: string) =>
      tables.has(table) ? (db.prepare(`SELECT key_id FROM ${table} ORDER BY seq DESC LIMIT 1`).get() as { key_id: string } | undefined) : undefined;
    return (newest('anchors') ?? newest('checkpoints'))?.key_id;
  } finally {
    db.close();
  }
}

/**
 * What to tell operators about records no checkpoint covered when the log opened: the previous
 * run was killed before it signed them, or they were chained on behind a stopped server whose
 * shutdown checkpoint was deleted. Verify passes both, and once this server's first checkpoint
 * signs them as found nothing in the file tells them apart any more.
 */
export function unsignedTailWarning({ from, to, checkpoint }: UnsignedTail): string {
  return (
    `decision log: records seq ${from} to ${to} follow the last checkpoint (seq ${checkpoint}) and no signed checkpoint covers them: ` +
    'the previous run was killed before it signed them, or the checkpoint its shutdown signed was deleted and they were added while no server ran. ' +
    'This server signs them as found with its first checkpoint: run arbiter decisions verify, and check them against the records shipped off the host ' +
    'or a copy of the last checkpoint kept elsewhere'
  );
}

/** `record` when it is valid (the common case, checked cheaply), else zod's parse of it, which names what is wrong. */
function validRecord(record: DecisionRecord): DecisionRecord {
  if (isDecisionRecord(record)) return record;
  const parsed = decisionRecordSchema.safeParse(record);
  if (!parsed.success) throw new ArbiterError('decision_record_invalid', z.prettifyError(parsed.error));
  return parsed.data;
}
