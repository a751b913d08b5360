import { Worker } from 'node:worker_threads';
import { ArbiterError } from '../errors.ts';
import { workerHeap, type ThreadHeap } from '../metrics/thread-heap.ts';
import type { CheckpointKey } from './chain.ts';
import type { RetentionPolicy } from './retention.ts';
import { ThreadRequests, type ThreadReply, type Unnumbered } from './thread-requests.ts';
import type { ChainLink, CheckpointPolicy, PreparedDecision, UnsignedTail } from './writer.ts';

/** What the writer thread is started with (cloned into it; KeyObjects clone). */
export interface WriterSetup {
  path: string;
  synchronous: 'FULL' | 'NORMAL';
  busyTimeoutMs: number;
  key: CheckpointKey;
  checkpoint: CheckpointPolicy;
}

export type WriterRequest =
  | { id: number; op: 'commit'; batch: string[] }
  | { id: number; op: 'checkpoint'; force: boolean }
  | { id: number; op: 'probe' }
  | { id: number; op: 'prune'; policy: RetentionPolicy; now: number; stepRecords: number }
  | { id: number; op: 'close' };

/** The writer thread's first message, once the log is open. */
export interface WriterOpened {
  unsignedTail: UnsignedTail | undefined;
}

export type WriterReply = ThreadReply<{ message: string }>;

/**
 * What became of a batch. The records committed are the batch less `failures`, in batch
 * order, numbered on from `firstSeq`: a compact form because it crosses threads for every
 * decision (one string of hashes clones far faster than an object per record).
 */
export interface CommitResult {
  /** seq of the first record committed; each next one committed has the next seq. */
  firstSeq: number;
  /** prev_hash of the first record committed. */
  prevHash: string;
  /** The hashes of the records committed, in order, concatenated (64 hex digits each). */
  hashes: string;
  /** Records refused for what they are (a decision_id logged twice), by their index in the batch: never retried. */
  failures: { index: number; message: string }[];
  /**
   * Set when the commit failed for a reason that is not the records' own (a lock held past
   * busy_timeout_ms, a full disk, an I/O error): the records from index `from` on were not
   * committed, and the chain's head has not moved past them, so they can be tried again.
   */
  unfinished?: { from: number; message: string };
}

/** Where the `n`th record committed by `result` landed in the chain. */
export function committedLink(result: CommitResult, n: number): ChainLink {
  return {
    seq: result.firstSeq + n,
    prev_hash: n === 0 ? result.prevHash : result.hashes.slice((n - 1) * 64, n * 64),
    hash: result.hashes.slice(n * 64, (n + 1) * 64),
  };
}

type RowValues = [
  PreparedDecision['decision_id'], PreparedDecision['timestamp'], PreparedDecision['endpoint'], PreparedDecision['caller'],
  PreparedDecision['bundle'], PreparedDecision['revision'], ...IndexColumnValues,
];
type IndexColumnValues = [string | null, string | null, string | null, string | null, string | null, string | null, 0 | 1, string[]];

/**
 * A batch as it crosses to the writer thread: per record, its row values as a JSON array,
 * then its body. Cloning strings costs a fraction of cloning an object per record (which
 * took ~6 µs of the main thread's time per decision).
 */
function encodeBatch(batch: readonly PreparedDecision[]): string[] {
  const wire: string[] = [];
  for (const { decision_id, timestamp, endpoint, caller, bundle, revision, columns: c, body } of batch) {
    const values: RowValues = [
      decision_id, timestamp, endpoint, caller, bundle, revision,
      c.iss, c.sub, c.client_id, c.action, c.resource_type, c.resource_id, c.allow, c.reason_codes,
    ];
    wire.push(JSON.stringify(values), body);
  }
  return wire;
}

export function decodeBatch(wire: readonly string[]): PreparedDecision[] {
  const batch: PreparedDecision[] = [];
  for (let i = 0; i < wire.length; i += 2) {
    const [decision_id, timestamp, endpoint, caller, bundle, revision, iss, sub, client_id, action, resource_type, resource_id, allow, reason_codes] =
      JSON.parse(wire[i] as string) as RowValues;
    batch.push({
      decision_id, timestamp, endpoint, caller, bundle, revision,
      columns: { iss, sub, client_id, action, resource_type, resource_id, allow, reason_codes },
      body: wire[i + 1] as string,
    });
  }
  return batch;
}

/**
 * The writer's records live for one group commit, yet under steady load V8 grows the thread's
 * new space from 8 to 32 MiB (16 MiB semi-spaces) and keeps it while the load lasts. In a
 * 20-minute soak the writer's heap grew from 17 to 76 MiB with at most 39 MiB in use, most of
 * the process's RSS growth. With the young generation capped at 24 MiB (8 MiB semi-spaces),
 * ingest at 22,000 decisions/s measured the same (bench/decision-log.ts, alternating runs).
 */
const WRITER_RESOURCE_LIMITS = { maxYoungGenerationSizeMb: 24 };

/**
 * The main-thread side of the writer thread: requests go in order, replies settle their
 * promise. If the thread dies, every pending and later request fails: the log is then
 * unavailable, which strict mode turns into denials rather than unlogged decisions.
 */
export class WriterThread {
  readonly #worker: Worker;
  readonly #requests = new ThreadRequests<WriterRequest>();
  #failure: Error | undefined;
  #closing = false;

  static async start(setup: WriterSetup): Promise<WriterThread> {
    const worker = new Worker(new URL('./writer-worker.ts', import.meta.url), { workerData: setup, resourceLimits: WRITER_RESOURCE_LIMITS });
    let opened = false;
    let openedWith: WriterOpened | undefined;
    const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
    try {
      await new Promise<void>((resolve, reject) => {
        worker.once('message', (reply: WriterReply) => {
          if (reply.ok) openedWith = reply.result as WriterOpened;
          resolve();
        });
        worker.once('error', reject);
        void exited.then((code) => {
          if (!opened) reject(new ArbiterError('decision_log_unavailable', `decision log writer exited (${code}) while opening`));
        });
      });
      opened = true;
    } catch (error) {
      // A thread that failed to open (e.g. a refused migration) may still hold the database
      // open, and locked, until it has exited: whatever opens the file next (a retry, a check
      // of its version) must find it released.
      await exited;
      throw error;
    } finally {
      worker.removeAllListeners('error');
    }
    return new WriterThread(worker, openedWith?.unsignedTail);
  }

  /**
   * The records the log held after its newest checkpoint when this writer opened it: left
   * unsigned by a writer that was killed, or chained on behind a stopped server whose shutdown
   * checkpoint was deleted. This writer signs them as found with its first checkpoint, after
   * which verify cannot tell the two apart: said at start-up, it is said while it can be.
   */
  readonly unsignedAtOpen: UnsignedTail | undefined;

  private constructor(worker: Worker, unsignedAtOpen: UnsignedTail | undefined) {
    this.#worker = worker;
    this.unsignedAtOpen = unsignedAtOpen;
    worker.unref();
    worker.on('message', (reply: WriterReply) => this.#requests.settle(worker, reply, writeFailed));
    worker.on('error', (error) => this.#fail(error));
    worker.on('exit', (code) => this.#fail(new Error(`writer thread exited with code ${code}`)));
  }

  commit(batch: readonly PreparedDecision[]): Promise<CommitResult> {
    return this.#request({ op: 'commit', batch: encodeBatch(batch) }) as Promise<CommitResult>;
  }

  checkpoint(force: boolean): Promise<boolean> {
    return this.#request({ op: 'checkpoint', force }) as Promise<boolean>;
  }

  /** Resolves once a commit that changes nothing went through (see ChainWriter.probe); rejects if it could not. */
  probe(): Promise<void> {
    return this.#request({ op: 'probe' }) as Promise<void>;
  }

  prune(policy: RetentionPolicy, now: number, stepRecords: number): Promise<number> {
    return this.#request({ op: 'prune', policy, now, stepRecords }) as Promise<number>;
  }

  /** Why the thread is gone, once it is: every request then fails with this. */
  get failure(): Error | undefined {
    return this.#failure;
  }

  /** The writer thread's V8 heap. */
  heapStatistics(): Promise<ThreadHeap> {
    return workerHeap('decision-log-writer', this.#worker);
  }

  /** Signs a final checkpoint, closes the database and ends the thread; ended even when the checkpoint fails (which it reports). */
  async close(): Promise<void> {
    this.#closing = true;
    try {
      await this.#request({ op: 'close' });
    } finally {
      await this.#worker.terminate();
    }
  }

  #request(request: Unnumbered<WriterRequest>): Promise<unknown> {
    if (this.#failure) return Promise.reject(this.#failure);
    return this.#requests.post(this.#worker, request);
  }

  #fail(cause: Error): void {
    this.#failure ??= this.#closing
      ? new ArbiterError('decision_log_closed', 'the decision log is closed')
      : new ArbiterError('decision_log_unavailable', `decision log writer stopped: ${cause.message}`, { cause });
    this.#requests.rejectAll(this.#failure);
  }
}

/** How a failure the writer thread answered a request with reaches the caller that asked. */
function writeFailed(error: { message: string }): ArbiterError {
  return new ArbiterError('decision_log_write_failed', error.message);
}
