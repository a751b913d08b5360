import type { Logger } from 'pino';
import { errorMessage } from '../../errors.ts';
import { dataFailure, PolicyEngine, type EvaluationFailureCode } from '../engine.ts';
import type { Manifest } from '../manifest.ts';
import { overlay } from '../overlay.ts';
import { checkPolicyWasm, type PolicyWasmInfo } from '../wasm-check.ts';
import { bundleFields, inputJson, type EvaluableBundle, type EvaluationInput, type PolicyEvaluation, type PolicyEvaluator, type PolicyInstances } from './evaluator.ts';

/** Retired revisions remembered: far more than decisions can be holding at once. */
const MAX_RETIRED = 1024;

/**
 * Evaluates on the main thread: no message round trip, but no deadline either (a looping
 * policy blocks the server). For benchmarks and debugging: `engine.workers: 0`.
 */
export class InProcessEvaluator implements PolicyEvaluator {
  readonly #maxMemoryPages: number;
  readonly #logger: Logger;
  readonly #engines = new Map<string, { engine: Promise<PolicyEngine>; layer: EvaluableBundle }>();
  /** Revisions that no longer serve, oldest first: one asked for late gets an instance it does not keep. */
  readonly #retired = new Set<string>();
  /** Revisions whose instance could not take the live data: dropped, they deny with the reason until the next data version. */
  readonly #failed = new Map<string, { code: EvaluationFailureCode; message: string; bundle: EvaluableBundle }>();
  #liveData: Record<string, unknown> = {};
  #version = 0;
  /**
   * The live data version each instance holds: it takes a new one a turn after setLiveData,
   * so an evaluation already waiting for its instance runs on the one before, and says so.
   */
  readonly #applied = new WeakMap<PolicyEngine, number>();

  constructor(options: { maxMemoryPages: number; logger: Logger }) {
    this.#maxMemoryPages = options.maxMemoryPages;
    this.#logger = options.logger;
  }

  async evaluate(bundle: EvaluableBundle, entrypoint: string, input: EvaluationInput): Promise<PolicyEvaluation> {
    const { digest } = bundle;
    if (!this.#failed.has(digest)) {
      // A decision that picked a revision before its release may still ask for it: load it for this evaluation only.
      const pending = this.#retired.has(digest) ? this.#load(bundle) : this.#instance(bundle);
      let engine: PolicyEngine;
      try {
        engine = await pending;
      } catch (error) {
        if (this.#engines.get(digest)?.engine === pending) this.#engines.delete(digest);
        return { ok: false, code: 'policy_error', message: `policy module cannot be loaded: ${(error as Error).message}`, dataVersion: this.#version };
      }
      // A write that landed while this evaluation waited is applied now, not a turn later:
      // the input, built now, describes the live data of this moment.
      if (!this.#failed.has(digest) && this.#applied.get(engine) !== this.#version) this.#setData(digest, engine, bundle);
      // Checked again: live data that does not fit may have dropped the instance meanwhile.
      if (!this.#failed.has(digest)) {
        let json: string;
        try {
          json = inputJson(input);
        } catch (error) {
          return { ok: false, code: 'policy_error', message: `the policy input could not be built: ${errorMessage(error)}`, dataVersion: this.#version };
        }
        return { ...engine.evaluateRaw(entrypoint, json), dataVersion: this.#applied.get(engine) ?? this.#version };
      }
    }
    const { code, message } = this.#failed.get(digest)!;
    return { ok: false, code, message, dataVersion: this.#version };
  }

  revisionFailure(digest: string): { code: EvaluationFailureCode; message: string } | undefined {
    const failure = this.#failed.get(digest);
    return failure && { code: failure.code, message: failure.message };
  }

  /** On the main thread, as evaluations here: no deadline. */
  checkModule(wasm: Uint8Array<ArrayBuffer>, manifest: Pick<Manifest, 'wasm'>): Promise<PolicyWasmInfo> {
    try {
      return Promise.resolve(checkPolicyWasm(wasm, manifest));
    } catch (error) {
      return Promise.reject(error as Error);
    }
  }

  setLiveData(data: Record<string, unknown>, version: number): void {
    this.#liveData = data;
    this.#version = version;
    // A revision whose instance could not take the previous data gets a fresh one with this
    // version, at once if it serves, so what revisionFailure says follows the data, not decisions.
    const failed = [...this.#failed.values()];
    this.#failed.clear();
    for (const [digest, { engine, layer }] of this.#engines) {
      // Applied in order; a version already replaced by a newer one is skipped, the newer one is applied after.
      void engine.then((e) => {
        if (this.#version === version && this.#applied.get(e) !== version) this.#setData(digest, e, layer);
      }, () => {});
    }
    for (const { bundle } of failed) if (!this.#retired.has(bundle.digest)) void this.#instance(bundle).catch(() => undefined);
  }

  release(digest: string): void {
    this.#engines.delete(digest);
    this.#retired.delete(digest);
    this.#retired.add(digest);
    // Remembered long enough for any decision still holding the revision, not forever (pull mode retires one per change).
    if (this.#retired.size > MAX_RETIRED) this.#retired.delete(this.#retired.values().next().value!);
  }

  retain(digest: string): void {
    this.#retired.delete(digest);
  }

  /** The cached instance of a serving revision. */
  #instance(bundle: EvaluableBundle): Promise<PolicyEngine> {
    let loaded = this.#engines.get(bundle.digest);
    if (!loaded) {
      loaded = { engine: this.#load(bundle), layer: bundle };
      this.#engines.set(bundle.digest, loaded);
    }
    return loaded.engine;
  }

  #load(bundle: EvaluableBundle): Promise<PolicyEngine> {
    return PolicyEngine.load(bundle.wasm, { maxMemoryPages: this.#maxMemoryPages }).then((engine) => {
      this.#setData(bundle.digest, engine, bundle);
      return engine;
    });
  }

  /**
   * Sets the current live data, overlaid with the bundle's own, in an instance. One that cannot
   * take it (past its memory ceiling) must not answer on old or half-set data: it is dropped,
   * and evaluations of its revision deny with the reason until the next data version.
   */
  #setData(digest: string, engine: PolicyEngine, layer: EvaluableBundle): void {
    try {
      engine.setData(overlay(this.#liveData, layer));
      this.#applied.set(engine, this.#version);
    } catch (error) {
      const failure = dataFailure(error, this.#version);
      this.#failed.set(digest, { ...failure, bundle: layer });
      this.#engines.delete(digest);
      this.#logger.error({ ...bundleFields(digest, layer), err: failure.message }, 'live data could not be set in a policy instance; its evaluations deny until the next data version');
    }
  }

  async policyInstances(): Promise<PolicyInstances[]> {
    return [{ thread: 'main', digests: [...this.#engines.keys()] }];
  }

  async close(): Promise<void> {
    this.#engines.clear();
  }
}
