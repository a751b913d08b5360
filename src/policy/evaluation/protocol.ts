import type { RawEvaluation } from '../engine.ts';

/**
 * Messages between the evaluation pool (main thread) and its workers. Each worker holds
 * one WebAssembly instance per bundle revision (by digest) and the current live data;
 * messages are handled in order, so a `data` message lands between two evaluations.
 */
export type ToWorker =
  | { type: 'load'; digest: string; wasm: Uint8Array; bundleData: Record<string, unknown> }
  | { type: 'unload'; digest: string }
  | { type: 'data'; json: string; version: number }
  | { type: 'evaluate'; id: number; digest: string; entrypoint: string; input: string }
  | { type: 'instances' };

export type FromWorker =
  | { type: 'ready' }
  | { type: 'loaded'; digest: string }
  | { type: 'data_applied'; version: number }
  | { type: 'worker_error'; message: string }
  | { type: 'load_failed'; digest: string; message: string }
  | { type: 'result'; id: number; evaluation: RawEvaluation; dataVersion: number }
  /** The digests the worker holds an instance of, once every message sent before the query is handled. */
  | { type: 'instances'; digests: string[] };

export interface WorkerSettings {
  maxMemoryPages: number;
}
