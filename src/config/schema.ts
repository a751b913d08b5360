import { z } from 'zod';

/**
 * The one schema for Arbiter's configuration (YAML file + ARBITER_* overrides).
 * Keys are snake_case like OPA's config; every default lives here and nowhere else.
 */

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

function isLoopbackHost(hostname: string): boolean {
  return LOOPBACK_HOSTS.has(hostname) || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

const nonEmpty = z.string().trim().min(1, 'must not be empty');

/** JWS algorithms Arbiter accepts at all; "none" and unknown names are refused up front. */
export const SUPPORTED_ALGORITHMS = [
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512',
  'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519',
  'HS256', 'HS384', 'HS512',
] as const;

const jwksUri = z
  .url({ message: 'must be an absolute URL' })
  .refine((value) => {
    const url = new URL(value);
    return url.protocol === 'https:' || (url.protocol === 'http:' && isLoopbackHost(url.hostname));
  }, 'must use https (plain http is allowed only for loopback hosts)');

export const issuerSchema = z
  .strictObject({
    issuer: nonEmpty.describe('Exact `iss` value of tokens from this issuer.'),
    jwks_uri: jwksUri.optional().describe('Remote JWKS; https unless loopback.'),
    jwks_file: nonEmpty.optional().describe('Local JWKS file (JSON).'),
    secret_file: nonEmpty
      .optional()
      .describe('File holding the shared secret for HS* algorithms (at least 32 bytes).'),
    audiences: z.array(nonEmpty).min(1, 'at least one audience is required'),
    algorithms: z.array(z.enum(SUPPORTED_ALGORITHMS)).min(1, 'at least one algorithm is required'),
    typ: nonEmpty.optional().describe('Required JWT `typ` header, e.g. at+jwt (RFC 9068).'),
    required_claims: z.array(nonEmpty).default([]).describe('Claims required besides exp, iat and sub.'),
    clock_tolerance_s: z.number().int().min(0).max(300).default(30),
    max_token_age_s: z.number().int().positive('must be greater than 0').default(3600),
    max_lifetime_s: z.number().int().positive('must be greater than 0').default(86_400),
    jwks_cache_max_age_s: z.number().int().positive().default(600),
    jwks_cooldown_s: z.number().int().min(0).default(30),
    jwks_timeout_ms: z.number().int().positive().default(5000),
  })
  .superRefine((issuer, ctx) => {
    const sources = [issuer.jwks_uri, issuer.jwks_file, issuer.secret_file].filter((s) => s !== undefined);
    if (sources.length !== 1) {
      ctx.addIssue({ code: 'custom', message: 'exactly one of jwks_uri, jwks_file, secret_file is required' });
    }
    const hmac = issuer.algorithms.filter((alg) => alg.startsWith('HS'));
    if (issuer.secret_file !== undefined && hmac.length !== issuer.algorithms.length) {
      ctx.addIssue({ code: 'custom', path: ['algorithms'], message: 'secret_file issuers allow only HS256/HS384/HS512' });
    }
    if (issuer.secret_file === undefined && hmac.length > 0) {
      ctx.addIssue({ code: 'custom', path: ['algorithms'], message: 'HS* algorithms need secret_file (a JWKS never carries shared secrets)' });
    }
  });

export type IssuerConfig = z.infer<typeof issuerSchema>;

export const configSchema = z.strictObject({
  mode: z
    .enum(['development', 'production'])
    .default(process.env.NODE_ENV === 'production' ? 'production' : 'development')
    .describe('development enables the local dev issuer; production refuses it.'),
  server: z
    .strictObject({
      host: nonEmpty.default('127.0.0.1'),
      port: z.number().int().min(0).max(65_535).default(8181),
      body_limit_bytes: z.number().int().positive().max(16 * 1024 * 1024).default(64 * 1024),
    })
    .prefault({}),
  logging: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    })
    .prefault({}),
  tokens: z
    .strictObject({
      max_token_bytes: z.number().int().positive().max(64 * 1024).default(8192),
    })
    .prefault({}),
  issuers: z.array(issuerSchema).default([]),
  dev_issuer: z
    .strictObject({
      enabled: z.boolean().default(false).describe('Local development issuer; refused in production mode or NODE_ENV=production.'),
      key_file: nonEmpty.default('.arbiter/dev-issuer.jwk.json').describe('Private key, generated on first start (git-ignored).'),
    })
    .prefault({}),
  bundles: z
    .strictObject({
      dir: nonEmpty.default('bundles'),
      default: nonEmpty.default('authz'),
    })
    .prefault({}),
  data: z
    .strictObject({
      seed: z
        .record(nonEmpty, nonEmpty)
        .optional()
        .describe('Top-level live data documents loaded from JSON files at start, e.g. {entitlements: examples/entitlements.json}.'),
    })
    .prefault({}),
});

export type Config = z.infer<typeof configSchema>;
