import { jsonDefect, MAY_OVERFLOW } from '../data/json-value.ts';
import { BundleRejectedError } from '../errors.ts';
import { readBundleArchive, type ArchiveLimits, type BundleFiles } from './archive.ts';
import { checkContract } from './engine.ts';
import type { PolicyEvaluator } from './evaluation/evaluator.ts';
import { dataOutsideRoots, parseManifest, wasmModulePath, type Manifest } from './manifest.ts';
import { isObject } from '../is-object.ts';
import { defineValue } from './overlay.ts';
import { sha256Hex } from './store.ts';

/** A bundle revision that passed every check and can serve decisions. */
export interface PolicyBundle {
  readonly name: string;
  readonly revision: string;
  /** sha256 of the archive bytes, hex: identifies exactly what was activated. */
  readonly digest: string;
  readonly manifest: Manifest;
  /** data.json content that came with the bundle; owned by the bundle's roots. */
  readonly data: Record<string, unknown>;
  /** The manifest's roots (also in `manifest`), as evaluators read them. */
  readonly roots: readonly string[];
  readonly wasm: Uint8Array;
  /** Entrypoints compiled into the module, e.g. `authz/decision`. */
  readonly entrypoints: ReadonlySet<string>;
  readonly archive: Uint8Array;
}

export interface LoadBundleOptions {
  /** Runs the smoke evaluation, under the same deadline and memory ceiling as decisions. */
  evaluator: PolicyEvaluator;
  archiveLimits?: Partial<ArchiveLimits>;
  /** The archive's files when the caller has read them already (e.g. to verify signatures). */
  files?: BundleFiles;
  /** Further checks of the bundle's data (e.g. depth and size limits), run before its roots are checked and the module is instantiated. */
  checkData?: (data: Record<string, unknown>) => void;
}

function decisionEntrypoint(bundleName: string): string {
  return `${bundleName}/decision`;
}

/**
 * Reads, validates and instantiates a bundle archive in memory. Throws BundleRejectedError
 * naming the failed check; nothing here touches what is currently active.
 *
 * Check codes (BundleRejectedError.check) besides those of the archive, manifest and wasm checks:
 *   entrypoint_missing          the manifest does not declare `<name>/decision`
 *   bundle_data_invalid         a data.json that is not UTF-8 JSON, a root data.json that is not
 *                               an object, or a string or key that is not well-formed Unicode
 *   bundle_data_unsupported     a data.yaml or data.yml: OPA would load it, Arbiter reads data.json only
 *   data_conflict               two data.json files define the same value
 *   bundle_data_outside_roots   data outside the manifest's roots
 *   smoke_evaluation            the decision entrypoint fails or breaks the contract on SMOKE_INPUT
 */
export async function loadBundle(name: string, archive: Uint8Array, options: LoadBundleOptions): Promise<PolicyBundle> {
  const files = options.files ?? (await readBundleArchive(archive, options.archiveLimits));
  const manifest = parseManifest(files);
  // parseManifest guarantees exactly one wasm module and that its file exists.
  const wasm = files.get(wasmModulePath(manifest.wasm[0]!.module))!;
  const entrypoint = decisionEntrypoint(name);
  if (!manifest.wasm.some((w) => w.entrypoint === entrypoint)) {
    throw new BundleRejectedError('entrypoint_missing', entrypointMissing(name, manifest));
  }
  const { entrypoints } = await options.evaluator.checkModule(wasm, manifest);
  const data = bundleData(files);
  // First, so data nested past the depth limit is refused before the roots walk recurses into it.
  options.checkData?.(data);
  // Bundle data overrides live data under the bundle's roots and nowhere else: data outside
  // them would shadow documents (entitlements, approvals) that live updates could no longer change.
  const outside = dataOutsideRoots(data, manifest.roots);
  if (outside !== undefined) {
    throw new BundleRejectedError('bundle_data_outside_roots', `data at ${JSON.stringify(outside)} is outside the roots ${JSON.stringify(manifest.roots)}`);
  }
  const bundle: PolicyBundle = {
    name,
    revision: manifest.revision ?? '',
    digest: sha256Hex(archive),
    manifest,
    data,
    roots: manifest.roots,
    wasm,
    entrypoints: new Set(Object.keys(entrypoints)),
    archive,
  };
  const smoke = await options.evaluator.evaluate(bundle, entrypoint, JSON.stringify(SMOKE_INPUT));
  // Judged as a decision is, and with the same words: the author learns which member is wrong,
  // or that the rule was undefined (no default), not only that the contract was broken.
  const verdict = smoke.ok ? checkContract(smoke.resultSet) : smoke;
  if (!verdict.ok) {
    options.evaluator.release(bundle.digest);
    throw new BundleRejectedError('smoke_evaluation', `${entrypoint} failed on an unauthenticated request: ${verdict.code}: ${verdict.message}`);
  }
  return bundle;
}

/** The first segment of a Rego package (and so of an entrypoint) is an identifier. */
const REGO_IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;
const LISTED_ENTRYPOINTS = 10;

/**
 * Why the decision entrypoint is missing, in words an author can act on: what the bundle
 * declares instead (a rule named otherwise, another package), and when the bundle's name
 * (a `-`, a leading digit) cannot be a package at all, so no build could ever declare it.
 */
function entrypointMissing(name: string, manifest: Manifest): string {
  const declared = manifest.wasm.map((w) => w.entrypoint);
  const listed = declared.slice(0, LISTED_ENTRYPOINTS).join(', ') + (declared.length > LISTED_ENTRYPOINTS ? ` and ${declared.length - LISTED_ENTRYPOINTS} more` : '');
  const message = `bundle ${name} must declare the entrypoint ${decisionEntrypoint(name)} (the rule decision of package ${name}, with METADATA entrypoint: true); it declares ${listed}`;
  if (REGO_IDENTIFIER.test(name)) return message;
  return `${message}. No Rego package can be named ${JSON.stringify(name)} (letters, digits and _, not starting with a digit): push the bundle under its package's name`;
}

/** The least a policy can be asked: nobody asking for anything. It must still answer the contract. */
const SMOKE_INPUT = {
  subject: { authenticated: false, aud: [], scopes: [], act: [], claims: {}, revoked: { revoked: false } },
  action: { name: 'arbiter.smoke_test' },
  resource: { type: 'arbiter.smoke_test' },
  context: { now: 0, request_id: 'smoke-test' },
  data_status: {},
};

const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;

/** OPA's other data files, which `opa build` merges into data.json: only a hand-made bundle carries one. */
const YAML_DATA_FILES = new Set(['data.yaml', 'data.yml']);

/** Merges every `data.json` in the archive at its directory's path, as OPA does. */
function bundleData(files: ReadonlyMap<string, Uint8Array>): Record<string, unknown> {
  const data: Record<string, unknown> = {};
  for (const [path, bytes] of files) {
    // OPA would load it; left out, the policy would decide without data its author gave it (a deny list, say).
    if (YAML_DATA_FILES.has(path.slice(path.lastIndexOf('/') + 1))) {
      throw new BundleRejectedError('bundle_data_unsupported', `${path}: Arbiter reads bundle data from data.json files only (opa build merges YAML data into data.json)`);
    }
    if (path !== 'data.json' && !path.endsWith('/data.json')) continue;
    let text: string;
    let value: unknown;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
      value = JSON.parse(text);
    } catch (error) {
      throw new BundleRejectedError('bundle_data_invalid', `${path} is not valid JSON: ${(error as Error).message}`);
    }
    // JSON escapes can spell a lone surrogate, which the policy's JSON parser refuses: caught
    // here, the bundle is refused naming the place rather than failing its smoke evaluation.
    // After a fatal UTF-8 decode only the escape \uD800-\uDFFF can, so text without one skips
    // that check. A number past a double's range (1e400) would reach the policy as null, which
    // orders before every number: refused too.
    const checkText = SURROGATE_ESCAPE.test(text);
    const defect = checkText || MAY_OVERFLOW.test(text) ? jsonDefect(value, { maxDepth: Infinity, checkText }) : undefined;
    if (defect !== undefined) throw new BundleRejectedError('bundle_data_invalid', `${path}${defect.pointer}: ${defect.detail}`);
    const segments = path.split('/').slice(0, -1);
    if (segments.length === 0) {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        throw new BundleRejectedError('bundle_data_invalid', 'data.json at the bundle root must be an object');
      }
      mergeInto(data, value as Record<string, unknown>, path, []);
    } else {
      let node = data;
      const parents = segments.slice(0, -1);
      for (const [i, segment] of parents.entries()) node = childObject(node, segment, path, parents.slice(0, i + 1));
      mergeInto(node, { [segments.at(-1)!]: value }, path, parents);
    }
  }
  return data;
}

/** `at`: the data path of `key`, named when it conflicts (as the author must find it in both files). */
function childObject(node: Record<string, unknown>, key: string, path: string, at: string[]): Record<string, unknown> {
  if (!Object.hasOwn(node, key)) defineValue(node, key, {});
  const child = node[key];
  if (typeof child !== 'object' || child === null || Array.isArray(child)) {
    throw new BundleRejectedError('data_conflict', `${path} conflicts with other data at ${JSON.stringify(at.join('/'))}, which is not an object`);
  }
  return child as Record<string, unknown>;
}

/** A data path as a linked list from its last key, so descending costs no copy (files may nest 20,000 deep where they meet). */
interface DataPathLink {
  key: string;
  parent: DataPathLink | undefined;
}

/** The path as a message shows it: its first keys, clipped past SHOWN_PATH_LENGTH (a hostile archive can nest thousands). */
function joinPath(link: DataPathLink | undefined): string {
  const keys: string[] = [];
  for (let at = link; at !== undefined; at = at.parent) keys.push(at.key);
  const path = keys.reverse().join('/');
  return path.length > SHOWN_PATH_LENGTH ? `${path.slice(0, SHOWN_PATH_LENGTH)}…` : path;
}

const SHOWN_PATH_LENGTH = 512;

/**
 * Iterative: two files may nest as deep as they like where they meet (the depth limit is
 * checked on the result). `at` are the keys of `target`'s data path: a conflict names the
 * whole path of the value defined twice, not only its last key.
 */
function mergeInto(target: Record<string, unknown>, source: Record<string, unknown>, path: string, at: string[]): void {
  const base = at.reduce<DataPathLink | undefined>((parent, key) => ({ key, parent }), undefined);
  const pending: [Record<string, unknown>, Record<string, unknown>, DataPathLink | undefined][] = [[target, source, base]];
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const [into, from, where] = next;
    for (const [key, value] of Object.entries(from)) {
      const existing = Object.hasOwn(into, key) ? into[key] : undefined;
      if (existing === undefined) {
        defineValue(into, key, value);
      } else if (isObject(existing) && isObject(value)) {
        pending.push([existing, value, { key, parent: where }]);
      } else {
        throw new BundleRejectedError('data_conflict', `${path} redefines the data at ${JSON.stringify(joinPath({ key, parent: where }))}, which another data.json defines`);
      }
    }
  }
}
