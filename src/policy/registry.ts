import { ownedByRoots, type DataPath } from '../data/data-path.ts';
import type { PolicyBundle } from './bundle.ts';

/**
 * Owns which revision of each bundle is active. Activation is a single map assignment:
 * a decision holds the PolicyBundle it started with, so it finishes on that revision.
 */
export class BundleRegistry {
  readonly #active = new Map<string, PolicyBundle>();
  readonly #onRetire: (bundle: PolicyBundle) => void;
  readonly #onActivate: (bundle: PolicyBundle) => void;

  /**
   * `onRetire` hears of each revision no bundle serves any more (to free its instances),
   * `onActivate` of each revision that serves, a retired one included (a rollback: keep its instances).
   */
  constructor(options: { onRetire?: (bundle: PolicyBundle) => void; onActivate?: (bundle: PolicyBundle) => void } = {}) {
    this.#onRetire = options.onRetire ?? (() => {});
    this.#onActivate = options.onActivate ?? (() => {});
  }

  get(name: string): PolicyBundle | undefined {
    return this.#active.get(name);
  }

  list(): PolicyBundle[] {
    return [...this.#active.values()];
  }

  activate(bundle: PolicyBundle): PolicyBundle | undefined {
    const previous = this.#active.get(bundle.name);
    this.#active.set(bundle.name, bundle);
    this.#onActivate(bundle);
    if (previous && previous.digest !== bundle.digest) this.#retire(previous);
    return previous;
  }

  deactivate(name: string): PolicyBundle | undefined {
    const previous = this.#active.get(name);
    this.#active.delete(name);
    if (previous) this.#retire(previous);
    return previous;
  }

  /** The active bundle whose roots cover `path` (inside or above a root), if any: its data there is read-only. */
  ownerOf(path: DataPath): PolicyBundle | undefined {
    return this.list().find((bundle) => ownedByRoots(bundle.manifest.roots)(path));
  }

  #retire(bundle: PolicyBundle): void {
    if (!this.list().some((active) => active.digest === bundle.digest)) this.#onRetire(bundle);
  }
}
