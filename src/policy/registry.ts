import { ownedByRoots, type DataPath } from '../data/data-path.ts';
import { defineValue, isObject, type PolicyBundle } from './bundle.ts';

/**
 * Owns which revision of each bundle is active. Activation is a single map assignment:
 * a decision holds the PolicyBundle it started with, so it finishes on that revision.
 */
export class BundleRegistry {
  readonly #active = new Map<string, PolicyBundle>();
  #liveData: Record<string, unknown> = {};
  #dataVersion = 0;

  get(name: string): PolicyBundle | undefined {
    return this.#active.get(name);
  }

  list(): PolicyBundle[] {
    return [...this.#active.values()];
  }

  get size(): number {
    return this.#active.size;
  }

  activate(bundle: PolicyBundle): PolicyBundle | undefined {
    bundle.engine.setData(overlay(this.#liveData, bundle.data));
    const previous = this.#active.get(bundle.name);
    this.#active.set(bundle.name, bundle);
    return previous;
  }

  deactivate(name: string): PolicyBundle | undefined {
    const previous = this.#active.get(name);
    this.#active.delete(name);
    return previous;
  }

  /** Version of the live data every active bundle currently evaluates against. */
  get dataVersion(): number {
    return this.#dataVersion;
  }

  /** New live data for every active bundle. Copying data into WASM happens here, once per change. */
  setLiveData(data: Record<string, unknown>, version: number): void {
    this.#liveData = data;
    this.#dataVersion = version;
    for (const bundle of this.#active.values()) bundle.engine.setData(overlay(data, bundle.data));
  }

  /** The active bundle whose roots cover `path` (inside or above a root), if any: its data there is read-only. */
  ownerOf(path: DataPath): PolicyBundle | undefined {
    return this.list().find((bundle) => ownedByRoots(bundle.manifest.roots)(path));
  }
}

/** Live data with the bundle's own data laid over it: inside its roots the bundle always wins. */
export function overlay(live: Record<string, unknown>, bundleData: Record<string, unknown>): Record<string, unknown> {
  const merged: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(live)) defineValue(merged, key, value);
  for (const [key, value] of Object.entries(bundleData)) {
    const existing = Object.hasOwn(merged, key) ? merged[key] : undefined;
    defineValue(merged, key, isObject(existing) && isObject(value) ? overlay(existing, value) : value);
  }
  return merged;
}
