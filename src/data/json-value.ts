import { z } from 'zod';
import { ArbiterError, FieldsInvalidError } from '../errors.ts';

export type JsonScalar = string | number | boolean | null;
export type JsonObject = { readonly [key: string]: JsonValue };
export type JsonArray = readonly JsonValue[];
export type JsonValue = JsonScalar | JsonObject | JsonArray;

export function isJsonObject(value: unknown): value is JsonObject {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/**
 * An object of a request body whose members are any JSON values, kept as JSON.parse made it.
 * z.record copies the members into a new object and leaves a `__proto__` member out (assigned,
 * it would set the copy's prototype): a key the caller sent would reach neither the policy nor
 * the decision log, which both take it as the plain key it is.
 */
export const requestObjectSchema = z
  .custom<Record<string, unknown>>(isJsonObject, { message: 'Invalid input: expected object' })
  .meta({ type: 'object', additionalProperties: {} });

/**
 * Reads an own member only: `obj['__proto__']` or `obj['constructor']` must never
 * resolve to something inherited when the key comes from a request path.
 */
export function ownMember(object: JsonObject, key: string): JsonValue | undefined {
  return Object.hasOwn(object, key) ? object[key] : undefined;
}

/** A copy of `object` with `key` set, defined as an own property so `__proto__` stays a plain key. */
export function withMember(object: JsonObject, key: string, value: JsonValue): JsonObject {
  const copy: Record<string, JsonValue> = { ...object };
  Object.defineProperty(copy, key, { value, enumerable: true, writable: true, configurable: true });
  return Object.freeze(copy);
}

export function withoutMember(object: JsonObject, key: string): JsonObject {
  const copy: Record<string, JsonValue> = { ...object };
  delete copy[key];
  return Object.freeze(copy);
}

export interface FreezeJsonOptions {
  /** Nesting allowed below the value, after `depthOffset` levels already used above it. */
  maxDepth: number;
  /** How many keys lead from the data root to where the value is stored. */
  depthOffset: number;
  /** Names the value in error messages, e.g. `entitlements/alice` or `op 2`. */
  where: string;
  /**
   * Where the value is in a request body, as a JSON pointer (`""`: the body itself, `/2/value`):
   * its errors then name the offending field by pointer (a FieldsInvalidError), as a problem
   * answer's `errors` do. Unset for a value that comes from no body.
   */
  bodyPointer?: string;
}

/**
 * Validates that `value` is plain JSON within the depth limit and returns a deep-frozen
 * private copy, so neither the caller nor a later update can change what a snapshot holds.
 * Throws `data_invalid` (not JSON: undefined, functions, NaN, class instances, empty keys)
 * or `data_too_deep`.
 */
export function freezeJson(value: unknown, options: FreezeJsonOptions): JsonValue {
  if (options.depthOffset > options.maxDepth) {
    throw new ArbiterError('data_too_deep', `${options.where}: the path exceeds the maximum depth of ${options.maxDepth}`);
  }
  return freezeAt(value, options.depthOffset, options, '');
}

function freezeAt(value: unknown, depth: number, options: FreezeJsonOptions, pointer: string): JsonValue {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw invalid(options, pointer, `${value} is not a JSON number`);
    return value;
  }
  if (Array.isArray(value)) {
    if (value.length > 0) checkDepth(depth, options, pointer);
    // Array.from visits holes as undefined, so a sparse array is rejected rather than compacted.
    return Object.freeze(Array.from(value, (item: unknown, index) => freezeAt(item, depth + 1, options, `${pointer}/${index}`)));
  }
  if (isJsonObject(value)) {
    const members = Object.entries(value);
    if (members.length > 0) checkDepth(depth, options, pointer);
    const entries = members.map(([key, item]): [string, JsonValue] => {
      // `${pointer}/` is the pointer to the member whose key is empty.
      if (key === '') throw invalid(options, `${pointer}/`, 'object keys must be non-empty strings');
      return [key, freezeAt(item, depth + 1, options, `${pointer}/${escapePointerToken(key)}`)];
    });
    // Object.fromEntries defines own properties, so a `__proto__` key stays data.
    return Object.freeze(Object.fromEntries(entries));
  }
  const kind = typeof value === 'object' ? (value.constructor?.name ?? 'object') : typeof value;
  throw invalid(options, pointer, `${kind} is not a JSON value`);
}

function checkDepth(depth: number, options: FreezeJsonOptions, pointer: string): void {
  // A non-empty container at `depth` puts its members at depth + 1.
  if (depth >= options.maxDepth) throw valueError('data_too_deep', options, pointer, `nesting exceeds the maximum depth of ${options.maxDepth}`);
}

function invalid(options: FreezeJsonOptions, pointer: string, reason: string): ArbiterError {
  return valueError('data_invalid', options, pointer, reason);
}

function valueError(code: string, options: FreezeJsonOptions, pointer: string, reason: string): ArbiterError {
  const message = `${options.where}${pointer}: ${reason}`;
  if (options.bodyPointer === undefined) return new ArbiterError(code, message);
  return new FieldsInvalidError(code, message, [{ pointer: `${options.bodyPointer}${pointer}`, detail: reason }]);
}

/**
 * The UTF-8 size of `value` serialized as JSON, counted without serializing it: exact but
 * for the escapes inside strings, so never more than the real size. Stops walking once the
 * count passes `stopAbove` and returns the count so far (then above `stopAbove`): the
 * work is bounded by `stopAbove` even for a value that shares one subtree many times over,
 * whose serialization would be exponentially larger than the value in memory.
 */
export function jsonByteSize(value: JsonValue, stopAbove = Infinity): number {
  let total = 0;
  const visit = (node: JsonValue): void => {
    if (typeof node === 'string') {
      total += Buffer.byteLength(node) + 2;
    } else if (node === null || typeof node !== 'object') {
      total += String(node).length;
    } else if (Array.isArray(node)) {
      total += 2 + Math.max(0, node.length - 1);
      for (const item of node) {
        if (total > stopAbove) return;
        visit(item);
      }
    } else {
      const keys = Object.keys(node);
      total += 2 + Math.max(0, keys.length - 1);
      for (const key of keys) {
        if (total > stopAbove) return;
        total += Buffer.byteLength(key) + 3;
        visit((node as JsonObject)[key] as JsonValue);
      }
    }
  };
  visit(value);
  return total;
}

/** JSON equality as RFC 6902 `test` defines it: member order is irrelevant, array order is not. */
export function jsonEqual(a: JsonValue, b: JsonValue): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((item, index) => jsonEqual(item, b[index] as JsonValue));
  }
  const objectA = a as JsonObject;
  const objectB = b as JsonObject;
  const keys = Object.keys(objectA);
  if (keys.length !== Object.keys(objectB).length) return false;
  return keys.every((key) => Object.hasOwn(objectB, key) && jsonEqual(objectA[key] as JsonValue, objectB[key] as JsonValue));
}

/**
 * JSON text that may hold a number JSON.parse reads as ±Infinity: a number token (at the start,
 * or after `:`, `[`, `,` or whitespace, as JSON places them) with an exponent of three digits
 * or more, or 210 digits or more before its point. A number overflows only when its integer
 * digits plus its exponent pass 308: with an exponent of two digits (99 at most) that takes 210
 * integer digits (`1` and 250 zeros `e99` is 1e349), so a run of 309 would miss it. Text without
 * one skips the walk for it. Anchored on the number's start because strings match a bare `e123`
 * all the time (UUIDs, base64 token ids): that made most decision bodies walk their whole input
 * (~10 us each).
 */
export const MAY_OVERFLOW = /(?:^|[:[,\s])-?(?:\d+(?:\.\d*)?[eE][+-]?\d{3}|\d{210})/;

/**
 * The first place a parsed JSON value holds what nothing after the parser should get: a string
 * (a key or a value) that is not well-formed Unicode (JSON escapes can spell a lone surrogate,
 * which the policy's parser refuses and SQLite stores altered) when `checkText`, a number past
 * a double's range (JSON.parse reads 1e400 as Infinity, which every serializer after it writes
 * as null: the policy would compare null where the sender wrote a huge number), or objects and
 * arrays nested deeper than `maxDepth` (the value itself is level 1). A JSON pointer and what is
 * wrong there, or undefined. Iterative, so a hostile depth cannot exhaust the stack here either.
 */
export function jsonDefect(value: unknown, options: { maxDepth: number; checkText: boolean }): { pointer: string; detail: string } | undefined {
  const { maxDepth, checkText } = options;
  const pending: { value: unknown; pointer: string; depth: number }[] = [{ value, pointer: '', depth: 0 }];
  while (pending.length > 0) {
    const current = pending.pop()!;
    if (typeof current.value === 'string') {
      if (checkText && !current.value.isWellFormed()) return { pointer: current.pointer, detail: 'string is not well-formed Unicode (it holds a lone surrogate)' };
      continue;
    }
    if (typeof current.value === 'number') {
      if (!Number.isFinite(current.value)) return { pointer: current.pointer, detail: 'number is not finite (beyond the range of a double)' };
      continue;
    }
    if (current.value === null || typeof current.value !== 'object') continue;
    if (current.depth + 1 > maxDepth) return { pointer: current.pointer, detail: `nested deeper than ${maxDepth} levels of objects and arrays` };
    for (const [key, child] of Object.entries(current.value)) {
      const pointer = `${current.pointer}/${escapePointerToken(key)}`;
      if (checkText && !key.isWellFormed()) return { pointer, detail: 'key is not well-formed Unicode (it holds a lone surrogate)' };
      pending.push({ value: child, pointer, depth: current.depth + 1 });
    }
  }
  return undefined;
}

/**
 * JSON text that may hold a number a double does not hold as written: one of 16 digits or more
 * (a double holds any 15 significant digits exactly, not every 16: 9007199254740993 is read as
 * 9007199254740992), or one with an exponent of three digits (past a double's least values,
 * where it holds fewer digits or none: 1e-400 is read as 0). Anchored on the number's start, as
 * MAY_OVERFLOW: text without one skips the parse that looks at each number as written.
 */
const MAY_BE_INEXACT = /(?:^|[:[,\s])-?(?:(?:\d\.?){16}|\d+(?:\.\d*)?[eE][+-]?\d{3})/;

/**
 * The first number of the JSON `text` whose value as JSON.parse reads it, a double, is another
 * number than the one written, as written and as read; undefined when every number is read as
 * written (0.1 is: the policy is handed "0.1" again), or the text is not JSON. Whoever signed
 * or sent 9007199254740993 would otherwise be taken for 9007199254740992: two different values
 * reach the policy, and the record, as one. A number past a double's range is jsonDefect's.
 */
export function inexactNumber(text: string): { written: string; read: number } | undefined {
  if (!MAY_BE_INEXACT.test(text)) return undefined;
  let found: { written: string; read: number } | undefined;
  // The reviver's third argument (ES2025 JSON.parse source text access) is the number as written.
  const reviver = (_key: string, value: unknown, context?: { source?: string }): unknown => {
    const written = context?.source;
    if (found === undefined && typeof value === 'number' && Number.isFinite(value) && written !== undefined && decimal(written) !== decimal(String(value))) {
      found = { written, read: value };
    }
    return value;
  };
  try {
    JSON.parse(text, reviver as (key: string, value: unknown) => unknown);
  } catch {
    return undefined;
  }
  return found;
}

/** A JSON number's value as one spelling (digits without leading or trailing zeros, and an exponent), so equal values compare equal. */
function decimal(number: string): string | undefined {
  const match = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(number);
  if (match === null) return undefined;
  const [, sign, whole, fraction = '', exponent = '0'] = match as unknown as [string, string, string, string | undefined, string | undefined];
  const digits = `${whole}${fraction}`.replace(/^0+/, '');
  if (digits === '') return '0'; // -0 is 0, as the policy compares it
  const significant = digits.replace(/0+$/, '');
  return `${sign}${significant}e${BigInt(exponent) - BigInt(fraction.length) + BigInt(digits.length - significant.length)}`;
}

export function escapePointerToken(token: string): string {
  return token.replaceAll('~', '~0').replaceAll('/', '~1');
}
