/** Live data with a bundle's own data laid over it: inside its roots the bundle always wins. */
export function overlay(live: Record<string, unknown>, bundleData: Record<string, unknown>): Record<string, unknown> {
  const merged: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(live)) defineValue(merged, key, value);
  for (const [key, value] of Object.entries(bundleData)) {
    const existing = Object.hasOwn(merged, key) ? merged[key] : undefined;
    defineValue(merged, key, isObject(existing) && isObject(value) ? overlay(existing, value) : value);
  }
  return merged;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Define, never assign: a `__proto__` key in data stays a key. */
export function defineValue(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}
