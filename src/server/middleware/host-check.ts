import type { HttpBindings } from '@hono/node-server';
import type { MiddlewareHandler } from 'hono';
import { WILDCARD_HOSTS, type Config } from '../../config/schema.ts';
import { problem } from '../problem.ts';
import type { ThrottledWarnings } from '../throttled-log.ts';
import type { RequestIdVariables } from './request-id.ts';
import { urlHost } from '../../net/host-literal.ts';

/** Longest Host shown in a refusal and its log line: a DNS name is at most 253 characters. */
const MAX_SHOWN_HOST = 260;

/**
 * Whether `hostname`, as the URL parser writes it (lowercase, IPv4 dotted, IPv6 in brackets),
 * names the loopback interface whatever DNS says: `localhost` and `*.localhost` (RFC 6761; browsers
 * answer them without asking DNS, and no one can register a name under them), 127.0.0.0/8 and
 * [::1]. A DNS-rebinding page needs a name its attacker's DNS answers, so it never has one of these.
 */
function isLoopbackHostname(hostname: string): boolean {
  return hostname === 'localhost' || hostname.endsWith('.localhost') || hostname === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}

/**
 * The extra names the main listener answers (server.allowed_hosts, and server.host when that is
 * set), or undefined when Host is not checked at all: gateway authentication configured and no
 * server.allowed_hosts, as before the check existed. With authentication none every caller on
 * the machine is trusted, and a browser is one: a page whose name its DNS later points at
 * 127.0.0.1 would otherwise read decisions with the user's browser as its proxy.
 */
export function allowedHostsOf(config: Pick<Config, 'server' | 'gateway'>): readonly string[] | undefined {
  const { allowed_hosts: allowed, host } = config.server;
  if (allowed === undefined) return config.gateway.authentication === 'none' ? [] : undefined;
  // A wildcard listen address names no server: never a Host it answers.
  if (WILDCARD_HOSTS.has(host)) return allowed;
  // The listen address names this server: `arbiter health` and clients given it are answered.
  const listening = URL.parse(`http://${urlHost(host)}/`)?.hostname;
  return listening === undefined ? allowed : [...allowed, listening];
}

export interface HostCheckDeps {
  /** Refusals are logged at warn, at most one line a second (a page can send them at will). */
  warnings: ThrottledWarnings;
  /** Counts every refusal (arbiter_host_refusals_total); absent when metrics are off. */
  observer?: { hostRefused(): void } | undefined;
}

/**
 * Refuses a request whose host is neither a loopback name nor one of `allowed` (exact names, and
 * `.name` for a name and its subdomains), 421 Misdirected Request: this server does not answer
 * for that name. Runs before every route, so nothing is decided, recorded or authenticated for
 * it. The host is the request URL's, which is the Host header's (HTTP/2's :authority), or the
 * request target's authority when a client sends the absolute form (RFC 9112 §3.2.2). A request
 * with no Host at all (HTTP/1.0; HTTP/1.1 requires one) is answered: no browser sends one, so it
 * is no rebinding page's, and old probes (HAProxy's httpchk) do, to a wildcard listener too.
 * Mounted only when the check applies, so with gateway authentication it costs nothing.
 */
export function hostCheck(allowed: readonly string[], deps: HostCheckDeps): MiddlewareHandler<{ Variables: RequestIdVariables; Bindings: HttpBindings }> {
  const exact = new Set(allowed.filter((name) => !name.startsWith('.')));
  const parents = allowed.filter((name) => name.startsWith('.'));
  const answers = (hostname: string) =>
    isLoopbackHostname(hostname) || exact.has(hostname) || parents.some((parent) => hostname.endsWith(parent) || hostname === parent.slice(1));
  return async (c, next) => {
    if (c.req.header('host') === undefined) return next();
    const { hostname, host } = new URL(c.req.url);
    if (answers(hostname)) return next();
    deps.observer?.hostRefused();
    const shown = host.length > MAX_SHOWN_HOST ? `${host.slice(0, MAX_SHOWN_HOST)}…` : host;
    deps.warnings.warn(
      'host_not_allowed',
      { request_id: c.get('requestId'), remote_address: c.env?.incoming?.socket?.remoteAddress, method: c.req.method, path: c.req.path, host: shown },
      'request refused: Host not allowed',
    );
    return problem(c, 421, {
      code: 'host_not_allowed',
      title: 'Host not allowed',
      detail: `${shown} is not a name this server answers for: use localhost, 127.0.0.1 or [::1], or list the name in server.allowed_hosts`,
      host: shown,
    });
  };
}
