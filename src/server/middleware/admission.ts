import type { MiddlewareHandler } from 'hono';
import type { GatewayConfig } from '../../config/gateway.ts';
import { problem } from '../problem.ts';
import type { GatewayVariables } from './gateway-auth.ts';

export type AdmissionVariables = {
  /**
   * Charges the caller's rate for a request that turned out to ask `decisions` decisions (an
   * AuthZEN batch): admission took one unit; the rest is taken now, into debt if need be, so
   * the caller's next requests wait until the rate has paid for the batch. Unset without a rate limit.
   */
  chargeDecisions?: (decisions: number) => void;
};

/**
 * Admission control for decision endpoints: a token bucket per caller (when a rate is
 * configured) and a ceiling on requests in flight. Over either: 429 with Retry-After,
 * so a gateway backs off instead of piling up requests.
 */
export function admission(config: GatewayConfig): MiddlewareHandler<{ Variables: GatewayVariables & AdmissionVariables }> {
  const { requests_per_second: rate, burst } = config.rate_limit;
  const buckets = new Map<string, { tokens: number; updatedMs: number }>();
  let inFlight = 0;

  return async (c, next) => {
    if (rate !== undefined) {
      const who = c.get('caller') ?? 'anonymous';
      const nowMs = performance.now();
      const bucket = buckets.get(who) ?? { tokens: burst, updatedMs: nowMs };
      bucket.tokens = Math.min(burst, bucket.tokens + ((nowMs - bucket.updatedMs) / 1000) * rate);
      bucket.updatedMs = nowMs;
      buckets.set(who, bucket);
      if (bucket.tokens < 1) {
        const retryAfter = Math.max(1, Math.ceil((1 - bucket.tokens) / rate));
        return problem(c, 429, { code: 'rate_limited', title: 'Too many requests', detail: `over ${rate} requests/s for ${who}` }, { 'Retry-After': String(retryAfter) });
      }
      bucket.tokens -= 1;
      c.set('chargeDecisions', (decisions) => {
        bucket.tokens -= Math.max(0, decisions - 1);
      });
    }
    if (inFlight >= config.max_concurrent) {
      return problem(c, 429, { code: 'overloaded', title: 'Too many concurrent requests', detail: `more than ${config.max_concurrent} requests in flight` }, { 'Retry-After': '1' });
    }
    inFlight += 1;
    try {
      await next();
    } finally {
      inFlight -= 1;
    }
  };
}
