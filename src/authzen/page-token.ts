import { createHash } from 'node:crypto';
import { canonicalJson } from '../decisions/canonical-json.ts';
import { MAX_PAGE_LIMIT } from './schema.ts';

/**
 * Search page tokens: base64url of `<offset>.<query digest>.<limit>`. The digest covers
 * everything the spec requires to stay identical between pages (entities, context, limit)
 * plus the bundle and the tenant that answer, so a token replayed against another query is refused instead of silently
 * paging through a different result set. The limit rides along because a PEP may ask for the
 * next page with `page.token` alone: the page size it chose first then still holds. The token
 * is a cursor, not a credential: forging one only moves the starting point of a search the
 * caller may run anyway.
 */
export function queryDigest(query: unknown): string {
  return createHash('sha256').update(canonicalJson(query)).digest('base64url').slice(0, 22);
}

export function encodePageToken(offset: number, digest: string, limit: number): string {
  return Buffer.from(`${offset}.${digest}.${limit}`).toString('base64url');
}

/** What a well-formed token says; `limit` is absent from a token issued before it was recorded (`<offset>.<digest>`). */
export interface PageToken {
  offset: number;
  digest: string;
  limit?: number;
}

/** The parts of a token, or undefined when it is malformed; whether it belongs to this query is the caller's to check. */
export function decodePageToken(token: string): PageToken | undefined {
  const text = Buffer.from(token, 'base64url').toString('latin1');
  // Node's base64url decoder skips what it cannot read; only the exact encoding is a token.
  if (Buffer.from(text, 'latin1').toString('base64url') !== token) return undefined;
  const match = /^(0|[1-9][0-9]{0,8})\.([A-Za-z0-9_-]{22})(?:\.([1-9][0-9]{0,8}))?$/.exec(text);
  if (!match) return undefined;
  const limit = match[3] === undefined ? undefined : Number(match[3]);
  if (limit !== undefined && limit > MAX_PAGE_LIMIT) return undefined;
  return { offset: Number(match[1]), digest: match[2]!, ...(limit !== undefined && { limit }) };
}
