/**
 * The bundle's `.manifest`: which parts of `data` the bundle owns (roots) and which
 * wasm entrypoints it provides. OPA falls back to roots `[""]` when a bundle has no
 * manifest; Arbiter does not, because it must know both before activating a bundle.
 *
 * Check codes (BundleRejectedError.check):
 *   manifest_missing                    the bundle has no `.manifest`
 *   manifest_invalid                    not UTF-8 JSON, nested deeper than 64 levels, or not the shape OPA writes
 *   manifest_roots_missing              no `roots`, or an empty list
 *   manifest_root_invalid               a root with a leading or trailing slash or an empty segment
 *   manifest_roots_overlap              two roots of this manifest overlap (`a` and `a/b`)
 *   manifest_wasm_missing               no `wasm` entrypoints
 *   manifest_wasm_module_missing        a wasm entry names a module file the bundle does not contain
 *   manifest_multiple_wasm_modules      entries name more than one module: Arbiter evaluates one policy.wasm
 *   manifest_entrypoint_invalid         an entrypoint that is not a slash-separated path
 *   manifest_entrypoint_duplicate       the same entrypoint declared twice
 *   manifest_entrypoint_outside_roots   an entrypoint no root contains
 */
import { z } from 'zod';
import { jsonDefect } from '../data/json-value.ts';
import { BundleRejectedError } from '../errors.ts';
import type { BundleFiles } from './archive.ts';
import { isObject } from '../is-object.ts';

const MANIFEST_FILE = '.manifest';

/** Deepest nesting of objects and arrays in a `.manifest` (the manifest itself is level 1), as for request bodies. */
const MAX_MANIFEST_DEPTH = 64;

export const wasmResolverSchema = z.looseObject({
  entrypoint: z.string(),
  /** As OPA writes it: `/policy.wasm`. */
  module: z.string(),
  annotations: z.array(z.unknown()).optional(),
});

export const bundleManifestSchema = z.looseObject({
  revision: z.string().default(''),
  roots: z.array(z.string()).optional(),
  wasm: z.array(wasmResolverSchema).optional(),
  rego_version: z.int().optional(),
  metadata: z.record(z.string(), z.unknown()).optional(),
});

/** A manifest that passed every check: roots and wasm entrypoints are present. */
export type Manifest = z.infer<typeof bundleManifestSchema> & {
  roots: string[];
  wasm: z.infer<typeof wasmResolverSchema>[];
};

/** Reads and checks `.manifest` against the bundle's files. Throws BundleRejectedError. */
export function parseManifest(files: BundleFiles): Manifest {
  const bytes = files.get(MANIFEST_FILE);
  if (bytes === undefined) {
    throw new BundleRejectedError('manifest_missing', 'bundle has no .manifest: Arbiter needs its roots and wasm entrypoints');
  }
  const manifest = decode(bytes);
  const roots = checkRoots(manifest.roots);
  const wasm = checkWasm(manifest.wasm, roots, files);
  return { ...manifest, roots, wasm };
}

function decode(bytes: Uint8Array): z.infer<typeof bundleManifestSchema> {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (error) {
    throw new BundleRejectedError('manifest_invalid', `.manifest is not JSON: ${(error as Error).message}`, { cause: error });
  }
  // Free-form metadata is walked later (copied to a worker, read by AuthZEN): nesting is
  // bounded as for request bodies, so no manifest can exhaust the stack of what walks it.
  const defect = jsonDefect(json, { maxDepth: MAX_MANIFEST_DEPTH, checkText: false });
  if (defect !== undefined) throw new BundleRejectedError('manifest_invalid', `.manifest${defect.pointer}: ${defect.detail}`);
  const parsed = bundleManifestSchema.safeParse(json);
  if (!parsed.success) {
    throw new BundleRejectedError('manifest_invalid', `.manifest is invalid: ${z.prettifyError(parsed.error)}`);
  }
  return parsed.data;
}

function checkRoots(roots: string[] | undefined): string[] {
  if (roots === undefined || roots.length === 0) {
    throw new BundleRejectedError('manifest_roots_missing', '.manifest declares no roots');
  }
  for (const root of roots) {
    // `""` is the whole of `data`: legal on its own, and the overlap check refuses it beside any other root.
    if (root !== '' && !isSlashPath(root)) {
      throw new BundleRejectedError('manifest_root_invalid', `root ${JSON.stringify(root)} must be a path without leading, trailing or doubled slashes`);
    }
  }
  // Sorted segment-wise, a root that contains another is followed by a root it contains (all
  // between them share it as a prefix): comparing neighbours finds every overlap in n log n,
  // where comparing every pair let a manifest of a few thousand roots stall the main thread.
  const sorted = roots.map((root) => ({ root, segments: segmentsOf(root) })).sort((a, b) => compareSegments(a.segments, b.segments));
  for (const [i, b] of sorted.entries()) {
    const a = sorted[i - 1];
    if (a !== undefined && isPrefix(a.segments, b.segments)) {
      throw new BundleRejectedError('manifest_roots_overlap', `roots ${JSON.stringify(a.root)} and ${JSON.stringify(b.root)} overlap`);
    }
  }
  return roots;
}

/** Lexicographic order of segment lists, a list before every list it is a prefix of. */
function compareSegments(a: readonly string[], b: readonly string[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i]! < b[i]! ? -1 : 1;
  }
  return a.length - b.length;
}

function checkWasm(wasm: Manifest['wasm'] | undefined, roots: string[], files: BundleFiles): Manifest['wasm'] {
  if (wasm === undefined || wasm.length === 0) {
    throw new BundleRejectedError('manifest_wasm_missing', '.manifest declares no wasm entrypoints (build with `opa build -t wasm -e ...`)');
  }
  const modules = new Set(wasm.map((resolver) => resolver.module));
  if (modules.size > 1) {
    throw new BundleRejectedError('manifest_multiple_wasm_modules', `.manifest names ${modules.size} wasm modules, Arbiter evaluates exactly one`);
  }
  const entrypoints = new Set<string>();
  for (const { entrypoint, module } of wasm) {
    if (!files.has(wasmModulePath(module))) {
      throw new BundleRejectedError('manifest_wasm_module_missing', `wasm module ${JSON.stringify(module)} is not in the bundle`);
    }
    if (!isSlashPath(entrypoint)) {
      throw new BundleRejectedError('manifest_entrypoint_invalid', `entrypoint ${JSON.stringify(entrypoint)} is not a slash-separated path`);
    }
    if (entrypoints.has(entrypoint)) {
      throw new BundleRejectedError('manifest_entrypoint_duplicate', `entrypoint ${JSON.stringify(entrypoint)} is declared twice`);
    }
    entrypoints.add(entrypoint);
    if (!roots.some((root) => rootContains(root, entrypoint))) {
      throw new BundleRejectedError('manifest_entrypoint_outside_roots', `entrypoint ${JSON.stringify(entrypoint)} is outside the roots ${JSON.stringify(roots)}`);
    }
  }
  return wasm;
}

/** The BundleFiles key of a manifest `module` (OPA writes `/policy.wasm`, the archive reader strips the slash). */
export function wasmModulePath(module: string): string {
  return module.startsWith('/') ? module.slice(1) : module;
}

/**
 * Whether any root in `a` overlaps any root in `b`, as OPA decides it: one contains the
 * other segment-wise (`a` overlaps `a/b`, not `ab`), and `""` overlaps everything.
 * Two active bundles must not overlap, or one could shadow the other's data.
 */
export function rootsOverlap(a: readonly string[], b: readonly string[]): boolean {
  return a.some((x) => b.some((y) => rootContains(x, y) || rootContains(y, x)));
}

/**
 * The first data path (slash-joined) that no root contains, or undefined when every
 * value sits under a root. Objects on the way to a root (`tenants` for the root
 * `tenants/acme`) are walked into; anything else beside the roots is outside. OPA
 * refuses such a bundle at build time ("manifest roots do not permit data at path").
 */
export function dataOutsideRoots(data: Record<string, unknown>, roots: readonly string[]): string | undefined {
  // The roots as a tree of segments, walked beside the data: each key is looked up once,
  // where testing it against every root let many roots and keys stall the main thread.
  const tree = rootTree(roots);
  const walk = (node: Record<string, unknown>, at: RootTree, path: string[]): string | undefined => {
    for (const [key, value] of Object.entries(node)) {
      const next = at.children.get(key);
      // A root ends here: all below is the bundle's. Roots ending above were skipped a level up.
      if (next?.isRoot) continue;
      // On the way to a root only objects can lead there; anything else replaces the whole path.
      const outside = next !== undefined && isObject(value) ? walk(value, next, [...path, key]) : [...path, key].join('/');
      if (outside !== undefined) return outside;
    }
    return undefined;
  };
  return tree.isRoot ? undefined : walk(data, tree, []);
}

interface RootTree {
  isRoot: boolean;
  children: Map<string, RootTree>;
}

function rootTree(roots: readonly string[]): RootTree {
  const tree: RootTree = { isRoot: false, children: new Map() };
  for (const root of roots) {
    let node = tree;
    for (const segment of segmentsOf(root)) {
      let child = node.children.get(segment);
      if (child === undefined) node.children.set(segment, (child = { isRoot: false, children: new Map() }));
      node = child;
    }
    node.isRoot = true;
  }
  return tree;
}

/** Whether the data path (its keys) lies at or below `root`; `""` contains everything. */
export function withinRoot(path: readonly string[], root: string): boolean {
  return isPrefix(segmentsOf(root), path);
}

function segmentsOf(root: string): string[] {
  return root === '' ? [] : root.split('/');
}

function isPrefix(prefix: readonly string[], path: readonly string[]): boolean {
  return prefix.length <= path.length && prefix.every((segment, i) => segment === path[i]);
}

function rootContains(root: string, path: string): boolean {
  return withinRoot(path.split('/'), root);
}

function isSlashPath(path: string): boolean {
  return path.split('/').every((segment) => segment !== '');
}
