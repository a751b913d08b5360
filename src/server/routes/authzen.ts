import { Hono, type Context } from 'hono';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { AuthzenBundles, TENANT_HEADER, tenantOf, type AuthzenBundle } from '../../authzen/bundles.ts';
import { evaluateBatch } from '../../authzen/evaluations.ts';
import { authzenDecision, decisionRequest } from '../../authzen/mapping.ts';
import { AUTHZEN_PATHS, IDENTIFIER_METADATA_ROUTE, identifierPath, METADATA_PATH, pdpMetadata } from '../../authzen/metadata.ts';
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
import type { Decision, DecisionPipeline, DecisionRequest } from '../../decisions/pipeline.ts';
import type { BundleRegistry } from '../../policy/registry.ts';
import { invalidRequest, jsonBody } from '../middleware/json-body.ts';
import { rateLimited, type AdmissionVariables, type RateRefusal } from '../middleware/admission.ts';
import type { GatewayVariables } from '../middleware/gateway-auth.ts';
import type { TenantBinding } from '../middleware/tenant-binding.ts';
import type { RequestIdVariables } from '../middleware/request-id.ts';
import { problem } from '../problem.ts';

export interface AuthzenRouteDeps {
  pipeline: DecisionPipeline;
  bundles: BundleRegistry;
  authzen: AuthzenConfig;
  bodyLimitBytes: number;
  /** Holds a gateway key bound to tenants to the tenants it names. */
  tenantBinding: TenantBinding;
  logger: Logger;
}

/** What the helpers need of a request; handlers narrow the Hono context, so helpers take the plain one. */
interface Asked {
  c: Context;
  requestId: string;
  caller: string | null;
  /** Decisions made for this request so far. */
  decisions: number;
  /** Units of the caller's rate this request holds (admission took one): what it did not use is given back. */
  reserved: number;
  reserveDecisions: AdmissionVariables['reserveDecisions'];
  releaseDecisions: AdmissionVariables['releaseDecisions'];
}

/**
 * The AuthZEN Authorization API 1.0 (docs/authzen.md): evaluation, evaluations, the three
 * searches and the PDP metadata. A deny is 200 `{"decision": false}`; 4xx/5xx describe the
 * request, never the decision, as the spec separates them.
 */
export function authzenRoutes(deps: AuthzenRouteDeps) {
  const bundles = new AuthzenBundles(deps.bundles, deps.authzen);
  const body = <S extends z.ZodType>(schema: S) => jsonBody(schema, { limitBytes: deps.bodyLimitBytes, unsupportedMediaTypeStatus: 400 });

  /**
   * The bundle that answers the request (X-Tenant, else context.tenant), or the problem to
   * answer instead: 400 when the two name different tenants, 403 when the gateway's key is bound
   * to other tenants (or the request names none), 503 when no bundle answers.
   */
  const resolve = ({ c }: Asked, context: Record<string, unknown> | undefined): { ok: true; authzen: AuthzenBundle; tenant: string | undefined } | { ok: false; response: Response } => {
    const conflict = tenantConflict(c, context);
    if (conflict) return { ok: false, response: conflict };
    const header = c.req.header(TENANT_HEADER);
    const tenant = tenantOf(header, context);
    const refused = deps.tenantBinding.check(c, tenant, header !== undefined ? 'X-Tenant' : tenant !== undefined ? '/context/tenant' : undefined);
    if (refused) return { ok: false, response: refused };
    const resolution = bundles.resolve(tenant);
    return resolution.ok ? { ...resolution, tenant } : { ok: false, response: unavailable(c, resolution.message) };
  };

  /** Every decision of a request goes through here, so a batch or a search knows how many it made. */
  const record = (asked: Asked, request: DecisionRequest) => {
    asked.decisions += 1;
    return deps.pipeline.decide(request);
  };

  const decide = (asked: Asked, endpoint: string, authzen: AuthzenBundle, tenant: string | undefined) => (evaluation: EvaluationRequest) =>
    record(asked, decisionRequest(evaluation, { endpoint, requestId: asked.requestId, caller: asked.caller, authzen, tenant }));

  /**
   * Reserves against the caller's rate, before they are asked, the decisions a batch or a search
   * may ask (its items, its candidates left): admission took one unit, and requests admitted at
   * once must not each ask as many decisions as they have items or candidates on it. The refusal
   * to answer when the caller is in debt already.
   */
  const reserve = (asked: Asked, decisions: number): RateRefusal | undefined => {
    const refused = asked.reserveDecisions?.(decisions);
    if (refused === undefined) asked.reserved = Math.max(1, decisions);
    return refused;
  };

  /** Gives back the units reserved for decisions not asked (items a short-circuit or a failure left out, candidates not reached). */
  const settle = (asked: Asked) => asked.releaseDecisions?.(Math.max(0, asked.reserved - Math.max(1, asked.decisions)));

  async function single(asked: Asked, endpoint: string, evaluation: EvaluationRequest) {
    const resolution = resolve(asked, evaluation.context);
    if (!resolution.ok) return resolution.response;
    const decision = await decide(asked, endpoint, resolution.authzen, resolution.tenant)(evaluation);
    return decision.answered ? asked.c.json(authzenDecision(decision, true)) : unavailable(asked.c, firstReason(decision));
  }

  async function search<K extends SearchKind>(asked: Asked, plan: SearchPlan<K>) {
    const { c, requestId, caller } = asked;
    const resolution = resolve(asked, plan.context);
    if (!resolution.ok) return resolution.response;
    const outcome = await runSearch(plan, {
      endpoint: AUTHZEN_PATHS[plan.kind],
      requestId,
      caller,
      authzen: resolution.authzen,
      tenant: resolution.tenant,
      decide: (request) => record(asked, request),
      evaluateRaw: (bundle, entrypoint, input) => deps.pipeline.evaluateRaw(bundle, entrypoint, input),
      reserve: (decisions) => reserve(asked, decisions),
    });
    settle(asked);
    if (outcome.ok) return c.json(outcome.response);
    if (outcome.status === 429) return rateLimited(c, outcome.refusal);
    if (outcome.status === 500) {
      // The candidates entrypoint failed (or a decision went unrecorded): no decision line says so.
      deps.logger.error(
        { request_id: requestId, endpoint: AUTHZEN_PATHS[plan.kind], caller, bundle: resolution.authzen.bundle.name, code: outcome.code, detail: outcome.message },
        'AuthZEN search failed',
      );
    }
    const { pointer } = outcome;
    return problem(c, outcome.status, {
      code: outcome.code,
      title: 'Search failed',
      ...(pointer === undefined ? { detail: outcome.message } : { detail: `${pointer}: ${outcome.message}`, errors: [{ pointer, detail: outcome.message }] }),
    });
  }

  const metadata = (c: Context) => {
    const resolution = bundles.resolve(c.req.header(TENANT_HEADER));
    const baseUrl = deps.authzen.public_url?.replace(/\/+$/, '') ?? new URL(c.req.url).origin;
    // The search endpoints listed depend on the tenant: a shared cache must key on it (RFC 9110, 12.5.5).
    c.header('Vary', TENANT_HEADER, { append: true });
    return c.json(pdpMetadata(baseUrl, resolution.ok ? resolution.authzen : undefined));
  };

  // Admission runs before these routes on the server (app.ts); a batch or a search tells it how many decisions it asked.
  const routes = new Hono<{ Variables: RequestIdVariables & GatewayVariables & AdmissionVariables }>().get(METADATA_PATH, metadata);
  const pdpPath = identifierPath(deps.authzen.public_url);
  if (pdpPath !== '') {
    // Compared as the URL spells it (percent-encoded, as URL normalised public_url): any other path is not found.
    routes.get(IDENTIFIER_METADATA_ROUTE, (c) =>
      new URL(c.req.url).pathname.replace(/\/+$/, '') === METADATA_PATH + pdpPath
        ? metadata(c)
        : problem(c, 404, { code: 'not_found', title: 'Not found', detail: `no AuthZEN metadata at ${c.req.path}: the PDP identifier is ${deps.authzen.public_url}` }),
    );
  }
  return routes
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
      const batch = asked(c);
      const resolution = resolve(batch, request.context);
      if (!resolution.ok) return resolution.response;
      const refused = reserve(batch, evaluations.length);
      if (refused) return rateLimited(c, refused);
      const outcome = await evaluateBatch({ ...request, evaluations }, decide(batch, AUTHZEN_PATHS.evaluations, resolution.authzen, resolution.tenant), resolution.tenant);
      // Items a short-circuit or a failure left unevaluated made no decision and cost nothing.
      settle(batch);
      if (outcome.ok) return c.json({ evaluations: outcome.evaluations });
      if (outcome.unrecorded) return problem(c, 500, { code: 'audit_unavailable', title: 'Decision not recorded', detail: firstReason(outcome.decision) });
      return unavailable(c, firstReason(outcome.decision));
    })
    .post(AUTHZEN_PATHS.subject, body(subjectSearchRequestSchema), (c) => search(asked(c), subjectSearch(c.get('body'))))
    .post(AUTHZEN_PATHS.resource, body(resourceSearchRequestSchema), (c) => search(asked(c), resourceSearch(c.get('body'))))
    .post(AUTHZEN_PATHS.action, body(actionSearchRequestSchema), (c) => search(asked(c), actionSearch(c.get('body'))));
}

function asked<E extends { Variables: RequestIdVariables & GatewayVariables & AdmissionVariables }>(c: Context<E>): Asked {
  return {
    c,
    requestId: c.var.requestId,
    caller: c.var.caller ?? null,
    decisions: 0,
    reserved: 1,
    reserveDecisions: c.var.reserveDecisions,
    releaseDecisions: c.var.releaseDecisions,
  };
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
