import { isObject } from '../is-object.ts';

/** A bundle's own data and the roots it owns (its manifest's). */
export interface BundleLayer {
  readonly data: Record<string, unknown>;
  readonly roots: readonly string[];
}

/**
 * Live data with a bundle's own data laid over it. Inside its roots the bundle's data is all
 * there is: a live document under a root (written before the bundle claimed it) is hidden,
 * not merged, so nothing but the bundle decides what policies read there. Only the objects
 * on the way to a root are copied; the rest is shared.
 */
export function overlay(live: Record<string, unknown>, layer: BundleLayer): Record<string, unknown> {
  let merged = live;
  for (const root of layer.roots) {
    const path = root === '' ? [] : root.split('/');
    merged = replaceAt(merged, path, valueAt(layer.data, path));
  }
  return merged;
}

/** The value at `path` (object keys), or undefined when something on the way is missing or not an object. */
export function valueAt(node: unknown, path: readonly string[]): unknown {
  let value = node;
  for (const key of path) value = isObject(value) && Object.hasOwn(value, key) ? value[key] : undefined;
  return value;
}

/** `node` with the value at `path` replaced (removed when undefined), copying only along the path. */
function replaceAt(node: Record<string, unknown>, path: readonly string[], value: unknown): Record<string, unknown> {
  if (path.length === 0) return isObject(value) ? value : {};
  const [key, ...rest] = path as [string, ...string[]];
  const child = Object.hasOwn(node, key) ? node[key] : undefined;
  if (value === undefined && child === undefined) return node;
  const next = rest.length === 0 ? value : replaceAt(isObject(child) ? child : {}, rest, value);
  const copy: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node)) if (k !== key) defineValue(copy, k, v);
  if (next !== undefined) defineValue(copy, key, next);
  return copy;
}


/** Define, never assign: a `__proto__` key in data stays a key. */
export function defineValue(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}
