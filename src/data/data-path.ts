import { ArbiterError } from '../errors.ts';

/**
 * A location in `data` as object keys from the root: `['entitlements', 'user:alice@acme.example']`
 * is `data.entitlements["user:alice@acme.example"]`. The empty path is `data` itself.
 */
export type DataPath = readonly string[];

/**
 * Splits the raw (still percent-encoded) URL path after `/v1/data/` into keys, decoding
 * each segment separately so an encoded `%2F` stays inside its key. Throws
 * `data_path_invalid` for empty segments, `.` or `..` keys (see `refuseDotSegments`) or
 * malformed percent-encoding.
 */
export function parseDataPath(rawPath: string): DataPath {
  refuseDotSegments(rawPath);
  const trimmed = rawPath.replace(/^\/+|\/+$/g, '');
  if (trimmed === '') return [];
  return trimmed.split('/').map((segment) => {
    if (segment === '') throw new ArbiterError('data_path_invalid', `"${rawPath}" has an empty path segment`);
    try {
      return decodeURIComponent(segment);
    } catch {
      throw new ArbiterError('data_path_invalid', `"${rawPath}" has a malformed percent-encoded segment "${segment}"`);
    }
  });
}

/**
 * Throws `data_path_invalid` when a segment of the URL path as sent is `.` or `..`, also
 * percent-encoded: URL parsing resolves them (WHATWG treats `%2E` as a dot), so
 * `/v1/data/entitlements/users/..` would otherwise replace or delete the whole
 * `entitlements` document instead of the key `..` its sender named.
 */
export function refuseDotSegments(sentPath: string): void {
  const dot = sentPath.split('/').find((segment) => /^(?:\.|%2e){1,2}$/i.test(segment));
  if (dot !== undefined) {
    throw new ArbiterError('data_path_invalid', `"${sentPath}" has a "${dot}" segment: keys "." and ".." cannot be addressed in a URL path`);
  }
}

/** Human-readable form for messages: keys joined by `/`. */
export function formatDataPath(path: DataPath): string {
  return path.length === 0 ? '(root)' : path.join('/');
}

/**
 * A read-only predicate for live data given a bundle's manifest roots (`"authz"`, `"a/b"`;
 * `""` owns everything, as in OPA). A path is owned when it is inside a root or is an
 * ancestor of one, since writing `data.a` would replace the bundle's `data.a.b`.
 */
export function ownedByRoots(roots: readonly string[]): (path: DataPath) => boolean {
  const rootPaths = roots.map((root) => root.split('/').filter((segment) => segment !== ''));
  return (path) =>
    rootPaths.some((root) => {
      const shared = Math.min(root.length, path.length);
      for (let i = 0; i < shared; i++) if (root[i] !== path[i]) return false;
      return true;
    });
}
