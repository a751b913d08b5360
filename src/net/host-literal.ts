/** Host spellings between a URL, which writes an IPv6 address in brackets, and a socket, which does not. */

/** A listen address or host name as a URL's host: an IPv6 address (::1) in brackets ([::1]). */
export function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/** A URL's hostname as a connection or address check names it: an IPv6 address without its brackets. */
export function unbracketed(hostname: string): string {
  return hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
}
