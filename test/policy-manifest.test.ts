import { describe, expect, it } from 'vitest';
import { BundleRejectedError } from '../src/errors.ts';
import type { BundleFiles } from '../src/policy/archive.ts';
import { dataOutsideRoots, parseManifest, rootsOverlap } from '../src/policy/manifest.ts';

const WASM = new Uint8Array([0x00, 0x61, 0x73, 0x6d]);

function bundle(manifest: unknown, extra: Record<string, Uint8Array<ArrayBuffer>> = {}): BundleFiles {
  const text = typeof manifest === 'string' ? manifest : JSON.stringify(manifest);
  return new Map([['.manifest', new Uint8Array(Buffer.from(text))], ['policy.wasm', WASM], ...Object.entries(extra)]);
}

const valid = {
  revision: 'r1',
  roots: ['authz', 'tenants/acme'],
  wasm: [
    { entrypoint: 'authz/decision', module: '/policy.wasm' },
    { entrypoint: 'tenants/acme/allow', module: '/policy.wasm' },
  ],
  rego_version: 1,
};

function check(manifest: unknown, files?: BundleFiles): string {
  try {
    parseManifest(files ?? bundle(manifest));
  } catch (error) {
    expect(error).toBeInstanceOf(BundleRejectedError);
    return (error as BundleRejectedError).check;
  }
  throw new Error('expected the manifest to be rejected');
}

describe('parseManifest', () => {
  it('accepts the manifest opa build writes, keeping unknown keys', () => {
    const manifest = parseManifest(bundle({ ...valid, metadata: { team: 'iam' }, file_rego_versions: {} }));
    expect(manifest).toMatchObject({ ...valid, metadata: { team: 'iam' }, file_rego_versions: {} });
  });

  it('defaults a missing revision to the empty string, as OPA does', () => {
    const { revision: _revision, ...rest } = valid;
    expect(parseManifest(bundle(rest)).revision).toBe('');
  });

  it('accepts the root "" alone: the bundle owns all of data', () => {
    expect(parseManifest(bundle({ ...valid, roots: [''] })).roots).toEqual(['']);
  });

  it('rejects a bundle without .manifest instead of assuming OPA\'s roots [""]', () => {
    expect(check(undefined, new Map([['policy.wasm', WASM]]))).toBe('manifest_missing');
  });

  it.each([
    ['not JSON', '{"roots": ['],
    ['roots that are not strings', { ...valid, roots: [1] }],
    ['a wasm entry without entrypoint', { ...valid, wasm: [{ module: '/policy.wasm' }] }],
    ['a fractional rego_version', { ...valid, rego_version: 1.5 }],
    ['an array', [valid]],
  ])('rejects %s as manifest_invalid', (_label, manifest) => {
    expect(check(manifest)).toBe('manifest_invalid');
  });

  it('rejects a manifest that is not UTF-8 as manifest_invalid', () => {
    expect(check(undefined, new Map([['.manifest', new Uint8Array([0x7b, 0xff, 0x7d])]]))).toBe('manifest_invalid');
  });

  it.each([[undefined], [[]]])('rejects roots %j', (roots) => {
    expect(check({ ...valid, roots })).toBe('manifest_roots_missing');
  });

  it.each(['/authz', 'authz/', 'a//b', '/'])('rejects the root %j', (root) => {
    expect(check({ ...valid, roots: [root], wasm: [] })).toBe('manifest_root_invalid');
  });

  it.each([
    [['authz', 'authz/admin']],
    [['authz/admin', 'authz']],
    [['', 'authz']],
    [['authz', 'authz']],
  ])('rejects overlapping roots %j', (roots) => {
    expect(check({ ...valid, roots })).toBe('manifest_roots_overlap');
  });

  it('finds an overlap among 12,000 roots, wherever it sorts', () => {
    // Checked pair by pair, this took about 25 s of the main thread on a 2-core VM (see
    // checkRoots); its speed is not asserted here, only that the sorted check misses nothing.
    const roots = ['authz', ...Array.from({ length: 12_000 }, (_, i) => `r${i}/x`)];
    expect(parseManifest(bundle({ ...valid, roots, wasm: [valid.wasm[0]] })).roots).toHaveLength(roots.length);
    expect(check({ ...valid, roots: [...roots, 'r5000/x/y'], wasm: [valid.wasm[0]] })).toBe('manifest_roots_overlap');
    expect(check({ ...valid, roots: ['r5000', ...roots], wasm: [valid.wasm[0]] })).toBe('manifest_roots_overlap');
  });

  it('lets roots that only share a prefix of characters coexist', () => {
    expect(parseManifest(bundle({ ...valid, roots: ['authz', 'authzx', 'tenants/acme'] })).roots).toHaveLength(3);
  });

  it.each([[undefined], [[]]])('rejects wasm %j: Arbiter needs entrypoints', (wasm) => {
    expect(check({ ...valid, wasm })).toBe('manifest_wasm_missing');
  });

  it('rejects a wasm module that is not in the bundle', () => {
    expect(check(undefined, new Map([['.manifest', new Uint8Array(Buffer.from(JSON.stringify(valid)))]]))).toBe('manifest_wasm_module_missing');
  });

  it('rejects entries spread over two wasm modules', () => {
    const wasm = [valid.wasm[0], { entrypoint: 'tenants/acme/allow', module: '/other.wasm' }];
    expect(check(undefined, bundle({ ...valid, wasm }, { 'other.wasm': WASM }))).toBe('manifest_multiple_wasm_modules');
  });

  it.each(['', '/authz/allow', 'authz/allow/', 'authz//allow'])('rejects the entrypoint %j', (entrypoint) => {
    expect(check({ ...valid, roots: [''], wasm: [{ entrypoint, module: '/policy.wasm' }] })).toBe('manifest_entrypoint_invalid');
  });

  it('rejects an entrypoint declared twice', () => {
    expect(check({ ...valid, wasm: [valid.wasm[0], valid.wasm[0]] })).toBe('manifest_entrypoint_duplicate');
  });

  it('rejects an entrypoint outside the roots', () => {
    expect(check({ ...valid, wasm: [{ entrypoint: 'billing/allow', module: '/policy.wasm' }] })).toBe('manifest_entrypoint_outside_roots');
    expect(check({ ...valid, wasm: [{ entrypoint: 'tenants/acmex/allow', module: '/policy.wasm' }] })).toBe('manifest_entrypoint_outside_roots');
  });
});

describe('rootsOverlap', () => {
  it.each([
    [['a'], ['a/b'], true],
    [['a/b'], ['a'], true],
    [['a/b'], ['a/b'], true],
    [[''], ['x/y'], true],
    [['x'], [''], true],
    [['a', 'b'], ['c', 'b/d'], true],
    [['a'], ['ab'], false],
    [['a/b'], ['a/c'], false],
    [['a', 'b'], ['c'], false],
    [[], ['a'], false],
  ])('%j and %j -> %s', (a, b, expected) => {
    expect(rootsOverlap(a, b)).toBe(expected);
  });
});

describe('dataOutsideRoots', () => {
  it('accepts data under the roots and objects on the way to them', () => {
    expect(dataOutsideRoots({ authz: { actions: {} }, tenants: { acme: { plan: 'gold' } } }, ['authz', 'tenants/acme'])).toBeUndefined();
    expect(dataOutsideRoots({ anything: 1 }, [''])).toBeUndefined();
  });

  it('names the first path no root contains', () => {
    expect(dataOutsideRoots({ authz: {}, entitlements: { alice: {} } }, ['authz'])).toBe('entitlements');
    expect(dataOutsideRoots({ tenants: { acme: {}, globex: { plan: 'x' } } }, ['tenants/acme'])).toBe('tenants/globex');
    // A value that is not an object cannot lead to a root: it replaces the whole path.
    expect(dataOutsideRoots({ tenants: 'all' }, ['tenants/acme'])).toBe('tenants');
    // Roots are compared segment-wise: "authz" does not own "authzx".
    expect(dataOutsideRoots({ authzx: {} }, ['authz'])).toBe('authzx');
  });

  it('checks data against 30,000 roots through the tree of them, missing nothing outside', () => {
    // Key by root, this took about 20 s of the main thread on a 2-core VM; not asserted here.
    const roots = Array.from({ length: 30_000 }, (_, i) => `r${i}/x`);
    const data = Object.fromEntries(roots.map((_, i) => [`r${i}`, { x: { deep: 1 } }]));
    expect(dataOutsideRoots(data, roots)).toBeUndefined();
    expect(dataOutsideRoots({ ...data, r7: { x: 1, y: 2 } }, roots)).toBe('r7/y');
  });
});
