import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { inspectRoutes } from 'hono/dev';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EVALUATION_FAILURE_CODES } from '../src/policy/engine.ts';
import { PROBLEM_TYPES } from '../src/server/openapi/problem-types.ts';
import { decisionResponseSchema, problemSchema } from '../src/server/openapi/schemas.ts';
import { BUNDLE_MEDIA_TYPES } from '../src/server/routes/bundles.ts';
import { decideRequestSchema } from '../src/server/routes/decide.ts';
import type { Arbiter } from '../src/server/start.ts';
import { postJson, startTestArbiter } from './support/arbiter.ts';
import { TestIssuer } from './support/issuer.ts';

// The document is plain JSON read by path; typing each level would only repeat the spec.
 
type Json = Record<string, any>;
const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

let arbiter: Arbiter;
let spec: Json;

beforeAll(async () => {
  // Every optional route mounted, so the comparison covers them too.
  arbiter = await startTestArbiter({ opa_compat: { enabled: true }, metrics: { enabled: true } });
  const res = await fetch(`${arbiter.url}/openapi.json`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  spec = (await res.json()) as Json;
});

afterAll(async () => {
  await arbiter?.close();
});

/** Hono's `:id`, `:rule{.+}` and trailing `*` as OpenAPI templates. */
function openApiPath(honoPath: string): string {
  return honoPath.replace(/:(\w+)(\{[^}]*\})?/g, '{$1}').replace(/\/\*$/, '/{path}');
}

function routesOf(app: Arbiter['app']): Set<string> {
  return new Set(
    inspectRoutes(app)
      .filter((route) => !route.isMiddleware && route.method !== 'ALL')
      .map((route) => `${route.method} ${openApiPath(route.path)}`),
  );
}

function operationsOf(document: Json): Set<string> {
  const operations = new Set<string>();
  for (const [path, item] of Object.entries<Json>(document.paths)) {
    for (const method of Object.keys(item)) operations.add(`${method.toUpperCase()} ${path}`);
  }
  return operations;
}

function* walk(node: unknown): Generator<Json> {
  if (typeof node !== 'object' || node === null) return;
  yield node as Json;
  for (const value of Object.values(node)) yield* walk(value);
}

function resolvePointer(document: Json, ref: string): unknown {
  return ref
    .slice(2)
    .split('/')
    .reduce<unknown>((node, key) => (node as Json | undefined)?.[key.replaceAll('~1', '/').replaceAll('~0', '~')], document);
}

/** The two checks the test needs of a JSON Schema object: required members and no unknown ones. */
function fitsTopLevel(schema: Json, body: Json): boolean {
  const required: string[] = schema.required ?? [];
  if (!required.every((key) => Object.hasOwn(body, key))) return false;
  if (schema.additionalProperties === false && !Object.keys(body).every((key) => Object.hasOwn(schema.properties ?? {}, key))) return false;
  return true;
}

describe('GET /openapi.json', () => {
  it('documents exactly the routes the app serves', () => {
    const served = routesOf(arbiter.app);
    expect(served.size).toBeGreaterThan(20);
    expect([...operationsOf(spec)].sort()).toEqual([...served].sort());
  });

  it('leaves out routes that are not mounted', async () => {
    const minimal = await startTestArbiter({ metrics: { enabled: false } });
    try {
      const document = (await (await fetch(`${minimal.url}/openapi.json`)).json()) as Json;
      expect([...operationsOf(document)].sort()).toEqual([...routesOf(minimal.app)].sort());
      expect(document.paths['/metrics']).toBeUndefined();
      expect(document.paths['/v1/data/{bundle}/{rule}']).toBeUndefined();
    } finally {
      await minimal.close();
    }
  });

  it('is a well-formed OpenAPI 3.1 document', () => {
    expect(spec.openapi).toMatch(/^3\.1\.\d+$/);
    expect(spec.info).toMatchObject({ title: 'Arbiter', version: expect.any(String) });
    const operationIds: string[] = [];
    for (const item of Object.values<Json>(spec.paths)) {
      for (const [method, operation] of Object.entries<Json>(item)) {
        expect(METHODS).toContain(method);
        expect(Object.keys(operation.responses).length, operation.operationId).toBeGreaterThan(0);
        expect(operation.tags.every((tag: string) => spec.tags.some((t: Json) => t.name === tag)), operation.operationId).toBe(true);
        operationIds.push(operation.operationId);
      }
    }
    expect(new Set(operationIds).size).toBe(operationIds.length);
    const refs = [...walk(spec)].map((node) => node.$ref).filter((ref): ref is string => typeof ref === 'string');
    expect(refs.length).toBeGreaterThan(10);
    for (const ref of refs) expect(resolvePointer(spec, ref), ref).toBeDefined();
  });

  it('marks admin operations with their scope and public ones with none', () => {
    expect(spec.paths['/v1/revocations'].post.security).toEqual([{ adminBearer: ['arbiter.revocations.write'] }]);
    expect(spec.paths['/v1/revocations'].post.responses['403'].content['application/problem+json'].schema.allOf[1].properties.code.enum).toContain('forbidden');
    expect(Object.keys(spec.paths['/v1/revocations'].post.responses)).toEqual(expect.arrayContaining(['200', '201'])); // a replay answers 200
    expect(spec.paths['/v1/decide'].post.security).toEqual([]);
    expect(spec.components.securitySchemes.adminBearer).toMatchObject({ type: 'http', scheme: 'bearer' });
  });

  it('describes /v1/decide with the schema the route validates with', () => {
    const body = spec.paths['/v1/decide'].post.requestBody.content['application/json'].schema;
    const schema = resolvePointer(spec, body.$ref) as Json;
    const examples: Json[] = [
      { action: 'read', resource: { type: 'document' } },
      { token: 'a.b.c', action: 'read', resource: { type: 'document', id: '1' }, context: {}, policy: 'simple' },
      { resource: { type: 'document' } },
      { action: 'read' },
      { action: 'read', resource: { type: 'document' }, subject: 'alice' },
      {},
    ];
    for (const example of examples) {
      expect(fitsTopLevel(schema, example), JSON.stringify(example)).toBe(decideRequestSchema.safeParse(example).success);
    }
    expect(schema.properties.action.description).toBe(decideRequestSchema.shape.action.description);
  });

  it('describes what the handlers answer', async () => {
    const allowDeny = await postJson(`${arbiter.url}/v1/decide`, { action: 'read', resource: { type: 'document' } });
    expect(allowDeny.status).toBe(200);
    expect(decisionResponseSchema.safeParse(allowDeny.body).success).toBe(true);

    const invalid = await postJson(`${arbiter.url}/v1/decide`, { action: 'read' });
    expect(invalid.status).toBe(400);
    expect(problemSchema.safeParse(invalid.body).success).toBe(true);
    const documented = spec.paths['/v1/decide'].post.responses['400'].content['application/problem+json'].schema.allOf[1].properties.code.enum;
    expect(documented).toContain(invalid.body!.code);

    // No bundle answers: the documented 503 body is a deny whose data_version is null (no data was read).
    const unavailable = await postJson(`${arbiter.url}/v1/decide`, { action: 'read', resource: { type: 'document' }, policy: 'absent' });
    expect(unavailable.status).toBe(503);
    expect(spec.paths['/v1/decide'].post.responses['503'].content['application/json'].schema.$ref).toBe('#/components/schemas/Decision');
    expect(decisionResponseSchema.safeParse(unavailable.body).success).toBe(true);
  });

  it('documents the archive PUT /v1/bundles/{name} takes, in every media type the route accepts', () => {
    const body = spec.paths['/v1/bundles/{name}'].put.requestBody;
    expect(body?.required).toBe(true);
    expect(Object.keys(body.content).sort()).toEqual([...BUNDLE_MEDIA_TYPES].sort());
  });

  it('documents the JSON Patch PATCH /v1/data/{path} takes in both media types the route accepts, with the same schema', () => {
    const body = spec.paths['/v1/data/{path}'].patch.requestBody;
    expect(body?.required).toBe(true);
    expect(Object.keys(body.content).sort()).toEqual(['application/json', 'application/json-patch+json']);
    expect(body.content['application/json-patch+json'].schema).toEqual(body.content['application/json'].schema);
    expect(body.content['application/json'].schema.$ref).toBe('#/components/schemas/JsonPatch');
  });

  it('lists every problem code with its status', () => {
    const listed = new Map<string, number[]>(spec['x-problem-types'].map((p: Json) => [p.code, p.status]));
    for (const [code, status] of problemCodesInSource()) {
      expect(listed.get(code), `problem code ${code} (${status}) is not in PROBLEM_TYPES`).toContain(status);
    }
    // Routes that answer a failed evaluation as a problem pass its code through (a variable, not a literal).
    for (const code of [...EVALUATION_FAILURE_CODES, 'audit_unavailable']) {
      expect(listed.get(code), `evaluation failure ${code} is not in PROBLEM_TYPES`).toContain(500);
    }
    expect(spec.components.schemas.Problem.description).toContain('| `invalid_request` | 400 |');
    expect(listed.size).toBe(Object.keys(PROBLEM_TYPES).length);
  });
});

/**
 * Codes the server answers with, read from its source: literal `problem(c, <status>, { code: '<code>'`
 * calls and the admin status table. A code added there without documentation fails the test above.
 */
function problemCodesInSource(): [string, number][] {
  const found: [string, number][] = [];
  for (const file of sourceFiles('src/server')) {
    const text = readFileSync(file, 'utf8');
    for (const match of text.matchAll(/problem\(c, (\d{3}), \{\s*code: '([a-z_]+)'/g)) found.push([match[2]!, Number(match[1])]);
  }
  const admin = readFileSync('src/server/admin-errors.ts', 'utf8');
  const table = /STATUS_BY_CODE[^{]*\{([^}]*)\}/.exec(admin)![1]!;
  for (const match of table.matchAll(/(\w+): (\d{3})/g)) found.push([match[1]!, Number(match[2])]);
  expect(found.length).toBeGreaterThan(20);
  return found;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sourceFiles(join(dir, entry.name)) : entry.name.endsWith('.ts') ? [join(dir, entry.name)] : [],
  );
}

describe('methods a path does not serve', () => {
  /** A concrete URL for an OpenAPI path template. */
  const concrete = (path: string) => path.replace(/\{(\w+)\}/g, (_match, name: string) => ({ bundle: 'echo', rule: 'decision', name: 'simple' })[name] ?? 'x');

  it('answers 405 problem+json naming the documented methods in Allow, for every documented path', async () => {
    let checked = 0;
    for (const [path, item] of Object.entries<Json>(spec.paths)) {
      // /v1/data/{bundle}/{rule} is also a /v1/data/{path}: its URL serves the union of both.
      const documented = new Set(
        Object.entries<Json>(spec.paths)
          .filter(([other]) => other === path || (path === '/v1/data/{bundle}/{rule}' && other === '/v1/data/{path}'))
          .flatMap(([, methods]) => Object.keys(methods).map((method) => method.toUpperCase())),
      );
      const allow = [...documented, ...(documented.has('GET') ? ['HEAD'] : [])].sort();
      for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'].filter((m) => !documented.has(m))) {
        const res = await fetch(`${arbiter.url}${concrete(path)}`, { method });
        expect(res.status, `${method} ${path}`).toBe(405);
        expect(res.headers.get('content-type'), `${method} ${path}`).toBe('application/problem+json');
        expect(res.headers.get('allow')?.split(', ').sort(), `${method} ${path}`).toEqual(allow);
        expect(await res.json(), `${method} ${path}`).toMatchObject({ status: 405, code: 'method_not_allowed' });
        checked += 1;
      }
      expect(item).toBeDefined();
    }
    expect(checked).toBeGreaterThan(50);
    expect(spec['x-problem-types'].find((p: Json) => p.code === 'method_not_allowed')).toMatchObject({ status: [405] });
  });

  it('HEAD on a path served only by POST: 405 with Allow, no body', async () => {
    const res = await fetch(`${arbiter.url}/v1/decide`, { method: 'HEAD' });
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('POST');
    expect(await res.text()).toBe('');
  });

  it('a path no route serves stays 404 not_found', async () => {
    const res = await fetch(`${arbiter.url}/v1/nowhere`, { method: 'POST' });
    expect(res.status).toBe(404);
    expect(res.headers.get('allow')).toBeNull();
    expect(await res.json()).toMatchObject({ code: 'not_found' });
  });
});

describe('query parameters of admin operations', () => {
  it('an operation documented without query parameters refuses one before doing anything (400 query_parameter_unknown)', async () => {
    const admins = await TestIssuer.create('https://admins.openapi.test.example');
    await admins.serve();
    const scopes = ['bundles', 'data', 'revocations'].flatMap((family) => [`arbiter.${family}.read`, `arbiter.${family}.write`]);
    const token = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: [...scopes, 'arbiter.decisions.read'].join(' ') });
    const admin = await startTestArbiter({ admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] } });
    try {
      const document = (await (await fetch(`${admin.url}/openapi.json`)).json()) as Json;
      let checked = 0;
      for (const [path, item] of Object.entries<Json>(document.paths)) {
        for (const [method, operation] of Object.entries<Json>(item)) {
          if (!operation.security?.some((scheme: Json) => 'adminBearer' in scheme)) continue;
          if ((operation.parameters ?? []).some((parameter: Json) => parameter.in === 'query')) continue;
          const url = `${admin.url}${path.replace(/\{(\w+)\}/g, (_match, name: string) => ({ name: 'simple', path: 'entitlements' })[name] ?? 'x')}?revision=r1&dry_run=true`;
          const res = await fetch(url, { method: method.toUpperCase(), headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, ...(method !== 'get' && method !== 'delete' && { body: '{}' }) });
          expect(res.status, `${method} ${path}`).toBe(400);
          expect(await res.json(), `${method} ${path}`).toMatchObject({ code: 'query_parameter_unknown', detail: expect.stringContaining('revision: unknown parameter; dry_run: unknown parameter') });
          const documented: string[] = operation.responses['400']?.content['application/problem+json'].schema.allOf[1].properties.code.enum ?? [];
          expect(documented, `${method} ${path}`).toContain('query_parameter_unknown');
          checked += 1;
        }
      }
      expect(checked).toBeGreaterThanOrEqual(15);
      // What was asked was not done: the bundle is still there.
      expect((await fetch(`${admin.url}/v1/bundles/simple`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    } finally {
      await admin.close();
      await admins.close();
    }
  });
});

/** A DOM just large enough for the /docs page's script: elements, attributes, text and ids. */
class FakeElement {
  readonly children: (FakeElement | string)[] = [];
  readonly attributes = new Map<string, string>();
  readonly tag: string;
  constructor(tag: string) {
    this.tag = tag;
  }
  setAttribute(name: string, value: string) {
    this.attributes.set(name, value);
  }
  append(...nodes: (FakeElement | string)[]) {
    this.children.push(...nodes);
  }
  set textContent(value: string) {
    this.children.splice(0, this.children.length, value);
  }
  get textContent(): string {
    return this.children.map((child) => (typeof child === 'string' ? child : child.textContent)).join('');
  }
  *descendants(): Generator<FakeElement> {
    for (const child of this.children) {
      if (typeof child === 'string') continue;
      yield child;
      yield* child.descendants();
    }
  }
  querySelector(tag: string): FakeElement | null {
    for (const node of this.descendants()) if (node.tag === tag) return node;
    return null;
  }
}

/** Runs the /docs page's inline script on `document` (as served) and returns what it rendered. */
async function renderDocsPage(base: string): Promise<FakeElement> {
  const html = await (await fetch(`${base}/docs`)).text();
  const script = /<script>([\s\S]*)<\/script>/.exec(html)![1]!;
  const page = new Map(['title', 'description', 'api'].map((id) => [id, new FakeElement('div')]));
  const document = { createElement: (tag: string) => new FakeElement(tag), getElementById: (id: string) => page.get(id) };
  let rendered!: Promise<unknown>;
  const fetchRelative = (path: string) => (rendered = fetch(new URL(path, `${base}/docs`)));
  new Function('document', 'fetch', script)(document, fetchRelative);
  await rendered;
  // The page renders in the promise's callbacks: let them run.
  await new Promise((resolve) => setTimeout(resolve, 50));
  return page.get('api')!;
}

describe('GET /docs', () => {
  it('says how decision endpoints authenticate, not "No authentication", when gateways must present a key, and renders binary bodies', async () => {
    // The page read only admin scopes from each operation's security: /v1/decide, which needs
    // the gateway's API key, was shown as taking no authentication at all.
    const gated = await startTestArbiter({ gateway: { authentication: 'api_key', api_keys: [{ id: 'edge', sha256: 'ab'.repeat(32) }] } });
    try {
      const api = await renderDocsPage(gated.url);
      const decide = [...api.descendants()].find((node) => node.attributes.get('id') === 'decide')!;
      expect(decide.textContent).not.toContain('No authentication');
      expect(decide.textContent).toContain('X-API-Key');
      const health = [...api.descendants()].find((node) => node.attributes.get('id') === 'getHealth')!;
      expect(health.textContent).toContain('No authentication');
      const bundles = [...api.descendants()].find((node) => node.attributes.get('id') === 'listBundles')!;
      expect(bundles.textContent).toContain('Admin bearer token with scope arbiter.bundles.read');
      // The archive PUT takes has no schema (binary): its description, not "undefined", is shown.
      const put = [...api.descendants()].find((node) => node.attributes.get('id') === 'putBundle')!;
      expect(put.textContent).not.toContain('undefined');
      expect(put.textContent).toContain('The bundle archive as opa build writes it');
    } finally {
      await gated.close();
    }
  });

  it('is a self-contained page that renders the document', async () => {
    const res = await fetch(`${arbiter.url}/docs`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await res.text();
    expect(html).toContain("fetch('openapi.json')");
    // Nothing loaded from elsewhere: it must work offline.
    expect(html).not.toMatch(/<script[^>]+src=|<link[^>]+href=|https?:\/\//);
  });

  it('is served, as /openapi.json is, with headers against framing, sniffing and referrer leaks, and a CSP that allows its own inline script and style only', async () => {
    for (const path of ['/docs', '/openapi.json']) {
      const res = await fetch(`${arbiter.url}${path}`);
      expect(res.headers.get('x-content-type-options'), path).toBe('nosniff');
      expect(res.headers.get('x-frame-options'), path).toBe('DENY');
      expect(res.headers.get('referrer-policy'), path).toBe('no-referrer');
      const csp = parseCsp(res.headers.get('content-security-policy') ?? '');
      expect(csp.get('frame-ancestors'), path).toEqual(["'none'"]);
      expect(csp.get('default-src'), path).toEqual(["'none'"]);
    }
    // The page still works under its CSP: the hashes of its inline script and style are allowed,
    // and nothing else (no 'unsafe-inline'); the script may fetch openapi.json from its origin.
    const res = await fetch(`${arbiter.url}/docs`);
    const html = await res.text();
    const csp = parseCsp(res.headers.get('content-security-policy')!);
    const hashOf = (tag: string) => `'sha256-${createHash('sha256').update(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(html)![1]!).digest('base64')}'`;
    expect(html.match(/<script\b/g)).toHaveLength(1);
    expect(html.match(/<style\b/g)).toHaveLength(1);
    expect(html).not.toMatch(/\sstyle=|\son[a-z]+=/);
    expect(csp.get('script-src')).toEqual([hashOf('script')]);
    expect(csp.get('style-src')).toEqual([hashOf('style')]);
    expect(csp.get('connect-src')).toEqual(["'self'"]);
  });
});

/** A Content-Security-Policy header as its directives and their sources. */
function parseCsp(header: string): Map<string, string[]> {
  return new Map(
    header
      .split(';')
      .map((directive) => directive.trim().split(/\s+/))
      .filter(([name]) => name)
      .map(([name, ...sources]) => [name!, sources]),
  );
}
