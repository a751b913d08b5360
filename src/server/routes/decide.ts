import { Hono } from 'hono';
import { z } from 'zod';
import { requestObjectSchema } from '../../data/json-value.ts';
import { bundleNameSchema } from '../../policy/bundle-name.ts';
import type { Decision, DecisionPipeline } from '../../decisions/pipeline.ts';
import { jsonBody } from '../middleware/json-body.ts';
import type { GatewayVariables } from '../middleware/gateway-auth.ts';
import type { RequestIdVariables } from '../middleware/request-id.ts';

const properties = requestObjectSchema;

export const decideRequestSchema = z.strictObject({
  token: z.string().min(1).optional().describe("Compact JWS access token of the caller; omitted for anonymous requests."),
  action: z.string().min(1).max(256).describe('What the caller wants to do, e.g. invoices.read.'),
  resource: z.strictObject({
    type: z.string().min(1).max(256),
    id: z.string().max(1024).optional(),
    properties: properties.optional(),
  }),
  context: properties.optional().describe('Environment, purpose, client IP, approval references, ...'),
  policy: bundleNameSchema.optional().describe('Bundle to ask; the configured default when absent.'),
});

/** The decision as gateways see it. */
export function decisionBody(decision: Decision) {
  return {
    decision_id: decision.decision_id,
    allow: decision.allow,
    reasons: decision.reasons,
    obligations: decision.obligations,
    policy: decision.policy,
    data_version: decision.data_version,
  };
}

export function decideRoutes(pipeline: DecisionPipeline, bodyLimitBytes: number) {
  return new Hono<{ Variables: RequestIdVariables & GatewayVariables }>().post(
    '/v1/decide',
    jsonBody(decideRequestSchema, { limitBytes: bodyLimitBytes }),
    async (c) => {
      const body = c.get('body');
      const decision = await pipeline.decide({
        endpoint: '/v1/decide',
        requestId: c.get('requestId'),
        caller: c.get('caller'),
        bundle: body.policy,
        rule: 'decision',
        token: body.token,
        action: { name: body.action },
        resource: body.resource,
        context: body.context,
      });
      return c.json(decisionBody(decision), decision.answered ? 200 : 503);
    },
  );
}
