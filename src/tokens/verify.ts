import { createHash } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, errors, jwtVerify, type JWTPayload, type JWTVerifyOptions, type ProtectedHeaderParameters } from 'jose';
import { inexactNumber, jsonDefect } from '../data/json-value.ts';
import { errorMessage } from '../errors.ts';
import { MAX_ACTOR_CHAIN } from './subject.ts';
import { KeysUnavailableError, type IssuerRegistry, type TrustedIssuer } from './trusted-issuers.ts';
import type { VerificationCache } from './verification-cache.ts';

/** Reason codes of a token that was sent but cannot be trusted; each becomes a deny reason. */
export const TOKEN_FAILURE_CODES = [
  'token_too_large',
  'token_malformed',
  'token_untrusted_issuer',
  'token_algorithm_not_allowed',
  'token_type_invalid',
  'token_unknown_key',
  'token_keys_unavailable',
  'token_bad_signature',
  'token_expired',
  'token_not_yet_valid',
  'token_too_old',
  'token_lifetime_too_long',
  'token_audience_mismatch',
  'token_claim_missing',
  'token_invalid',
] as const;
export type TokenFailureCode = (typeof TOKEN_FAILURE_CODES)[number];

export interface VerifiedToken {
  readonly ok: true;
  readonly payload: JWTPayload;
  readonly header: ProtectedHeaderParameters;
  readonly issuer: TrustedIssuer;
  /**
   * base64url SHA-256 of the compact token: identifies it in logs without revealing it. An ECDSA
   * token is hashed as spelt with the lower of the two values of s its signature verifies with.
   */
  readonly fingerprint: string;
  /** The issuer's keyGeneration when the verification began: the cache reuses it only while that holds. */
  readonly keyGeneration: number;
}

export interface TokenFailure {
  readonly ok: false;
  readonly code: TokenFailureCode;
  readonly message: string;
  readonly fingerprint: string;
  /** The unverified `iss`, when it could be read: useful to auditors, never trusted. */
  readonly claimedIssuer?: string;
}

export type TokenVerification = VerifiedToken | TokenFailure;

export interface VerifyOptions {
  maxTokenBytes: number;
  /** Successful verifications are reused from here until the token would expire. */
  cache?: VerificationCache | undefined;
  /** Seconds since the epoch; injectable so tests and replays are deterministic. */
  now?: number;
}

const ALWAYS_REQUIRED_CLAIMS = ['exp', 'iat', 'sub'];

/**
 * Claims that are strings by their specifications (RFC 7519, RFC 9068, OpenID Connect)
 * and that revocations and policies compare as strings: a token carrying one of another
 * type is refused, or `"jti": {"id": ...}` would never match a jti revocation. `azp` is
 * the client_id of a token without one.
 */
const STRING_CLAIMS = ['sub', 'jti', 'sid', 'client_id', 'azp'] as const;

/**
 * Header parameters that are strings by RFC 7515 and RFC 7519 and reach the policy as
 * `input.subject.token.kid` and `.typ`. jose checks typ only against an issuer's `typ`
 * setting and compares kid only with a JWKS's keys, so a token carrying another type
 * would verify (typ from any issuer without `typ`, kid from an HMAC issuer) or, from a
 * JWKS issuer, name a key that can never be found and fetch the key set again.
 */
const STRING_HEADERS = ['typ', 'kid'] as const;

export function tokenFingerprint(token: string): string {
  return createHash('sha256').update(token).digest('base64url');
}

/**
 * Verifies a compact JWS access token against the issuer it names, and only that issuer.
 * Never throws: every failure is a TokenFailure with a stable reason code.
 */
export async function verifyAccessToken(
  token: string,
  issuers: IssuerRegistry,
  options: VerifyOptions,
): Promise<TokenVerification> {
  if (Buffer.byteLength(token) > options.maxTokenBytes) {
    return { ok: false, code: 'token_too_large', message: `token is larger than ${options.maxTokenBytes} bytes`, fingerprint: tokenFingerprint(token) };
  }
  const fingerprint = tokenFingerprint(token);
  const now = options.now ?? Math.floor(Date.now() / 1000);
  const cached = options.cache?.get(fingerprint, now);
  if (cached) return cached;
  const verification = await verifyUncached(token, fingerprint, issuers, now);
  // Remembered under the token as sent: only that exact token is the one verified.
  if (verification.ok) options.cache?.set(fingerprint, verification, now);
  return verification;
}

async function verifyUncached(token: string, sentFingerprint: string, issuers: IssuerRegistry, now: number): Promise<TokenVerification> {
  let fingerprint = sentFingerprint;
  const fail = (code: TokenFailureCode, message: string, claimedIssuer?: string): TokenFailure =>
    claimedIssuer === undefined
      ? { ok: false, code, message, fingerprint }
      : { ok: false, code, message, fingerprint, claimedIssuer };

  if (!canonicalParts(token)) {
    return fail('token_malformed', 'token is not a compact JWS: each part must be unpadded base64url, in its one canonical spelling');
  }
  let header: ProtectedHeaderParameters;
  let unverified: JWTPayload;
  try {
    header = decodeProtectedHeader(token);
    unverified = decodeJwt(token);
  } catch {
    return fail('token_malformed', 'token is not a compact JWS with a JSON payload');
  }
  if (unverified.iss === undefined) return fail('token_untrusted_issuer', 'token has no iss claim');
  // An array or a number names no issuer: malformed, as a sub that is not a string, not a missing iss.
  if (typeof unverified.iss !== 'string') return fail('token_malformed', 'iss must be a string');
  const iss = unverified.iss;
  const issuer = issuers.get(iss);
  if (!issuer) return fail('token_untrusted_issuer', untrustedIssuerMessage(iss, issuers), iss);

  const { config } = issuer;
  // Malformed, as a typ or kid that is not a string: spelt by String(), ["ES256"] read as an allowed algorithm refused.
  if (typeof header.alg !== 'string') return fail('token_malformed', 'header alg must be a string', iss);
  if (!(config.algorithms as readonly string[]).includes(header.alg)) {
    return fail('token_algorithm_not_allowed', `algorithm ${JSON.stringify(header.alg)} is not allowed for this issuer`, iss);
  }
  fingerprint = ecdsaFingerprint(token, header.alg, fingerprint);
  const headerNotAString = STRING_HEADERS.find((name) => header[name] !== undefined && typeof header[name] !== 'string');
  if (headerNotAString !== undefined) {
    return fail('token_malformed', `header ${headerNotAString} must be a string`, iss);
  }

  // Read before the key is taken from the key set: see TrustedIssuer.keyGeneration.
  const keyGeneration = issuer.keyGeneration;
  let payload: JWTPayload;
  try {
    const verifyOptions = {
      issuer: config.issuer,
      audience: config.audiences,
      algorithms: config.algorithms as string[],
      clockTolerance: config.clock_tolerance_s,
      maxTokenAge: config.max_token_age_s,
      requiredClaims: [...ALWAYS_REQUIRED_CLAIMS, ...config.required_claims],
      ...(config.typ !== undefined && { typ: config.typ }),
      currentDate: new Date(now * 1000),
    };
    payload = await verifyWithIssuerKeys(token, issuer, verifyOptions);
  } catch (error) {
    // jose compares times as numbers: JSON's 1e400 is Infinity to it, a token not valid yet (or
    // expired) by its account, which no clock will ever make valid. Malformed, as when it passes.
    const timeClaim = error instanceof errors.JWTClaimValidationFailed || error instanceof errors.JWTExpired ? unverified[error.claim] : undefined;
    if (typeof timeClaim === 'number' && !Number.isFinite(timeClaim)) {
      return fail('token_malformed', `${(error as errors.JWTClaimValidationFailed).claim} must be a finite number`, iss);
    }
    const { code, message } = classifyJoseError(error);
    return fail(code, explainMismatch(code, error, unverified, config, now) ?? message, iss);
  }

  // JSON allows 1e400, which parses to Infinity and would never expire.
  if (!Number.isFinite(payload.exp) || !Number.isFinite(payload.iat)) {
    return fail('token_malformed', 'exp and iat must be finite numbers', iss);
  }
  // OpenID Connect's time of the authentication: freshness checks (step-up) read it when present.
  if (payload.auth_time !== undefined && !Number.isFinite(payload.auth_time)) {
    return fail('token_malformed', 'auth_time must be a finite number (seconds since the epoch)', iss);
  }
  const notAString = STRING_CLAIMS.find((name) => payload[name] !== undefined && (typeof payload[name] !== 'string' || payload[name] === ''));
  if (notAString !== undefined) {
    return fail('token_malformed', `${notAString} must be a non-empty string`, iss);
  }
  if (!audienceWellFormed(payload.aud)) {
    // jose only needs one member to match; the policy sees the accepted members as input.subject.aud, every member as claims.aud.
    return fail('token_malformed', 'aud must be a non-empty string or an array of non-empty strings', iss);
  }
  const defect = jsonDefectOf(header, 'header') ?? jsonDefectOf(payload, 'claims');
  if (defect !== undefined) {
    // JSON escapes can spell a lone surrogate ("\ud800"), which no UTF-8 text can hold: the
    // policy's JSON parser would refuse the input and the deny would blame the policy. And a
    // token within max_token_bytes can nest thousands deep, deeper than what serializes the
    // policy input and the decision record can recurse: the decision would go unrecorded.
    return fail('token_malformed', `token ${defect}`, iss);
  }
  const inexact = inexactNumber(claimsText(token));
  if (inexact !== undefined) {
    // JSON.parse reads numbers as doubles: another value than the issuer signed would reach the
    // policy and the record, the same for every value that rounds to it (a tenant or account id).
    return fail('token_malformed', `token claims hold the number ${inexact.written}, which a double cannot hold: the policy would see ${inexact.read}`, iss);
  }
  if (!delegationWellFormed(payload.act)) {
    // An act the subject could not read would drop the delegation, and the agent with it.
    return fail('token_malformed', `act must be a JSON object, and so must every act nested in it (RFC 8693), at most ${MAX_ACTOR_CHAIN} deep`, iss);
  }
  const actorDefect = actorMemberDefect(payload.act);
  if (actorDefect !== undefined) return fail('token_malformed', actorDefect, iss);
  if (payload.exp! - payload.iat! > config.max_lifetime_s) {
    return fail('token_lifetime_too_long', `token lifetime exceeds ${config.max_lifetime_s}s`, iss);
  }
  return { ok: true, payload, header, issuer, fingerprint, keyGeneration };
}

/**
 * A token without `kid` matches every key of its algorithm in the issuer's key set. jose
 * then throws JWKSMultipleMatchingKeys, which iterates over those candidates: each is tried
 * in key-set order, up to this many, so a key set with many keys cannot make one forged
 * token cost unbounded signature checks. A token signed by a later key is refused as
 * token_bad_signature; an issuer with more keys per algorithm must put `kid` in its tokens.
 */
const MAX_CANDIDATE_KEYS = 10;

async function verifyWithIssuerKeys(token: string, issuer: TrustedIssuer, options: JWTVerifyOptions): Promise<JWTPayload> {
  // jose's overloads differ for a key and a key resolver; both are valid here.
  if (issuer.key instanceof Uint8Array) return (await jwtVerify(token, issuer.key, options)).payload;
  try {
    return (await jwtVerify(token, issuer.key, options)).payload;
  } catch (error) {
    if (!(error instanceof errors.JWKSMultipleMatchingKeys)) throw error;
    return verifyWithCandidates(token, error as errors.JWKSMultipleMatchingKeys & AsyncIterable<CryptoKey>, options);
  }
}

async function verifyWithCandidates(token: string, candidates: AsyncIterable<CryptoKey>, options: JWTVerifyOptions): Promise<JWTPayload> {
  let tried = 0;
  for await (const key of candidates) {
    try {
      return (await jwtVerify(token, key, options)).payload;
    } catch (error) {
      // Another key's signature, or a key unfit to verify with (an RSA key under 2048 bits):
      // try the next. Any other failure (claims, a malformed token) holds whichever key signed.
      if (!(error instanceof errors.JWSSignatureVerificationFailed || error instanceof TypeError)) throw error;
    }
    tried += 1;
    // Counted before asking for the next candidate: jose imports each key as it is asked for.
    if (tried === MAX_CANDIDATE_KEYS) break;
  }
  throw new errors.JWSSignatureVerificationFailed(
    tried === MAX_CANDIDATE_KEYS
      ? `signature verification failed with the first ${MAX_CANDIDATE_KEYS} keys that match a token without kid`
      : 'signature verification failed with every key that matches a token without kid',
  );
}

/**
 * The order n of the curve of each ECDSA algorithm, and the bytes of r and of s in its JWS
 * signature (RFC 7518 §3.4).
 */
const ECDSA_CURVES: Readonly<Record<string, { n: bigint; size: number }>> = {
  ES256: { n: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n, size: 32 },
  ES384: { n: 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n, size: 48 },
  ES512: { n: 0x01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409n, size: 66 },
};

/**
 * The fingerprint of an ECDSA token as spelt with the lower s. ECDSA verifies (r, s) and
 * (r, n - s) alike, so whoever holds a token can spell its signature the other way without the
 * key: hashed as sent, one token would have two fingerprints in the decision log and the policy
 * input. Both spellings verify or neither does, so they are the same token. `fingerprint` (that
 * of the token as sent) for another algorithm, a low s, or a signature that cannot verify.
 */
function ecdsaFingerprint(token: string, alg: string, fingerprint: string): string {
  const curve = ECDSA_CURVES[alg];
  if (curve === undefined) return fingerprint;
  const dot = token.lastIndexOf('.');
  const signature = Buffer.from(token.slice(dot + 1), 'base64url');
  if (signature.length !== 2 * curve.size) return fingerprint;
  const s = BigInt(`0x${signature.toString('hex', curve.size)}`);
  if (s <= curve.n >> 1n || s >= curve.n) return fingerprint;
  signature.write((curve.n - s).toString(16).padStart(2 * curve.size, '0'), curve.size, 'hex');
  return tokenFingerprint(`${token.slice(0, dot + 1)}${signature.toString('base64url')}`);
}

/** The claims part of a compact JWS as text, decoded as jose decodes it (UTF-8, a leading BOM dropped). */
function claimsText(token: string): string {
  return new TextDecoder().decode(Buffer.from(token.slice(token.indexOf('.') + 1, token.lastIndexOf('.')), 'base64url'));
}

const BASE64URL = /^[A-Za-z0-9_-]*$/;

/**
 * Whether every part is base64url as RFC 7515 writes it: no padding, no whitespace, unused
 * trailing bits zero. jose decodes leniently (atob), so `sig==`, a line break in the signature
 * or any of 16 last characters of an ES256 signature decode to the same bytes: one signed
 * token would have any number of spellings, each with its own fingerprint (which identifies
 * the token in the decision log) and its own entry in the verification cache.
 */
function canonicalParts(token: string): boolean {
  return token.split('.').every((part) => BASE64URL.test(part) && Buffer.from(part, 'base64url').toString('base64url') === part);
}

/** A non-empty string, or an array of them (RFC 7519 §4.1.3); jose has checked it is present. */
function audienceWellFormed(aud: unknown): boolean {
  const nonEmptyString = (value: unknown) => typeof value === 'string' && value !== '';
  return nonEmptyString(aud) || (Array.isArray(aud) && aud.every(nonEmptyString));
}

/**
 * Deepest nesting of objects and arrays in a token's header or claims (the header or claims
 * object itself is level 1), as for request bodies: the claims reach the policy and the
 * decision record as `input.subject.claims`, the header as `input.subject.token`.
 */
const MAX_TOKEN_JSON_DEPTH = 64;

/**
 * What makes a token's header or claims unfit for the policy input, described, or undefined:
 * a string, names included, that is not well-formed Unicode, a number beyond a double's range
 * (1e400, which the policy would see as null), or nesting deeper than MAX_TOKEN_JSON_DEPTH
 * (checked once per verification: verified tokens are cached).
 */
function jsonDefectOf(value: unknown, part: 'header' | 'claims'): string | undefined {
  const defect = jsonDefect(value, { maxDepth: MAX_TOKEN_JSON_DEPTH, checkText: true });
  return defect && `${part} at ${JSON.stringify(defect.pointer)}: ${defect.detail}`;
}

/** An absent act, or an object whose nested acts are objects down the chain. */
function delegationWellFormed(act: unknown): boolean {
  let depth = 0;
  for (let current = act; current !== undefined; current = (current as { act?: unknown }).act) {
    if (typeof current !== 'object' || current === null || Array.isArray(current)) return false;
    if (++depth > MAX_ACTOR_CHAIN) return false;
  }
  return true;
}

/**
 * Members of an actor (RFC 8693 §4.1) that revocations and policies compare as strings, as the
 * token's own: `sub` and `client_id` name the actor (a policy reads its sub, else its
 * client_id), `iss` the issuer a revocation of it is scoped to. One of another type would be
 * skipped by both: `{"sub": ["agent:x"], "client_id": "helper"}` would pass a revocation of
 * agent:x and act as helper. An empty `iss` stays allowed: it names no issuer (actorClaims).
 */
const ACTOR_STRING_MEMBERS = [
  ['sub', true],
  ['client_id', true],
  ['iss', false],
] as const;

/** What is wrong with a member of an actor of a well-formed act chain, described, or undefined. */
function actorMemberDefect(act: unknown): string | undefined {
  let depth = 1;
  for (let actor = act as Record<string, unknown> | undefined; actor !== undefined; actor = actor.act as Record<string, unknown> | undefined, depth++) {
    for (const [name, nonEmpty] of ACTOR_STRING_MEMBERS) {
      const value = actor[name];
      if (value !== undefined && (typeof value !== 'string' || (nonEmpty && value === ''))) {
        return `${name} of the actor at depth ${depth} of act must be a ${nonEmpty ? 'non-empty ' : ''}string`;
      }
    }
  }
  return undefined;
}

/**
 * jose's message, where it leaves out what the operator must compare: a configured issuer
 * spelt otherwise (`https://idp.example/` against `https://idp.example`: iss is compared exactly).
 */
function untrustedIssuerMessage(iss: string, issuers: IssuerRegistry): string {
  const loose = (name: string) => name.replace(/\/+$/, '').toLowerCase();
  const near = issuers.all().find(({ config }) => loose(config.issuer) === loose(iss));
  const hint = near === undefined ? '' : `: the trusted issuer ${JSON.stringify(near.config.issuer)} differs only by a trailing slash or letter case: iss must match it exactly`;
  return `issuer ${JSON.stringify(iss)} is not trusted${hint}`;
}

/**
 * For an audience or a time in the future refused by jose (whose messages name only the claim):
 * what the token says against what the configuration accepts, so whoever reads the deny knows
 * which side to fix. The signature has been verified when jose checks claims.
 */
function explainMismatch(code: TokenFailureCode, error: unknown, claims: JWTPayload, config: TrustedIssuer['config'], now: number): string | undefined {
  if (code === 'token_audience_mismatch') {
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    return `aud ${JSON.stringify(aud)} is none of the audiences accepted from ${config.issuer}: ${JSON.stringify(config.audiences)}`;
  }
  if (code === 'token_not_yet_valid' && error instanceof errors.JWTClaimValidationFailed && (error.claim === 'iat' || error.claim === 'nbf')) {
    const at = claims[error.claim];
    if (typeof at !== 'number') return undefined;
    return `${error.claim} is ${Math.round(at - now)} s ahead of this server's clock, past clock_tolerance_s (${config.clock_tolerance_s} s): check the clocks of the issuer and this server${error.claim === 'nbf' ? ', or wait until the token is valid' : ''}`;
  }
  return undefined;
}

function classifyJoseError(error: unknown): { code: TokenFailureCode; message: string } {
  const message = errorMessage(error);
  if (error instanceof errors.JWTExpired) {
    // jose reports maxTokenAge as an expired `iat`.
    return { code: error.claim === 'iat' ? 'token_too_old' : 'token_expired', message };
  }
  if (error instanceof errors.JWTClaimValidationFailed) {
    // jose's "invalid" is a claim of the wrong type (exp, iat or nbf that is not a number).
    if (error.reason === 'invalid') return { code: 'token_malformed', message };
    switch (error.claim) {
      case 'nbf':
      case 'iat':
        return { code: error.reason === 'missing' ? 'token_claim_missing' : 'token_not_yet_valid', message };
      case 'aud':
        return { code: error.reason === 'missing' ? 'token_claim_missing' : 'token_audience_mismatch', message };
      case 'iss':
        return { code: 'token_untrusted_issuer', message };
      case 'typ':
        return { code: 'token_type_invalid', message };
      default:
        return { code: error.reason === 'missing' ? 'token_claim_missing' : 'token_invalid', message };
    }
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) return { code: 'token_bad_signature', message };
  if (error instanceof errors.JOSEAlgNotAllowed) return { code: 'token_algorithm_not_allowed', message };
  if (error instanceof errors.JWKSNoMatchingKey) return { code: 'token_unknown_key', message };
  if (error instanceof KeysUnavailableError || error instanceof errors.JWKSTimeout || error instanceof errors.JWKSInvalid) {
    return { code: 'token_keys_unavailable', message };
  }
  if (error instanceof errors.JWSInvalid || error instanceof errors.JWTInvalid) return { code: 'token_malformed', message };
  if (error instanceof errors.JOSENotSupported) {
    // jose refuses a critical header extension it does not know (RFC 7515 §4.1.11) with the
    // error of an algorithm it does not support; the algorithm was checked allowed above.
    return { code: /^Extension Header Parameter/.test(message) ? 'token_invalid' : 'token_algorithm_not_allowed', message };
  }
  if (error instanceof TypeError) {
    // jose's refusal of the key the token chose (an RSA key under 2048 bits): a key that cannot
    // verify, as one WebCrypto cannot import. A failed fetch arrives as KeysUnavailableError.
    return { code: 'token_invalid', message };
  }
  if (error instanceof Error && /fetch|ECONNREFUSED|network/i.test(message)) {
    return { code: 'token_keys_unavailable', message };
  }
  // A failure none of the above describes (a check a later jose adds): denied all the same,
  // under a code of its own rather than one that would misdescribe it.
  return { code: 'token_invalid', message };
}
