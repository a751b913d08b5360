/**
 * AuthZEN search: the bundle lists candidates for the searched entity, each candidate is
 * evaluated with the bundle's ordinary evaluation entrypoint, and the allowed ones are
 * returned in candidate order, a page at a time. A search can therefore never return an
 * entity an evaluation would deny, nor one it would allow only with obligations.
 */
import type { z } from 'zod';
import type { Decision, DecisionRequest } from '../decisions/pipeline.ts';
import type { PolicyBundle } from '../policy/bundle.ts';
import { singleResult, type EvaluationFailureCode } from '../policy/engine.ts';
import type { PolicyEvaluation } from '../policy/evaluation/evaluator.ts';
import type { RateRefusal } from '../server/middleware/admission.ts';
import type { AuthzenBundle } from './bundles.ts';
import { assertedSubject, decisionRequest, policyAction, policyResource } from './mapping.ts';
import { decodePageToken, encodePageToken, queryDigest } from './page-token.ts';
import {
  candidateSchemas,
  DEFAULT_PAGE_LIMIT,
  type ActionSearchRequest,
  type EvaluationRequest,
  type ResourceSearchRequest,
  type SearchKind,
  type SubjectSearchRequest,
} from './schema.ts';

type Candidate<K extends SearchKind> = z.infer<(typeof candidateSchemas)[K]>[number];

/** How one kind of search builds its candidate input and puts a candidate in place of the searched entity. */
export interface SearchPlan<K extends SearchKind> {
  kind: K;
  /** The request without its page token: what must not change between pages. */
  query: Record<string, unknown>;
  page: { token?: string | undefined; limit?: number | undefined; tokenPointer?: string } | undefined;
  /** Entities of the candidates entrypoint's `input`: mapped as for an evaluation, the searched one reduced to its type. */
  candidateInput: Record<string, unknown>;
  context: Record<string, unknown> | undefined;
  evaluation(candidate: Candidate<K>): EvaluationRequest;
  /** Results must contain only entities of the searched type, whatever the candidate list holds. */
  wanted(candidate: Candidate<K>): boolean;
}

export function subjectSearch(request: SubjectSearchRequest): SearchPlan<'subject'> {
  const { page, ...query } = request;
  return {
    kind: 'subject',
    query,
    page,
    candidateInput: {
      subject: { type: request.subject.type },
      action: policyAction(request.action),
      resource: policyResource(request.resource),
    },
    context: request.context,
    evaluation: (subject) => ({ subject, action: request.action, resource: request.resource, context: request.context }),
    wanted: (subject) => subject.type === request.subject.type,
  };
}

export function resourceSearch(request: ResourceSearchRequest): SearchPlan<'resource'> {
  const { page, ...query } = request;
  return {
    kind: 'resource',
    query,
    page,
    candidateInput: {
      subject: assertedSubject(request.subject),
      action: policyAction(request.action),
      resource: { type: request.resource.type },
    },
    context: request.context,
    evaluation: (resource) => ({ subject: request.subject, action: request.action, resource, context: request.context }),
    wanted: (resource) => resource.type === request.resource.type,
  };
}

export function actionSearch(request: ActionSearchRequest): SearchPlan<'action'> {
  const { page, ...query } = request;
  return {
    kind: 'action',
    query,
    page,
    candidateInput: {
      subject: assertedSubject(request.subject),
      resource: policyResource(request.resource),
    },
    context: request.context,
    evaluation: (action) => ({ subject: request.subject, action, resource: request.resource, context: request.context }),
    wanted: () => true,
  };
}

export interface SearchTarget {
  endpoint: string;
  requestId: string;
  caller: string | null;
  authzen: AuthzenBundle;
  /** The tenant whose bundle answers: input.context.tenant of the candidates entrypoint and of every decision. */
  tenant?: string | undefined;
  decide(request: DecisionRequest): Promise<Decision>;
  /** Runs the candidates entrypoint: same evaluator and limits as decisions, no decision logged. */
  evaluateRaw(bundle: PolicyBundle, entrypoint: string, input: string): Promise<PolicyEvaluation>;
  /** Reserves against the caller's rate the decisions the search may ask (one per candidate left), before it asks them; a refusal when the rate is spent. */
  reserve?(decisions: number): RateRefusal | undefined;
}

export interface SearchResponse {
  page: { next_token: string };
  results: Record<string, unknown>[];
}

export type SearchOutcome =
  | { ok: true; response: SearchResponse }
  /** `pointer`: the request member at fault, for a 400. */
  | { ok: false; status: 400 | 500 | 501 | 503; code: string; message: string; pointer?: string }
  | { ok: false; status: 429; refusal: RateRefusal };

/**
 * One page of a search. Each evaluated candidate goes through the decision pipeline, so it is
 * verified, evaluated and logged exactly like an evaluation (same endpoint and request id).
 * After a full page the search looks ahead for one more allowed candidate, so that the last
 * page says `next_token: ""` instead of sending the PEP to an empty page.
 */
export async function runSearch<K extends SearchKind>(plan: SearchPlan<K>, target: SearchTarget): Promise<SearchOutcome> {
  const entrypoint = target.authzen.search[plan.kind];
  if (entrypoint === undefined) {
    return { ok: false, status: 501, code: 'search_unsupported', message: `bundle ${target.authzen.bundle.name} does not support ${plan.kind} search` };
  }
  const token = plan.page?.token !== undefined && plan.page.token !== '' ? plan.page.token : undefined;
  const decoded = token === undefined ? undefined : decodePageToken(token);
  // A next page asked for with the token alone keeps the limit the token was issued for.
  const limit = plan.page?.limit ?? decoded?.limit ?? DEFAULT_PAGE_LIMIT;
  // The tenant too: tenants may share a bundle whose policy reads input.context.tenant, and the
  // X-Tenant header that names one is not in the body (absent for none, so such tokens stay as they were).
  const digest = queryDigest({ kind: plan.kind, bundle: target.authzen.bundle.name, ...(target.tenant !== undefined && { tenant: target.tenant }), limit, ...plan.query });
  // The token must name this query, and the limit it carries (when it carries one) be the one in force.
  if (token !== undefined && (decoded === undefined || decoded.digest !== digest || (decoded.limit ?? limit) !== limit)) {
    return {
      ok: false,
      status: 400,
      code: 'invalid_page_token',
      message: 'not a page token this PDP issued for this same search (entities, context, tenant and limit must not change between pages)',
      pointer: plan.page?.tokenPointer ?? '/page/token',
    };
  }
  const offset = decoded?.offset ?? 0;

  const candidates = await listCandidates(plan, entrypoint, target);
  if (!candidates.ok) return candidates;
  const refusal = target.reserve?.(Math.max(0, candidates.list.length - offset));
  if (refusal) return { ok: false, status: 429, refusal };

  const results: Record<string, unknown>[] = [];
  for (let index = offset; index < candidates.list.length; index++) {
    const candidate = candidates.list[index]!;
    const decision = await target.decide(decisionRequest(plan.evaluation(candidate), target));
    if (!decision.answered) return { ok: false, status: 503, code: 'authzen_unavailable', message: decision.reasons[0]?.message ?? 'no bundle answered' };
    // A decision the log could not record is withheld, not decided: leaving the candidate out
    // would answer a page that looks complete, and every further candidate would wait for the log.
    if (decision.unrecorded) {
      return { ok: false, status: 500, code: 'audit_unavailable', message: decision.reasons[0]?.message ?? 'the decision could not be recorded in the decision log' };
    }
    // A result is an unconditional yes: a search cannot carry the obligations an allow came with.
    if (!decision.allow || decision.obligations.length > 0) continue;
    if (results.length === limit) return { ok: true, response: { page: { next_token: encodePageToken(index, digest, limit) }, results } };
    results.push(candidate);
  }
  return { ok: true, response: { page: { next_token: '' }, results } };
}

async function listCandidates<K extends SearchKind>(
  plan: SearchPlan<K>,
  entrypoint: string,
  target: SearchTarget,
): Promise<{ ok: true; list: Candidate<K>[] } | { ok: false; status: 500; code: EvaluationFailureCode; message: string }> {
  const context = { ...plan.context, ...(target.tenant !== undefined && { tenant: target.tenant }), now: Math.floor(Date.now() / 1000), request_id: target.requestId };
  const input = { ...plan.candidateInput, context };
  const run = await target.evaluateRaw(target.authzen.bundle, entrypoint, JSON.stringify(input));
  if (!run.ok) return { ok: false, status: 500, code: run.code, message: `${entrypoint}: ${run.message}` };
  const parsed = candidateSchemas[plan.kind].safeParse(singleResult(run.resultSet));
  if (!parsed.success) {
    return { ok: false, status: 500, code: 'policy_contract_violation', message: `${entrypoint} must return an array of ${plan.kind} entities` };
  }
  return { ok: true, list: (parsed.data as Candidate<K>[]).filter((candidate) => plan.wanted(candidate)) };
}
