import { Hono, type Context, type MiddlewareHandler } from 'hono';
import { z } from 'zod';
import { requestObjectSchema } from '../../data/json-value.ts';
import type { DecisionPipeline } from '../../decisions/pipeline.ts';
import { jsonBody } from '../middleware/json-body.ts';
import type { GatewayVariables } from '../middleware/gateway-auth.ts';
import type { RequestIdVariables } from '../middleware/request-id.ts';
import { problem } from '../problem.ts';
import { bundleNameSchema } from '../../policy/bundle-name.ts';

/** OPA's data API request body; `input` is evaluated exactly as sent. */
export const opaDataRequestSchema = z.strictObject({
  input: requestObjectSchema.describe('The whole policy input, claims included: nothing is verified or added.'),
});

/** A Rego identifier: one key of an entrypoint's path below its bundle. */
const ruleKey = /^[A-Za-z_]\w*$/;

/**
 * The keys below /v1/data the URL names, each segment decoded on its own as OPA decodes them:
 * an encoded slash stays inside its key (OPA looks up `candidates%2Factions` as the one key
 * "candidates/actions", which no rule is, and answers undefined). The router's params are decoded
 * from the whole path, so they would split it into two keys and name another rule. The first two
 * segments are the ones the route matched as `v1` and `data` (also when sent encoded: the router
 * keeps `%2F`). Undefined for a malformed percent-encoding, which names nothing.
 */
function entrypointKeys(c: Context): string[] | undefined {
  try {
    return new URL(c.req.url).pathname.split('/').slice(3).map((segment) => decodeURIComponent(segment));
  } catch {
    return undefined;
  }
}

/** The route: `<bundle>/<rule...>` below /v1/data (the gateway checks run on it too, app.ts). */
export const OPA_DATA_ROUTE = '/v1/data/:bundle/:rule{.+}';

/**
 * OPA's `strict-builtin-errors`, read as OPA reads its boolean parameters: given without a value,
 * or with `true` (any case) among its values. The WebAssembly engine cannot make a builtin error
 * fatal (it is undefined, OPA's default), so a caller that asked for it is refused: answered
 * otherwise, `allow if not deny` would allow where OPA, so asked, answers 500.
 */
const refuseStrictBuiltinErrors: MiddlewareHandler = async (c, next) => {
  const values = c.req.queries('strict-builtin-errors');
  if (!values || !values.some((value) => value === '' || value.toLowerCase() === 'true')) return next();
  return problem(c, 400, {
    code: 'query_parameter_unsupported',
    title: 'Unsupported query parameter',
    detail: 'strict-builtin-errors: not supported; a builtin error is undefined, as OPA evaluates without it',
  });
};

/**
 * `POST /v1/data/{bundle}/{rule...}` answering like OPA's server (`{"result": ..., "decision_id": ...}`),
 * so OPA clients and side-by-side benchmarks can call Arbiter with OPA's usual request. The caller
 * supplies the subject's claims, so the route is off unless `opa_compat.enabled` and belongs behind
 * a trusted caller. Stricter than OPA: the body must be JSON (any media type `application/*json`)
 * holding an object `input` and nothing else, since the input is what the decision log records.
 * As in OPA, it may be sent gzipped (`Content-Encoding: gzip`), within the same limit decompressed.
 */
export function opaCompatRoutes(pipeline: DecisionPipeline, bodyLimitBytes: number) {
  return new Hono<{ Variables: RequestIdVariables & GatewayVariables }>().post(
    OPA_DATA_ROUTE,
    refuseStrictBuiltinErrors,
    jsonBody(opaDataRequestSchema, { limitBytes: bodyLimitBytes, gzip: true }),
    async (c) => {
      const [bundle = '', ...ruleKeys] = entrypointKeys(c) ?? [];
      const rule = ruleKeys.join('/');
      if (!bundleNameSchema.safeParse(bundle).success || ruleKeys.length === 0 || !ruleKeys.every((key) => ruleKey.test(key))) {
        return problem(c, 404, { code: 'entrypoint_not_found', title: 'Entrypoint not found', detail: `${c.req.path.slice('/v1/data/'.length)} is not an entrypoint name` });
      }
      const evaluation = await pipeline.evaluateInput({
        endpoint: '/v1/data',
        requestId: c.get('requestId'),
        // Who sent these unverified claims is the one thing the record can vouch for.
        caller: c.get('caller'),
        bundle,
        rule,
        input: c.get('body').input,
      });
      switch (evaluation.outcome) {
        case 'not_found':
          return problem(c, 404, { code: 'entrypoint_not_found', title: 'Entrypoint not found', detail: evaluation.message, decision_id: evaluation.decision_id });
        case 'error':
          return problem(c, 500, { code: evaluation.code, title: 'Policy evaluation failed', detail: evaluation.message, decision_id: evaluation.decision_id });
        case 'evaluated':
          // Like OPA, an undefined rule answers 200 without a `result` key.
          return c.json(evaluation.result === undefined ? { decision_id: evaluation.decision_id } : { decision_id: evaluation.decision_id, result: evaluation.result });
      }
    },
  );
}
