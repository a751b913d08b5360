import { z } from 'zod';

/**
 * A bundle name is a URL path segment, a directory in the store and the first segment of
 * its entrypoints (`<name>/decision`), so it is kept to what is safe in all three.
 */
const BUNDLE_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,63}$/;

export function isBundleName(name: string): boolean {
  return BUNDLE_NAME_PATTERN.test(name);
}

/** The one schema for a bundle name, wherever one is accepted (requests, configuration). */
export const bundleNameSchema = z.string().regex(BUNDLE_NAME_PATTERN, 'must be a bundle name: 1-64 lowercase letters, digits, _ or -, not starting with _ or -');
