import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { ArbiterError, BundleRejectedError, DecisionLogCorruptError, FieldsInvalidError } from '../errors.ts';
import { fieldErrorMembers, problem, problemDocument, type Problem } from './problem.ts';

/** HTTP status of each error code an admin operation can raise; unknown codes are server faults. */
const STATUS_BY_CODE: Record<string, ContentfulStatusCode> = {
  data_path_invalid: 400,
  data_invalid: 400,
  data_too_deep: 400,
  data_too_large: 400,
  data_meta_invalid: 400,
  entitlements_invalid: 400,
  json_patch_invalid: 400,
  revocation_invalid: 400,
  data_not_found: 404,
  revocation_not_found: 404,
  data_path_owned_by_bundle: 409,
  data_path_conflict: 409,
  json_patch_path_not_found: 409,
  json_patch_test_failed: 409,
  precondition_failed: 412,
  data_store_write_failed: 503,
  bundle_name_invalid: 400,
  bundle_not_found: 404,
  bundle_revision_not_found: 404,
  // It existed, and will not come back by retrying: Gone.
  bundle_revision_pruned: 410,
  bundle_in_use: 409,
  bundle_roots_overlap: 409,
  bundle_replayed: 409,
  bundle_revision_conflict: 409,
  archive_compressed_too_large: 413,
  bundle_store_digest_mismatch: 500,
  bundle_store_unreadable: 503,
  bundle_store_write_failed: 503,
  // The worker checking the module stopped twice (a crash): nothing is known against the bundle, and a retry may pass.
  wasm_check_interrupted: 503,
  // The thread hashing a large signed file stopped without an answer: nothing is known against the bundle either.
  signature_digest_unavailable: 503,
  decision_query_invalid: 400,
  decision_cursor_invalid: 400,
  decision_not_found: 404,
  decision_not_replayable: 409,
  // Damaged at rest, like a bundle archive that no longer matches its digest: retrying will not help.
  decision_log_corrupt: 500,
  // Retention deleted records while an export was read: what is left exports whole if asked again.
  decision_export_incomplete: 409,
  // Likewise for the pages of a query after its first: asked again from the first page, it is whole.
  decision_query_incomplete: 409,
};

/** Turns an ArbiterError from a store into the problem response its code calls for. */
export function adminProblem(c: Context, error: unknown): Response {
  if (!(error instanceof ArbiterError)) throw error;
  const { status, body } = problemOf(error);
  return problem(c, status, body);
}

/**
 * The problem document adminProblem answers for `error`, as JSON text: how a response
 * already streaming (a decision export) reports an error, as its last line.
 */
export function adminProblemText(error: ArbiterError, instance: string): string {
  const { status, body } = problemOf(error);
  return problemDocument(status, body, instance);
}

function problemOf(error: ArbiterError): { status: ContentfulStatusCode; body: Problem } {
  // A bundle that fails a check is well-formed HTTP the server cannot use: 422, naming the check.
  const status = STATUS_BY_CODE[error.code] ?? (error instanceof BundleRejectedError ? 422 : 500);
  const check = error instanceof BundleRejectedError ? { check: error.check } : {};
  const seq = error instanceof DecisionLogCorruptError ? { seq: error.seq } : {};
  const fields = error instanceof FieldsInvalidError ? fieldErrorMembers(error.errors, error.omitted) : {};
  return { status, body: { code: error.code, title: error.code.replaceAll('_', ' '), detail: error.message, ...check, ...seq, ...fields } };
}
