import type { HttpBindings } from '@hono/node-server';
import type { Context, MiddlewareHandler } from 'hono';
import { problem } from '../problem.ts';
import type { ThrottledWarnings } from '../throttled-log.ts';
import type { GatewayVariables } from './gateway-auth.ts';
import type { RequestIdVariables } from './request-id.ts';

/** Where a request named its tenant: the X-Tenant header, `context.tenant` in the body, or nowhere. */
export type TenantField = 'X-Tenant' | '/context/tenant' | undefined;

export interface TenantBindingDeps {
  /** The setting that binds gateways, named in refusals: gateway.api_keys[].tenants or gateway.client_certificates[].tenants. */
  setting: string;
  /** Refusals are logged at warn, at most one line a second (a bound gateway can send them at will). */
  warnings: ThrottledWarnings;
  /** Counts every refusal by caller (arbiter_gateway_tenant_refusals_total); absent when metrics are off. */
  observer?: { gatewayTenantRefused(caller: string): void } | undefined;
}

type Asking = Context<{ Variables: GatewayVariables & RequestIdVariables; Bindings: HttpBindings }>;


/**
 * Holds a gateway key with `tenants` to those tenants (`callerTenants`, set by gatewayAuth): an
 * AuthZEN request must name one of them, and an endpoint that names no tenant refuses the key.
 * The check is one Set lookup; a key without `tenants` passes untouched. A refusal is a 403
 * problem, not a decision: like a 401 or a 429 it is answered before the pipeline, so it is not
 * in the decision log, and it is counted and logged here instead.
 */
export class TenantBinding {
  readonly #deps: TenantBindingDeps;

  constructor(deps: TenantBindingDeps) {
    this.#deps = deps;
  }

  /**
   * The 403 to answer when the caller may not ask for `tenant` (undefined: the request named none,
   * and authzen.default_bundle would decide it), else undefined.
   */
  check(c: Context, tenant: string | undefined, field: TenantField): Response | undefined {
    const asking = c as Asking;
    const tenants = asking.var.callerTenants;
    if (tenants === undefined || (tenant !== undefined && tenants.has(tenant))) return undefined;
    const caller = asking.var.caller ?? '';
    if (tenant === undefined || field === undefined) {
      return this.#refuse(asking, `no tenant named: gateway ${caller} is bound to tenants (${this.#deps.setting}); name one of them in X-Tenant or context.tenant`);
    }
    const detail = `gateway ${caller} may not ask for tenant ${JSON.stringify(tenant)} (${this.#deps.setting})`;
    return this.#refuse(asking, `${field}: ${detail}`, { tenant, field }, field === '/context/tenant' ? [{ pointer: field, detail }] : undefined);
  }

  /** For endpoints whose requests name no tenant (/v1/decide, /v1/issuance, the OPA data API): a bound key is refused. */
  readonly noTenant: MiddlewareHandler<{ Variables: GatewayVariables & RequestIdVariables; Bindings: HttpBindings }> = async (c, next) => {
    if (c.var.callerTenants === undefined) return next();
    return this.#refuse(c, `${c.req.path} names no tenant: gateway ${c.var.caller ?? ''} is bound to tenants (${this.#deps.setting}) and may ask only AuthZEN requests naming one of them`);
  };

  #refuse(c: Asking, detail: string, named?: { tenant: string; field: string }, errors?: { pointer: string; detail: string }[]): Response {
    const caller = c.var.caller ?? '';
    this.#deps.observer?.gatewayTenantRefused(caller);
    this.#deps.warnings.warn(
      'tenant_not_permitted',
      {
        request_id: c.var.requestId,
        remote_address: c.env?.incoming?.socket?.remoteAddress,
        caller,
        method: c.req.method,
        path: c.req.path,
        // Chosen by the gateway: bounded, so one line cannot carry a whole header or body.
        ...(named && { tenant: named.tenant.slice(0, 256), field: named.field }),
      },
      'gateway tenant not permitted',
    );
    return problem(c, 403, { code: 'tenant_not_permitted', title: 'Tenant not permitted for this gateway', detail, ...(errors && { errors }) });
  }
}
