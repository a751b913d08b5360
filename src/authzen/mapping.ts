/**
 * AuthZEN entities to Arbiter's decision request, and Arbiter's decision back to an AuthZEN
 * Decision. docs/authzen.md describes the mapping for policy authors.
 */
import type { Decision, DecisionRequest } from '../decisions/pipeline.ts';
import type { Reason } from '../policy/contract.ts';
import type { AuthzenBundle } from './bundles.ts';
import { ACCESS_TOKEN_PROPERTY, type Action, type EvaluationRequest, type Resource, type Subject } from './schema.ts';

/** An AuthZEN Reason Object: `reason_admin` is for administrators only, never for the end user. */
export interface ReasonObject {
  id: string;
  reason_admin: { en: string };
}

export interface AuthzenDecision {
  decision: boolean;
  context?: {
    decision_id?: string;
    reasons?: ReasonObject[];
    obligations?: Record<string, unknown>[];
  };
}

/** The PEP-asserted subject as the policy sees it, without the access token (the pipeline adds the verified fields). */
export function assertedSubject(subject: Subject): Record<string, unknown> {
  const { [ACCESS_TOKEN_PROPERTY]: _token, ...properties } = subject.properties ?? {};
  return { asserted: true, type: subject.type, id: subject.id, properties };
}

export function policyAction(action: Action): DecisionRequest['action'] {
  return { name: action.name, properties: action.properties ?? {} };
}

export function policyResource(resource: Resource): DecisionRequest['resource'] {
  return { type: resource.type, id: resource.id, properties: resource.properties ?? {} };
}

/**
 * One AuthZEN evaluation as a request to the decision pipeline. `target.tenant`, the tenant whose
 * bundle answers (X-Tenant, else context.tenant), is the policy's input.context.tenant, whatever
 * the evaluation's own context holds: a policy holds the resource to the tenant the request was
 * routed to (the default policy: request_tenant_mismatch), and a gateway key bound to tenants
 * cannot ask through its tenant's route about another tenant's resources.
 */
export function decisionRequest(
  evaluation: EvaluationRequest,
  target: { endpoint: string; requestId: string; caller: string | null; authzen: AuthzenBundle; tenant?: string | undefined },
): DecisionRequest {
  const token = evaluation.subject.properties?.[ACCESS_TOKEN_PROPERTY];
  return {
    endpoint: target.endpoint,
    requestId: target.requestId,
    caller: target.caller,
    bundle: target.authzen.bundle.name,
    rule: target.authzen.rule,
    token: typeof token === 'string' ? token : undefined,
    assertedSubject: assertedSubject(evaluation.subject),
    action: policyAction(evaluation.action),
    resource: policyResource(evaluation.resource),
    context: target.tenant === undefined ? evaluation.context : { ...evaluation.context, tenant: target.tenant },
  };
}

function reasonObject(reason: Reason): ReasonObject {
  return { id: reason.code, reason_admin: { en: reason.message ?? reason.code } };
}

/**
 * The AuthZEN Decision for a pipeline decision. Obligations always travel in `context`: a PEP
 * that may ignore them must not receive a bare `true`. Reasons and the decision id are added
 * when `explain` is set (always for a single evaluation, on request for batch items).
 */
export function authzenDecision(decision: Decision, explain: boolean): AuthzenDecision {
  const context: NonNullable<AuthzenDecision['context']> = {};
  if (explain) {
    context.decision_id = decision.decision_id;
    context.reasons = decision.reasons.map(reasonObject);
  }
  if (decision.obligations.length > 0) context.obligations = decision.obligations;
  return Object.keys(context).length > 0 ? { decision: decision.allow, context } : { decision: decision.allow };
}

/** A batch item that could not be evaluated: closed, with the reason only when reasons were asked for. */
export function invalidItemDecision(message: string, explain: boolean): AuthzenDecision {
  return explain ? { decision: false, context: { reasons: [{ id: 'invalid_evaluation', reason_admin: { en: message } }] } } : { decision: false };
}
