/**
 * Entry point of the decision log's reader thread: the auditor API's queries, lookups by id
 * and export pages, read on a read-only connection of its own, so that a read of many
 * records never holds the event loop that serves decisions. See DecisionReader.
 */
import { DatabaseSync } from 'node:sqlite';
import { parentPort, workerData } from 'node:worker_threads';
import { exportDecisions, queryDecisions, readRow, toStoredDecision } from './query.ts';
import type { DecisionFilters, StoredRow } from './query.ts';
import type { StoredDecision } from './record.ts';
import { decodePrunedBefore, toWireError } from './reader-thread.ts';
import { verifyChain } from './verify.ts';
import type { ExportChunk, ReaderReply, ReaderRequest, ReaderSetup } from './reader-thread.ts';

const setup = workerData as ReaderSetup;
const port = parentPort;
if (!port) throw new Error('reader-worker.ts runs as a worker thread only');

const prunedBefore = new BigInt64Array(setup.prunedBefore);
const gate = new Int32Array(setup.gate);
const db = new DatabaseSync(setup.path, { readOnly: true, timeout: setup.busyTimeoutMs });
const getById = db.prepare('SELECT seq, timestamp, body, prev_hash, hash FROM decisions WHERE decision_id = ?');
/** Read from the shared value at each check: a prune asked for after an export or a paged query began counts. */
const readPrunedBefore = () => decodePrunedBefore(Atomics.load(prunedBefore, 0));
/** Exports under way, by id: each holds one page of rows at most (see exportDecisions). */
const exports = new Map<number, Iterator<StoredDecision>>();
/**
 * Requests answered later (a verify's walk, which holds connections of its own): close waits
 * until their answers are sent, before the main thread, having close's, ends the thread.
 */
const answering = new Set<Promise<void>>();

port.on('message', (request: ReaderRequest) => {
  waitWhileHeld();
  let result: unknown;
  try {
    result = handle(request);
  } catch (error) {
    answer({ id: request.id, ok: false, error: toWireError(error) });
    return;
  }
  if (!(result instanceof Promise)) {
    answer({ id: request.id, ok: true, result });
    return;
  }
  const answered = result.then(
    (value: unknown) => answer({ id: request.id, ok: true, result: value }),
    (error: unknown) => answer({ id: request.id, ok: false, error: toWireError(error) }),
  );
  answering.add(answered);
  void answered.finally(() => answering.delete(answered));
});

function answer(reply: ReaderReply): void {
  port?.postMessage(reply);
}

function handle(request: ReaderRequest): unknown {
  switch (request.op) {
    case 'verify':
      return verifyChain(setup.path, setup.key);
    case 'query':
      return queryDecisions(db, request.filters, request.page, readPrunedBefore);
    case 'get': {
      // Ids are minted in lower case: a UUID read back in capitals is the same id.
      const row = readRow<StoredRow>(getById, request.decisionId.toLowerCase());
      return row && toStoredDecision(row);
    }
    case 'export':
      return exportChunk(request.exportId, request.filters, request.records);
    case 'export_end':
      exports.get(request.exportId)?.return?.();
      exports.delete(request.exportId);
      return undefined;
    case 'close':
      // The main thread ends the thread once it has this answer: every connection must be
      // closed by then, a verify's too, or the writer closing after it cannot remove the -wal.
      for (const iterator of exports.values()) iterator.return?.();
      exports.clear();
      return Promise.allSettled(answering).then(() => db.close());
  }
}

function exportChunk(exportId: number, filters: DecisionFilters | undefined, records: number): ExportChunk {
  let iterator = exports.get(exportId);
  if (!iterator) {
    if (!filters) throw new Error(`no decision export ${exportId} under way on the reader thread`);
    iterator = exportDecisions(db, filters, readPrunedBefore)[Symbol.iterator]();
    exports.set(exportId, iterator);
  }
  let lines = '';
  for (let i = 0; i < records; i++) {
    let next: IteratorResult<StoredDecision>;
    try {
      next = iterator.next();
    } catch (error) {
      exports.delete(exportId);
      return { lines, done: true, error: toWireError(error) };
    }
    if (next.done) {
      exports.delete(exportId);
      return { lines, done: true };
    }
    lines += `${JSON.stringify(next.value)}\n`;
  }
  return { lines, done: false };
}

/** Test hook (DecisionReader.holdForTests): while held, the thread blocks here, as a long read would hold it. */
function waitWhileHeld(): void {
  if (Atomics.load(gate, 0) === 0) return;
  Atomics.add(gate, 1, 1);
  Atomics.wait(gate, 0, 1);
  Atomics.sub(gate, 1, 1);
}
