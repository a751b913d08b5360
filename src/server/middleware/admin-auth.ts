import type { MiddlewareHandler } from 'hono';
import type { Logger } from 'pino';
import { subjectFromToken, subjectRevocation, type RevocationLookup } from '../../tokens/subject.ts';
import { JWKS_FAILURE_BACK_OFF_MS, type IssuerRegistry } from '../../tokens/trusted-issuers.ts';
import type { VerificationCache } from '../../tokens/verification-cache.ts';
import { TOKEN_FAILURE_CODES, verifyAccessToken } from '../../tokens/verify.ts';
import { problem } from '../problem.ts';
import type { ThrottledWarnings } from '../throttled-log.ts';
import type { RequestIdVariables } from './request-id.ts';

/** Scopes of the admin API, one pair per endpoint family. */
export type AdminScope =
  | 'arbiter.bundles.read'
  | 'arbiter.bundles.write'
  | 'arbiter.data.read'
  | 'arbiter.data.write'
  | 'arbiter.revocations.read'
  | 'arbiter.revocations.write'
  | 'arbiter.decisions.read';

/** Who called an admin endpoint: recorded with what they did. */
export interface AdminPrincipal {
  iss: string;
  sub: string;
  client_id?: string;
  /**
   * The token's delegation chain (RFC 8693 `act`), current actor first: an agent acting for
   * `sub` is who did it. Each actor as a revocation names it: sub, client_id, iss.
   */
  act?: { sub?: string; client_id?: string; iss?: string }[];
}

export type AdminVariables = {
  admin: AdminPrincipal;
  /**
   * Looks again whether the admin token let in has been revoked since requireScope checked it:
   * the refusal to answer if so, else undefined. See `stillUnrevoked`.
   */
  adminRevokedSince: () => Response | undefined;
};

/**
 * Why an admin request was refused before it ran, as /metrics counts it: no bearer token, a
 * token that failed verification (its reason code; token_keys_unavailable is the 503), a revoked
 * token, or a verified token without the endpoint's scope (403).
 */
export const ADMIN_AUTH_FAILURES = ['missing_token', ...TOKEN_FAILURE_CODES, 'token_revoked', 'insufficient_scope'] as const;
export type AdminAuthFailure = (typeof ADMIN_AUTH_FAILURES)[number];

export interface AdminAuthDeps {
  issuers: IssuerRegistry;
  maxTokenBytes: number;
  logger: Logger;
  /**
   * Refusals of tokens that prove nobody (bad, expired, unverifiable) cost a request each: they are
   * logged at most once a second per reason. Refusals of a verified admin (revoked, missing scope)
   * name who tried, and are logged each time.
   */
  warnings: ThrottledWarnings;
  /** Admin tools resend the same token for a batch of calls: verify it once until it expires. */
  cache?: VerificationCache;
  /** A stolen admin token is revoked like any other: checked on every call. */
  revocations?: RevocationLookup;
  /** Counts every refusal, logged or not (the log is throttled). */
  observer?: { adminAuthFailed(reason: AdminAuthFailure): void } | undefined;
}

/**
 * Admin endpoints take a bearer token from an `admin.issuers` issuer, verified like any
 * token, that carries the endpoint family's scope: 401 without a valid token, 403 without the scope,
 * 503 while the issuer's keys cannot be fetched (admin_keys_unavailable).
 */
export function requireScope(deps: AdminAuthDeps, scope: AdminScope): MiddlewareHandler<{ Variables: AdminVariables & RequestIdVariables }> {
  return async (c, next) => {
    // On every line about the request: the X-Request-ID its caller was answered finds them.
    const request_id = c.get('requestId');
    const header = c.req.header('authorization') ?? '';
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    const challenge = (error?: string) => ({
      'WWW-Authenticate': `Bearer realm="arbiter-admin", scope="${scope}"${error ? `, error="${error}"` : ''}`,
    });
    if (!match) {
      deps.observer?.adminAuthFailed('missing_token');
      return problem(c, 401, { code: 'unauthorized', title: 'Authentication required', detail: `send an admin bearer token with scope ${scope}` }, challenge());
    }
    const now = Math.floor(Date.now() / 1000);
    const verification = await verifyAccessToken(match[1]!, deps.issuers, { maxTokenBytes: deps.maxTokenBytes, now, cache: deps.cache });
    if (!verification.ok) deps.observer?.adminAuthFailed(verification.code);
    if (!verification.ok && verification.code === 'token_keys_unavailable') {
      // The issuer's keys could not be fetched: the token is not known to be bad, and a new one
      // would fare no better. 503, as an outage, not 401 invalid_token (RFC 6750: get another token).
      deps.warnings.warn('admin_keys_unavailable', { request_id, path: c.req.path, iss: verification.claimedIssuer, detail: verification.message }, 'admin token not verified: issuer keys unavailable');
      const retryAfter = String(Math.ceil(JWKS_FAILURE_BACK_OFF_MS / 1000));
      return problem(c, 503, { code: 'admin_keys_unavailable', title: 'Admin token cannot be verified now', detail: verification.message }, { 'Retry-After': retryAfter });
    }
    if (!verification.ok) {
      deps.warnings.warn(verification.code, { request_id, path: c.req.path, iss: verification.claimedIssuer }, 'admin token rejected');
      return problem(c, 401, { code: 'unauthorized', title: 'Invalid admin token', detail: verification.code }, challenge('invalid_token'));
    }
    const subject = subjectFromToken(verification, now);
    const revokedAt = (nowS: number) => {
      const revoked = deps.revocations && subjectRevocation(deps.revocations, subject, nowS);
      if (!revoked?.revoked) return undefined;
      deps.observer?.adminAuthFailed('token_revoked');
      deps.logger.warn({ request_id, path: c.req.path, iss: subject.iss, sub: subject.sub, revocation_id: revoked.revocation_id, actor_depth: revoked.actor_depth }, 'revoked admin token refused');
      return problem(c, 401, { code: 'unauthorized', title: 'Invalid admin token', detail: 'token_revoked' }, challenge('invalid_token'));
    };
    const refused = revokedAt(now);
    if (refused) return refused;
    const principal: AdminPrincipal = {
      iss: subject.iss!,
      sub: subject.sub!,
      ...(subject.client_id !== undefined && { client_id: subject.client_id }),
      ...(subject.act.length > 0 && { act: subject.act.map(actorOf) }),
    };
    if (!subject.scopes.includes(scope)) {
      deps.observer?.adminAuthFailed('insufficient_scope');
      deps.logger.warn({ request_id, path: c.req.path, method: c.req.method, admin: principal, required_scope: scope }, 'admin request forbidden');
      return problem(c, 403, { code: 'forbidden', title: 'Missing scope', detail: `this endpoint requires the scope ${scope}` }, challenge('insufficient_scope'));
    }
    c.set('admin', principal);
    c.set('adminRevokedSince', () => revokedAt(Math.floor(Date.now() / 1000)));
    await next();
    const logged = { request_id, path: c.req.path, method: c.req.method, status: c.res.status, admin: principal };
    if (c.res.status < 500) {
      deps.logger.info(logged, 'admin request');
      return;
    }
    // A server fault (a store that cannot write, an archive or decision record changed outside
    // Arbiter) is answered as a problem and thrown no further: without this line it would reach
    // the process log only as an info access line, below the alerts and without what failed.
    deps.logger.error({ ...logged, ...(await faultOf(c.res)) }, 'admin request failed');
  };
}

/**
 * Refuses, as requireScope would now, a request whose admin token was revoked while its body was
 * arriving (which may take up to server.request_timeout_s): placed after the body is read, so that
 * what follows acts in the same step, a write a stolen token opened before its revocation cannot
 * land after the revocation's 2xx.
 */
export const stillUnrevoked: MiddlewareHandler<{ Variables: AdminVariables }> = async (c, next) => {
  const refused = c.get('adminRevokedSince')();
  if (refused) return refused;
  await next();
};

/** The code and detail of a problem answer (read from a copy: the answer itself is still to be sent). */
async function faultOf(response: Response): Promise<{ code?: unknown; detail?: unknown }> {
  if (response.headers.get('content-type')?.startsWith('application/problem+json') !== true) return {};
  const body = (await response.clone().json().catch(() => undefined)) as { code?: unknown; detail?: unknown } | undefined;
  return { code: body?.code, detail: body?.detail };
}

/** An actor of a verified chain (verify.ts checked these members are strings), without its other claims. */
function actorOf(actor: Record<string, unknown>): NonNullable<AdminPrincipal['act']>[number] {
  return Object.fromEntries(['sub', 'client_id', 'iss'].filter((name) => typeof actor[name] === 'string').map((name) => [name, actor[name]]));
}
