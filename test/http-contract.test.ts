import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Arbiter } from '../src/server/start.ts';
import { startTestArbiter, tempDir } from './support/arbiter.ts';
import { build, writeBundleSource } from './support/bundle-sources.ts';
import { TestIssuer } from './support/issuer.ts';
import { resolve, validate } from './support/json-schema.ts';

/**
 * The HTTP contract as a client generated from /openapi.json sees it. For every operation of the
 * document, a valid request and many invalid ones (missing and mistyped fields, unknown fields,
 * other media types, empty, non-JSON and oversized bodies, bad query and path parameters, other
 * methods) are sent to the real server, and every answer must be one the document promises: a
 * status it lists for the operation, the content type it lists for that status, a body that
 * validates against the documented schema (as JSON Schema, test/support/json-schema.ts), a
 * problem code it lists, and a 400 that names the offending field.
 */

// The document and the bodies are plain JSON read by path; typing each level would only repeat the spec.
type Json = Record<string, any>;

const GATEWAY_KEY = 'contract-gateway-key';
const BODY_LIMIT = 16 * 1024;
const DATA_BODY_LIMIT = 64 * 1024;
const ARCHIVE_LIMIT = 2 * 1024 * 1024;
const AUDIENCE = 'https://api.example.com';
const ALL_SCOPES = ['bundles', 'data', 'revocations'].flatMap((family) => [`arbiter.${family}.read`, `arbiter.${family}.write`]).concat('arbiter.decisions.read');

let admins: TestIssuer;
let idp: TestIssuer;
let arbiter: Arbiter;
let spec: Json;
let adminToken: string;
let scopelessToken: string;
let userToken: string;
let decisionId: string;
let archive: Buffer;
let dir: string;

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

beforeAll(async () => {
  admins = await TestIssuer.create('https://admins.contract.test.example');
  idp = await TestIssuer.create('https://idp.contract.test.example');
  await admins.serve();
  await idp.serve();
  arbiter = await startTestArbiter({
    server: { body_limit_bytes: BODY_LIMIT },
    gateway: { authentication: 'api_key', api_keys: [{ id: 'edge', sha256: sha256(GATEWAY_KEY) }] },
    issuers: [{ issuer: idp.issuer, jwks_uri: idp.jwksUri, audiences: [AUDIENCE], algorithms: ['ES256'] }],
    admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
    authzen: { default_bundle: 'todo', tenants: { echo: 'azecho' } },
    opa_compat: { enabled: true },
    metrics: { enabled: true },
    data: { max_body_bytes: DATA_BODY_LIMIT },
    bundles: { limits: { max_compressed_bytes: ARCHIVE_LIMIT } },
  });
  adminToken = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: ALL_SCOPES.join(' ') });
  scopelessToken = await admins.sign({ sub: 'nobody@example', aud: 'arbiter-admin', scope: 'openid' });
  userToken = await idp.sign({ sub: 'user:alice', scope: 'read' });
  spec = (await (await fetch(`${arbiter.url}/openapi.json`)).json()) as Json;
  dir = tempDir('arbiter-contract-');
  archive = build(writeBundleSource(dir, 'contract'), `${dir}/contract.tar.gz`, 'r1');
  // Live data and a recorded decision the read operations find.
  await send({ method: 'PUT', path: '/v1/data/feed/users', headers: adminJson(), body: JSON.stringify({ alice: { roles: ['reader'] } }) });
  const decided = await send({ method: 'POST', path: '/v1/decide', headers: gatewayJson(), body: JSON.stringify({ token: userToken, action: 'read', resource: { type: 'document', id: 'd1' } }) });
  decisionId = (decided.json as Json).decision_id;
});

afterAll(async () => {
  await arbiter?.close();
  await admins?.close();
  await idp?.close();
});

interface Sent {
  /** Another server than the main one. */
  base?: string;
  method: string;
  /** Path and query, as sent. */
  path: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array | ReadableStream<Uint8Array>;
}

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  json?: unknown;
}

const adminJson = (extra: Record<string, string> = {}) => ({ authorization: `Bearer ${adminToken}`, 'content-type': 'application/json', ...extra });
const gatewayJson = (extra: Record<string, string> = {}) => ({ 'x-api-key': GATEWAY_KEY, 'content-type': 'application/json', ...extra });

async function send(sent: Sent): Promise<Answer> {
  const response = await fetch(`${sent.base ?? arbiter.url}${sent.path}`, {
    method: sent.method,
    headers: sent.headers ?? {},
    ...(sent.body !== undefined && { body: sent.body, duplex: 'half' }),
  } as RequestInit);
  const text = await response.text();
  let json: unknown;
  if (/json/.test(response.headers.get('content-type') ?? '') && text !== '') {
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
  }
  return { status: response.status, headers: response.headers, text, json };
}

/** The media type of a Content-Type header, lowercased, without parameters. */
const mediaType = (header: string | null) => (header ?? '').split(';')[0]!.trim().toLowerCase();

/**
 * What in `answer` the document does not promise for `operation` ("GET /v1/bundles/{name}"):
 * empty when the answer conforms. `operation` undefined: the method is not documented at the path.
 */
function violations(operation: string | undefined, sent: Sent, answer: Answer): string[] {
  const found: string[] = [];
  const requestId = answer.headers.get('x-request-id');
  const offered = sent.headers?.['x-request-id'];
  if (!requestId) found.push('no X-Request-ID');
  else if (offered !== undefined && /^[\x21-\x7e]{1,128}$/.test(offered)) {
    if (requestId !== offered) found.push('X-Request-ID not echoed');
  } else if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(requestId)) found.push(`X-Request-ID ${requestId} is neither the one sent nor a generated UUID`);
  // A documented evaluation failure (the OPA data API's policy_error, as OPA answers) is a 500 by design; a fault is not.
  if (answer.status >= 500 && (answer.json as Json | undefined)?.code === 'internal_error') found.push(`server fault: ${answer.text.slice(0, 300)}`);
  if (operation === undefined) {
    if (answer.status !== 405) found.push(`undocumented method answered ${answer.status}, not 405`);
    if (!answer.headers.has('allow')) found.push('405 without Allow');
    if (sent.method !== 'HEAD') found.push(...bodyViolations({ 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } }, answer));
    return found;
  }
  const [method, path] = operation.split(' ') as [string, string];
  const documented: Json | undefined = spec.paths[path]?.[method.toLowerCase()];
  if (documented === undefined) return [`${operation} is not in the document`];
  const response: Json | undefined = documented.responses[String(answer.status)];
  if (response === undefined) return [...found, `status ${answer.status} is not documented (${Object.keys(documented.responses).join(', ')}): ${answer.text.slice(0, 300)}`];
  const documentedHeaders = new Set(Object.keys(response.headers ?? {}).map((name) => name.toLowerCase()));
  for (const name of MEANINGFUL_HEADERS) {
    if (answer.headers.has(name) && !documentedHeaders.has(name)) found.push(`${answer.status} answers ${name}, which the document does not list for it`);
  }
  for (const [name, header] of Object.entries<Json>(response.headers ?? {})) {
    const resolved = header.$ref ? (resolve(spec, header.$ref) as Json) : header;
    if (resolved.required === true && !answer.headers.has(name)) found.push(`${answer.status} lacks the required header ${name}`);
  }
  if (sent.method === 'HEAD') return found;
  found.push(...bodyViolations(response.content, answer));
  return found;
}

/** Response headers a client acts on: each one an answer carries must be documented for its status. */
const MEANINGFUL_HEADERS = ['etag', 'location', 'retry-after', 'www-authenticate', 'accept-encoding', 'vary'];

function bodyViolations(content: Json | undefined, answer: Answer): string[] {
  if (content === undefined) {
    return answer.text === '' ? [] : [`${answer.status} is documented without a body but has one: ${answer.text.slice(0, 200)}`];
  }
  const type = mediaType(answer.headers.get('content-type'));
  const media: Json | undefined = content[type];
  if (media === undefined) return [`${answer.status} answered ${JSON.stringify(answer.headers.get('content-type'))}, documented ${Object.keys(content).join(', ')}`];
  if (type === 'application/json' || type.endsWith('+json')) {
    if (answer.json === undefined) return [`${answer.status} ${type} body is not JSON: ${answer.text.slice(0, 200)}`];
    const errors = validate(media.schema ?? {}, answer.json, spec);
    return errors.length === 0 ? [] : [`${answer.status} body does not fit the documented schema: ${errors.slice(0, 5).join('; ')} in ${answer.text.slice(0, 300)}`];
  }
  if (type === 'application/x-ndjson') {
    const bad = answer.text.split('\n').filter((line) => line !== '').filter((line) => {
      try {
        JSON.parse(line);
        return false;
      } catch {
        return true;
      }
    });
    return bad.length === 0 ? [] : [`NDJSON lines that are not JSON: ${bad[0]!.slice(0, 100)}`];
  }
  return [];
}

/** A request that should be refused, with the status and the field the refusal must name. */
interface Refusal extends Sent {
  label: string;
  status?: number | number[];
  code?: string;
  /** A JSON pointer `errors` must hold (or the detail name), for a refusal of one field. */
  names?: string;
}

interface Accepted extends Sent {
  label: string;
  /** The 2xx (or documented non-problem) status expected. */
  status: number | number[];
}

/**
 * Sends each request and collects what breaks the contract, labelled: an expectation
 * that is not met, or an answer the document does not promise.
 */
async function check(operation: string | undefined, requests: (Refusal | Accepted)[]): Promise<string[]> {
  const found: string[] = [];
  for (const request of requests) {
    const answer = await send(request);
    const problems = violations(operation, request, answer);
    const statuses = request.status === undefined ? undefined : [request.status].flat();
    if (statuses !== undefined && !statuses.includes(answer.status)) problems.push(`expected ${statuses.join(' or ')}, got ${answer.status}: ${answer.text.slice(0, 300)}`);
    const body = answer.json as Json | undefined;
    if ('code' in request && request.code !== undefined && request.method !== 'HEAD' && body?.code !== request.code) problems.push(`expected code ${request.code}, got ${String(body?.code)}`);
    if ('names' in request && request.names !== undefined && answer.status === 400) {
      const pointers: string[] = (body?.errors ?? []).map((error: Json) => error.pointer);
      const named = pointers.some((pointer) => pointer === request.names || pointer.startsWith(`${request.names}/`)) || String(body?.detail ?? '').includes(request.names);
      if (!named) problems.push(`does not name ${request.names}: ${answer.text.slice(0, 300)}`);
    }
    if (answer.status === 400 && body?.code === 'invalid_request' && !(body.errors?.length > 0)) problems.push(`invalid_request without errors: ${answer.text.slice(0, 200)}`);
    found.push(...problems.map((problem) => `${request.label}: ${request.method} ${request.path.slice(0, 120)}: ${problem}`));
  }
  return found;
}

/** The request body schema of a documented JSON operation, with its $ref resolved. */
function bodySchema(operation: string): Json | undefined {
  const [method, path] = operation.split(' ') as [string, string];
  const schema = spec.paths[path][method.toLowerCase()].requestBody?.content?.['application/json']?.schema;
  return schema?.$ref ? (resolve(spec, schema.$ref) as Json) : schema;
}

/** A value of a type the property's schema does not allow. */
function wrongTypeFor(property: Json): unknown {
  const schema = property.$ref ? (resolve(spec, property.$ref) as Json) : property;
  switch (schema.type) {
    case 'string':
      return 12345;
    case 'integer':
    case 'number':
      return 'twelve';
    case 'boolean':
      return 'yes';
    case 'array':
      return { not: 'an array' };
    case 'object':
      return 'not an object';
    default:
      return undefined;
  }
}

interface JsonOperation {
  /** "POST /v1/decide" */
  operation: string;
  path: string;
  body: unknown;
  headers: Record<string, string>;
  /** The status of the valid request. */
  ok: number | number[];
  limit: number;
  /** The status for a body that is not JSON (AuthZEN answers 400). */
  mediaStatus?: number;
  /** The operation reads `Content-Encoding: gzip` bodies (the OPA data API, as OPA does). */
  gzip?: boolean;
}

/**
 * The malformed-body refusals every JSON operation must answer as documented: media types,
 * encodings, empty, non-JSON, oversized, and fields the document's schema refuses.
 */
function bodyVariants(op: JsonOperation): (Refusal | Accepted)[] {
  const valid = JSON.stringify(op.body);
  const base = { method: op.operation.split(' ')[0]!, path: op.path };
  const headers = (contentType?: string, extra: Record<string, string> = {}) => {
    const { 'content-type': _type, ...rest } = op.headers;
    return { ...rest, ...(contentType !== undefined && { 'content-type': contentType }), ...extra };
  };
  const media = op.mediaStatus ?? 415;
  const variants: (Refusal | Accepted)[] = [
    { ...base, label: 'valid', headers: headers('application/json'), body: valid, status: op.ok },
    { ...base, label: 'charset parameter', headers: headers('application/json; charset=utf-8'), body: valid, status: op.ok },
    { ...base, label: 'other casing', headers: headers('Application/JSON;Charset="UTF-8"'), body: valid, status: op.ok },
    { ...base, label: 'UTF-8 BOM', headers: headers('application/json'), body: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(valid)]), status: op.ok },
    { ...base, label: 'no content type', headers: headers(undefined), body: valid, status: media, code: 'unsupported_media_type' },
    { ...base, label: 'text/plain', headers: headers('text/plain'), body: valid, status: media, code: 'unsupported_media_type' },
    { ...base, label: 'form', headers: headers('application/x-www-form-urlencoded'), body: 'a=b', status: media, code: 'unsupported_media_type' },
    ...(op.gzip
      ? [
          { ...base, label: 'gzip encoded', headers: headers('application/json', { 'content-encoding': 'gzip' }), body: new Uint8Array(gzipSync(valid)), status: op.ok },
          { ...base, label: 'labelled gzip, not gzip', headers: headers('application/json', { 'content-encoding': 'gzip' }), body: valid, status: 400, code: 'malformed_json' },
          { ...base, label: 'gzip inflating past the limit', headers: headers('application/json', { 'content-encoding': 'gzip' }), body: new Uint8Array(gzipSync(`${' '.repeat(op.limit + 1 - Buffer.byteLength(valid))}${valid}`)), status: 413, code: 'body_too_large' },
          { ...base, label: 'brotli encoded', headers: headers('application/json', { 'content-encoding': 'br' }), body: valid, status: media, code: 'unsupported_media_type' },
        ]
      : [{ ...base, label: 'gzip encoded', headers: headers('application/json', { 'content-encoding': 'gzip' }), body: valid, status: media, code: 'unsupported_media_type' }]),
    { ...base, label: 'empty body', headers: headers('application/json'), body: '', status: 400, code: 'malformed_json' },
    { ...base, label: 'no body', headers: headers('application/json'), status: 400, code: 'malformed_json' },
    { ...base, label: 'not JSON', headers: headers('application/json'), body: 'not json', status: 400, code: 'malformed_json' },
    { ...base, label: 'truncated JSON', headers: headers('application/json'), body: valid.slice(0, -1), status: 400, code: 'malformed_json' },
    { ...base, label: 'invalid UTF-8', headers: headers('application/json'), body: Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]), status: 400, code: 'malformed_json' },
    { ...base, label: 'at the size limit', headers: headers('application/json'), body: `${' '.repeat(op.limit - Buffer.byteLength(valid))}${valid}`, status: op.ok },
    { ...base, label: 'at the size limit, chunked', headers: headers('application/json'), body: chunked(`${' '.repeat(op.limit - Buffer.byteLength(valid))}${valid}`), status: op.ok },
    { ...base, label: 'one byte over the size limit', headers: headers('application/json'), body: `${' '.repeat(op.limit + 1 - Buffer.byteLength(valid))}${valid}`, status: 413 },
    { ...base, label: 'oversized', headers: headers('application/json'), body: `${' '.repeat(op.limit)}${valid}`, status: 413, code: op.operation === 'PUT /v1/bundles/{name}' ? 'archive_compressed_too_large' : 'body_too_large' },
    { ...base, label: 'oversized, chunked', headers: headers('application/json'), body: chunked(`${' '.repeat(op.limit)}${valid}`), status: 413 },
    { ...base, label: 'nested too deep', headers: headers('application/json'), body: `${'['.repeat(70)}${']'.repeat(70)}`, status: 400 },
    { ...base, label: 'lone surrogate', headers: headers('application/json'), body: '{"\\ud800": 1}', status: 400 },
    { ...base, label: 'number out of range', headers: headers('application/json'), body: '{"n": 1e400}', status: 400 },
  ];
  const schema = bodySchema(op.operation);
  if (schema?.type === 'object' && typeof op.body === 'object' && op.body !== null && !Array.isArray(op.body)) {
    const body = op.body as Json;
    const json = (value: unknown) => ({ ...base, headers: headers('application/json'), body: JSON.stringify(value) });
    variants.push({ ...json([body]), label: 'array for object', status: 400, code: 'invalid_request' });
    variants.push({ ...json(null), label: 'null for object', status: 400, code: 'invalid_request' });
    variants.push({ ...json('text'), label: 'string for object', status: 400, code: 'invalid_request' });
    if (schema.additionalProperties === false) variants.push({ ...json({ ...body, zz_unknown: 1 }), label: 'unknown field', status: 400, code: 'invalid_request', names: '/zz_unknown' });
    else variants.push({ ...json({ ...body, zz_unknown: 1 }), label: 'unknown field, ignored', status: op.ok });
    for (const name of schema.required ?? []) {
      const { [name]: _dropped, ...rest } = body;
      variants.push({ ...json(rest), label: `missing ${name}`, status: 400, code: 'invalid_request', names: `/${name}` });
    }
    for (const [name, property] of Object.entries<Json>(schema.properties ?? {})) {
      const wrong = wrongTypeFor(property);
      if (wrong === undefined) continue;
      variants.push({ ...json({ ...body, [name]: wrong }), label: `wrong type of ${name}`, status: 400, code: 'invalid_request', names: `/${name}` });
      // One level down: the members of an object the valid body sends.
      const inner = property.$ref ? (resolve(spec, property.$ref) as Json) : property;
      const sent = body[name];
      if (inner.type !== 'object' || typeof sent !== 'object' || sent === null || Array.isArray(sent)) continue;
      for (const [member, memberSchema] of Object.entries<Json>(inner.properties ?? {})) {
        const wrongMember = wrongTypeFor(memberSchema);
        if (wrongMember === undefined) continue;
        variants.push({ ...json({ ...body, [name]: { ...sent, [member]: wrongMember } }), label: `wrong type of ${name}.${member}`, status: 400, code: 'invalid_request', names: `/${name}/${member}` });
      }
      for (const member of inner.required ?? []) {
        const { [member]: _dropped, ...rest } = sent as Json;
        variants.push({ ...json({ ...body, [name]: rest }), label: `missing ${name}.${member}`, status: 400, code: 'invalid_request', names: `/${name}/${member}` });
      }
      if (inner.additionalProperties === false) {
        variants.push({ ...json({ ...body, [name]: { ...sent, zz_unknown: 1 } }), label: `unknown field in ${name}`, status: 400, code: 'invalid_request', names: `/${name}/zz_unknown` });
      }
    }
  }
  return variants;
}

function chunked(text: string): ReadableStream<Uint8Array> {
  const bytes = Buffer.from(text);
  let offset = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (offset >= bytes.length) return controller.close();
      controller.enqueue(new Uint8Array(bytes.subarray(offset, offset + 8192)));
      offset += 8192;
    },
  });
}

/** Refusals of the caller every admin operation answers: no token, a bad one, one without the scope. */
function adminVariants(method: string, path: string, extra: Record<string, string> = {}): Refusal[] {
  return [
    { label: 'no admin token', method, path, headers: extra, status: 401, code: 'unauthorized' },
    { label: 'garbage admin token', method, path, headers: { ...extra, authorization: 'Bearer not.a.token' }, status: 401, code: 'unauthorized' },
    { label: 'basic auth', method, path, headers: { ...extra, authorization: 'Basic b3BzOnB3' }, status: 401, code: 'unauthorized' },
    { label: 'decision token as admin token', method, path, headers: { ...extra, authorization: `Bearer ${userToken}` }, status: 401, code: 'unauthorized' },
    { label: 'token without the scope', method, path, headers: { ...extra, authorization: `Bearer ${scopelessToken}` }, status: 403, code: 'forbidden' },
  ];
}

function gatewayVariants(method: string, path: string, body: string, extra: Record<string, string> = {}): Refusal[] {
  const headers = { 'content-type': 'application/json', ...extra };
  return [
    { label: 'no gateway key', method, path, headers, body, status: 401, code: 'gateway_unauthenticated' },
    { label: 'unknown gateway key', method, path, headers: { ...headers, 'x-api-key': 'guessed' }, body, status: 401, code: 'gateway_unauthenticated' },
    { label: 'gateway key as ApiKey authorization', method, path, headers: { ...headers, authorization: `ApiKey ${GATEWAY_KEY}` }, body, status: [200, 503] },
  ];
}

/** Path parameter values a client could send: each must be answered as documented, never a 500. */
const ODD_SEGMENTS = ['%FF', '%00', '%E2%82%AC', 'UPPER', 'a%2Fb', `${'x'.repeat(2000)}`, '%20', '~', 'a;b', "'", '%25'];

/** Every documented method other than `method` at a path is a 405 with Allow; the rest of the methods too. */
function otherMethods(path: string, documented: string[]): Refusal[] {
  return ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']
    .filter((method) => !documented.includes(method))
    .map((method) => ({ label: `method ${method}`, method, path, status: 405, code: 'method_not_allowed' }));
}

const expectConforming = (found: string[]) => expect(found, found.join('\n')).toEqual([]);

describe('every documented operation answers as documented', () => {
  it('covers every operation of the document', () => {
    const documented = Object.entries<Json>(spec.paths).flatMap(([path, item]) => Object.keys(item).map((method) => `${method.toUpperCase()} ${path}`));
    expect(documented.sort()).toEqual([...COVERED].sort());
  });

  it('gives every JSON answer a schema a client can be generated from', () => {
    const unconstrained: string[] = [];
    for (const [path, item] of Object.entries<Json>(spec.paths)) {
      for (const [method, operation] of Object.entries<Json>(item)) {
        // The document describes itself by its own standard.
        if (operation.operationId === 'getOpenApiDocument') continue;
        for (const [status, response] of Object.entries<Json>(operation.responses)) {
          const schema = response.content?.['application/json']?.schema;
          if (schema !== undefined && Object.keys(schema).length === 0) unconstrained.push(`${method.toUpperCase()} ${path} ${status}`);
        }
      }
    }
    expectConforming(unconstrained);
  });

  it('documents the X-Request-ID every operation reads and every answer carries', () => {
    const missing: string[] = [];
    for (const [path, item] of Object.entries<Json>(spec.paths)) {
      for (const [method, operation] of Object.entries<Json>(item)) {
        const parameter = (operation.parameters ?? []).find((p: Json) => p.in === 'header' && p.name.toLowerCase() === 'x-request-id');
        if (parameter === undefined) missing.push(`${method.toUpperCase()} ${path}: no X-Request-ID parameter`);
        for (const [status, response] of Object.entries<Json>(operation.responses)) {
          const header = Object.entries<Json>(response.headers ?? {}).find(([name]) => name.toLowerCase() === 'x-request-id')?.[1];
          if (header === undefined) missing.push(`${method.toUpperCase()} ${path} ${status}: no X-Request-ID response header`);
          else if ((header.$ref ? (resolve(spec, header.$ref) as Json) : header).schema?.type !== 'string') missing.push(`${method.toUpperCase()} ${path} ${status}: X-Request-ID without a string schema`);
        }
      }
    }
    expectConforming(missing);
  });

  it('GET /healthz, /readyz, /openapi.json, /docs, /metrics', async () => {
    const found: string[] = [];
    for (const path of ['/healthz', '/readyz', '/openapi.json', '/docs', '/metrics']) {
      found.push(...(await check(`GET ${path}`, [
        { label: 'valid', method: 'GET', path, status: 200 },
        { label: 'HEAD', method: 'HEAD', path, status: 200 },
        { label: 'query parameter', method: 'GET', path: `${path}?x=1`, status: 200 },
      ])));
      found.push(...(await check(undefined, otherMethods(path, ['GET', 'HEAD']))));
    }
    expectConforming(found);
  });

  it('POST /v1/decide', async () => {
    const body = { token: userToken, action: 'read', resource: { type: 'document', id: 'd1', properties: { a: 1 } }, context: { purpose: 'x' } };
    const op: JsonOperation = { operation: 'POST /v1/decide', path: '/v1/decide', body, headers: gatewayJson(), ok: 200, limit: BODY_LIMIT };
    const found = await check(op.operation, [
      ...bodyVariants(op),
      ...gatewayVariants('POST', '/v1/decide', JSON.stringify(body)),
      { label: 'no bundle', method: 'POST', path: '/v1/decide', headers: gatewayJson(), body: JSON.stringify({ ...body, policy: 'absent' }), status: 503 },
      { label: 'bad bundle name', method: 'POST', path: '/v1/decide', headers: gatewayJson(), body: JSON.stringify({ ...body, policy: 'Not A Name' }), status: 400, names: '/policy' },
      { label: 'empty action', method: 'POST', path: '/v1/decide', headers: gatewayJson(), body: JSON.stringify({ ...body, action: '' }), status: 400, names: '/action' },
      { label: 'resource without type', method: 'POST', path: '/v1/decide', headers: gatewayJson(), body: JSON.stringify({ ...body, resource: {} }), status: 400, names: '/resource/type' },
      { label: 'unknown resource field', method: 'POST', path: '/v1/decide', headers: gatewayJson(), body: JSON.stringify({ ...body, resource: { type: 'd', owner: 'x' } }), status: 400, names: '/resource/owner' },
      { label: 'bad token', method: 'POST', path: '/v1/decide', headers: gatewayJson(), body: JSON.stringify({ ...body, token: 'garbage' }), status: 200 },
      { label: 'query parameter', method: 'POST', path: '/v1/decide?debug=1', headers: gatewayJson(), body: JSON.stringify(body), status: 200 },
      { label: 'request id', method: 'POST', path: '/v1/decide', headers: gatewayJson({ 'x-request-id': 'contract-42' }), body: JSON.stringify(body), status: 200 },
      { label: 'unprintable request id', method: 'POST', path: '/v1/decide', headers: gatewayJson({ 'x-request-id': 'a b' }), body: JSON.stringify(body), status: 200 },
      { label: 'request id too long', method: 'POST', path: '/v1/decide', headers: gatewayJson({ 'x-request-id': 'r'.repeat(129) }), body: JSON.stringify(body), status: 200 },
      { label: 'request id at the limit', method: 'POST', path: '/v1/decide', headers: gatewayJson({ 'x-request-id': 'r'.repeat(128) }), body: JSON.stringify(body), status: 200 },
    ]);
    found.push(...(await check(undefined, otherMethods('/v1/decide', ['POST']))));
    expectConforming(found);
  });

  it('POST /v1/issuance', async () => {
    const body = { token: userToken, client_id: 'svc', subject: 'user:alice', scopes: ['invoices.read'], audience: AUDIENCE, purpose: 'x', context: {} };
    const op: JsonOperation = { operation: 'POST /v1/issuance', path: '/v1/issuance', body, headers: gatewayJson(), ok: 200, limit: BODY_LIMIT };
    const found = await check(op.operation, [
      ...bodyVariants(op),
      ...gatewayVariants('POST', '/v1/issuance', JSON.stringify(body)),
      { label: 'scope with a space', method: 'POST', path: '/v1/issuance', headers: gatewayJson(), body: JSON.stringify({ ...body, scopes: ['a b'] }), status: 400, names: '/scopes/0' },
      { label: 'no bundle', method: 'POST', path: '/v1/issuance', headers: gatewayJson(), body: JSON.stringify({ ...body, policy: 'absent' }), status: 503 },
      { label: 'bundle without issuance', method: 'POST', path: '/v1/issuance', headers: gatewayJson(), body: JSON.stringify({ ...body, policy: 'simple' }), status: 200 },
    ]);
    found.push(...(await check(undefined, otherMethods('/v1/issuance', ['POST']))));
    expectConforming(found);
  });

  it('GET /.well-known/authzen-configuration', async () => {
    const path = '/.well-known/authzen-configuration';
    const found = await check(`GET ${path}`, [
      { label: 'valid', method: 'GET', path, status: 200 },
      { label: 'tenant', method: 'GET', path, headers: { 'x-tenant': 'echo' }, status: 200 },
      { label: 'unknown tenant', method: 'GET', path, headers: { 'x-tenant': 'nobody' }, status: 200 },
      { label: 'HEAD', method: 'HEAD', path, status: 200 },
    ]);
    found.push(...(await check(undefined, otherMethods(path, ['GET', 'HEAD']))));
    expectConforming(found);
  });

  const rick = 'CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs';
  const subject = { type: 'user', id: rick };
  const authzenCases: [string, unknown, number][] = [
    ['/access/v1/evaluation', { subject, action: { name: 'can_create_todo' }, resource: { type: 'todo', id: 't1' }, context: {} }, 200],
    ['/access/v1/evaluations', { subject, action: { name: 'can_create_todo' }, evaluations: [{ resource: { type: 'todo', id: 't1' } }], options: { evaluations_semantic: 'execute_all' } }, 200],
    ['/access/v1/search/subject', { subject: { type: 'user' }, action: { name: 'can_create_todo' }, resource: { type: 'todo', id: 't1' }, page: { limit: 1 } }, 200],
    ['/access/v1/search/resource', { subject, action: { name: 'can_read_user' }, resource: { type: 'user' } }, 200],
    ['/access/v1/search/action', { subject, resource: { type: 'todo', id: 't1' } }, 200],
  ];
  it.each(authzenCases)('POST %s', async (path, body) => {
    const op: JsonOperation = { operation: `POST ${path}`, path, body, headers: gatewayJson(), ok: 200, limit: BODY_LIMIT, mediaStatus: 400 };
    const json = JSON.stringify(body);
    const found = await check(op.operation, [
      ...bodyVariants(op),
      ...gatewayVariants('POST', path, json).map((variant) => (variant.status === 401 ? variant : { ...variant, status: 200 })),
      { label: 'tenant without a bundle', method: 'POST', path, headers: gatewayJson({ 'x-tenant': 'nobody' }), body: json, status: [503, 501] },
      { label: 'tenant conflict', method: 'POST', path, headers: gatewayJson({ 'x-tenant': 'echo' }), body: JSON.stringify({ ...(body as Json), context: { tenant: 'other' } }), status: 400, names: '/context/tenant' },
      { label: 'subject without id', method: 'POST', path, headers: gatewayJson(), body: JSON.stringify({ ...(body as Json), subject: { type: 'user' } }), status: path.endsWith('/subject') ? 200 : 400, names: '/subject/id' },
      { label: 'page token forged', method: 'POST', path, headers: gatewayJson(), body: JSON.stringify({ ...(body as Json), page: { token: 'bm90IGEgdG9rZW4' } }), status: path.includes('/search/') ? 400 : 200 },
      { label: 'page limit zero', method: 'POST', path, headers: gatewayJson(), body: JSON.stringify({ ...(body as Json), page: { limit: 0 } }), status: path.includes('/search/') ? 400 : 200, names: '/page/limit' },
    ]);
    found.push(...(await check(undefined, otherMethods(path, ['POST']))));
    expectConforming(found);
  });

  it('GET/PUT/PATCH/DELETE /v1/data/{path}', async () => {
    const template = '/v1/data/{path}';
    const found: string[] = [];
    const putOp: JsonOperation = { operation: `PUT ${template}`, path: '/v1/data/feed/put', body: { a: [1, 2], b: { c: 'd' } }, headers: adminJson(), ok: 200, limit: DATA_BODY_LIMIT };
    found.push(...(await check(putOp.operation, [
      ...bodyVariants(putOp).filter((variant) => !['nested too deep'].includes(variant.label)),
      ...adminVariants('PUT', putOp.path, { 'content-type': 'application/json' }).map((variant) => ({ ...variant, body: '{}' })),
      { label: 'nested too deep', method: 'PUT', path: putOp.path, headers: adminJson(), body: `${'['.repeat(70)}${']'.repeat(70)}`, status: 400, code: 'data_too_deep' },
      { label: 'bundle root', method: 'PUT', path: '/v1/data/simple', headers: adminJson(), body: '{}', status: 409 },
      { label: 'if-match stale', method: 'PUT', path: putOp.path, headers: adminJson({ 'if-match': '"0"' }), body: '{}', status: 412 },
      { label: 'bad max age', method: 'PUT', path: putOp.path, headers: adminJson({ 'arbiter-data-max-age': 'soon' }), body: '{}', status: 400, code: 'data_meta_invalid' },
      { label: 'empty key', method: 'PUT', path: '/v1/data/feed//x', headers: adminJson(), body: '{}', status: 400, code: 'data_path_invalid' },
      { label: 'query parameter', method: 'PUT', path: `${putOp.path}?x=1`, headers: adminJson(), body: '{}', status: 400, code: 'query_parameter_unknown' },
      ...ODD_SEGMENTS.map((segment): Refusal => ({ label: `segment ${segment.slice(0, 10)}`, method: 'PUT', path: `/v1/data/feed/${segment}`, headers: adminJson(), body: '{}' })),
    ])));
    const patchOp: JsonOperation = { operation: `PATCH ${template}`, path: '/v1/data/feed/put', body: [{ op: 'replace', path: '/b/c', value: 'e' }], headers: adminJson(), ok: 200, limit: DATA_BODY_LIMIT };
    found.push(...(await check(patchOp.operation, [
      ...bodyVariants(patchOp).filter((variant) => !['nested too deep', 'lone surrogate', 'number out of range'].includes(variant.label)),
      ...adminVariants('PATCH', patchOp.path, { 'content-type': 'application/json' }).map((variant) => ({ ...variant, body: '[]' })),
      { label: 'json-patch media type', method: 'PATCH', path: patchOp.path, headers: adminJson({ 'content-type': 'application/json-patch+json' }), body: JSON.stringify(patchOp.body), status: 200 },
      { label: 'not a patch', method: 'PATCH', path: patchOp.path, headers: adminJson(), body: '{"op": "add"}', status: 400 },
      { label: 'unknown op', method: 'PATCH', path: patchOp.path, headers: adminJson(), body: '[{"op": "frobnicate", "path": "/a"}]', status: 400, names: '/0' },
      { label: 'missing value', method: 'PATCH', path: patchOp.path, headers: adminJson(), body: '[{"op": "add", "path": "/a"}]', status: 400, names: '/0/value' },
      { label: 'path not found', method: 'PATCH', path: patchOp.path, headers: adminJson(), body: '[{"op": "remove", "path": "/nowhere/x"}]', status: 409 },
      { label: 'test failed', method: 'PATCH', path: patchOp.path, headers: adminJson(), body: '[{"op": "test", "path": "/b/c", "value": "zzz"}]', status: 409 },
      { label: 'no document', method: 'PATCH', path: '/v1/data/feed/absent', headers: adminJson(), body: '[]', status: 404 },
      { label: 'nested too deep', method: 'PATCH', path: patchOp.path, headers: adminJson(), body: `${'['.repeat(70)}${']'.repeat(70)}`, status: 400 },
      ...ODD_SEGMENTS.map((segment): Refusal => ({ label: `segment ${segment.slice(0, 10)}`, method: 'PATCH', path: `/v1/data/feed/${segment}`, headers: adminJson(), body: '[]' })),
    ])));
    found.push(...(await check(`GET ${template}`, [
      { label: 'valid', method: 'GET', path: '/v1/data/feed/users', headers: adminJson(), status: 200 },
      { label: 'root', method: 'GET', path: '/v1/data/', headers: adminJson(), status: 200 },
      { label: 'bundle data', method: 'GET', path: '/v1/data/simple', headers: adminJson(), status: [200, 404] },
      { label: 'HEAD', method: 'HEAD', path: '/v1/data/feed/users', headers: adminJson(), status: 200 },
      { label: 'absent', method: 'GET', path: '/v1/data/feed/absent', headers: adminJson(), status: 404 },
      { label: 'deep path', method: 'GET', path: `/v1/data/${Array.from({ length: 300 }, () => 'k').join('/')}`, headers: adminJson(), status: [400, 404] },
      { label: 'query parameter', method: 'GET', path: '/v1/data/feed/users?input=1', headers: adminJson(), status: 400, code: 'query_parameter_unknown' },
      ...adminVariants('GET', '/v1/data/feed/users'),
      ...ODD_SEGMENTS.map((segment): Refusal => ({ label: `segment ${segment.slice(0, 10)}`, method: 'GET', path: `/v1/data/feed/${segment}`, headers: adminJson() })),
    ])));
    found.push(...(await check(`DELETE ${template}`, [
      { label: 'valid', method: 'DELETE', path: '/v1/data/feed/put', headers: adminJson(), status: 204 },
      { label: 'absent', method: 'DELETE', path: '/v1/data/feed/put', headers: adminJson(), status: 404 },
      { label: 'bundle root', method: 'DELETE', path: '/v1/data/simple', headers: adminJson(), status: 409 },
      { label: 'deep path', method: 'DELETE', path: `/v1/data/${Array.from({ length: 300 }, () => 'k').join('/')}`, headers: adminJson(), status: [400, 404] },
      { label: 'if-match stale', method: 'DELETE', path: '/v1/data/feed/users', headers: adminJson({ 'if-match': '"0"' }), status: 412 },
      ...adminVariants('DELETE', '/v1/data/feed/users'),
      ...ODD_SEGMENTS.map((segment): Refusal => ({ label: `segment ${segment.slice(0, 10)}`, method: 'DELETE', path: `/v1/data/feed/${segment}`, headers: adminJson() })),
    ])));
    found.push(...(await check(undefined, [
      { label: 'POST on live data', method: 'POST', path: '/v1/data', headers: adminJson(), body: '{}', status: 405 },
      { label: 'OPTIONS', method: 'OPTIONS', path: '/v1/data/feed/users', status: 405 },
    ])));
    expectConforming(found);
  });

  it('POST /v1/revocations, GET /v1/revocations, GET/DELETE /v1/revocations/{id}', async () => {
    const found: string[] = [];
    const single = { kind: 'jti', value: 'jti-contract', reason: 'contract test' };
    // The first valid variant creates the entry (201); the others restate it, answered 200 with it.
    const op: JsonOperation = { operation: 'POST /v1/revocations', path: '/v1/revocations', body: single, headers: adminJson(), ok: [200, 201], limit: DATA_BODY_LIMIT };
    const post = (label: string, body: unknown, extra: Partial<Refusal> = {}): Refusal => ({ label, method: 'POST', path: '/v1/revocations', headers: adminJson(), body: JSON.stringify(body), ...extra });
    found.push(...(await check(op.operation, [
      ...bodyVariants(op),
      ...adminVariants('POST', '/v1/revocations', { 'content-type': 'application/json' }).map((variant) => ({ ...variant, body: JSON.stringify(single) })),
      post('batch', { revocations: [single, { kind: 'issued_before', iss: idp.issuer, before: 1, reason: 'r' }] }, { status: 201 }),
      post('issuer not configured', { revocations: [single, { kind: 'issued_before', iss: 'https://x.example', before: 1, reason: 'r' }] }, { status: 400, names: '/revocations/1/iss' }),
      post('missing kind', { value: 'x', reason: 'r' }, { status: 400, names: '/kind' }),
      post('unknown kind', { kind: 'email', value: 'x', reason: 'r' }, { status: 400, names: '/kind' }),
      post('missing reason', { kind: 'jti', value: 'x' }, { status: 400, names: '/reason' }),
      post('wrong type of value', { kind: 'jti', value: 7, reason: 'r' }, { status: 400, names: '/value' }),
      post('unknown field', { ...single, zz_unknown: 1 }, { status: 400, names: '/zz_unknown' }),
      post('expired', { ...single, expires_at: 1 }, { status: 400, names: '/expires_at' }),
      post('fractional expiry', { ...single, expires_at: 1e12 + 0.5 }, { status: 400, names: '/expires_at' }),
      post('latest expiry', { ...single, expires_at: 253_402_300_799 }, { status: 201 }),
      post('expiry in milliseconds', { ...single, expires_at: Number.MAX_SAFE_INTEGER }, { status: 400, names: '/expires_at' }),
      post('empty batch', { revocations: [] }, { status: 400, names: '/revocations' }),
      post('bad batch entry', { revocations: [single, { kind: 'jti', reason: 'r' }] }, { status: 400, names: '/revocations/1/value' }),
      post('batch with unknown field', { revocations: [single], extra: 1 }, { status: 400, names: '/extra' }),
    ])));
    const created = await send({ method: 'POST', path: '/v1/revocations', headers: adminJson(), body: JSON.stringify({ kind: 'sub', value: 'user:contract', reason: 'r' }) });
    const id = (created.json as Json).id as string;
    found.push(...(await check('GET /v1/revocations', [
      { label: 'valid', method: 'GET', path: '/v1/revocations', headers: adminJson(), status: 200 },
      { label: 'paged', method: 'GET', path: '/v1/revocations?kind=jti&limit=1', headers: adminJson(), status: 200 },
      { label: 'cursor', method: 'GET', path: `/v1/revocations?cursor=${id}`, headers: adminJson(), status: 200 },
      { label: 'HEAD', method: 'HEAD', path: '/v1/revocations', headers: adminJson(), status: 200 },
      { label: 'bad kind', method: 'GET', path: '/v1/revocations?kind=email', headers: adminJson(), status: 400, names: 'kind' },
      { label: 'limit zero', method: 'GET', path: '/v1/revocations?limit=0', headers: adminJson(), status: 400, names: 'limit' },
      { label: 'limit not a number', method: 'GET', path: '/v1/revocations?limit=ten', headers: adminJson(), status: 400, names: 'limit' },
      { label: 'limit too large', method: 'GET', path: '/v1/revocations?limit=100000', headers: adminJson(), status: 400, names: 'limit' },
      { label: 'limit empty', method: 'GET', path: '/v1/revocations?limit=', headers: adminJson(), status: 400, names: 'limit' },
      ...['0x10', '1e1', '+5', '%205'].map((limit): Refusal => ({ label: `limit ${limit}`, method: 'GET', path: `/v1/revocations?limit=${limit}`, headers: adminJson(), status: 400, names: 'limit' })),
      { label: 'bad cursor', method: 'GET', path: '/v1/revocations?cursor=abc', headers: adminJson(), status: 400, names: 'cursor' },
      { label: 'unknown parameter', method: 'GET', path: '/v1/revocations?colour=red', headers: adminJson(), status: 400, names: 'colour' },
      { label: 'repeated parameter', method: 'GET', path: '/v1/revocations?kind=jti&kind=sub', headers: adminJson(), status: 400, names: 'kind' },
      { label: 'bad escape', method: 'GET', path: '/v1/revocations?kind=%FF', headers: adminJson(), status: 400 },
      ...adminVariants('GET', '/v1/revocations'),
    ])));
    found.push(...(await check('GET /v1/revocations/{id}', [
      { label: 'valid', method: 'GET', path: `/v1/revocations/${id}`, headers: adminJson(), status: 200 },
      { label: 'HEAD', method: 'HEAD', path: `/v1/revocations/${id}`, headers: adminJson(), status: 200 },
      { label: 'unknown', method: 'GET', path: '/v1/revocations/01900000-0000-7000-8000-000000000000', headers: adminJson(), status: 404 },
      { label: 'query parameter', method: 'GET', path: `/v1/revocations/${id}?x=1`, headers: adminJson(), status: 400 },
      ...adminVariants('GET', `/v1/revocations/${id}`),
      ...ODD_SEGMENTS.map((segment): Refusal => ({ label: `segment ${segment.slice(0, 10)}`, method: 'GET', path: `/v1/revocations/${segment}`, headers: adminJson(), status: [400, 404] })),
    ])));
    found.push(...(await check('DELETE /v1/revocations/{id}', [
      ...adminVariants('DELETE', `/v1/revocations/${id}`),
      { label: 'valid', method: 'DELETE', path: `/v1/revocations/${id}`, headers: adminJson(), status: 204 },
      { label: 'again', method: 'DELETE', path: `/v1/revocations/${id}`, headers: adminJson(), status: 404 },
      ...ODD_SEGMENTS.map((segment): Refusal => ({ label: `segment ${segment.slice(0, 10)}`, method: 'DELETE', path: `/v1/revocations/${segment}`, headers: adminJson(), status: [400, 404] })),
    ])));
    found.push(...(await check(undefined, [
      ...otherMethods('/v1/revocations', ['GET', 'HEAD', 'POST']),
      ...otherMethods(`/v1/revocations/${id}`, ['GET', 'HEAD', 'DELETE']),
    ])));
    expectConforming(found);
  });

  it('the bundle operations', async () => {
    const found: string[] = [];
    const gzip = (extra: Record<string, string> = {}) => ({ authorization: `Bearer ${adminToken}`, 'content-type': 'application/gzip', ...extra });
    found.push(...(await check('PUT /v1/bundles/{name}', [
      { label: 'valid', method: 'PUT', path: '/v1/bundles/contract', headers: gzip(), body: archive, status: 201 },
      { label: 'again', method: 'PUT', path: '/v1/bundles/contract', headers: gzip(), body: archive, status: 200 },
      ...[...Object.keys(spec.paths['/v1/bundles/{name}'].put.requestBody.content)].map((type): Accepted => ({ label: `media type ${type}`, method: 'PUT', path: '/v1/bundles/contract', headers: gzip({ 'content-type': type }), body: archive, status: 200 })),
      { label: 'media type casing', method: 'PUT', path: '/v1/bundles/contract', headers: gzip({ 'content-type': 'Application/GZIP; foo=bar' }), body: archive, status: 200 },
      { label: 'json', method: 'PUT', path: '/v1/bundles/contract', headers: gzip({ 'content-type': 'application/json' }), body: '{}', status: 415 },
      { label: 'no content type', method: 'PUT', path: '/v1/bundles/contract', headers: { authorization: `Bearer ${adminToken}` }, body: archive, status: 415 },
      { label: 'encoded', method: 'PUT', path: '/v1/bundles/contract', headers: gzip({ 'content-encoding': 'gzip' }), body: archive, status: 415 },
      { label: 'empty', method: 'PUT', path: '/v1/bundles/contract', headers: gzip(), body: '', status: 422 },
      { label: 'not an archive', method: 'PUT', path: '/v1/bundles/contract', headers: gzip(), body: 'not gzip', status: 422 },
      { label: 'oversized', method: 'PUT', path: '/v1/bundles/contract', headers: gzip(), body: new Uint8Array(ARCHIVE_LIMIT + 1), status: 413 },
      { label: 'oversized, chunked', method: 'PUT', path: '/v1/bundles/contract', headers: gzip(), body: chunked('x'.repeat(ARCHIVE_LIMIT + 1)), status: 413 },
      { label: 'bad name', method: 'PUT', path: '/v1/bundles/Not_Valid', headers: gzip(), body: archive, status: 400, code: 'bundle_name_invalid' },
      { label: 'another name', method: 'PUT', path: '/v1/bundles/other', headers: gzip(), body: archive, status: [409, 422] },
      { label: 'query parameter', method: 'PUT', path: '/v1/bundles/contract?revision=r1', headers: gzip(), body: archive, status: 400 },
      ...adminVariants('PUT', '/v1/bundles/contract', { 'content-type': 'application/gzip' }).map((variant) => ({ ...variant, body: archive })),
      ...ODD_SEGMENTS.map((segment): Refusal => ({ label: `segment ${segment.slice(0, 10)}`, method: 'PUT', path: `/v1/bundles/${segment}`, headers: gzip(), body: archive, status: [400, 404] })),
    ])));
    found.push(...(await check('GET /v1/bundles', [
      { label: 'valid', method: 'GET', path: '/v1/bundles', headers: adminJson(), status: 200 },
      { label: 'HEAD', method: 'HEAD', path: '/v1/bundles', headers: adminJson(), status: 200 },
      { label: 'query parameter', method: 'GET', path: '/v1/bundles?name=x', headers: adminJson(), status: 400 },
      ...adminVariants('GET', '/v1/bundles'),
    ])));
    found.push(...(await check('GET /v1/bundles/{name}', [
      { label: 'valid', method: 'GET', path: '/v1/bundles/contract', headers: adminJson(), status: 200 },
      { label: 'embedded', method: 'GET', path: '/v1/bundles/simple', headers: adminJson(), status: 200 },
      { label: 'unknown', method: 'GET', path: '/v1/bundles/absent', headers: adminJson(), status: 404 },
      ...adminVariants('GET', '/v1/bundles/contract'),
      ...ODD_SEGMENTS.map((segment): Refusal => ({ label: `segment ${segment.slice(0, 10)}`, method: 'GET', path: `/v1/bundles/${segment}`, headers: adminJson(), status: [400, 404] })),
    ])));
    const activate = (label: string, path: string, body: string, status: number | number[], extra: Partial<Refusal> = {}): Refusal => ({ label, method: 'POST', path, headers: adminJson(), body, status, ...extra });
    const activateOp: JsonOperation = { operation: 'POST /v1/bundles/{name}/activate', path: '/v1/bundles/contract/activate', body: { revision: 'r1' }, headers: adminJson(), ok: 200, limit: BODY_LIMIT };
    found.push(...(await check(activateOp.operation, [
      ...bodyVariants(activateOp),
      activate('unknown revision', '/v1/bundles/contract/activate', '{"revision": "r9"}', 404),
      activate('unknown bundle', '/v1/bundles/absent/activate', '{"revision": "r1"}', 404),
      activate('bad name', '/v1/bundles/Not_Valid/activate', '{"revision": "r1"}', 400),
      activate('empty revision', '/v1/bundles/contract/activate', '{"revision": ""}', 400, { names: '/revision' }),
      ...adminVariants('POST', '/v1/bundles/contract/activate', { 'content-type': 'application/json' }).map((variant) => ({ ...variant, body: '{"revision": "r1"}' })),
      ...ODD_SEGMENTS.map((segment): Refusal => activate(`segment ${segment.slice(0, 10)}`, `/v1/bundles/${segment}/activate`, '{"revision": "r1"}', [400, 404])),
    ])));
    found.push(...(await check('DELETE /v1/bundles/{name}', [
      ...adminVariants('DELETE', '/v1/bundles/contract'),
      { label: 'in use', method: 'DELETE', path: '/v1/bundles/simple', headers: adminJson(), status: 409 },
      { label: 'valid', method: 'DELETE', path: '/v1/bundles/contract', headers: adminJson(), status: 204 },
      { label: 'again', method: 'DELETE', path: '/v1/bundles/contract', headers: adminJson(), status: 404 },
      ...ODD_SEGMENTS.map((segment): Refusal => ({ label: `segment ${segment.slice(0, 10)}`, method: 'DELETE', path: `/v1/bundles/${segment}`, headers: adminJson(), status: [400, 404] })),
    ])));
    found.push(...(await check(undefined, [
      ...otherMethods('/v1/bundles', ['GET', 'HEAD']),
      ...otherMethods('/v1/bundles/contract', ['GET', 'HEAD', 'PUT', 'DELETE']),
      ...otherMethods('/v1/bundles/contract/activate', ['POST']),
    ])));
    expectConforming(found);
  });

  it('the decision log operations', async () => {
    const found: string[] = [];
    const get = (label: string, path: string, status: number | number[], extra: Partial<Refusal> = {}): Refusal => ({ label, method: 'GET', path, headers: adminJson(), status, ...extra });
    const filters: [string, string][] = [
      ['from', 'yesterday'],
      ['from', '2025-02-30T00:00:00Z'],
      ['to', '-1'],
      ['allow', 'yes'],
      ['from', ''],
    ];
    for (const path of ['/v1/decisions', '/v1/decisions/export']) {
      found.push(...(await check(`GET ${path}`, [
        get('valid', path, 200),
        get('filtered', `${path}?from=2020-01-01T00:00:00Z&to=${Date.now() + 60_000}&allow=false&action=read&resource_type=document`, 200),
        get('HEAD', path, 200, { method: 'HEAD' }),
        get('unknown parameter', `${path}?colour=red`, 400, { names: 'colour' }),
        get('repeated parameter', `${path}?action=a&action=b`, 400, { names: 'action' }),
        ...filters.map(([name, value]) => get(`bad ${name}`, `${path}?${name}=${encodeURIComponent(value)}`, 400, { names: name })),
        ...adminVariants('GET', path),
      ])));
    }
    found.push(...(await check('GET /v1/decisions', [
      get('paged', '/v1/decisions?limit=1', 200),
      get('limit zero', '/v1/decisions?limit=0', 400, { names: 'limit' }),
      get('limit not a number', '/v1/decisions?limit=ten', 400, { names: 'limit' }),
      get('limit empty', '/v1/decisions?limit=', 400, { names: 'limit' }),
      get('limit fractional', '/v1/decisions?limit=1.5', 400, { names: 'limit' }),
      ...['0x10', '1e1', '+5', '%205', '5%20', '05.0'].map((limit) => get(`limit ${limit}`, `/v1/decisions?limit=${limit}`, 400, { names: 'limit' })),
      get('bad cursor', '/v1/decisions?cursor=abc', 400),
    ])));
    found.push(...(await check('GET /v1/decisions/verify', [
      get('valid', '/v1/decisions/verify', 200),
      get('query parameter', '/v1/decisions/verify?full=1', 400),
      ...adminVariants('GET', '/v1/decisions/verify'),
    ])));
    found.push(...(await check('GET /v1/decisions/{id}', [
      get('valid', `/v1/decisions/${decisionId}`, 200),
      get('HEAD', `/v1/decisions/${decisionId}`, 200, { method: 'HEAD' }),
      get('unknown', '/v1/decisions/01900000-0000-7000-8000-000000000000', 404),
      get('query parameter', `/v1/decisions/${decisionId}?x=1`, 400),
      ...adminVariants('GET', `/v1/decisions/${decisionId}`),
      ...ODD_SEGMENTS.map((segment) => get(`segment ${segment.slice(0, 10)}`, `/v1/decisions/${segment}`, [400, 404])),
    ])));
    const replayOp: JsonOperation = { operation: 'POST /v1/decisions/{id}/replay', path: `/v1/decisions/${decisionId}/replay`, body: {}, headers: adminJson(), ok: 200, limit: BODY_LIMIT };
    const replay = (label: string, path: string, body: string, status: number | number[], extra: Partial<Refusal> = {}): Refusal => ({ label, method: 'POST', path, headers: adminJson(), body, status, ...extra });
    found.push(...(await check(replayOp.operation, [
      ...bodyVariants(replayOp),
      replay('revision', replayOp.path, '{"revision": "absent"}', 404),
      replay('empty revision', replayOp.path, '{"revision": ""}', 400, { names: '/revision' }),
      replay('wrong type of revision', replayOp.path, '{"revision": 1}', 400, { names: '/revision' }),
      replay('unknown decision', '/v1/decisions/01900000-0000-7000-8000-000000000000/replay', '{}', 404),
      ...adminVariants('POST', replayOp.path, { 'content-type': 'application/json' }).map((variant) => ({ ...variant, body: '{}' })),
      ...ODD_SEGMENTS.map((segment) => replay(`segment ${segment.slice(0, 10)}`, `/v1/decisions/${segment}/replay`, '{}', [400, 404])),
    ])));
    found.push(...(await check(undefined, [
      ...otherMethods('/v1/decisions', ['GET', 'HEAD']),
      ...otherMethods('/v1/decisions/export', ['GET', 'HEAD']),
      ...otherMethods(`/v1/decisions/${decisionId}`, ['GET', 'HEAD']),
      ...otherMethods(`/v1/decisions/${decisionId}/replay`, ['POST']),
    ])));
    expectConforming(found);
  });

  it('POST /v1/data/{bundle}/{rule} (OPA data API)', async () => {
    const path = '/v1/data/echo/decision';
    const op: JsonOperation = { operation: 'POST /v1/data/{bundle}/{rule}', path, body: { input: { user: 'alice' } }, headers: gatewayJson(), ok: 200, limit: BODY_LIMIT, gzip: true };
    const post = (label: string, to: string, body: string, status: number | number[], extra: Partial<Refusal> = {}): Refusal => ({ label, method: 'POST', path: to, headers: gatewayJson(), body, status, ...extra });
    const found = await check(op.operation, [
      ...bodyVariants(op),
      ...gatewayVariants('POST', path, '{"input": {}}').map((variant) => (variant.status === 401 ? variant : { ...variant, status: 200 })),
      post('undefined rule', '/v1/data/echo/nothing_here', '{"input": {}}', [200, 404]),
      post('unknown bundle', '/v1/data/absent/decision', '{"input": {}}', 404),
      post('bad rule', '/v1/data/echo/9bad', '{"input": {}}', 404),
      post('nested rule', '/v1/data/echo/a/b', '{"input": {}}', [200, 404]),
      post('strict builtin errors', `${path}?strict-builtin-errors=true`, '{"input": {}}', 400, { code: 'query_parameter_unsupported' }),
      post('ignored parameter', `${path}?pretty=true&metrics`, '{"input": {}}', 200),
      post('input not an object', path, '{"input": [1]}', 400, { names: '/input' }),
      post('conflict', '/v1/data/conflict/decision', '{"input": {"context": {"first": true, "second": true}}}', 500, { code: 'policy_error' }),
      ...ODD_SEGMENTS.map((segment) => post(`segment ${segment.slice(0, 10)}`, `/v1/data/echo/${segment}`, '{"input": {}}', [200, 404])),
      ...ODD_SEGMENTS.map((segment) => post(`bundle segment ${segment.slice(0, 10)}`, `/v1/data/${segment}/decision`, '{"input": {}}', [200, 404])),
    ]);
    expectConforming(found);
  });
});

describe('in other configurations', () => {
  it('a gateway key bound to tenants, a rate limit, an admin issuer whose keys cannot be fetched', async () => {
    const troubled = await TestIssuer.create('https://troubled.contract.test.example');
    await troubled.serve();
    troubled.jwksFailure = { status: 503, body: '{}' };
    const other = await startTestArbiter({
      gateway: { authentication: 'api_key', api_keys: [{ id: 'acme', sha256: sha256('acme-key'), tenants: ['echo'] }, { id: 'edge', sha256: sha256(GATEWAY_KEY) }] },
      admin: { issuers: [{ issuer: troubled.issuer, jwks_uri: troubled.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
      authzen: { default_bundle: 'todo', tenants: { echo: 'azecho' } },
      opa_compat: { enabled: true },
    });
    const rated = await startTestArbiter({
      gateway: { authentication: 'api_key', api_keys: [{ id: 'edge', sha256: sha256(GATEWAY_KEY) }], rate_limit: { requests_per_second: 0.001, burst: 1 } },
      authzen: { default_bundle: 'todo' },
      opa_compat: { enabled: true },
    });
    try {
      const base = other.url;
      const document = (await (await fetch(`${base}/openapi.json`)).json()) as Json;
      expect(document).toEqual(spec);
      const found: string[] = [];
      const acme = { 'x-api-key': 'acme-key', 'content-type': 'application/json' };
      const decisionOperations: [string, string, unknown][] = [
        ['POST /v1/decide', '/v1/decide', { action: 'read', resource: { type: 'd' } }],
        ['POST /v1/issuance', '/v1/issuance', { client_id: 'c', scopes: ['a'], audience: 'x' }],
        ['POST /access/v1/evaluation', '/access/v1/evaluation', { subject: { type: 'user', id: 'u' }, action: { name: 'a' }, resource: { type: 'r', id: '1' } }],
        ['POST /access/v1/evaluations', '/access/v1/evaluations', { subject: { type: 'user', id: 'u' }, action: { name: 'a' }, evaluations: [{ resource: { type: 'r', id: '1' } }] }],
        ['POST /access/v1/search/subject', '/access/v1/search/subject', { subject: { type: 'user' }, action: { name: 'a' }, resource: { type: 'r', id: '1' } }],
        ['POST /access/v1/search/resource', '/access/v1/search/resource', { subject: { type: 'user', id: 'u' }, action: { name: 'a' }, resource: { type: 'r' } }],
        ['POST /access/v1/search/action', '/access/v1/search/action', { subject: { type: 'user', id: 'u' }, resource: { type: 'r', id: '1' } }],
        ['POST /v1/data/{bundle}/{rule}', '/v1/data/echo/decision', { input: {} }],
      ];
      for (const [operation, path, body] of decisionOperations) {
        const tenanted = path.startsWith('/access/');
        found.push(...(await check(operation, [
          { base, label: 'tenant-bound key naming no tenant', method: 'POST', path, headers: acme, body: JSON.stringify(body), status: 403, code: 'tenant_not_permitted' },
          { base, label: 'tenant-bound key naming another tenant', method: 'POST', path, headers: { ...acme, 'x-tenant': 'other' }, body: JSON.stringify(body), status: 403, code: 'tenant_not_permitted' },
          ...(tenanted ? [{ base, label: 'tenant-bound key naming its tenant', method: 'POST', path, headers: { ...acme, 'x-tenant': 'echo' }, body: JSON.stringify(body), status: [200, 501] }] : []),
        ])));
      }
      // Another method, or a path no route serves, is answered as such before the gateway is asked for a key.
      found.push(...(await check(undefined, [
        ...['/v1/decide', '/v1/issuance', '/access/v1/evaluation', '/access/v1/search/subject', '/v1/data/echo/decision'].flatMap((path) => otherMethods(path, ['POST', ...(path.startsWith('/v1/data/') ? ['GET', 'HEAD', 'PUT', 'PATCH', 'DELETE'] : [])]).map((refusal) => ({ ...refusal, base }))),
        { base, label: 'live data itself', method: 'POST', path: '/v1/data', status: 405 },
        { base, label: 'a live data document', method: 'POST', path: '/v1/data/feed', headers: acme, body: '{}', status: 405 },
      ])));
      const nowhere = await send({ base, method: 'POST', path: '/access/v1/nowhere', body: '{}' });
      expect([nowhere.status, (nowhere.json as Json).code]).toEqual([404, 'not_found']);
      // The rate: one decision, then none for a long while.
      found.push(...(await check('POST /v1/decide', [{ base: rated.url, label: 'within the rate', method: 'POST', path: '/v1/decide', headers: gatewayJson(), body: JSON.stringify({ action: 'read', resource: { type: 'd' } }), status: 200 }])));
      for (const [operation, path, body] of decisionOperations) {
        found.push(...(await check(operation, [{ base: rated.url, label: 'over the rate', method: 'POST', path, headers: gatewayJson(), body: JSON.stringify(body), status: 429, code: 'rate_limited' }])));
      }
      const adminToken = await troubled.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: ALL_SCOPES.join(' ') });
      for (const [path, item] of Object.entries<Json>(document.paths)) {
        for (const [method, operation] of Object.entries<Json>(item)) {
          if (!operation.security?.some((scheme: Json) => 'adminBearer' in scheme)) continue;
          const concrete = path.replace(/\{(\w+)\}/g, (_match, name: string) => ({ name: 'simple', path: 'contract', id: decisionId })[name] ?? 'x');
          found.push(...(await check(`${method.toUpperCase()} ${path}`, [
            { base, label: 'admin keys unavailable', method: method.toUpperCase(), path: concrete, headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' }, ...(['post', 'put', 'patch'].includes(method) && { body: '{}' }), status: 503, code: 'admin_keys_unavailable' },
          ])));
        }
      }
      expectConforming(found);
    } finally {
      await other.close();
      await rated.close();
      await troubled.close();
    }
  });

  it('the decision log disabled', async () => {
    const other = await startTestArbiter({
      decision_log: { enabled: false },
      admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
    });
    try {
      const base = other.url;
      const found: string[] = [];
      for (const [operation, path, method] of [
        ['GET /v1/decisions', '/v1/decisions', 'GET'],
        ['GET /v1/decisions/export', '/v1/decisions/export', 'GET'],
        ['GET /v1/decisions/verify', '/v1/decisions/verify', 'GET'],
        ['GET /v1/decisions/{id}', `/v1/decisions/${decisionId}`, 'GET'],
        ['POST /v1/decisions/{id}/replay', `/v1/decisions/${decisionId}/replay`, 'POST'],
      ] as const) {
        found.push(...(await check(operation, [{ base, label: 'log disabled', method, path, headers: adminJson(), ...(method === 'POST' && { body: '{}' }), status: 503, code: 'decision_log_disabled' }])));
      }
      found.push(...(await check('POST /v1/decide', [{ base, label: 'decision without a log', method: 'POST', path: '/v1/decide', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ action: 'read', resource: { type: 'd' } }), status: 200 }])));
      expectConforming(found);
    } finally {
      await other.close();
    }
  });
});

/** Writes raw bytes and reads the answer the server gives before it closes the connection. */
function raw(base: string, data: Buffer | string): Promise<Answer> {
  return new Promise((resolve) => {
    const url = new URL(base);
    const socket = connect(Number(url.port), url.hostname, () => socket.write(data));
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const [head = '', body = ''] = text.split('\r\n\r\n', 2);
      const [statusLine = '', ...lines] = head.split('\r\n');
      const headers = new Headers(lines.map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 1).trim()] as [string, string]));
      let json: unknown;
      try {
        json = JSON.parse(body);
      } catch {
        json = undefined;
      }
      resolve({ status: Number(statusLine.split(' ')[1]), headers, text: body, json });
    });
    setTimeout(() => socket.destroy(), 5000);
  });
}

describe('answers of the HTTP layer, before any route runs', () => {
  it('are problem documents the document describes, for every operation they can answer', async () => {
    const other = await startTestArbiter({ server: { request_timeout_s: 1 } });
    try {
      const problemSchema = { $ref: '#/components/schemas/Problem' };
      const cases: [string, string | undefined, Buffer | string, number][] = [
        ['headers too large', 'GET /healthz', `GET /healthz HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${'a'.repeat(100_000)}\r\n\r\n`, 431],
        ['headers too large', 'POST /v1/decide', `POST /v1/decide HTTP/1.1\r\nHost: localhost\r\nX-Padding: ${'a'.repeat(100_000)}\r\nContent-Length: 2\r\n\r\n{}`, 431],
        ['body stalled', 'POST /v1/decide', 'POST /v1/decide HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"act', 408],
        ['raw non-ASCII byte in the query', 'GET /healthz', Buffer.concat([Buffer.from('GET /healthz?sub='), Buffer.from([0xe9]), Buffer.from(' HTTP/1.1\r\nHost: localhost\r\n\r\n')]), 400],
        ['a Host header that is not a host', 'GET /readyz', 'GET /readyz HTTP/1.1\r\nHost: a@b\r\nConnection: close\r\n\r\n', 400],
        ['backslash in the path', undefined, 'GET /v1\\decide HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n', 400],
        ['CONNECT', undefined, 'CONNECT /v1/decide HTTP/1.1\r\nHost: localhost\r\n\r\n', 405],
      ];
      const found: string[] = [];
      for (const [label, operation, request, status] of cases) {
        const answer = await raw(other.url, request);
        const problems: string[] = [];
        if (answer.status !== status) problems.push(`expected ${status}, got ${answer.status}`);
        if (mediaType(answer.headers.get('content-type')) !== 'application/problem+json') problems.push(`content type ${answer.headers.get('content-type')}`);
        problems.push(...validate(problemSchema, answer.json, spec));
        if (operation !== undefined) {
          const [method, path] = operation.split(' ') as [string, string];
          const response = spec.paths[path][method.toLowerCase()].responses[String(answer.status)];
          if (response === undefined) problems.push(`${operation} does not document ${answer.status}`);
          else problems.push(...validate(response.content['application/problem+json'].schema, answer.json, spec));
        }
        found.push(...problems.map((problem) => `${label}: ${problem}: ${answer.text.slice(0, 200)}`));
      }
      expectConforming(found);
    } finally {
      await other.close();
    }
  });
});

describe('every recorded decision', () => {
  it('reads and replays as documented', async () => {
    const found: string[] = [];
    let cursor: string | null = null;
    let seen = 0;
    do {
      const page = await send({ method: 'GET', path: `/v1/decisions?limit=100${cursor ? `&cursor=${cursor}` : ''}`, headers: adminJson() });
      found.push(...violations('GET /v1/decisions', { method: 'GET', path: '/v1/decisions' }, page));
      const body = page.json as Json;
      for (const decision of body.decisions as Json[]) {
        seen += 1;
        found.push(...(await check('GET /v1/decisions/{id}', [{ label: `${decision.endpoint}`, method: 'GET', path: `/v1/decisions/${decision.decision_id}`, headers: adminJson(), status: 200 }])));
        found.push(...(await check('POST /v1/decisions/{id}/replay', [{ label: `${decision.endpoint} ${decision.bundle}`, method: 'POST', path: `/v1/decisions/${decision.decision_id}/replay`, headers: adminJson(), body: '{}', status: [200, 404, 409] }])));
      }
      cursor = body.next_cursor;
    } while (cursor !== null && seen < 2000);
    expect(seen).toBeGreaterThan(50);
    const exported = await send({ method: 'GET', path: '/v1/decisions/export', headers: adminJson() });
    const lines = exported.text.split('\n').filter((line) => line !== '');
    const decisionSchema = spec.paths['/v1/decisions/{id}'].get.responses['200'].content['application/json'].schema;
    for (const line of lines) found.push(...validate(decisionSchema, JSON.parse(line), spec).map((error) => `export line: ${error}`));
    expectConforming(found);
  });
});

const COVERED = [
  'GET /healthz',
  'GET /readyz',
  'GET /openapi.json',
  'GET /docs',
  'GET /metrics',
  'POST /v1/decide',
  'POST /v1/issuance',
  'GET /.well-known/authzen-configuration',
  'POST /access/v1/evaluation',
  'POST /access/v1/evaluations',
  'POST /access/v1/search/subject',
  'POST /access/v1/search/resource',
  'POST /access/v1/search/action',
  'GET /v1/data/{path}',
  'PUT /v1/data/{path}',
  'PATCH /v1/data/{path}',
  'DELETE /v1/data/{path}',
  'POST /v1/revocations',
  'GET /v1/revocations',
  'GET /v1/revocations/{id}',
  'DELETE /v1/revocations/{id}',
  'GET /v1/bundles',
  'GET /v1/bundles/{name}',
  'PUT /v1/bundles/{name}',
  'POST /v1/bundles/{name}/activate',
  'DELETE /v1/bundles/{name}',
  'GET /v1/decisions',
  'GET /v1/decisions/export',
  'GET /v1/decisions/verify',
  'GET /v1/decisions/{id}',
  'POST /v1/decisions/{id}/replay',
  'POST /v1/data/{bundle}/{rule}',
];
