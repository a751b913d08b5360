import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { request } from 'node:https';
import { connect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.ts';
import { ConfigError } from '../src/errors.ts';
import type { Arbiter } from '../src/server/start.ts';
import { capturingLogger, postJson, startTestArbiter, tempDir } from './support/arbiter.ts';

const body = { action: 'read', resource: { type: 'doc' }, policy: 'echo' };
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');
let arbiter: Arbiter | undefined;

afterEach(async () => {
  await arbiter?.close();
  arbiter = undefined;
});

describe('gateway API keys', () => {
  it('401 without or with a wrong key; the key id is the caller recorded with the decision', async () => {
    const { logger, lines } = capturingLogger();
    arbiter = await startTestArbiter(
      { gateway: { authentication: 'api_key', api_keys: [{ id: 'kong-eu', sha256: sha256('s3cret-gateway-key') }] } },
      { logger },
    );
    const url = `${arbiter.url}/v1/decide`;
    const missing = await postJson(url, body);
    expect(missing).toMatchObject({ status: 401, body: { code: 'gateway_unauthenticated' } });
    expect((await postJson(url, body, { 'x-api-key': 'guess' })).status).toBe(401);
    const ok = await postJson(url, body, { authorization: 'ApiKey s3cret-gateway-key' });
    expect(ok.status).toBe(200);
    const line = lines.find((l) => l.decision_id === ok.body!.decision_id);
    expect(line).toMatchObject({ caller: 'kong-eu', endpoint: '/v1/decide' });
    // Health and readiness stay open for probes.
    expect((await fetch(`${arbiter.url}/healthz`)).status).toBe(200);
  });

  it('takes the key as a bearer token too, as OPA clients and AuthZEN PEPs send a static token (Authorization: Bearer)', async () => {
    arbiter = await startTestArbiter({
      opa_compat: { enabled: true },
      authzen: { default_bundle: 'todo' },
      gateway: { authentication: 'api_key', api_keys: [{ id: 'pep', sha256: sha256('s3cret-gateway-key') }] },
    });
    const evaluation = { subject: { type: 'user', id: 'u' }, action: { name: 'can_read_todos' }, resource: { type: 'todo', id: 't1' } };
    for (const [path, request] of [['/v1/decide', body], ['/access/v1/evaluation', evaluation], ['/v1/data/echo/decision', { input: {} }]] as const) {
      for (const authorization of ['Bearer s3cret-gateway-key', 'bearer s3cret-gateway-key']) {
        expect((await postJson(`${arbiter.url}${path}`, request, { authorization })).status, `${path} ${authorization}`).toBe(200);
      }
      expect((await postJson(`${arbiter.url}${path}`, request, { authorization: 'Bearer guess' })).body, path).toMatchObject({ code: 'gateway_unauthenticated' });
    }
  });

  it('the OpenAPI document says how decision endpoints authenticate the gateway, and it works as said', async () => {
    arbiter = await startTestArbiter({ gateway: { authentication: 'api_key', api_keys: [{ id: 'kong-eu', sha256: sha256('s3cret-gateway-key') }] } });
    const spec = (await (await fetch(`${arbiter.url}/openapi.json`)).json()) as Record<string, any>;
    for (const [path, method] of [['/v1/decide', 'post'], ['/v1/issuance', 'post'], ['/access/v1/evaluation', 'post']] as const) {
      expect(spec.paths[path][method].security, path).toEqual([{ gatewayApiKey: [] }]);
    }
    // Unauthenticated routes stay so; admin routes keep their bearer token.
    expect(spec.paths['/healthz'].get.security).toEqual([]);
    expect(spec.paths['/.well-known/authzen-configuration'].get.security).toEqual([]);
    expect(spec.paths['/v1/revocations'].post.security).toEqual([{ adminBearer: ['arbiter.revocations.write'] }]);
    const scheme = spec.components.securitySchemes.gatewayApiKey;
    expect(scheme).toMatchObject({ type: 'apiKey', in: 'header' });
    expect((await postJson(`${arbiter.url}/v1/decide`, body, { [scheme.name]: 's3cret-gateway-key' })).status).toBe(200);
  });

  it('refuses at start-up the SHA-256 of an empty key, which a header holding only a non-breaking space presented', async () => {
    // What `printf %s "$KEY" | sha256sum` prints when KEY is unset. Accepted, it let in anyone
    // sending `X-API-Key: <0xA0>`: HTTP keeps the byte, and the key was trimmed to nothing.
    const empty = sha256('');
    const started = startTestArbiter({ gateway: { authentication: 'api_key', api_keys: [{ id: 'edge', sha256: sha256('k') }, { id: 'unset', sha256: empty }] } });
    await expect(started).rejects.toMatchObject({ issues: [{ path: 'gateway.api_keys.1.sha256', message: expect.stringContaining('empty') }] });
  });

  it('refuses unauthenticated gateways on a non-loopback host at start-up', async () => {
    await expect(startTestArbiter({ server: { host: '0.0.0.0' } })).rejects.toThrow(/gateway\.authentication/);
  });
});

/** Sample values by series (`name{labels}` exactly as exposed) of a Prometheus text exposition. */
function samplesOf(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const split = line.lastIndexOf(' ');
    samples.set(line.slice(0, split), Number(line.slice(split + 1)));
  }
  return samples;
}

const authFailures = (samples: Map<string, number>, reason: string) => samples.get(`arbiter_gateway_auth_failures_total{reason="${reason}"}`);
const AUTH_FAILED = 'gateway authentication failed';

describe('gateway authentication failures', () => {
  it('are counted by reason and logged at warn with request id, remote address and reason, never the key or its hash', async () => {
    const { logger, lines } = capturingLogger();
    arbiter = await startTestArbiter({ gateway: { authentication: 'api_key', api_keys: [{ id: 'kong-eu', sha256: sha256('s3cret-gateway-key') }] } }, { logger });
    const url = `${arbiter.url}/v1/decide`;
    const before = samplesOf(await (await fetch(`${arbiter.url}/metrics`)).text());
    // Every reason is exposed from the start, so an alert on its increase sees the first failure.
    for (const reason of ['missing_credentials', 'unknown_api_key', 'client_certificate_required', 'client_certificate_untrusted', 'client_certificate_unlisted']) expect(authFailures(before, reason), reason).toBe(0);

    expect((await postJson(url, body, { 'x-request-id': 'probe-missing' })).status).toBe(401);
    expect((await postJson(url, body, { 'x-api-key': 'guessed-key-1', 'x-request-id': 'probe-guess' })).status).toBe(401);
    // Another scheme in Authorization (neither ApiKey nor Bearer) presents no API key.
    expect((await postJson(url, body, { authorization: 'Basic Z3Vlc3NlZDprZXk=' })).status).toBe(401);
    expect((await postJson(url, body, { authorization: 'ApiKey s3cret-gateway-key' })).status).toBe(200);

    const samples = samplesOf(await (await fetch(`${arbiter.url}/metrics`)).text());
    expect(authFailures(samples, 'missing_credentials')).toBe(2);
    expect(authFailures(samples, 'unknown_api_key')).toBe(1);
    expect(authFailures(samples, 'client_certificate_required')).toBe(0);

    const failed = lines.filter((line) => line.msg === AUTH_FAILED);
    expect(failed.find((line) => line.reason === 'missing_credentials')).toMatchObject({ level: 40, request_id: 'probe-missing', remote_address: expect.stringMatching(/127\.0\.0\.1$/), path: '/v1/decide' });
    expect(failed.find((line) => line.reason === 'unknown_api_key')).toMatchObject({ level: 40, request_id: 'probe-guess', remote_address: expect.stringMatching(/127\.0\.0\.1$/) });
    // The second missing_credentials came within the same second: it is counted in a summary line, not logged alone.
    await expect.poll(() => lines.find((line) => line.reason === 'missing_credentials' && line.suppressed !== undefined), { timeout: 3000 }).toMatchObject({ level: 40, suppressed: 1 });
    const logged = JSON.stringify(lines);
    for (const secret of ['guessed-key-1', 'guessed-key-2', sha256('guessed-key-1'), 's3cret-gateway-key', sha256('s3cret-gateway-key')]) expect(logged).not.toContain(secret);
  });

  it('log at most one line per reason per second however fast keys are guessed, and account for every failure', async () => {
    const { logger, lines } = capturingLogger();
    arbiter = await startTestArbiter({ gateway: { authentication: 'api_key', api_keys: [{ id: 'kong-eu', sha256: sha256('s3cret-gateway-key') }] } }, { logger });
    const url = `${arbiter.url}/v1/decide`;
    const guesses = 300;
    for (let sent = 0; sent < guesses; sent += 30) {
      const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => postJson(url, body, { 'x-api-key': `guess-${sent + i}` })));
      expect(answers.every((answer) => answer.status === 401)).toBe(true);
      // Spread over more than a second, so the limit is seen across windows.
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
    const ofReason = () => lines.filter((line) => line.reason === 'unknown_api_key');
    // Each line is one failure logged, or a summary of those that were not.
    const accounted = () => ofReason().reduce((sum, line) => sum + (line.suppressed ?? 1), 0);
    await expect.poll(accounted, { timeout: 3000 }).toBe(guesses);
    const times = ofReason().map((line) => line.time as number);
    expect(times.length).toBeLessThan(guesses / 10);
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!, `line ${i}`).toBeGreaterThanOrEqual(990);
    const samples = samplesOf(await (await fetch(`${arbiter.url}/metrics`)).text());
    expect(authFailures(samples, 'unknown_api_key')).toBe(guesses);
  });
});

describe('gateway tenant binding', () => {
  const ACME_KEY = 'acme-gateway-key';
  const SHARED_KEY = 'shared-gateway-key';
  const evaluation = { subject: { type: 'user', id: 'alice' }, action: { name: 'plain' }, resource: { type: 'doc', id: '1' } };
  const start = (logger?: ReturnType<typeof capturingLogger>['logger']) =>
    startTestArbiter(
      {
        gateway: {
          authentication: 'api_key',
          api_keys: [
            { id: 'acme-gw', sha256: sha256(ACME_KEY), tenants: ['acme'] },
            { id: 'shared-gw', sha256: sha256(SHARED_KEY) },
          ],
        },
        // globex and the default are answered by bundles of their own: a bound key must reach neither.
        authzen: { default_bundle: 'azecho', tenants: { acme: 'azecho', globex: 'azecho' } },
        opa_compat: { enabled: true },
      },
      logger ? { logger } : {},
    );
  const as = (key: string, headers: Record<string, string> = {}) => ({ 'x-api-key': key, ...headers });
  const refused = (res: { status: number; headers: Headers; body?: Record<string, any> }, detail: RegExp) => {
    expect(res.status).toBe(403);
    expect(res.headers.get('content-type')).toBe('application/problem+json');
    expect(res.body).toMatchObject({ type: 'urn:arbiter:problem:tenant_not_permitted', code: 'tenant_not_permitted', status: 403, detail: expect.stringMatching(detail) });
  };

  it('a key with tenants asks AuthZEN decisions in those tenants only: another tenant, or none, is 403 tenant_not_permitted naming the field', async () => {
    arbiter = await start();
    const post = (path: string, payload: unknown, headers: Record<string, string> = {}) => postJson(`${arbiter!.url}${path}`, payload, as(ACME_KEY, headers));

    // Its own tenant, by header or by context.tenant.
    expect((await post('/access/v1/evaluation', evaluation, { 'x-tenant': 'acme' })).body).toMatchObject({ decision: true });
    expect((await post('/access/v1/evaluation', { ...evaluation, context: { tenant: 'acme' } })).body).toMatchObject({ decision: true });

    refused(await post('/access/v1/evaluation', evaluation, { 'x-tenant': 'globex' }), /^X-Tenant: /);
    const byContext = await post('/access/v1/evaluation', { ...evaluation, context: { tenant: 'globex' } });
    refused(byContext, /^\/context\/tenant: /);
    expect(byContext.body!.errors).toEqual([{ pointer: '/context/tenant', detail: expect.any(String) }]);
    // Naming none would be decided by authzen.default_bundle, which answers for no tenant in particular.
    refused(await post('/access/v1/evaluation', evaluation), /no tenant/);
    // A context.tenant that is not a string names no tenant either.
    refused(await post('/access/v1/evaluation', { ...evaluation, context: { tenant: ['acme'] } }), /no tenant/);

    // Batches: the header or the top-level context.tenant; without items, a single evaluation.
    refused(await post('/access/v1/evaluations', { ...evaluation, evaluations: [{}] }, { 'x-tenant': 'globex' }), /^X-Tenant: /);
    refused(await post('/access/v1/evaluations', { ...evaluation, context: { tenant: 'globex' }, evaluations: [{}] }), /^\/context\/tenant: /);
    refused(await post('/access/v1/evaluations', { ...evaluation, evaluations: [{}] }), /no tenant/);
    refused(await post('/access/v1/evaluations', { ...evaluation, context: { tenant: 'globex' } }), /^\/context\/tenant: /);
    // An item of its own tenant's batch that names another tenant is not decided (as before).
    const batch = await post('/access/v1/evaluations', { ...evaluation, evaluations: [{}, { context: { tenant: 'globex' } }] }, { 'x-tenant': 'acme' });
    expect(batch.body).toEqual({ evaluations: [{ decision: true }, { decision: false }] });

    // Searches.
    const search = { subject: evaluation.subject, resource: evaluation.resource };
    expect((await post('/access/v1/search/action', search, { 'x-tenant': 'acme' })).status).toBe(200);
    refused(await post('/access/v1/search/action', search, { 'x-tenant': 'globex' }), /^X-Tenant: /);
    refused(await post('/access/v1/search/action', search), /no tenant/);
  });

  it('the policy is told the tenant the request was routed to (input.context.tenant), whatever the evaluation\'s own context says', async () => {
    arbiter = await start();
    const post = (path: string, payload: unknown, headers: Record<string, string> = {}) => postJson(`${arbiter!.url}${path}`, payload, as(ACME_KEY, headers));
    // azecho echoes its input in its reason: the context a policy holds the resource's tenant to.
    const contextOf = (decision: Record<string, any>) => (JSON.parse(decision.context.reasons[0].reason_admin.en as string) as { context: Record<string, unknown> }).context;
    const single = await post('/access/v1/evaluation', { ...evaluation, context: { purpose: 'audit' } }, { 'x-tenant': 'acme' });
    expect(contextOf(single.body!)).toMatchObject({ tenant: 'acme', purpose: 'audit' });
    // A batch item's own context replaces the default whole, and still gets the batch's tenant.
    const batch = await post('/access/v1/evaluations', { ...evaluation, options: { include_reasons: true }, evaluations: [{ context: { purpose: 'item' } }] }, { 'x-tenant': 'acme' });
    expect(contextOf(batch.body!.evaluations[0])).toMatchObject({ tenant: 'acme', purpose: 'item' });
  });

  it('a key with tenants is refused on the endpoints that name no tenant: /v1/decide, /v1/issuance and the OPA data API', async () => {
    arbiter = await start();
    const decide = { action: 'read', resource: { type: 'doc' } };
    refused(await postJson(`${arbiter.url}/v1/decide`, decide, as(ACME_KEY)), /names no tenant/);
    refused(await postJson(`${arbiter.url}/v1/decide`, { ...decide, context: { tenant: 'acme' } }, as(ACME_KEY, { 'x-tenant': 'acme' })), /names no tenant/);
    refused(await postJson(`${arbiter.url}/v1/issuance`, { client_id: 'c', scopes: ['read'], audience: 'a' }, as(ACME_KEY)), /names no tenant/);
    refused(await postJson(`${arbiter.url}/v1/data/simple/decision`, { input: {} }, as(ACME_KEY)), /names no tenant/);
    // Other methods are still answered as the path is served.
    expect((await fetch(`${arbiter.url}/v1/decide`, { headers: as(ACME_KEY) })).status).toBe(405);
    // The OpenAPI document lists the refusal on every decision endpoint.
    const spec = (await (await fetch(`${arbiter.url}/openapi.json`)).json()) as Record<string, any>;
    for (const path of ['/v1/decide', '/v1/issuance', '/v1/data/{bundle}/{rule}', '/access/v1/evaluation', '/access/v1/evaluations', '/access/v1/search/subject']) {
      expect(spec.paths[path].post.responses['403'].content['application/problem+json'].schema.allOf[1].properties.code.enum, path).toContain('tenant_not_permitted');
    }
  });

  it('a key without tenants keeps asking for any tenant, or none, on every decision endpoint', async () => {
    arbiter = await start();
    const post = (path: string, payload: unknown, headers: Record<string, string> = {}) => postJson(`${arbiter!.url}${path}`, payload, as(SHARED_KEY, headers));
    expect((await post('/access/v1/evaluation', evaluation, { 'x-tenant': 'globex' })).status).toBe(200);
    expect((await post('/access/v1/evaluation', evaluation)).status).toBe(200);
    expect((await post('/v1/decide', { action: 'read', resource: { type: 'doc' } })).status).toBe(200);
    expect((await post('/v1/data/simple/decision', { input: {} })).status).toBe(200);
  });

  it('exposes the refusals and 429s of every configured gateway at 0 from the start, so the first one shows to increase()', async () => {
    // A series that appears with its first count has no earlier sample: increase() over it is 0,
    // and an alert on it misses that first refusal (as the 401s' series are exposed at 0 for).
    arbiter = await start();
    const samples = samplesOf(await (await fetch(`${arbiter.url}/metrics`)).text());
    expect(samples.get('arbiter_gateway_tenant_refusals_total{caller="acme-gw"}')).toBe(0);
    // A key without tenants is never refused for one.
    expect(samples.has('arbiter_gateway_tenant_refusals_total{caller="shared-gw"}')).toBe(false);
    for (const caller of ['acme-gw', 'shared-gw']) {
      for (const reason of ['rate_limited', 'overloaded']) expect(samples.get(`arbiter_gateway_throttled_total{reason="${reason}",caller="${caller}"}`)).toBe(0);
    }
  });

  it('a refusal is no decision: nothing is recorded, it is counted by caller and logged at warn', async () => {
    const { logger, lines } = capturingLogger();
    arbiter = await start(logger);
    const committed = arbiter.decisionLog!.stats.committed;
    refused(await postJson(`${arbiter.url}/access/v1/evaluation`, evaluation, as(ACME_KEY, { 'x-tenant': 'globex', 'x-request-id': 'cross-tenant-1' })), /^X-Tenant: /);
    refused(await postJson(`${arbiter.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } }, as(ACME_KEY)), /names no tenant/);
    expect(arbiter.decisionLog!.stats.committed).toBe(committed);
    expect(lines.some((line) => line.decision_id !== undefined)).toBe(false);
    const samples = samplesOf(await (await fetch(`${arbiter.url}/metrics`)).text());
    expect(samples.get('arbiter_gateway_tenant_refusals_total{caller="acme-gw"}')).toBe(2);
    expect(lines.find((line) => line.msg === 'gateway tenant not permitted')).toMatchObject({
      level: 40,
      reason: 'tenant_not_permitted',
      caller: 'acme-gw',
      tenant: 'globex',
      field: 'X-Tenant',
      request_id: 'cross-tenant-1',
      path: '/access/v1/evaluation',
    });
    expect(JSON.stringify(lines)).not.toContain(ACME_KEY);
  });
});

describe('admission limits', () => {
  it('429 with Retry-After once a caller exceeds its rate', async () => {
    arbiter = await startTestArbiter({ gateway: { rate_limit: { requests_per_second: 1, burst: 2 } } });
    const url = `${arbiter.url}/v1/decide`;
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push(await postJson(url, body));
    expect(statuses.map((s) => s.status)).toEqual([200, 200, 429]);
    expect(statuses[2]!.headers.get('retry-after')).toBe('1');
    expect(statuses[2]!.body).toMatchObject({ code: 'rate_limited' });
  });

  // RFC 9110 delay-seconds is a non-negative integer: a rate so small that the wait reached 1e21 s
  // made Retry-After "1e+21", which a gateway cannot parse. The slowest rate accepted keeps it an integer.
  it('refuses a rate too small to mean anything, naming the key, and at the smallest one answers Retry-After in whole seconds', async () => {
    const refusal = (() => {
      try {
        return parseConfig({ gateway: { rate_limit: { requests_per_second: 1e-21 } } });
      } catch (error) {
        return error;
      }
    })();
    expect(refusal).toBeInstanceOf(ConfigError);
    expect((refusal as ConfigError).issues).toEqual([{ path: 'gateway.rate_limit.requests_per_second', message: expect.stringContaining('at least 0.001') }]);
    arbiter = await startTestArbiter({ gateway: { rate_limit: { requests_per_second: 0.001, burst: 1 } } });
    const url = `${arbiter.url}/v1/decide`;
    expect((await postJson(url, body)).status).toBe(200);
    const refused = await postJson(url, body);
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toMatch(/^(999|1000)$/);
  });

  it('counts and logs each 429, by reason and caller, as the 401s are: a throttled gateway shows on the server side too', async () => {
    const { logger, lines } = capturingLogger();
    const key = { id: 'edge', sha256: sha256('edge-gateway-key') };
    arbiter = await startTestArbiter({ gateway: { authentication: 'api_key', api_keys: [key], rate_limit: { requests_per_second: 0.001, burst: 1 } }, authzen: { default_bundle: 'azecho' } }, { logger });
    const auth = { authorization: 'ApiKey edge-gateway-key' };
    expect((await postJson(`${arbiter.url}/v1/decide`, body, auth)).status).toBe(200);
    const refused = await postJson(`${arbiter.url}/v1/decide`, body, { ...auth, 'x-request-id': 'throttled-1' });
    expect(refused).toMatchObject({ status: 429, body: { code: 'rate_limited' } });
    // On every decision endpoint.
    const evaluation = { subject: { type: 'user', id: 'alice' }, action: { name: 'read' }, resource: { type: 'doc', id: '1' } };
    expect((await postJson(`${arbiter.url}/access/v1/evaluations`, { evaluations: [evaluation, evaluation] }, auth)).status).toBe(429);

    const metrics = await (await fetch(`${arbiter.url}/metrics`)).text();
    expect(metrics).toContain('arbiter_gateway_throttled_total{reason="rate_limited",caller="edge"} 2');
    expect(lines.find((line) => line.msg === 'gateway request throttled')).toMatchObject({
      level: 40,
      reason: 'rate_limited',
      caller: 'edge',
      request_id: 'throttled-1',
      path: '/v1/decide',
    });
    expect(JSON.stringify(lines)).not.toContain('edge-gateway-key');
  });
});

describe('admission limits of a batch', () => {
  it('charges an AuthZEN batch one unit of the caller\'s rate per evaluation, not one per request', async () => {
    arbiter = await startTestArbiter({ gateway: { rate_limit: { requests_per_second: 1, burst: 5 } }, authzen: { default_bundle: 'azecho' } });
    const evaluation = { subject: { type: 'user', id: 'alice' }, action: { name: 'read' }, resource: { type: 'doc', id: '1' } };
    const batch = await postJson(`${arbiter.url}/access/v1/evaluations`, { evaluations: Array.from({ length: 5 }, () => evaluation) });
    expect(batch.status).toBe(200);
    // The five evaluations used the whole burst: the next request waits for the rate to refill it.
    const next = await postJson(`${arbiter.url}/v1/decide`, body);
    expect(next).toMatchObject({ status: 429, body: { code: 'rate_limited' } });
  });

  it('charges an AuthZEN search one unit per candidate it evaluated', async () => {
    arbiter = await startTestArbiter({ gateway: { rate_limit: { requests_per_second: 1, burst: 5 } }, authzen: { default_bundle: 'todo' } });
    // The Todo bundle lists its five users: the search evaluates each of them.
    const search = await postJson(`${arbiter.url}/access/v1/search/subject`, { subject: { type: 'user' }, action: { name: 'can_create_todo' }, resource: { type: 'todo', id: 't1' } });
    expect(search.status).toBe(200);
    const next = await postJson(`${arbiter.url}/v1/decide`, body);
    expect(next).toMatchObject({ status: 429, body: { code: 'rate_limited' } });
  });
});

describe('admission limits of concurrent batches', () => {
  const evaluation = { subject: { type: 'user', id: 'alice' }, action: { name: 'read' }, resource: { type: 'doc', id: '1' } };
  const rateLimited = (answer: Awaited<ReturnType<typeof postJson>>) => {
    expect(answer).toMatchObject({ status: 429, body: { code: 'rate_limited' } });
    expect(Number(answer.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
  };

  it('batches sent at once cannot each run whole on the one unit admission took: once one has run the caller into debt, the others are refused', async () => {
    arbiter = await startTestArbiter({ gateway: { rate_limit: { requests_per_second: 1, burst: 5 } }, authzen: { default_bundle: 'azecho' } });
    const committed = arbiter.decisionLog!.stats.committed;
    // Five requests fit the burst, but each asks 50 decisions: the caller may run into debt once, not five times.
    const answers = await Promise.all(Array.from({ length: 5 }, () => postJson(`${arbiter!.url}/access/v1/evaluations`, { evaluations: Array.from({ length: 50 }, () => evaluation) })));
    const answered = answers.filter((answer) => answer.status === 200);
    expect(answered).toHaveLength(1);
    expect(answered[0]!.body!.evaluations).toHaveLength(50);
    for (const answer of answers.filter((answer) => answer.status !== 200)) rateLimited(answer);
    expect(arbiter.decisionLog!.stats.committed - committed).toBe(50);
  });

  it('a batch that stops short gives back the units of the items it did not evaluate', async () => {
    arbiter = await startTestArbiter({ gateway: { rate_limit: { requests_per_second: 0.001, burst: 5 } }, authzen: { default_bundle: 'azecho' } });
    // deny_on_first_deny stops at the first item: one decision of the five asked for.
    const deny = { ...evaluation, action: { name: 'deny_me' } };
    const batch = await postJson(`${arbiter.url}/access/v1/evaluations`, { evaluations: Array.from({ length: 5 }, () => deny), options: { evaluations_semantic: 'deny_on_first_deny' } });
    expect(batch.body).toEqual({ evaluations: [{ decision: false }] });
    // Four units are left, as after four single requests.
    for (let i = 0; i < 4; i++) expect((await postJson(`${arbiter.url}/v1/decide`, body)).status, `request ${i}`).toBe(200);
    rateLimited(await postJson(`${arbiter.url}/v1/decide`, body));
  });

  it('searches sent at once cannot each evaluate every candidate on the one unit admission took', async () => {
    arbiter = await startTestArbiter({ gateway: { rate_limit: { requests_per_second: 1, burst: 5 } }, authzen: { default_bundle: 'todo' } });
    const committed = arbiter.decisionLog!.stats.committed;
    // The Todo bundle lists five users: each search asks five decisions.
    const search = { subject: { type: 'user' }, action: { name: 'can_create_todo' }, resource: { type: 'todo', id: 't1' } };
    const answers = await Promise.all(Array.from({ length: 5 }, () => postJson(`${arbiter!.url}/access/v1/search/subject`, search)));
    expect(answers.filter((answer) => answer.status === 200)).toHaveLength(1);
    for (const answer of answers.filter((answer) => answer.status !== 200)) rateLimited(answer);
    expect(arbiter.decisionLog!.stats.committed - committed).toBe(5);
  });
});

describe('concurrency ceiling', () => {
  it('429 overloaded while max_concurrent decisions are in flight, and serves again after', async () => {
    arbiter = await startTestArbiter({ gateway: { max_concurrent: 1 }, engine: { deadline_ms: 800, max_memory_mb: 2048 } });
    const url = `${arbiter.url}/v1/decide`;
    // A runaway evaluation holds the only slot until its deadline.
    const slow = postJson(url, { action: 'read', resource: { type: 'doc' }, policy: 'spin', context: { spin: true } });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const refused = await postJson(url, body);
    expect(refused).toMatchObject({ status: 429, body: { code: 'overloaded' } });
    expect(refused.headers.get('retry-after')).toBe('1');
    expect((await slow).body).toMatchObject({ allow: false, reasons: [{ code: 'policy_timeout' }] });
    expect((await postJson(url, body)).status).toBe(200);
  });

  it('a request refused as overloaded costs its caller nothing of its rate: another gateway filling the slots does not spend it', async () => {
    arbiter = await startTestArbiter({
      gateway: {
        authentication: 'api_key',
        api_keys: [{ id: 'busy', sha256: sha256('busy-key') }, { id: 'bystander', sha256: sha256('bystander-key') }],
        // No refill to speak of: what the bystander has left is what the refusals did not take.
        rate_limit: { requests_per_second: 0.001, burst: 2 },
        max_concurrent: 1,
      },
      engine: { deadline_ms: 800, max_memory_mb: 2048 },
    });
    const url = `${arbiter.url}/v1/decide`;
    const slow = postJson(url, { action: 'read', resource: { type: 'doc' }, policy: 'spin', context: { spin: true } }, { 'x-api-key': 'busy-key' });
    await new Promise((resolve) => setTimeout(resolve, 200));
    for (let i = 0; i < 3; i++) expect((await postJson(url, body, { 'x-api-key': 'bystander-key' })).body, `refusal ${i}`).toMatchObject({ code: 'overloaded' });
    await slow;
    // The bystander's burst is whole: two decisions, then its rate.
    expect((await postJson(url, body, { 'x-api-key': 'bystander-key' })).status).toBe(200);
    expect((await postJson(url, body, { 'x-api-key': 'bystander-key' })).status).toBe(200);
    expect((await postJson(url, body, { 'x-api-key': 'bystander-key' })).body).toMatchObject({ code: 'rate_limited' });
  });

  it('max_concurrent_per_caller: a caller at its share is refused while other callers are served', async () => {
    arbiter = await startTestArbiter({
      gateway: {
        authentication: 'api_key',
        api_keys: [{ id: 'busy', sha256: sha256('busy-key') }, { id: 'bystander', sha256: sha256('bystander-key') }],
        max_concurrent: 8,
        max_concurrent_per_caller: 1,
      },
      engine: { deadline_ms: 800, max_memory_mb: 2048 },
    });
    const url = `${arbiter.url}/v1/decide`;
    const slow = postJson(url, { action: 'read', resource: { type: 'doc' }, policy: 'spin', context: { spin: true } }, { 'x-api-key': 'busy-key' });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const refused = await postJson(url, body, { 'x-api-key': 'busy-key' });
    expect(refused).toMatchObject({ status: 429, body: { code: 'overloaded' } });
    expect(refused.body?.detail).toContain('for busy (gateway.max_concurrent_per_caller)');
    expect(refused.headers.get('retry-after')).toBe('1');
    expect((await postJson(url, body, { 'x-api-key': 'bystander-key' })).status).toBe(200);
    await slow;
    // Its slot is given back once its request is answered.
    expect((await postJson(url, body, { 'x-api-key': 'busy-key' })).status).toBe(200);
  });

  it('starts with any server.request_timeout_s the configuration accepts', async () => {
    // 16.1 s is 16100.000000000002 ms in floating point: Node's server wants whole milliseconds.
    arbiter = await startTestArbiter({ server: { request_timeout_s: 16.1 } });
    expect((await postJson(`${arbiter.url}/v1/decide`, body)).status).toBe(200);
  });

  it('a client that stalls while sending its body loses the slot after server.request_timeout_s', async () => {
    arbiter = await startTestArbiter({ gateway: { max_concurrent: 1 }, server: { request_timeout_s: 1 } });
    const url = new URL(`${arbiter.url}/v1/decide`);
    const stalled = connect(Number(url.port), '127.0.0.1');
    await once(stalled, 'connect');
    stalled.write(`POST /v1/decide HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"action":`);
    let answer = '';
    stalled.on('data', (chunk: Buffer) => (answer += chunk.toString()));
    const closed = once(stalled, 'close');
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await postJson(url.href, body)).toMatchObject({ status: 429, body: { code: 'overloaded' } });
    // Within the timeout plus Node's check interval (1 s here), the connection is closed and the slot freed.
    await closed;
    expect(answer).toMatch(/^HTTP\/1.1 408 /);
    expect((await postJson(url.href, body)).status).toBe(200);
  });
});

describe('gateway mTLS', () => {
  /** A test CA in `dir` (ca.pem, ca.key) with the server's certificate; `issue` signs a client's (<name>.pem, <name>.key). */
  function testPki(dir: string) {
    const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-subj', '/CN=test-ca', '-days', '1');
    const issue = (name: string, subject: string, san: string) => {
      writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
      openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject);
      openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '1', '-extfile', `${name}.ext`);
    };
    issue('server', '/CN=127.0.0.1', 'IP:127.0.0.1');
    return { openssl, issue, tls: { cert_file: join(dir, 'server.pem'), key_file: join(dir, 'server.key'), ca_file: join(dir, 'ca.pem') } };
  }

  /** POSTs `payload` to `path` over HTTPS, trusting the test CA, with the client certificate `client` (<client>.pem) if given. */
  const postTls = (dir: string, url: string, payload: unknown, client?: string, headers: Record<string, string> = {}) =>
    new Promise<{ status: number; body: Record<string, any> }>((resolve, reject) => {
      const req = request(
        url,
        {
          method: 'POST',
          ca: readFileSync(join(dir, 'ca.pem')),
          headers: { 'content-type': 'application/json', ...headers },
          ...(client !== undefined && { cert: readFileSync(join(dir, `${client}.pem`)), key: readFileSync(join(dir, `${client}.key`)) }),
        },
        (res) => {
          let text = '';
          res.on('data', (chunk: Buffer) => (text += chunk.toString()));
          res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) as Record<string, any> }));
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify(payload));
    });

  it('binds a listed certificate identity to its tenants (gateway.client_certificates), leaving others unbound with unlisted_certificates: any_tenant', async () => {
    const dir = tempDir();
    const { issue, tls } = testPki(dir);
    issue('acme', '/CN=acme-edge', 'URI:spiffe://acme.example/ns/edge/sa/envoy');
    issue('platform', '/CN=platform-edge', 'URI:spiffe://platform.example/ns/edge/sa/envoy');
    arbiter = await startTestArbiter({
      server: { tls },
      gateway: { authentication: 'mtls', client_certificates: [{ identity: 'spiffe://acme.example/ns/edge/sa/envoy', tenants: ['acme'] }], unlisted_certificates: 'any_tenant' },
      authzen: { default_bundle: 'azecho', tenants: { acme: 'azecho', globex: 'azecho' } },
    });
    const evaluation = { subject: { type: 'user', id: 'alice' }, action: { name: 'plain' }, resource: { type: 'doc', id: '1' } };
    const url = `${arbiter.url}/access/v1/evaluation`;
    expect(await postTls(dir, url, evaluation, 'acme', { 'x-tenant': 'acme' })).toMatchObject({ status: 200, body: { decision: true } });
    const other = await postTls(dir, url, evaluation, 'acme', { 'x-tenant': 'globex' });
    expect(other).toMatchObject({ status: 403, body: { code: 'tenant_not_permitted' } });
    expect(other.body.detail).toContain('gateway.client_certificates[].tenants');
    expect(await postTls(dir, url, evaluation, 'acme')).toMatchObject({ status: 403, body: { code: 'tenant_not_permitted' } });
    expect(await postTls(dir, `${arbiter.url}/v1/decide`, body, 'acme')).toMatchObject({ status: 403, body: { code: 'tenant_not_permitted', detail: expect.stringContaining('names no tenant') } });
    // A certificate that is not listed is bound to nothing, as the setting says.
    expect(await postTls(dir, url, evaluation, 'platform', { 'x-tenant': 'globex' })).toMatchObject({ status: 200, body: { decision: true } });
    expect((await postTls(dir, `${arbiter.url}/v1/decide`, body, 'platform')).status).toBe(200);
  });

  it('refuses by default a certificate the CA signed that client_certificates does not list, once it lists any', async () => {
    // Unlisted used to mean unbound: removing a gateway's entry, or its certificate gaining a
    // URI SAN (which then names it instead of its listed cn:), gave it every tenant.
    const dir = tempDir();
    const { issue, tls } = testPki(dir);
    issue('acme', '/CN=acme-edge', 'URI:spiffe://acme.example/ns/edge/sa/envoy');
    issue('platform', '/CN=platform-edge', 'URI:spiffe://platform.example/ns/edge/sa/envoy');
    issue('renamed', '/CN=legacy-edge', 'URI:spiffe://acme.example/ns/edge/sa/legacy');
    const { logger, lines } = capturingLogger();
    arbiter = await startTestArbiter(
      {
        server: { tls },
        gateway: {
          authentication: 'mtls',
          client_certificates: [
            { identity: 'spiffe://acme.example/ns/edge/sa/envoy', tenants: ['acme'] },
            { identity: 'cn:legacy-edge', tenants: ['acme'] },
          ],
        },
        authzen: { default_bundle: 'azecho', tenants: { acme: 'azecho', globex: 'azecho' } },
      },
      { logger },
    );
    const evaluation = { subject: { type: 'user', id: 'alice' }, action: { name: 'plain' }, resource: { type: 'doc', id: '1' } };
    const url = `${arbiter.url}/access/v1/evaluation`;
    expect(await postTls(dir, url, evaluation, 'acme', { 'x-tenant': 'acme' })).toMatchObject({ status: 200, body: { decision: true } });
    for (const client of ['platform', 'renamed']) {
      const refused = await postTls(dir, url, evaluation, client, { 'x-tenant': 'globex' });
      expect(refused).toMatchObject({ status: 401, body: { code: 'gateway_unauthenticated', detail: expect.stringContaining('gateway.client_certificates') } });
      expect((await postTls(dir, `${arbiter.url}/v1/decide`, body, client)).status).toBe(401);
    }
    expect(lines.find((l) => l.reason === 'client_certificate_unlisted')).toMatchObject({ identity: 'spiffe://platform.example/ns/edge/sa/envoy' });
  });

  it('reads a URI SAN holding a comma as the certificate names it, so its binding applies', async () => {
    // Node writes such a SAN (or one holding a quote or an apostrophe) JSON-quoted,
    // URI:"https://gw.example/edge\u002ceu": taken as it
    // stands, the identity was that quoted text, matched no listed identity, and the gateway
    // went unbound, free to ask for any tenant.
    const dir = tempDir();
    const { issue, tls } = testPki(dir);
    const identity = 'https://gw.example/edge,eu';
    issue('quoted', '/CN=edge-eu', `@alt\n[alt]\nURI.1 = ${identity}`);
    const { logger, lines } = capturingLogger();
    arbiter = await startTestArbiter(
      {
        server: { tls },
        gateway: { authentication: 'mtls', client_certificates: [{ identity, tenants: ['acme'] }] },
        authzen: { default_bundle: 'azecho', tenants: { acme: 'azecho', globex: 'azecho' } },
      },
      { logger },
    );
    const evaluation = { subject: { type: 'user', id: 'alice' }, action: { name: 'plain' }, resource: { type: 'doc', id: '1' } };
    const url = `${arbiter.url}/access/v1/evaluation`;
    expect(await postTls(dir, url, evaluation, 'quoted', { 'x-tenant': 'globex' })).toMatchObject({ status: 403, body: { code: 'tenant_not_permitted' } });
    const allowed = await postTls(dir, url, evaluation, 'quoted', { 'x-tenant': 'acme' });
    expect(allowed).toMatchObject({ status: 200, body: { decision: true } });
    expect(lines.find((l) => l.decision_id === allowed.body.context.decision_id)).toMatchObject({ caller: identity });
  });

  it('refuses a TLS renegotiation: the gateway stays the certificate its connection was authenticated with', async () => {
    // A gateway whose certificate verified could renegotiate (TLS 1.2) presenting another one,
    // even self-signed: Node keeps `authorized` true and getPeerCertificate() returns the new
    // certificate, so the next request on the connection was answered as whatever identity that
    // named (checked with an OpenSSL client: a gateway bound to acme then asked for globex, 200).
    const dir = tempDir();
    const { issue, tls } = testPki(dir);
    issue('acme', '/CN=acme-edge', 'URI:spiffe://acme.example/ns/edge/sa/envoy');
    arbiter = await startTestArbiter({
      server: { tls },
      gateway: { authentication: 'mtls', client_certificates: [{ identity: 'spiffe://acme.example/ns/edge/sa/envoy', tenants: ['acme'] }] },
      authzen: { default_bundle: 'azecho', tenants: { acme: 'azecho', globex: 'azecho' } },
    });
    const socket = tlsConnect({
      port: Number(new URL(arbiter.url).port),
      host: '127.0.0.1',
      ca: readFileSync(join(dir, 'ca.pem')),
      cert: readFileSync(join(dir, 'acme.pem')),
      key: readFileSync(join(dir, 'acme.key')),
      maxVersion: 'TLSv1.2',
    }).on('error', () => undefined);
    await once(socket, 'secureConnect');
    socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    const [first] = (await once(socket, 'data')) as [Buffer];
    expect(first.toString()).toMatch(/^HTTP\/1\.1 200 /);
    const renegotiated = await new Promise<string>((resolve) => {
      socket.once('close', () => resolve('closed'));
      socket.renegotiate({}, (error) => resolve(error ? 'refused' : 'renegotiated'));
    });
    expect(renegotiated).not.toBe('renegotiated');
    if (!socket.destroyed) await once(socket, 'close');
    // Other connections are served as before.
    expect((await postTls(dir, `${arbiter.url}/access/v1/evaluation`, { subject: { type: 'user', id: 'alice' }, action: { name: 'plain' }, resource: { type: 'doc', id: '1' } }, 'acme', { 'x-tenant': 'acme' })).status).toBe(200);
  });

  it('identifies the gateway by its certificate and refuses a connection without one', async () => {
    const dir = tempDir();
    const { openssl, issue, tls } = testPki(dir);
    issue('client', '/CN=envoy', 'URI:spiffe://acme.example/ns/edge/sa/envoy');
    // A certificate the configured CA did not sign.
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'rogue.key', '-out', 'rogue.pem', '-subj', '/CN=rogue', '-days', '1');
    const { logger, lines } = capturingLogger();
    arbiter = await startTestArbiter(
      {
        server: { tls },
        gateway: { authentication: 'mtls' },
      },
      { logger },
    );
    const ca = readFileSync(join(dir, 'ca.pem'));
    const post = (client?: string) => postTls(dir, `${arbiter!.url}/v1/decide`, body, client);
    expect(arbiter.url).toMatch(/^https:/);
    const get = (path: string) =>
      new Promise<string>((resolve, reject) => {
        request(`${arbiter!.url}${path}`, { ca }, (res) => {
          let text = '';
          res.on('data', (chunk: Buffer) => (text += chunk.toString()));
          res.on('end', () => resolve(text));
        }).on('error', reject).end();
      });
    const spec = JSON.parse(await get('/openapi.json')) as Record<string, any>;
    expect(spec.paths['/v1/decide'].post.security).toEqual([{ gatewayMutualTls: [] }]);
    expect(spec.components.securitySchemes.gatewayMutualTls).toMatchObject({ type: 'mutualTLS' });
    expect(await post()).toMatchObject({ status: 401, body: { code: 'gateway_unauthenticated' } });
    expect(await post('rogue')).toMatchObject({ status: 401, body: { code: 'gateway_unauthenticated' } });
    const ok = await post('client');
    expect(ok.status).toBe(200);
    expect(lines.find((l) => l.decision_id === ok.body.decision_id)).toMatchObject({ caller: 'spiffe://acme.example/ns/edge/sa/envoy' });
    // Both refusals are counted and logged, by reason.
    const samples = samplesOf(await get('/metrics'));
    expect([authFailures(samples, 'client_certificate_required'), authFailures(samples, 'client_certificate_untrusted'), authFailures(samples, 'unknown_api_key')]).toEqual([1, 1, 0]);
    const failed = lines.filter((l) => l.msg === AUTH_FAILED);
    expect(failed.map((l) => l.reason)).toEqual(['client_certificate_required', 'client_certificate_untrusted']);
    expect(failed[1]).toMatchObject({ level: 40, remote_address: expect.stringMatching(/127\.0\.0\.1$/), authorization_error: expect.any(String) });
  });
});

describe('HTTPS connections that send nothing', () => {
  /** Starts a server with a self-signed certificate and server.request_timeout_s of 1; its certificate, to trust. */
  async function startHttps(): Promise<Buffer> {
    const dir = tempDir();
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'server.key', '-out', 'server.pem', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1'], { cwd: dir, stdio: 'pipe' });
    arbiter = await startTestArbiter({ server: { request_timeout_s: 1, tls: { cert_file: join(dir, 'server.pem'), key_file: join(dir, 'server.key') } } });
    return readFileSync(join(dir, 'server.pem'));
  }
  /** Milliseconds until the server closes `socket` (Infinity when it has not within 6 s). */
  const closedWithin = (socket: { once(event: 'close', listener: () => void): unknown; destroy(): void }) =>
    new Promise<number>((resolve) => {
      const started = performance.now();
      const giveUp = setTimeout(() => (socket.destroy(), resolve(Infinity)), 6000);
      socket.once('close', () => (clearTimeout(giveUp), resolve(performance.now() - started)));
    });

  it('a connection that finished its handshake and sends no request is closed after server.request_timeout_s', async () => {
    const ca = await startHttps();
    const silent = tlsConnect({ port: Number(new URL(arbiter!.url).port), host: '127.0.0.1', ca }).on('error', () => undefined);
    await once(silent, 'secureConnect');
    expect(await closedWithin(silent)).toBeLessThan(4000);
  });

  it('a connection that never completes its handshake, or speaks plain HTTP to the TLS port, is closed too', async () => {
    await startHttps();
    const port = Number(new URL(arbiter!.url).port);
    // No ClientHello at all: TLS's own handshake timeout is 120 s by default.
    const silent = connect(port, '127.0.0.1').on('error', () => undefined);
    // Plain HTTP to the TLS port (a misconfigured gateway): an HTTP answer cannot be written
    // on a connection whose handshake failed, so the attempt must not keep it open.
    const plain = connect(port, '127.0.0.1', () => plain.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n')).on('error', () => undefined);
    plain.resume();
    const [silentMs, plainMs] = await Promise.all([closedWithin(silent), closedWithin(plain)]);
    expect(silentMs).toBeLessThan(4000);
    expect(plainMs).toBeLessThan(4000);
  });
});
