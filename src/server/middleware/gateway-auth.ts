import { createHash, timingSafeEqual } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type { HttpBindings } from '@hono/node-server';
import type { MiddlewareHandler } from 'hono';
import type { GatewayConfig } from '../../config/gateway.ts';
import { problem } from '../problem.ts';

/** The authenticated gateway, recorded with every decision it asks for. */
export type GatewayVariables = { caller: string | null };

/**
 * Authenticates the gateway calling a decision endpoint: nobody (`none`, loopback
 * development), an API key compared by hash in constant time, or a verified client certificate.
 */
export function gatewayAuth(config: GatewayConfig): MiddlewareHandler<{ Variables: GatewayVariables; Bindings: HttpBindings }> {
  const keys = config.api_keys.map((key) => ({ id: key.id, hash: Buffer.from(key.sha256, 'hex') }));
  return async (c, next) => {
    if (config.authentication === 'none') {
      c.set('caller', null);
      return next();
    }
    if (config.authentication === 'mtls') {
      const socket = c.env?.incoming?.socket as TLSSocket | undefined;
      const certificate = socket?.authorized ? socket.getPeerCertificate() : undefined;
      if (!certificate?.subject) return unauthenticated(c, 'a client certificate signed by the configured CA is required');
      c.set('caller', certificateIdentity(certificate.subject, certificate.subjectaltname));
      return next();
    }
    const presented = apiKeyOf(c.req.header('authorization'), c.req.header('x-api-key'));
    if (presented === undefined) return unauthenticated(c, 'send the gateway API key as `Authorization: ApiKey <key>` or `X-API-Key`');
    const hash = createHash('sha256').update(presented).digest();
    // Compare against every key so timing does not tell which one nearly matched.
    let caller: string | undefined;
    for (const key of keys) if (timingSafeEqual(hash, key.hash)) caller = key.id;
    if (caller === undefined) return unauthenticated(c, 'unknown API key');
    c.set('caller', caller);
    return next();
  };
}

function apiKeyOf(authorization: string | undefined, header: string | undefined): string | undefined {
  if (header) return header.trim();
  const match = authorization ? /^ApiKey\s+(\S+)\s*$/i.exec(authorization) : null;
  return match?.[1];
}

function certificateIdentity(subject: { CN?: string | string[] }, subjectAltName: string | undefined): string {
  // A URI SAN (e.g. a SPIFFE ID) names a workload better than its common name.
  const uri = subjectAltName?.split(', ').find((name) => name.startsWith('URI:'));
  if (uri) return uri.slice('URI:'.length);
  const cn = Array.isArray(subject.CN) ? subject.CN[0] : subject.CN;
  return cn ? `cn:${cn}` : 'mtls:unnamed';
}

function unauthenticated(c: Parameters<MiddlewareHandler>[0], detail: string): Response {
  return problem(c, 401, { code: 'gateway_unauthenticated', title: 'Gateway authentication required', detail }, { 'WWW-Authenticate': 'ApiKey realm="arbiter"' });
}
