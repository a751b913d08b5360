import { lstatSync, readlinkSync, statSync, type Stats } from 'node:fs';
import { createPrivateFileWhole, makePrivateDirSync, readPrivateJson } from '../private-files.ts';
import { dirname } from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, SignJWT, type JWK } from 'jose';
import type { IssuerConfig } from '../config/schema.ts';
import { atConfigKey, ConfigError } from '../errors.ts';
import { checkStatePath } from '../state-lock.ts';
import { fromJwks, IssuerRegistry, type TrustedIssuer } from './trusted-issuers.ts';
import { verifyAccessToken } from './verify.ts';

/**
 * A local issuer for trying Arbiter out: its key pair is generated on first start into a
 * git-ignored file, never shipped, and the config loader refuses it in production.
 */
export const DEV_ISSUER = 'urn:arbiter:dev-issuer';
export const DEV_AUDIENCES = ['https://api.example.com', 'https://staging.api.example.com'];
const DEV_ALGORITHM = 'ES256';

export interface DevIssuerKey {
  privateJwk: JWK;
  publicJwk: JWK;
}

export async function loadOrCreateDevIssuerKey(file: string): Promise<DevIssuerKey> {
  return (await readDevIssuerKey(file)) ?? createDevIssuerKey(file);
}

/** The key in `file`, undefined when there is none yet; a ConfigError on dev_issuer.key_file for one that cannot be used. */
export async function readDevIssuerKey(file: string): Promise<DevIssuerKey | undefined> {
  // A directory there, or a file where its directory goes: refused as start-up would meet it
  // when generating the key (config check only reads).
  checkStatePath({ path: file, key: 'dev_issuer.key_file', kind: 'file', file: 'a key file' });
  const status = keyFileStatus(file);
  if (status !== undefined) {
    // Whoever can read it mints tokens Arbiter accepts (admin ones too with admin.allow_dev_issuer).
    if ((status.mode & 0o077) !== 0) {
      throw new ConfigError([{ path: 'dev_issuer.key_file', message: `${file} is readable or writable by group or others (chmod 600 it, or delete it to generate a new development key)` }]);
    }
    try {
      const privateJwk = readPrivateJson(file) as JWK | undefined;
      if (privateJwk === undefined) throw new Error('not JSON (a private EC JWK)');
      if (privateJwk.kty !== 'EC' || typeof privateJwk.d !== 'string') throw new Error('not a private EC JWK');
      const key = { privateJwk, publicJwk: publicPart(privateJwk) };
      await checkRoundTrip(key);
      return key;
    } catch (error) {
      throw new ConfigError([{ path: 'dev_issuer.key_file', message: `${file}: ${(error as Error).message} (delete it to generate a new development key)` }]);
    }
  }
  return undefined;
}

/**
 * The key file's status, undefined when nothing is there (the key is generated). Something there
 * that cannot be read (a link to nothing, such as a secret not mounted, a link loop, a directory
 * that may not be searched) is a ConfigError: generating would fail on it, or write a key
 * where the link leads, and existsSync answers false for all of them.
 */
function keyFileStatus(file: string): Stats | undefined {
  try {
    return statSync(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && lstatSync(file, { throwIfNoEntry: false }) === undefined) return undefined;
    const problem = code === 'ENOENT' ? `is a symbolic link to ${readlinkSync(file)}, which does not exist` : `cannot be read: ${(error as Error).message}`;
    throw new ConfigError([{ path: 'dev_issuer.key_file', message: `${file} ${problem}` }]);
  }
}

async function createDevIssuerKey(file: string): Promise<DevIssuerKey> {
  const { privateKey } = await generateKeyPair(DEV_ALGORITHM, { extractable: true });
  const privateJwk = await exportJWK(privateKey);
  privateJwk.alg = DEV_ALGORITHM;
  privateJwk.use = 'sig';
  privateJwk.kid = await calculateJwkThumbprint(privateJwk);
  return atConfigKey('dev_issuer.key_file', () => {
    makePrivateDirSync(dirname(file));
    // Of two first starts at once (the server and `arbiter token`), the second takes the first's key.
    if (!createPrivateFileWhole(file, `${JSON.stringify(privateJwk, null, 2)}\n`)) return readDevIssuerKey(file) as Promise<DevIssuerKey>;
    return { privateJwk, publicJwk: publicPart(privateJwk) };
  });
}

/**
 * Mints a token with the key and verifies it as a decision would. A key file edited or copied
 * by hand (another key's d, another curve, alg or use, a kid that is not a string) is otherwise
 * read without complaint: the server would deny every development token, and `arbiter token`
 * fail with a stack trace, instead of start-up saying which file to fix or delete.
 */
async function checkRoundTrip(key: DevIssuerKey): Promise<void> {
  const token = await mintDevToken(key, { sub: 'urn:arbiter:dev-issuer:key-check' }).catch((error: unknown) => {
    throw new Error(`it cannot sign ${DEV_ALGORITHM} tokens (${(error as Error).message})`);
  });
  const verified = await verifyAccessToken(token, new IssuerRegistry([devTrustedIssuer(key)]), { maxTokenBytes: Number.MAX_SAFE_INTEGER });
  if (!verified.ok) throw new Error(`its tokens would be refused (${verified.code}: ${verified.message})`);
}

function devIssuerConfig(): IssuerConfig {
  return {
    issuer: DEV_ISSUER,
    jwks_file: '(generated development key)',
    audiences: DEV_AUDIENCES,
    algorithms: [DEV_ALGORITHM],
    required_claims: [],
    clock_tolerance_s: 30,
    max_token_age_s: 86_400,
    max_lifetime_s: 86_400,
    jwks_cache_max_age_s: 600,
    jwks_cooldown_s: 30,
    jwks_timeout_ms: 5000,
  };
}

export function devTrustedIssuer(key: DevIssuerKey): TrustedIssuer {
  return fromJwks(devIssuerConfig(), { keys: [key.publicJwk] });
}

export interface DevTokenOptions {
  sub: string;
  aud?: string;
  scope?: string;
  ttlSeconds?: number;
  /** Seconds to backdate iat, e.g. to try the token-age rules. */
  ageSeconds?: number;
  claims?: Record<string, unknown>;
}

export async function mintDevToken(key: DevIssuerKey, options: DevTokenOptions): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const iat = now - (options.ageSeconds ?? 0);
  const jwt = new SignJWT({ ...options.claims, ...(options.scope !== undefined && { scope: options.scope }) })
    .setProtectedHeader({ alg: DEV_ALGORITHM, kid: key.privateJwk.kid!, typ: 'at+jwt' })
    .setIssuer(DEV_ISSUER)
    .setSubject(options.sub)
    .setAudience(options.aud ?? DEV_AUDIENCES[0]!)
    .setIssuedAt(iat)
    .setExpirationTime(iat + (options.ttlSeconds ?? 3600))
    .setJti(crypto.randomUUID());
  return jwt.sign(await importJWK(key.privateJwk, DEV_ALGORITHM));
}

function publicPart(jwk: JWK): JWK {
  const { d: _d, ...publicJwk } = jwk;
  return publicJwk;
}
