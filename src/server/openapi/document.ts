import { z } from 'zod';
import { PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE } from '../problem.ts';
import type { ApiOperation, ApiResponse, RouteCatalogue } from './operation.ts';
import { PROBLEM_TYPES, type ProblemCode, type ProblemType } from './problem-types.ts';
import { problemSchema } from './schemas.ts';

export type JsonSchema = Record<string, unknown>;
export type OpenApiDocument = Record<string, unknown> & { openapi: string; paths: Record<string, Record<string, JsonSchema>> };

/** How a schema is read: request bodies before defaults apply, responses as written. */
type Io = 'input' | 'output';

const PROBLEM_REF = { $ref: '#/components/schemas/Problem' };

/** Every request may name itself (middleware/request-id.ts), and every answer the app gives carries the name. */
const REQUEST_ID_PARAMETER: JsonSchema = {
  name: 'X-Request-ID',
  in: 'header',
  required: false,
  description:
    'Names the request: echoed in the answer\'s X-Request-ID; /v1/decide, /v1/issuance and the AuthZEN endpoints also give it to the policy (input.context.request_id) and log it with the decision. ' +
    '1-128 printable ASCII characters without spaces; another value (or none) is replaced by a generated UUID.',
  schema: { type: 'string' },
};
const REQUEST_ID_HEADER = { $ref: '#/components/headers/RequestId' };

/**
 * Every operation may fail unexpectedly, and the HTTP layer refuses a request to any of them
 * before a route runs (headers too large, too slow, not valid HTTP): documenting these once
 * here keeps the catalogue about each route's own failures.
 */
const ALWAYS: readonly ProblemCode[] = ['internal_error', 'malformed_request', 'request_timeout', 'headers_too_large'];
const ADMIN: readonly ProblemCode[] = ['unauthorized', 'forbidden', 'admin_keys_unavailable'];
/** Admin operations without query parameters refuse any (noQueryParameters). */
const NO_QUERY: readonly ProblemCode[] = ['query_parameter_unknown'];
/** Answered before any route when the listener checks Host (catalogue.hostCheck). */
const HOST_CHECK: readonly ProblemCode[] = ['host_not_allowed'];

/** The OpenAPI 3.1 document for a catalogue: schemas converted by zod, problems grouped by status. */
export function buildOpenApiDocument(catalogue: RouteCatalogue): OpenApiDocument {
  const nameOf = new Map<z.ZodType, string>(Object.entries(catalogue.schemas).map(([name, schema]) => [schema, name]));
  const used = new Map<string, Io>();
  const schemaOf = (schema: z.ZodType, io: Io): JsonSchema => {
    const name = nameOf.get(schema);
    if (name === undefined) return jsonSchema(schema, io);
    used.set(name, used.get(name) ?? io);
    return { $ref: `#/components/schemas/${name}` };
  };

  const gateway = GATEWAY_SCHEMES[catalogue.gatewayAuthentication];
  const paths: OpenApiDocument['paths'] = {};
  for (const operation of catalogue.operations) {
    const item = (paths[operation.path] ??= {});
    if (item[operation.method]) throw new Error(`${operation.method.toUpperCase()} ${operation.path} is in the catalogue twice`);
    item[operation.method] = operationObject(operation, schemaOf, gateway?.name, catalogue.hostCheck);
  }

  const schemas: Record<string, JsonSchema> = { Problem: { ...jsonSchema(problemSchema, 'output'), description: problemTable() } };
  for (const [name, io] of [...used].sort(([a], [b]) => a.localeCompare(b))) schemas[name] = jsonSchema(catalogue.schemas[name]!, io);

  return {
    openapi: '3.1.1',
    info: { ...catalogue.info, license: { name: 'Apache-2.0', identifier: 'Apache-2.0' } },
    tags: catalogue.tags.map((tag) => ({ ...tag })),
    paths,
    components: {
      schemas,
      headers: {
        RequestId: {
          description: 'The request\'s X-Request-ID, or the UUID generated for it. Absent only on the answers of the HTTP layer, given before any route runs (malformed_request, request_timeout, headers_too_large, the 405 to a CONNECT).',
          schema: { type: 'string' },
        },
      },
      securitySchemes: {
        ...(gateway && { [gateway.name]: gateway.scheme }),
        adminBearer: {
          type: 'http',
          scheme: 'bearer',
          bearerFormat: 'JWT',
          description:
            'An access token from an `admin.issuers` issuer, verified like any token, carrying the scope each operation lists ' +
            '(arbiter.bundles.read/write, arbiter.data.read/write, arbiter.revocations.read/write, arbiter.decisions.read). ' +
            'Without a valid token: 401 unauthorized; without the scope: 403 forbidden; while its issuer\'s keys cannot be fetched: 503 admin_keys_unavailable.',
        },
      },
    },
    'x-problem-types': Object.entries(PROBLEM_TYPES).map(([code, type]) => ({ code, type: `${PROBLEM_TYPE_BASE}${code}`, status: type.status, meaning: type.meaning })),
  };
}

/** The security scheme of decision endpoints for each gateway.authentication; `none` has none. */
const GATEWAY_SCHEMES: Record<RouteCatalogue['gatewayAuthentication'], { name: string; scheme: JsonSchema } | undefined> = {
  none: undefined,
  api_key: {
    name: 'gatewayApiKey',
    scheme: { type: 'apiKey', in: 'header', name: 'X-API-Key', description: 'A gateway API key (gateway.api_keys); `Authorization: ApiKey <key>` and `Authorization: Bearer <key>` work too. Without a known key: 401 gateway_unauthenticated.' },
  },
  mtls: {
    name: 'gatewayMutualTls',
    scheme: { type: 'mutualTLS', description: 'A client certificate signed by server.tls.ca_file. Without one: 401 gateway_unauthenticated.' },
  },
};

function operationObject(operation: ApiOperation, schemaOf: (schema: z.ZodType, io: Io) => JsonSchema, gatewayScheme: string | undefined, hostCheck: boolean): JsonSchema {
  const parameters = [...pathParameters(operation), ...queryParameters(operation), REQUEST_ID_PARAMETER, ...headerParameters(operation)];
  const responses: Record<string, JsonSchema> = {};
  for (const [status, response] of Object.entries(operation.responses)) responses[status] = responseObject(response, schemaOf);
  for (const [status, codes] of problemsByStatus(operation, hostCheck)) {
    if (responses[status]) throw new Error(`${operation.operationId}: status ${status} is both a response and a problem`);
    // The headers some of these problems come with: not required, as not every answer of the status carries them.
    const headers = codes.flatMap((code) => Object.entries((PROBLEM_TYPES[code] as ProblemType).headers ?? {}));
    responses[status] = {
      description: `Problem: ${codes.join(', ')}`,
      headers: { 'X-Request-ID': REQUEST_ID_HEADER, ...headerObjects(Object.fromEntries(headers.map(([name, description]) => [name, { description }]))) },
      content: { [PROBLEM_CONTENT_TYPE]: { schema: { allOf: [PROBLEM_REF, { properties: { code: { enum: codes } } }] } } },
    };
  }
  return {
    operationId: operation.operationId,
    summary: operation.summary,
    ...(operation.description !== undefined && { description: operation.description }),
    tags: [...operation.tags],
    security: operation.scope ? [{ adminBearer: [operation.scope] }] : gatewayScheme && isDecisionEndpoint(operation) ? [{ [gatewayScheme]: [] }] : [],
    parameters,
    ...(operation.body && {
      requestBody: { required: true, content: Object.fromEntries((operation.bodyMediaTypes ?? ['application/json']).map((type) => [type, { schema: schemaOf(operation.body!, 'input') }])) },
    }),
    // OpenAPI 3.1: binary content is a media type without a schema.
    ...(operation.binaryBody && {
      requestBody: { required: true, description: operation.binaryBody.description, content: Object.fromEntries([...operation.binaryBody.mediaTypes].map((type) => [type, {}])) },
    }),
    responses,
  };
}

/** Decision endpoints are those the gateway middleware guards: they answer gateway_unauthenticated. */
function isDecisionEndpoint(operation: ApiOperation): boolean {
  return (operation.problems ?? []).some((use) => (typeof use === 'string' ? use : use.code) === 'gateway_unauthenticated');
}

function responseObject(response: ApiResponse, schemaOf: (schema: z.ZodType, io: Io) => JsonSchema): JsonSchema {
  const described = { description: response.description, headers: { 'X-Request-ID': REQUEST_ID_HEADER, ...headerObjects(response.headers ?? {}) } };
  if (response.schema) return { ...described, content: { [response.contentType ?? 'application/json']: { schema: schemaOf(response.schema, 'output') } } };
  // Without a schema a text body is a string; a JSON one is left unconstrained.
  if (response.contentType) return { ...described, content: { [response.contentType]: { schema: response.contentType.startsWith('text/') ? { type: 'string' } : {} } } };
  return described;
}

/** OpenAPI header objects: a string each, `required` when every answer of the status carries it. */
function headerObjects(headers: NonNullable<ApiResponse['headers']>): Record<string, JsonSchema> {
  return Object.fromEntries(
    Object.entries(headers).map(([name, { description, required }]) => [name, { description, ...(required && { required: true }), schema: { type: 'string' } }]),
  );
}

function pathParameters(operation: ApiOperation): JsonSchema[] {
  return [...operation.path.matchAll(/\{(\w+)\}/g)].map(([, name]) => ({
    name,
    in: 'path',
    required: true,
    schema: { type: 'string' },
    ...(operation.params?.[name!] !== undefined && { description: operation.params[name!] }),
  }));
}

function queryParameters(operation: ApiOperation): JsonSchema[] {
  if (!operation.query) return [];
  const schema = jsonSchema(operation.query, 'input') as { properties?: Record<string, JsonSchema>; required?: string[] };
  return Object.entries(schema.properties ?? {}).map(([name, property]) => ({
    name,
    in: 'query',
    required: schema.required?.includes(name) ?? false,
    schema: property,
  }));
}

function headerParameters(operation: ApiOperation): JsonSchema[] {
  return Object.entries(operation.headers ?? {}).map(([name, description]) => ({ name, in: 'header', required: false, description, schema: { type: 'string' } }));
}

function problemsByStatus(operation: ApiOperation, hostCheck: boolean): Map<string, ProblemCode[]> {
  const uses = [...ALWAYS, ...(hostCheck ? HOST_CHECK : []), ...(operation.scope ? ADMIN : []), ...(operation.scope && !operation.query ? NO_QUERY : []), ...(operation.problems ?? [])];
  const byStatus = new Map<string, ProblemCode[]>();
  for (const use of uses) {
    const code = typeof use === 'string' ? use : use.code;
    const status = String(typeof use === 'string' ? PROBLEM_TYPES[code].status[0] : use.status);
    const codes = byStatus.get(status) ?? [];
    if (!codes.includes(code)) codes.push(code);
    byStatus.set(status, codes);
  }
  return new Map([...byStatus].sort(([a], [b]) => a.localeCompare(b)));
}

/** A zod schema as a JSON Schema 2020-12 object, without `$schema` (the document's dialect applies). */
function jsonSchema(schema: z.ZodType, io: Io): JsonSchema {
  // Refinements and transforms cannot be expressed; the route still enforces them, the document describes the shape.
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, { target: 'draft-2020-12', io, unrepresentable: 'any' }) as JsonSchema;
  return rest;
}

function problemTable(): string {
  const rows = Object.entries(PROBLEM_TYPES).map(([code, type]) => `| \`${code}\` | ${type.status.join(', ')} | ${type.meaning} |`);
  return [
    'RFC 9457 problem details. `type` is `urn:arbiter:problem:<code>`; `code` is stable and machine-readable.',
    '',
    '| code | status | meaning |',
    '| --- | --- | --- |',
    ...rows,
  ].join('\n');
}
