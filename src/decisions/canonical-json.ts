import { hash } from 'node:crypto';

/**
 * JSON with object keys sorted (by UTF-16 code units, as RFC 8785 does) and no whitespace.
 * Two equal values always serialize to the same bytes, which is what lets a hash over a
 * record be recomputed later from the stored text. Numbers and strings use the
 * ECMAScript serialization, which is the one RFC 8785 specifies; `undefined` members
 * are dropped, as JSON.stringify drops them.
 *
 * It runs for every decision on the thread that serves requests, hence the two shortcuts:
 * objects whose keys already come sorted (most do) skip the sort, and the encoded form of
 * a key, which recurs in every record, is remembered.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    return JSON.stringify(value) ?? 'null';
  }
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ',';
      const item: unknown = value[i];
      out += item === undefined ? 'null' : canonicalJson(item);
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
    out += encodedKey(key) + canonicalJson(member);
  }
  return out + '}';
}

export function sha256Hex(text: string): string {
  // The one-shot form: no Hash object per call (it runs for every record, twice for a masked one).
  return hash('sha256', text, 'hex');
}

/** Keys are remembered up to this many, so records with ever-new keys cannot grow it without bound. */
const ENCODED_KEYS_LIMIT = 4_096;
const encodedKeys = new Map<string, string>();

function encodedKey(key: string): string {
  let encoded = encodedKeys.get(key);
  if (encoded === undefined) {
    encoded = JSON.stringify(key) + ':';
    if (encodedKeys.size < ENCODED_KEYS_LIMIT) encodedKeys.set(key, encoded);
  }
  return encoded;
}

function isSorted(keys: readonly string[]): boolean {
  for (let i = 1; i < keys.length; i++) {
    if ((keys[i - 1] as string) > (keys[i] as string)) return false;
  }
  return true;
}
