import { z } from 'zod';
import { parseArrayIndex, parseJsonPointer } from '../data/json-pointer.ts';
import { canonicalJson, sha256Hex } from './canonical-json.ts';

/**
 * An RFC 6901 JSON pointer into a decision record, e.g. `/input/context/client_ip`.
 * The empty pointer (the whole record) is refused: masking the record away would
 * leave nothing to audit.
 */
const jsonPointerSchema = z
  .string()
  .regex(/^(\/([^~]|~[01])*)+$/, 'must be a non-empty RFC 6901 JSON pointer such as /input/context/client_ip');

/**
 * `erase` removes the member (an array element becomes null so the indexes of its
 * siblings, and any other pointer into them, keep their meaning). `hash` replaces the
 * value with `sha256:<hex>` of its canonical JSON: equal values stay correlatable
 * across records without the value itself being stored. Strict, as every configuration
 * object: a misspelt key would otherwise be dropped and the rule kept as if it were whole.
 */
export const maskRuleSchema = z.strictObject({
  pointer: jsonPointerSchema.describe('RFC 6901 JSON pointer into the record, e.g. /input/context/client_ip.'),
  mode: z.enum(['erase', 'hash']).describe('erase removes the value; hash replaces it by sha256:<hex> of its canonical JSON.'),
});

export type MaskRule = z.infer<typeof maskRuleSchema>;

/** The replacement `hash` mode stores; exported so a query can look up a masked value. */
export function hashValue(value: unknown): string {
  return `sha256:${sha256Hex(canonicalJson(value))}`;
}

/**
 * Returns `record` with every rule applied; the argument is never mutated. Only the
 * containers on a masked path are copied, the rest is shared, so masking costs little
 * more than the pointers it follows. A pointer that leads nowhere masks nothing.
 */
export function applyMask<T extends object>(record: T, rules: readonly MaskRule[]): T {
  let masked = record;
  for (const rule of rules) {
    // rule.pointer passed jsonPointerSchema, so parseJsonPointer does not throw for it.
    masked = maskAt(masked, parseJsonPointer(rule.pointer), 0, rule.mode) as T;
  }
  return masked;
}

function maskAt(container: unknown, tokens: readonly string[], depth: number, mode: MaskRule['mode']): unknown {
  if (container === null || typeof container !== 'object') return container;
  const token = tokens[depth] as string;
  const last = depth === tokens.length - 1;

  if (Array.isArray(container)) {
    const index = parseArrayIndex(token);
    if (index === undefined || index >= container.length) return container;
    const replacement = last ? (mode === 'hash' ? hashValue(container[index]) : null) : maskAt(container[index], tokens, depth + 1, mode);
    if (replacement === container[index]) return container;
    const copy = container.slice();
    copy[index] = replacement;
    return copy;
  }

  const object = container as Record<string, unknown>;
  if (!Object.hasOwn(object, token)) return container;
  if (last && mode === 'erase') {
    const { [token]: _erased, ...rest } = object;
    return rest;
  }
  const replacement = last ? hashValue(object[token]) : maskAt(object[token], tokens, depth + 1, mode);
  return replacement === object[token] ? container : { ...object, [token]: replacement };
}
