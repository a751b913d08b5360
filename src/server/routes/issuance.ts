import { Hono } from 'hono';
import { z } from 'zod';
import { requestObjectSchema } from '../../data/json-value.ts';
import type { DecisionPipeline } from '../../decisions/pipeline.ts';
import { jsonBody } from '../middleware/json-body.ts';
import type { GatewayVariables } from '../middleware/gateway-auth.ts';
import type { RequestIdVariables } from '../middleware/request-id.ts';
import { bundleNameSchema } from '../../policy/bundle-name.ts';
import { issuanceResultFor, issuanceResultSchema } from '../../policy/contract.ts';
import { decisionBody } from './decide.ts';

/**
 * One OAuth scope token (RFC 6749 section 3.3: printable ASCII but space, `"` and `\`). A token
 * service joins the granted scopes with spaces into the token's `scope` claim, so a "scope"
 * holding a space (or another separator) would carry scopes the policy never judged.
 */
const scopeTokenSchema = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[\x21\x23-\x5B\x5D-\x7E]+$/, 'not an OAuth scope token: printable ASCII without space, " or \\ (RFC 6749 section 3.3)');

export const issuanceRequestSchema = z.strictObject({
  token: z.string().min(1).optional().describe('The token service\'s own access token, which Arbiter verifies: the caller (input.subject), matched against issuance_rules.callers by the default policy. Not the subject token of an RFC 8693 exchange: name that token\'s parties in subject and client_id.'),
  client_id: z.string().min(1).max(256).describe('The OAuth client the token is minted for (input.issuance.client_id). Arbiter looks up its sub and client_id revocations under any issuer (input.issuance.revoked.client).'),
  subject: z.string().min(1).max(1024).optional().describe('The subject the client acts for, when the token is minted for one (input.issuance.subject); its revocations are looked up like the client\'s (input.issuance.revoked.subject). Absent: the client acts for itself.'),
  scopes: z.array(scopeTokenSchema).max(256).describe('The scopes to judge, each one OAuth scope token (RFC 6749 section 3.3).'),
  audience: z.string().min(1).max(1024).describe('The audience of the token to mint (input.issuance.audience).'),
  purpose: z.string().max(1024).optional().describe('Why the token is wanted (input.issuance.purpose); the default policy matches it against the purposes of exception rules.'),
  context: requestObjectSchema.optional().describe('More for the policy (input.context); now and request_id are set by Arbiter.'),
  policy: bundleNameSchema.optional().describe('Bundle whose issuance entrypoint answers; the configured default when absent.'),
});

type RefusedScope = z.infer<typeof issuanceResultSchema>['refused_scopes'][number];

export function issuanceRoutes(pipeline: DecisionPipeline, bodyLimitBytes: number) {
  return new Hono<{ Variables: RequestIdVariables & GatewayVariables }>().post(
    '/v1/issuance',
    jsonBody(issuanceRequestSchema, { limitBytes: bodyLimitBytes }),
    async (c) => {
      const body = c.get('body');
      const { token, policy, context, ...issuance } = body;
      // The parties of the token to mint are named, not presented: the pipeline looks up their
      // revocations (input.issuance.revoked). Either may be known as a sub or a client_id: an
      // agent is a client here and holds tokens of its own; a workload may be the subject.
      const namedParties = {
        document: 'issuance',
        parties: {
          client: { client_id: issuance.client_id, sub: issuance.client_id },
          ...(issuance.subject !== undefined && { subject: { sub: issuance.subject, client_id: issuance.subject } }),
        },
      };
      const decision = await pipeline.decide({
        endpoint: '/v1/issuance',
        requestId: c.get('requestId'),
        caller: c.get('caller'),
        bundle: policy,
        rule: 'issuance',
        token,
        action: { name: 'tokens.issue' },
        resource: { type: 'token', properties: { audience: body.audience } },
        context,
        extraInput: { issuance },
        namedParties,
        // Judged against this request's scopes: an allow that grants none of them is a
        // contract violation, denied and recorded as such, not an allow granting nothing.
        outputSchema: issuanceResultFor(body.scopes),
      });
      // The pipeline already checked the result against that schema; without one nothing is granted.
      const outcome = decision.result ? issuanceResultSchema.parse(decision.result) : undefined;
      // Only what the token service asked for can be granted: a scope a policy adds unasked is not
      // (the record keeps the policy's result and the request, so the answer follows from it).
      // Each once: a policy listing a scope twice (one asked for twice) would have it written
      // twice into the token's scope claim.
      const granted = decision.allow && outcome ? [...new Set(outcome.granted_scopes)].filter((scope) => body.scopes.includes(scope)) : [];
      return c.json(
        {
          ...decisionBody(decision),
          granted_scopes: granted,
          // On a deny the first reason says why; on an allow reasons explain grants, not a refusal.
          refused_scopes: refusedScopes(body.scopes, granted, outcome?.refused_scopes ?? [], (!decision.allow && decision.reasons[0]?.code) || 'not_granted'),
          max_ttl_s: decision.allow && outcome ? outcome.max_ttl_s : 0,
        },
        decision.answered ? 200 : 503,
      );
    },
  );
}

/**
 * Every requested scope is either granted or refused: the policy's refusals with their codes,
 * and any other scope not granted under `code` (a deny's first reason, else not_granted). Only
 * requested scopes, each once however often it was asked for: a refusal of a scope nobody asked
 * for answers nothing (the record keeps it, in the policy's result).
 */
function refusedScopes(requested: readonly string[], granted: readonly string[], refusedByPolicy: readonly RefusedScope[], code: string): RefusedScope[] {
  const asked = new Set(requested);
  const refusals = refusedByPolicy.filter((refusal) => asked.has(refusal.scope));
  const accounted = new Set([...granted, ...refusals.map((refusal) => refusal.scope)]);
  return [...refusals, ...[...asked].filter((scope) => !accounted.has(scope)).map((scope) => ({ scope, code }))];
}
