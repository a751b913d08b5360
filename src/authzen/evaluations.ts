import type { Decision } from '../decisions/pipeline.ts';
import { fieldErrors } from '../server/middleware/json-body.ts';
import { isObject } from '../policy/overlay.ts';
import { authzenDecision, invalidItemDecision, type AuthzenDecision } from './mapping.ts';
import { evaluationRequestSchema, type EvaluationRequest, type EvaluationsRequest, type EvaluationsSemantic } from './schema.ts';

export type BatchOutcome =
  | { ok: true; evaluations: AuthzenDecision[] }
  /** A decision the pipeline could not answer (no active bundle): the whole batch is a 503. */
  | { ok: false; decision: Decision };

/**
 * Runs the items of a batch in request order. Each item's subject, action, resource and
 * context replace the top-level default whole (no deep merge). An item that does not form a
 * valid evaluation is `{"decision": false}` and counts as a deny for short-circuiting.
 */
export async function evaluateBatch(
  request: EvaluationsRequest & { evaluations: unknown[] },
  decide: (evaluation: EvaluationRequest) => Promise<Decision>,
): Promise<BatchOutcome> {
  const semantic = request.options.evaluations_semantic;
  const explain = request.options.include_reasons;
  const evaluations: AuthzenDecision[] = [];
  for (const [index, item] of request.evaluations.entries()) {
    const merged = withDefaults(request, item);
    let result: AuthzenDecision;
    if (merged.success) {
      const decision = await decide(merged.data);
      if (!decision.answered) return { ok: false, decision };
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

function withDefaults(defaults: EvaluationsRequest, item: unknown): { success: true; data: EvaluationRequest } | { success: false; message: string } {
  if (!isObject(item)) return { success: false, message: 'an evaluation must be an object' };
  const merged = {
    subject: item.subject ?? defaults.subject,
    action: item.action ?? defaults.action,
    resource: item.resource ?? defaults.resource,
    context: item.context ?? defaults.context,
  };
  const parsed = evaluationRequestSchema.safeParse(merged);
  if (parsed.success) return parsed;
  return { success: false, message: fieldErrors(parsed.error).map((e) => `${e.pointer || '/'}: ${e.detail}`).join('; ') };
}
