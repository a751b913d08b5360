/**
 * Request shapes of the AuthZEN Authorization API 1.0 (openid.net/specs/authorization-api-1_0).
 * Objects are z.object, not strictObject: the spec requires receivers to ignore unknown
 * members, so they are stripped rather than refused. Wrong types and missing required
 * members are refused (400).
 */
import { z } from 'zod';
import { requestObjectSchema } from '../data/json-value.ts';

/** Subject property carrying the caller's access token; verified like /v1/decide's `token`, never passed to the policy. */
export const ACCESS_TOKEN_PROPERTY = 'access_token';

/** The most evaluations one /access/v1/evaluations request may carry. */
const MAX_EVALUATIONS = 1000;

export const DEFAULT_PAGE_LIMIT = 100;
/** A larger page.limit is lowered to this: the spec lets a PDP return fewer results than asked. */
export const MAX_PAGE_LIMIT = 1000;

const properties = requestObjectSchema;

const subjectProperties = properties.refine(
  (value) => value[ACCESS_TOKEN_PROPERTY] === undefined || (typeof value[ACCESS_TOKEN_PROPERTY] === 'string' && value[ACCESS_TOKEN_PROPERTY] !== ''),
  { message: `${ACCESS_TOKEN_PROPERTY} must be a non-empty string (a compact JWS access token)`, path: [ACCESS_TOKEN_PROPERTY] },
);

export const subjectSchema = z.object({ type: z.string(), id: z.string(), properties: subjectProperties.optional() });
export const resourceSchema = z.object({ type: z.string(), id: z.string(), properties: properties.optional() });
export const actionSchema = z.object({ name: z.string(), properties: properties.optional() });
const contextSchema = properties;

export type Subject = z.infer<typeof subjectSchema>;
export type Resource = z.infer<typeof resourceSchema>;
export type Action = z.infer<typeof actionSchema>;

/** POST /access/v1/evaluation, and one merged item of /access/v1/evaluations. */
export const evaluationRequestSchema = z.object({
  subject: subjectSchema,
  action: actionSchema,
  resource: resourceSchema,
  context: contextSchema.optional(),
});
export type EvaluationRequest = z.infer<typeof evaluationRequestSchema>;

export const evaluationsSemanticSchema = z.enum(['execute_all', 'deny_on_first_deny', 'permit_on_first_permit']);
export type EvaluationsSemantic = z.infer<typeof evaluationsSemanticSchema>;

/**
 * POST /access/v1/evaluations. The top-level entities are defaults for the items; items stay
 * unparsed here so that one bad item denies that item instead of failing the whole batch.
 */
export const evaluationsRequestSchema = z.object({
  subject: subjectSchema.optional(),
  action: actionSchema.optional(),
  resource: resourceSchema.optional(),
  context: contextSchema.optional(),
  evaluations: z.array(z.unknown()).max(MAX_EVALUATIONS).optional(),
  options: z
    .object({
      evaluations_semantic: evaluationsSemanticSchema.default('execute_all'),
      /** Arbiter's option: batch items carry their reasons in `context` only when asked, so default items stay exactly `{"decision": ...}`. */
      include_reasons: z.boolean().default(false),
    })
    .prefault({}),
});
export type EvaluationsRequest = z.infer<typeof evaluationsRequestSchema>;

const pageSchema = z
  .object({
    token: z.string().optional(),
    // Any whole number from 1, however large (z.int() stops at 2^53): what is above the maximum is lowered to it.
    limit: z
      .number()
      .min(1)
      .refine(Number.isInteger, 'Invalid input: expected int, received number')
      .transform((limit) => Math.min(limit, MAX_PAGE_LIMIT))
      .optional(),
    /**
     * The drafts before 1.0 send the next page as `page.next_token`: ignoring it would answer
     * the first page again, with the same token, to a PEP that then never stops paging.
     */
    next_token: z.string().optional(),
  })
  // An empty next_token, like an empty token, names no page: only two different pages conflict.
  .refine((page) => !page.token || !page.next_token || page.token === page.next_token, {
    message: 'page.next_token names another page than page.token: send only page.token',
    path: ['next_token'],
  })
  // An empty token beside a next_token gives way to it: the one that names a page is meant.
  // Where it was read from is kept, so that a refusal names the member the body gave it in.
  .transform(({ next_token, ...page }) => ({
    ...page,
    token: page.token || next_token || page.token,
    tokenPointer: !page.token && next_token ? '/page/next_token' : '/page/token',
  }))
  .optional();

/** The searched entity: its type only; a subject or resource `id` is ignored, as the spec says. */
const searchedEntity = z.object({ type: z.string(), properties: properties.optional() });

export const subjectSearchRequestSchema = z.object({
  subject: searchedEntity,
  action: actionSchema,
  resource: resourceSchema,
  context: contextSchema.optional(),
  page: pageSchema,
});

export const resourceSearchRequestSchema = z.object({
  subject: subjectSchema,
  action: actionSchema,
  resource: searchedEntity,
  context: contextSchema.optional(),
  page: pageSchema,
});

export const actionSearchRequestSchema = z.object({
  subject: subjectSchema,
  resource: resourceSchema,
  context: contextSchema.optional(),
  page: pageSchema,
});

export type SubjectSearchRequest = z.infer<typeof subjectSearchRequestSchema>;
export type ResourceSearchRequest = z.infer<typeof resourceSearchRequestSchema>;
export type ActionSearchRequest = z.infer<typeof actionSearchRequestSchema>;
export type SearchKind = 'subject' | 'resource' | 'action';

/** What a bundle's candidate entrypoints must return for each search. */
export const candidateSchemas = {
  subject: z.array(z.object({ type: z.string(), id: z.string(), properties: properties.optional() })),
  resource: z.array(z.object({ type: z.string(), id: z.string(), properties: properties.optional() })),
  action: z.array(z.object({ name: z.string(), properties: properties.optional() })),
} as const;

/** The `authzen` block of a bundle's `.manifest` metadata. */
export const bundleAuthzenMetadataSchema = z.object({
  evaluation: z.string().min(1),
  search: z
    .object({
      subject: z.string().min(1).optional(),
      resource: z.string().min(1).optional(),
      action: z.string().min(1).optional(),
    })
    .default({}),
});
