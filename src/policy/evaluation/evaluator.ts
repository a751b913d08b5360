import type { EvaluationFailureCode, RawEvaluation } from '../engine.ts';
import type { Manifest } from '../manifest.ts';
import type { PolicyWasmInfo } from '../wasm-check.ts';
import type { ThreadHeap } from '../../metrics/thread-heap.ts';

/** A bundle revision as evaluators need it: its module, its own data and roots, and a key to cache instances by. */
export interface EvaluableBundle {
  readonly digest: string;
  readonly wasm: Uint8Array;
  readonly data: Record<string, unknown>;
  /** The manifest's roots: inside them, policies read the bundle's data only (see overlay). */
  readonly roots: readonly string[];
  /** Which bundle and revision the module is, for the log lines that name it (an active bundle always says). */
  readonly name?: string;
  readonly revision?: string;
}

/** The log fields that name a bundle revision: its digest, and its name and revision when known. */
export function bundleFields(digest: string, bundle: Pick<EvaluableBundle, 'name' | 'revision'> | undefined): { digest: string; bundle?: string; revision?: string } {
  return { digest, ...(bundle?.name !== undefined && { bundle: bundle.name }), ...(bundle?.revision !== undefined && { revision: bundle.revision }) };
}

export type PolicyEvaluation = RawEvaluation & {
  /** Version of the live data the evaluation saw. */
  dataVersion: number;
};

/** The bundle revisions one evaluation thread holds a WebAssembly instance of (each a copy of the live data). */
export interface PolicyInstances {
  thread: string;
  digests: string[];
}

/**
 * Runs entrypoints of bundle revisions on JSON input, against bundle data overlaid on the
 * current live data. Never rejects: every failure is an evaluation with a reason code.
 */
/**
 * Input JSON, or a function that builds it at the moment the evaluation starts to run on live
 * data: input that describes live data (input.data_status) must describe the version the
 * evaluation sees, and a write can land while an evaluation waits for a worker. The function
 * may run more than once (a job run again after its worker was replaced); the last run counts.
 */
export type EvaluationInput = string | (() => string);

export function inputJson(input: EvaluationInput): string {
  return typeof input === 'string' ? input : input();
}

export interface PolicyEvaluator {
  evaluate(bundle: EvaluableBundle, entrypoint: string, input: EvaluationInput): Promise<PolicyEvaluation>;
  setLiveData(data: Record<string, unknown>, version: number): void;
  /**
   * checkPolicyWasm, run where this evaluator runs module code: the check calls the module's
   * table functions, and a module that never returns from them must cost that thread, not
   * the server. Rejects with BundleRejectedError (`wasm_timeout` past the load deadline).
   */
  checkModule(wasm: Uint8Array<ArrayBuffer>, manifest: Pick<Manifest, 'wasm'>): Promise<PolicyWasmInfo>;
  /**
   * The revision no longer serves: free its instances once its evaluations are done. A decision
   * that picked it before may still ask for it; it gets an instance for that evaluation only.
   */
  release(digest: string): void;
  /** The revision serves (again, after a release): keep its instances between evaluations. */
  retain(digest: string): void;
  /**
   * The instances each evaluation thread holds, so a revision kept past its use shows.
   * `inTime`: leave out a thread that does not answer within THREAD_READ_TIMEOUT_MS (a scrape).
   */
  policyInstances(options?: { inTime?: boolean }): Promise<PolicyInstances[]>;
  /**
   * Why the current live data version cannot be evaluated on at all, if it cannot (too large to
   * hand to worker threads): every evaluation denies with it until a version that can arrives.
   */
  liveDataFailure?(): string | undefined;
  /**
   * Why revision `digest` cannot evaluate on the current live data, as its evaluations deny, if
   * an instance of it was found unable to (it could not take the data within its memory ceiling,
   * or hung taking it). Undefined when nothing is known against it: each new data version is
   * tried again, at once for a revision that serves.
   */
  revisionFailure?(digest: string): { code: EvaluationFailureCode; message: string } | undefined;
  /** The V8 heaps of the evaluator's own threads, if it has any. */
  heapStatistics?(): Promise<ThreadHeap[]>;
  close(): Promise<void>;
}
