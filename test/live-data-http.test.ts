import { pbkdf2 } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Arbiter } from '../src/server/start.ts';
import { adminCall, capturingLogger, postJson, startTestArbiter, tempDir } from './support/arbiter.ts';
import { TestIssuer } from './support/issuer.ts';
import { whileLocked } from './support/sqlite-lock.ts';

let idp: TestIssuer;
let admins: TestIssuer;
let arbiter: Arbiter;
let dataPath: string;
let adminToken: string;

const config = () => ({
  issuers: [{ issuer: idp.issuer, jwks_uri: idp.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'] }],
  admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
  bundles: { default: 'echo' },
  data: { path: dataPath, max_size_bytes: 1024 * 1024 },
});

async function admin(method: string, path: string, body?: unknown, headers: Record<string, string> = {}, token = adminToken) {
  const response = await fetch(`${arbiter.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined && { 'content-type': 'application/json' }), ...headers },
    ...(body !== undefined && { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text ? (JSON.parse(text) as Record<string, any>) : undefined };
}

/**
 * `admin`, with the path sent exactly as written: fetch would resolve dot segments and
 * normalize percent-encoding itself, and those spellings are what the server must handle.
 */
function sent(method: string, path: string, body?: unknown) {
  return new Promise<{ status: number; body: Record<string, any> | undefined }>((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const request = httpRequest(`${arbiter.url}/`, {
      method,
      path,
      headers: { authorization: `Bearer ${adminToken}`, ...(payload !== undefined && { 'content-type': 'application/json' }) },
    });
    request.on('error', reject);
    request.on('response', (response) => {
      let text = '';
      response.on('data', (chunk: Buffer) => (text += chunk.toString()));
      response.on('end', () => resolve({ status: response.statusCode!, body: text ? JSON.parse(text) : undefined }));
    });
    request.end(payload);
  });
}

/**
 * The key-compromise tests: a server of their own trusting one issuer (with `issuerOptions`)
 * whose first key leaks. `removeLeakedKey` rotates it out at the issuer and returns it;
 * `revokeIssuedBefore` posts an issued_before revocation of that issuer (as a batch of one when
 * asked) and answers the status.
 */
async function withLeakingIssuer(
  name: string,
  issuerOptions: Record<string, unknown>,
  use: (leak: {
    leaked: TestIssuer;
    url: string;
    decide: (token: string) => Promise<Record<string, any>>;
    removeLeakedKey: () => Promise<TestIssuer['keys'][number]>;
    revokeIssuedBefore: (revocation: { before: number; reason: string }, options?: { batch?: boolean }) => Promise<number>;
  }) => Promise<void>,
): Promise<void> {
  const leaked = await TestIssuer.create(`https://${name}.test.example`);
  await leaked.serve();
  const server = await startTestArbiter({
    ...config(),
    issuers: [{ issuer: leaked.issuer, jwks_uri: leaked.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'], ...issuerOptions }],
    data: { path: join(tempDir(), 'data.db') },
  });
  try {
    await use({
      leaked,
      url: server.url,
      decide: async (token) => (await postJson(`${server.url}/v1/decide`, { token, action: 'read', resource: { type: 'doc' } })).body!,
      removeLeakedKey: async () => {
        const compromised = leaked.keys[0]!;
        await leaked.addKey('key-2');
        leaked.keys.splice(leaked.keys.indexOf(compromised), 1);
        return compromised;
      },
      revokeIssuedBefore: async (revocation, options = {}) => {
        const entry = { kind: 'issued_before', iss: leaked.issuer, ...revocation };
        const response = await fetch(`${server.url}/v1/revocations`, {
          method: 'POST',
          headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
          body: JSON.stringify(options.batch ? { revocations: [entry] } : entry),
        });
        return response.status;
      },
    });
  } finally {
    await server.close();
    await leaked.close();
  }
}

const decideWith = async (token?: string) =>
  (await postJson(`${arbiter.url}/v1/decide`, { ...(token && { token }), action: 'read', resource: { type: 'doc' } })).body!;

beforeAll(async () => {
  idp = await TestIssuer.create('https://idp.test.example');
  admins = await TestIssuer.create('https://admins.test.example');
  await idp.serve();
  await admins.serve();
  dataPath = join(tempDir(), 'data.db');
  arbiter = await startTestArbiter(config());
  adminToken = await admins.sign({
    sub: 'ops@example',
    aud: 'arbiter-admin',
    scope: 'arbiter.data.read arbiter.data.write arbiter.revocations.read arbiter.revocations.write',
  });
});

afterAll(async () => {
  await arbiter?.close();
  await idp?.close();
  await admins?.close();
});

describe('admin authorization', () => {
  it('401 without a token or with a token from a non-admin issuer, 403 without the scope', async () => {
    const none = await fetch(`${arbiter.url}/v1/data/pair`);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toContain('scope="arbiter.data.read"');
    const foreign = await admin('GET', '/v1/data/pair', undefined, {}, await idp.sign({ scope: 'arbiter.data.read' }));
    expect(foreign).toMatchObject({ status: 401, body: { code: 'unauthorized', detail: 'token_untrusted_issuer' } });
    const readOnly = await admins.sign({ aud: 'arbiter-admin', scope: 'arbiter.data.read' });
    expect(await admin('PUT', '/v1/data/pair', { a: 1 }, {}, readOnly)).toMatchObject({ status: 403, body: { code: 'forbidden' } });
  });

  it('logs the delegation chain of an admin token: an agent acting for an operator is named as the one who acted', async () => {
    const { logger, lines } = capturingLogger();
    const server = await startTestArbiter({ ...config(), data: { path: join(tempDir(), 'data.db') } }, { logger });
    try {
      const delegated = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.data.read', act: { sub: 'agent:feed', client_id: 'feed-bot' } });
      const res = await fetch(`${server.url}/v1/data/`, { headers: { authorization: `Bearer ${delegated}`, 'x-request-id': 'ops-read-1' } });
      expect(res.status).toBe(200);
      const line = lines.find((l) => l.msg === 'admin request');
      expect(line?.admin).toEqual({ iss: admins.issuer, sub: 'ops@example', act: [{ sub: 'agent:feed', client_id: 'feed-bot' }] });
      // The X-Request-ID the caller sent (and was answered) finds the line.
      expect(line?.request_id).toBe('ops-read-1');
      const forbidden = await fetch(`${server.url}/v1/revocations`, { headers: { authorization: `Bearer ${delegated}`, 'x-request-id': 'ops-list-1' } });
      expect(forbidden.status).toBe(403);
      expect(lines.find((l) => l.msg === 'admin request forbidden')).toMatchObject({ admin: { act: [{ sub: 'agent:feed' }] }, request_id: 'ops-list-1' });
      await fetch(`${server.url}/v1/revocations`, { headers: { authorization: 'Bearer not.a.token', 'x-request-id': 'ops-bad-1' } });
      expect(lines.find((l) => l.msg === 'admin token rejected')).toMatchObject({ request_id: 'ops-bad-1' });
    } finally {
      await server.close();
    }
  });

  it('503 admin_keys_unavailable, not 401, while the admin issuer\'s keys cannot be fetched: the token is not known to be bad', async () => {
    const troubled = await TestIssuer.create('https://troubled-admins.test.example');
    await troubled.serve();
    troubled.jwksFailure = { status: 503, body: '{"error":"maintenance"}' };
    const server = await startTestArbiter({ admin: { issuers: [{ issuer: troubled.issuer, jwks_uri: troubled.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] } });
    try {
      const token = await troubled.sign({ aud: 'arbiter-admin', scope: 'arbiter.data.read' });
      const res = await fetch(`${server.url}/v1/data/pair`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.status).toBe(503);
      expect(res.headers.get('content-type')).toBe('application/problem+json');
      expect(res.headers.get('www-authenticate')).toBeNull();
      expect(res.headers.get('retry-after')).toMatch(/^[1-9][0-9]*$/);
      expect(await res.json()).toMatchObject({ code: 'admin_keys_unavailable', detail: expect.stringContaining(troubled.issuer) });
    } finally {
      await server.close();
      await troubled.close();
    }
  });
});

describe('live data', () => {
  it('writes, reads, patches and deletes, each visible to the next decision', async () => {
    const put = await admin('PUT', '/v1/data/pair', { a: 1, b: 1 }, { 'arbiter-data-source': 'test-feed', 'arbiter-data-max-age': '3600' });
    expect(put.status).toBe(200);
    let decision = await decideWith();
    expect(decision.reasons[0].pair).toEqual({ a: 1, b: 1 });
    expect(decision.data_version).toBe(put.body!.version);
    expect(decision.reasons[0].data_status.pair).toMatchObject({ source: 'test-feed', max_age_s: 3600, stale: false });

    const patched = await admin('PATCH', '/v1/data/pair', [{ op: 'replace', path: '/a', value: 2 }, { op: 'add', path: '/c', value: [1] }], {
      'content-type': 'application/json-patch+json',
    });
    expect(patched.status).toBe(200);
    expect((await admin('GET', '/v1/data/pair')).body).toMatchObject({ result: { a: 2, b: 1, c: [1] } });
    decision = await decideWith();
    expect(decision.reasons[0].pair).toEqual({ a: 2, b: 1, c: [1] });

    expect((await admin('DELETE', '/v1/data/pair/c')).status).toBe(204);
    expect((await admin('GET', '/v1/data/pair/c')).status).toBe(404);
  });

  it('/readyz is 503 while live data is too large to hand to the evaluation workers: every decision here denies', async () => {
    const server = await startTestArbiter({ ...config(), server: { diagnostic: { port: 0 } }, data: { path: join(tempDir(), 'data.db') } });
    const put = (body: unknown) =>
      fetch(`${server.url}/v1/data/huge`, { method: 'PUT', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    try {
      expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
      // Past V8's longest string (about 512 MiB) in truth; simulated, as the pool's own test does:
      // only the serialization of the whole live data (the root holding "huge") throws.
      const stringify = JSON.stringify;
      const spy = vi.spyOn(JSON, 'stringify').mockImplementation((value: unknown, ...rest: any[]) => {
        if (value !== null && typeof value === 'object' && Object.hasOwn(value, 'huge') && (value as { huge: { big?: unknown } }).huge?.big === true) {
          throw new RangeError('Invalid string length');
        }
        return stringify(value, ...rest);
      });
      try {
        expect((await put({ big: true })).status).toBe(200);
      } finally {
        spy.mockRestore();
      }
      const decision = (await postJson(`${server.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } })).body!;
      expect(decision).toMatchObject({ allow: false, reasons: [{ code: 'policy_resource_limit' }] });
      // On the main listener and the diagnostic one alike.
      for (const url of [server.url, server.diagnosticUrl!]) {
        const ready = await fetch(`${url}/readyz`);
        expect(ready.status, url).toBe(503);
        const body = (await ready.json()) as { problems: string[] };
        expect(body.problems.join('\n')).toMatch(/policy_resource_limit.*live data version \d+ cannot be given to the evaluation workers/);
      }
      // A version that fits makes the replica ready again.
      expect((await put({ big: false })).status).toBe(200);
      for (const url of [server.url, server.diagnosticUrl!]) expect((await fetch(`${url}/readyz`)).status, url).toBe(200);
    } finally {
      await server.close();
    }
  });

  it('/readyz is 503 naming the default bundle while its instances cannot take the live data within engine.max_memory_mb', async () => {
    const server = await startTestArbiter({ ...config(), engine: { workers: 2, max_memory_mb: 4 }, server: { diagnostic: { port: 0 } }, data: { path: join(tempDir(), 'data.db') } });
    const put = (body: unknown) =>
      fetch(`${server.url}/v1/data/big`, { method: 'PUT', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const ready = async (url = server.url) => {
      const response = await fetch(`${url}/readyz`);
      return { status: response.status, problems: ((await response.json()) as { problems: string[] }).problems.join('\n') };
    };
    // About 700 kB of JSON: parsed, more than the 4 MiB an instance may use.
    const big = (tag: string) => Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`k${i}`, { v: tag.repeat(20) }]));
    const echo = server.bundles.get('echo')!;
    try {
      expect((await ready()).status).toBe(200);
      expect((await put(big('x'))).status).toBe(200);
      // The workers holding the bundle report it: on both listeners, naming bundle, revision and reason.
      for (const url of [server.url, server.diagnosticUrl!]) {
        await expect.poll(() => ready(url), { timeout: 15_000 }).toMatchObject({ status: 503 });
        expect((await ready(url)).problems).toMatch(new RegExp(`default bundle echo \\(revision ${echo.revision}\\).*policy_resource_limit.*does not fit within the policy memory limit`));
      }
      const decision = (await postJson(`${server.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } })).body!;
      expect(decision).toMatchObject({ allow: false, reasons: [{ code: 'policy_resource_limit' }] });
      // The next version is tried at once, not at the next decision (a replica out of rotation gets none): still too big.
      expect((await put(big('y'))).status).toBe(200);
      const version = server.liveData.snapshot().version;
      await expect.poll(async () => (await ready()).problems, { timeout: 15_000 }).toContain(`live data version ${version} does not fit`);
      // A version that fits makes the replica ready again, with no decision needed to find out.
      expect((await put({ small: true })).status).toBe(200);
      await expect.poll(() => ready(), { timeout: 15_000 }).toMatchObject({ status: 200 });
      expect((await postJson(`${server.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } })).body).toMatchObject({ allow: true });
    } finally {
      await server.close();
    }
  });

  it('rejects bad updates with the reason and changes nothing', async () => {
    await admin('PUT', '/v1/data/pair', { a: 1, b: 1 });
    const before = (await admin('GET', '/v1/data/pair')).body!;
    const failedTest = await admin('PATCH', '/v1/data/pair', [{ op: 'replace', path: '/a', value: 9 }, { op: 'test', path: '/b', value: 2 }]);
    expect(failedTest).toMatchObject({ status: 409, body: { code: 'json_patch_test_failed' } });
    const badOp = await admin('PATCH', '/v1/data/pair', [{ op: 'frobnicate', path: '/a' }]);
    expect(badOp).toMatchObject({ status: 400, body: { code: 'invalid_request' } });
    const missing = await admin('PATCH', '/v1/data/pair', [{ op: 'remove', path: '/nope' }]);
    expect(missing).toMatchObject({ status: 409, body: { code: 'json_patch_path_not_found' } });
    const notJson = await admin('PUT', '/v1/data/pair', '{"a":');
    expect(notJson).toMatchObject({ status: 400, body: { code: 'malformed_json' } });
    for (const maxAge of ['soon', '1e3', '0x10', '1.5', '-1']) {
      const badMeta = await admin('PUT', '/v1/data/pair', { a: 5 }, { 'arbiter-data-max-age': maxAge });
      expect(badMeta, maxAge).toMatchObject({ status: 400, body: { code: 'data_meta_invalid' } });
    }
    const deep = await admin('PUT', '/v1/data/deep', JSON.parse('{"x":'.repeat(40) + '1' + '}'.repeat(40)));
    expect(deep).toMatchObject({ status: 400, body: { code: 'data_too_deep' } });
    // Deeper than request bodies may nest: still the store's own limit that answers.
    const deeper = await admin('PUT', '/v1/data/deep', '{"x":'.repeat(100) + '1' + '}'.repeat(100));
    expect(deeper).toMatchObject({ status: 400, body: { code: 'data_too_deep' } });
    // A lone surrogate would stop the policy parsing live data: refused, naming where.
    const lone = await admin('PUT', '/v1/data/pair', '{"a":{"b":"\\udfff"}}');
    expect(lone).toMatchObject({ status: 400, body: { code: 'invalid_request', errors: [{ pointer: '/a/b' }] } });
    expect((await admin('GET', '/v1/data/pair')).body).toEqual(before);
  });

  it('answers a PATCH in another JSON media type 415 naming the ones it takes, rather than a schema error', async () => {
    await admin('PUT', '/v1/data/pair', { a: 1, b: 1 });
    const merge = await admin('PATCH', '/v1/data/pair', { a: 2 }, { 'content-type': 'application/merge-patch+json' });
    expect(merge).toMatchObject({ status: 415, body: { code: 'unsupported_media_type' } });
    expect(merge.body!.detail).toContain('application/json-patch+json');
    expect(merge.body!.detail).toContain('application/merge-patch+json');
    expect((await admin('GET', '/v1/data/pair')).body).toMatchObject({ result: { a: 1, b: 1 } });
    // Both documented types still go through.
    for (const type of ['application/json', 'application/json-patch+json; charset=utf-8']) {
      expect((await admin('PATCH', '/v1/data/pair', [{ op: 'replace', path: '/a', value: 1 }], { 'content-type': type })).status, type).toBe(200);
    }
  });

  it('names only the Arbiter-Data-* header that is wrong', async () => {
    const badAge = await admin('PUT', '/v1/data/pair', { a: 1 }, { 'arbiter-data-source': 'feed', 'arbiter-data-max-age': 'soon' });
    expect(badAge).toMatchObject({ status: 400, body: { code: 'data_meta_invalid' } });
    expect(badAge.body!.detail).toContain('Arbiter-Data-Max-Age');
    expect(badAge.body!.detail).not.toContain('Arbiter-Data-Source');
    const badSource = await admin('PUT', '/v1/data/pair', { a: 1 }, { 'arbiter-data-source': 'x'.repeat(300), 'arbiter-data-max-age': '60' });
    expect(badSource).toMatchObject({ status: 400, body: { code: 'data_meta_invalid' } });
    expect(badSource.body!.detail).toContain('Arbiter-Data-Source');
    expect(badSource.body!.detail).not.toContain('Arbiter-Data-Max-Age');
  });

  it('fails a JSON Patch test whose value live data could not hold (too deep, an empty key) 409, as any unequal value', async () => {
    // RFC 6902 4.6: test compares. Such a value is JSON all the same; it only equals nothing stored.
    await admin('PUT', '/v1/data/pair', { a: 1, b: 1 });
    const deep = JSON.parse('{"x":'.repeat(40) + '1' + '}'.repeat(40));
    for (const value of [deep, { '': 1 }]) {
      const tested = await admin('PATCH', '/v1/data/pair', [{ op: 'test', path: '/a', value }]);
      expect(tested, JSON.stringify(value).slice(0, 40)).toMatchObject({ status: 409, body: { code: 'json_patch_test_failed', errors: [{ pointer: '/0/value' }] } });
    }
    expect((await admin('PATCH', '/v1/data/pair', [{ op: 'test', path: '/a', value: 1 }, { op: 'replace', path: '/b', value: 2 }])).status).toBe(200);
  });

  it('answers a patch of a path holding nothing 404 data_not_found, as its OpenAPI operation says', async () => {
    const missing = await admin('PATCH', '/v1/data/never-written', [{ op: 'add', path: '/a', value: 1 }]);
    expect(missing).toMatchObject({ status: 404, body: { code: 'data_not_found' } });
    const spec = (await (await fetch(`${arbiter.url}/openapi.json`)).json()) as Record<string, any>;
    const documented = spec.paths['/v1/data/{path}'].patch.responses['404']?.content['application/problem+json'].schema.allOf[1].properties.code.enum;
    expect(documented).toContain('data_not_found');
  });

  it('honours If-Match and If-None-Match on writes against the live data version, so a read-modify-write loses no update', async () => {
    await admin('PUT', '/v1/data/cas', { n: 1 });
    const read = await admin('GET', '/v1/data/cas');
    const etag = `"${read.body!.version}"`;
    expect(read.headers.get('etag')).toBe(etag);
    // Another writer lands between this feed's read and its write.
    const other = await admin('PATCH', '/v1/data/cas', [{ op: 'add', path: '/other', value: true }]);
    expect(other.headers.get('etag')).toBe(`"${other.body!.version}"`);
    for (const [method, body] of [['PUT', { n: 2 }], ['PATCH', [{ op: 'replace', path: '/n', value: 2 }]], ['DELETE', undefined]] as const) {
      const stale = await admin(method, '/v1/data/cas', body, { 'if-match': etag });
      expect(stale, method).toMatchObject({ status: 412, body: { code: 'precondition_failed' } });
      expect(stale.headers.get('content-type'), method).toBe('application/problem+json');
    }
    expect((await admin('GET', '/v1/data/cas')).body!.result).toEqual({ n: 1, other: true });
    const current = `"${other.body!.version}"`;
    const fresh = await admin('PUT', '/v1/data/cas', { n: 2 }, { 'if-match': `"0", ${current}` });
    expect(fresh.status).toBe(200);
    expect(fresh.headers.get('etag')).toBe(`"${fresh.body!.version}"`);
    // A weak tag never matches If-Match (strong comparison); "*" matches while the path holds a value.
    expect((await admin('PUT', '/v1/data/cas', { n: 3 }, { 'if-match': `W/${fresh.headers.get('etag')}` })).status).toBe(412);
    expect((await admin('PUT', '/v1/data/cas', { n: 3 }, { 'if-match': '*' })).status).toBe(200);
    expect((await admin('PUT', '/v1/data/cas-absent', { n: 1 }, { 'if-match': '*' })).status).toBe(412);
    // If-None-Match: * creates only what is not there yet.
    expect((await admin('PUT', '/v1/data/cas', { n: 4 }, { 'if-none-match': '*' })).status).toBe(412);
    expect((await admin('PUT', '/v1/data/cas-new', { n: 1 }, { 'if-none-match': '*' })).status).toBe(200);
    expect((await admin('GET', '/v1/data/cas')).body!.result).toEqual({ n: 3 });
    expect((await admin('GET', '/v1/data/cas-absent')).status).toBe(404);
  });

  it('names the field of the body it refuses by JSON pointer, for PUT and PATCH alike', async () => {
    await admin('PUT', '/v1/data/named', { a: 1, list: [1] });
    const before = (await admin('GET', '/v1/data/named')).body!;
    const deep = await admin('PUT', '/v1/data/named', { a: JSON.parse('{"x":'.repeat(40) + '1' + '}'.repeat(40)) });
    expect(deep).toMatchObject({ status: 400, body: { code: 'data_too_deep', errors: [{ pointer: expect.stringMatching(/^\/a(\/x)+$/) }] } });
    expect(await admin('PUT', '/v1/data/named', { a: { '': 1 } })).toMatchObject({ status: 400, body: { code: 'data_invalid', errors: [{ pointer: '/a/' }] } });
    const cases: [unknown[], string, string][] = [
      [[{ op: 'test', path: '/a', value: 1 }, { op: 'add', path: 'b', value: 1 }], 'json_patch_invalid', '/1/path'],
      [[{ op: 'copy', from: '/a~2', path: '/b' }], 'json_patch_invalid', '/0/from'],
      [[{ op: 'move', from: '/list', path: '/list/0' }], 'json_patch_invalid', '/0/path'],
      [[{ op: 'move', from: '/missing', path: '/b' }], 'json_patch_path_not_found', '/0/from'],
      [[{ op: 'remove', path: '/missing' }], 'json_patch_path_not_found', '/0/path'],
      [[{ op: 'test', path: '/a', value: 2 }], 'json_patch_test_failed', '/0/value'],
      [[{ op: 'add', path: '/b', value: { '': 1 } }], 'data_invalid', '/0/value/'],
    ];
    for (const [patch, code, pointer] of cases) {
      expect(await admin('PATCH', '/v1/data/named', patch), JSON.stringify(patch)).toMatchObject({ status: code === 'json_patch_invalid' || code.startsWith('data') ? 400 : 409, body: { code, errors: [{ pointer }] } });
    }
    const deepPatch = await admin('PATCH', '/v1/data/named', [{ op: 'add', path: '/b', value: JSON.parse('{"x":'.repeat(40) + '1' + '}'.repeat(40)) }]);
    expect(deepPatch).toMatchObject({ status: 400, body: { code: 'data_too_deep', errors: [{ pointer: expect.stringMatching(/^\/0\/value(\/x)+$/) }] } });
    // Live data past data.max_size_bytes (1 MiB here): the body as a whole is at fault.
    const big = 'x'.repeat(1024 * 1024 - 10); // within what one patch may add, not with the rest of the document
    expect(await admin('PUT', '/v1/data/named', { a: 1, list: [1], big })).toMatchObject({ status: 400, body: { code: 'data_too_large', errors: [{ pointer: '' }] } });
    expect(await admin('PATCH', '/v1/data/named', [{ op: 'add', path: '/big', value: big }])).toMatchObject({ status: 400, body: { code: 'data_too_large', errors: [{ pointer: '' }] } });
    expect((await admin('GET', '/v1/data/named')).body).toEqual(before);
  });

  it('refuses a small patch whose copies would multiply the data past the size limit, quickly', async () => {
    const big = { s: 'x'.repeat(100_000) };
    expect((await admin('PUT', '/v1/data/bomb', big)).status).toBe(200);
    // 3 KB of copies sharing subtrees: 20 x 20 x 20 x 100 KB = 800 MB once serialized.
    const copies = (from: string, to: string) => Array.from({ length: 20 }, () => ({ op: 'copy', from, path: `${to}/-` }));
    const patch = [
      { op: 'add', path: '/t', value: { a: [], b: [], c: [] } },
      ...copies('/s', '/t/a'),
      ...copies('/t/a', '/t/b'),
      ...copies('/t/b', '/t/c'),
    ];
    const started = performance.now();
    const refused = await admin('PATCH', '/v1/data/bomb', patch);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(refused).toMatchObject({ status: 400, body: { code: 'data_too_large' } });
    expect((await admin('GET', '/v1/data/bomb')).body).toMatchObject({ result: big });
    expect((await admin('DELETE', '/v1/data/bomb')).status).toBe(204);
  });

  it('refuses a path with a "." or ".." key rather than write or delete the parent it resolves to', async () => {
    // URL parsing on the server resolves dot segments, also percent-encoded, so the key ".."
    // under a user would name the document.
    expect((await admin('PUT', '/v1/data/dots', { users: { alice: 1 } })).status).toBe(200);
    for (const path of ['/v1/data/dots/users/..', '/v1/data/dots/users/%2e%2E', '/v1/data/dots/users/.', '/v1/data/dots/users/%2E']) {
      expect(await sent('PUT', path, { replaced: true }), path).toMatchObject({ status: 400, body: { code: 'data_path_invalid' } });
      expect(await sent('DELETE', path), path).toMatchObject({ status: 400, body: { code: 'data_path_invalid' } });
    }
    expect((await admin('GET', '/v1/data/dots')).body).toMatchObject({ result: { users: { alice: 1 } } });
    // A key merely holding dots is still a key.
    expect((await sent('PUT', '/v1/data/dots/users/...', 2)).status).toBe(200);
    expect((await admin('GET', '/v1/data/dots/users')).body).toMatchObject({ result: { alice: 1, '...': 2 } });
  });

  it('addresses the keys after /v1/data however the request spells those two segments', async () => {
    // `/v1/dat%61/...` and `/v%31/data/...` are routed here (the router decodes them): the keys
    // must be those after the second segment, not those after its eighth character, or a write
    // lands on another document (`61/enc/doc`, `ta/enc/doc`) than the one the URL names.
    for (const [index, prefix] of ['/v1/dat%61', '/v%31/data', '/%761/%64ata'].entries()) {
      expect((await sent('PUT', `${prefix}/enc/doc${index}`, { n: index })).status, prefix).toBe(200);
      expect((await admin('GET', `/v1/data/enc/doc${index}`)).body, prefix).toMatchObject({ result: { n: index } });
      expect(await sent('GET', `${prefix}/enc/doc${index}`), prefix).toMatchObject({ status: 200, body: { result: { n: index } } });
      expect((await sent('DELETE', `${prefix}/enc/doc${index}`)).status, prefix).toBe(204);
    }
    const root = (await admin('GET', '/v1/data/')).body!.result as Record<string, unknown>;
    expect(Object.keys(root).filter((key) => ['61', 'ta', '1', 'ata'].includes(key))).toEqual([]);
    expect((await admin('GET', '/v1/data/enc')).body).toMatchObject({ result: {} });
    expect((await admin('DELETE', '/v1/data/enc')).status).toBe(204);
  });

  it('refuses a write whose path ends in a slash (an empty last key) rather than write or delete the parent', async () => {
    // `/v1/data/slash/users/${encodeURIComponent(id)}` with an empty id must not name the whole document.
    expect((await admin('PUT', '/v1/data/slash', { users: { alice: 1 } })).status).toBe(200);
    for (const path of ['/v1/data/slash/users/', '/v1/data/slash/', '/v1/data//slash', '/v1/data/slash//users']) {
      expect(await admin('PUT', path, { replaced: true }), path).toMatchObject({ status: 400, body: { code: 'data_path_invalid' } });
      expect(await admin('PATCH', path, [{ op: 'remove', path: '/alice' }]), path).toMatchObject({ status: 400, body: { code: 'data_path_invalid' } });
      expect(await admin('DELETE', path), path).toMatchObject({ status: 400, body: { code: 'data_path_invalid' } });
    }
    expect((await admin('GET', '/v1/data/slash')).body).toMatchObject({ result: { users: { alice: 1 } } });
    expect((await admin('DELETE', '/v1/data/slash')).status).toBe(204);
  });

  it('refuses writes under an active bundle root with 409, and reads the bundle data there', async () => {
    expect(await admin('PUT', '/v1/data/echo/x', 1)).toMatchObject({ status: 409, body: { code: 'data_path_owned_by_bundle', detail: expect.stringContaining('active bundle echo') } });
    expect(await admin('PUT', '/v1/data/simple', {})).toMatchObject({ status: 409 });
    expect((await admin('GET', '/v1/data/simple/greeting')).body).toMatchObject({ result: 'hello', bundle: 'simple' });
    // Above the roots: live documents and every bundle's data together, attributed to none.
    await admin('PUT', '/v1/data/pair', { a: 9 });
    const all = (await admin('GET', '/v1/data')).body!;
    expect(all.result).toMatchObject({ pair: { a: 9 }, simple: { greeting: 'hello' } });
    expect(all.bundle).toBeUndefined();
  });

  it('marks a document stale once it is older than its max age', async () => {
    await admin('PUT', '/v1/data/short', { v: 1 }, { 'arbiter-data-max-age': '1' });
    expect((await decideWith()).reasons[0].data_status.short.stale).toBe(false);
    await new Promise((resolve) => setTimeout(resolve, 2100));
    expect((await decideWith()).reasons[0].data_status.short.stale).toBe(true);
  });

  it('never lets a decision see half an update while updates race decisions', async () => {
    let writing = true;
    const writer = (async () => {
      for (let i = 0; i < 150; i++) await admin('PUT', '/v1/data/pair', { a: i, b: i });
      writing = false;
    })();
    const seen: { a: number; b: number }[] = [];
    const readers = Array.from({ length: 4 }, async () => {
      while (writing) seen.push((await decideWith()).reasons[0].pair);
    });
    await Promise.all([writer, ...readers]);
    expect(seen.length).toBeGreaterThan(50);
    expect(seen.filter((pair) => pair.a !== pair.b)).toEqual([]);
  });
});

describe('the entitlements document', () => {
  const grant = { id: 'ent-1', actions: ['invoices.read'], tenants: ['acme'] };
  const workload = 'spiffe://acme.example/ns/billing/sa/worker';

  it('refuses a write whose grants, actions or tenants are not lists, naming each by JSON pointer', async () => {
    // The default policy reads an object's values as if they were a list's, so a feed that
    // sends objects would grant what it never meant to: it is told at once instead.
    const put = await admin('PUT', '/v1/data/entitlements', {
      'user:mallory': { grants: [{ ...grant, tenants: { primary: 'acme' } }] },
      [workload]: { grants: [{ ...grant, actions: { read: 'invoices.read' } }] },
    });
    expect(put.status).toBe(400);
    expect(put.headers.get('content-type')).toContain('application/problem+json');
    expect(put.body).toMatchObject({ code: 'entitlements_invalid' });
    expect(put.body!.errors).toEqual([
      { pointer: '/user:mallory/grants/0/tenants', detail: expect.stringContaining('array') },
      { pointer: '/spiffe:~1~1acme.example~1ns~1billing~1sa~1worker/grants/0/actions', detail: expect.stringContaining('array') },
    ]);
    expect((await admin('GET', '/v1/data/entitlements')).status).toBe(404);

    // Pointers are into the body, wherever the write lands.
    expect((await admin('PUT', '/v1/data/entitlements', { 'user:carol': { description: 'Carol', grants: [grant] } })).status).toBe(200);
    const subject = await admin('PUT', `/v1/data/entitlements/${encodeURIComponent('user:mallory')}`, { grants: { first: grant } });
    expect(subject).toMatchObject({ status: 400, body: { code: 'entitlements_invalid', errors: [{ pointer: '/grants' }] } });
    // A JSON Patch is named by the location its operations' paths name.
    const patch = await admin('PATCH', '/v1/data/entitlements', [{ op: 'add', path: '/user:carol/grants/-', value: { ...grant, id: 'ent-2', expires_at: 'soon' } }], {
      'content-type': 'application/json-patch+json',
    });
    expect(patch).toMatchObject({ status: 400, body: { code: 'entitlements_invalid', errors: [{ pointer: '/user:carol/grants/1/expires_at' }] } });
    const whole = await admin('PUT', '/v1/data/entitlements/user:carol/grants', { first: grant });
    expect(whole).toMatchObject({ status: 400, body: { code: 'entitlements_invalid', errors: [{ pointer: '' }] } });
    // Above the body, in a parent the write creates: the body's pointer, the detail says where.
    const created = await admin('PUT', '/v1/data/entitlements/user:dan/grants/first', grant);
    expect(created).toMatchObject({ status: 400, body: { code: 'entitlements_invalid', errors: [{ pointer: '', detail: expect.stringMatching(/^entitlements\/user:dan\/grants: .*array/) }] } });
    expect((await admin('GET', '/v1/data/entitlements')).body!.result).toEqual({ 'user:carol': { description: 'Carol', grants: [grant] } });
    expect((await admin('DELETE', '/v1/data/entitlements')).status).toBe(204);
  });

  it('refuses a grant whose expires_at is in milliseconds, which would never expire, naming it', async () => {
    // Date.now() + an hour where epoch seconds belong: compared with input.context.now (seconds),
    // the grant meant to lapse in an hour would entitle for millennia.
    const inAnHourMs = Date.now() + 3_600_000;
    const put = await admin('PUT', '/v1/data/entitlements', { 'user:temp': { grants: [{ ...grant, expires_at: inAnHourMs }] } });
    expect(put.status).toBe(400);
    expect(put.headers.get('content-type')).toContain('application/problem+json');
    expect(put.body).toMatchObject({ code: 'entitlements_invalid', errors: [{ pointer: '/user:temp/grants/0/expires_at', detail: expect.stringContaining('milliseconds') }] });
    expect((await admin('GET', '/v1/data/entitlements')).status).toBe(404);
    // In seconds (a fraction included), up to the last second a date can show, it is a time.
    const inSeconds = await admin('PUT', '/v1/data/entitlements', { 'user:temp': { grants: [{ ...grant, expires_at: inAnHourMs / 1000 }, { ...grant, id: 'ent-2', expires_at: 253_402_300_799 }] } });
    expect(inSeconds.status).toBe(200);
    expect((await admin('DELETE', '/v1/data/entitlements')).status).toBe(204);
  });

  it('names the first fields of a feed of one mistake and counts the rest in errors_omitted, as every problem does', async () => {
    const feed = Object.fromEntries(Array.from({ length: 130 }, (_, i) => [`user:u${i}`, { grants: [{ ...grant, tenants: 'acme' }] }]));
    const refused = await admin('PUT', '/v1/data/entitlements', feed);
    expect(refused).toMatchObject({ status: 400, body: { code: 'entitlements_invalid', errors_omitted: 30 } });
    expect(refused.body!.errors).toHaveLength(100);
    expect(refused.body!.detail).toContain('and 30 more');
  });

  it('takes any shape when data.check_entitlements is false (a bundle of your own reads it otherwise)', async () => {
    const server = await startTestArbiter({ ...config(), data: { path: join(tempDir(), 'data.db'), check_entitlements: false } });
    try {
      const response = await fetch(`${server.url}/v1/data/entitlements`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ 'user:alice': ['invoices.read'] }),
      });
      expect(response.status).toBe(200);
    } finally {
      await server.close();
    }
  });

  it('stops start-up on a seed file of that shape, naming data.seed.entitlements and the pointer', async () => {
    const seed = join(tempDir(), 'entitlements.json');
    writeFileSync(seed, JSON.stringify({ 'user:alice': { grants: [{ ...grant, tenants: 'acme' }] } }));
    await expect(startTestArbiter({ ...config(), data: { path: join(tempDir(), 'data.db'), seed: { entitlements: seed } } })).rejects.toMatchObject({
      issues: [{ path: 'data.seed.entitlements', message: expect.stringContaining('/user:alice/grants/0/tenants') }],
    });
  });
});

describe('data.seed', () => {
  it('stops start-up on a seed file holding a lone surrogate, which the policy cannot parse, naming the pointer', async () => {
    const seed = join(tempDir(), 'pair.json');
    writeFileSync(seed, '{"a": 1, "b": {"c": "\\udfff"}}');
    await expect(startTestArbiter({ ...config(), data: { path: join(tempDir(), 'data.db'), seed: { pair: seed } } })).rejects.toMatchObject({
      issues: [{ path: 'data.seed.pair', message: expect.stringContaining('/b/c') }],
    });
  });

  it('stops start-up on a seed file that is not UTF-8, rather than seed U+FFFD where its bytes were', async () => {
    // An export saved as Latin-1: "josé" would be seeded as "jos\ufffd", a subject no token names,
    // and a write's body of the same bytes is refused (malformed_json).
    const seed = join(tempDir(), 'entitlements.json');
    writeFileSync(seed, Buffer.concat([Buffer.from('{"user:jos'), Buffer.from([0xe9]), Buffer.from('@acme.example": {"grants": []}}')]));
    await expect(startTestArbiter({ ...config(), data: { path: join(tempDir(), 'data.db'), seed: { entitlements: seed } } })).rejects.toMatchObject({
      issues: [{ path: 'data.seed.entitlements', message: expect.stringMatching(/not valid for encoding utf-8/i) }],
    });
  });
});

describe('revocations', () => {
  const now = () => Math.floor(Date.now() / 1000);

  it.each([
    ['jti', { jti: 'token-1' }, { kind: 'jti', value: 'token-1' }, { jti: 'token-2' }],
    ['sub', { sub: 'user:mallory' }, { kind: 'sub', value: 'user:mallory' }, { sub: 'user:bob' }],
    ['sid', { sid: 'session-9' }, { kind: 'sid', value: 'session-9' }, { sid: 'session-8' }],
    ['client_id', { client_id: 'leaky-app' }, { kind: 'client_id', value: 'leaky-app' }, { client_id: 'good-app' }],
  ])('revokes by %s on the next decision, cached verification included, and nothing else', async (_kind, claims, revocation, otherClaims) => {
    const token = await idp.sign(claims);
    const other = await idp.sign(otherClaims);
    expect((await decideWith(token)).allow).toBe(true); // now in the verification cache
    const created = await admin('POST', '/v1/revocations', { ...revocation, iss: idp.issuer, reason: 'stolen', expires_at: now() + 600 });
    expect(created.status).toBe(201);
    const decision = await decideWith(token);
    expect(decision.allow).toBe(false);
    expect(decision.reasons[0].revoked).toEqual({ revoked: true, reason: 'stolen', revocation_id: created.body!.id });
    expect((await decideWith(other)).allow).toBe(true);
  });

  it.each(['jti', 'sub', 'sid', 'client_id'])('revokes by a %s longer than a revocation reason may be: any value a token carries can be revoked', async (kind) => {
    // A claim value is bounded by tokens.max_token_bytes only: a token carrying a long one
    // verifies, so a revocation must be able to name it.
    const value = `${kind}:${'x'.repeat(1100)}`;
    const token = await idp.sign({ [kind]: value });
    expect((await decideWith(token)).allow).toBe(true);
    const created = await admin('POST', '/v1/revocations', { kind, value, iss: idp.issuer, reason: 'stolen', expires_at: now() + 600 });
    expect(created.status).toBe(201);
    expect((await decideWith(token)).reasons[0].revoked).toMatchObject({ revoked: true, revocation_id: created.body!.id });
  });

  it('keeps a jti revocation with expires_at = exp while the token is inside its clock tolerance', async () => {
    // Past exp but within the issuer's 30 s tolerance: the token still verifies.
    const exp = now() - 1;
    const token = await idp.sign({ sub: 'user:thief', jti: 'late-1' }, { iat: exp - 300, exp });
    expect((await decideWith(token)).allow).toBe(true);
    const created = await admin('POST', '/v1/revocations', { kind: 'jti', value: 'late-1', iss: idp.issuer, reason: 'stolen', expires_at: exp });
    expect(created.status).toBe(201);
    const decision = await decideWith(token);
    expect(decision.allow).toBe(false);
    expect(decision.reasons[0].revoked).toMatchObject({ revoked: true, revocation_id: created.body!.id });
    expect((await admin('GET', `/v1/revocations/${created.body!.id}`)).status).toBe(200);
  });

  it('refuses a revocation whose expires_at has passed beyond the clock tolerance, naming the field', async () => {
    const token = await idp.sign({ sub: 'user:ttl-typo', jti: 'ttl-1' });
    const refused = await admin('POST', '/v1/revocations', { kind: 'jti', value: 'ttl-1', iss: idp.issuer, reason: 'stolen', expires_at: 3600 });
    expect(refused.status).toBe(400);
    expect(refused.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(refused.body).toMatchObject({ code: 'revocation_invalid', detail: expect.stringContaining('revocation.expires_at: 3600 has passed') });
    expect((await decideWith(token)).allow).toBe(true);
    expect((await admin('GET', '/v1/revocations?kind=jti')).body!.items.some((r: { value: string }) => r.value === 'ttl-1')).toBe(false);
  });

  it('names a passed expires_at by JSON pointer, as a field the schema refuses is named', async () => {
    const single = await admin('POST', '/v1/revocations', { kind: 'sub', value: 'user:ttl-typo', reason: 'offboarded', expires_at: 3600 });
    expect(single).toMatchObject({ status: 400, body: { code: 'revocation_invalid', errors: [{ pointer: '/expires_at', detail: expect.stringContaining('3600 has passed') }] } });
    const batch = await admin('POST', '/v1/revocations', {
      revocations: [
        { kind: 'sub', value: 'user:a', reason: 'offboarded', expires_at: now() + 600 },
        { kind: 'sub', value: 'user:b', reason: 'offboarded', expires_at: 60 },
      ],
    });
    expect(batch).toMatchObject({ status: 400, body: { code: 'revocation_invalid', errors: [{ pointer: '/revocations/1/expires_at', detail: expect.stringContaining('60 has passed') }] } });
  });

  it('names every invalid entry of a batch, not only the first, and nothing is committed', async () => {
    const passed = await admin('POST', '/v1/revocations', {
      revocations: [
        { kind: 'sub', value: 'user:batch-a', reason: 'offboarded', expires_at: now() + 600 },
        { kind: 'sub', value: 'user:batch-b', reason: 'offboarded', expires_at: 60 },
        { kind: 'sub', value: 'user:batch-c', reason: 'offboarded' },
        { kind: 'jti', value: 'batch-d', reason: 'stolen', expires_at: 120 },
      ],
    });
    expect(passed).toMatchObject({ status: 400, body: { code: 'revocation_invalid' } });
    expect(passed.body!.errors).toEqual([
      { pointer: '/revocations/1/expires_at', detail: expect.stringContaining('60 has passed') },
      { pointer: '/revocations/3/expires_at', detail: expect.stringContaining('120 has passed') },
    ]);
    expect(passed.body!.detail).toContain('revocations[3].expires_at');

    // Entries the schema refuses are named inside the batch too, not as a single revocation without `kind`.
    const malformed = await admin('POST', '/v1/revocations', {
      revocations: [
        { kind: 'sub', reason: 'no value' },
        { kind: 'sub', value: 'user:batch-e', reason: 'fine' },
        { kind: 'email', value: 'x', reason: 'r' },
        { kind: 'issued_before', iss: idp.issuer, reason: 'no cut-off' },
      ],
    });
    expect(malformed).toMatchObject({ status: 400, body: { code: 'invalid_request' } });
    expect(malformed.body!.errors.map((e: { pointer: string }) => e.pointer)).toEqual(['/revocations/0/value', '/revocations/2/kind', '/revocations/3/before']);
    // And a single revocation missing several fields is named as one, not as a batch.
    const single = await admin('POST', '/v1/revocations', { kind: 'issued_before' });
    expect(single.body!.errors.map((e: { pointer: string }) => e.pointer)).toEqual(['/iss', '/before', '/reason']);
    expect((await admin('GET', '/v1/revocations?kind=sub')).body!.items.some((r: { value: string }) => r.value.startsWith('user:batch-'))).toBe(false);
  });

  it('refuses an expires_at or before in milliseconds, naming the field, rather than revoke for millennia', async () => {
    // Date.now() where epoch seconds belong: a one-hour suspension would never lapse nor be pruned,
    // and an issued_before cut-off would refuse every token the issuer ever mints, new keys included.
    const inAnHourMs = Date.now() + 3_600_000;
    const single = await admin('POST', '/v1/revocations', { kind: 'sub', value: 'user:ms-typo', reason: 'suspended', expires_at: inAnHourMs });
    expect(single.status).toBe(400);
    expect(single.headers.get('content-type')).toContain('application/problem+json');
    expect(single.body).toMatchObject({ code: 'invalid_request', errors: [{ pointer: '/expires_at', detail: expect.stringContaining('milliseconds') }] });
    const cutOff = await admin('POST', '/v1/revocations', { revocations: [{ kind: 'issued_before', iss: idp.issuer, before: Date.now(), reason: 'key leak' }] });
    expect(cutOff).toMatchObject({ status: 400, body: { code: 'invalid_request', errors: [{ pointer: '/revocations/0/before', detail: expect.stringContaining('milliseconds') }] } });
    expect((await admin('GET', '/v1/revocations?kind=sub')).body!.items.some((r: { value: string }) => r.value === 'user:ms-typo')).toBe(false);
    expect((await admin('GET', '/v1/revocations?kind=issued_before')).body!.items).toEqual([]);
    // The last second epoch seconds can name in a date (9999-12-31T23:59:59Z) is still a time.
    const farOff = await admin('POST', '/v1/revocations', { kind: 'sub', value: 'user:far-off', reason: 'suspended', expires_at: 253_402_300_799 });
    expect(farOff.status).toBe(201);
    expect((await admin('DELETE', `/v1/revocations/${farOff.body!.id}`)).status).toBe(204);
  });

  it('lists at most 100 invalid entries of a batch and counts the rest', async () => {
    const entries = (bad: (i: number) => Record<string, unknown>) => ({ revocations: Array.from({ length: 250 }, (_, i) => ({ kind: 'jti', value: `cap-${i}`, reason: 'r', ...bad(i) })) });
    for (const [body, code] of [
      [entries(() => ({ expires_at: 60 })), 'revocation_invalid'],
      [entries(() => ({ reason: '' })), 'invalid_request'],
    ] as const) {
      const refused = await admin('POST', '/v1/revocations', body);
      expect(refused).toMatchObject({ status: 400, body: { code, errors_omitted: 150 } });
      expect(refused.body!.errors).toHaveLength(100);
      expect(refused.body!.errors[99].pointer).toMatch(/^\/revocations\/99\//);
      expect(refused.body!.detail.length).toBeLessThan(20_000);
      expect(refused.body!.detail).toContain('150 more');
    }
  });

  it('answers a replayed revocation with the entry in force (200, same id), so lifting it lifts it', async () => {
    // A feed replays the active revocations to a restarted replica: the ones it already holds
    // must not gain a twin under a new id that DELETE of the first would leave in force.
    const token = await idp.sign({ sub: 'user:replayed' });
    const revocation = { kind: 'sub', value: 'user:replayed', iss: idp.issuer, reason: 'offboarded', expires_at: now() + 600 };
    const created = await admin('POST', '/v1/revocations', revocation);
    expect(created.status).toBe(201);
    // The reason is commentary: a replay that words it otherwise is the same revocation.
    const replayed = await admin('POST', '/v1/revocations', { ...revocation, reason: 'replayed by the feed' });
    expect(replayed).toMatchObject({ status: 200, body: { id: created.body!.id, reason: 'offboarded' } });
    const batch = await admin('POST', '/v1/revocations', { revocations: [revocation, revocation] });
    expect(batch.status).toBe(200);
    expect(batch.body!.revocations.map((r: { id: string }) => r.id)).toEqual([created.body!.id, created.body!.id]);
    // Another expires_at is another revocation.
    const longer = await admin('POST', '/v1/revocations', { revocations: [revocation, { ...revocation, expires_at: revocation.expires_at + 60 }] });
    expect(longer.status).toBe(201);
    expect(longer.body!.revocations[0].id).toBe(created.body!.id);
    expect(longer.body!.revocations[1].id).not.toBe(created.body!.id);
    expect((await admin('DELETE', `/v1/revocations/${longer.body!.revocations[1].id}`)).status).toBe(204);
    expect((await admin('DELETE', `/v1/revocations/${created.body!.id}`)).status).toBe(204);
    expect((await decideWith(token)).allow).toBe(true);
  });

  it('commits one entry for identical revocations sent at once', async () => {
    const revocation = { kind: 'jti', value: 'twin-1', iss: idp.issuer, reason: 'stolen', expires_at: now() + 600 };
    const answers = await Promise.all([admin('POST', '/v1/revocations', revocation), admin('POST', '/v1/revocations', revocation)]);
    expect(answers.map((a) => a.status).sort()).toEqual([200, 201]);
    expect(answers[0]!.body!.id).toBe(answers[1]!.body!.id);
    const listed = (await admin('GET', '/v1/revocations?kind=jti&limit=1000')).body!.items.filter((r: { value: string }) => r.value === 'twin-1');
    expect(listed).toHaveLength(1);
  });

  it('refuses an issued_before, jti or sid revocation of an issuer not configured, naming iss and the issuers configured', async () => {
    // A trailing slash typed in an emergency: no token of that issuer is ever verified, so the
    // revocation would never apply while its author believes the compromised issuer's tokens stopped.
    const typo = `${idp.issuer}/`;
    const single = await admin('POST', '/v1/revocations', { kind: 'issued_before', iss: typo, before: now(), reason: 'key leak' });
    expect(single.status).toBe(400);
    expect(single.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(single.body).toMatchObject({ code: 'revocation_invalid', errors: [{ pointer: '/iss', detail: expect.stringContaining(JSON.stringify(typo)) }] });
    expect(single.body!.errors[0].detail).toContain(JSON.stringify(idp.issuer));
    expect(single.body!.errors[0].detail).toContain(JSON.stringify(admins.issuer));
    const batch = await admin('POST', '/v1/revocations', {
      revocations: [
        { kind: 'issued_before', iss: idp.issuer, before: 1000, reason: 'fine' },
        { kind: 'jti', value: 'typo-1', iss: typo, reason: 'stolen' },
        { kind: 'sid', value: 'typo-2', iss: 'https://unknown.example', reason: 'stolen' },
      ],
    });
    expect(batch).toMatchObject({ status: 400, body: { code: 'revocation_invalid' } });
    expect(batch.body!.errors.map((e: { pointer: string }) => e.pointer)).toEqual(['/revocations/1/iss', '/revocations/2/iss']);
    expect((await admin('GET', '/v1/revocations?kind=issued_before')).body!.items.some((r: { iss: string }) => r.iss === typo)).toBe(false);
    // An admin issuer is an issuer whose tokens are checked too.
    const adminCutOff = await admin('POST', '/v1/revocations', { kind: 'issued_before', iss: admins.issuer, before: 1000, reason: 'old admin tokens' });
    expect(adminCutOff.status).toBe(201);
    expect((await admin('DELETE', `/v1/revocations/${adminCutOff.body!.id}`)).status).toBe(204);
    // sub and client_id name actors under the issuer that identifies them, configured or not (RFC 8693 §4.1).
    expect((await admin('POST', '/v1/revocations', { kind: 'sub', value: 'agent:elsewhere', iss: 'https://unknown.example', reason: 'r', expires_at: now() + 600 })).status).toBe(201);
  });

  it('revokes an actor of the delegation chain by sub or client_id, whoever holds the token', async () => {
    const delegated = await idp.sign({ sub: 'user:carol', act: { sub: 'agent:helper', act: { client_id: 'rogue-orchestrator' } } });
    const direct = await idp.sign({ sub: 'user:carol' });
    expect((await decideWith(delegated)).allow).toBe(true);
    const created = await admin('POST', '/v1/revocations', { kind: 'client_id', value: 'rogue-orchestrator', iss: idp.issuer, reason: 'compromised agent', expires_at: now() + 600 });
    const decision = await decideWith(delegated);
    expect(decision.allow).toBe(false);
    expect(decision.reasons[0].revoked).toEqual({ revoked: true, reason: 'compromised agent', revocation_id: created.body!.id, actor_depth: 2 });
    // The holder herself is not revoked: only tokens the revoked agent acts through are.
    expect((await decideWith(direct)).allow).toBe(true);
  });

  it('revokes by sub an agent that acts as the OAuth client of a user\'s token, as it revokes it in act', async () => {
    // The agent's own tokens have sub agent:courier; a user's token it obtained names it only as client_id.
    const viaClient = await idp.sign({ sub: 'user:erin', client_id: 'agent:courier' });
    const own = await idp.sign({ sub: 'user:erin' });
    expect((await decideWith(viaClient)).allow).toBe(true);
    const created = await admin('POST', '/v1/revocations', { kind: 'sub', value: 'agent:courier', iss: idp.issuer, reason: 'compromised agent', expires_at: now() + 600 });
    const decision = await decideWith(viaClient);
    expect(decision.allow).toBe(false);
    expect(decision.reasons[0].revoked).toEqual({ revoked: true, reason: 'compromised agent', revocation_id: created.body!.id });
    expect((await decideWith(own)).allow).toBe(true);
  });

  it('revokes by sub an actor of act that its entry names by client_id, as it does the token\'s client', async () => {
    // A policy identifies an actor by its sub, else its client_id (the default one does): an act
    // entry naming the agent by client_id alone is that agent, whose own tokens name it as sub.
    const viaAct = await idp.sign({ sub: 'user:erin', act: { client_id: 'agent:act-courier' } });
    const nested = await idp.sign({ sub: 'user:erin', act: { sub: 'agent:front', act: { sub: 'agent:other', client_id: 'agent:act-courier' } } });
    const own = await idp.sign({ sub: 'user:erin', act: { sub: 'agent:front' } });
    expect((await decideWith(viaAct)).allow).toBe(true);
    const created = await admin('POST', '/v1/revocations', { kind: 'sub', value: 'agent:act-courier', iss: idp.issuer, reason: 'compromised agent', expires_at: now() + 600 });
    expect(created.status).toBe(201);
    expect((await decideWith(viaAct)).reasons[0].revoked).toEqual({ revoked: true, reason: 'compromised agent', revocation_id: created.body!.id, actor_depth: 1 });
    expect((await decideWith(nested)).reasons[0].revoked).toEqual({ revoked: true, reason: 'compromised agent', revocation_id: created.body!.id, actor_depth: 2 });
    expect((await decideWith(own)).allow).toBe(true);
  });

  it('revokes a client named by azp in a token whose client_id names another, by client_id and by sub', async () => {
    // OIDC: azp is the party the token was issued to. A token naming a revoked client in azp must
    // not pass because its client_id names another (a gateway, a resource server).
    const viaAzp = await idp.sign({ sub: 'user:frank', client_id: 'gateway-app', azp: 'agent:azp-leaky' });
    const other = await idp.sign({ sub: 'user:frank', client_id: 'gateway-app', azp: 'agent:azp-good' });
    expect((await decideWith(viaAzp)).allow).toBe(true);
    const byClient = await admin('POST', '/v1/revocations', { kind: 'client_id', value: 'agent:azp-leaky', iss: idp.issuer, reason: 'leaked client', expires_at: now() + 600 });
    expect(byClient.status).toBe(201);
    const decision = await decideWith(viaAzp);
    expect(decision.allow).toBe(false);
    expect(decision.reasons[0].revoked).toEqual({ revoked: true, reason: 'leaked client', revocation_id: byClient.body!.id });
    expect((await decideWith(other)).allow).toBe(true);
    expect((await admin('DELETE', `/v1/revocations/${byClient.body!.id}`)).status).toBe(204);
    // Unscoped, and by sub (the agent's own tokens name it as sub), as for a client named by client_id.
    const bySub = await admin('POST', '/v1/revocations', { kind: 'sub', value: 'agent:azp-leaky', reason: 'compromised agent', expires_at: now() + 600 });
    expect((await decideWith(viaAzp)).reasons[0].revoked).toEqual({ revoked: true, reason: 'compromised agent', revocation_id: bySub.body!.id });
    expect((await decideWith(other)).allow).toBe(true);
  });

  it("scopes an actor's revocation to the actor's own iss when its act entry names one, else to the token's", async () => {
    // RFC 8693 §4.1: iss and sub together may be needed to identify an actor. idp (issuer A)
    // vouches for an actor identified by issuer B: B's revocation of it applies, A's does not.
    const issuerB = 'https://other-idp.test.example';
    const viaB = await idp.sign({ sub: 'user:dave', act: { sub: 'agent:scoped', iss: issuerB } });
    const viaA = await idp.sign({ sub: 'user:dave', act: { sub: 'agent:scoped' } });
    const revokedAtA = await admin('POST', '/v1/revocations', { kind: 'sub', value: 'agent:scoped', iss: idp.issuer, reason: 'revoked at A', expires_at: now() + 600 });
    expect(revokedAtA.status).toBe(201);
    expect((await decideWith(viaB)).allow).toBe(true);
    expect((await decideWith(viaA)).reasons[0].revoked).toEqual({ revoked: true, reason: 'revoked at A', revocation_id: revokedAtA.body!.id, actor_depth: 1 });
    expect((await admin('DELETE', `/v1/revocations/${revokedAtA.body!.id}`)).status).toBe(204);

    const revokedAtB = await admin('POST', '/v1/revocations', { kind: 'client_id', value: 'scoped-bot', iss: issuerB, reason: 'revoked at B', expires_at: now() + 600 });
    const botViaB = await idp.sign({ sub: 'user:dave', act: { client_id: 'scoped-bot', iss: issuerB } });
    const botViaA = await idp.sign({ sub: 'user:dave', act: { client_id: 'scoped-bot' } });
    expect((await decideWith(botViaB)).reasons[0].revoked).toEqual({ revoked: true, reason: 'revoked at B', revocation_id: revokedAtB.body!.id, actor_depth: 1 });
    expect((await decideWith(botViaA)).allow).toBe(true);
  });

  it("holds an actor whose act entry gives an empty iss to the token's issuer's revocations", async () => {
    // An empty iss identifies the actor at no issuer (no revocation can be scoped to ""): the
    // token's issuer vouches for it, so that issuer's revocations must reach it.
    const blank = await idp.sign({ sub: 'user:dave', act: { sub: 'agent:blank-iss', iss: '' } });
    const revoked = await admin('POST', '/v1/revocations', { kind: 'sub', value: 'agent:blank-iss', iss: idp.issuer, reason: 'revoked at A', expires_at: now() + 600 });
    expect((await decideWith(blank)).reasons[0].revoked).toEqual({ revoked: true, reason: 'revoked at A', revocation_id: revoked.body!.id, actor_depth: 1 });
  });

  it('refuses an actor whose sub, client_id or iss is not a string rather than let it slip past its revocation', async () => {
    // Revocations look an actor up by string sub and client_id, and a policy identifies it by its
    // sub, else its client_id: a sub in a list would be skipped by both, and the actor taken for
    // its client. The token is token_malformed, as one whose own sub is not a string.
    const revoked = await admin('POST', '/v1/revocations', { kind: 'sub', value: 'agent:slippery', reason: 'rogue agent', expires_at: now() + 600 });
    expect(revoked.status).toBe(201);
    expect((await decideWith(await idp.sign({ sub: 'user:erin', act: { sub: 'agent:slippery', client_id: 'helper' } }))).allow).toBe(false);
    const issuerB = 'https://other-idp.test.example';
    const scopedAtB = await admin('POST', '/v1/revocations', { kind: 'sub', value: 'agent:scoped-b', iss: issuerB, reason: 'revoked at B', expires_at: now() + 600 });
    expect(scopedAtB.status).toBe(201);
    for (const act of [
      { sub: ['agent:slippery'], client_id: 'helper' },
      { sub: { id: 'agent:slippery' }, client_id: 'helper' },
      { sub: 'agent:helper', act: { sub: ['agent:slippery'], client_id: 'helper' } },
      { sub: 'agent:helper', client_id: 7 },
      { sub: '', client_id: 'helper' },
      // B's revocation applies to the actor B identifies: an iss it cannot read would hand it to the token's issuer.
      { sub: 'agent:scoped-b', iss: [issuerB] },
    ]) {
      const decision = await decideWith(await idp.sign({ sub: 'user:erin', act }));
      expect(decision, JSON.stringify(act)).toMatchObject({ allow: false, reasons: [{ code: 'token_malformed', message: expect.stringContaining('act') }] });
    }
  });

  it('revokes everything an issuer issued before a time', async () => {
    const old = await idp.sign({ sub: 'user:old' }, { iat: now() - 120 });
    const fresh = await idp.sign({ sub: 'user:fresh' }, { iat: now() + 1 });
    await admin('POST', '/v1/revocations', { kind: 'issued_before', iss: idp.issuer, before: now() - 60, reason: 'key rotated' });
    expect((await decideWith(old)).allow).toBe(false);
    expect((await decideWith(fresh)).allow).toBe(true);
  });

  it('stops a token dated ahead of the clock once its key is removed and what it issued until now revoked', async () => {
    // The documented answer to a key compromise: remove the key at the issuer, revoke
    // issued_before now. A token dated ahead of Arbiter's clock (within clock_tolerance_s)
    // is not issued before now, so only the removed key can stop it: it must not be remembered.
    await withLeakingIssuer('leaked', { clock_tolerance_s: 30, jwks_cache_max_age_s: 1, jwks_cooldown_s: 1 }, async ({ leaked, decide, revokeIssuedBefore, removeLeakedKey }) => {
      const ahead = await leaked.sign({ sub: 'user:ahead' }, { iat: now() + 20 });
      expect((await decide(ahead)).allow).toBe(true);

      expect(await revokeIssuedBefore({ before: now(), reason: 'key compromised' })).toBe(201);
      const compromised = await removeLeakedKey();
      await new Promise((resolve) => setTimeout(resolve, 1100)); // past jwks_cache_max_age_s

      // The removed key stops a token it signs now...
      expect((await decide(await leaked.sign({ sub: 'user:new' }, { key: compromised.privateKey, kid: compromised.kid }))).reasons[0].code).toBe('token_unknown_key');
      // ...and the one it signed ahead of time, verified before the key was removed.
      expect((await decide(ahead)).allow).toBe(false);
    });
  });

  it('fetches the issuer\'s key set again on an issued_before revocation: a key removed before it stops verifying at once', async () => {
    // With the default jwks_cache_max_age_s (600 s), the key set fetched before the compromise
    // would keep verifying new tokens signed with the removed key for up to ten minutes after
    // the documented answer (remove the key, revoke issued_before now) had been given.
    await withLeakingIssuer('leaked-again', {}, async ({ leaked, decide, revokeIssuedBefore, removeLeakedKey }) => {
      expect((await decide(await leaked.sign({ sub: 'user:before' }))).allow).toBe(true); // key set loaded
      const compromised = await removeLeakedKey();
      expect(await revokeIssuedBefore({ before: now(), reason: 'key compromised' }, { batch: true })).toBe(201);
      // A token the removed key signs now is not issued before the cut-off: only the key set stops it.
      const forged = await leaked.sign({ sub: 'user:forged' }, { key: compromised.privateKey, kid: compromised.kid, iat: now() + 1 });
      expect((await decide(forged)).reasons[0].code).toBe('token_unknown_key');
      expect((await decide(await leaked.sign({ sub: 'user:after' }, { iat: now() + 1 }))).allow).toBe(true);
    });
  });

  it('fetches the key set anew on an issued_before revocation even while a fetch started before it is in flight', async () => {
    // A fetch started before the key was removed (by a decision, or a readiness probe) answers
    // the old key set; a revocation joining it instead of fetching again would install the
    // removed key and leave it verifying until the next refresh (jwks_cache_max_age_s).
    await withLeakingIssuer('leaked-in-flight', {}, async ({ leaked, url, decide, revokeIssuedBefore, removeLeakedKey }) => {
      const held = leaked.holdNextFetch();
      // The cut-off is this token's own iat (issued_before is strict), so it stays unrevoked
      // however many seconds a loaded machine puts between signing it and the revocation.
      const issuedAt = now();
      const first = decide(await leaked.sign({ sub: 'user:before' }, { iat: issuedAt })); // the first fetch: the old key set, slowly
      await held.arrived;
      const compromised = await removeLeakedKey();
      const revoked = revokeIssuedBefore({ before: issuedAt, reason: 'key compromised' });
      // Committed, so the revocation is waiting for the key set: only then does the old answer arrive.
      for (;;) {
        const page = await fetch(`${url}/v1/revocations?kind=issued_before`, { headers: { authorization: `Bearer ${adminToken}` } });
        if (((await page.json()) as { items: unknown[] }).items.length > 0) break;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      held.release();
      expect(await revoked).toBe(201);
      expect((await first).allow).toBe(true);
      const forged = await leaked.sign({ sub: 'user:forged' }, { key: compromised.privateKey, kid: compromised.kid, iat: now() + 1 });
      expect((await decide(forged)).reasons[0].code).toBe('token_unknown_key');
      expect((await decide(await leaked.sign({ sub: 'user:after' }, { iat: now() + 1 }))).allow).toBe(true);
    });
  });

  it('fetches the key set on an issued_before revocation committed just after a failed fetch, once its back-off is over', async () => {
    // A fetch that failed a moment before (the endpoint blipped) holds every fetch of the issuer
    // back for a second. Refused by that back-off, the revocation's fetch never happened, and the
    // removed key kept verifying until the key set held went stale (jwks_cache_max_age_s).
    await withLeakingIssuer('leaked-after-blip', { jwks_cooldown_s: 1 }, async ({ leaked, decide, revokeIssuedBefore, removeLeakedKey }) => {
      expect((await decide(await leaked.sign({ sub: 'user:before' }))).allow).toBe(true); // key set loaded
      await new Promise((resolve) => setTimeout(resolve, 1100)); // past jwks_cooldown_s: an unknown kid fetches again
      leaked.jwksFailure = { status: 503, body: '{}' };
      expect((await decide(await leaked.sign({ sub: 'user:unknown' }, { kid: 'not-yet-published' }))).reasons[0].code).toBe('token_keys_unavailable');
      leaked.jwksFailure = undefined;
      const compromised = await removeLeakedKey();
      const fetches = leaked.jwksFetches;
      expect(await revokeIssuedBefore({ before: now(), reason: 'key compromised' })).toBe(201);
      expect(leaked.jwksFetches).toBe(fetches + 1);
      const forged = await leaked.sign({ sub: 'user:forged' }, { key: compromised.privateKey, kid: compromised.kid, iat: now() + 1 });
      expect((await decide(forged)).reasons[0].code).toBe('token_unknown_key');
    });
  });

  it('does not remember a verification that was under way with the old keys when the issuer\'s verifications were forgotten', async () => {
    // A decision that took the removed key from the key set held before the revocation's fetch
    // completed, and finished verifying only after the issuer's verifications were forgotten,
    // must not remember its verification: the attacker's token would then verify from memory
    // until it expired, though the key that signed it is gone.
    await withLeakingIssuer('leaked-racing', {}, async ({ leaked, decide, revokeIssuedBefore, removeLeakedKey }) => {
      expect((await decide(await leaked.sign({ sub: 'user:before' }))).allow).toBe(true); // key set loaded
      const compromised = await removeLeakedKey();
      // Minted at the cut-off, so not issued before it: only the key set can stop it.
      const cutOff = now();
      const forged = await leaked.sign({ sub: 'user:forged' }, { key: compromised.privateKey, kid: compromised.kid, iat: cutOff });
      const held = leaked.holdNextFetch();
      const revoked = revokeIssuedBefore({ before: cutOff, reason: 'key compromised' });
      await held.arrived; // committed; the fetch without the key is on its way
      // Signature checks run on libuv's thread pool: keep it busy so the decision below takes the
      // old key now but finishes verifying only after the revocation has answered.
      const busy = Array.from({ length: 8 }, () => new Promise((resolve) => pbkdf2('x', 'y', 400_000, 32, 'sha256', resolve)));
      const racing = decide(forged);
      await new Promise((resolve) => setTimeout(resolve, 100));
      held.release();
      expect(await revoked).toBe(201);
      await racing; // verified with the old key set, which it took before the revocation answered
      await Promise.all(busy);
      expect((await decide(forged)).reasons[0].code).toBe('token_unknown_key');
    });
  });

  it.each([
    ['a point off its curve', 'broken-key', (jwk: JWK): JWK => ({ ...jwk, x: jwk.y })],
    // WebCrypto refuses a public key with a usage other than verify (SyntaxError, not DataError).
    ['key_ops that a public key cannot have', 'sign-ops-key', (jwk: JWK): JWK => ({ ...jwk, key_ops: ['sign', 'verify'] })],
  ])('does not take a published key that cannot be imported (%s) for a failed fetch: the key set is still fetched for a new kid', async (_, name, breakKey) => {
    // A token naming a key of the set that WebCrypto refuses is denied; it says nothing about the
    // JWKS endpoint. Counted as a failed fetch it held every fetch back for a second, and anyone
    // repeating it kept the issuer's new keys out after a rotation.
    await withLeakingIssuer(name, { jwks_cooldown_s: 1 }, async ({ leaked, decide }) => {
      const good = leaked.keys[0]!;
      leaked.keys.push({ ...good, kid: 'broken', publicJwk: { ...breakKey(good.publicJwk), kid: 'broken' } });
      expect((await decide(await leaked.sign({ sub: 'user:before' }))).allow).toBe(true); // key set loaded
      await new Promise((resolve) => setTimeout(resolve, 1100)); // past jwks_cooldown_s
      expect((await decide(await leaked.sign({ sub: 'user:broken' }, { kid: 'broken' }))).reasons[0].code).toBe('token_invalid');
      const rotated = await leaked.addKey('key-rotated');
      const decision = await decide(await leaked.sign({ sub: 'user:rotated' }, { kid: rotated }));
      expect(decision.reasons[0].code).toBe('echo');
    });
  });

  it('forgets remembered verifications of the issuer on an issued_before revocation: the removed key verifies no token at all', async () => {
    // A cut-off at the time of the compromise does not catch a token the attacker minted after
    // it; once the key is gone only verification stops that token, and a verification
    // remembered from before the revocation would have kept it allowed until it expired.
    await withLeakingIssuer('leaked-cached', {}, async ({ leaked, decide, revokeIssuedBefore, removeLeakedKey }) => {
      const forged = await leaked.sign({ sub: 'user:forged' }, { iat: now() - 5 });
      expect((await decide(forged)).allow).toBe(true); // verified, and remembered
      await removeLeakedKey();
      expect(await revokeIssuedBefore({ before: now() - 60, reason: 'key compromised a minute ago' })).toBe(201);
      expect((await decide(forged)).reasons[0].code).toBe('token_unknown_key');
      expect((await decide(await leaked.sign({ sub: 'user:after' }))).allow).toBe(true);
    });
  });

  it('forgets a remembered verification once a key set fetched without its key is installed, revocation or not', async () => {
    // The identity provider removes a compromised key on its own; nobody tells Arbiter's operators.
    // A token the key signed is refused uncached once the key set is fetched again: remembered, it
    // was allowed until it would have expired (max_token_age_s, an hour by default).
    await withLeakingIssuer('leaked-quietly', { jwks_cooldown_s: 1 }, async ({ leaked, decide, removeLeakedKey }) => {
      const forged = await leaked.sign({ sub: 'user:forged' }, { iat: now() - 5 });
      const kept = await leaked.sign({ sub: 'user:kept' }, { iat: now() - 5, kid: await leaked.addKey('key-kept') });
      expect((await decide(forged)).allow).toBe(true); // verified, and remembered
      expect((await decide(kept)).allow).toBe(true);
      await removeLeakedKey();
      await new Promise((resolve) => setTimeout(resolve, 1100)); // past jwks_cooldown_s
      // A token naming the new key fetches the key set again: it no longer holds the leaked key.
      expect((await decide(await leaked.sign({ sub: 'user:after' }, { kid: 'key-2' }))).allow).toBe(true);
      expect((await decide(forged)).reasons[0].code).toBe('token_unknown_key');
      expect((await decide(kept)).allow).toBe(true);
    });
  });

  it('lists, reads and deletes entries; rejects a bad one naming the field', async () => {
    const bad = await admin('POST', '/v1/revocations', { kind: 'jti', reason: 'x' });
    expect(bad.status).toBe(400);
    expect(bad.body!.errors[0].pointer).toBe('/value');
    const batch = await admin('POST', '/v1/revocations', { revocations: [{ kind: 'sub', value: 'a', reason: 'r' }, { kind: 'sub', value: 'b', reason: 'r' }] });
    expect(batch.status).toBe(201);
    const id = batch.body!.revocations[0].id as string;
    expect((await admin('GET', `/v1/revocations/${id}`)).body).toMatchObject({ kind: 'sub', value: 'a', created_by: `${admins.issuer}#ops@example` });
    // Who revoked is Arbiter's to record: a request naming someone else is refused, not believed.
    const forged = await admin('POST', '/v1/revocations', { kind: 'sub', value: 'c', reason: 'r', created_by: 'someone-else' });
    expect(forged.status).toBe(400);
    expect(forged.body!.errors[0].pointer).toBe('/created_by');
    const first = await admin('GET', '/v1/revocations?kind=sub&limit=1');
    expect(first.body!.items).toHaveLength(1);
    const next = await admin('GET', `/v1/revocations?kind=sub&limit=1&cursor=${first.body!.next_cursor}`);
    expect(next.status).toBe(200);
    expect(next.body!.items[0].id).not.toBe(first.body!.items[0].id);
    // A cursor this server never returned is an error, not an empty last page that ends a listing early.
    const garbled = await admin('GET', '/v1/revocations?cursor=not-a-cursor');
    expect(garbled).toMatchObject({ status: 400, body: { code: 'revocation_invalid' } });
    expect(garbled.body!.detail).toContain('cursor');
    expect((await admin('DELETE', `/v1/revocations/${id}`)).status).toBe(204);
    expect((await admin('GET', `/v1/revocations/${id}`)).status).toBe(404);
  });

  it('refuses a list parameter given twice or unknown, naming it, rather than answer another question', async () => {
    // c.req.query() keeps the first of repeated values: kind=sub&kind=jti would list only sub.
    for (const [query, named] of [
      ['kind=sub&kind=jti', 'kind: given more than once'],
      ['limit=1&limit=1000', 'limit: given more than once'],
      ['colour=red', 'colour: unknown parameter'],
      ['limit=0', 'limit: '],
    ] as const) {
      const res = await admin('GET', `/v1/revocations?${query}`);
      expect(res, query).toMatchObject({ status: 400, body: { code: 'revocation_invalid', detail: expect.stringContaining(named) } });
    }
  });

  it('records the author of a revocation whatever the length of the admin\'s sub', async () => {
    // created_by is Arbiter's own `iss#sub`, bounded by tokens.max_token_bytes, not by the 1024
    // characters a request's fields may take: an admin with a long sub must still be able to revoke.
    const sub = `svc:${'x'.repeat(1100)}`;
    const token = await admins.sign({ sub, aud: 'arbiter-admin', scope: 'arbiter.revocations.write' });
    const created = await admin('POST', '/v1/revocations', { kind: 'sub', value: 'user:long-author', reason: 'offboarded', expires_at: now() + 600 }, {}, token);
    expect(created).toMatchObject({ status: 201, body: { created_by: `${admins.issuer}#${sub}` } });
  });

  it('answers 503 data_store_write_failed when a deletion cannot be stored, and the entry still applies', async () => {
    const created = await admin('POST', '/v1/revocations', { kind: 'sub', value: 'user:locked', reason: 'r' });
    const id = created.body!.id as string;
    // Another process holds the write lock past busy_timeout (5 s), as a full disk would fail the write too.
    const refused = await whileLocked(dataPath, () => admin('DELETE', `/v1/revocations/${id}`));
    expect(refused).toMatchObject({ status: 503, body: { code: 'data_store_write_failed' } });
    expect((await admin('GET', `/v1/revocations/${id}`)).status).toBe(200);
    expect((await admin('DELETE', `/v1/revocations/${id}`)).status).toBe(204);
  });

  it('applies to admin tokens too: a revoked admin token is refused', async () => {
    const stolen = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', jti: 'admin-token-7', scope: 'arbiter.data.read' });
    expect((await admin('GET', '/v1/data/pair', undefined, {}, stolen)).status).toBe(200);
    await admin('POST', '/v1/revocations', { kind: 'jti', value: 'admin-token-7', iss: admins.issuer, reason: 'leaked in a ticket' });
    expect(await admin('GET', '/v1/data/pair', undefined, {}, stolen)).toMatchObject({ status: 401, body: { detail: 'token_revoked' } });

    // An admin action delegated to an agent stops once the agent is revoked, as decisions do.
    const delegated = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.data.read', act: { sub: 'agent:ops-bot' } });
    expect((await admin('GET', '/v1/data/pair', undefined, {}, delegated)).status).toBe(200);
    await admin('POST', '/v1/revocations', { kind: 'sub', value: 'agent:ops-bot', reason: 'retired agent' });
    expect(await admin('GET', '/v1/data/pair', undefined, {}, delegated)).toMatchObject({ status: 401, body: { detail: 'token_revoked' } });
  });

  it('refuses a write whose body was still arriving when its admin token was revoked', async () => {
    // A stolen admin token opens writes and holds their bodies back until it is revoked: each was
    // authorized when its headers came, and must not land after the revocation's 2xx.
    const stolen = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', jti: 'admin-token-slow', scope: 'arbiter.data.read arbiter.data.write arbiter.bundles.write' });
    expect((await admin('GET', '/v1/data/pair', undefined, {}, stolen)).status).toBe(200); // verified, remembered
    const held = (method: string, path: string, body: string, contentType = 'application/json') => {
      const request = httpRequest(`${arbiter.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${stolen}`, 'content-type': contentType, 'content-length': Buffer.byteLength(body) },
      });
      const answered = new Promise<{ status: number; body: Record<string, any> }>((resolve, reject) => {
        request.on('error', reject);
        request.on('response', (response) => {
          let text = '';
          response.on('data', (chunk: Buffer) => (text += chunk.toString()));
          response.on('end', () => resolve({ status: response.statusCode!, body: JSON.parse(text) }));
        });
      });
      request.write(body.slice(0, 1));
      return { finish: () => request.end(body.slice(1)), answered };
    };
    const put = held('PUT', '/v1/data/planted', JSON.stringify({ by: 'attacker' }));
    const patch = held('PATCH', '/v1/data/pair', JSON.stringify([{ op: 'add', path: '/planted', value: 'attacker' }]), 'application/json-patch+json');
    // A bundle upload too: refused before its archive is looked at (this one is not even gzip).
    const upload = held('PUT', '/v1/bundles/planted', 'not an archive', 'application/gzip');
    await new Promise((resolve) => setTimeout(resolve, 300)); // all past the admin check, reading their bodies
    const before = (await admin('GET', '/v1/data/pair')).body!.result;
    expect((await admin('POST', '/v1/revocations', { kind: 'jti', value: 'admin-token-slow', iss: admins.issuer, reason: 'leaked' })).status).toBe(201);
    put.finish();
    patch.finish();
    upload.finish();
    expect(await upload.answered).toMatchObject({ status: 401, body: { code: 'unauthorized', detail: 'token_revoked' } });
    expect(await put.answered).toMatchObject({ status: 401, body: { code: 'unauthorized', detail: 'token_revoked' } });
    expect(await patch.answered).toMatchObject({ status: 401, body: { code: 'unauthorized', detail: 'token_revoked' } });
    expect((await admin('GET', '/v1/data/planted')).status).toBe(404);
    expect((await admin('GET', '/v1/data/pair')).body!.result).toEqual(before);
  });

  it('is visible to the very next decision under concurrent load', async () => {
    const token = await idp.sign({ sub: 'user:under-load', jti: 'load-1' });
    let running = true;
    const load = Array.from({ length: 4 }, async () => {
      while (running) await decideWith(await idp.sign({ sub: 'user:background' }));
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    const created = await admin('POST', '/v1/revocations', { kind: 'jti', value: 'load-1', iss: idp.issuer, reason: 'incident' });
    expect(created.status).toBe(201);
    const decision = await decideWith(token);
    running = false;
    await Promise.all(load);
    expect(decision.allow).toBe(false);
  });
});

describe('restart', () => {
  it('starts on revocations of an issuer since removed from the configuration, keeping them and logging them', async () => {
    const path = join(tempDir(), 'data.db');
    const gone = await TestIssuer.create('https://gone.test.example');
    const withGone = await startTestArbiter({ ...config(), issuers: [...config().issuers, { issuer: gone.issuer, jwks_uri: idp.jwksUri, audiences: ['x'], algorithms: ['ES256'] }], data: { path } });
    let entry: Record<string, any>;
    try {
      const created = await adminCall(withGone.url, adminToken, 'POST', '/v1/revocations', { kind: 'issued_before', iss: gone.issuer, before: 1000, reason: 'key leak' });
      expect(created.status).toBe(201);
      entry = created.body as Record<string, any>;
    } finally {
      await withGone.close();
    }
    const { logger, lines } = capturingLogger();
    const without = await startTestArbiter({ ...config(), data: { path } }, { logger });
    try {
      const kept = await adminCall(without.url, adminToken, 'GET', `/v1/revocations/${entry.id}`);
      expect(kept).toMatchObject({ status: 200, body: { id: entry.id, iss: gone.issuer } });
      expect(lines).toContainEqual(expect.objectContaining({ level: 40, iss: gone.issuer, kinds: { issued_before: 1 } }));
    } finally {
      await without.close();
    }
  });

  it('keeps acknowledged data and revocations: a restart never resurrects a revoked token', async () => {
    const token = await idp.sign({ sub: 'user:restart', jti: 'restart-1' });
    await admin('PUT', '/v1/data/pair', { a: 42, b: 42 });
    await admin('POST', '/v1/revocations', { kind: 'jti', value: 'restart-1', reason: 'gone' });
    await arbiter.close();
    arbiter = await startTestArbiter(config());
    const decision = await decideWith(token);
    expect(decision.reasons[0].pair).toEqual({ a: 42, b: 42 });
    expect(decision.allow).toBe(false);
  });
});
