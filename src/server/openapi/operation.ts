import type { z } from 'zod';
import type { GatewayConfig } from '../../config/gateway.ts';
import type { AdminScope } from '../middleware/admin-auth.ts';
import type { ProblemCode } from './problem-types.ts';

export type HttpMethod = 'get' | 'post' | 'put' | 'patch' | 'delete';

/** A non-problem response: JSON when `schema` is set, else `contentType` text, else no body (204). */
export interface ApiResponse {
  description: string;
  schema?: z.ZodType;
  /** Defaults to application/json with a schema. */
  contentType?: string;
  /** Response headers a client reads (name -> what it says); `required` when every such answer carries it. */
  headers?: Record<string, { description: string; required?: boolean }>;
}

/** A problem code the operation can answer with, at its usual status or at the one given. */
export type ProblemUse = ProblemCode | { code: ProblemCode; status: number };

/** One operation of the HTTP API, described from the same zod schemas the route validates with. */
export interface ApiOperation {
  method: HttpMethod;
  /** OpenAPI style: `/v1/revocations/{id}`. Every `{name}` becomes a required path parameter. */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tags: readonly string[];
  /** Admin bearer token scope; absent means unauthenticated. Adds the 401/403 problems. */
  scope?: AdminScope;
  /** Descriptions of path parameters, by name. */
  params?: Record<string, string>;
  /** Query parameters: the properties of the schema the route parses `c.req.query()` with. */
  query?: z.ZodObject;
  /** Request headers the operation reads, name -> description. */
  headers?: Record<string, string>;
  /** JSON request body: the schema passed to jsonBody(). */
  body?: z.ZodType;
  /**
   * The media types `body` is documented under, when not only application/json: jsonBody()
   * takes any application/*+json, and some bodies have their own (application/json-patch+json).
   */
  bodyMediaTypes?: readonly string[];
  /** A body that is not JSON (a bundle archive): the media types the route accepts, and what it is. */
  binaryBody?: { mediaTypes: Iterable<string>; description: string };
  responses: Record<number, ApiResponse>;
  problems?: readonly ProblemUse[];
}

export interface RouteCatalogue {
  info: { title: string; version: string; description: string };
  /** How the gateways calling decision endpoints authenticate (config gateway.authentication). */
  gatewayAuthentication: GatewayConfig['authentication'];
  /** Whether Host is checked before every route (server.allowed_hosts, gateway.authentication none). */
  hostCheck: boolean;
  tags: readonly { name: string; description: string }[];
  /** Named schemas: an operation using one of these (by identity) refers to it in components.schemas. */
  schemas: Record<string, z.ZodType>;
  operations: readonly ApiOperation[];
}
