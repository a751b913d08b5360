import { z } from 'zod';

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

export type Reason = z.infer<typeof reasonSchema>;
export type Obligation = z.infer<typeof obligationSchema>;
export type PolicyResult = z.infer<typeof policyResultSchema>;
