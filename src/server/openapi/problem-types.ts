/**
 * Every problem `code` the HTTP API answers with (RFC 9457; `type` is urn:arbiter:problem:<code>),
 * with the statuses it comes with and what it means. Operations in the catalogue name the codes
 * they can answer; a new code goes here first, so clients can rely on the list being complete.
 */
export interface ProblemType {
  readonly status: readonly number[];
  readonly meaning: string;
  /** Response headers that come with it (name -> what it says), documented on every status it is answered with. */
  readonly headers?: Readonly<Record<string, string>>;
}

const BEARER_CHALLENGE = { 'WWW-Authenticate': 'Bearer challenge naming the scope the operation requires (RFC 6750), with error="invalid_token" or "insufficient_scope" when a token was sent.' };
const RETRY_AFTER = { 'Retry-After': 'Seconds to wait before retrying.' };

export const PROBLEM_TYPES = {
  // Request shape (json-body middleware)
  unsupported_media_type: {
    status: [415, 400],
    meaning: 'The body is not application/json, or is sent with a Content-Encoding other than identity (the OPA data API also reads gzip, as OPA does; 400 on AuthZEN endpoints, which answer every malformed request with 400).',
    headers: { 'Accept-Encoding': '`identity` (`gzip, identity` on the OPA data API), when the refusal is of a Content-Encoding: send the body uncompressed.' },
  },
  body_too_large: { status: [413], meaning: 'The body exceeds the configured size limit.' },
  malformed_json: { status: [400], meaning: 'The body is empty or not valid UTF-8 JSON (on the OPA data API, also a body sent as `Content-Encoding: gzip` that does not decompress).' },
  request_incomplete: { status: [400], meaning: 'The connection closed before the whole request arrived (logged, not answered: the client is gone).' },
  // Refused by the HTTP parser before any route runs (any path)
  malformed_request: { status: [400], meaning: 'The request is not valid HTTP, e.g. a raw non-ASCII byte or a backslash in its target, the asterisk form, or a Host header that is not a host.' },
  headers_too_large: { status: [431], meaning: 'The request headers exceed the server limit.' },
  // Host check (host-check middleware), before any route when it applies
  host_not_allowed: { status: [421], meaning: 'The request\'s Host names neither a loopback name (localhost, *.localhost, 127.0.0.0/8, [::1]) nor one of server.allowed_hosts: this server does not answer for it (checked with gateway.authentication none, or whenever server.allowed_hosts is set), so a web page whose name was made to resolve to this machine (DNS rebinding) gets nothing. `host` names it. Not a decision: nothing is recorded in the decision log; counted in arbiter_host_refusals_total and logged.' },
  request_timeout: { status: [408], meaning: 'The whole request did not arrive within server.request_timeout_s.' },
  query_parameter_unknown: { status: [400], meaning: 'An admin operation that takes no query parameters was given one (`detail` names it): refused before anything is done.' },
  query_parameter_unsupported: { status: [400], meaning: 'The OPA data API was given `strict-builtin-errors=true`, which the WebAssembly engine cannot honour (a builtin error is undefined there, as in OPA by default): refused rather than answered with what an ignored error allows.' },
  invalid_request: { status: [400], meaning: 'The body does not fit the operation schema; `errors` lists each offending field as a JSON pointer (at most 100; `errors_omitted` counts the rest).' },
  // Admin authentication (admin-auth middleware)
  unauthorized: { status: [401], meaning: 'No admin bearer token, or one that fails verification.', headers: BEARER_CHALLENGE },
  forbidden: { status: [403], meaning: 'The admin token lacks the scope the operation requires.', headers: BEARER_CHALLENGE },
  admin_keys_unavailable: { status: [503], meaning: 'The admin token\'s issuer keys cannot be fetched now (its JWKS endpoint fails): the token is not known to be bad; Retry-After says when to retry.', headers: RETRY_AFTER },
  // Gateway authentication and admission (decision endpoints)
  gateway_unauthenticated: {
    status: [401],
    meaning: 'The gateway did not authenticate (API key or client certificate, per config gateway): counted in arbiter_gateway_auth_failures_total and logged.',
    headers: { 'WWW-Authenticate': '`ApiKey realm="arbiter"`.' },
  },
  tenant_not_permitted: { status: [403], meaning: 'The gateway is bound to tenants (gateway.api_keys[].tenants, gateway.client_certificates[].tenants) and the request names another one (`detail` names the field: X-Tenant, or /context/tenant, also in `errors`), names none, or is to an endpoint that names no tenant (/v1/decide, /v1/issuance, the OPA data API). Not a decision: nothing is recorded in the decision log.' },
  rate_limited: { status: [429], meaning: 'The caller is over its request rate; Retry-After says when to retry.', headers: RETRY_AFTER },
  overloaded: { status: [429], meaning: 'Too many decisions in flight (gateway.max_concurrent, or this caller\'s gateway.max_concurrent_per_caller); retry after a second.', headers: RETRY_AFTER },
  // Routing and faults (app)
  not_found: { status: [404], meaning: 'No route for this path.' },
  method_not_allowed: { status: [405], meaning: 'The path is served, but not with this method: `Allow` lists the methods it is.' },
  http_error: { status: [400, 500], meaning: 'The HTTP layer refused the request before a handler ran.' },
  internal_error: { status: [500], meaning: 'An unexpected fault; the server log has the request id.' },
  // Policy evaluation (OPA data API, AuthZEN search)
  entrypoint_not_found: { status: [404], meaning: 'No active bundle has this entrypoint. On the OPA data API the request is recorded as a deny (no_active_bundle or entrypoint_missing) whose `decision_id` the problem carries.' },
  policy_error: { status: [500], meaning: 'The policy failed while evaluating (e.g. a conflict between rule values).' },
  policy_resource_limit: { status: [500], meaning: 'The policy exceeded its memory limit.' },
  policy_contract_violation: { status: [500], meaning: 'The entrypoint returned a result of the wrong shape.' },
  policy_timeout: { status: [500], meaning: 'The policy ran past engine.deadline_ms and was stopped.' },
  audit_unavailable: { status: [500], meaning: 'The evaluation could not be recorded in the decision log, so its result is withheld.' },
  // AuthZEN
  authzen_unavailable: { status: [503], meaning: 'No bundle answers this AuthZEN request (no default bundle or tenant mapping, or it is not active).' },
  search_unsupported: { status: [501], meaning: 'The answering bundle does not implement this search.' },
  invalid_page_token: { status: [400], meaning: 'page.token was not issued by this PDP for this same search: `errors` names it by JSON pointer (/page/token, or /page/next_token as the drafts before AuthZEN 1.0 send it).' },
  // Live data and revocations (admin-errors)
  data_path_invalid: { status: [400], meaning: 'The data path is not a sequence of valid keys.' },
  data_invalid: { status: [400], meaning: 'The document is not plain JSON data (an empty key): `errors` names the field by JSON pointer into the body.' },
  data_too_deep: { status: [400], meaning: 'The document nests deeper than data.max_depth: `errors` names the field by JSON pointer into the body (none when the URL path alone is too deep).' },
  data_too_large: { status: [400], meaning: 'The write would grow live data past data.max_size_bytes, or one JSON Patch would add more than that many bytes.' },
  data_meta_invalid: { status: [400], meaning: 'Arbiter-Data-Source or Arbiter-Data-Max-Age is malformed.' },
  entitlements_invalid: { status: [400], meaning: 'The write would leave the entitlements document in a shape the default policy cannot read (data.check_entitlements): `errors` names each field by JSON pointer into the body (for a JSON Patch, as its paths address the document): at most 100, `errors_omitted` counting the rest.' },
  json_patch_invalid: { status: [400], meaning: 'The body is not a valid JSON Patch (RFC 6902): `errors` names the operation\'s member by JSON pointer (`/1/path`).' },
  revocation_invalid: { status: [400], meaning: 'The revocation or its list query is malformed, or an `expires_at` has already passed (clock tolerance included; `errors` names it by JSON pointer, `/expires_at` or `/revocations/<i>/expires_at`: every such entry of a batch, at most 100, `errors_omitted` counting the rest), or an `issued_before`, `jti` or `sid` entry names an `iss` that is no configured issuer (it would never apply: `errors` names `/iss`, listing the issuers configured).' },
  data_not_found: { status: [404], meaning: 'No data at this path.' },
  revocation_not_found: { status: [404], meaning: 'No revocation with this id.' },
  data_path_owned_by_bundle: { status: [409], meaning: 'The path is inside or above the roots of an active bundle, or of one being pushed, pulled or activated, and read-only (a DELETE of live data there goes through).' },
  data_path_conflict: { status: [409], meaning: 'The path runs through a value that is not an object.' },
  json_patch_path_not_found: { status: [409], meaning: 'A patch operation names a path that does not exist: `errors` names its `path` or `from` by JSON pointer (`/0/from`).' },
  json_patch_test_failed: { status: [409], meaning: 'A patch `test` operation did not match; nothing was applied. `errors` names its `value` by JSON pointer.' },
  precondition_failed: { status: [412], meaning: 'The write\'s If-Match or If-None-Match does not hold against the live data version (its entity tag, `"<version>"`) or against whether the path holds a value (`*`); nothing changed.' },
  data_store_write_failed: { status: [503], meaning: 'The SQLite store could not commit the write; nothing changed.' },
  // Bundles (admin-errors; a bundle refused by a check answers 422 with `code` and `check` naming the check)
  bundle_name_invalid: { status: [400], meaning: 'The bundle name is not lowercase letters, digits, _ and - (at most 64).' },
  bundle_not_found: { status: [404], meaning: 'No bundle with this name.' },
  bundle_revision_not_found: { status: [404], meaning: 'The bundle has no stored revision with this name.' },
  bundle_revision_pruned: { status: [410], meaning: 'This revision was stored, but bundles.retention.max_revisions has deleted its archive: push it again to serve it.' },
  bundle_in_use: { status: [409], meaning: 'The bundle is targeted by configuration and cannot be removed.' },
  bundle_roots_overlap: { status: [409], meaning: 'The bundle\'s roots overlap another active bundle\'s, or cover a live data document that is written (delete it first if the bundle is to own it).' },
  bundle_replayed: { status: [409], meaning: 'This signed revision is older than the active one, or than the one active when the bundle was deleted (stored before it, or its iat is not newer): activate it explicitly to roll back (one retention has pruned, or of a deleted bundle: rebuild it under a new revision).' },
  bundle_revision_conflict: { status: [409], meaning: 'A different archive is stored, or served from bundles.dir, under this revision.' },
  archive_compressed_too_large: { status: [413], meaning: 'The archive exceeds bundles.limits.max_compressed_bytes.' },
  bundle_store_digest_mismatch: { status: [500], meaning: 'A stored archive no longer matches its digest.' },
  bundle_store_unreadable: { status: [503], meaning: 'The bundle store cannot be read.' },
  bundle_store_write_failed: { status: [503], meaning: 'The bundle store could not write; nothing changed.' },
  wasm_check_interrupted: { status: [503], meaning: 'The evaluation worker checking policy.wasm stopped twice before it answered (a crash): nothing is known against the bundle, nothing changed; push it again.' },
  signature_digest_unavailable: { status: [503], meaning: 'The thread hashing a large data.json or .manifest for the signature check stopped without an answer (out of memory, say): nothing is known against the bundle, nothing changed; push it again.' },
  // Decision log (auditor API)
  decision_query_invalid: { status: [400], meaning: 'A query parameter is malformed; `detail` names it.' },
  decision_cursor_invalid: { status: [400], meaning: '`cursor` is not one this server returned.' },
  decision_not_found: { status: [404], meaning: 'No decision with this id: unknown, pruned by retention, or, on a relaxed decision log, answered but not committed yet (the detail says so).' },
  decision_not_replayable: { status: [409], meaning: 'No policy ran for this decision (no bundle answered, or its token was refused first).' },
  decision_log_disabled: { status: [503], meaning: 'decision_log.enabled is false: there is no decision log to read.' },
  decision_export_incomplete: { status: [409], meaning: 'Only ever the last line of an export: retention deleted the oldest records while the export was read, so records it matched may be missing (an export `from` a time retention by age had not reached goes on). Export again; the deleted records are gone.' },
  decision_query_incomplete: { status: [409], meaning: 'A page asked for with a cursor: retention deleted the oldest records since the first page of the query, so this page and the next may lack records it matched (a query `from` a time retention by age had not reached goes on). Query again from the first page; the deleted records are gone.' },
  decision_log_corrupt: { status: [500], meaning: 'A stored record (`seq` names it) no longer reads as a record: the database was changed outside Arbiter. Also the last line of an export that stops there.' },
} as const satisfies Record<string, ProblemType>;

export type ProblemCode = keyof typeof PROBLEM_TYPES;
