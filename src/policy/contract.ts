import { z } from 'zod';
import { isObject } from '../is-object.ts';

/**
 * What every decision entrypoint must return. Extra fields are kept (policies may add
 * detail to reasons); a result of any other shape is a deny with policy_contract_violation.
 */
export const reasonSchema = z.looseObject({ code: z.string().min(1), message: z.string().optional() });
export const obligationSchema = z.looseObject({ type: z.string().min(1) });

export const policyResultSchema = z.looseObject({
  allow: z.boolean(),
  reasons: z.array(reasonSchema),
  obligations: z.array(obligationSchema).optional(),
});

/**
 * The extra output the `issuance` entrypoint owes besides the decision contract (/v1/issuance).
 * An allow is what a token service mints from, so it must be coherent: at least one scope
 * granted (else "allow" would grant nothing it names), a lifetime of at least a second (0 means
 * "nothing granted", and a token service could read it as "no limit"), and no scope both
 * granted and refused. A deny grants nothing whatever it lists, so it is not held to this.
 */
export const issuanceResultSchema = z
  .looseObject({
    allow: z.boolean(),
    granted_scopes: z.array(z.string()),
    refused_scopes: z.array(z.looseObject({ scope: z.string(), code: z.string(), message: z.string().optional() })),
    max_ttl_s: z.number().int().min(0),
  })
  .superRefine((result, ctx) => {
    if (!result.allow) return;
    if (result.granted_scopes.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['granted_scopes'], message: 'an allow must grant at least one scope' });
    } else if (result.max_ttl_s < 1) {
      ctx.addIssue({ code: 'custom', path: ['max_ttl_s'], message: 'an allow must give a lifetime of at least 1 second' });
    }
    const refused = new Set(result.refused_scopes.map((refusal) => refusal.scope));
    const both = result.granted_scopes.find((scope) => refused.has(scope));
    if (both !== undefined) ctx.addIssue({ code: 'custom', path: ['refused_scopes'], message: `scope ${JSON.stringify(both)} is both granted and refused` });
  });

/**
 * issuanceResultSchema for one request, whose token service asked for `requested`. /v1/issuance
 * answers only requested scopes (a scope a policy adds unasked is dropped), so an allow must
 * also grant at least one of them: one granting only unasked scopes would answer "allow" with
 * nothing to mint, while its record said the policy granted something. The route and replay
 * judge a result by the same request (replay: the recorded input.issuance.scopes).
 */
export function issuanceResultFor(requested: readonly string[]): z.ZodType {
  const asked = new Set(requested);
  return issuanceResultSchema.superRefine((result, ctx) => {
    if (!result.allow || result.granted_scopes.length === 0 || result.granted_scopes.some((scope) => asked.has(scope))) return;
    ctx.addIssue({
      code: 'custom',
      path: ['granted_scopes'],
      message: `an allow must grant at least one requested scope; it grants only ${JSON.stringify(result.granted_scopes)}, which the request did not ask for`,
    });
  });
}

/**
 * Why `result` lacks the extra output `schema` asks of `entrypoint`, as a contract-violation
 * message, or undefined when it has it. The decision path and replay judge a result alike.
 */
export function extraOutputProblem(schema: z.ZodType, result: PolicyResult, entrypoint: string): string | undefined {
  const parsed = schema.safeParse(result);
  if (parsed.success) return undefined;
  const first = parsed.error.issues[0]!;
  return `${entrypoint} result: ${first.path.join('.') || 'result'}: ${first.message}`;
}

export type Reason = z.infer<typeof reasonSchema>;
export type Obligation = z.infer<typeof obligationSchema>;
export type PolicyResult = z.infer<typeof policyResultSchema>;

/**
 * True when `value` satisfies policyResultSchema. Runs on every decision, where a zod
 * parse cost a microsecond of the evaluation budget; the schema stays the definition
 * (and explains a failure), and a test holds the two to the same answers.
 */
export function isPolicyResult(value: unknown): value is PolicyResult {
  if (!isObject(value) || typeof value.allow !== 'boolean') return false;
  if (!everyItem(value.reasons, isReason)) return false;
  return value.obligations === undefined || everyItem(value.obligations, isObligation);
}

function isReason(value: unknown): boolean {
  return isObject(value) && isNonEmptyString(value.code) && (value.message === undefined || typeof value.message === 'string');
}

function isObligation(value: unknown): boolean {
  return isObject(value) && isNonEmptyString(value.type);
}

function everyItem(value: unknown, check: (item: unknown) => boolean): boolean {
  if (!Array.isArray(value)) return false;
  for (const item of value) if (!check(item)) return false;
  return true;
}

function isNonEmptyString(value: unknown): boolean {
  return typeof value === 'string' && value.length > 0;
}
