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
 */
import type { FetchImplementation } from 'jose';
import { addressesOf, getFrom, systemResolver, type HostResolver } from '../net/connection.ts';
import { isThisMachine } from '../net/this-machine.ts';
import { withoutCredentials } from '../shown-url.ts';

export function jwksTransport(resolveHost: HostResolver = systemResolver): FetchImplementation {
  return async (url, options) => {
    const target = new URL(url);
    // https is left to fetch, as before: system CAs, NODE_EXTRA_CA_CERTS, an egress proxy.
    if (target.protocol !== 'http:') return fetch(url, options);
    const addresses = await addressesOf(target, resolveHost);
    for (const { address } of addresses) {
      // The message reaches gateways (the deny's reason), the decision log and /readyz: no credential of the URL.
      if (!isThisMachine(address)) throw new Error(`${withoutCredentials(target)} resolves to ${address}, which is not connected to: plain http only to this machine`);
    }
    return getFrom(target, addresses, { headers: Object.fromEntries(options.headers), signal: options.signal });
  };
}
