import type { EvaluationFailureCode, RawEvaluation } from '../engine.ts';
import type { Manifest } from '../manifest.ts';
import type { BundleLayer } from '../overlay.ts';
import type { PolicyWasmInfo } from '../wasm-check.ts';

/**
 * Messages between the evaluation pool (main thread) and its workers. Each worker holds
 * one WebAssembly instance per bundle revision (by digest) and the current live data;
 * messages are handled in order, so a `data` message lands between two evaluations.
 */
export type ToWorker =
  | { type: 'load'; digest: string; wasm: Uint8Array; layer: BundleLayer }
  | { type: 'unload'; digest: string }
  | { type: 'data'; json: string; version: number }
  | { type: 'evaluate'; id: number; digest: string; entrypoint: string; input: string }
  /** Run checkPolicyWasm on a pushed module (it calls the module's table functions). */
  | { type: 'check'; id: number; wasm: Uint8Array<ArrayBuffer>; manifest: Pick<Manifest, 'wasm'> }
  | { type: 'instances' };

export type FromWorker =
  | { type: 'ready' }
  /**
   * The worker starts running module code outside an evaluation (loading the module, setting
   * live data in it): until the next busy, loaded, load_failed or data_applied, it is on the load deadline.
   */
  | { type: 'busy'; digest: string }
  /** The same for check `id`: the worker runs the checked module's table functions. */
  | { type: 'checking'; id: number }
  /** What check `id` found: the module's ABI tables, or the check it failed (BundleRejectedError). */
  | { type: 'checked'; id: number; info: PolicyWasmInfo }
  | { type: 'checked'; id: number; rejected: { check: string; message: string } }
  | { type: 'loaded'; digest: string }
  | { type: 'data_applied'; version: number }
  | { type: 'worker_error'; message: string }
  /** `dataVersion`: the live data the worker had (a module may fail to take it, and take the next). */
  | { type: 'load_failed'; digest: string; code: EvaluationFailureCode; message: string; dataVersion: number }
  /** Live data version `dataVersion` could not be set in this instance: the worker discarded it rather than answer on old data. */
  | { type: 'dropped'; digest: string; code: EvaluationFailureCode; message: string; dataVersion: number }
  | { type: 'result'; id: number; evaluation: RawEvaluation; dataVersion: number }
  /** The digests the worker holds an instance of, once every message sent before the query is handled. */
  | { type: 'instances'; digests: string[] };

export interface WorkerSettings {
  maxMemoryPages: number;
}
