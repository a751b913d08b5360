import type { JWTPayload } from 'jose';
import type { RevokedTokenClaims } from '../data/revocation-schema.ts';
import type { RevocationMatch } from '../data/revocation-index.ts';
import { isObject } from '../is-object.ts';
import type { VerifiedToken } from './verify.ts';

/** What the policy sees of the caller: `input.subject` (documented in rego/README.md). */
export interface PolicySubject {
  authenticated: boolean;
  iss?: string;
  sub?: string;
  aud: string[];
  scopes: string[];
  client_id?: string;
  act: Record<string, unknown>[];
  claims: Record<string, unknown>;
  token?: {
    alg: string;
    kid?: string;
    typ?: string;
    iat: number;
    exp: number;
    jti?: string;
    age_s: number;
    /** The OpenID Connect `auth_time` claim, when the token carries one. */
    auth_time?: number;
    /**
     * Seconds since the user last authenticated: now - auth_time, never less than age_s (an
     * auth_time after iat cannot make a token fresher than its issuance). Set with auth_time.
     */
    auth_age_s?: number;
    ttl_s: number;
    fingerprint: string;
  };
  /** actor_depth: set when the revoked party is an actor of the delegation chain (1 = current actor). */
  revoked: { revoked: boolean; reason?: string; revocation_id?: string; actor_depth?: number };
}

/**
 * Longest RFC 8693 delegation chain a token may carry: a deeper one is token_malformed
 * (verify.ts), never cut short, since an actor left out could not be revoked or seen by policy.
 */
export const MAX_ACTOR_CHAIN = 32;

export function unauthenticatedSubject(): PolicySubject {
  return { authenticated: false, aud: [], scopes: [], act: [], claims: {}, revoked: { revoked: false } };
}

/**
 * Maps verified claims onto the policy's subject. Claim objects are copied with
 * define semantics only (never Object.assign), so a `__proto__` claim stays plain data.
 */
export function subjectFromToken(verified: VerifiedToken, now: number): PolicySubject {
  const { payload, header } = verified;
  const iat = payload.iat!;
  const exp = payload.exp!;
  const subject: PolicySubject = {
    authenticated: true,
    iss: payload.iss!,
    sub: payload.sub!,
    aud: acceptedAudiences(payload.aud, verified.issuer.config.audiences),
    scopes: scopesOf(payload),
    act: actorChain(payload.act),
    claims: payload as Record<string, unknown>,
    token: {
      alg: header.alg!,
      iat,
      exp,
      age_s: now - iat,
      ttl_s: exp - now,
      fingerprint: verified.fingerprint,
      ...(header.kid !== undefined && { kid: header.kid }),
      ...(header.typ !== undefined && { typ: header.typ }),
      ...(typeof payload.jti === 'string' && { jti: payload.jti }),
      ...(typeof payload.auth_time === 'number' && { auth_time: payload.auth_time, auth_age_s: now - Math.min(payload.auth_time, iat) }),
    },
    revoked: { revoked: false },
  };
  const clientId = stringClaim(payload, 'client_id') ?? stringClaim(payload, 'azp');
  if (clientId !== undefined) subject.client_id = clientId;
  return subject;
}

/** The claims a revocation can name, as the revocation index looks them up. */
function revocationClaims(subject: PolicySubject): RevokedTokenClaims {
  const sid = subject.claims.sid;
  return {
    iss: subject.iss!,
    sub: subject.sub,
    jti: subject.token?.jti,
    sid: typeof sid === 'string' ? sid : undefined,
    client_id: subject.client_id,
    iat: subject.token?.iat,
  };
}

/** The revocation lookups a subject is checked against (src/data/revocations.ts). */
export interface RevocationLookup {
  check(token: RevokedTokenClaims, nowS: number): RevocationMatch;
  checkParty(party: { iss: string; sub?: string | undefined; client_id?: string | undefined }, nowS: number): RevocationMatch;
  checkPartyAnyIssuer(party: { sub?: string | undefined; client_id?: string | undefined }, nowS: number): RevocationMatch;
}

/**
 * The token's own revocation, else that of the first revoked actor of its delegation chain
 * (its depth, 1 = current actor). Decisions and admin requests are checked alike.
 */
export function subjectRevocation(revocations: RevocationLookup, subject: PolicySubject, nowS: number): PolicySubject['revoked'] {
  const match = revocations.check(revocationClaims(subject), nowS);
  if (match.revoked) return { revoked: true, reason: match.reason, revocation_id: match.revocation_id };
  // The OAuth client of someone else's token (an agent given a user's token) acts through it, as
  // an actor of act does: a party revoked by its sub is stopped there too.
  if (subject.client_id !== undefined && subject.client_id !== subject.sub) {
    const client = revocations.checkParty({ iss: subject.iss!, sub: subject.client_id }, nowS);
    if (client.revoked) return { revoked: true, reason: client.reason, revocation_id: client.revocation_id };
  }
  // subject.client_id is client_id, else azp. A token carrying both names two clients, and azp is
  // the one it was issued to (OIDC): a revocation of that client, by client_id or by sub, must
  // reach it too. One more lookup, only for tokens whose azp differs from their client_id.
  const azp = subject.claims.azp;
  if (typeof azp === 'string' && azp !== subject.client_id) {
    const client = revocations.checkParty({ iss: subject.iss!, client_id: azp, ...(azp !== subject.sub && { sub: azp }) }, nowS);
    if (client.revoked) return { revoked: true, reason: client.reason, revocation_id: client.revocation_id };
  }
  for (const [index, actor] of subject.act.entries()) {
    const claims = actorClaims(actor, subject.iss!);
    let hit = revocations.checkParty(claims, nowS);
    // An actor's client_id names it as the token's client_id names the token's client (a policy
    // identifies an actor by its sub, else its client_id): a party revoked by its sub is stopped
    // there too. One more lookup, only for an actor whose client_id is not its sub.
    if (!hit.revoked && claims.client_id !== undefined && claims.client_id !== claims.sub) {
      hit = revocations.checkParty({ iss: claims.iss, sub: claims.client_id }, nowS);
    }
    if (hit.revoked) return { revoked: true, reason: hit.reason, revocation_id: hit.revocation_id, actor_depth: index + 1 };
  }
  return { revoked: false };
}

/**
 * What a revocation can name of an actor: its sub and client_id, under its own iss when the
 * act claim gives one (RFC 8693 allows it), else under the token's issuer. An empty iss names
 * no issuer (no revocation can be scoped to ""), so the token's issuer vouches for that actor.
 */
function actorClaims(actor: Record<string, unknown>, tokenIss: string): { iss: string; sub?: string; client_id?: string } {
  return {
    iss: typeof actor.iss === 'string' && actor.iss !== '' ? actor.iss : tokenIss,
    ...(typeof actor.sub === 'string' && { sub: actor.sub }),
    ...(typeof actor.client_id === 'string' && { client_id: actor.client_id }),
  };
}

/**
 * The token's audiences that its issuer is configured to be accepted for. jose needs only one
 * member to match; another member was vouched for by no configuration, and a policy reading
 * `aud` as evidence (the default one maps it to an environment) must not see it: `claims.aud`
 * keeps the token's own list.
 */
function acceptedAudiences(aud: JWTPayload['aud'], accepted: readonly string[]): string[] {
  const audiences = typeof aud === 'string' ? [aud] : (aud ?? []);
  return audiences.filter((audience) => accepted.includes(audience));
}

function scopesOf(payload: JWTPayload): string[] {
  if (typeof payload.scope === 'string') return payload.scope.split(' ').filter(Boolean);
  if (Array.isArray(payload.scp)) return payload.scp.filter((s): s is string => typeof s === 'string');
  if (typeof payload.scp === 'string') return payload.scp.split(' ').filter(Boolean);
  return [];
}

/** Flattens nested `act` claims into an array, outermost (current) actor first. */
function actorChain(act: unknown): Record<string, unknown>[] {
  const chain: Record<string, unknown>[] = [];
  let current = act;
  while (isObject(current) && chain.length < MAX_ACTOR_CHAIN) {
    chain.push(Object.fromEntries(Object.entries(current).filter(([key]) => key !== 'act')));
    current = current.act;
  }
  return chain;
}

function stringClaim(payload: JWTPayload, name: string): string | undefined {
  const value = payload[name];
  return typeof value === 'string' ? value : undefined;
}
