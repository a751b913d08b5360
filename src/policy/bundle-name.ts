/**
 * A bundle name is a URL path segment, a directory in the store and the first segment of
 * its entrypoints (`<name>/decision`), so it is kept to what is safe in all three.
 */
export const BUNDLE_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,63}$/;

export function isBundleName(name: string): boolean {
  return BUNDLE_NAME_PATTERN.test(name);
}
