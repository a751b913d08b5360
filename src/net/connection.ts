/**
 * One GET on a connection to addresses resolved beforehand, for fetches whose destination is
 * checked by address (bundle polls, key sets over plain http): the caller checks the addresses a
 * name resolves to (pull.ts connectRefusal, tokens/jwks-transport.ts) and the connection goes to those very
 * addresses, through a lookup that answers nothing else. fetch would resolve the name again
 * when it connects, and a DNS answer that changed in between (rebinding) would go unchecked.
 */
import type { LookupAddress } from 'node:dns';
import { lookup } from 'node:dns/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import { Readable } from 'node:stream';
import { withoutCredentials } from '../shown-url.ts';
import { unbracketed } from './host-literal.ts';

/** Resolves a host name to every address a connection may go to (dns.lookup, as fetch would). */
export type HostResolver = (hostname: string) => Promise<readonly LookupAddress[]>;

export const systemResolver: HostResolver = (hostname) => lookup(hostname, { all: true });

/** The addresses a connection to `url` may go to: the host itself when it is an address, else what `resolve` answers. */
export async function addressesOf(url: URL, resolve: HostResolver): Promise<readonly LookupAddress[]> {
  const host = unbracketed(url.hostname);
  const family = isIP(host);
  if (family !== 0) return [{ address: host, family }];
  const addresses = await resolve(host);
  if (addresses.length === 0) throw new Error(`${host} resolves to no address`);
  return addresses;
}

/** Statuses that redirect to their Location. */
export const REDIRECT_STATUSES: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);

/** Statuses whose response has no body (the Response constructor refuses one for them). */
const NULL_BODY_STATUSES: ReadonlySet<number> = new Set([101, 103, 204, 205, 304]);

/**
 * GET of `url` (http or https, the system's CAs and NODE_EXTRA_CA_CERTS as fetch uses them) on a
 * new connection to one of `addresses`; TLS still verifies the certificate against the URL's host
 * name. Its answer as a fetch Response, body unread and not decoded (no Accept-Encoding is sent,
 * so a server sends the body as it is stored). Redirects are not followed.
 */
export function getFrom(url: URL, addresses: readonly LookupAddress[], options: { headers: Record<string, string>; signal: AbortSignal }): Promise<Response> {
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    let answer: IncomingMessage | undefined;
    const req = request(
      url,
      // No agent: a pooled connection would have been checked for another hop's rule, and these
      // fetches are minutes apart. Nor the proxy NODE_USE_ENV_PROXY names: its address is not the one checked.
      { method: 'GET', headers: options.headers, agent: false, lookup: answering(addresses) },
      (res) => {
        answer = res;
        try {
          resolve(asResponse(url, res));
        } catch (error) {
          res.destroy();
          reject(error as Error);
        }
      },
    );
    // Destroyed with the signal's reason (a timeout says so), mid-body too: the body then fails with it.
    const abort = () => {
      answer?.destroy(options.signal.reason as Error);
      req.destroy(options.signal.reason as Error);
    };
    if (options.signal.aborted) abort();
    else options.signal.addEventListener('abort', abort, { once: true });
    req.once('close', () => options.signal.removeEventListener('abort', abort));
    req.on('error', reject);
    req.end();
  });
}

/** A lookup that answers `addresses` (those of the asked family), whatever name it is asked. */
function answering(addresses: readonly LookupAddress[]): LookupFunction {
  return (hostname, options, callback) => {
    const family = options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : (options.family ?? 0);
    const matching = family === 0 ? addresses : addresses.filter((address) => address.family === family);
    const answer = callback as (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;
    if (matching.length === 0) return answer(Object.assign(new Error(`${hostname} resolves to no IPv${family} address`), { code: 'ENOTFOUND' }), []);
    if (options.all === true) answer(null, [...matching]);
    else answer(null, matching[0]!.address, matching[0]!.family);
  };
}

function asResponse(url: URL, res: IncomingMessage): Response {
  const status = res.statusCode ?? 0;
  // What a Response cannot hold; no caller takes anything but 200, 304 and redirects anyway.
  if (status < 200 || status > 599) throw new Error(`${withoutCredentials(url)} answered ${status}, which is no HTTP status`);
  const headers = new Headers();
  for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) headers.append(res.rawHeaders[i]!, res.rawHeaders[i + 1]!);
  if (NULL_BODY_STATUSES.has(status)) {
    res.resume();
    return new Response(null, { status, statusText: res.statusMessage ?? '', headers });
  }
  return new Response(Readable.toWeb(res) as ReadableStream<Uint8Array>, { status, statusText: res.statusMessage ?? '', headers });
}
