import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BundleRejectedError } from '../src/errors.ts';
import { DEFAULT_ARCHIVE_LIMITS } from '../src/policy/archive.ts';
import type { EvaluableBundle, PolicyEvaluation, PolicyEvaluator, PolicyInstances } from '../src/policy/evaluation/evaluator.ts';
import { InProcessEvaluator } from '../src/policy/evaluation/in-process.ts';
import { BundleLifecycle } from '../src/policy/lifecycle.ts';
import type { Manifest } from '../src/policy/manifest.ts';
import type { PolicyWasmInfo } from '../src/policy/wasm-check.ts';
import { BundleRegistry } from '../src/policy/registry.ts';
import { BundleStore } from '../src/policy/store.ts';
import { tempDir } from './support/arbiter.ts';
import { build, writeBundleSource } from './support/bundle-sources.ts';

/** A real in-process evaluator that also tells which revisions hold an instance (evaluated, not yet released). */
class InstanceTrackingEvaluator implements PolicyEvaluator {
  readonly holding = new Set<string>();
  readonly #inner = new InProcessEvaluator({ maxMemoryPages: 1024, logger: pino({ level: 'silent' }) });

  evaluate(bundle: EvaluableBundle, entrypoint: string, input: string): Promise<PolicyEvaluation> {
    this.holding.add(bundle.digest);
    return this.#inner.evaluate(bundle, entrypoint, input);
  }

  setLiveData(data: Record<string, unknown>, version: number): void {
    this.#inner.setLiveData(data, version);
  }

  checkModule(wasm: Uint8Array<ArrayBuffer>, manifest: Pick<Manifest, 'wasm'>): Promise<PolicyWasmInfo> {
    return this.#inner.checkModule(wasm, manifest);
  }

  release(digest: string): void {
    this.holding.delete(digest);
    this.#inner.release(digest);
  }

  retain(digest: string): void {
    this.#inner.retain(digest);
  }

  policyInstances(): Promise<PolicyInstances[]> {
    return this.#inner.policyInstances();
  }

  close(): Promise<void> {
    return this.#inner.close();
  }
}

const digestOf = (archive: Uint8Array) => createHash('sha256').update(archive).digest('hex');
let dir: string;
const archives: Record<string, Buffer> = {};

beforeAll(() => {
  dir = tempDir('arbiter-lifecycle-');
  const small = writeBundleSource(dir, 'lc');
  archives.r1 = build(small, join(dir, 'r1.tar.gz'), 'r1');
  // The same revision name for another build: a conflict, refused by the replay rule.
  const other = writeBundleSource(dir, 'lc', { decision: '{"allow": false, "reasons": [{"code": "closed"}]}' });
  archives.r1Other = build(other, join(dir, 'r1-other.tar.gz'), 'r1');
  const big = writeBundleSource(dir, 'lc');
  mkdirSync(join(big, 'lc'));
  writeFileSync(join(big, 'lc', 'data.json'), JSON.stringify({ padding: 'x'.repeat(4096) }));
  archives.big = build(big, join(dir, 'big.tar.gz'), 'big');
}, 60_000);

function lifecycle(evaluator: PolicyEvaluator): BundleLifecycle {
  const registry = new BundleRegistry({ onRetire: (bundle) => evaluator.release(bundle.digest), onActivate: (bundle) => evaluator.retain(bundle.digest) });
  return new BundleLifecycle({
    registry,
    store: new BundleStore(join(tempDir('arbiter-lifecycle-store-'), 'bundles')),
    logger: pino({ level: 'silent' }),
    requireSignatures: false,
    verification: () => undefined,
    archiveLimits: DEFAULT_ARCHIVE_LIMITS,
    dataLimits: { maxDepth: 32, maxBytes: 1024 },
    evaluator,
    protectedBundles: new Set(),
    maxRevisions: 10,
  });
}

async function rejection(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(BundleRejectedError);
  return (error as BundleRejectedError).check;
}

describe('a refused candidate holds no evaluator instance', () => {
  const evaluator = new InstanceTrackingEvaluator();
  const bundles = lifecycle(evaluator);
  afterAll(() => evaluator.close());

  it('over the data limits: refused before its module is loaded', async () => {
    expect(await rejection(bundles.accept('lc', archives.big!, 'test'))).toBe('bundle_data_too_large');
    expect(evaluator.holding.has(digestOf(archives.big!))).toBe(false);
  });

  it('a revision stored with another digest: refused before its module is loaded, the active one kept', async () => {
    expect(await bundles.accept('lc', archives.r1!, 'test')).toMatchObject({ outcome: 'activated', revision: 'r1' });
    expect(await rejection(bundles.accept('lc', archives.r1Other!, 'test'))).toBe('bundle_revision_conflict');
    expect([...evaluator.holding]).toEqual([digestOf(archives.r1!)]);
  });
});
