import { hash } from 'node:crypto';

/**
 * JSON with object keys sorted (by UTF-16 code units, as RFC 8785 does) and no whitespace.
 * Two equal values always serialize to the same bytes, which is what lets a hash over a
 * record be recomputed later from the stored text. Numbers and strings use the
 * ECMAScript serialization, which is the one RFC 8785 specifies; `undefined` members
 * are dropped, as JSON.stringify drops them.
 *
 * It runs for every decision on the thread that serves requests. The usual path hands
 * JSON.stringify the value with its keys in canonical order (a copy of each object whose
 * keys are not): its output is then the canonical form, built natively as one flat
 * string. Strings concatenated piece by piece instead form a tree that must be flattened
 * before the record crosses to the writer thread, which cost more than building it.
 * Values JSON.stringify would write differently (integer-like or `__proto__` keys, which
 * an object cannot hold in sorted order; anything but plain objects, arrays, strings,
 * numbers, booleans and null) take the piecewise path.
 */
export function canonicalJson(value: unknown): string {
  const ordered = inKeyOrder(value);
  return ordered === PIECEWISE ? piecewiseCanonicalJson(value) : (JSON.stringify(ordered) ?? 'null');
}

const PIECEWISE = Symbol('piecewise');
const ARRAY_INDEX = /^(?:0|[1-9][0-9]*)$/;

/** `value` itself when its keys are in canonical order throughout, else a copy that is; PIECEWISE when there is none. */
function inKeyOrder(value: unknown): unknown {
  if (value === null || value === undefined) return value;
  switch (typeof value) {
    case 'string':
    case 'number':
    case 'boolean':
      return value;
    case 'object':
      break;
    default:
      return PIECEWISE;
  }
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i];
      const ordered = inKeyOrder(item);
      if (ordered === PIECEWISE) return PIECEWISE;
      if (ordered !== item) (copy ??= value.slice())[i] = ordered;
    }
    return copy ?? value;
  }
  if (Object.getPrototypeOf(value) !== Object.prototype) return PIECEWISE;
  const object = value as Record<string, unknown>;
  const keys = Object.keys(object);
  // Integer-like keys are always listed first (in numeric order, whatever the insertion order).
  if (keys.length > 0 && isIntegerLike(keys[0] as string)) return PIECEWISE;
  const sorted = isSorted(keys);
  if (!sorted) keys.sort();
  let copy: Record<string, unknown> | undefined = sorted ? undefined : {};
  for (const key of keys) {
    if (key === '__proto__') return PIECEWISE;
    const member = object[key];
    const ordered = inKeyOrder(member);
    if (ordered === PIECEWISE) return PIECEWISE;
    if (copy === undefined && ordered !== member) {
      copy = {};
      for (const earlier of keys) {
        if (earlier === key) break;
        copy[earlier] = object[earlier];
      }
    }
    if (copy !== undefined) copy[key] = ordered;
  }
  return copy ?? value;
}

function isIntegerLike(key: string): boolean {
  return ARRAY_INDEX.test(key) && Number(key) < 2 ** 32 - 1;
}

function piecewiseCanonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    return JSON.stringify(value) ?? 'null';
  }
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ',';
      const item: unknown = value[i];
      out += item === undefined ? 'null' : piecewiseCanonicalJson(item);
    }
    return out + ']';
  }
  const object = value as Record<string, unknown>;
  const keys = Object.keys(object);
  if (!isSorted(keys)) keys.sort();
  let out = '{';
  for (const key of keys) {
    const member = object[key];
    if (member === undefined) continue;
    if (out.length > 1) out += ',';
    out += encodedKey(key) + piecewiseCanonicalJson(member);
  }
  return out + '}';
}

export function sha256Hex(text: string): string {
  // The one-shot form: no Hash object per call (it runs for every record, twice for a masked one).
  return hash('sha256', text, 'hex');
}

/**
 * Keys are remembered up to this many, and only short ones: the field names records repeat.
 * Callers choose keys too (context, resource properties), and a 60 KB key kept for the life of
 * the process per request would let any of them pin memory at will.
 */
const ENCODED_KEYS_LIMIT = 4_096;
const ENCODED_KEY_MAX_LENGTH = 64;
const encodedKeys = new Map<string, string>();

function encodedKey(key: string): string {
  let encoded = encodedKeys.get(key);
  if (encoded === undefined) {
    encoded = JSON.stringify(key) + ':';
    if (key.length <= ENCODED_KEY_MAX_LENGTH && encodedKeys.size < ENCODED_KEYS_LIMIT) encodedKeys.set(key, encoded);
  }
  return encoded;
}

function isSorted(keys: readonly string[]): boolean {
  for (let i = 1; i < keys.length; i++) {
    if ((keys[i - 1] as string) > (keys[i] as string)) return false;
  }
  return true;
}
