import { z } from 'zod';
import { FieldsInvalidError } from '../errors.ts';
import { formatJsonPointer, parseArrayIndex, parseJsonPointer } from './json-pointer.ts';
import { freezeJson, isJsonObject, jsonByteSize, jsonEqual, ownMember } from './json-value.ts';
import type { JsonArray, JsonObject, JsonValue } from './json-value.ts';

const pointer = z.string();

/** One RFC 6902 operation. `value` is checked to be JSON (and within limits) when applied. */
const JsonPatchOperationSchema = z.discriminatedUnion('op', [
  z.object({ op: z.literal('add'), path: pointer, value: z.unknown() }),
  z.object({ op: z.literal('remove'), path: pointer }),
  z.object({ op: z.literal('replace'), path: pointer, value: z.unknown() }),
  z.object({ op: z.literal('move'), from: pointer, path: pointer }),
  z.object({ op: z.literal('copy'), from: pointer, path: pointer }),
  z.object({ op: z.literal('test'), path: pointer, value: z.unknown() }),
]);
export type JsonPatchOperation = z.infer<typeof JsonPatchOperationSchema>;

export const JsonPatchSchema = z.array(JsonPatchOperationSchema);

/** The member of an operation an error is about, named in the error's JSON pointer (`/2/from`); `''`: the operation itself. */
export type OperationMember = 'path' | 'from' | 'value' | '';

/**
 * A patch that cannot be applied. `code` is `json_patch_invalid` (malformed operation or
 * pointer), `json_patch_path_not_found` (a location the operation needs does not exist),
 * `json_patch_test_failed`, or a data limit (`data_too_large`, `data_too_deep`); `opIndex` is
 * the failing operation (undefined when the patch itself is not an array), and `errors` name
 * the member at fault by pointer into the patch (`/1/from`). Nothing of the patch is applied
 * when this is thrown.
 */
export class JsonPatchError extends FieldsInvalidError {
  readonly opIndex: number | undefined;

  constructor(code: string, opIndex: number | undefined, reason: string, member: OperationMember = 'path') {
    const pointer = opIndex === undefined ? '' : member === '' ? `/${opIndex}` : `/${opIndex}/${member}`;
    super(code, opIndex === undefined ? `JSON Patch: ${reason}` : `JSON Patch op ${opIndex}: ${reason}`, [{ pointer, detail: reason }]);
    this.opIndex = opIndex;
  }
}

export interface ApplyJsonPatchOptions {
  maxDepth: number;
  /** Keys from the data root to the patched document, counted against `maxDepth`. */
  depthOffset: number;
  /**
   * Most serialized bytes the operations may add in all (the values of add, replace and
   * copy; default unlimited), else `data_too_large`. `copy` shares the copied subtree, so a
   * few operations can otherwise build a value whose serialization is gigabytes.
   */
  maxAddedBytes?: number;
}

/**
 * Applies an RFC 6902 patch to `document` without mutating it: the containers along the
 * operations' paths are copied, each once per patch however many operations change it (a copy
 * per operation made a patch of n additions to an object of n members cost n² member copies:
 * minutes of the main thread for a body of a few hundred kB), so the result shares unchanged
 * subtrees with the input and the input stays a valid snapshot. The result is deep-frozen. All
 * or nothing: the first failing operation throws and no partial result escapes.
 */
export function applyJsonPatch(document: JsonValue, patch: unknown, options: ApplyJsonPatchOptions): JsonValue {
  if (!Array.isArray(patch)) throw new JsonPatchError('json_patch_invalid', undefined, 'the patch must be an array of operations');
  const budget = { maxBytes: options.maxAddedBytes ?? Infinity, addedBytes: 0 };
  const draft = new Draft();
  const result = patch.reduce<JsonValue>(
    (current, raw, index) => applyOperation(current, parseOperation(raw, index), new OperationContext(index, options, budget, draft)),
    document,
  );
  return draft.seal(result);
}

/**
 * The containers this patch made (copies of the document's, along the operations' paths): only
 * they are changed in place, and only they can be, since a container is copied before it
 * changes and the input is frozen. Every ancestor of one is one too (a copy is put into its
 * parent's copy), so `seal` finds them all from the root.
 */
class Draft {
  readonly #made = new WeakSet<object>();
  /** Depths of containers the patch did not make: neither they nor anything below them change. */
  readonly #depths = new WeakMap<object, number>();

  /** `node` itself when this patch made it, else a copy it may change. */
  own(node: JsonArray | JsonObject): JsonArray | JsonObject {
    if (this.#made.has(node)) return node;
    const copy: JsonValue[] | Record<string, JsonValue> = Array.isArray(node) ? [...(node as JsonArray)] : { ...(node as JsonObject) };
    this.#made.add(copy);
    return copy;
  }

  /**
   * Levels of keys below `value` (0 for scalars and empty containers), each container the patch
   * did not make walked once per patch: a value moved back and forth is not walked whole at every move.
   */
  depth(value: JsonValue): number {
    if (value === null || typeof value !== 'object') return 0;
    const known = this.#depths.get(value);
    if (known !== undefined) return known;
    let deepest = 0;
    for (const item of Object.values(value)) deepest = Math.max(deepest, 1 + this.depth(item));
    if (!this.#made.has(value)) this.#depths.set(value, deepest);
    return deepest;
  }

  /**
   * Freezes the containers this patch made within `value`, which no longer change: a value about
   * to be shared (`copy`) is then copied again before either place of it changes.
   */
  seal(value: JsonValue): JsonValue {
    if (value === null || typeof value !== 'object' || !this.#made.has(value)) return value;
    this.#made.delete(value);
    for (const child of Object.values(value)) this.seal(child);
    return Object.freeze(value);
  }
}

function parseOperation(raw: unknown, index: number): JsonPatchOperation {
  const parsed = JsonPatchOperationSchema.safeParse(raw);
  if (!parsed.success) {
    const reason = parsed.error.issues.map((issue) => `${issue.path.join('.') || '(operation)'}: ${issue.message}`).join('; ');
    throw new JsonPatchError('json_patch_invalid', index, reason, '');
  }
  return parsed.data;
}

function applyOperation(document: JsonValue, operation: JsonPatchOperation, context: OperationContext): JsonValue {
  const path = context.pointer(operation.path, 'path');
  switch (operation.op) {
    case 'add':
      return add(document, path, context.added(context.value(operation.value, path), 'value'), context);
    case 'remove':
      return remove(document, path, context);
    case 'replace':
      return replace(document, path, context.added(context.value(operation.value, path), 'value'), context);
    case 'move': {
      const from = context.pointer(operation.from, 'from');
      const value = get(document, from, context, 'from');
      if (from.length === path.length && from.every((token, i) => token === path[i])) return document;
      if (from.length < path.length && from.every((token, i) => token === path[i])) {
        throw context.error('json_patch_invalid', `cannot move "${operation.from}" into its own child "${operation.path}"`);
      }
      // Not counted as added bytes: the value leaves its old place, so the data does not grow.
      return add(remove(document, from, context), path, context.sharedValue(value, path), context);
    }
    case 'copy': {
      // Sealed: in two places now, it must be copied again before either of them changes.
      const value = context.draft.seal(get(document, context.pointer(operation.from, 'from'), context, 'from'));
      return add(document, path, context.sharedValue(context.added(value, 'from'), path), context);
    }
    case 'test': {
      // Compared as it is, not held to what live data may store (data.max_depth, non-empty
      // keys): RFC 6902 4.6 makes test a comparison, and a value the store could not hold is
      // JSON all the same, equal to nothing stored, so the test fails (409) rather than the
      // request (400). The body reader has refused what is not JSON (lone surrogates, 1e400).
      if (!jsonEqual(get(document, path, context), operation.value as JsonValue)) {
        throw context.error('json_patch_test_failed', `the value at "${operation.path}" is not equal to the expected value`, 'value');
      }
      return document;
    }
  }
}

/** Bytes added so far by the operations of one patch, against its limit. */
interface AddedBytesBudget {
  readonly maxBytes: number;
  addedBytes: number;
}

/** Per-operation helpers that attach the op index to every error. */
class OperationContext {
  readonly index: number;
  readonly options: ApplyJsonPatchOptions;
  readonly draft: Draft;
  readonly #budget: AddedBytesBudget;

  constructor(index: number, options: ApplyJsonPatchOptions, budget: AddedBytesBudget, draft: Draft) {
    this.index = index;
    this.options = options;
    this.#budget = budget;
    this.draft = draft;
  }

  error(code: string, reason: string, member: OperationMember = 'path'): JsonPatchError {
    return new JsonPatchError(code, this.index, reason, member);
  }

  pointer(text: string, member: 'path' | 'from'): string[] {
    try {
      return parseJsonPointer(text);
    } catch (error) {
      throw this.error('json_patch_invalid', `${member}: ${(error as Error).message}`, member);
    }
  }

  /** Validates and freezes a value supplied in the operation. */
  value(raw: unknown, path: readonly string[]): JsonValue {
    const where = `JSON Patch op ${this.index} value`;
    return freezeJson(raw, {
      maxDepth: this.options.maxDepth,
      depthOffset: this.options.depthOffset + path.length,
      where,
      bodyPointer: `/${this.index}/value`,
    });
  }

  /**
   * Counts `value` against the patch's added-bytes limit, measuring no further than the
   * bytes left: a copy of a widely shared subtree costs at most that much to refuse.
   */
  added(value: JsonValue, member: 'value' | 'from'): JsonValue {
    const left = this.#budget.maxBytes - this.#budget.addedBytes;
    const bytes = jsonByteSize(value, left);
    if (bytes > left) {
      throw this.error('data_too_large', `the patch would add more than ${this.#budget.maxBytes} bytes, the live data size limit`, member);
    }
    this.#budget.addedBytes += bytes;
    return value;
  }

  /**
   * A value already in the document placed at a new depth. A copy is counted (`added`) first:
   * that bounds the first walk over its shared subtrees.
   */
  sharedValue(value: JsonValue, path: readonly string[]): JsonValue {
    if (this.options.depthOffset + path.length + this.draft.depth(value) > this.options.maxDepth) {
      throw this.error('data_too_deep', `the result exceeds the maximum depth of ${this.options.maxDepth}`);
    }
    return value;
  }
}

function get(document: JsonValue, path: readonly string[], context: OperationContext, member: 'path' | 'from' = 'path'): JsonValue {
  let current = document;
  for (const token of path) {
    const child = childOf(current, token);
    if (child === undefined) throw notFound(path, context, member);
    current = child;
  }
  return current;
}

function childOf(container: JsonValue, token: string): JsonValue | undefined {
  if (Array.isArray(container)) {
    const index = parseArrayIndex(token);
    return index === undefined ? undefined : container[index];
  }
  return isJsonObject(container) ? ownMember(container, token) : undefined;
}

function add(document: JsonValue, path: readonly string[], value: JsonValue, context: OperationContext): JsonValue {
  if (path.length === 0) return value;
  return updateParent(document, path, context, (parent, token) => {
    if (Array.isArray(parent)) {
      const index = token === '-' ? parent.length : parseArrayIndex(token);
      if (index === undefined || index > parent.length) throw notFound(path, context);
      return (items) => void items.splice(index, 0, value);
    }
    if (isJsonObject(parent)) {
      // Live data keys are non-empty everywhere else (a document with "" would not load again).
      if (token === '') throw context.error('json_patch_invalid', `"${formatJsonPointer(path)}" names an empty object key: live data keys must be non-empty`);
      return (members) => setMember(members, token, value);
    }
    throw notFound(path, context);
  });
}

function remove(document: JsonValue, path: readonly string[], context: OperationContext): JsonValue {
  if (path.length === 0) throw context.error('json_patch_invalid', 'cannot remove the whole document (delete it instead)');
  return updateParent(document, path, context, (parent, token) => {
    if (Array.isArray(parent)) {
      const index = parseArrayIndex(token);
      if (index === undefined || index >= parent.length) throw notFound(path, context);
      return (items) => void items.splice(index, 1);
    }
    if (isJsonObject(parent) && Object.hasOwn(parent, token)) return (members) => void delete members[token];
    throw notFound(path, context);
  });
}

function replace(document: JsonValue, path: readonly string[], value: JsonValue, context: OperationContext): JsonValue {
  if (path.length === 0) return value;
  return updateParent(document, path, context, (parent, token) => {
    if (Array.isArray(parent)) {
      const index = parseArrayIndex(token);
      if (index === undefined || index >= parent.length) throw notFound(path, context);
      return (items) => void (items[index] = value);
    }
    // Set in place (not remove + add) so the member keeps its position.
    if (isJsonObject(parent) && Object.hasOwn(parent, token)) return (members) => setMember(members, token, value);
    throw notFound(path, context);
  });
}

/** How an operation changes the parent of its location, in place: in a container the patch made. */
type Change = (parent: JsonValue[] & Record<string, JsonValue>) => void;

/**
 * Finds the parent of `path` and checks the operation can apply there (`check` throws when it
 * cannot, before anything is copied), then makes the containers from the root down to that
 * parent the patch's own (`Draft.own`) and applies the change `check` returns to the parent.
 * Returns the document root, a copy the first time the patch changes it.
 */
function updateParent(
  document: JsonValue,
  path: readonly string[],
  context: OperationContext,
  check: (parent: JsonValue, token: string) => Change,
): JsonValue {
  const ancestors: JsonValue[] = [document];
  for (const token of path.slice(0, -1)) {
    const child = childOf(ancestors.at(-1)!, token);
    if (child === undefined) throw notFound(path, context);
    ancestors.push(child);
  }
  const change = check(ancestors.at(-1)!, path.at(-1)!);
  // Containers all the way: each ancestor has a child, and the parent passed the check.
  const owned = ancestors.map((node) => context.draft.own(node as JsonArray | JsonObject) as JsonValue[] & Record<string, JsonValue>);
  for (let depth = 1; depth < owned.length; depth++) {
    const parent = owned[depth - 1]!;
    const token = path[depth - 1]!;
    if (Array.isArray(parent)) parent[Number(token)] = owned[depth]!;
    else setMember(parent, token, owned[depth]!);
  }
  change(owned.at(-1)!);
  return owned[0]!;
}

/** Sets a member as an own data property, so `__proto__` stays a plain key (assigning it would set the prototype). */
function setMember(object: Record<string, JsonValue>, key: string, value: JsonValue): void {
  Object.defineProperty(object, key, { value, enumerable: true, writable: true, configurable: true });
}

function notFound(path: readonly string[], context: OperationContext, member: 'path' | 'from' = 'path'): JsonPatchError {
  return context.error('json_patch_path_not_found', `no value at "${formatJsonPointer(path)}"`, member);
}
