import { readFileSync } from 'node:fs';
import { createLocalJWKSet, createRemoteJWKSet, customFetch, errors, type FetchImplementation, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import type { IssuerConfig } from '../config/schema.ts';
import { ArbiterError, ConfigError, errorMessage } from '../errors.ts';
import type { HostResolver } from '../net/connection.ts';
import { jwksTransport } from './jwks-transport.ts';
import { keyIdentity, keySetFileProblem, refusingPrivateKeys } from './key-set.ts';

/** Keys of one trusted issuer, imported once and reused for every token it signs. */
export interface TrustedIssuer {
  readonly config: IssuerConfig;
  readonly key: JWTVerifyGetKey | Uint8Array;
  /**
   * Resolves when the issuer's keys can be loaded; readiness probes call it. Rejects with
   * `jwks_unavailable` when no key set was ever loaded, `jwks_stale` when one was but cannot
   * be refreshed now.
   */
  checkKeys(): Promise<void>;
  /**
   * Fetches a remote key set again now, however fresh it is: after a key compromise the key
   * removed at the issuer must stop verifying at once, not once jwks_cache_max_age_s has run
   * out. The key set it installs is always one fetched after the call: a fetch already in flight
   * is waited for, then another is sent, and so is the back-off after a fetch that failed just
   * before (JWKS_FAILURE_BACK_OFF_MS), which would refuse it unsent. Rejects with `jwks_unavailable`
   * when it cannot be fetched (the keys held stay in use).
   * Resolves at once for keys from a file or a secret.
   */
  reloadKeys(): Promise<void>;
  /**
   * Counts the key sets installed without a key the one before held (remote key sets only;
   * always 0 for a file or a secret). A verification begun under an earlier count may have
   * used the removed key: the verification cache does not reuse it, as it would otherwise
   * keep a token the removed key signed allowed until it expired.
   */
  readonly keyGeneration: number;
  /**
   * Whether the key set held is younger than jwks_cache_max_age_s (always true for a file or a
   * secret). A remembered verification is reused only while it holds: a cache hit never asks for
   * the keys, so otherwise a token whose key the issuer removed would stay allowed from the cache
   * until it expired, however stale the key set it was verified with.
   */
  readonly keysFresh: boolean;
}

/**
 * Shortest HMAC secret accepted for `algorithm` (HS256, HS384, HS512), for token issuers and
 * bundle signing keys alike: RFC 7518 §3.2 asks for at least the hash's size.
 */
function minHmacSecretBytes(algorithm: string): number {
  return Number(algorithm.slice(2)) / 8;
}

/** Why `bytes` of secret are too few for HMAC with `algorithm`, or undefined when they are enough. */
export function hmacSecretTooShort(bytes: number, algorithm: string): string | undefined {
  const least = minHmacSecretBytes(algorithm);
  return bytes < least ? `an HMAC secret must be at least ${least} bytes for ${algorithm} (got ${bytes})` : undefined;
}

export interface TrustedIssuerOptions {
  /**
   * Wraps `load`, the fetch a remote JWKS of `issuer` is loaded with (metrics count fetches and
   * failures through it). `load` is the checking fetch, so a key set it refuses counts as failed.
   */
  jwksFetch?: (issuer: string, load: FetchImplementation) => FetchImplementation;
  /** Where these issuers are configured, for errors that name the key: `issuers` (default) or `admin.issuers`. */
  configPath?: string;
  /** How a plain-http jwks_uri's host is resolved (dns.lookup): a test maps its names to addresses of its choosing. */
  resolveHost?: HostResolver;
}

/**
 * Trusted issuers keyed by their exact `iss`. Tokens are routed by their (unverified) `iss`
 * to that issuer's keys only, so one issuer's keys can never vouch for another's tokens.
 */
export class IssuerRegistry {
  readonly #byIss = new Map<string, TrustedIssuer>();

  constructor(issuers: readonly TrustedIssuer[]) {
    for (const issuer of issuers) this.#byIss.set(issuer.config.issuer, issuer);
  }

  /** Reads and checks every issuer's keys: a key file that cannot verify tokens stops start-up. */
  static async fromConfig(configs: readonly IssuerConfig[], inline: readonly TrustedIssuer[] = [], options: TrustedIssuerOptions = {}): Promise<IssuerRegistry> {
    const seen = new Set<string>();
    const configured: TrustedIssuer[] = [];
    // One after another, so the first bad issuer in the file is the one reported.
    for (const [index, config] of configs.entries()) configured.push(await createTrustedIssuer(config, index, options));
    // Inline issuers (the development issuer) first: an entry of the list that takes their iss is
    // the one to change, and is named by its own index rather than one past the end of the list.
    for (const issuer of inline) seen.add(issuer.config.issuer);
    for (const [index, issuer] of configured.entries()) {
      if (seen.has(issuer.config.issuer)) {
        const inlined = inline.some((other) => other.config.issuer === issuer.config.issuer);
        const message = inlined ? `${issuer.config.issuer} is the development issuer's iss (dev_issuer.enabled)` : `duplicate issuer ${issuer.config.issuer}`;
        throw new ConfigError([{ path: `${options.configPath ?? 'issuers'}.${index}.issuer`, message }]);
      }
      seen.add(issuer.config.issuer);
    }
    return new IssuerRegistry([...configured, ...inline]);
  }

  get(iss: string): TrustedIssuer | undefined {
    return this.#byIss.get(iss);
  }

  all(): TrustedIssuer[] {
    return [...this.#byIss.values()];
  }
}

async function createTrustedIssuer(config: IssuerConfig, index: number, options: TrustedIssuerOptions = {}): Promise<TrustedIssuer> {
  const at = (key: string) => `${options.configPath ?? 'issuers'}.${index}.${key}`;
  if (config.jwks_uri !== undefined) {
    const backOff = new FetchBackOff();
    let keyGeneration = 0;
    let held: Set<string> | undefined;
    const load = refusingPrivateKeys(jwksTransport(options.resolveHost), (keys) => {
      const fetched = new Set(keys.map(keyIdentity));
      const removed = held !== undefined && [...held].some((key) => !fetched.has(key));
      held = fetched;
      if (!removed) return;
      // jose installs the key set once this fetch resolves, and reload() joins the fetch in
      // flight: counted after that, so a verification that could still take the removed key
      // from the key set held until then began under the old count.
      void remote
        .reload()
        .catch(() => {}) // the fetch's own failure is reported where it was asked for
        .finally(() => {
          keyGeneration += 1;
        });
    });
    const remote = createRemoteJWKSet(new URL(config.jwks_uri), {
      cacheMaxAge: config.jwks_cache_max_age_s * 1000,
      cooldownDuration: config.jwks_cooldown_s * 1000,
      timeoutDuration: config.jwks_timeout_ms,
      [customFetch]: backOff.gate(options.jwksFetch?.(config.issuer, load) ?? load),
    });
    // Readiness probes are unauthenticated and frequent: a stale key set is reloaded at most
    // once per cooldown on their behalf, and a failed reload is reported until the next try,
    // so probes cannot turn into a stream of requests to the identity provider. They share
    // the back-off after a failure with decisions: neither fetches during it.
    let lastReload: { at: number; failure?: ArbiterError } | undefined;
    return {
      config,
      key: keysUnavailableOnFetchFailure(remote, config.issuer, backOff),
      get keyGeneration() {
        return keyGeneration;
      },
      get keysFresh() {
        return remote.fresh;
      },
      async reloadKeys() {
        try {
          // jose's reload joins a fetch already in flight, which may have been sent before the
          // key was removed at the issuer and would install it again: wait for that one (its
          // failure is the back-off's, as any fetch's), then fetch anew.
          if (remote.reloading) await remote.reload().catch((error: unknown) => backOff.failed(error));
          // Asked for after a key compromise, rarely: refused by the back-off, the removed key
          // would verify until the key set held went stale (jwks_cache_max_age_s).
          await backOff.over();
          await remote.reload();
        } catch (error) {
          backOff.failed(error);
          throw new KeysUnavailableError(config.issuer, error);
        }
      },
      async checkKeys() {
        if (remote.fresh) return;
        const now = Date.now();
        if (lastReload !== undefined && now - lastReload.at < config.jwks_cooldown_s * 1000) {
          if (lastReload.failure) throw lastReload.failure;
          return;
        }
        lastReload = { at: now };
        try {
          await remote.reload();
        } catch (error) {
          backOff.failed(error);
          const failure =
            remote.jwks() === undefined
              ? new ArbiterError('jwks_unavailable', `JWKS of ${config.issuer} cannot be loaded: ${(error as Error).message}`)
              : new ArbiterError('jwks_stale', `JWKS of ${config.issuer} loaded before cannot be refreshed: ${(error as Error).message}`);
          // Refused by the back-off, nothing was fetched: remembered for the cooldown, it would
          // keep the replica unready for that long after the endpoint recovered.
          if (error instanceof BackingOffError) lastReload = undefined;
          else lastReload.failure = failure;
          throw failure;
        }
      },
    };
  }
  if (config.jwks_file !== undefined) {
    const jwks = readJson(config.jwks_file, at('jwks_file')) as JSONWebKeySet;
    if (!Array.isArray(jwks?.keys) || jwks.keys.length === 0) {
      throw new ConfigError([{ path: at('jwks_file'), message: `${config.jwks_file} holds no keys (expected {"keys": [...]})` }]);
    }
    const problem = await keySetFileProblem(jwks, config.algorithms);
    if (problem !== undefined) throw new ConfigError([{ path: at('jwks_file'), message: `${config.jwks_file}: ${problem}` }]);
    return fromJwks(config, jwks);
  }
  const secret = readSecret(config.secret_file!, at('secret_file'), config.algorithms);
  return { config, key: secret, checkKeys: async () => {}, reloadKeys: async () => {}, keyGeneration: 0, keysFresh: true };
}

/**
 * Raised when an issuer's remote key set cannot be had: its endpoint answers an error
 * status or something that is not a key set, or cannot be reached. Tokens then deny with
 * token_keys_unavailable, not as if they were invalid.
 */
export class KeysUnavailableError extends ArbiterError {
  constructor(issuer: string, cause: unknown) {
    super('jwks_unavailable', `JWKS of ${issuer} cannot be loaded: ${errorMessage(cause)}`, { cause });
  }
}

/** Errors of choosing a key from a key set that was loaded; anything else the getter throws is about loading it. */
const KEY_SELECTION_ERRORS = [errors.JWKSNoMatchingKey, errors.JWKSMultipleMatchingKeys, errors.JOSEAlgNotAllowed, errors.JOSENotSupported];

/**
 * WebCrypto's refusal to import the key a token chose from a loaded set (a point off its curve,
 * DataError; `key_ops` naming a usage a public key cannot have, such as sign, SyntaxError):
 * about that key, not the endpoint. Taken for a failed fetch, it would hold every fetch of the
 * issuer back, and anyone sending tokens that name the key could keep new keys out after a rotation.
 */
const KEY_IMPORT_ERRORS = new Set(['DataError', 'NotSupportedError', 'SyntaxError']);

function unimportableKey(error: unknown): boolean {
  return error instanceof DOMException && KEY_IMPORT_ERRORS.has(error.name);
}

/**
 * jose reports a non-200 answer or an unparsable body with a plain JOSEError whose message
 * is all that tells it apart; the getter is wrapped so the failure to load keys has a type.
 */
function keysUnavailableOnFetchFailure(remote: JWTVerifyGetKey, issuer: string, backOff: FetchBackOff): JWTVerifyGetKey {
  return async (header, token) => {
    try {
      return await remote(header, token);
    } catch (error) {
      if (KEY_SELECTION_ERRORS.some((type) => error instanceof type) || unimportableKey(error)) throw error;
      backOff.failed(error);
      throw new KeysUnavailableError(issuer, error);
    }
  };
}

/**
 * How long an issuer's JWKS endpoint is not asked again after a fetch failed. jose fetches
 * whenever the key set is stale or a token names a kid it lacks (past the cooldown, which
 * it counts from the last successful load only), so without this every such token would
 * fetch again, and wait up to jwks_timeout_ms. Not jwks_cooldown_s: that bounds refetches
 * after a success and defaults to 30 s, which would keep an issuer's tokens denied for half
 * a minute after a blip of its endpoint; one second bounds the fetches to one a second.
 */
export const JWKS_FAILURE_BACK_OFF_MS = 1000;

/** The failure a fetch during the back-off is refused with; not itself a failure that extends it. */
class BackingOffError extends Error {
  constructor(failure: unknown) {
    super(`${errorMessage(failure)} (not fetched again until ${JWKS_FAILURE_BACK_OFF_MS} ms after that failure)`);
  }
}

/** The back-off of one issuer's JWKS fetches after a failure, shared by decisions and readiness probes. */
class FetchBackOff {
  #failure: unknown;
  #until = 0;

  /** `fetchJwks`, refused at once while backing off. Keys already loaded are used as before. */
  gate(fetchJwks: FetchImplementation): FetchImplementation {
    return async (url, options) => {
      if (Date.now() < this.#until) throw new BackingOffError(this.#failure);
      return fetchJwks(url, options);
    };
  }

  /** Resolves once a fetch would no longer be refused. */
  async over(): Promise<void> {
    // A loop: a timer may fire a millisecond early by the wall clock the back-off is kept in.
    for (let wait = this.#until - Date.now(); wait > 0; wait = this.#until - Date.now()) {
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  /** Records that loading the key set failed with `error`. */
  failed(error: unknown): void {
    if (error instanceof BackingOffError) return;
    this.#failure = error;
    this.#until = Date.now() + JWKS_FAILURE_BACK_OFF_MS;
  }
}

export function fromJwks(config: IssuerConfig, jwks: JSONWebKeySet): TrustedIssuer {
  return { config, key: createLocalJWKSet(jwks), checkKeys: async () => {}, reloadKeys: async () => {}, keyGeneration: 0, keysFresh: true };
}

function readJson(file: string, path: string): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new ConfigError([{ path, message: `cannot read ${file}: ${(error as Error).message}` }]);
  }
}

function readSecret(file: string, path: string, algorithms: readonly string[]): Uint8Array {
  let secret: Buffer;
  try {
    secret = readFileSync(file);
  } catch (error) {
    throw new ConfigError([{ path, message: `cannot read ${file}: ${(error as Error).message}` }]);
  }
  // A trailing line ending from `echo secret > file` (LF, or CRLF from a Windows editor) is not part of the secret.
  const lineEnding = secret.at(-1) === 0x0a ? (secret.at(-2) === 0x0d ? 2 : 1) : 0;
  const trimmed = secret.subarray(0, secret.length - lineEnding);
  // The longest hash the issuer allows sets the length: a secret fit for HS256 alone would sign HS512 tokens too.
  const strongest = algorithms.reduce((longest, algorithm) => (minHmacSecretBytes(algorithm) > minHmacSecretBytes(longest) ? algorithm : longest));
  const tooShort = hmacSecretTooShort(trimmed.length, strongest);
  if (tooShort !== undefined) throw new ConfigError([{ path, message: tooShort }]);
  return new Uint8Array(trimmed);
}
