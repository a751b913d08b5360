import { Hono, type Context } from 'hono';
import type { z } from 'zod';
import { AuthzenBundles, TENANT_HEADER, tenantOf, type AuthzenBundle, type AuthzenBundleResolution } from '../../authzen/bundles.ts';
import { evaluateBatch } from '../../authzen/evaluations.ts';
import { authzenDecision, decisionRequest } from '../../authzen/mapping.ts';
import { AUTHZEN_PATHS, METADATA_PATH, pdpMetadata } from '../../authzen/metadata.ts';
import {
  actionSearchRequestSchema,
  evaluationRequestSchema,
  evaluationsRequestSchema,
  resourceSearchRequestSchema,
  subjectSearchRequestSchema,
  type EvaluationRequest,
  type SearchKind,
} from '../../authzen/schema.ts';
import { actionSearch, resourceSearch, runSearch, subjectSearch, type SearchPlan } from '../../authzen/search.ts';
import type { AuthzenConfig } from '../../config/schema.ts';
import type { Decision, DecisionPipeline } from '../../decisions/pipeline.ts';
import type { BundleRegistry } from '../../policy/registry.ts';
import { fieldErrors, jsonBody } from '../middleware/json-body.ts';
import type { AdmissionVariables } from '../middleware/admission.ts';
import type { GatewayVariables } from '../middleware/gateway-auth.ts';
import type { RequestIdVariables } from '../middleware/request-id.ts';
import { problem } from '../problem.ts';

export interface AuthzenRouteDeps {
  pipeline: DecisionPipeline;
  bundles: BundleRegistry;
  authzen: AuthzenConfig;
  bodyLimitBytes: number;
}

/** What the helpers need of a request; handlers narrow the Hono context, so helpers take the plain one. */
interface Asked {
  c: Context;
  requestId: string;
  caller: string | null;
}

/**
 * The AuthZEN Authorization API 1.0 (docs/authzen.md): evaluation, evaluations, the three
 * searches and the PDP metadata. A deny is 200 `{"decision": false}`; 4xx/5xx describe the
 * request, never the decision, as the spec separates them.
 */
export function authzenRoutes(deps: AuthzenRouteDeps) {
  const bundles = new AuthzenBundles(deps.bundles, deps.authzen);
  const body = <S extends z.ZodType>(schema: S) => jsonBody(schema, { limitBytes: deps.bodyLimitBytes, unsupportedMediaTypeStatus: 400 });

  const resolve = ({ c }: Asked, context: Record<string, unknown> | undefined): AuthzenBundleResolution =>
    bundles.resolve(tenantOf(c.req.header(TENANT_HEADER), context));

  const decide = ({ requestId, caller }: Asked, endpoint: string, authzen: AuthzenBundle) => (evaluation: EvaluationRequest) =>
    deps.pipeline.decide(decisionRequest(evaluation, { endpoint, requestId, caller, authzen }));

  async function single(asked: Asked, endpoint: string, evaluation: EvaluationRequest) {
    const conflict = tenantConflict(asked.c, evaluation.context);
    if (conflict) return conflict;
    const resolution = resolve(asked, evaluation.context);
    if (!resolution.ok) return unavailable(asked.c, resolution.message);
    const decision = await decide(asked, endpoint, resolution.authzen)(evaluation);
    return decision.answered ? asked.c.json(authzenDecision(decision, true)) : unavailable(asked.c, firstReason(decision));
  }

  async function search<K extends SearchKind>(asked: Asked, plan: SearchPlan<K>, charge: ((decisions: number) => void) | undefined) {
    const { c, requestId, caller } = asked;
    const conflict = tenantConflict(c, plan.context);
    if (conflict) return conflict;
    const resolution = resolve(asked, plan.context);
    if (!resolution.ok) return unavailable(c, resolution.message);
    // Each candidate looked at is a decision, as each item of a batch is: the caller's rate pays
    // for all of them, or one request could ask as many decisions as the bundle has candidates.
    let decisions = 0;
    const outcome = await runSearch(plan, {
      endpoint: AUTHZEN_PATHS[plan.kind],
      requestId,
      caller,
      authzen: resolution.authzen,
      decide: (request) => {
        decisions += 1;
        return deps.pipeline.decide(request);
      },
      evaluateRaw: (bundle, entrypoint, input) => deps.pipeline.evaluateRaw(bundle, entrypoint, input),
    });
    charge?.(decisions);
    if (outcome.ok) return c.json(outcome.response);
    return problem(c, outcome.status, { code: outcome.code, title: 'Search failed', detail: outcome.message });
  }

  // Admission runs before these routes on the server (app.ts); a batch or a search tells it how many decisions it asked.
  return new Hono<{ Variables: RequestIdVariables & GatewayVariables & AdmissionVariables }>()
    .get(METADATA_PATH, (c) => {
      const resolution = bundles.resolve(c.req.header(TENANT_HEADER));
      const baseUrl = deps.authzen.public_url?.replace(/\/+$/, '') ?? new URL(c.req.url).origin;
      return c.json(pdpMetadata(baseUrl, resolution.ok ? resolution.authzen : undefined));
    })
    .post(AUTHZEN_PATHS.evaluation, body(evaluationRequestSchema), (c) => single(asked(c), AUTHZEN_PATHS.evaluation, c.get('body')))
    .post(AUTHZEN_PATHS.evaluations, body(evaluationsRequestSchema), async (c) => {
      const request = c.get('body');
      const { evaluations } = request;
      // Without items the request is a single evaluation, answered as one (AuthZEN 1.0, 7.1).
      if (evaluations === undefined || evaluations.length === 0) {
        const evaluation = evaluationRequestSchema.safeParse(request);
        if (!evaluation.success) return invalidRequest(c, evaluation.error);
        return single(asked(c), AUTHZEN_PATHS.evaluations, evaluation.data);
      }
      const conflict = tenantConflict(c, request.context);
      if (conflict) return conflict;
      const resolution = resolve(asked(c), request.context);
      if (!resolution.ok) return unavailable(c, resolution.message);
      const tenant = tenantOf(c.req.header(TENANT_HEADER), request.context);
      // Each item evaluated is a decision: the caller's rate pays for all of them (not for items
      // a short-circuit or a failure left unevaluated).
      const decideItem = decide(asked(c), AUTHZEN_PATHS.evaluations, resolution.authzen);
      let decisions = 0;
      const countedDecide = (item: EvaluationRequest) => {
        decisions += 1;
        return decideItem(item);
      };
      const outcome = await evaluateBatch({ ...request, evaluations }, countedDecide, tenant);
      c.get('chargeDecisions')?.(decisions);
      if (outcome.ok) return c.json({ evaluations: outcome.evaluations });
      if (outcome.unrecorded) return problem(c, 500, { code: 'audit_unavailable', title: 'Decision not recorded', detail: firstReason(outcome.decision) });
      return unavailable(c, firstReason(outcome.decision));
    })
    .post(AUTHZEN_PATHS.subject, body(subjectSearchRequestSchema), (c) => search(asked(c), subjectSearch(c.get('body')), c.get('chargeDecisions')))
    .post(AUTHZEN_PATHS.resource, body(resourceSearchRequestSchema), (c) => search(asked(c), resourceSearch(c.get('body')), c.get('chargeDecisions')))
    .post(AUTHZEN_PATHS.action, body(actionSearchRequestSchema), (c) => search(asked(c), actionSearch(c.get('body')), c.get('chargeDecisions')));
}

function asked<E extends { Variables: RequestIdVariables & GatewayVariables }>(c: Context<E>): Asked {
  return { c, requestId: c.var.requestId, caller: c.var.caller ?? null };
}

function firstReason(decision: Decision): string {
  const [reason] = decision.reasons;
  return reason?.message ?? reason?.code ?? 'no bundle answered';
}

/**
 * A 400 when X-Tenant and a string context.tenant name different tenants: the header's bundle
 * would decide while the policy reads the other tenant in its input (batch items are held to
 * the batch's tenant the same way, in evaluateBatch).
 */
function tenantConflict(c: Context, context: Record<string, unknown> | undefined): Response | undefined {
  const header = c.req.header(TENANT_HEADER);
  const fromContext = context?.tenant;
  if (header === undefined || typeof fromContext !== 'string' || fromContext === header) return undefined;
  const detail = `${JSON.stringify(fromContext)} is not the tenant the X-Tenant header names (${JSON.stringify(header)})`;
  return problem(c, 400, { code: 'invalid_request', title: 'Invalid request', detail: `/context/tenant: ${detail}`, errors: [{ pointer: '/context/tenant', detail }] });
}

/** No bundle can answer: the same condition /v1/decide answers with 503. */
function unavailable(c: Context, detail: string): Response {
  return problem(c, 503, { code: 'authzen_unavailable', title: 'No bundle answers this AuthZEN request', detail });
}

function invalidRequest(c: Context, error: z.ZodError): Response {
  const errors = fieldErrors(error);
  return problem(c, 400, {
    code: 'invalid_request',
    title: 'Invalid request',
    detail: errors.map((e) => `${e.pointer || '/'}: ${e.detail}`).join('; '),
    errors,
  });
}
