import { z } from 'zod';

const EXAMPLES = 'e.g. arbiter.test, .arbiter.test for it and its subdomains, 192.0.2.10, [fd00::1]';

/**
 * One server.allowed_hosts entry: a host name or IP address as a Host header carries it, without
 * scheme, port or path; a leading dot lists a name and every subdomain of it (Vite's
 * server.allowedHosts spelling). Written as the URL parser writes the host (lowercase, punycode,
 * IPv6 compressed in brackets), which is how the request's host is compared with it. Whatever
 * else is refused naming what to drop, rather than kept as a name no Host could ever match.
 */
export const allowedHostSchema = z
  .string()
  .trim()
  .min(1, 'must not be empty')
  .transform((entry, ctx) => {
    const refuse = (message: string) => {
      ctx.addIssue({ code: 'custom', message });
      return z.NEVER;
    };
    if (entry.includes('://')) return refuse(`must be a host name without a scheme (${entry.slice(entry.indexOf('://') + 3).split('/')[0]}, not ${entry})`);
    if (entry.includes('*')) return refuse(`is not a host name: a wildcard is written as a leading dot, which lists a name and its subdomains (${entry.replace(/^\*+\.?/, '.')})`);
    if (/[/?#]/.test(entry)) return refuse('must be a host name without a path: only the Host header is checked');
    const subdomains = entry.startsWith('.');
    const name = subdomains ? entry.slice(1) : entry;
    const bracketed = /^\[[^\]]*\](.*)$/.exec(name);
    if (bracketed !== null ? bracketed[1] !== '' : name.includes(':')) {
      if (bracketed === null && name.indexOf(':') !== name.lastIndexOf(':')) return refuse(`an IPv6 address is written in brackets, as a Host header carries it ([${name}])`);
      if (/:\d*$/.test(name)) return refuse('must not carry a port: the name is accepted on any port');
      return refuse(`is not a host name or IP address (${EXAMPLES})`);
    }
    const url = name === '' || name.includes('@') ? null : URL.parse(`http://${name}/`);
    if (url === null || url.hostname === '') return refuse(`is not a host name or IP address (${EXAMPLES})`);
    if (subdomains && (url.hostname.startsWith('[') || /^\d+\.\d+\.\d+\.\d+$/.test(url.hostname))) {
      return refuse('is an IP address: a leading dot lists the subdomains of a name, and an IP address has none');
    }
    return subdomains ? `.${url.hostname}` : url.hostname;
  });
