import { PolicyEngine } from '../engine.ts';
import { overlay } from '../overlay.ts';
import type { EvaluableBundle, PolicyEvaluation, PolicyEvaluator, PolicyInstances } from './evaluator.ts';

/**
 * Evaluates on the main thread: no message round trip, but no deadline either (a looping
 * policy blocks the server). For benchmarks and debugging: `engine.workers: 0`.
 */
export class InProcessEvaluator implements PolicyEvaluator {
  readonly #maxMemoryPages: number;
  readonly #engines = new Map<string, { engine: Promise<PolicyEngine>; data: Record<string, unknown> }>();
  #liveData: Record<string, unknown> = {};
  #version = 0;

  constructor(options: { maxMemoryPages: number }) {
    this.#maxMemoryPages = options.maxMemoryPages;
  }

  async evaluate(bundle: EvaluableBundle, entrypoint: string, input: string): Promise<PolicyEvaluation> {
    let loaded = this.#engines.get(bundle.digest);
    if (!loaded) {
      const engine = PolicyEngine.load(bundle.wasm, { maxMemoryPages: this.#maxMemoryPages }).then((e) => {
        e.setData(overlay(this.#liveData, bundle.data));
        return e;
      });
      loaded = { engine, data: bundle.data };
      this.#engines.set(bundle.digest, loaded);
    }
    try {
      return { ...(await loaded.engine).evaluateRaw(entrypoint, input), dataVersion: this.#version };
    } catch (error) {
      this.#engines.delete(bundle.digest);
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
  }

  async policyInstances(): Promise<PolicyInstances[]> {
    return [{ thread: 'main', digests: [...this.#engines.keys()] }];
  }

  async close(): Promise<void> {
    this.#engines.clear();
  }
}
