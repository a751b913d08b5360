import { Worker, type ResourceLimits } from 'node:worker_threads';
import { z } from 'zod';
import { ArbiterError, DecisionLogCorruptError, errorMessage } from '../errors.ts';
import { workerHeap, type ThreadHeap } from '../metrics/thread-heap.ts';
import { decisionFiltersSchema } from './query.ts';
import type { DecisionFilters, DecisionPage, PageRequest } from './query.ts';
import type { StoredDecision } from './record.ts';
import type { CheckpointPublicKey } from './chain.ts';
import { ThreadRequests, type ThreadReply, type Unnumbered } from './thread-requests.ts';
import type { VerifyReport } from './verify.ts';

/** What the reader thread is started with. */
export interface ReaderSetup {
  path: string;
  busyTimeoutMs: number;
  /** What verify checks signatures with (the public half only: KeyObjects clone). */
  key: CheckpointPublicKey;
  /** One BigInt64: the store's prunedBefore (see encodePrunedBefore), read by exports. */
  prunedBefore: SharedArrayBuffer;
  /** Two Int32s: [held (1 while tests hold reads), reads waiting at the hold]. */
  gate: SharedArrayBuffer;
}

export type ReaderRequest =
  | { id: number; op: 'query'; filters: DecisionFilters; page: PageRequest }
  | { id: number; op: 'get'; decisionId: string }
  /** The next chunk of export `exportId`, started with `filters` (given on the first request only). */
  | { id: number; op: 'export'; exportId: number; filters?: DecisionFilters; records: number }
  /** The export's reader stopped early (the client went away): drop it. */
  | { id: number; op: 'export_end'; exportId: number }
  | { id: number; op: 'verify' }
  | { id: number; op: 'close' };

/** An error as it crosses threads: structured clone keeps neither its class nor its code. */
export interface WireError {
  message: string;
  code?: string;
  seq?: number;
}

export type ReaderReply = ThreadReply<WireError>;

/** A chunk of an export: NDJSON lines, and whether it ended (with `error` when a record stopped it). */
export interface ExportChunk {
  lines: string;
  done: boolean;
  error?: WireError;
}

export function toWireError(error: unknown): WireError {
  if (error instanceof DecisionLogCorruptError) return { message: error.message, code: error.code, seq: error.seq };
  if (error instanceof ArbiterError) return { message: error.message, code: error.code };
  return { message: errorMessage(error) };
}

/**
 * The error the route answers with: an ArbiterError keeps its code (a 400, 404, 409, or a
 * decision_log_corrupt 500 naming the seq); anything else stays a plain Error, which the
 * server answers 500 internal_error and logs, as it did when reads ran on the main thread.
 */
function fromWireError(wire: WireError): Error {
  if (wire.seq !== undefined) return new DecisionLogCorruptError(wire.seq, wire.message);
  if (wire.code !== undefined) return new ArbiterError(wire.code, wire.message);
  return new Error(wire.message);
}

/** prunedBefore as a BigInt64, for Atomics: ±Infinity at the ends of the range, a time rounded up. */
function encodePrunedBefore(ms: number): bigint {
  if (ms === -Infinity) return -(2n ** 63n);
  if (ms === Infinity) return 2n ** 63n - 1n;
  // Rounded up: `from >= prunedBefore` for an integer `from` reads the same either way.
  return BigInt(Math.ceil(ms));
}

export function decodePrunedBefore(value: bigint): number {
  if (value === -(2n ** 63n)) return -Infinity;
  if (value === 2n ** 63n - 1n) return Infinity;
  return Number(value);
}

/**
 * Without a cap a worker's old generation may grow as large as the main thread's (up to about
 * 4 GiB): one read of pages of large records (bodies up to server.body_limit_bytes each, 1,000
 * to a page) could take the process's memory before anything stopped it. Capped, such a read
 * ends the thread (ERR_WORKER_OUT_OF_MEMORY): the reads on it answer 500 and the next read starts
 * a new thread, while decisions go on. A full page at the default body limit (1,000 records of
 * ~64 KiB) reads within a 128 MiB cap (an idle reader thread uses ~16 MiB): 512 MiB leaves room
 * for larger bodies (a page that needs more is one to ask for with a smaller limit).
 */
const READER_RESOURCE_LIMITS: ResourceLimits = { maxOldGenerationSizeMb: 512 };

/**
 * The auditor API's reads of the decision log (queries, lookups by id, export pages, verify), run on
 * a thread of their own with its own read-only connection: a query that reads every decision
 * one filter matches takes ~100 ms per 200,000, and on the main thread it held up every
 * decision made meanwhile. WAL lets this connection read beside the writer's commits.
 *
 * One thread: reads queue on it, in the order asked. It starts with the first read, so a log
 * nobody reads costs no thread. If it dies (out of memory), the reads waiting fail (500) and the
 * next read starts a new one.
 */
export class DecisionReader {
  readonly #setup: ReaderSetup;
  readonly #resourceLimits: ResourceLimits;
  readonly #prunedBefore: BigInt64Array;
  readonly #gate: Int32Array;
  readonly #requests = new ThreadRequests<ReaderRequest>();
  #worker: Worker | undefined;
  #exited: Promise<void> | undefined;
  #nextExportId = 1;
  #closed = false;

  /** `resourceLimits` other than the default for tests only: a smaller cap is reached by a test's log. */
  constructor(path: string, busyTimeoutMs: number, key: CheckpointPublicKey, resourceLimits: ResourceLimits = READER_RESOURCE_LIMITS) {
    this.#resourceLimits = resourceLimits;
    this.#setup = {
      path,
      busyTimeoutMs,
      key: { id: key.id, publicKey: key.publicKey },
      prunedBefore: new SharedArrayBuffer(BigInt64Array.BYTES_PER_ELEMENT),
      gate: new SharedArrayBuffer(2 * Int32Array.BYTES_PER_ELEMENT),
    };
    this.#prunedBefore = new BigInt64Array(this.#setup.prunedBefore);
    this.#gate = new Int32Array(this.#setup.gate);
    this.setPrunedBefore(-Infinity);
  }

  /** What exports compare a retention anchor that moved against (see exportDecisions): shared, so it is current when read. */
  setPrunedBefore(ms: number): void {
    Atomics.store(this.#prunedBefore, 0, encodePrunedBefore(ms));
  }

  /** One page of matching decisions, newest first; rejects `decision_query_invalid`, `decision_cursor_invalid`, or `decision_query_incomplete` (see DecisionStore.query). */
  query(filters: DecisionFilters = {}, page: PageRequest = {}): Promise<DecisionPage> {
    let parsed: DecisionFilters;
    try {
      parsed = validFilters(filters);
    } catch (error) {
      return Promise.reject(error as Error);
    }
    return this.#request({ op: 'query', filters: parsed, page }) as Promise<DecisionPage>;
  }

  /** The record of a decision id, in any case (see DecisionStore.get). */
  get(decisionId: string): Promise<StoredDecision | undefined> {
    return this.#request({ op: 'get', decisionId }) as Promise<StoredDecision | undefined>;
  }

  /**
   * The chain check of DecisionStore.verify, walked on the reader thread (on connections of its
   * own, in one read snapshot). The walk yields between stretches of rows, so reads asked
   * meanwhile are answered between them rather than after it.
   */
  verify(): Promise<VerifyReport> {
    return this.#request({ op: 'verify' }) as Promise<VerifyReport>;
  }

  /**
   * Every matching decision, newest first, as NDJSON text a chunk of up to `recordsPerChunk`
   * records at a time, read as the caller asks for the next: one chunk in flight, whatever the
   * log's size. Throws `decision_query_invalid` at once; a record that stops the export (or
   * retention pruning under it: decision_export_incomplete) is thrown after the chunk of
   * lines before it. Returning early (a client that went away) lets the thread drop the export.
   */
  export(filters: DecisionFilters, recordsPerChunk: number): AsyncGenerator<string, void, undefined> {
    return this.#exportChunks(validFilters(filters), recordsPerChunk);
  }

  async *#exportChunks(filters: DecisionFilters, records: number): AsyncGenerator<string, void, undefined> {
    const exportId = this.#nextExportId++;
    let ended = false;
    try {
      for (let first = true; !ended; first = false) {
        const chunk = (await this.#request({ op: 'export', exportId, ...(first && { filters }), records })) as ExportChunk;
        // The thread forgets an export once it ended, or stopped on an error.
        ended = chunk.done;
        if (chunk.lines) yield chunk.lines;
        if (chunk.error) throw fromWireError(chunk.error);
      }
    } catch (error) {
      // A request that failed (the thread stopped) leaves nothing on it to drop.
      ended = true;
      throw error;
    } finally {
      if (!ended) this.#request({ op: 'export_end', exportId }).catch(() => undefined);
    }
  }

  /**
   * The reader thread's V8 heap, for /metrics; undefined while there is no thread: a scrape
   * does not start one (it starts with the first read), so a log nobody reads shows none.
   */
  heapStatistics(): Promise<ThreadHeap> | undefined {
    return this.#worker && workerHeap('decision-log-reader', this.#worker);
  }

  /**
   * For tests: reads that reach the thread from now on wait there (the thread blocked, as a
   * long read holds it) until the returned function is called. `held` counts those waiting.
   */
  holdForTests(): () => void {
    Atomics.store(this.#gate, 0, 1);
    return () => {
      Atomics.store(this.#gate, 0, 0);
      Atomics.notify(this.#gate, 0);
    };
  }

  /** For tests: how many reads wait at holdForTests' hold. */
  get heldForTests(): number {
    return Atomics.load(this.#gate, 1);
  }

  /**
   * Closes the thread's connection once the reads queued before it are answered, and ends the
   * thread. Called before the writer closes: the connection that closes last removes the -wal.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const worker = this.#worker;
    if (!worker) return;
    try {
      await this.#requests.post(worker, { op: 'close' });
    } catch {
      // It stopped: nothing left open.
    } finally {
      await worker.terminate();
      await this.#exited;
    }
  }

  #request(request: Unnumbered<ReaderRequest>): Promise<unknown> {
    if (this.#closed) return Promise.reject(new ArbiterError('decision_log_closed', 'the decision log is closed'));
    return this.#requests.post(this.#worker ?? this.#start(), request);
  }

  #start(): Worker {
    const worker = new Worker(new URL('./reader-worker.ts', import.meta.url), { workerData: this.#setup, resourceLimits: this.#resourceLimits });
    this.#worker = worker;
    worker.unref();
    worker.on('message', (reply: ReaderReply) => this.#requests.settle(worker, reply, fromWireError));
    let failure: Error | undefined;
    worker.on('error', (error) => (failure = error));
    this.#exited = new Promise((resolve) => {
      worker.once('exit', (code) => {
        // The next read starts a new thread; the reads this one held fail.
        if (this.#worker === worker) this.#worker = undefined;
        const stopped = new Error(`the decision log reader thread stopped (exit code ${code})${failure ? `: ${failure.message}` : ''}`, { cause: failure });
        this.#requests.rejectAll(stopped);
        resolve();
      });
    });
    return worker;
  }
}

/** Filters as the store takes them, checked here so a bad one is refused before a read is queued. */
export function validFilters(filters: DecisionFilters): DecisionFilters {
  const parsed = decisionFiltersSchema.safeParse(filters);
  if (!parsed.success) throw new ArbiterError('decision_query_invalid', z.prettifyError(parsed.error));
  return parsed.data;
}
