/**
 * OPA bundle signatures, in OPA's own format (v1/bundle/verify.go, hash.go, sign.go):
 * `.signatures.json` is `{"signatures": ["<compact JWS>"], "plugin"?: "_default"}`; the
 * JWS payload lists every file of the bundle with its digest:
 * `{"files": [{"name": "policy.wasm", "hash": "<hex>", "algorithm": "SHA-256"}], "keyid"?, "scope"?}`.
 * OPA writes names without a leading slash; a leading slash is tolerated, duplicates are not.
 * Structured files (data.json, data.yaml, .manifest) are hashed over their canonical JSON
 * form (see canonical-json.ts), every other file over its raw bytes; a data.json or .manifest
 * that is not JSON is refused without reading it as YAML (see JSON_ONLY_FILES).
 *
 * Stricter than OPA where OPA is lenient: the key id in the header must agree with the
 * deprecated `keyid` claim, only SHA-256/384/512 digests are accepted, and a name may
 * appear once. As in OPA, the scope must equal the configured one exactly (no
 * configured scope means the token must carry none).
 *
 * Check codes (BundleRejectedError.check):
 *   signature_missing          the bundle has no .signatures.json
 *   signature_file_invalid     .signatures.json is not `{"signatures": [...]}`, names a signing plugin, or is
 *                              larger than a signature listing the bundle's files can be
 *   signature_count            not exactly one JWS
 *   signature_invalid          not a compact JWS, or the signature does not verify with the key
 *   signature_keyid_mismatch   `kid` header and `keyid` claim disagree
 *   signature_keyid_unknown    no key is configured under that key id ("default" when the JWS names none, as in OPA)
 *   signature_algorithm        the JWS `alg` is not the algorithm configured for that key
 *   signature_payload_invalid  the verified payload is not `{"files": [...]}`
 *   signature_scope_mismatch   the `scope` claim differs from the configured scope
 *   signature_file_duplicate   the payload lists a file twice
 *   signature_hash_algorithm   a digest algorithm other than SHA-256, SHA-384, SHA-512
 *   signature_file_missing     the payload lists a file the bundle does not contain
 *   signature_file_unsigned    a bundle file the payload does not list (and no exclude pattern matches)
 *   signature_mismatch         a file's digest differs from the signed one
 * Besides the checks, an ArbiterError (not the bundle's fault, so a retry may pass):
 *   signature_digest_unavailable  the thread hashing a large structured file stopped without an answer
 */
import { createHash, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { compactVerify, decodeProtectedHeader, type ProtectedHeaderParameters } from 'jose';
import { z } from 'zod';
import { ArbiterError, BundleRejectedError, ConfigError } from '../errors.ts';
import type { BundleFiles } from './archive.ts';
import { canonicalDigest } from './canonical-digest.ts';
import { hmacSecretTooShort } from '../tokens/trusted-issuers.ts';

export const SIGNATURES_FILE = '.signatures.json';

/** JWS algorithms OPA signs bundles with (`opa build --signing-alg`). */
export const BUNDLE_SIGNING_ALGORITHMS = [
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'HS256', 'HS384', 'HS512',
] as const;

/** An `exclude` pattern: Go `filepath.Match` limited to `*` and `?` (configuration checks it at start-up too). */
export const excludePatternSchema = z.string().regex(/^[^[\\]+$/, 'only * and ? wildcards are supported');

export const verificationOptionsSchema = z.object({
  /** Keys by key id: a PEM public key or certificate, or for HS* the shared secret (text, or a key file's bytes). */
  keys: z.record(
    z.string().min(1),
    z.object({ key: z.union([z.string().min(1), z.instanceof(Uint8Array)]), algorithm: z.enum(BUNDLE_SIGNING_ALGORITHMS) }),
  ),
  /** The `scope` claim the token must carry; none configured means the token must carry none. */
  scope: z.string().optional(),
  /** Files exempt from signing, as Go `filepath.Match` patterns limited to `*` and `?`. */
  exclude: z.array(excludePatternSchema).optional(),
});

export type VerificationOptions = z.input<typeof verificationOptionsSchema>;

export interface VerifiedSignature {
  /** The key id the bundle was verified with. */
  keyid: string;
  /** How many files were checked against their signed digests. */
  files: number;
}

/** Whether the bundle carries a signature, for enforcing `require_signatures` before verifying. */
export function isSignedBundle(files: BundleFiles): boolean {
  return files.has(SIGNATURES_FILE);
}

/**
 * Verifies the bundle's signature and every file's digest. Throws BundleRejectedError, or
 * ConfigError for bad options. `signal` stops a large file's hashing thread (shutdown).
 */
export async function verifyBundleSignatures(files: BundleFiles, options: VerificationOptions, { signal }: { signal?: AbortSignal } = {}): Promise<VerifiedSignature> {
  const { keys, scope = '', exclude = [] } = parseOptions(options);
  const token = readToken(files);

  const { kid, alg } = protectedHeader(token);
  const keyid = chooseKeyId(kid, unverifiedKeyIdClaim(token));
  // Own keys only: a key id such as "constructor" must not find Object.prototype's.
  const configured = Object.hasOwn(keys, keyid) ? keys[keyid] : undefined;
  if (configured === undefined) {
    const named = kid !== undefined || unverifiedKeyIdClaim(token) !== undefined;
    const why = named ? '' : ' (the signature names no key id, so the key id "default" applies, as in OPA)';
    throw new BundleRejectedError('signature_keyid_unknown', `no verification key is configured for key id ${JSON.stringify(keyid)}${why}`);
  }
  if (alg !== configured.algorithm) {
    throw new BundleRejectedError('signature_algorithm', `signature uses ${String(alg)}, key ${JSON.stringify(keyid)} is configured for ${configured.algorithm}`);
  }

  const payload = await verifiedPayload(token, importKey(configured), configured.algorithm);
  if ((payload.scope ?? '') !== scope) {
    throw new BundleRejectedError('signature_scope_mismatch', `signature scope ${JSON.stringify(payload.scope ?? '')} is not the configured ${JSON.stringify(scope)}`);
  }
  return { keyid, files: await checkDigests(files, signedDigests(payload.files), exclude.map(globToRegExp), signal) };
}

/** Options are checked whole before any bundle is looked at: a key unfit for its algorithm is a ConfigError. */
function parseOptions(options: VerificationOptions): z.output<typeof verificationOptionsSchema> {
  const parsed = verificationOptionsSchema.safeParse(options);
  const issues = parsed.success
    ? Object.entries(parsed.data.keys).flatMap(([keyid, { key, algorithm }]) => {
        const message = verificationKeyError(key, algorithm);
        return message === undefined ? [] : [{ path: `keys.${keyid}.key`, message }];
      })
    : parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message }));
  if (issues.length > 0) throw new ConfigError(issues, 'bundle signature verification options');
  return parsed.data!;
}

const signaturesFileSchema = z.strictObject({
  signatures: z.array(z.string()),
  // OPA writes `"plugin": "_default"`; any other plugin is a custom verifier Arbiter does not have.
  plugin: z.literal('_default').optional(),
});

function readToken(files: BundleFiles): string {
  const bytes = files.get(SIGNATURES_FILE);
  if (bytes === undefined) throw new BundleRejectedError('signature_missing', `bundle has no ${SIGNATURES_FILE}`);
  const limit = signaturesFileLimit(files);
  if (bytes.byteLength > limit) {
    throw new BundleRejectedError('signature_file_invalid', `${SIGNATURES_FILE} is ${bytes.byteLength} bytes, more than a signature listing the ${files.size - 1} other files of this bundle can take (${limit})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (error) {
    throw new BundleRejectedError('signature_file_invalid', `${SIGNATURES_FILE} is not JSON`, { cause: error });
  }
  const parsed = signaturesFileSchema.safeParse(json);
  if (!parsed.success) throw new BundleRejectedError('signature_file_invalid', `${SIGNATURES_FILE} is invalid: ${z.prettifyError(parsed.error)}`);
  const [token, ...others] = parsed.data.signatures;
  if (token === undefined || others.length > 0) {
    throw new BundleRejectedError('signature_count', `${SIGNATURES_FILE} must hold exactly one signature, it holds ${parsed.data.signatures.length}`);
  }
  return token;
}

/** Room for the JWS header, the claims besides `files` (keyid, scope, iat, a claims file's own) and the signature. */
const SIGNATURE_OVERHEAD_BYTES = 64 * 1024;
/** A listed file's `{"name": ..., "hash": <SHA-512 hex>, "algorithm": ...}` around its name, generously. */
const LISTED_FILE_BYTES = 256;

/**
 * The most a .signatures.json listing every file of `files` may take: its token's payload lists
 * each file once (its name JSON-escaped, generously), base64url adds a third. The
 * file is read before any signature is checked, and JSON.parse spends seconds on megabytes of
 * empty arrays: anyone who can put an archive in front of Arbiter could hold the main thread so.
 */
function signaturesFileLimit(files: BundleFiles): number {
  let payload = 0;
  for (const path of files.keys()) payload += LISTED_FILE_BYTES + escapedLength(path);
  return SIGNATURE_OVERHEAD_BYTES + Math.ceil((payload * 4) / 3);
}

/** Bytes of `path` as Go's encoding/json writes it (opa's payload): `"` as `\"`; `<`, `>`, `&`, U+2028, U+2029 as `\uXXXX`. */
function escapedLength(path: string): number {
  const count = (pattern: RegExp) => path.match(pattern)?.length ?? 0;
  return Buffer.byteLength(path) + count(/"/g) + 5 * count(/[<>&]/g) + 3 * count(/[\u2028\u2029]/g);
}

function protectedHeader(token: string): ProtectedHeaderParameters {
  try {
    return decodeProtectedHeader(token);
  } catch (error) {
    throw new BundleRejectedError('signature_invalid', 'signature is not a compact JWS', { cause: error });
  }
}

/** The deprecated `keyid` claim, read before verification only to pick the key (as OPA does). */
function unverifiedKeyIdClaim(token: string): unknown {
  try {
    const claims: unknown = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8'));
    return typeof claims === 'object' && claims !== null ? (claims as { keyid?: unknown }).keyid : undefined;
  } catch (error) {
    throw new BundleRejectedError('signature_invalid', 'signature payload is not JSON', { cause: error });
  }
}

function chooseKeyId(kid: unknown, keyidClaim: unknown): string {
  const header = typeof kid === 'string' && kid !== '' ? kid : undefined;
  const claim = typeof keyidClaim === 'string' && keyidClaim !== '' ? keyidClaim : undefined;
  if (header !== undefined && claim !== undefined && header !== claim) {
    throw new BundleRejectedError('signature_keyid_mismatch', `kid header ${JSON.stringify(header)} and keyid claim ${JSON.stringify(claim)} differ`);
  }
  // Like OPA, whose verification key id is "default" unless configured: `opa build --signing-key`
  // without a keyid claim signs for that key.
  return header ?? claim ?? DEFAULT_KEY_ID;
}

/** The key id a signature naming none is verified with, as OPA does. */
const DEFAULT_KEY_ID = 'default';

/** A key parseOptions has checked. OPA uses an HMAC secret as its raw bytes. */
function importKey({ key, algorithm }: { key: string | Uint8Array; algorithm: string }): KeyObject | Uint8Array {
  if (algorithm.startsWith('HS')) return typeof key === 'string' ? new TextEncoder().encode(key) : key;
  return createPublicKey(typeof key === 'string' ? key : Buffer.from(key).toString('utf8'));
}

/** Why `key` cannot verify signatures of `algorithm`, or undefined when it can: configuration checks it up front. */
export function verificationKeyError(key: string | Uint8Array, algorithm: string): string | undefined {
  const text = typeof key === 'string' ? key : Buffer.from(key).toString('latin1');
  if (algorithm.startsWith('HS')) {
    // A PEM is public material: as an HMAC secret, anyone holding it could sign bundles.
    if (/-----BEGIN [A-Z ]+-----/.test(text)) return `${algorithm} takes a shared secret, not a PEM key: configure the key's own algorithm instead`;
    const bytes = typeof key === 'string' ? Buffer.byteLength(key) : key.byteLength;
    return hmacSecretTooShort(bytes, algorithm);
  }
  // createPublicKey derives the public half of a private key without a word: refused instead, as
  // key sets holding private keys are, so no replica holds what can sign the fleet's bundles.
  if (isPrivateKey(text)) return 'this is a private key: configure its public half (openssl pkey -pubout), Arbiter only verifies';
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey(text);
  } catch (error) {
    return verificationKeyProblem(error);
  }
  return keyAlgorithmMismatch(publicKey, algorithm);
}

function isPrivateKey(text: string): boolean {
  try {
    createPrivateKey(text);
    return true;
  } catch {
    return false;
  }
}

/** The key type (and curve) each asymmetric algorithm verifies with, as jose requires it. */
const KEY_TYPES: Readonly<Record<string, { types: readonly string[]; curve?: string; description: string }>> = {
  RS: { types: ['rsa'], description: 'an RSA key' },
  PS: { types: ['rsa', 'rsa-pss'], description: 'an RSA key' },
  ES256: { types: ['ec'], curve: 'prime256v1', description: 'an EC P-256 key' },
  ES384: { types: ['ec'], curve: 'secp384r1', description: 'an EC P-384 key' },
  ES512: { types: ['ec'], curve: 'secp521r1', description: 'an EC P-521 key' },
  EdDSA: { types: ['ed25519'], description: 'an Ed25519 key' },
};

/** Why a parsed key cannot verify `algorithm` (jose would refuse every signature), or undefined. */
function keyAlgorithmMismatch(key: KeyObject, algorithm: string): string | undefined {
  const wanted = KEY_TYPES[algorithm] ?? KEY_TYPES[algorithm.slice(0, 2)]!;
  const type = key.asymmetricKeyType ?? 'unknown';
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (!wanted.types.includes(type) || (wanted.curve !== undefined && curve !== wanted.curve)) {
    return `${algorithm} needs ${wanted.description}, this is ${curve === undefined ? `an ${type} key` : `an ${type} ${curve} key`}`;
  }
  const bits = key.asymmetricKeyDetails?.modulusLength;
  if (bits !== undefined && bits < 2048) return `${algorithm} needs an RSA key of at least 2048 bits, this one has ${bits}`;
  return undefined;
}

function verificationKeyProblem(error: unknown): string {
  return `not a PEM public key or certificate: ${(error as Error).message}`;
}

const signedFileSchema = z.object({ name: z.string().min(1), hash: z.string(), algorithm: z.string() });

const payloadSchema = z.looseObject({
  files: z.array(signedFileSchema),
  keyid: z.string().optional(),
  scope: z.string().optional(),
});

async function verifiedPayload(token: string, key: KeyObject | Uint8Array, algorithm: string): Promise<z.infer<typeof payloadSchema>> {
  let payload: Uint8Array;
  try {
    ({ payload } = await compactVerify(token, key, { algorithms: [algorithm] }));
  } catch (error) {
    throw new BundleRejectedError('signature_invalid', `signature does not verify: ${(error as Error).message}`, { cause: error });
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload));
  } catch (error) {
    throw new BundleRejectedError('signature_payload_invalid', 'signature payload is not JSON', { cause: error });
  }
  const parsed = payloadSchema.safeParse(json);
  if (!parsed.success) throw new BundleRejectedError('signature_payload_invalid', `signature payload is invalid: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

const DIGESTS: Readonly<Record<string, string>> = { 'SHA-256': 'sha256', 'SHA-384': 'sha384', 'SHA-512': 'sha512' };

interface SignedDigest {
  digest: string;
  hex: string;
}

function signedDigests(listed: z.infer<typeof signedFileSchema>[]): Map<string, SignedDigest> {
  const signed = new Map<string, SignedDigest>();
  for (const { name, hash, algorithm } of listed) {
    const path = name.startsWith('/') ? name.slice(1) : name;
    if (signed.has(path)) throw new BundleRejectedError('signature_file_duplicate', `signature lists ${path} more than once`);
    const digest = DIGESTS[algorithm];
    if (digest === undefined) throw new BundleRejectedError('signature_hash_algorithm', `${path} is hashed with ${JSON.stringify(algorithm)}, only SHA-256, SHA-384 and SHA-512 are accepted`);
    if (!/^(?:[0-9a-f]{2})+$/i.test(hash)) throw new BundleRejectedError('signature_payload_invalid', `digest of ${path} is not hexadecimal`);
    signed.set(path, { digest, hex: hash.toLowerCase() });
  }
  return signed;
}

async function checkDigests(files: BundleFiles, signed: Map<string, SignedDigest>, exclude: RegExp[], signal: AbortSignal | undefined): Promise<number> {
  for (const path of signed.keys()) {
    if (!files.has(path) || path === SIGNATURES_FILE) {
      throw new BundleRejectedError('signature_file_missing', `signature lists ${path}, which is not in the bundle`);
    }
  }
  let checked = 0;
  for (const [path, bytes] of files) {
    if (path === SIGNATURES_FILE || exclude.some((pattern) => pattern.test(path))) continue;
    const expected = signed.get(path);
    if (expected === undefined) throw new BundleRejectedError('signature_file_unsigned', `${path} is not covered by the signature`);
    if ((await fileDigest(path, bytes, expected.digest, signal)) !== expected.hex) {
      throw new BundleRejectedError('signature_mismatch', `${path} does not match its signed digest`);
    }
    checked++;
  }
  return checked;
}

// OPA's bundle.IsStructuredDoc, by base name (data.yml is hashed raw there too).
const STRUCTURED_FILES = new Set(['data.json', 'data.yaml', '.manifest', 'signatures.json']);

/**
 * Structured files (by base name) Arbiter reads as JSON only, wherever it reads them (bundle
 * data, the manifest): one that is not JSON is refused at once rather than read as YAML as OPA's
 * hash would (OPA then refuses it too, loading it as JSON). Parsing YAML costs seconds
 * per MiB on the main thread, and runs before the digest is compared: a signature replayed from
 * any published bundle, beside a large YAML data.json, would hold every decision that long.
 */
const JSON_ONLY_FILES = new Set(['data.json', '.manifest']);

/** A structured file's digest is computed off the main thread when it is large (see canonicalDigest). */
async function fileDigest(path: string, bytes: Uint8Array, digest: string, signal: AbortSignal | undefined): Promise<string> {
  const base = path.slice(path.lastIndexOf('/') + 1);
  if (!STRUCTURED_FILES.has(base)) return createHash(digest).update(bytes).digest('hex');
  const jsonOnly = JSON_ONLY_FILES.has(base);
  try {
    return await canonicalDigest({ bytes, algorithm: digest, yaml: !jsonOnly }, signal);
  } catch (error) {
    if (!(error instanceof SyntaxError)) {
      // The thread hashing it stopped: nothing is known against the bundle, and a retry may pass.
      throw new ArbiterError('signature_digest_unavailable', `the digest of ${path} could not be computed: ${(error as Error).message}`, { cause: error });
    }
    const why = jsonOnly ? `${path} is not JSON: Arbiter reads ${base} as JSON only, and does not compute its digest as YAML` : `${path} cannot be parsed to compute its digest`;
    throw new BundleRejectedError('signature_mismatch', why, { cause: error });
  }
}

/** Go's filepath.Match for `*` (any run of non-slash characters) and `?` (one non-slash character). */
function globToRegExp(pattern: string): RegExp {
  const source = [...pattern]
    .map((c) => (c === '*' ? '[^/]*' : c === '?' ? '[^/]' : c.replace(/[.+^${}()|[\]\\*?]/g, '\\$&')))
    .join('');
  return new RegExp(`^${source}$`, 'u');
}
