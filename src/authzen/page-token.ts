import { createHash } from 'node:crypto';
import { canonicalJson } from '../decisions/canonical-json.ts';

/**
 * Search page tokens: base64url of `<offset>.<query digest>`. The digest covers everything
 * the spec requires to stay identical between pages (entities, context, limit) plus the
 * bundle, so a token replayed against another query is refused instead of silently paging
 * through a different result set. The token is a cursor, not a credential: forging one only
 * moves the starting point of a search the caller may run anyway.
 */
export function queryDigest(query: unknown): string {
  return createHash('sha256').update(canonicalJson(query)).digest('base64url').slice(0, 22);
}

export function encodePageToken(offset: number, digest: string): string {
  return Buffer.from(`${offset}.${digest}`).toString('base64url');
}

/** The offset a token points at, or undefined when it is malformed or belongs to another query. */
export function decodePageToken(token: string, digest: string): number | undefined {
  const text = Buffer.from(token, 'base64url').toString('latin1');
  // Node's base64url decoder skips what it cannot read; only the exact encoding is a token.
  if (Buffer.from(text, 'latin1').toString('base64url') !== token) return undefined;
  const match = /^(0|[1-9][0-9]{0,8})\.([A-Za-z0-9_-]{22})$/.exec(text);
  if (!match || match[2] !== digest) return undefined;
  return Number(match[1]);
}
