import { createHash, timingSafeEqual } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type { HttpBindings } from '@hono/node-server';
import type { Context, MiddlewareHandler } from 'hono';
import type { GatewayConfig } from '../../config/gateway.ts';
import { problem } from '../problem.ts';
import type { ThrottledWarnings } from '../throttled-log.ts';
import type { RequestIdVariables } from './request-id.ts';

/**
 * The authenticated gateway, recorded with every decision it asks for, and the tenants it is bound
 * to (gateway.api_keys[].tenants, gateway.client_certificates[].tenants; unset for a gateway
 * bound to none, and with authentication none).
 */
export type GatewayVariables = { caller: string | null; callerTenants?: ReadonlySet<string> };

/**
 * Why a gateway was not authenticated: the only values of the metric's `reason` label, so
 * nothing a client sends (its key, a hash of it, a certificate's names) becomes a series.
 */
export const GATEWAY_AUTH_FAILURES = ['missing_credentials', 'unknown_api_key', 'client_certificate_required', 'client_certificate_untrusted', 'client_certificate_unlisted'] as const;
export type GatewayAuthFailure = (typeof GATEWAY_AUTH_FAILURES)[number];

export interface GatewayAuthDeps {
  /** Failures are logged at warn, at most one line per reason per second (key guessing costs a request each). */
  warnings: ThrottledWarnings;
  /** Counts every failure (arbiter_gateway_auth_failures_total); absent when metrics are off. */
  observer?: { gatewayAuthFailed(reason: GatewayAuthFailure): void } | undefined;
}

type GatewayContext = Context<{ Variables: GatewayVariables & RequestIdVariables; Bindings: HttpBindings }>;

/**
 * Authenticates the gateway calling a decision endpoint: nobody (`none`, loopback
 * development), an API key compared by hash in constant time, or a verified client certificate.
 */
export function gatewayAuth(config: GatewayConfig, deps: GatewayAuthDeps): MiddlewareHandler<{ Variables: GatewayVariables & RequestIdVariables; Bindings: HttpBindings }> {
  // Each key's tenants as a Set built once: the request path does one lookup and allocates nothing.
  const keys = config.api_keys.map((key) => ({ id: key.id, hash: Buffer.from(key.sha256, 'hex'), tenants: key.tenants && new Set(key.tenants) }));
  const certificateTenants = new Map(config.client_certificates.map((entry) => [entry.identity, new Set(entry.tenants)]));
  const unlistedCertificates = config.unlisted_certificates ?? (config.client_certificates.length > 0 ? 'refuse' : 'any_tenant');
  /** A 401, counted and logged: without these, key guessing would leave no trace. Never the presented key or its hash. */
  const refuse = (c: GatewayContext, reason: GatewayAuthFailure, detail: string, extra?: Record<string, unknown>): Response => {
    deps.observer?.gatewayAuthFailed(reason);
    deps.warnings.warn(
      reason,
      { request_id: c.get('requestId'), remote_address: c.env?.incoming?.socket?.remoteAddress, method: c.req.method, path: c.req.path, ...extra },
      'gateway authentication failed',
    );
    return unauthenticated(c, detail);
  };
  return async (c, next) => {
    if (config.authentication === 'none') {
      c.set('caller', null);
      return next();
    }
    if (config.authentication === 'mtls') {
      const socket = c.env?.incoming?.socket as TLSSocket | undefined;
      const detail = 'a client certificate signed by the configured CA is required';
      if (!socket?.authorized) {
        // Presented but not verified against server.tls.ca_file (requestCert without rejectUnauthorized).
        const presented = socket?.getPeerCertificate?.()?.subject !== undefined;
        return presented
          ? refuse(c, 'client_certificate_untrusted', detail, { authorization_error: String(socket?.authorizationError) })
          : refuse(c, 'client_certificate_required', detail);
      }
      const certificate = socket.getPeerCertificate();
      if (!certificate?.subject) return refuse(c, 'client_certificate_required', detail);
      const identity = certificateIdentity(certificate.subject, certificate.subjectaltname);
      const tenants = certificateTenants.get(identity);
      if (tenants === undefined && unlistedCertificates === 'refuse') {
        // The identity goes to the log (it names a certificate the CA signed, not a secret) so an
        // operator can see which entry is missing; it never becomes a metric label.
        return refuse(c, 'client_certificate_unlisted', 'this client certificate is not a gateway listed under gateway.client_certificates', { identity });
      }
      c.set('caller', identity);
      if (tenants !== undefined) c.set('callerTenants', tenants);
      return next();
    }
    const presented = apiKeyOf(c.req.header('authorization'), c.req.header('x-api-key'));
    if (presented === undefined) return refuse(c, 'missing_credentials', 'send the gateway API key as `Authorization: ApiKey <key>` (or `Bearer <key>`) or `X-API-Key`');
    const hash = createHash('sha256').update(presented).digest();
    // Compare against every key so timing does not tell which one nearly matched.
    let caller: (typeof keys)[number] | undefined;
    for (const key of keys) if (timingSafeEqual(hash, key.hash)) caller = key;
    if (caller === undefined) return refuse(c, 'unknown_api_key', 'unknown API key');
    c.set('caller', caller.id);
    if (caller.tenants !== undefined) c.set('callerTenants', caller.tenants);
    return next();
  };
}

function apiKeyOf(authorization: string | undefined, header: string | undefined): string | undefined {
  if (header) return header.trim();
  // `Bearer` as well: OPA clients (OPA's token authentication) and AuthZEN PEPs (the spec's
  // examples) send a static PEP credential so, and could not be pointed at Arbiter otherwise.
  const match = authorization ? /^(?:ApiKey|Bearer)\s+(\S+)\s*$/i.exec(authorization) : null;
  return match?.[1];
}

function certificateIdentity(subject: { CN?: string | string[] }, subjectAltName: string | undefined): string {
  // A URI SAN (e.g. a SPIFFE ID) names a workload better than its common name.
  const uri = subjectAltName?.split(', ').find((name) => name.startsWith('URI:'));
  if (uri) return altNameValue(uri.slice('URI:'.length));
  const cn = Array.isArray(subject.CN) ? subject.CN[0] : subject.CN;
  return cn ? `cn:${cn}` : 'mtls:unnamed';
}

/**
 * A SAN value as the certificate holds it. Node writes one holding a comma, a quote, an apostrophe,
 * a backslash or a control character as a JSON string (its commas escaped, so the list still
 * splits on ", "): taken as written, the identity would be that quoted text, which no
 * client_certificates entry names, and a bound gateway would go unbound.
 */
function altNameValue(value: string): string {
  if (!value.startsWith('"')) return value;
  try {
    const parsed: unknown = JSON.parse(value);
    return typeof parsed === 'string' ? parsed : value;
  } catch {
    return value;
  }
}

function unauthenticated(c: Parameters<MiddlewareHandler>[0], detail: string): Response {
  return problem(c, 401, { code: 'gateway_unauthenticated', title: 'Gateway authentication required', detail }, { 'WWW-Authenticate': 'ApiKey realm="arbiter"' });
}
