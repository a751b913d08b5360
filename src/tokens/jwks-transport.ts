/**
 * The connection a remote key set is fetched on (under jose's createRemoteJWKSet). Whoever can
 * replace the key set on its way can sign tokens Arbiter accepts, so where it is fetched from is
 * checked where it can be: jwks_uri is https (its name goes wherever the operator's DNS points it,
 * and the certificate is checked against the name), or plain http to a loopback host. That
 * "loopback" is how the URL spells the host (config/schema.ts); a name such as `localhost` is
 * only what the resolver (/etc/hosts, or DNS when those lack it) answers for it. So plain http is
 * resolved once here, every address must be this machine, and the connection goes to exactly
 * those addresses (net/connection.ts): the key set never crosses a network in clear text, and a
 * second lookup cannot answer otherwise in between.
 *
 * A redirect is never followed, whichever the scheme, as Envoy's remote_jwks and jose do not: the
 * key set is wherever jwks_uri says, and a redirect to plain http, or to a host the rule above
 * would refuse, would let the key set be replaced. It fails the fetch saying so, where jose
 * would only say it expected 200.
 */
import type { FetchImplementation } from 'jose';
import { addressesOf, getFrom, REDIRECT_STATUSES, systemResolver, type HostResolver } from '../net/connection.ts';
import { isThisMachine } from '../net/this-machine.ts';
import { withoutCredentials } from '../shown-url.ts';

/** The fetch jose loads a remote key set with; `resolveHost` resolves a plain-http host (dns.lookup). */
export function jwksTransport(resolveHost: HostResolver = systemResolver): FetchImplementation {
  return async (url, options) => {
    const response = await connect(new URL(url), options, resolveHost);
    if (!REDIRECT_STATUSES.has(response.status)) return response;
    await response.body?.cancel();
    // The Location is not shown: the message reaches gateways, and it may carry a signature.
    throw new Error(`${withoutCredentials(url)} answers a redirect (${response.status}), which is not followed: jwks_uri must name the key set itself`);
  };
}

async function connect(target: URL, options: Parameters<FetchImplementation>[1], resolveHost: HostResolver): Promise<Response> {
  // https is left to fetch, as before: system CAs, NODE_EXTRA_CA_CERTS, an egress proxy. Its
  // redirects are not followed whatever the caller asks (jose asks so today).
  if (target.protocol !== 'http:') return fetch(target, { ...options, redirect: 'manual' });
  const addresses = await addressesOf(target, resolveHost);
  for (const { address } of addresses) {
    // The message reaches gateways (the deny's reason), the decision log and /readyz: no credential of the URL.
    if (!isThisMachine(address)) throw new Error(`${withoutCredentials(target)} resolves to ${address}, which is not connected to: plain http only to this machine`);
  }
  // Follows no redirect.
  return getFrom(target, addresses, { headers: Object.fromEntries(options.headers), signal: options.signal });
}
