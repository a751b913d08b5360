import { z } from 'zod';
import { evaluationRequestSchema, evaluationsRequestSchema, actionSearchRequestSchema, resourceSearchRequestSchema, subjectSearchRequestSchema } from '../../authzen/schema.ts';
import { AUTHZEN_PATHS, METADATA_PATH } from '../../authzen/metadata.ts';
import { JsonPatchSchema } from '../../data/json-patch.ts';
import { activateRequestSchema, BUNDLE_MEDIA_TYPES } from '../routes/bundles.ts';
import { decideRequestSchema } from '../routes/decide.ts';
import { decisionFiltersQuerySchema, decisionsQuerySchema, replayRequestSchema } from '../routes/decisions.ts';
import { issuanceRequestSchema } from '../routes/issuance.ts';
import { opaDataRequestSchema } from '../routes/opa-compat.ts';
import { listQuerySchema as revocationListQuerySchema, revocationRequestSchema } from '../routes/revocations.ts';
import { PATCH_MEDIA_TYPES } from '../routes/data.ts';
import { PROBLEM_CONTENT_TYPE } from '../problem.ts';
import { EVALUATION_FAILURE_CODES } from '../../policy/engine.ts';
import type { ApiOperation, ProblemUse, RouteCatalogue } from './operation.ts';
import {
  authzenDecisionSchema,
  authzenEvaluationsResponseSchema,
  authzenMetadataSchema,
  authzenSearchResponseSchema,
  bundleAcceptedSchema,
  bundleListSchema,
  bundleStatusSchema,
  dataReadResponseSchema,
  dataVersionResponseSchema,
  decisionPageSchema,
  decisionResponseSchema,
  healthResponseSchema,
  issuanceResponseSchema,
  opaDataResponseSchema,
  problemSchema,
  readinessResponseSchema,
  replayReportSchema,
  revocationCreatedSchema,
  revocationPageSchema,
  revocationSchema,
  storedDecisionSchema,
  verifyReportSchema,
} from './schemas.ts';
import packageJson from '../../../package.json' with { type: 'json' };

/** Routes mounted only when configured: the catalogue lists exactly what the app serves. */
export interface CatalogueFeatures {
  opaCompat: boolean;
  metrics: boolean;
  /** gateway.authentication: how decision endpoints are called. */
  gatewayAuthentication: RouteCatalogue['gatewayAuthentication'];
  /** Whether the main listener checks Host (middleware/host-check.ts): every operation may answer host_not_allowed. */
  hostCheck: boolean;
  /** The path of authzen.public_url ('' or absent for none): its metadata route is served then. */
  authzenIdentifierPath?: string;
}

const BODY: readonly ProblemUse[] = ['unsupported_media_type', 'body_too_large', 'malformed_json', 'invalid_request'];
/**
 * Decision endpoints authenticate and admit the gateway before reading the body; a key bound to
 * tenants is refused on the endpoints that name none, and on AuthZEN for a tenant not its own.
 */
const GATEWAY: readonly ProblemUse[] = ['gateway_unauthenticated', 'rate_limited', 'overloaded', 'tenant_not_permitted'];
// AuthZEN answers every malformed request with 400 (json-body's unsupportedMediaTypeStatus).
const AUTHZEN_BODY: readonly ProblemUse[] = [...GATEWAY, { code: 'unsupported_media_type', status: 400 }, 'body_too_large', 'malformed_json', 'invalid_request'];
const SEARCH: readonly ProblemUse[] = [
  ...AUTHZEN_BODY,
  'invalid_page_token',
  'search_unsupported',
  'authzen_unavailable',
  ...EVALUATION_FAILURE_CODES,
  'audit_unavailable',
];
const DATA_WRITE: readonly ProblemUse[] = [
  'data_path_invalid',
  'data_meta_invalid',
  'data_invalid',
  'data_too_deep',
  'data_too_large',
  'entitlements_invalid',
  'data_path_owned_by_bundle',
  'data_path_conflict',
  'precondition_failed',
  'data_store_write_failed',
];
/** The entity tag of live data is its version, `"<version>"` (ETag of reads and writes; it changes with every write). */
const DATA_CONDITION_HEADERS = {
  'If-Match': 'Write only if the live data version is one of these entity tags ("<version>", as the ETag of a read or a write; strong comparison), or with * only if the path holds a value: else 412 precondition_failed.',
  'If-None-Match': 'Write only if the live data version is none of these entity tags, or with * only if the path holds nothing (create only): else 412 precondition_failed.',
};
/** The entity tag every live data write answers with. */
const DATA_ETAG = { ETag: { description: 'The new live data version as an entity tag, `"<version>"`: the If-Match of a next write.', required: true } };
const DATA_META_HEADERS = {
  'Arbiter-Data-Source': 'Where the document came from (1-256 characters), reported in input.data_status.',
  'Arbiter-Data-Max-Age': 'Seconds after which the document counts as stale in input.data_status.',
};
const METADATA_TENANT_HEADER = { 'X-Tenant': 'Tenant whose bundle would answer (else authzen.default_bundle): its searches are listed.' };
const TENANT_HEADER = {
  'X-Tenant':
    'Tenant whose bundle answers (else context.tenant, else authzen.default_bundle). A gateway bound to tenants (gateway.api_keys[].tenants, gateway.client_certificates[].tenants) must name one of them: another, or none, is 403 tenant_not_permitted.',
};
const BUNDLE_LOCATION = { Location: { description: 'The bundle: /v1/bundles/{name}.', required: true } };
const BUNDLE_NAME = { name: 'Bundle name: lowercase letters, digits, _ and - (at most 64)' };
const BUNDLE_STATUS = 'The bundle: `name`, the `active` activation (revision, digest, activated_at/by, source) or null, and its stored `revisions` (those bundles.retention.max_revisions keeps: a pruned one is not listed)';
const DECISION_ID = { id: 'decision_id (UUIDv7) as the decision endpoint answered it' };
const DECISION_LOG: readonly ProblemUse[] = ['decision_log_disabled'];
const DATA_PATH = {
  path:
    'Slash-separated keys below /v1/data, sent as literal slashes (/v1/data/authz/actions); an encoded %2F stays inside its key. Keys "." and ".." cannot be addressed (URL parsing resolves them, also encoded), nor can a write name an empty key (a leading, trailing or doubled slash): data_path_invalid. ' +
    'OpenAPI path parameters cannot hold a slash: a generated client that percent-encodes this parameter names one key, so build the URL yourself for nested paths.',
};

/**
 * Every operation of the HTTP API. To document a new route, add an entry next to its family:
 * method, OpenAPI path, operationId, summary, tags, the admin `scope` if any, the zod `body`
 * (and `query`) schema the route validates with, its responses and the problem codes it answers.
 * test/openapi.test.ts fails while a mounted route has no entry, or an entry no route.
 */
export function arbiterCatalogue(features: CatalogueFeatures): RouteCatalogue {
  const operations: ApiOperation[] = [
    // operations
    { method: 'get', path: '/healthz', operationId: 'getHealth', summary: 'Liveness: the process answers', tags: ['operations'], responses: { 200: { description: 'Alive', schema: healthResponseSchema } } },
    {
      method: 'get',
      path: '/readyz',
      operationId: 'getReadiness',
      summary: 'Readiness: not draining, the default bundles active (bundles.default, authzen.default_bundle when set), the decision log taking records, the live data within what the evaluation workers can be handed, every issuer\'s keys loaded once',
      tags: ['operations'],
      responses: { 200: { description: 'Ready', schema: readinessResponseSchema }, 503: { description: 'Not ready; `problems` says why', schema: readinessResponseSchema } },
    },
    { method: 'get', path: '/openapi.json', operationId: 'getOpenApiDocument', summary: 'This OpenAPI 3.1 document', tags: ['operations'], responses: { 200: { description: 'The document', contentType: 'application/json' } } },
    { method: 'get', path: '/docs', operationId: 'getApiDocs', summary: 'Browsable API documentation (self-contained HTML)', tags: ['operations'], responses: { 200: { description: 'HTML page', contentType: 'text/html' } } },
    ...(features.metrics
      ? [{ method: 'get', path: '/metrics', operationId: 'getMetrics', summary: 'Prometheus metrics (text exposition format)', tags: ['operations'], responses: { 200: { description: 'Metrics', contentType: 'text/plain' } } } satisfies ApiOperation]
      : []),

    // decisions
    {
      method: 'post',
      path: '/v1/decide',
      operationId: 'decide',
      summary: 'Decide whether the token\'s subject may perform an action on a resource',
      description: 'A deny is a 200 with `allow: false` and reason codes. Every doubt (bad token, policy error) is a deny.',
      tags: ['decisions'],
      body: decideRequestSchema,
      responses: { 200: { description: 'The decision', schema: decisionResponseSchema }, 503: { description: 'No active bundle could answer: a deny with reason no_active_bundle', schema: decisionResponseSchema } },
      problems: [...GATEWAY, ...BODY],
    },
    {
      method: 'post',
      path: '/v1/issuance',
      operationId: 'decideIssuance',
      summary: 'Decide which scopes a token about to be issued may carry',
      tags: ['decisions'],
      body: issuanceRequestSchema,
      responses: { 200: { description: 'The decision with granted and refused scopes', schema: issuanceResponseSchema }, 503: { description: 'No active bundle could answer', schema: issuanceResponseSchema } },
      problems: [...GATEWAY, ...BODY],
    },

    // AuthZEN
    { method: 'get', path: METADATA_PATH, operationId: 'getAuthzenMetadata', summary: 'AuthZEN PDP metadata', tags: ['authzen'], headers: METADATA_TENANT_HEADER, responses: { 200: { description: 'Endpoints this PDP supports', schema: authzenMetadataSchema, headers: { Vary: { description: 'X-Tenant: the search endpoints listed depend on it.', required: true } } } } },
    ...(features.authzenIdentifierPath
      ? [
          {
            method: 'get',
            path: `${METADATA_PATH}/{identifier_path}`,
            operationId: 'getAuthzenMetadataForIdentifier',
            summary: 'AuthZEN PDP metadata where a PEP looks for a PDP identifier with a path (authzen.public_url)',
            description: `Served for the path of authzen.public_url only (${METADATA_PATH}${features.authzenIdentifierPath}), as AuthZEN 1.0 places the document: the same answer as ${METADATA_PATH}.`,
            tags: ['authzen'],
            params: { identifier_path: 'The path of authzen.public_url, slashes included' },
            headers: METADATA_TENANT_HEADER,
            responses: { 200: { description: 'Endpoints this PDP supports', schema: authzenMetadataSchema, headers: { Vary: { description: 'X-Tenant: the search endpoints listed depend on it.', required: true } } } },
            problems: ['not_found'],
          } satisfies ApiOperation,
        ]
      : []),
    {
      method: 'post',
      path: AUTHZEN_PATHS.evaluation,
      operationId: 'authzenEvaluation',
      summary: 'AuthZEN access evaluation',
      tags: ['authzen'],
      headers: TENANT_HEADER,
      body: evaluationRequestSchema,
      responses: { 200: { description: 'The decision (a deny is `{"decision": false}`)', schema: authzenDecisionSchema } },
      problems: [...AUTHZEN_BODY, 'authzen_unavailable'],
    },
    {
      method: 'post',
      path: AUTHZEN_PATHS.evaluations,
      operationId: 'authzenEvaluations',
      summary: 'AuthZEN access evaluations (batch)',
      tags: ['authzen'],
      headers: TENANT_HEADER,
      body: evaluationsRequestSchema,
      responses: { 200: { description: 'One decision per item, or a single decision without items', schema: z.union([authzenEvaluationsResponseSchema, authzenDecisionSchema]) } },
      // A batch stops at an item the decision log could not record, as a search does.
      problems: [...AUTHZEN_BODY, 'authzen_unavailable', 'audit_unavailable'],
    },
    ...(['subject', 'resource', 'action'] as const).map(
      (kind): ApiOperation => ({
        method: 'post',
        path: AUTHZEN_PATHS[kind],
        operationId: `authzenSearch${kind[0]!.toUpperCase()}${kind.slice(1)}`,
        summary: `AuthZEN ${kind} search`,
        tags: ['authzen'],
        headers: TENANT_HEADER,
        body: { subject: subjectSearchRequestSchema, resource: resourceSearchRequestSchema, action: actionSearchRequestSchema }[kind],
        responses: { 200: { description: `Permitted ${kind}s, paged`, schema: authzenSearchResponseSchema } },
        problems: SEARCH,
      }),
    ),

    // live data
    {
      method: 'get',
      path: '/v1/data/{path}',
      operationId: 'getData',
      summary: 'Read live data (or an active bundle\'s data under its roots)',
      tags: ['data'],
      scope: 'arbiter.data.read',
      params: DATA_PATH,
      responses: {
        200: {
          description: 'The value and the live data version (also the ETag, where no bundle\'s data is at, in or above the path)',
          schema: dataReadResponseSchema,
          headers: { ETag: { description: 'The live data version as an entity tag, `"<version>"`; absent where an active bundle\'s data is at, in or above the path (it changes without a new version).' } },
        },
      },
      problems: ['data_path_invalid', 'data_not_found'],
    },
    {
      method: 'put',
      path: '/v1/data/{path}',
      operationId: 'putData',
      summary: 'Replace the document at a path',
      tags: ['data'],
      scope: 'arbiter.data.write',
      params: DATA_PATH,
      headers: { ...DATA_META_HEADERS, ...DATA_CONDITION_HEADERS },
      body: z.unknown().describe('Any JSON value'),
      responses: { 200: { description: 'Committed; the new live data version (also the ETag)', schema: dataVersionResponseSchema, headers: DATA_ETAG } },
      problems: [...BODY, ...DATA_WRITE],
    },
    {
      method: 'patch',
      path: '/v1/data/{path}',
      operationId: 'patchData',
      summary: 'Apply a JSON Patch (RFC 6902) atomically',
      tags: ['data'],
      scope: 'arbiter.data.write',
      params: DATA_PATH,
      headers: { ...DATA_META_HEADERS, ...DATA_CONDITION_HEADERS },
      body: JsonPatchSchema,
      // RFC 6902's own media type, what JSON Patch clients send; application/json is taken too.
      bodyMediaTypes: PATCH_MEDIA_TYPES,
      responses: { 200: { description: 'Committed; the new live data version (also the ETag)', schema: dataVersionResponseSchema, headers: DATA_ETAG } },
      // A patch changes a value that is there: none at the path is 404 (PUT creates it instead).
      problems: [...BODY, ...DATA_WRITE, 'data_not_found', 'json_patch_invalid', 'json_patch_path_not_found', 'json_patch_test_failed'],
    },
    {
      method: 'delete',
      path: '/v1/data/{path}',
      operationId: 'deleteData',
      summary: 'Delete the document at a path',
      tags: ['data'],
      scope: 'arbiter.data.write',
      params: DATA_PATH,
      headers: DATA_CONDITION_HEADERS,
      responses: { 204: { description: 'Deleted; ETag is the new live data version', headers: DATA_ETAG } },
      problems: ['data_path_invalid', 'data_not_found', 'data_path_owned_by_bundle', 'precondition_failed', 'data_store_write_failed'],
    },

    // revocations
    {
      method: 'post',
      path: '/v1/revocations',
      operationId: 'createRevocations',
      summary: 'Revoke tokens: one entry, or many in one transaction',
      description: 'Takes effect on the next decision after the 2xx, including for cached token verifications. An `issued_before` entry also fetches that issuer\'s key set again before the 2xx and forgets the verifications remembered of its tokens (a failed fetch is logged; the keys held stay in use). All or nothing: one invalid entry refuses the batch. Idempotent: an entry identical to one in force (same `kind`, `value` or `before`, `iss` and `expires_at`; its `reason` aside) adds nothing and is answered with the entry in force, its id included, so a feed may replay its revocations.',
      tags: ['revocations'],
      scope: 'arbiter.revocations.write',
      body: revocationRequestSchema,
      responses: {
        200: { description: 'Nothing added: every entry restates one in force, answered as it stands (a replay)', schema: revocationCreatedSchema },
        201: { description: 'Committed: at least one entry is new (the others are answered with the entries in force they restate)', schema: revocationCreatedSchema },
      },
      problems: [...BODY, 'revocation_invalid', 'data_store_write_failed'],
    },
    {
      method: 'get',
      path: '/v1/revocations',
      operationId: 'listRevocations',
      summary: 'List revocations in force, paged',
      tags: ['revocations'],
      scope: 'arbiter.revocations.read',
      query: revocationListQuerySchema,
      responses: { 200: { description: 'A page of revocations', schema: revocationPageSchema } },
      problems: ['revocation_invalid'],
    },
    {
      method: 'get',
      path: '/v1/revocations/{id}',
      operationId: 'getRevocation',
      summary: 'Read one revocation',
      tags: ['revocations'],
      scope: 'arbiter.revocations.read',
      responses: { 200: { description: 'The revocation', schema: revocationSchema } },
      problems: ['revocation_not_found'],
    },
    {
      method: 'delete',
      path: '/v1/revocations/{id}',
      operationId: 'deleteRevocation',
      summary: 'Lift a revocation',
      tags: ['revocations'],
      scope: 'arbiter.revocations.write',
      responses: { 204: { description: 'Removed' } },
      problems: ['revocation_not_found', 'data_store_write_failed'],
    },

    // bundles
    {
      method: 'get',
      path: '/v1/bundles',
      operationId: 'listBundles',
      summary: 'List bundles with their active and stored revisions',
      tags: ['bundles'],
      scope: 'arbiter.bundles.read',
      responses: { 200: { description: 'Every bundle, active or stored, by name', schema: bundleListSchema } },
      problems: ['bundle_store_unreadable'],
    },
    {
      method: 'get',
      path: '/v1/bundles/{name}',
      operationId: 'getBundle',
      summary: 'Read one bundle\'s status',
      tags: ['bundles'],
      scope: 'arbiter.bundles.read',
      params: BUNDLE_NAME,
      responses: { 200: { description: BUNDLE_STATUS, schema: bundleStatusSchema } },
      problems: ['bundle_not_found', 'bundle_store_unreadable'],
    },
    {
      method: 'put',
      path: '/v1/bundles/{name}',
      operationId: 'putBundle',
      summary: 'Push a bundle archive (opa build output): validate, store and activate it',
      description: 'The body is the .tar.gz (application/gzip). A refused bundle leaves the active revision serving.',
      tags: ['bundles'],
      scope: 'arbiter.bundles.write',
      params: BUNDLE_NAME,
      binaryBody: { mediaTypes: BUNDLE_MEDIA_TYPES, description: 'The bundle archive as opa build writes it (.tar.gz), at most bundles.limits.max_compressed_bytes' },
      responses: {
        201: { description: 'Activated', schema: bundleAcceptedSchema, headers: BUNDLE_LOCATION },
        200: { description: 'Unchanged: this archive is the active revision already', schema: bundleAcceptedSchema, headers: BUNDLE_LOCATION },
        422: { description: 'Refused by a check: `code` and `check` name it (archive_*, manifest_*, signature_*, wasm_*, bundle_data_invalid, bundle_data_unsupported, bundle_data_outside_roots, smoke_evaluation, ...)', schema: problemSchema, contentType: PROBLEM_CONTENT_TYPE },
      },
      problems: [
        'unsupported_media_type',
        'archive_compressed_too_large',
        'bundle_name_invalid',
        'bundle_roots_overlap',
        'bundle_replayed',
        'bundle_revision_conflict',
        'wasm_check_interrupted',
        'signature_digest_unavailable',
        'bundle_store_unreadable',
        'bundle_store_write_failed',
      ],
    },
    {
      method: 'post',
      path: '/v1/bundles/{name}/activate',
      operationId: 'activateBundle',
      summary: 'Activate a stored revision (roll back or forward)',
      tags: ['bundles'],
      scope: 'arbiter.bundles.write',
      params: BUNDLE_NAME,
      body: activateRequestSchema,
      responses: {
        200: { description: BUNDLE_STATUS, schema: bundleStatusSchema },
        422: { description: 'The stored revision fails a check', schema: problemSchema, contentType: PROBLEM_CONTENT_TYPE },
      },
      problems: [...BODY, 'bundle_name_invalid', 'bundle_not_found', 'bundle_revision_not_found', 'bundle_revision_pruned', 'bundle_roots_overlap', 'bundle_store_digest_mismatch', 'bundle_store_unreadable', 'bundle_store_write_failed', 'wasm_check_interrupted', 'signature_digest_unavailable'],
    },
    {
      method: 'delete',
      path: '/v1/bundles/{name}',
      operationId: 'deleteBundle',
      summary: 'Deactivate a bundle and delete its stored revisions',
      description:
        'Decisions naming the bundle are denied (no_active_bundle) from then on; a bundle served from bundles.dir comes back at the next start. ' +
        'A bundle with a signed revision stored keeps its replay mark (the store keeps its index, every revision pruned, across restarts): a later push of that name is held to the revision active when it was deleted, ' +
        'so a signed archive older than it is refused (409 bundle_replayed) and that archive itself or a newer signed revision is accepted. ' +
        'The mark holds signed archives only, as the replay rule does (an unsigned one is accepted after it while bundles.require_signatures is off). ' +
        'Its configured source (bundles.sources), if it has one, starts it afresh. A bundle that never had a signed revision stored is forgotten.',
      tags: ['bundles'],
      scope: 'arbiter.bundles.write',
      params: BUNDLE_NAME,
      responses: { 204: { description: 'Removed' } },
      problems: ['bundle_name_invalid', 'bundle_not_found', 'bundle_in_use', 'bundle_store_unreadable', 'bundle_store_write_failed'],
    },

    // decision log (auditors)
    {
      method: 'get',
      path: '/v1/decisions',
      operationId: 'queryDecisions',
      summary: 'Query recorded decisions, newest first, paged',
      description: 'Filters are ANDed. Pages are stable under concurrent writes: the cursor is a position, so decisions committed meanwhile never shift or repeat rows. A page asked for with a cursor after retention pruned since the first page answers 409 decision_query_incomplete (records it matched may be gone): ask again without the cursor.',
      tags: ['decision-log'],
      scope: 'arbiter.decisions.read',
      query: decisionsQuerySchema,
      responses: { 200: { description: 'A page of decisions', schema: decisionPageSchema } },
      problems: [...DECISION_LOG, 'decision_query_invalid', 'decision_cursor_invalid', 'decision_query_incomplete', 'decision_log_corrupt'],
    },
    {
      method: 'get',
      path: '/v1/decisions/export',
      operationId: 'exportDecisions',
      summary: 'Stream every matching decision as NDJSON (for SIEMs)',
      description:
        'One stored decision per line, newest first, streamed as it is read. An export that meets a damaged record stops there: its last line is then a problem document (`decision_log_corrupt`, with `seq`) instead of a decision. So does one that retention pruned under (`decision_export_incomplete`): the oldest records, read last, may have been deleted before it reached them.',
      tags: ['decision-log'],
      scope: 'arbiter.decisions.read',
      query: decisionFiltersQuerySchema,
      responses: { 200: { description: 'Newline-delimited JSON, one decision per line', contentType: 'application/x-ndjson' } },
      problems: [...DECISION_LOG, 'decision_query_invalid'],
    },
    {
      method: 'get',
      path: '/v1/decisions/verify',
      operationId: 'verifyDecisionLog',
      summary: 'Walk the hash chain and signed checkpoints; report the first record that does not match',
      tags: ['decision-log'],
      scope: 'arbiter.decisions.read',
      responses: { 200: { description: '`ok` true, or false with `first_mismatch`', schema: verifyReportSchema } },
      problems: DECISION_LOG,
    },
    {
      method: 'get',
      path: '/v1/decisions/{id}',
      operationId: 'getDecision',
      summary: 'Read one recorded decision',
      tags: ['decision-log'],
      scope: 'arbiter.decisions.read',
      params: DECISION_ID,
      responses: { 200: { description: 'The decision as stored', schema: storedDecisionSchema } },
      problems: [...DECISION_LOG, 'decision_not_found', 'decision_log_corrupt'],
    },
    {
      method: 'post',
      path: '/v1/decisions/{id}/replay',
      operationId: 'replayDecision',
      summary: 'Re-evaluate a recorded decision against the active or a stored revision',
      description: 'The recorded input (with its recorded time; masked fields stay masked) is evaluated again against today\'s live data. The body may be `{}`.',
      tags: ['decision-log'],
      scope: 'arbiter.decisions.read',
      params: DECISION_ID,
      body: replayRequestSchema,
      responses: {
        200: { description: 'The recorded and the replayed result side by side', schema: replayReportSchema },
        422: { description: 'The stored revision fails a check', schema: problemSchema, contentType: PROBLEM_CONTENT_TYPE },
      },
      problems: [...BODY, ...DECISION_LOG, 'decision_not_found', 'decision_log_corrupt', 'decision_not_replayable', 'bundle_not_found', 'bundle_revision_not_found', 'bundle_revision_pruned', 'bundle_store_digest_mismatch', 'bundle_store_unreadable', 'wasm_check_interrupted', 'signature_digest_unavailable'],
    },

    ...(features.opaCompat
      ? [
          {
            method: 'post',
            path: '/v1/data/{bundle}/{rule}',
            operationId: 'opaEvaluate',
            summary: 'OPA data API: evaluate an entrypoint on caller-supplied input (opa_compat.enabled)',
            description: 'Nothing in `input` is verified: only a trusted caller may reach this route.',
            tags: ['opa-compat'],
            params: { bundle: 'Bundle name', rule: 'Entrypoint path below the bundle, e.g. `decision` or `a/b`' },
            headers: { 'Content-Encoding': '`gzip` (or `x-gzip`) for a gzipped body, as OPA accepts: server.body_limit_bytes holds for it decompressed too (413). Another coding is 415.' },
            body: opaDataRequestSchema,
            responses: { 200: { description: 'The entrypoint value, as OPA answers', schema: opaDataResponseSchema } },
            problems: [...GATEWAY, 'query_parameter_unsupported', ...BODY, 'entrypoint_not_found', ...EVALUATION_FAILURE_CODES, 'audit_unavailable'],
          } satisfies ApiOperation,
        ]
      : []),
  ];

  return {
    gatewayAuthentication: features.gatewayAuthentication,
    hostCheck: features.hostCheck,
    info: {
      title: 'Arbiter',
      version: packageJson.version,
      description: 'Policy decision point: verifies access tokens, evaluates Rego compiled to WebAssembly, answers allow/deny with reasons.',
    },
    tags: [
      { name: 'decisions', description: 'Decisions for gateways and token issuers' },
      { name: 'authzen', description: 'OpenID AuthZEN Authorization API 1.0' },
      { name: 'data', description: 'Live data the policies evaluate against (admin)' },
      { name: 'revocations', description: 'Token revocations checked on every decision (admin)' },
      { name: 'bundles', description: 'Policy bundle lifecycle: push, activate, roll back, remove (admin)' },
      { name: 'decision-log', description: 'The audit record of every decision: read, query, export, verify, replay (admin)' },
      { name: 'opa-compat', description: 'OPA-compatible data API (off by default)' },
      { name: 'operations', description: 'Health, metrics and this documentation' },
    ],
    schemas: {
      DecideRequest: decideRequestSchema,
      Decision: decisionResponseSchema,
      IssuanceRequest: issuanceRequestSchema,
      IssuanceDecision: issuanceResponseSchema,
      AuthzenEvaluationRequest: evaluationRequestSchema,
      AuthzenDecision: authzenDecisionSchema,
      Revocation: revocationSchema,
      BundleStatus: bundleStatusSchema,
      JsonPatch: JsonPatchSchema,
    },
    operations,
  };
}
