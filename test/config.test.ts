import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it, vi } from 'vitest';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { loadConfig, parseConfig } from '../src/config/load.ts';
import type { Config } from '../src/config/schema.ts';
import { ConfigError } from '../src/errors.ts';
import { BundleStore } from '../src/policy/store.ts';
import { IssuerRegistry } from '../src/tokens/trusted-issuers.ts';
import { startTestArbiter, tempDir } from './support/arbiter.ts';
import { build, writeBundleSource } from './support/bundle-sources.ts';

const run = promisify(execFile);
const EC_PUBLIC_PEM = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
const EC_PAIR = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const EC_PUBLIC_JWK = { ...EC_PAIR.publicKey.export({ format: 'jwk' }), kid: 'good', use: 'sig' };
const EC_PRIVATE_JWK = { ...EC_PAIR.privateKey.export({ format: 'jwk' }), kid: 'leaked' };
const dir = tempDir('arbiter-config-');
const BROKEN_DEV_KEY = join(dir, 'broken-dev.jwk.json');
writeFileSync(BROKEN_DEV_KEY, '{"kty": "EC", "d": ', { mode: 0o600 });
const NEWLINE_KEY = join(dir, 'newline.key');
writeFileSync(NEWLINE_KEY, '\n');
const OBJECT_TENANTS_SEED = join(dir, 'object-tenants.json');
writeFileSync(OBJECT_TENANTS_SEED, JSON.stringify({ 'user:alice': { grants: [{ id: 'g', actions: ['invoices.read'], tenants: { primary: 'acme' } }] } }));
/** Seeds that fit live data's shape but not its limits: deeper than 2 levels, and over 100 bytes. */
const DEEP_SEED = join(dir, 'deep-seed.json');
writeFileSync(DEEP_SEED, JSON.stringify({ a: { b: { c: 1 } } }));
const LARGE_SEED = join(dir, 'large-seed.json');
writeFileSync(LARGE_SEED, JSON.stringify({ note: 'x'.repeat(100) }));
/** A directory and a file where state paths expect the other. */
const STATE_DIR = join(dir, 'state-dir');
mkdirSync(STATE_DIR);
const STATE_FILE = join(dir, 'state-file');
writeFileSync(STATE_FILE, 'not a directory');
/** The private half of a bundle signing key, as `opa build --signing-key` reads it. */
const SIGNING_PRIVATE_KEY = join(dir, 'signing-private.pem');
writeFileSync(SIGNING_PRIVATE_KEY, EC_PAIR.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });

/** Writes a key set file; its path goes into a config under issuers or admin.issuers. */
function jwksFile(name: string, keys: unknown[]): string {
  const file = join(dir, `${name}.jwks.json`);
  writeFileSync(file, JSON.stringify({ keys }));
  return file;
}

const UNUSABLE_JWKS = {
  private: jwksFile('private', [EC_PUBLIC_JWK, EC_PRIVATE_JWK]),
  symmetric: jwksFile('symmetric', [EC_PUBLIC_JWK, { kty: 'oct', k: 'c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA' }]),
  'bad-point': jwksFile('bad-point', [{ kty: 'EC', crv: 'P-256', x: 'zz', y: 'zz' }]),
  'rsa-without-modulus': jwksFile('rsa-without-modulus', [EC_PUBLIC_JWK, { kty: 'RSA' }]),
  'no-key-for-the-algorithm': jwksFile('no-key-for-the-algorithm', [{ ...EC_PUBLIC_JWK, use: 'enc' }]),
};
const issuer = { issuer: 'https://idp.example', jwks_uri: 'https://idp.example/jwks', audiences: ['api'], algorithms: ['ES256'] };

function issuesOf(fn: () => unknown): { path: string; message: string }[] {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConfigError) return [...error.issues];
    throw error;
  }
  throw new Error('expected a ConfigError');
}

async function issuesOfAsync(fn: () => Promise<unknown>): Promise<{ path: string; message: string }[]> {
  try {
    await fn();
  } catch (error) {
    if (error instanceof ConfigError) return [...error.issues];
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('configuration', () => {
  it('has sane defaults', () => {
    const config = parseConfig({});
    expect(config.server).toEqual({ host: '127.0.0.1', port: 8181, body_limit_bytes: 65_536, shutdown_timeout_s: 25, request_timeout_s: 30, max_connections: 10_000 });
    expect(config.gateway).toMatchObject({ authentication: 'none', max_concurrent: 4096 });
    expect(config.bundles).toMatchObject({ dir: 'bundles', default: 'authz' });
    expect(config.dev_issuer.enabled).toBe(false);
  });

  it.each([
    ['issuers.0.issuer', { ...issuer, issuer: '' }],
    ['issuers.0.audiences.0', { ...issuer, audiences: [''] }],
    ['issuers.0.audiences', { ...issuer, audiences: [] }],
    ['issuers.0.max_token_age_s', { ...issuer, max_token_age_s: 0 }],
    // 0 would let every token naming a kid the key set lacks fetch the JWKS again.
    ['issuers.0.jwks_cooldown_s', { ...issuer, jwks_cooldown_s: 0 }],
    ['issuers.0.algorithms.0', { ...issuer, algorithms: ['none'] }],
    ['issuers.0.jwks_uri', { ...issuer, jwks_uri: 'http://idp.example/jwks' }],
    ['issuers.0', { ...issuer, jwks_file: 'x.json' }],
    ['issuers.0.algorithms', { ...issuer, jwks_uri: undefined, secret_file: 's', algorithms: ['RS256'] }],
    ['issuers.0.typo', { ...issuer, typo: 1 }],
  ])('names %s when it is wrong', (path, bad) => {
    expect(issuesOf(() => parseConfig({ issuers: [bad] })).map((i) => i.path)).toContain(path);
  });

  // Node runs a timer set for longer than 2^31 - 1 ms (~24.8 days) after 1 ms instead.
  const source = { name: 'authz', url: 'https://bundles.example/authz.tar.gz' };
  it.each([
    ['data.revocation_prune_interval_s', 2_147_483, (v: number) => ({ data: { revocation_prune_interval_s: v } })],
    ['decision_log.retention.check_interval_s', 2_147_483, (v: number) => ({ decision_log: { retention: { max_records: 10, check_interval_s: v } } })],
    ['decision_log.checkpoint.interval_s', 2_147_483, (v: number) => ({ decision_log: { checkpoint: { interval_s: v } } })],
    ['bundles.sources.0.poll_interval_s', 2_147_483, (v: number) => ({ bundles: { sources: [{ ...source, poll_interval_s: v }] } })],
    ['bundles.sources.0.timeout_ms', 2_147_483_647, (v: number) => ({ bundles: { sources: [{ ...source, timeout_ms: v }] } })],
    ['issuers.0.jwks_timeout_ms', 2_147_483_647, (v: number) => ({ issuers: [{ ...issuer, jwks_timeout_ms: v }] })],
    ['admin.issuers.0.jwks_timeout_ms', 2_147_483_647, (v: number) => ({ admin: { issuers: [{ ...issuer, jwks_timeout_ms: v }] } })],
  ])('refuses %s beyond the longest timer delay, naming the maximum', (path, max, config) => {
    expect(() => parseConfig(config(max))).not.toThrow();
    expect(issuesOf(() => parseConfig(config(max + 1)))).toEqual([{ path, message: expect.stringContaining(`at most ${max}`) }]);
    expect(issuesOf(() => parseConfig(config(2_592_000_000)))).toEqual([{ path, message: expect.stringContaining(`at most ${max}`) }]);
  });

  // A typo (0.001 for 1000) would run periodic work in a tight loop, or ask a timer for less than it can wait.
  it.each([
    ['data.revocation_prune_interval_s', 1, 0, (v: number) => ({ data: { revocation_prune_interval_s: v } })],
    ['decision_log.retention.check_interval_s', 1, 0.001, (v: number) => ({ decision_log: { retention: { max_records: 10, check_interval_s: v } } })],
    ['decision_log.checkpoint.interval_s', 1, 0.001, (v: number) => ({ decision_log: { checkpoint: { interval_s: v } } })],
    ['bundles.sources.0.poll_interval_s', 0.01, 0.001, (v: number) => ({ bundles: { sources: [{ ...source, poll_interval_s: v }] } })],
    ['server.shutdown_timeout_s', 0.001, 0.0001, (v: number) => ({ server: { shutdown_timeout_s: v } })],
    ['server.request_timeout_s', 0.001, 0.0001, (v: number) => ({ server: { request_timeout_s: v } })],
    ['decision_log.transport.ready_timeout_s', 0.001, 0.0001, (v: number) => ({ decision_log: { transport: { target: 'pino/file', ready_timeout_s: v } } })],
  ])('refuses %s below its minimum, naming it', (path, min, tiny, config) => {
    expect(() => parseConfig(config(min))).not.toThrow();
    expect(issuesOf(() => parseConfig(config(tiny)))).toEqual([{ path, message: expect.stringContaining(`at least ${min} s`) }]);
  });

  it.each([
    ['issuers.0.jwks_uri', { issuers: [{ ...issuer, jwks_uri: 'idp.example/jwks' }] }],
    ['bundles.sources.0.url', { bundles: { sources: [{ name: 'authz', url: 'bundles.example.com/authz.tar.gz' }] } }],
    ['authzen.public_url', { authzen: { public_url: 'pdp.example.com' } }],
  ])('names %s when it is not a URL at all (no TypeError)', (path, config) => {
    expect(issuesOf(() => parseConfig(config)).map((i) => i.path)).toEqual([path]);
  });

  it('allows plain http JWKS on loopback only', () => {
    expect(parseConfig({ issuers: [{ ...issuer, jwks_uri: 'http://127.0.0.1:9999/jwks' }] }).issuers[0]!.jwks_uri).toBe('http://127.0.0.1:9999/jwks');
  });

  it('reports every bad key at once, unknown keys included', () => {
    const paths = issuesOf(() => parseConfig({ server: { port: 'x', colour: 'blue' }, bundles: { default: '' } })).map((i) => i.path);
    expect(paths).toEqual(expect.arrayContaining(['server.port', 'server.colour', 'bundles.default']));
  });

  it('refuses an unknown key inside a decision_log.mask rule, as everywhere else', () => {
    // A misspelt or misplaced key in a rule was dropped without a word, the rule kept as if it were whole.
    expect(issuesOf(() => parseConfig({ decision_log: { mask: [{ pointer: '/input/context/client_ip', mode: 'erase', modes: 'hash' }] } }))).toEqual([
      { path: 'decision_log.mask.0.modes', message: 'unknown key' },
    ]);
  });

  it('refuses two names of a map that are one once trimmed, rather than keep the last', () => {
    // Names are trimmed: `acme` and `"acme "` became one tenant, routed to whichever bundle came last.
    const key = (algorithm: string) => ({ key: EC_PUBLIC_PEM, algorithm });
    for (const [raw, path] of [
      [{ authzen: { tenants: { acme: 'acme_policy', 'acme ': 'beta_policy' } } }, 'authzen.tenants.acme '],
      [{ bundles: { signing: { keys: { k1: key('ES256'), ' k1': key('RS256') } } } }, 'bundles.signing.keys. k1'],
      [{ bundles: { signing: { bundles: { authz: { keys: { k1: key('ES256'), 'k1\t': key('RS256') } } } } } }, 'bundles.signing.bundles.authz.keys.k1\t'],
      [{ data: { seed: { entitlements: 'a.json', ' entitlements ': 'b.json' } } }, 'data.seed. entitlements '],
    ] as const) {
      expect(issuesOf(() => parseConfig(raw)), path).toEqual([{ path, message: expect.stringMatching(/same .* as "/) }]);
    }
    // One name with surrounding whitespace is still taken, trimmed; a blank one is still refused.
    expect(parseConfig({ authzen: { tenants: { ' acme ': 'acme_policy' } } }).authzen.tenants).toEqual({ acme: 'acme_policy' });
    expect(issuesOf(() => parseConfig({ data: { seed: { ' ': 'a.json' } } })).map((i) => i.path)).toEqual(['data.seed. ']);
  });

  it('refuses an HMAC secret under 32 bytes at start-up', async () => {
    const secretFile = join(dir, 'short.secret');
    writeFileSync(secretFile, 'too-short-secret\n');
    const config = parseConfig({ issuers: [{ ...issuer, jwks_uri: undefined, secret_file: secretFile, algorithms: ['HS256'] }] });
    expect(await issuesOfAsync(() => IssuerRegistry.fromConfig(config.issuers))).toEqual([
      expect.objectContaining({ path: 'issuers.0.secret_file', message: expect.stringContaining('at least 32 bytes') }),
    ]);
  });

  it('refuses an HMAC secret shorter than the hash of an algorithm the issuer allows (RFC 7518 §3.2)', async () => {
    const secretFile = join(dir, 'hs512.secret');
    writeFileSync(secretFile, 's'.repeat(48));
    const config = (algorithms: string[]) => parseConfig({ issuers: [{ ...issuer, jwks_uri: undefined, secret_file: secretFile, algorithms }] });
    expect((await IssuerRegistry.fromConfig(config(['HS256', 'HS384']).issuers)).get(issuer.issuer)).toBeDefined();
    expect(await issuesOfAsync(() => IssuerRegistry.fromConfig(config(['HS256', 'HS512']).issuers))).toEqual([
      expect.objectContaining({ path: 'issuers.0.secret_file', message: expect.stringContaining('at least 64 bytes for HS512 (got 48)') }),
    ]);
  });

  it('reads an HMAC secret without its trailing line ending, LF or CRLF', async () => {
    const secret = 's'.repeat(32);
    for (const [name, text] of [['lf', `${secret}\n`], ['crlf', `${secret}\r\n`], ['none', secret]]) {
      const secretFile = join(dir, `${name}.secret`);
      writeFileSync(secretFile, text!);
      const config = parseConfig({ issuers: [{ ...issuer, jwks_uri: undefined, secret_file: secretFile, algorithms: ['HS256'] }] });
      expect(Buffer.from((await IssuerRegistry.fromConfig(config.issuers)).get(issuer.issuer)!.key as Uint8Array).toString(), name).toBe(secret);
    }
  });

  it.each([
    ['a private key', 'private', 'private key'],
    ['a symmetric key', 'symmetric', 'private key'],
    ['an EC key whose point is not on its curve', 'bad-point', 'cannot be used for'],
    ['an RSA key without its modulus', 'rsa-without-modulus', 'cannot be used for'],
    ['no key usable with its algorithms', 'no-key-for-the-algorithm', 'no key usable with ES256 or RS256'],
  ] as const)('refuses a jwks_file holding %s at start-up', async (_label, name, message) => {
    const config = parseConfig({ issuers: [{ ...issuer, jwks_uri: undefined, jwks_file: UNUSABLE_JWKS[name], algorithms: ['ES256', 'RS256'] }] });
    expect(await issuesOfAsync(() => IssuerRegistry.fromConfig(config.issuers))).toEqual([
      { path: 'issuers.0.jwks_file', message: expect.stringContaining(message) },
    ]);
  });

  it('accepts a jwks_file with one usable key among keys for other algorithms', async () => {
    const file = jwksFile('mixed', [{ ...EC_PUBLIC_JWK, kid: 'enc', use: 'enc' }, EC_PUBLIC_JWK, { kty: 'OKP', crv: 'Ed25519', x: 'zz' }]);
    const config = parseConfig({ issuers: [{ ...issuer, jwks_uri: undefined, jwks_file: file }] });
    expect((await IssuerRegistry.fromConfig(config.issuers)).get(issuer.issuer)).toBeDefined();
  });

  it('refuses data.path and decision_log.path naming one file, so config check reports it too', () => {
    expect(() => parseConfig({ data: { path: 'state/arbiter.db' }, decision_log: { path: './state/../state/arbiter.db' } })).toThrow(/decision_log\.path: \.\/state\/\.\.\/state\/arbiter\.db is also data\.path/);
    // Without a decision log, nothing else takes the file.
    expect(parseConfig({ data: { path: 'state/arbiter.db' }, decision_log: { enabled: false, path: 'state/arbiter.db' } }).data.path).toBe('state/arbiter.db');
  });

  it('refuses an in-memory decision log, which start-up could not open: config check said valid, start-up crashed', async () => {
    // data.path may be :memory:; the decision log's writer and reader threads would each open a
    // database of their own, so start-up stopped with a stack trace ("no such table: decisions")
    // after writing a file named :memory: and its checkpoint key into the working directory.
    const [problem] = issuesOf(() => parseConfig({ decision_log: { path: ':memory:' } }));
    expect(problem).toMatchObject({ path: 'decision_log.path', message: expect.stringContaining('decision_log.enabled: false') });
    expect(parseConfig({ decision_log: { enabled: false, path: ':memory:' } }).decision_log.enabled).toBe(false);
    const cwd = tempDir('arbiter-memory-log-');
    const file = join(cwd, 'memory-log.yaml');
    writeFileSync(file, 'decision_log:\n  path: ":memory:"\n');
    const checked = await run(process.execPath, [join(process.cwd(), 'src/cli/main.ts'), 'config', 'check', file, '--json'], { cwd }).catch((error: { code: number; stdout: string }) => error);
    expect(checked).toMatchObject({ code: 2 });
    expect(JSON.parse((checked as { stdout: string }).stdout).problems).toEqual([expect.objectContaining({ path: 'decision_log.path' })]);
  });

  it('refuses a per-caller share of in-flight requests larger than the ceiling, naming the key', () => {
    expect(parseConfig({ gateway: { max_concurrent: 8, max_concurrent_per_caller: 8 } }).gateway.max_concurrent_per_caller).toBe(8);
    const [problem] = issuesOf(() => parseConfig({ gateway: { max_concurrent: 8, max_concurrent_per_caller: 9 } }));
    expect(problem).toMatchObject({ path: 'gateway.max_concurrent_per_caller' });
    expect(problem!.message).toContain('max_concurrent (8)');
  });

  it('refuses __proto__ as a name, which a map would otherwise drop without a word', () => {
    const tenants = JSON.parse('{"__proto__": "todo", "acme": "todo"}') as unknown;
    expect(issuesOf(() => parseConfig({ authzen: { tenants } }))).toEqual([{ path: 'authzen.tenants.__proto__', message: expect.stringContaining('cannot be a name') }]);
    // In a strict object it is an unknown key, said once.
    expect(issuesOf(() => parseConfig({ server: JSON.parse('{"__proto__": {"port": 1}}') as unknown }))).toEqual([{ path: 'server.__proto__', message: 'unknown key' }]);
  });

  it('takes an IPv6 listen address without URL brackets, which Node cannot listen on', () => {
    expect(parseConfig({ server: { host: '::1' } }).server.host).toBe('::1');
    const [problem] = issuesOf(() => parseConfig({ server: { host: '[::1]' } }));
    expect(problem).toMatchObject({ path: 'server.host' });
    expect(problem!.message).toContain('::1');
  });

  it('refuses a bundle that no bundle could ever be named, naming the key', () => {
    // Such a bundle can never be active: every decision or AuthZEN request would answer 503.
    for (const [raw, path] of [
      [{ bundles: { default: 'Authz' } }, 'bundles.default'],
      [{ authzen: { default_bundle: 'To do' } }, 'authzen.default_bundle'],
      [{ authzen: { tenants: { acme: 'Acme/Policy' } } }, 'authzen.tenants.acme'],
    ] as const) {
      expect(issuesOf(() => parseConfig(raw)).map((i) => i.path), path).toEqual([path]);
    }
    // A valid name that is not active yet (pushed or pulled later) stays accepted.
    expect(parseConfig({ authzen: { default_bundle: 'todo', tenants: { acme: 'acme_policy' } } }).authzen.tenants).toEqual({ acme: 'acme_policy' });
  });

  it('binds a gateway key to tenants only with a list of distinct, non-empty tenant names, and only where keys authenticate', () => {
    const gateway = (tenants: unknown, authentication = 'api_key') => ({
      authzen: { tenants: { acme: 'acme_policy', beta: 'beta_policy' } },
      gateway: { authentication, api_keys: [{ id: 'edge', sha256: 'ab'.repeat(32) }, { id: 'acme-gw', sha256: 'cd'.repeat(32), tenants }] },
    });
    expect(parseConfig(gateway(['acme', 'beta'])).gateway.api_keys[1]!.tenants).toEqual(['acme', 'beta']);
    expect(parseConfig(gateway(undefined)).gateway.api_keys[1]!.tenants).toBeUndefined();
    expect(issuesOf(() => parseConfig(gateway([])))).toEqual([{ path: 'gateway.api_keys.1.tenants', message: expect.stringContaining('at least one tenant') }]);
    expect(issuesOf(() => parseConfig(gateway(['acme', ''])))).toEqual([{ path: 'gateway.api_keys.1.tenants.1', message: expect.any(String) }]);
    expect(issuesOf(() => parseConfig(gateway(['acme', 7]))).map((i) => i.path)).toEqual(['gateway.api_keys.1.tenants.1']);
    expect(issuesOf(() => parseConfig(gateway('acme'))).map((i) => i.path)).toEqual(['gateway.api_keys.1.tenants']);
    expect(issuesOf(() => parseConfig(gateway(['acme', 'beta', 'acme'])))).toEqual([{ path: 'gateway.api_keys.1.tenants.2', message: expect.stringContaining('duplicate tenant "acme"') }]);
    // A tenant no authzen.tenants entry serves could never be answered: a typo.
    expect(issuesOf(() => parseConfig(gateway(['acme', 'acmee'])))).toEqual([{ path: 'gateway.api_keys.1.tenants.1', message: expect.stringContaining('"acmee" is not a tenant of authzen.tenants') }]);
    // authzen.tenants names are trimmed and never blank: a blank one is no tenant either.
    expect(issuesOf(() => parseConfig(gateway(['acme', '  '])))).toEqual([{ path: 'gateway.api_keys.1.tenants.1', message: expect.stringContaining('"  " is not a tenant of authzen.tenants') }]);
    // Keys are not used under another authentication: a binding there would bind nothing.
    expect(issuesOf(() => parseConfig(gateway(['acme'], 'none')))).toEqual([{ path: 'gateway.api_keys.1.tenants', message: expect.stringContaining('api_key') }]);
    // One key listed twice would be whichever entry came last: bound under one id, unbound under the other.
    const twice = { authzen: { tenants: { acme: 'acme_policy' } }, gateway: { authentication: 'api_key', api_keys: [{ id: 'acme-gw', sha256: 'cd'.repeat(32), tenants: ['acme'] }, { id: 'edge', sha256: 'cd'.repeat(32) }] } };
    expect(issuesOf(() => parseConfig(twice))).toEqual([{ path: 'gateway.api_keys.1.sha256', message: expect.stringContaining('the same key as api_keys.0 (acme-gw)') }]);
  });

  it('binds a certificate identity to tenants only under mtls, once, and to tenants authzen.tenants serves', () => {
    const mtls = (client_certificates: unknown, authentication = 'mtls') => ({
      server: { tls: { cert_file: 'server.pem', key_file: 'server.key', ca_file: 'ca.pem' } },
      authzen: { tenants: { acme: 'acme_policy' } },
      gateway: { authentication, client_certificates, ...(authentication === 'api_key' && { api_keys: [{ id: 'edge', sha256: 'ab'.repeat(32) }] }) },
    });
    const envoy = 'spiffe://acme.example/ns/edge/sa/envoy';
    expect(parseConfig(mtls([{ identity: envoy, tenants: ['acme'] }])).gateway.client_certificates).toEqual([{ identity: envoy, tenants: ['acme'] }]);
    expect(issuesOf(() => parseConfig(mtls([{ identity: envoy }]))).map((i) => i.path)).toEqual(['gateway.client_certificates.0.tenants']);
    expect(issuesOf(() => parseConfig(mtls([{ identity: ' ', tenants: ['acme'] }]))).map((i) => i.path)).toEqual(['gateway.client_certificates.0.identity']);
    expect(issuesOf(() => parseConfig(mtls([{ identity: envoy, tenants: ['acmee'] }])))).toEqual([{ path: 'gateway.client_certificates.0.tenants.0', message: expect.stringContaining('"acmee" is not a tenant of authzen.tenants') }]);
    expect(issuesOf(() => parseConfig(mtls([{ identity: envoy, tenants: ['acme'] }, { identity: envoy, tenants: ['acme'] }])))).toEqual([{ path: 'gateway.client_certificates.1.identity', message: expect.stringContaining('more than once') }]);
    expect(issuesOf(() => parseConfig(mtls([{ identity: envoy, tenants: ['acme'] }], 'api_key')))).toEqual([{ path: 'gateway.client_certificates', message: expect.stringContaining('mtls authentication only') }]);
    const unlisted = (setting: string, client_certificates: unknown[] = [], authentication = 'mtls') => ({ ...mtls(client_certificates, authentication), gateway: { ...mtls(client_certificates, authentication).gateway, unlisted_certificates: setting } });
    expect(parseConfig(unlisted('any_tenant', [{ identity: envoy, tenants: ['acme'] }])).gateway.unlisted_certificates).toBe('any_tenant');
    expect(parseConfig(mtls([])).gateway.unlisted_certificates).toBeUndefined();
    expect(issuesOf(() => parseConfig(unlisted('refuse')))).toEqual([{ path: 'gateway.unlisted_certificates', message: expect.stringContaining('would refuse every certificate') }]);
    expect(issuesOf(() => parseConfig(unlisted('any_tenant', [], 'api_key')))).toContainEqual({ path: 'gateway.unlisted_certificates', message: expect.stringContaining('mtls authentication only') });
    expect(issuesOf(() => parseConfig(unlisted('deny')))).toEqual([{ path: 'gateway.unlisted_certificates', message: expect.any(String) }]);
  });

  it('names each gateway key entry whose id an earlier entry has, as for a key hash listed twice', () => {
    // It named the list (gateway.api_keys: duplicate id edge) and only the first id listed twice.
    const keys = [['edge', 'ab'], ['other', 'cd'], ['edge ', 'ef'], ['other', '01'], ['edge', '23']].map(([id, hex]) => ({ id, sha256: hex!.repeat(32) }));
    expect(issuesOf(() => parseConfig({ gateway: { authentication: 'api_key', api_keys: keys } }))).toEqual([
      { path: 'gateway.api_keys.2.id', message: expect.stringContaining('the same id as api_keys.0') },
      { path: 'gateway.api_keys.3.id', message: expect.stringContaining('the same id as api_keys.1') },
      { path: 'gateway.api_keys.4.id', message: expect.stringContaining('the same id as api_keys.0') },
    ]);
  });

  it('refuses the development issuer in production', () => {
    expect(issuesOf(() => parseConfig({ mode: 'production', dev_issuer: { enabled: true } }))[0]!.path).toBe('dev_issuer.enabled');
  });

  it('refuses an admin issuer accepting an audience its decision issuer accepts: a token gateways forward would be an admin token', () => {
    const admin = (audiences: string[], iss = issuer.issuer) => ({ issuers: [issuer], admin: { issuers: [{ ...issuer, issuer: iss, audiences }] } });
    expect(issuesOf(() => parseConfig(admin(['arbiter-admin', 'api'])))).toEqual([
      { path: 'admin.issuers.0.audiences', message: expect.stringContaining('"api" is also accepted from https://idp.example under issuers.0') },
    ]);
    // Admin tokens with an audience of their own, or another issuer's tokens for that audience, are distinct.
    expect(parseConfig(admin(['arbiter-admin'])).admin.issuers).toHaveLength(1);
    expect(parseConfig(admin(['api'], 'https://admins.example')).admin.issuers).toHaveLength(1);
  });

  it('reads YAML and applies ARBITER_* and PORT overrides', () => {
    const file = join(dir, 'arbiter.yaml');
    writeFileSync(file, 'server:\n  port: 9000\nlogging:\n  level: warn\n');
    expect(loadConfig({ file, env: {} }).server.port).toBe(9000);
    expect(loadConfig({ file, env: { PORT: '9100' } }).server.port).toBe(9100);
    const overridden = loadConfig({ file, env: { ARBITER_SERVER__BODY_LIMIT_BYTES: '1024', ARBITER_LOGGING__LEVEL: 'debug' } });
    expect(overridden.server.body_limit_bytes).toBe(1024);
    expect(overridden.logging.level).toBe('debug');
    expect(issuesOf(() => loadConfig({ file, env: { ARBITER_SERVER__PORT: 'eighty' } }))[0]!.path).toBe('server.port');
  });

  it('applies a whole section before the keys inside it, in whatever order the environment lists them', () => {
    const mask = '[{pointer: /input/context/ssn, mode: erase}]';
    for (const env of [
      { ARBITER_DECISION_LOG: '{path: /tmp/x.db}', ARBITER_DECISION_LOG__MASK: mask },
      { ARBITER_DECISION_LOG__MASK: mask, ARBITER_DECISION_LOG: '{path: /tmp/x.db}' },
    ]) {
      const config = loadConfig({ env });
      expect(config.decision_log).toMatchObject({ path: '/tmp/x.db', mask: [{ pointer: '/input/context/ssn', mode: 'erase' }] });
    }
    expect(loadConfig({ env: { PORT: '8080', ARBITER_SERVER: '{host: 127.0.0.2}' } }).server).toMatchObject({ host: '127.0.0.2', port: 8080 });
    // The explicit variable wins over the platform's PORT.
    expect(loadConfig({ env: { ARBITER_SERVER__PORT: '9000', PORT: '8080' } }).server.port).toBe(9000);
  });

  it('overrides top-level keys with ARBITER_<KEY>, leaving the CLI\'s variables alone', () => {
    const config = loadConfig({ env: { ARBITER_MODE: 'production', ARBITER_TOKEN: 'x', ARBITER_URL: 'http://127.0.0.1:1', ARBITER_CONFIG: 'a.yaml' } });
    expect(config.mode).toBe('production');
    const issuers = loadConfig({ env: { ARBITER_ISSUERS: JSON.stringify([issuer]) } }).issuers;
    expect(issuers.map((i) => i.issuer)).toEqual([issuer.issuer]);
    // A top-level key is checked like any other.
    expect(issuesOf(() => loadConfig({ env: { ARBITER_MODE: 'prod' } }))[0]!.path).toBe('mode');
  });

  it('names the variable that set a value the schema refuses, not only the file', () => {
    const file = join(dir, 'arbiter.yaml');
    writeFileSync(file, 'server:\n  port: 9000\ngateway:\n  api_keys: []\n');
    // The file is fine; the environment is not: the operator must be sent to the variable.
    const [port] = issuesOf(() => loadConfig({ file, env: { PORT: '99999' } }));
    expect(port).toMatchObject({ path: 'server.port' });
    expect(port!.message).toMatch(/\(set by PORT\)$/);
    const [key] = issuesOf(() => loadConfig({ file, env: { ARBITER_GATEWAY__API_KEYS: '[{id: edge, sha256: ABC}]' } }));
    expect(key).toMatchObject({ path: 'gateway.api_keys.0.sha256' });
    expect(key!.message).toMatch(/\(set by ARBITER_GATEWAY__API_KEYS\)$/);
    // The deepest variable is the one that set it; a key only the file sets is the file's.
    const both = issuesOf(() => loadConfig({ file, env: { ARBITER_SERVER: '{port: 1, host: ""}', ARBITER_SERVER__PORT: 'eighty' } }));
    expect(both.find((i) => i.path === 'server.port')!.message).toMatch(/\(set by ARBITER_SERVER__PORT\)$/);
    expect(both.find((i) => i.path === 'server.host')!.message).toMatch(/\(set by ARBITER_SERVER\)$/);
    writeFileSync(file, 'server:\n  port: eighty\n');
    expect(issuesOf(() => loadConfig({ file, env: { ARBITER_SERVER__HOST: '127.0.0.1' } }))[0]!.message).not.toMatch(/set by/);
  });

  it('names the variable that tried to set a list item on its own, and says to give the whole list', () => {
    const file = join(dir, 'arbiter.yaml');
    writeFileSync(file, `issuers:\n  - ${JSON.stringify(issuer)}\n`);
    // ARBITER_ISSUERS__0__AUDIENCES turns the file's list into an object {0: {audiences}}: the
    // refusal is at `issuers`, above the variable's path, and named no variable at all.
    const [list] = issuesOf(() => loadConfig({ file, env: { ARBITER_ISSUERS__0__AUDIENCES: '[api2]' } }));
    expect(list).toMatchObject({ path: 'issuers' });
    expect(list!.message).toMatch(/\(set by ARBITER_ISSUERS__0__AUDIENCES: .*give the whole issuers as YAML, ARBITER_ISSUERS=/);
  });

  it('names the variable whose misspelt name made an unknown key', () => {
    const file = join(dir, 'arbiter.yaml');
    writeFileSync(file, 'server:\n  port: 9000\n');
    // The file has no `servr`: the report must send the operator to the variable that made it.
    const [section] = issuesOf(() => loadConfig({ file, env: { ARBITER_SERVR__PORT: '1' } }));
    expect(section).toMatchObject({ path: 'servr', message: 'unknown key (set by ARBITER_SERVR__PORT)' });
    const [key] = issuesOf(() => loadConfig({ file, env: { ARBITER_SERVER__PORTT: '1' } }));
    expect(key).toMatchObject({ path: 'server.portt', message: 'unknown key (set by ARBITER_SERVER__PORTT)' });
    // An unknown key the file holds stays the file's, whatever else the environment sets.
    writeFileSync(file, 'server:\n  prot: 9000\n');
    expect(issuesOf(() => loadConfig({ file, env: { ARBITER_SERVER__PORT: '1' } }))[0]).toEqual({ path: 'server.prot', message: 'unknown key' });
  });

  it('takes an override as the text it is where a string is expected and YAML reads a collection (::, the IPv6 wildcard)', () => {
    // Values are read as YAML so numbers and booleans keep their type; `::` reads as a mapping and
    // `[::1]` as a list, so ARBITER_SERVER__HOST=:: was refused as "expected string, received object".
    const gateway = { ARBITER_GATEWAY__AUTHENTICATION: 'api_key', ARBITER_GATEWAY__API_KEYS: `[{id: edge, sha256: ${'ab'.repeat(32)}}]` };
    expect(loadConfig({ env: { ...gateway, ARBITER_SERVER__HOST: '::' } }).server.host).toBe('::');
    expect(loadConfig({ env: { ...gateway, ARBITER_SERVER__DIAGNOSTIC: '{port: 8282, host: "::"}', ARBITER_SERVER__DIAGNOSTIC__HOST: '::' } }).server.diagnostic?.host).toBe('::');
    // Taken as text, the value meets the key's own rule, which says what is wrong with it.
    const [bracketed] = issuesOf(() => loadConfig({ env: { ARBITER_SERVER__HOST: '[::1]' } }));
    expect(bracketed).toMatchObject({ path: 'server.host', message: expect.stringMatching(/without brackets.*\(set by ARBITER_SERVER__HOST\)$/) });
    // Where a string is not what the key takes, the collection is refused as before.
    expect(issuesOf(() => loadConfig({ env: { ARBITER_SERVER__PORT: '::' } }))[0]).toMatchObject({ path: 'server.port', message: expect.stringMatching(/expected number/) });
  });

  it('names the variable and key of an override that is not valid YAML', () => {
    const [problem] = issuesOf(() => loadConfig({ env: { ARBITER_SERVER__HOST: 'a: b: c' } }));
    expect(problem!.path).toBe('server.host');
    expect(problem!.message).toMatch(/^ARBITER_SERVER__HOST is not valid YAML/);
  });

  it('refuses a tag YAML cannot resolve in an override too, naming the variable, without a warning that prints its value', () => {
    // ARBITER_SERVER__HOST='!ENV HOST' was read as the host "HOST", and Node printed a multi-line
    // YAMLWarning on stderr quoting the value: a secret (an HMAC bundle key) among the process log.
    const emitted = vi.spyOn(process, 'emitWarning');
    try {
      const [problem] = issuesOf(() => loadConfig({ env: { ARBITER_SERVER__HOST: '!ENV HOST' } }));
      expect(problem).toMatchObject({ path: 'server.host', message: expect.stringMatching(/^ARBITER_SERVER__HOST is not valid YAML: .*!ENV/) });
      const secret = 'hmac-s3cret-0123456789abcdef0123456789abcdef';
      const [keyed] = issuesOf(() => loadConfig({ env: { ARBITER_BUNDLES__SIGNING__KEYS: `{default: {key: !secret ${secret}, algorithm: HS256}}` } }));
      expect(keyed).toMatchObject({ path: 'bundles.signing.keys', message: expect.stringMatching(/^ARBITER_BUNDLES__SIGNING__KEYS is not valid YAML/) });
      expect(keyed!.message).not.toContain(secret);
      expect(emitted).not.toHaveBeenCalled();
    } finally {
      emitted.mockRestore();
    }
  });

  it('honours YAML merge keys: an admin issuer repeats a decision issuer with an audience of its own', () => {
    // The YAML 1.2 core schema has no merge keys, so `<<` was read as a key named "<<": an
    // unknown key in the schema's objects (the operator was told `admin.issuers.0.<<` is unknown
    // and learnt nothing), and passed on as an option named "<<" to a transport, silently.
    const file = join(dir, 'merge-keys.yaml');
    writeFileSync(file, [
      'issuers:',
      '  - &idp',
      '    issuer: https://idp.example',
      '    jwks_uri: https://idp.example/jwks',
      '    audiences: [api]',
      '    algorithms: [ES256]',
      'admin:',
      '  issuers:',
      '    - <<: *idp',
      '      audiences: [arbiter-admin]',
      'decision_log:',
      '  transport:',
      '    target: pino/file',
      '    options:',
      '      <<: {destination: /tmp/decisions.ndjson, mkdir: true}',
      '      mkdir: false',
      '',
    ].join('\n'));
    const config = loadConfig({ file, env: {} });
    expect(config.admin.issuers).toEqual([{ ...config.issuers[0], audiences: ['arbiter-admin'] }]);
    expect(config.decision_log.transport!.options).toEqual({ destination: '/tmp/decisions.ndjson', mkdir: false });
    // A merge of something that is not a mapping is still refused, saying so.
    writeFileSync(file, 'server:\n  <<: 8181\n');
    expect(issuesOf(() => loadConfig({ file, env: {} }))[0]!.message).toMatch(/^not valid YAML: Merge sources must be maps/);
  });

  it('refuses ${VAR} in a value, which is not substituted, naming the key and the variable that would set it', () => {
    // OPA substitutes ${VAR} in its configuration file; Arbiter reads the file as written. Such a
    // file was valid: the issuer was the literal "${IDP_ISSUER}" and the key set was fetched from
    // the host "${idp_host}", so every token denied and /readyz stayed 503 with nothing saying why.
    const file = join(dir, 'interpolated.yaml');
    writeFileSync(file, [
      'server:',
      '  host: ${LISTEN_HOST}',
      'issuers:',
      '  - issuer: ${IDP_ISSUER}',
      '    jwks_uri: https://${IDP_HOST:-idp.example}/jwks.json',
      '    audiences: [api]',
      '    algorithms: [ES256]',
      'decision_log:',
      '  transport:',
      '    target: pino/file',
      // The transport module's options are its own business, passed on as written.
      '    options: {destination: "/var/log/${name}.ndjson"}',
      '',
    ].join('\n'));
    const problems = issuesOf(() => loadConfig({ file, env: {} }));
    expect(problems.map((problem) => problem.path)).toEqual(['server.host', 'issuers.0.issuer', 'issuers.0.jwks_uri']);
    expect(problems[0]!.message).toMatch(/\$\{LISTEN_HOST\} is not substituted.*ARBITER_SERVER__HOST/);
    // A list item is set only with its whole list.
    expect(problems[1]!.message).toMatch(/\$\{IDP_ISSUER\} is not substituted.*ARBITER_ISSUERS/);
    // Set from the environment instead, it is accepted.
    expect(loadConfig({ file, env: { ARBITER_SERVER__HOST: '127.0.0.1', ARBITER_ISSUERS: JSON.stringify([issuer]) } }).server.host).toBe('127.0.0.1');
  });

  it('refuses a tag YAML cannot resolve (!ENV, as some loaders substitute variables), naming the line, rather than take the text', () => {
    // `issuer: !ENV IDP_ISSUER` was read as the issuer "IDP_ISSUER", with only a Node.js warning
    // on stderr: the configuration was valid and every token of that issuer denied.
    const file = join(dir, 'env-tag.yaml');
    writeFileSync(file, `issuers:\n  - issuer: !ENV IDP_ISSUER\n    jwks_uri: ${issuer.jwks_uri}\n    audiences: [api]\n    algorithms: [ES256]\n`);
    const emitted = vi.spyOn(process, 'emitWarning');
    try {
      const [problem] = issuesOf(() => loadConfig({ file, env: {} }));
      expect(problem!.message).toMatch(/^not valid YAML \(line 2\): .*!ENV/);
      expect(emitted).not.toHaveBeenCalled();
    } finally {
      emitted.mockRestore();
    }
  });

  it('rejects YAML that is not valid, naming the line', () => {
    const file = join(dir, 'broken.yaml');
    writeFileSync(file, 'server:\n  port: 1\n  port: 2\n');
    expect(issuesOf(() => loadConfig({ file, env: {} }))[0]!.message).toMatch(/line 3/);
  });
});

describe('arbiter config check', () => {
  const cli = join(process.cwd(), 'src/cli/main.ts');

  it('prints every problem with its key path and exits 2', async () => {
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, `issuers:\n  - issuer: ""\n    jwks_uri: https://idp.example/jwks\n    audiences: [api]\n    algorithms: [ES256]\n    max_token_age_s: 0\n`);
    const failure = await run(process.execPath, [cli, 'config', 'check', file, '--json']).catch((error: { code: number; stdout: string }) => error);
    expect(failure).toMatchObject({ code: 2 });
    const report = JSON.parse((failure as { stdout: string }).stdout) as { valid: boolean; problems: { path: string }[] };
    expect(report.valid).toBe(false);
    expect(report.problems.map((p) => p.path)).toEqual(['issuers.0.issuer', 'issuers.0.max_token_age_s']);
  });

  it('says which ARBITER_* variables it does not read because they name a key with a single underscore between levels', async () => {
    // ARBITER_SERVER_PORT reads as a top-level key server_port, which does not exist, and was
    // dropped without a word (as Kubernetes' ARBITER_SERVICE_HOST must be): the server then ran
    // on the file's port, or in development mode for ARBITER_MOD.
    const file = join(dir, 'env-typos.yaml');
    writeFileSync(file, 'server: {port: 8181}\n');
    const env = { ...process.env, ARBITER_SERVER_PORT: '9000', ARBITER_DECISION_LOG_PATH: '/x', ARBITER_MOD: 'production', ARBITER_SERVICE_HOST: '10.0.0.1', ARBITER_PORT: 'tcp://10.0.0.1:8181' };
    const { stdout } = await run(process.execPath, [cli, 'config', 'check', file, '--json'], { env });
    const report = JSON.parse(stdout) as { valid: boolean; notes: { path: string; message: string }[] };
    expect(report.notes).toEqual([
      { path: 'server.port', message: expect.stringMatching(/^ARBITER_SERVER_PORT is not read: .*ARBITER_SERVER__PORT/) },
      { path: 'decision_log.path', message: expect.stringMatching(/^ARBITER_DECISION_LOG_PATH is not read: .*ARBITER_DECISION_LOG__PATH/) },
      { path: 'mode', message: expect.stringMatching(/^ARBITER_MOD is not read: .*ARBITER_MODE/) },
    ]);
    expect(loadConfig({ file, env }).server.port).toBe(8181);
  });

  it('reads the key files a valid schema names, reporting them under their own key', async () => {
    const file = join(dir, 'missing-keys.yaml');
    const missing = join(dir, 'no-such-jwks.json');
    writeFileSync(file, `admin:\n  issuers:\n    - issuer: https://ops.example\n      jwks_file: ${missing}\n      audiences: [arbiter-admin]\n      algorithms: [ES256]\n`);
    const failure = await run(process.execPath, [cli, 'config', 'check', file, '--json']).catch((error: { code: number; stdout: string }) => error);
    expect(failure).toMatchObject({ code: 2 });
    const report = JSON.parse((failure as { stdout: string }).stdout) as { problems: { path: string; message: string }[] };
    expect(report.problems).toEqual([{ path: 'admin.issuers.0.jwks_file', message: expect.stringContaining(missing) }]);
  });

  it('reports every file and state path problem at once, not only the first (its --help says every problem)', async () => {
    // It stopped at the first file it could not read: an operator fixing a configuration for a
    // new host learnt of each missing file only after fixing the one before.
    const file = join(dir, 'many-file-problems.yaml');
    writeFileSync(file, [
      'issuers:',
      '  - {issuer: https://idp.example, jwks_file: /nonexistent/jwks.json, audiences: [api], algorithms: [ES256]}',
      'bundles:',
      '  dir: /nonexistent/bundles',
      '  signing: {keys: {k: {algorithm: RS256, key_file: /nonexistent/k.pem}}}',
      `data: {path: ${join(dir, 'many-problems.db')}, seed: {entitlements: /nonexistent/entitlements.json, approvals: /nonexistent/approvals.json}}`,
      `decision_log: {path: ${STATE_DIR}}`,
      '',
    ].join('\n'));
    const failure = await run(process.execPath, [cli, 'config', 'check', file, '--json']).catch((error: { code: number; stdout: string }) => error);
    expect(failure).toMatchObject({ code: 2 });
    const report = JSON.parse((failure as { stdout: string }).stdout) as { problems: { path: string }[] };
    expect(report.problems.map((p) => p.path)).toEqual([
      'issuers.0.jwks_file',
      'bundles.dir',
      'bundles.signing.keys.k.key_file',
      'decision_log.path',
      'data.seed.entitlements',
      'data.seed.approvals',
    ]);
  });

  it.each([
    ['a bundle signing key of another type than its algorithm', `bundles:\n  signing:\n    keys:\n      default: {algorithm: RS256, key: ${JSON.stringify(EC_PUBLIC_PEM)}}\n`, 'bundles.signing.keys.default.key'],
    ['a bundle signing key that is the private key (every replica could sign bundles)', `bundles:\n  signing:\n    keys:\n      default: {algorithm: ES256, key_file: ${SIGNING_PRIVATE_KEY}}\n`, 'bundles.signing.keys.default.key_file'],
    ['a bundle signing key that is not PEM', 'bundles:\n  signing:\n    keys:\n      default: {algorithm: RS256, key: "not a pem"}\n', 'bundles.signing.keys.default.key'],
    ['an issuer key set holding a private key', `issuers:\n  - {issuer: https://idp.example, jwks_file: ${UNUSABLE_JWKS.private}, audiences: [api], algorithms: [ES256]}\n`, 'issuers.0.jwks_file'],
    ['an admin issuer key set without a usable key', `admin:\n  issuers:\n    - {issuer: https://ops.example, jwks_file: ${UNUSABLE_JWKS['bad-point']}, audiences: [arbiter-admin], algorithms: [ES256]}\n`, 'admin.issuers.0.jwks_file'],
    ['a TLS certificate file that is missing', 'server:\n  tls: {cert_file: /nonexistent/cert.pem, key_file: /nonexistent/key.pem}\n', 'server.tls.cert_file'],
    ['a development issuer key file that is not a key', `dev_issuer: {enabled: true, key_file: ${BROKEN_DEV_KEY}}\n`, 'dev_issuer.key_file'],
    ['a data seed file that is missing (for a store without the document)', `data:\n  path: ${join(dir, 'unseeded.db')}\n  seed: {entitlements: /nonexistent/entitlements.json}\n`, 'data.seed.entitlements'],
    ['an entitlements seed whose tenants are not a list (data.check_entitlements)', `data:\n  path: ${join(dir, 'unseeded-shape.db')}\n  seed: {entitlements: ${OBJECT_TENANTS_SEED}}\n`, 'data.seed.entitlements'],
    // Start-up stored them as a PUT is, within data.max_depth and data.max_size_bytes: config check did not look.
    ['a data seed nested deeper than data.max_depth', `data:\n  path: ${join(dir, 'unseeded-deep.db')}\n  max_depth: 2\n  seed: {approvals: ${DEEP_SEED}}\n`, 'data.seed.approvals'],
    ['data seeds that together grow live data past data.max_size_bytes', `data:\n  path: ${join(dir, 'unseeded-large.db')}\n  max_size_bytes: 150\n  seed: {approvals: ${LARGE_SEED}, mappings: ${LARGE_SEED}}\n`, 'data.seed.mappings'],
    ['a bundle signing exclude pattern with a character class (verification would refuse every signed bundle)', 'bundles:\n  signing:\n    exclude: ["data[0-9].json"]\n', 'bundles.signing.exclude.0'],
    ['a per-bundle exclude pattern with an escape', 'bundles:\n  signing:\n    bundles:\n      authz: {exclude: ["a\\\\*.txt"]}\n', 'bundles.signing.bundles.authz.exclude.0'],
    ['a bundles directory that does not exist (a typo served no bundle at all)', 'bundles:\n  dir: /nonexistent/bundles\n', 'bundles.dir'],
    ['a bundle HMAC key file holding only a line ending', `bundles:\n  signing:\n    keys:\n      default: {algorithm: HS256, key_file: ${NEWLINE_KEY}}\n`, 'bundles.signing.keys.default.key_file'],
    // The development issuer's tokens carry this iss: start-up refused a second issuer for it, config check did not look.
    ['an issuer taking the development issuer\'s iss', `dev_issuer: {enabled: true, key_file: ${join(dir, 'dev-clash.jwk.json')}}\nissuers:\n  - {issuer: "urn:arbiter:dev-issuer", jwks_uri: https://idp.example/jwks, audiences: [api], algorithms: [ES256]}\n`, 'issuers.0.issuer'],
    ['an admin issuer taking the development issuer\'s iss', `dev_issuer: {enabled: true, key_file: ${join(dir, 'dev-admin-clash.jwk.json')}}\nadmin:\n  allow_dev_issuer: true\n  issuers:\n    - {issuer: "urn:arbiter:dev-issuer", jwks_uri: https://idp.example/jwks, audiences: [arbiter-admin], algorithms: [ES256]}\n`, 'admin.issuers.0.issuer'],
    // State paths of the wrong kind: start-up stopped on them, config check called the file valid.
    ['a data.path that is a directory', `data:\n  path: ${STATE_DIR}\n`, 'data.path'],
    ['a data.path inside a file', `data:\n  path: ${join(STATE_FILE, 'data.db')}\n`, 'data.path'],
    ['a decision_log.path that is a directory', `decision_log:\n  path: ${STATE_DIR}\n`, 'decision_log.path'],
    ['a bundles.store that is a file', `bundles:\n  store: ${STATE_FILE}\n`, 'bundles.store'],
    ['a development issuer key_file inside a file', `dev_issuer: {enabled: true, key_file: ${join(STATE_FILE, 'dev.jwk.json')}}\n`, 'dev_issuer.key_file'],
    // Start-up creates the checkpoint key with a new log: config check called such a file valid.
    ['a decision log checkpoint key_path inside a file', `decision_log:\n  checkpoint: {key_path: ${join(STATE_FILE, 'checkpoint.jwk')}}\n`, 'decision_log.checkpoint.key_path'],
    ['a decision log checkpoint key_path that is a directory', `decision_log:\n  checkpoint: {key_path: ${STATE_DIR}}\n`, 'decision_log.checkpoint.key_path'],
    ['a pull source whose token_env names a variable that is not set', 'bundles:\n  sources:\n    - {name: pc, url: https://bundles.example.com/pc.tar.gz, credentials: {bearer: {token_env: ARBITER_TEST_NEVER_SET_PULL_TOKEN}}}\n', 'bundles.sources.0.credentials.bearer.token_env'],
  ])('reports %s under its key, as start-up does', async (_label, yaml, path) => {
    const file = join(dir, `check-${path}.yaml`);
    writeFileSync(file, yaml);
    const failure = await run(process.execPath, [cli, 'config', 'check', file, '--json']).catch((error: { code: number; stdout: string }) => error);
    expect(failure).toMatchObject({ code: 2 });
    expect((JSON.parse((failure as { stdout: string }).stdout) as { problems: { path: string }[] }).problems.map((p) => p.path)).toEqual([path]);
    const { startTestArbiter } = await import('./support/arbiter.ts');
    const { parse } = await import('yaml');
    await expect(startTestArbiter(parse(yaml) as Record<string, unknown>)).rejects.toMatchObject({ issues: [expect.objectContaining({ path })] });
  });

  it('says what a state path of the wrong kind should be: a key file is not called a database file', async () => {
    for (const [yaml, path, should] of [
      [`dev_issuer: {enabled: true, key_file: ${STATE_DIR}}\n`, 'dev_issuer.key_file', 'a key file (created if missing)'],
      [`decision_log:\n  checkpoint: {key_path: ${STATE_DIR}}\n`, 'decision_log.checkpoint.key_path', 'a key file (created if missing)'],
      [`data:\n  path: ${STATE_DIR}\n`, 'data.path', 'a database file (created if missing)'],
    ]) {
      const file = join(dir, `kind-${path}.yaml`);
      writeFileSync(file, yaml!);
      const failure = await run(process.execPath, [cli, 'config', 'check', file, '--json']).catch((error: { code: number; stdout: string }) => error);
      expect(failure, path).toMatchObject({ code: 2 });
      const { problems } = JSON.parse((failure as { stdout: string }).stdout) as { problems: { path: string; message: string }[] };
      expect(problems, path).toEqual([{ path, message: `${STATE_DIR} is a directory: ${path} names ${should}` }]);
    }
  });

  it('names data.path when the data store it must look into for seeds cannot be opened', async () => {
    const file = join(dir, 'store-is-a-directory.yaml');
    writeFileSync(file, `data:\n  path: ${JSON.stringify(dir)}\n  seed: {entitlements: ${JSON.stringify(NEWLINE_KEY)}}\n`);
    const failure = await run(process.execPath, [cli, 'config', 'check', file, '--json']).catch((error: { code: number; stdout: string }) => error);
    expect(failure).toMatchObject({ code: 2 });
    expect((JSON.parse((failure as { stdout: string }).stdout) as { problems: { path: string }[] }).problems.map((p) => p.path)).toEqual(['data.path']);
  });

  it('does not ask for a seed file once its document is stored, as start-up does not', async () => {
    const seed = join(dir, 'seed-entitlements.json');
    writeFileSync(seed, '{"users": {}}');
    const dataPath = join(dir, 'seeded.db');
    const { startTestArbiter } = await import('./support/arbiter.ts');
    await (await startTestArbiter({ data: { path: dataPath, seed: { entitlements: seed } } })).close();
    rmSync(seed);
    await (await startTestArbiter({ data: { path: dataPath, seed: { entitlements: seed } } })).close();
    const file = join(dir, 'seeded.yaml');
    writeFileSync(file, `data:\n  path: ${dataPath}\n  seed: {entitlements: ${seed}}\n`);
    const { stdout } = await run(process.execPath, [cli, 'config', 'check', file]);
    expect(stdout).toContain('valid');
  });

  it('says what is wrong with the command line before the usage (2)', async () => {
    const refused = (args: string[]) =>
      run(process.execPath, [cli, 'config', ...args], { env: { ...process.env, ARBITER_CONFIG: '' } }).then(
        () => ({ code: 0, stderr: '' }),
        (error: { code: number; stderr: string }) => ({ code: error.code, stderr: error.stderr }),
      );
    for (const [args, said] of [
      [['chek', 'config/development.yaml'], 'unknown subcommand "chek"'],
      [[], 'a subcommand is required'],
      [['check'], 'config check takes one file (or $ARBITER_CONFIG)'],
      [['check', 'a.yaml', 'b.yaml'], 'config check takes one file'],
    ] as const) {
      const result = await refused([...args]);
      expect(result.code, args.join(' ')).toBe(2);
      expect(result.stderr.split('\n')[0], args.join(' ')).toContain(said);
      expect(result.stderr, args.join(' ')).toContain('Usage: arbiter config check');
    }
  });

  it('names the file it refuses for the files it names too, not only for its schema', async () => {
    // Schema problems were reported as "<file> is invalid:", those of the files and state paths
    // it names as "configuration is invalid:", which file left to guess when checking several.
    const file = join(dir, 'named-file-problems.yaml');
    writeFileSync(file, 'bundles:\n  dir: /nonexistent/bundles\n');
    const failure = await run(process.execPath, [cli, 'config', 'check', file]).catch((error: { code: number; stderr: string }) => error);
    expect(failure).toMatchObject({ code: 2, stderr: expect.stringMatching(new RegExp(`^${file.replaceAll(/[.*+?^${}()|[\]\\]/g, '\\$&')} is invalid:\n  bundles\.dir: `)) });
  });

  it('notes each bundle the configuration routes decisions to that nothing would serve, as start-up logs it', async () => {
    // `bundles.default: authzz` was valid: the server started, logged an error, and answered every
    // decision 503 (and /readyz 503) until someone pushed a bundle of that name.
    const file = join(dir, 'unserved-bundles.yaml');
    const served = { dir: join(process.cwd(), 'bundles'), store: join(dir, 'unserved-store') };
    writeFileSync(file, `bundles: ${JSON.stringify({ ...served, default: 'authzz' })}\nauthzen: {tenants: {acme: todo, globex: todoo}}\n`);
    const { stdout } = await run(process.execPath, [cli, 'config', 'check', file, '--json']);
    const report = JSON.parse(stdout) as { valid: boolean; notes: { path: string; message: string }[] };
    expect(report.valid).toBe(true);
    expect(report.notes).toEqual([
      { path: 'bundles.default', message: expect.stringMatching(/^authzz is neither stored .*bundles\.dir.*pulled.*503/) },
      { path: 'authzen.tenants.globex', message: expect.stringMatching(/^todoo is neither stored/) },
    ]);
    // Served ones get no note.
    writeFileSync(file, `bundles: ${JSON.stringify({ ...served, default: 'authz' })}\n`);
    expect((JSON.parse((await run(process.execPath, [cli, 'config', 'check', file, '--json'])).stdout) as { notes: unknown[] }).notes).toEqual([]);
  });

  it('exits 0 for a valid file', async () => {
    const { stdout } = await run(process.execPath, [cli, 'config', 'check', 'config/development.yaml']);
    expect(stdout).toContain('valid');
  });

  it('checks $ARBITER_CONFIG without a file, as serve reads it (docker run <image> config check)', async () => {
    const { stdout } = await run(process.execPath, [cli, 'config', 'check'], { env: { ...process.env, ARBITER_CONFIG: 'config/development.yaml' } });
    expect(stdout).toContain('config/development.yaml');
    expect(stdout).toContain('valid');
  });
});

describe('shipped deployment configurations', () => {
  // Only config/development.yaml was checked: a schema change could leave the image's or the
  // Kubernetes example's configuration refusing to start, or writing to the read-only /app,
  // while every other check passed.
  const statePaths = (config: Config) => [config.bundles.store, config.data.path, config.decision_log.path];

  it('the container configuration is valid once given a gateway key, and keeps all state on its volume', () => {
    const config = loadConfig({ file: 'deploy/docker/arbiter.yaml', env: { ARBITER_GATEWAY__API_KEYS: `[{id: edge-gateway, sha256: ${'ab'.repeat(32)}}]` } });
    expect(config.mode).toBe('production');
    expect(config.bundles.dir).toBe('/app/bundles');
    for (const path of statePaths(config)) expect(path).toMatch(/^\/var\/lib\/arbiter\//);
    // `docker stop` sends SIGKILL 10 s after SIGTERM (its default): the drain must end first,
    // stores flushed, rather than be killed half-way (records of answered decisions unwritten).
    expect(config.server.shutdown_timeout_s).toBeLessThan(10);
  });

  it("the README's production example is valid once given a key hash, and keeps all state out of the working directory", () => {
    const readme = readFileSync('README.md', 'utf8');
    const example = /```yaml\n# arbiter\.yaml\n([\s\S]*?)```/.exec(readme)![1]!.replace('<hex sha256 of the key>', 'ab'.repeat(32));
    const config = parseConfig(parseYaml(example));
    expect(config.mode).toBe('production');
    for (const path of statePaths(config)) expect(path).toMatch(/^\/var\/lib\/arbiter\//);
  });

  it("the Kubernetes example's configuration is valid and names only files its pod mounts", () => {
    const documents = parseAllDocuments(readFileSync('deploy/kubernetes/arbiter.yaml', 'utf8')).map((document) => document.toJS() as Record<string, any>);
    const configMap = documents.find((document) => document.kind === 'ConfigMap')!;
    const deployment = documents.find((document) => document.kind === 'Deployment')!;
    const config = parseConfig(parseYaml(configMap.data['arbiter.yaml'] as string));
    const container = deployment.spec.template.spec.containers[0];
    const mountOf = (name: string) => (container.volumeMounts as { name: string; mountPath: string }[]).find((mount) => mount.name === name)!.mountPath;
    for (const path of statePaths(config)) expect(path.startsWith(`${mountOf('state')}/`)).toBe(true);
    for (const key of Object.values(config.bundles.signing.keys)) expect(key.key_file?.startsWith(`${mountOf('signing')}/`)).toBe(true);
    expect(mountOf('config')).toBe((container.env as { name: string; value: string }[]).find((variable) => variable.name === 'ARBITER_CONFIG')!.value);
    expect(container.ports[0].containerPort).toBe(config.server.port);
    // Each pod has its own live data and revocations: the feeds need admin tokens and an address per pod.
    expect(config.admin.issuers.length).toBeGreaterThan(0);
    const perPod = documents.find((document) => document.kind === 'Service' && document.spec.clusterIP === 'None')!;
    expect(perPod.spec.selector).toEqual(deployment.spec.selector.matchLabels);
  });
});

describe('development issuer key', () => {
  it('is generated once, private to the user', async () => {
    const { loadOrCreateDevIssuerKey } = await import('../src/tokens/dev-issuer.ts');
    const file = join(dir, 'dev', 'key.jwk.json');
    const first = await loadOrCreateDevIssuerKey(file);
    const second = await loadOrCreateDevIssuerKey(file);
    expect(second.publicJwk).toEqual(first.publicJwk);
    expect(first.publicJwk).not.toHaveProperty('d');
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('a key file that is not a private key stops start-up naming dev_issuer.key_file', async () => {
    const { loadOrCreateDevIssuerKey } = await import('../src/tokens/dev-issuer.ts');
    for (const [name, text] of [['truncated', '{"kty": "EC", "d": '], ['public', '{"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}']]) {
      const file = join(dir, `dev-${name}.jwk.json`);
      writeFileSync(file, text!);
      await expect(loadOrCreateDevIssuerKey(file), name).rejects.toMatchObject({ issues: [expect.objectContaining({ path: 'dev_issuer.key_file' })] });
    }
  });

  it.each([
    ['issuers', 'issuers.1.issuer', {}],
    ['admin.issuers', 'admin.issuers.1.issuer', { allow_dev_issuer: true }],
  ])('an entry of %s with its iss stops start-up naming that entry, not one past the list', async (_label, path, admin) => {
    const { startTestArbiter } = await import('./support/arbiter.ts');
    const { DEV_ISSUER } = await import('../src/tokens/dev-issuer.ts');
    const issuers = [
      { issuer: 'https://idp.example', jwks_file: join(dir, 'idp.jwks.json'), audiences: ['api'], algorithms: ['ES256'] },
      { issuer: DEV_ISSUER, jwks_file: join(dir, 'idp.jwks.json'), audiences: ['api'], algorithms: ['ES256'] },
    ];
    const { generateKeyPair, exportJWK } = await import('jose');
    writeFileSync(join(dir, 'idp.jwks.json'), JSON.stringify({ keys: [{ ...(await exportJWK((await generateKeyPair('ES256')).publicKey)), alg: 'ES256' }] }));
    const raw = { dev_issuer: { enabled: true, key_file: join(dir, 'dev-duplicate.jwk.json') }, ...(path.startsWith('admin') ? { admin: { issuers, ...admin } } : { issuers }) };
    await expect(startTestArbiter(raw)).rejects.toMatchObject({ issues: [expect.objectContaining({ path, message: expect.stringContaining('development issuer') })] });
  });
});

describe('live data seeds', () => {
  it('a seed the live data refuses (under a bundle root) stops start-up naming data.seed.<document>', async () => {
    const seed = join(dir, 'authz-seed.json');
    writeFileSync(seed, '{"actions": {}}');
    const { startTestArbiter } = await import('./support/arbiter.ts');
    // The simple test bundle owns data.simple: a seed there would be shadowed, so it is refused.
    await expect(startTestArbiter({ data: { seed: { simple: seed } } })).rejects.toMatchObject({
      issues: [expect.objectContaining({ path: 'data.seed.simple' })],
    });
  });
});

describe('arbiter config check: live data seeds under bundle roots', () => {
  const cli = join(process.cwd(), 'src/cli/main.ts');
  interface Report { valid: boolean; problems: { path: string; message: string }[]; notes?: { path: string; message: string }[] }

  /** A bundles directory holding `owner.tar.gz`, whose roots are `owner` plus `extraRoots`. */
  function bundlesDirWith(extraRoots: string[]): { dir: string; archive: Buffer } {
    const work = tempDir('arbiter-seed-roots-');
    const archive = build(writeBundleSource(work, 'owner', { extraRoots }), join(work, 'owner.tar.gz'), `r-${extraRoots.join('-') || 'own'}`);
    return { dir: work, archive };
  }

  async function check(yaml: string): Promise<{ code: number; report: Report; stderr: string }> {
    const file = join(tempDir('arbiter-seed-check-'), 'arbiter.yaml');
    writeFileSync(file, yaml);
    const outcome = await run(process.execPath, [cli, 'config', 'check', file, '--json']).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
      (error: { code: number; stdout: string; stderr: string }) => error,
    );
    return { code: outcome.code, report: JSON.parse(outcome.stdout) as Report, stderr: outcome.stderr };
  }

  const seed = join(dir, 'seed-under-root.json');
  writeFileSync(seed, '{"acme": {}}');

  it('names the seed and the root of a bundle in bundles.dir that owns it (inside or above a root), as start-up refuses it', async () => {
    const bundles = bundlesDirWith(['shared/acme']);
    const data = { path: join(tempDir(), 'data.db'), seed: { shared: seed, owner: seed, free: seed } };
    const { code, report } = await check(`bundles: {dir: ${bundles.dir}, default: owner}\ndata: ${JSON.stringify(data)}\n`);
    expect(code).toBe(2);
    expect(report.problems).toEqual([
      { path: 'data.seed.shared', message: expect.stringMatching(/bundle owner .*root "shared\/acme"/) },
      { path: 'data.seed.owner', message: expect.stringMatching(/bundle owner .*root "owner"/) },
    ]);
    await expect(startTestArbiter({ bundles: { dir: bundles.dir, default: 'owner' }, data })).rejects.toMatchObject({
      issues: [expect.objectContaining({ path: 'data.seed.shared' })],
    });
  });

  it("checks the store's active revision, which start-up serves instead of bundles.dir's", async () => {
    const embedded = bundlesDirWith([]);
    const stored = bundlesDirWith(['shared']);
    const store = join(tempDir(), 'bundles');
    const digest = await new BundleStore(store).writeArchive('owner', stored.archive);
    const activation = { revision: 'r-shared', digest, activated_at: new Date().toISOString(), activated_by: 'test' };
    await new BundleStore(store).writeIndex({ name: 'owner', revisions: [{ revision: 'r-shared', digest, stored_at: activation.activated_at, stored_by: 'test' }], active: activation });
    const data = { path: join(tempDir(), 'data.db'), seed: { shared: seed } };
    const { code, report } = await check(`bundles: {dir: ${embedded.dir}, store: ${store}, default: owner}\ndata: ${JSON.stringify(data)}\n`);
    expect(code).toBe(2);
    expect(report.problems).toEqual([{ path: 'data.seed.shared', message: expect.stringMatching(/bundle owner .*root "shared".*bundles\.store/) }]);
    await expect(startTestArbiter({ bundles: { dir: embedded.dir, store, default: 'owner' }, data })).rejects.toMatchObject({
      issues: [expect.objectContaining({ path: 'data.seed.shared' })],
    });
  });

  it('does not guess the roots of a pulled bundle: valid, with a note saying the seeds were not checked against it', async () => {
    // The image's owner.tar.gz is never served for a pulled name: its roots say nothing.
    const bundles = bundlesDirWith(['shared']);
    const data = { path: join(tempDir(), 'data.db'), seed: { shared: seed } };
    const sources = [{ name: 'owner', url: 'https://bundles.example/owner.tar.gz' }];
    const { code, report, stderr } = await check(`bundles: {dir: ${bundles.dir}, default: owner, sources: ${JSON.stringify(sources)}}\ndata: ${JSON.stringify(data)}\n`);
    expect(code).toBe(0);
    expect(report).toMatchObject({ valid: true, problems: [] });
    expect(report.notes).toEqual([{ path: 'data.seed', message: expect.stringMatching(/bundles\.sources\.0 \(owner\)/) }]);
    expect(stderr).toBe('');
  });
});

describe('configuration reference', () => {
  it("is the README's last section, generated from the schema, with every key (npm run docs:config)", async () => {
    const { readFileSync } = await import('node:fs');
    const { configReference, withReference } = await import('../src/config/reference.ts');
    const readme = readFileSync('README.md', 'utf8');
    expect(withReference(readme)).toBe(readme);
    const reference = configReference();
    for (const key of ['server.port', 'issuers[].jwks_uri', 'gateway.api_keys[].sha256', 'engine.deadline_ms', 'bundles.sources[].url', 'data.path', 'decision_log.durability']) {
      expect(reference).toContain(`\`${key}\``);
    }
    // Every key says what it is for (decision_log.transport.options said nothing).
    const undescribed = reference.split('\n').filter((line) => line.startsWith('| `') && line.endsWith('|  |'));
    expect(undescribed).toEqual([]);
  });

  it('says that the default mode is production under NODE_ENV=production, as in the container image', async () => {
    // The row read `development` only: the image sets NODE_ENV=production, so a configuration
    // without `mode` runs in production mode there (bundle signatures required), not as documented.
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', "const { parseConfig } = await import('./src/config/load.ts'); console.log(parseConfig({}).mode)"], { env: { ...process.env, NODE_ENV: 'production' } });
    expect(stdout.trim()).toBe('production');
    const { configReference } = await import('../src/config/reference.ts');
    expect(configReference().split('\n').find((line) => line.startsWith('| `mode` |'))).toContain('production when NODE_ENV=production');
  });
});
