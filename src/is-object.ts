/**
 * Whether `value` is an object with members to read: not null, not an array. Any prototype
 * passes; data/json-value.ts's isJsonObject is the stricter test for values that must be plain
 * JSON (a plain or null prototype).
 */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
