import type { Context, MiddlewareHandler } from 'hono';
import type { GatewayConfig } from '../../config/gateway.ts';
import { problem } from '../problem.ts';
import type { ThrottledWarnings } from '../throttled-log.ts';
import type { GatewayVariables } from './gateway-auth.ts';
import type { RequestIdVariables } from './request-id.ts';

/** Why a decision request was answered 429: the only values of the metric's `reason` label. */
export const THROTTLE_REASONS = ['rate_limited', 'overloaded'] as const;
export type ThrottleReason = (typeof THROTTLE_REASONS)[number];

export interface AdmissionDeps {
  /** Refusals are logged at warn, at most one line per reason a second (a gateway over its rate sends them at will). */
  warnings: ThrottledWarnings;
  /** Counts every refusal (arbiter_gateway_throttled_total); absent when metrics are off. */
  observer?: { gatewayThrottled(reason: ThrottleReason, caller: string): void } | undefined;
}

/** Why a caller over its rate is refused, and the seconds until it may ask again (Retry-After). */
export interface RateRefusal {
  detail: string;
  retryAfterS: number;
}

export type AdmissionVariables = {
  /**
   * Reserves the `decisions` a request is about to ask (an AuthZEN batch's items, a search's
   * candidates) before it asks them: admission took one unit; the rest is taken now, into debt
   * if need be, so the caller's next requests wait until the rate has paid for them. Refused,
   * taking nothing, while the caller is in debt already (another of its requests, admitted as
   * this one was, reserved more than the caller had): otherwise every request admitted at once
   * on its one unit would run a whole batch. Returns undefined when reserved, else the refusal
   * to answer (429 rate_limited). Unset without a rate limit.
   */
  reserveDecisions?: (decisions: number) => RateRefusal | undefined;
  /** Gives back units a reservation took for decisions the request did not ask after all (a batch cut short). */
  releaseDecisions?: (decisions: number) => void;
};

/**
 * Admission control for decision endpoints: a token bucket per caller (when a rate is
 * configured), a ceiling on requests in flight, and (when configured) a share of it per
 * caller. Over any: 429 with Retry-After, so a gateway backs off instead of piling up requests.
 */
export function admission(config: GatewayConfig, deps: AdmissionDeps): MiddlewareHandler<{ Variables: GatewayVariables & AdmissionVariables & RequestIdVariables }> {
  const { requests_per_second: rate, burst } = config.rate_limit;
  const buckets = new Map<string, { tokens: number; updatedMs: number }>();
  const perCaller = config.max_concurrent_per_caller;
  /** Requests in flight per caller, with a per-caller share only; a caller with none has no entry. */
  const inFlightByCaller = new Map<string, number>();
  let inFlight = 0;
  const refill = (bucket: { tokens: number; updatedMs: number }) => {
    const nowMs = performance.now();
    bucket.tokens = Math.min(burst, bucket.tokens + ((nowMs - bucket.updatedMs) / 1000) * rate!);
    bucket.updatedMs = nowMs;
  };
  const retryAfter = (tokens: number) => Math.max(1, Math.ceil((1 - tokens) / rate!));
  /**
   * A 429 is not a decision (nothing is recorded): without this, a gateway held back by its
   * rate or by the ceiling would show only on its own side. Counted and logged as the 401s are.
   */
  const throttled = (c: Context<{ Variables: GatewayVariables & RequestIdVariables }>, reason: ThrottleReason, who: string, detail: string) => {
    deps.observer?.gatewayThrottled(reason, who);
    deps.warnings.warn(reason, { request_id: c.get('requestId'), caller: who, method: c.req.method, path: c.req.path, detail }, 'gateway request throttled');
  };

  return async (c, next) => {
    const who = c.get('caller') ?? 'anonymous';
    // Before the caller's rate is charged: a request refused for what others have in flight asks no decision.
    if (inFlight >= config.max_concurrent) {
      const detail = `more than ${config.max_concurrent} requests in flight`;
      throttled(c, 'overloaded', who, detail);
      return overloaded(c, detail);
    }
    const callerInFlight = perCaller === undefined ? 0 : (inFlightByCaller.get(who) ?? 0);
    if (perCaller !== undefined && callerInFlight >= perCaller) {
      const detail = `more than ${perCaller} requests in flight for ${who} (gateway.max_concurrent_per_caller)`;
      throttled(c, 'overloaded', who, detail);
      return overloaded(c, detail);
    }
    if (rate !== undefined) {
      const bucket = buckets.get(who) ?? { tokens: burst, updatedMs: performance.now() };
      refill(bucket);
      buckets.set(who, bucket);
      if (bucket.tokens < 1) {
        const refusal = { detail: `over ${rate} requests/s for ${who}`, retryAfterS: retryAfter(bucket.tokens) };
        throttled(c, 'rate_limited', who, refusal.detail);
        return rateLimited(c, refusal);
      }
      bucket.tokens -= 1;
      c.set('reserveDecisions', (decisions) => {
        refill(bucket);
        if (bucket.tokens < 0) return { detail: `over ${rate} requests/s for ${who}: decisions it asked already are not paid for yet`, retryAfterS: retryAfter(bucket.tokens) };
        bucket.tokens -= Math.max(0, decisions - 1);
        return undefined;
      });
      c.set('releaseDecisions', (decisions) => {
        bucket.tokens = Math.min(burst, bucket.tokens + decisions);
      });
    }
    inFlight += 1;
    if (perCaller !== undefined) inFlightByCaller.set(who, callerInFlight + 1);
    try {
      await next();
      // A batch or search refused by its route for what the caller owes already (reserveDecisions).
      if (c.res.status === 429) throttled(c, 'rate_limited', who, 'decisions asked already are not paid for yet');
    } finally {
      inFlight -= 1;
      if (perCaller !== undefined) {
        const left = inFlightByCaller.get(who)! - 1;
        if (left === 0) inFlightByCaller.delete(who);
        else inFlightByCaller.set(who, left);
      }
    }
  };
}

function overloaded(c: Context, detail: string): Response {
  return problem(c, 429, { code: 'overloaded', title: 'Too many concurrent requests', detail }, { 'Retry-After': '1' });
}

/** The 429 for a caller over its rate. */
export function rateLimited(c: Context, refusal: RateRefusal): Response {
  return problem(c, 429, { code: 'rate_limited', title: 'Too many requests', detail: refusal.detail }, { 'Retry-After': String(refusal.retryAfterS) });
}
