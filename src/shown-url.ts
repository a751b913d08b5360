/**
 * A URL as logs, errors and records show it: without what may authenticate it. Userinfo and
 * the query string (a token parameter, a signed URL's signature) are left out, the query
 * marked as `?…` so the reader knows there was one.
 */
export function withoutCredentials(raw: string | URL): string {
  const url = new URL(raw);
  return `${url.protocol}//${url.host}${url.pathname}${url.search === '' ? '' : '?…'}`;
}
