import type { Decision } from '../decisions/pipeline.ts';
import { describeFieldError, fieldErrors } from '../server/middleware/json-body.ts';
import { isObject } from '../is-object.ts';
import { authzenDecision, invalidItemDecision, type AuthzenDecision } from './mapping.ts';
import { evaluationRequestSchema, type EvaluationRequest, type EvaluationsRequest, type EvaluationsSemantic } from './schema.ts';

export type BatchOutcome =
  | { ok: true; evaluations: AuthzenDecision[] }
  /**
   * A decision the pipeline could not answer (no active bundle: the whole batch is a 503), or
   * one the decision log could not record (`unrecorded`: a 500 audit_unavailable, as for a
   * search): the batch stops there rather than wait for the log on every further item.
   */
  | { ok: false; decision: Decision; unrecorded?: boolean };

/**
 * Runs the items of a batch in request order. Each item's subject, action, resource and
 * context replace the top-level default whole (no deep merge). An item that does not form a
 * valid evaluation is `{"decision": false}` and counts as a deny for short-circuiting.
 */
export async function evaluateBatch(
  request: EvaluationsRequest & { evaluations: unknown[] },
  decide: (evaluation: EvaluationRequest) => Promise<Decision>,
  /** The tenant whose bundle answers the batch (X-Tenant or the top-level context.tenant). */
  tenant?: string,
): Promise<BatchOutcome> {
  const semantic = request.options.evaluations_semantic;
  const explain = request.options.include_reasons;
  const evaluations: AuthzenDecision[] = [];
  for (const [index, item] of request.evaluations.entries()) {
    const merged = withDefaults(request, item, tenant);
    let result: AuthzenDecision;
    if (merged.success) {
      const decision = await decide(merged.data);
      if (!decision.answered) return { ok: false, decision };
      if (decision.unrecorded) return { ok: false, decision, unrecorded: true };
      result = authzenDecision(decision, explain);
    } else {
      result = invalidItemDecision(`evaluations[${index}]: ${merged.message}`, explain);
    }
    evaluations.push(result);
    if (stops(semantic, result.decision)) break;
  }
  return { ok: true, evaluations };
}

/** `&&` stops at the first deny, `||` at the first permit; the rest are neither run nor returned (AuthZEN 1.0, 7.1.2). */
function stops(semantic: EvaluationsSemantic, decision: boolean): boolean {
  if (semantic === 'deny_on_first_deny') return !decision;
  if (semantic === 'permit_on_first_permit') return decision;
  return false;
}

function withDefaults(
  defaults: EvaluationsRequest,
  item: unknown,
  tenant: string | undefined,
): { success: true; data: EvaluationRequest } | { success: false; message: string } {
  if (!isObject(item)) return { success: false, message: 'an evaluation must be an object' };
  // A member the item gives, null included, is the item's: only an absent one is the default's.
  const own = (key: 'subject' | 'action' | 'resource' | 'context') => (Object.hasOwn(item, key) ? item[key] : defaults[key]);
  const merged = { subject: own('subject'), action: own('action'), resource: own('resource'), context: own('context') };
  // One bundle answers the batch: an item that names another tenant is not evaluated by it.
  const itemTenant = Object.hasOwn(item, 'context') && isObject(item.context) ? item.context.tenant : undefined;
  if (typeof itemTenant === 'string' && itemTenant !== tenant) {
    return { success: false, message: `/context/tenant: ${JSON.stringify(itemTenant)} is not the tenant answering this batch (X-Tenant or the top-level context.tenant)` };
  }
  const parsed = evaluationRequestSchema.safeParse(merged);
  if (parsed.success) return parsed;
  return { success: false, message: fieldErrors(parsed.error).map(describeFieldError).join('; ') };
}
