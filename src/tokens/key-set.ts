import { importJWK, type FetchImplementation, type JWK } from 'jose';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.ts';
import { isObject } from '../is-object.ts';
import { readLimited } from '../read-limited.ts';
import { withoutCredentials } from '../shown-url.ts';

/**
 * Members that hold private or secret key material (RFC 7518 §6.2.2, §6.3.2, §6.4; ML-DSA's
 * `priv`). A JWKS an issuer publishes must carry none: one that does is a broken identity
 * provider, and a symmetric key in it would be a secret anyone can read.
 */
const PRIVATE_KEY_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k', 'priv'] as const;

/** The key type (and curve) each JWKS algorithm selects, as jose's key set selection does. */
const KEY_TYPE_OF: Readonly<Record<string, { kty: string; crv?: string }>> = {
  RS256: { kty: 'RSA' }, RS384: { kty: 'RSA' }, RS512: { kty: 'RSA' },
  PS256: { kty: 'RSA' }, PS384: { kty: 'RSA' }, PS512: { kty: 'RSA' },
  ES256: { kty: 'EC', crv: 'P-256' }, ES384: { kty: 'EC', crv: 'P-384' }, ES512: { kty: 'EC', crv: 'P-521' },
  EdDSA: { kty: 'OKP', crv: 'Ed25519' }, Ed25519: { kty: 'OKP', crv: 'Ed25519' },
};

/** jose refuses to verify with a shorter RSA key. */
const MIN_RSA_BITS = 2048;

/** Why a key set must not be used (it holds private key material), or undefined. */
function privateKeyProblem(jwks: { keys: readonly unknown[] }): string | undefined {
  for (const [index, key] of jwks.keys.entries()) {
    if (typeof key !== 'object' || key === null) continue;
    const member = PRIVATE_KEY_MEMBERS.find((name) => Object.hasOwn(key, name));
    if (member !== undefined) {
      return `key ${describeKey(key as JWK, index)} is private key material (it has "${member}"): a key set must hold public keys only`;
    }
  }
  return undefined;
}

/**
 * Why a key set read from a file cannot verify tokens of `algorithms`, or undefined. Each key
 * jose could pick for one of the algorithms is imported once, as jose will import it, so a
 * key that cannot be (a point off its curve, an RSA key without its modulus) stops start-up
 * instead of denying every token it signed; keys for other algorithms or uses are left alone.
 */
export async function keySetFileProblem(jwks: { keys: readonly unknown[] }, algorithms: readonly string[]): Promise<string | undefined> {
  const privateKey = privateKeyProblem(jwks);
  if (privateKey !== undefined) return privateKey;
  let usable = 0;
  for (const [index, key] of jwks.keys.entries()) {
    if (typeof key !== 'object' || key === null || Array.isArray(key)) return `key ${index} is not a JSON object`;
    const algorithm = algorithms.find((alg) => selectableFor(key as JWK, alg));
    if (algorithm === undefined) continue;
    const problem = await importProblem(key as JWK, algorithm);
    if (problem !== undefined) return `key ${describeKey(key as JWK, index)} cannot be used for ${algorithm}: ${problem}`;
    usable += 1;
  }
  return usable === 0 ? `no key usable with ${algorithms.join(' or ')} (by its kty, crv, alg, use and key_ops)` : undefined;
}

/** Whether jose's key set selection would consider `jwk` for a token signed with `alg`. */
function selectableFor(jwk: JWK, alg: string): boolean {
  const wanted = KEY_TYPE_OF[alg];
  return (
    wanted !== undefined &&
    jwk.kty === wanted.kty &&
    (wanted.crv === undefined || jwk.crv === wanted.crv) &&
    (jwk.alg === undefined || jwk.alg === alg) &&
    (jwk.use === undefined || jwk.use === 'sig') &&
    (jwk.key_ops === undefined || (Array.isArray(jwk.key_ops) && jwk.key_ops.includes('verify')))
  );
}

async function importProblem(jwk: JWK, algorithm: string): Promise<string | undefined> {
  let key: CryptoKey;
  try {
    key = (await importJWK(jwk, algorithm)) as CryptoKey;
  } catch (error) {
    return errorMessage(error);
  }
  const bits = (key.algorithm as Partial<RsaHashedKeyAlgorithm>).modulusLength;
  if (bits !== undefined && bits < MIN_RSA_BITS) return `an RSA key needs at least ${MIN_RSA_BITS} bits, this one has ${bits}`;
  return undefined;
}

function describeKey(jwk: JWK, index: number): string {
  return typeof jwk.kid === 'string' ? `${index} (kid ${JSON.stringify(jwk.kid)})` : String(index);
}

/**
 * Largest remote JWKS body read. A key set of a hundred RSA-4096 keys is under 100 kB; an
 * endpoint answering more is broken or hostile, and its answer would otherwise be buffered
 * whole (for up to jwks_timeout_ms) once per fetch.
 */
export const MAX_JWKS_BYTES = 1024 * 1024;

/**
 * Wraps the fetch a remote JWKS is loaded with so that a key set publishing private key
 * material, or a body larger than MAX_JWKS_BYTES, is refused whole, as a failure to load
 * it: tokens deny with token_keys_unavailable and readiness reports it until the identity
 * provider is fixed. Checked once per fetch, not per token. Anything else is left for jose
 * to judge. `fetched` is told the keys of each key set handed on that jose will install
 * (a JSON object whose `keys` are JSON objects), before jose installs them.
 */
export function refusingPrivateKeys(fetchJwks: FetchImplementation, fetched?: (keys: readonly Record<string, unknown>[]) => void): FetchImplementation {
  return async (url, options) => {
    const response = await fetchJwks(url, options);
    if (response.status !== 200) {
      // jose reads nothing of such an answer but its status (a redirect never gets here: the transport refuses it): left unread,
      // a body still coming would hold the connection until jwks_timeout_ms aborts the fetch.
      await response.body?.cancel();
      return response;
    }
    const text = await readKeySetText(response, url);
    const keys = keysOfText(text);
    const problem = keys && privateKeyProblem({ keys });
    if (problem !== undefined) throw new Error(problem);
    if (keys?.every(isObject)) fetched?.(keys);
    return new Response(text, { status: response.status, statusText: response.statusText, headers: response.headers });
  };
}

/**
 * Wraps the fetch of `issuer`'s key set so each fetch that fails (it throws: a network error, a
 * timeout, a key set refused; or answers another status than 200) is logged at warn, with the
 * URL as logs show it: otherwise an identity provider out of reach shows in no log line, only
 * as token_keys_unavailable reason codes. Once per fetch: after a failure none is sent for a
 * second (JWKS_FAILURE_BACK_OFF_MS), so this is at most a line a second per issuer.
 */
export function loggingFailures(fetchJwks: FetchImplementation, issuer: string, logger: Logger): FetchImplementation {
  return async (url, options) => {
    try {
      const response = await fetchJwks(url, options);
      if (response.status !== 200) logger.warn({ iss: issuer, jwks_uri: withoutCredentials(url), status: response.status }, 'JWKS fetch failed');
      return response;
    } catch (error) {
      logger.warn({ iss: issuer, jwks_uri: withoutCredentials(url), err: error }, 'JWKS fetch failed');
      throw error;
    }
  };
}

/**
 * What identifies a published key: all its members, whatever their order. A key whose
 * members changed (another `use`, `alg` or `key_ops`) is another key.
 */
export function keyIdentity(key: Record<string, unknown>): string {
  return JSON.stringify(key, Object.keys(key).sort());
}

/** The body as text (UTF-8, as Response.text() decodes it), read no further than MAX_JWKS_BYTES. */
async function readKeySetText(response: Response, url: string): Promise<string> {
  // The message reaches gateways (the deny's reason), the decision log and /readyz: no credential of the URL.
  const body = await readLimited(response, MAX_JWKS_BYTES, () => new Error(`${withoutCredentials(url)} answers more than ${MAX_JWKS_BYTES} bytes, the most a key set may take`));
  return new TextDecoder().decode(body);
}

/** The `keys` array of a key set's text, or undefined: jose reports a body that is not a key set. */
function keysOfText(text: string): unknown[] | undefined {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return undefined;
  }
  const keys = isObject(json) ? json.keys : undefined;
  return Array.isArray(keys) ? keys : undefined;
}
