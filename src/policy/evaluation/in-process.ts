import { PolicyEngine } from '../engine.ts';
import { overlay } from '../overlay.ts';
import type { EvaluableBundle, PolicyEvaluation, PolicyEvaluator, PolicyInstances } from './evaluator.ts';

/** Retired revisions remembered: far more than decisions can be holding at once. */
const MAX_RETIRED = 1024;

/**
 * Evaluates on the main thread: no message round trip, but no deadline either (a looping
 * policy blocks the server). For benchmarks and debugging: `engine.workers: 0`.
 */
export class InProcessEvaluator implements PolicyEvaluator {
  readonly #maxMemoryPages: number;
  readonly #engines = new Map<string, { engine: Promise<PolicyEngine>; data: Record<string, unknown> }>();
  /** Revisions that no longer serve, oldest first: one asked for late gets an instance it does not keep. */
  readonly #retired = new Set<string>();
  #liveData: Record<string, unknown> = {};
  #version = 0;

  constructor(options: { maxMemoryPages: number }) {
    this.#maxMemoryPages = options.maxMemoryPages;
  }

  async evaluate(bundle: EvaluableBundle, entrypoint: string, input: string): Promise<PolicyEvaluation> {
    // A decision that picked a revision before its release may still ask for it: load it for this evaluation only.
    const engine = this.#retired.has(bundle.digest) ? this.#load(bundle) : this.#instance(bundle);
    try {
      return { ...(await engine).evaluateRaw(entrypoint, input), dataVersion: this.#version };
    } catch (error) {
      if (this.#engines.get(bundle.digest)?.engine === engine) this.#engines.delete(bundle.digest);
      return { ok: false, code: 'policy_error', message: `policy module cannot be loaded: ${(error as Error).message}`, dataVersion: this.#version };
    }
  }

  setLiveData(data: Record<string, unknown>, version: number): void {
    this.#liveData = data;
    this.#version = version;
    for (const { engine, data: bundleData } of this.#engines.values()) void engine.then((e) => e.setData(overlay(data, bundleData)), () => {});
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
      loaded = { engine: this.#load(bundle), data: bundle.data };
      this.#engines.set(bundle.digest, loaded);
    }
    return loaded.engine;
  }

  #load(bundle: EvaluableBundle): Promise<PolicyEngine> {
    return PolicyEngine.load(bundle.wasm, { maxMemoryPages: this.#maxMemoryPages }).then((engine) => {
      engine.setData(overlay(this.#liveData, bundle.data));
      return engine;
    });
  }

  async policyInstances(): Promise<PolicyInstances[]> {
    return [{ thread: 'main', digests: [...this.#engines.keys()] }];
  }

  async close(): Promise<void> {
    this.#engines.clear();
  }
}
