import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { arbiterCatalogue } from '../src/server/openapi/catalogue.ts';
import type { ApiOperation } from '../src/server/openapi/operation.ts';
import type { Arbiter } from '../src/server/start.ts';
import { mintDevToken, readDevIssuerKey } from '../src/tokens/dev-issuer.ts';
import { startTestArbiter, tempDir } from './support/arbiter.ts';
import { build, writeBundleSource } from './support/bundle-sources.ts';
import { TestIssuer } from './support/issuer.ts';

/**
 * Admin authorization, driven by the route catalogue (the source of /openapi.json): every
 * operation that declares a `scope` is sent, against the real server, every credential that is
 * not the right one (none, each other admin scope, near-misses of its own, a gateway API key or
 * client certificate, a decision token of the same identity provider, a development-issuer token,
 * expired and revoked admin tokens) and must be refused 401/403 before anything else is looked
 * at; then it is sent a token holding that one scope and must be served (a documented 2xx), so the
 * refusals cannot pass because the request was wrong. An operation added to the catalogue
 * without a request below fails the run, as does one added without a scope that is neither
 * public nor gateway-authenticated.
 */

const ADMIN_SCOPES = [
  'arbiter.bundles.read',
  'arbiter.bundles.write',
  'arbiter.data.read',
  'arbiter.data.write',
  'arbiter.decisions.read',
  'arbiter.revocations.read',
  'arbiter.revocations.write',
];
/** Operations without a scope, by operationId: served to anyone, or to an authenticated gateway. */
const PUBLIC = ['getHealth', 'getReadiness', 'getOpenApiDocument', 'getApiDocs', 'getMetrics', 'getAuthzenMetadata'];
const GATEWAY = ['decide', 'decideIssuance', 'authzenEvaluation', 'authzenEvaluations', 'authzenSearchSubject', 'authzenSearchResource', 'authzenSearchAction', 'opaEvaluate'];

const GATEWAY_KEY = 'authorization-test-gateway-key';
const ADMIN_AUDIENCE = 'arbiter-admin';
const DECISION_AUDIENCE = 'https://api.example.com';
const FEATURES = { opaCompat: true, metrics: true, gatewayAuthentication: 'api_key', hostCheck: false } as const;
const scoped = arbiterCatalogue(FEATURES).operations.filter((op) => op.scope !== undefined);

interface Sent {
  method: string;
  /** Path and query, sent as is (no normalization by the client). */
  path: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  json?: Record<string, any>;
}

/** A request that operation must serve given its scope, made against the state set up below. */
type Valid = () => Sent;

let idp: TestIssuer;
let arbiter: Arbiter;
let devKeyFile: string;
let archive: Buffer;
let decisionId: string;
let revocationIds: { get: string; remove: string };
const now = () => Math.floor(Date.now() / 1000);

const json = (body: unknown, contentType = 'application/json') => ({ headers: { 'content-type': contentType }, body: JSON.stringify(body) });

/** Each scoped operation's request, by operationId: a new one must be added here. */
const VALID: Record<string, Valid> = {
  getData: () => ({ method: 'GET', path: '/v1/data/feed/users' }),
  putData: () => ({ method: 'PUT', path: '/v1/data/feed/written', ...json({ a: 1 }) }),
  patchData: () => ({ method: 'PATCH', path: '/v1/data/feed/users', ...json([{ op: 'add', path: '/bob', value: { roles: [] } }], 'application/json-patch+json') }),
  deleteData: () => ({ method: 'DELETE', path: '/v1/data/feed/doomed' }),
  createRevocations: () => ({ method: 'POST', path: '/v1/revocations', ...json({ kind: 'sub', value: 'user:mallory', reason: 'authorization test' }) }),
  listRevocations: () => ({ method: 'GET', path: '/v1/revocations?limit=5' }),
  getRevocation: () => ({ method: 'GET', path: `/v1/revocations/${revocationIds.get}` }),
  deleteRevocation: () => ({ method: 'DELETE', path: `/v1/revocations/${revocationIds.remove}` }),
  listBundles: () => ({ method: 'GET', path: '/v1/bundles' }),
  getBundle: () => ({ method: 'GET', path: '/v1/bundles/contract' }),
  putBundle: () => ({ method: 'PUT', path: '/v1/bundles/pushed', headers: { 'content-type': 'application/gzip' }, body: archive }),
  activateBundle: () => ({ method: 'POST', path: '/v1/bundles/contract/activate', ...json({ revision: 'r1' }) }),
  deleteBundle: () => ({ method: 'DELETE', path: '/v1/bundles/doomed' }),
  queryDecisions: () => ({ method: 'GET', path: '/v1/decisions?limit=5' }),
  exportDecisions: () => ({ method: 'GET', path: '/v1/decisions/export' }),
  verifyDecisionLog: () => ({ method: 'GET', path: '/v1/decisions/verify' }),
  getDecision: () => ({ method: 'GET', path: `/v1/decisions/${decisionId}` }),
  replayDecision: () => ({ method: 'POST', path: `/v1/decisions/${decisionId}/replay`, ...json({}) }),
};

/** The path of `op` with each parameter naming nothing that exists. */
function missingTarget(op: ApiOperation): string {
  return op.path.replace(/\{path\}/, 'nowhere/at/all').replace(/\{id\}/, '01a20000-0000-7000-8000-000000000000').replace(/\{name\}/, 'nonexistent');
}

function send(sent: Sent, base = arbiter.url): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const body = sent.body === undefined ? undefined : Buffer.from(sent.body);
    const request = httpRequest(`${base}/`, {
      method: sent.method,
      path: sent.path,
      headers: { ...sent.headers, ...(body !== undefined && { 'content-length': String(body.length) }) },
    });
    request.on('error', reject);
    request.on('response', (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let parsed: Record<string, any> | undefined;
        try {
          parsed = /json/.test(String(response.headers['content-type'])) && text ? (JSON.parse(text) as Record<string, any>) : undefined;
        } catch {
          parsed = undefined;
        }
        resolve({ status: response.statusCode!, headers: response.headers, ...(parsed !== undefined && { json: parsed }) });
      });
    });
    request.end(body);
  });
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const adminToken = (claims: Record<string, unknown> = {}, options: Parameters<TestIssuer['sign']>[1] = {}) =>
  idp.sign({ sub: 'ops@example', aud: ADMIN_AUDIENCE, ...claims }, options);
const withScopes = (scopes: readonly string[], claims: Record<string, unknown> = {}) => adminToken({ scope: scopes.join(' '), ...claims });

/** A request's answer summarized for a failure message. */
const shown = (answer: Answer) => `${answer.status} ${answer.json?.code ?? ''} ${answer.json?.detail ?? ''}`;

function expectRefused(answer: Answer, status: 401 | 403, label: string, detail?: string): void {
  expect({ status: answer.status, code: answer.json?.code, type: answer.headers['content-type'] }, `${label}: ${shown(answer)}`).toEqual({
    status,
    code: status === 401 ? 'unauthorized' : 'forbidden',
    type: 'application/problem+json',
  });
  expect(String(answer.headers['www-authenticate']), label).toMatch(/^Bearer realm="arbiter-admin"/);
  if (detail !== undefined) expect(answer.json?.detail, label).toBe(detail);
  // Nothing a browser page of another origin could read.
  expect(answer.headers['access-control-allow-origin'], label).toBeUndefined();
}

beforeAll(async () => {
  // One identity provider issues both decision tokens (its API's audience) and admin tokens
  // (an audience of their own): the confused-deputy case the audience separation is for.
  idp = await TestIssuer.create('https://idp.authorization.test.example');
  await idp.serve();
  const dir = tempDir('arbiter-authorization-');
  devKeyFile = join(dir, 'dev-issuer.jwk.json');
  const issuer = { issuer: idp.issuer, jwks_uri: idp.jwksUri, algorithms: ['ES256'] };
  arbiter = await startTestArbiter({
    gateway: { authentication: 'api_key', api_keys: [{ id: 'edge', sha256: createHash('sha256').update(GATEWAY_KEY).digest('hex') }] },
    issuers: [{ ...issuer, audiences: [DECISION_AUDIENCE] }],
    admin: { issuers: [{ ...issuer, audiences: [ADMIN_AUDIENCE] }], allow_dev_issuer: false },
    dev_issuer: { enabled: true, key_file: devKeyFile },
    opa_compat: { enabled: FEATURES.opaCompat },
    metrics: { enabled: FEATURES.metrics },
  });
  const all = await withScopes(ADMIN_SCOPES);
  const setup = async (sent: Sent, status: number) => {
    const answer = await send({ ...sent, headers: { ...sent.headers, ...bearer(all) } });
    expect(answer.status, `${sent.method} ${sent.path}: ${shown(answer)}`).toBe(status);
    return answer;
  };
  await setup({ method: 'PUT', path: '/v1/data/feed/users', ...json({ alice: { roles: ['reader'] } }) }, 200);
  await setup({ method: 'PUT', path: '/v1/data/feed/doomed', ...json({ x: 1 }) }, 200);
  archive = build(writeBundleSource(dir, 'contract'), join(dir, 'contract.tar.gz'), 'r1');
  await setup({ method: 'PUT', path: '/v1/bundles/contract', headers: { 'content-type': 'application/gzip' }, body: archive }, 201);
  const doomed = build(writeBundleSource(dir, 'doomed'), join(dir, 'doomed.tar.gz'), 'd1');
  await setup({ method: 'PUT', path: '/v1/bundles/doomed', headers: { 'content-type': 'application/gzip' }, body: doomed }, 201);
  archive = build(writeBundleSource(dir, 'pushed'), join(dir, 'pushed.tar.gz'), 'p1');
  const created = async (value: string) => (await setup({ method: 'POST', path: '/v1/revocations', ...json({ kind: 'sub', value, reason: 'setup' }) }, 201)).json!.id as string;
  revocationIds = { get: await created('user:kept'), remove: await created('user:removed') };
  // The revocations the revoked admin tokens below meet, one of each kind (and an actor's).
  const revocations = [
    { kind: 'jti', value: 'revoked-admin-jti', iss: idp.issuer },
    { kind: 'sub', value: 'revoked-admin@example', iss: idp.issuer },
    { kind: 'sid', value: 'revoked-admin-session', iss: idp.issuer },
    { kind: 'client_id', value: 'revoked-admin-client', iss: idp.issuer },
    { kind: 'client_id', value: 'revoked-admin-azp' },
    { kind: 'sub', value: 'agent:revoked-admin-bot' },
    { kind: 'issued_before', iss: idp.issuer, before: now() - 300 },
  ].map((entry) => ({ ...entry, reason: 'authorization test' }));
  await setup({ method: 'POST', path: '/v1/revocations', ...json({ revocations }) }, 201);
  const decided = await send({
    method: 'POST',
    path: '/v1/decide',
    headers: { 'x-api-key': GATEWAY_KEY, 'content-type': 'application/json' },
    body: JSON.stringify({ token: await idp.sign({ sub: 'user:alice', aud: DECISION_AUDIENCE }), action: 'read', resource: { type: 'document', id: 'd1' } }),
  });
  expect(decided.status).toBe(200);
  decisionId = decided.json!.decision_id as string;
});

afterAll(async () => {
  await arbiter?.close();
  await idp?.close();
});

describe('the catalogue', () => {
  it('gives every operation a scope, unless it is public or gateway-authenticated, and has a request for each scoped one', () => {
    const unscoped = arbiterCatalogue(FEATURES).operations.filter((op) => op.scope === undefined).map((op) => op.operationId);
    expect(unscoped.sort()).toEqual([...PUBLIC, ...GATEWAY].sort());
    expect(scoped.map((op) => op.operationId).sort()).toEqual(Object.keys(VALID).sort());
    expect([...new Set(scoped.map((op) => op.scope))].sort()).toEqual(ADMIN_SCOPES);
    for (const op of scoped) {
      const sent = VALID[op.operationId]!();
      expect(sent.method, op.operationId).toBe(op.method.toUpperCase());
      const pattern = new RegExp(`^${op.path.replace(/\{path\}/, '.+').replace(/\{[a-z]+\}/g, '[^/]+')}(\\?.*)?$`);
      expect(sent.path, op.operationId).toMatch(pattern);
    }
  });
});

describe.each(scoped.map((op) => [`${op.method.toUpperCase()} ${op.path}`, op] as const))('%s', (_label, op) => {
  const scope = op.scope!;
  const valid = () => VALID[op.operationId]!();
  /** The valid request with other credentials (and the same body). */
  const as = (headers: Record<string, string>, sent: Sent = valid()) => send({ ...sent, headers: { ...sent.headers, ...headers } });

  it('refuses a request without a token, or with a credential that is not a bearer admin token', async () => {
    const absent = await as({});
    expectRefused(absent, 401, 'no credentials');
    expect(String(absent.headers['www-authenticate'])).toContain(`scope="${scope}"`);
    const gateway = [{ 'x-api-key': GATEWAY_KEY }, { authorization: `ApiKey ${GATEWAY_KEY}` }, bearer(GATEWAY_KEY), { authorization: 'Basic b3BzOnB3' }];
    for (const headers of gateway) expectRefused(await as(headers), 401, JSON.stringify(headers));
  });

  it('refuses a token with every admin scope but its own (403, before any 404, 400 or 415)', async () => {
    const others = await withScopes(ADMIN_SCOPES.filter((s) => s !== scope));
    expectRefused(await as(bearer(others)), 403, 'other scopes', `this endpoint requires the scope ${scope}`);
    for (const other of ADMIN_SCOPES.filter((s) => s !== scope)) expectRefused(await as(bearer(await withScopes([other]))), 403, other);
    // What the caller could not learn: whether the target exists, whether its body would do.
    const target = { ...valid(), path: missingTarget(op) };
    expectRefused(await as(bearer(others), target), 403, 'missing target');
    expectRefused(await as({}, target), 401, 'missing target without a token');
    if (valid().body !== undefined) {
      const bodies: { headers: Record<string, string>; body: string }[] = [{ headers: { 'content-type': 'text/plain' }, body: 'not json' }, { headers: {}, body: '{' }];
      for (const body of bodies) {
        expectRefused(await as(bearer(others), { ...valid(), ...body }), 403, `body ${body.body}`);
        expectRefused(await as({}, { ...valid(), ...body }), 401, `body ${body.body} without a token`);
      }
    }
  });

  it('refuses near-misses of its scope: prefixes, extensions, case, wildcards, the wrong claim shape', async () => {
    const [family] = scope.split('.').slice(1);
    const nearMisses = [`${scope}x`, `${scope}.admin`, scope.slice(0, scope.lastIndexOf('.')), `arbiter.${family}`, `arbiter.${family}.*`, 'arbiter.*', '*', scope.toUpperCase(), `x${scope}`, `${scope},${scope}`, `"${scope}"`];
    for (const nearMiss of nearMisses) expectRefused(await as(bearer(await withScopes([nearMiss]))), 403, nearMiss);
    // RFC 9068: `scope` is one space-separated string. Another shape grants nothing.
    expectRefused(await as(bearer(await adminToken({ scope: [scope] }))), 403, 'scope as an array');
    expectRefused(await as(bearer(await adminToken({ scope: { [scope]: true } }))), 403, 'scope as an object');
    expectRefused(await as(bearer(await adminToken({ scopes: scope }))), 403, 'a "scopes" claim');
    expectRefused(await as(bearer(await adminToken({ scp: [`${scope}x`] }))), 403, 'scp near-miss');
  });

  it('refuses tokens that are not admin tokens: decision audience, development issuer, expired, unsigned', async () => {
    expectRefused(await as(bearer(await idp.sign({ sub: 'user:alice', aud: DECISION_AUDIENCE, scope: ADMIN_SCOPES.join(' ') }))), 401, 'decision token', 'token_audience_mismatch');
    const devKey = (await readDevIssuerKey(devKeyFile))!;
    for (const aud of [ADMIN_AUDIENCE, DECISION_AUDIENCE]) {
      const dev = await mintDevToken(devKey, { sub: 'ops@example', aud, scope: ADMIN_SCOPES.join(' ') });
      expectRefused(await as(bearer(dev)), 401, `development issuer token for ${aud}`, 'token_untrusted_issuer');
    }
    const past = now() - 1000;
    expectRefused(await as(bearer(await adminToken({ scope }, { iat: past, exp: past + 300 }))), 401, 'expired', 'token_expired');
    const [header, payload] = (await withScopes([scope])).split('.');
    const unsigned = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'at+jwt' })).toString('base64url')}.${payload}.`;
    expectRefused(await as(bearer(unsigned)), 401, 'alg none');
    expectRefused(await as(bearer(`${header}.${payload}.${'A'.repeat(86)}`)), 401, 'forged signature');
  });

  it('refuses revoked admin tokens: by jti, sub, sid, client_id, azp, an actor, issued_before', async () => {
    const revoked = [
      await withScopes([scope], { jti: 'revoked-admin-jti' }),
      await withScopes([scope], { sub: 'revoked-admin@example' }),
      await withScopes([scope], { sid: 'revoked-admin-session' }),
      await withScopes([scope], { client_id: 'revoked-admin-client' }),
      await withScopes([scope], { client_id: 'deploy-tool', azp: 'revoked-admin-azp' }),
      await withScopes([scope], { act: { sub: 'agent:revoked-admin-bot' } }),
      await adminToken({ scope }, { iat: now() - 600, exp: now() + 600 }),
    ];
    for (const [index, token] of revoked.entries()) expectRefused(await as(bearer(token)), 401, `revoked #${index}`, 'token_revoked');
  });

  it('serves a token holding exactly its scope, as a space-separated scope or an scp claim', async () => {
    const answer = await as(bearer(await withScopes(['openid', scope])));
    const served = Object.keys(op.responses).map(Number).filter((status) => status < 300);
    expect(served, `${op.operationId}: ${shown(answer)}`).toContain(answer.status);
    if (op.method === 'get') {
      for (const claims of [{ scp: [scope] }, { scp: `openid ${scope}` }]) {
        const viaScp = await as(bearer(await adminToken(claims)));
        expect(served, `${JSON.stringify(claims)}: ${shown(viaScp)}`).toContain(viaScp.status);
      }
    }
  });
});

describe('paths and methods that could route around the scope check', () => {
  /** Spellings of the path the router may or may not take for it: never served without the scope. */
  const variants = (path: string): string[] => {
    const [pathname, query] = path.split('?');
    const segments = pathname!.split('/');
    const encoded = segments.map((segment, index) => (index === 2 ? `%${segment.charCodeAt(0).toString(16)}${segment.slice(1)}` : segment)).join('/');
    const upper = segments.map((segment, index) => (index === 2 ? segment.toUpperCase() : segment)).join('/');
    const suffix = query === undefined ? '' : `?${query}`;
    return [
      `${encoded}${suffix}`,
      `/v%31${pathname!.slice(3)}${suffix}`,
      `${upper}${suffix}`,
      `/V1${pathname!.slice(3)}${suffix}`,
      `/${pathname}${suffix}`,
      `${pathname}/${suffix}`,
      `${pathname};x${suffix}`,
      `/x/..${pathname}${suffix}`,
      `/.${pathname}${suffix}`,
      `${pathname}%00${suffix}`,
      `${pathname}${'/a'.repeat(4000)}${suffix}`,
    ];
  };

  it.each(scoped.map((op) => [`${op.method.toUpperCase()} ${op.path}`, op] as const))('%s', async (_label, op) => {
    const valid = VALID[op.operationId]!();
    const others = await withScopes(ADMIN_SCOPES.filter((s) => s !== op.scope));
    for (const path of variants(valid.path)) {
      for (const [who, headers] of [['no token', {}], ['other scopes', bearer(others)]] as const) {
        const answer = await send({ ...valid, path, headers: { ...valid.headers, ...headers } });
        // Refused, or not a route at all; never served, never a server fault.
        expect([401, 403, 404, 405, 400, 414, 431], `${path.slice(0, 80)} with ${who}: ${shown(answer)}`).toContain(answer.status);
        if (answer.status === 401 || answer.status === 403) expectRefused(answer, answer.status, `${path.slice(0, 80)} with ${who}`);
      }
    }
    // HEAD runs the GET route, behind the same check.
    if (op.method === 'get') {
      expect((await send({ method: 'HEAD', path: valid.path })).status).toBe(401);
      expect((await send({ method: 'HEAD', path: valid.path, headers: bearer(others) })).status).toBe(403);
    }
    // A method override header is not read: the request is the method it was sent with. (With a
    // token of no admin scope: `others` may hold the scope of another method at this path.)
    const scopeless = await withScopes(['openid']);
    for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE']) {
      for (const header of ['x-http-method-override', 'x-http-method', 'x-method-override']) {
        const plain = await send({ ...valid, method, headers: { ...valid.headers, ...bearer(scopeless) } });
        const overridden = await send({ ...valid, method, headers: { ...valid.headers, ...bearer(scopeless), [header]: op.method.toUpperCase() } });
        expect(overridden.status, `${method} with ${header}: ${op.method}`).toBe(plain.status);
        expect(overridden.status).not.toBeLessThan(300);
      }
    }
  });
});

describe('what a browser page of another origin can do', () => {
  it('gets no CORS grant on any admin operation: preflights and answers carry no Access-Control-Allow-*', async () => {
    const all = await withScopes(ADMIN_SCOPES);
    for (const op of scoped) {
      const valid = VALID[op.operationId]!();
      const preflight = await send({
        method: 'OPTIONS',
        path: valid.path,
        headers: { origin: 'https://attacker.example', 'access-control-request-method': op.method.toUpperCase(), 'access-control-request-headers': 'authorization, content-type' },
      });
      expect(preflight.status, op.operationId).toBeGreaterThanOrEqual(400);
      const answered = await send({ method: 'GET', path: valid.path, headers: { origin: 'https://attacker.example', ...bearer(all) } });
      for (const answer of [preflight, answered]) {
        expect(Object.keys(answer.headers).filter((name) => name.startsWith('access-control-')), op.operationId).toEqual([]);
      }
    }
  });

  it('refuses a body a form or text/plain could send across origins without a preflight (415), with the right scope', async () => {
    const all = await withScopes(ADMIN_SCOPES);
    for (const op of scoped) {
      const valid = VALID[op.operationId]!();
      if (valid.body === undefined) continue;
      for (const contentType of ['text/plain', 'text/plain; charset=utf-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
        const answer = await send({ ...valid, headers: { 'content-type': contentType, ...bearer(all) } });
        expect({ status: answer.status, code: answer.json?.code }, `${op.operationId} as ${contentType}`).toEqual({ status: 415, code: 'unsupported_media_type' });
      }
    }
  });

  it('changes no state on GET: reading every GET operation leaves the live data, revocations and bundles as they were', async () => {
    const all = await withScopes(ADMIN_SCOPES);
    const state = async () => ({
      data: (await send({ method: 'GET', path: '/v1/data/', headers: bearer(all) })).json,
      revocations: (await send({ method: 'GET', path: '/v1/revocations', headers: bearer(all) })).json,
      bundles: (await send({ method: 'GET', path: '/v1/bundles', headers: bearer(all) })).json,
    });
    const before = await state();
    for (const op of scoped.filter((o) => o.method === 'get')) await send({ ...VALID[op.operationId]!(), headers: bearer(all) });
    expect(await state()).toEqual(before);
  });
});

describe('a gateway client certificate', () => {
  it('is no admin credential: every admin operation refuses it without a token (401) and with the wrong scope (403)', async () => {
    const dir = tempDir('arbiter-authorization-mtls-');
    const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-subj', '/CN=test-ca', '-days', '1');
    for (const [name, subject, san] of [['server', '/CN=127.0.0.1', 'IP:127.0.0.1'], ['gateway', '/CN=envoy', 'URI:spiffe://acme.example/ns/edge/sa/envoy']]) {
      writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
      openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject!);
      openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '1', '-extfile', `${name}.ext`);
    }
    const server = await startTestArbiter({
      server: { tls: { cert_file: join(dir, 'server.pem'), key_file: join(dir, 'server.key'), ca_file: join(dir, 'ca.pem') } },
      gateway: { authentication: 'mtls' },
      admin: { issuers: [{ issuer: idp.issuer, jwks_uri: idp.jwksUri, algorithms: ['ES256'], audiences: [ADMIN_AUDIENCE] }] },
    });
    const tls = { ca: readFileSync(join(dir, 'ca.pem')), cert: readFileSync(join(dir, 'gateway.pem')), key: readFileSync(join(dir, 'gateway.key')) };
    const sendTls = (sent: Sent) =>
      new Promise<Answer>((resolve, reject) => {
        const request = httpsRequest(`${server.url}${sent.path}`, { method: sent.method, headers: sent.headers ?? {}, ...tls }, (response) => {
          let text = '';
          response.on('data', (chunk: Buffer) => (text += chunk.toString()));
          response.on('end', () => resolve({ status: response.statusCode!, headers: response.headers, ...(text && /json/.test(String(response.headers['content-type'])) && { json: JSON.parse(text) as Record<string, any> }) }));
        });
        request.on('error', reject);
        request.end(sent.body === undefined ? undefined : Buffer.from(sent.body));
      });
    try {
      // The certificate itself is accepted: a decision goes through.
      const decided = await sendTls({ method: 'POST', path: '/v1/decide', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ action: 'read', resource: { type: 'document' } }) });
      expect(decided.status).toBe(200);
      for (const op of scoped) {
        const valid = VALID[op.operationId]!();
        const others = await withScopes(ADMIN_SCOPES.filter((s) => s !== op.scope));
        expectRefused(await sendTls(valid), 401, `${op.operationId} with a gateway certificate`);
        expectRefused(await sendTls({ ...valid, headers: { ...valid.headers, ...bearer(others) } }), 403, `${op.operationId} with a gateway certificate and other scopes`);
      }
    } finally {
      await server.close();
    }
  });
});
