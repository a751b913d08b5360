import { Hono } from 'hono';
import { AuthzenBundles } from '../../authzen/bundles.ts';
import { ArbiterError } from '../../errors.ts';
import type { PolicyEvaluator } from '../../policy/evaluation/evaluator.ts';
import type { PolicyBundle } from '../../policy/bundle.ts';
import type { BundleRegistry } from '../../policy/registry.ts';
import type { IssuerRegistry } from '../../tokens/trusted-issuers.ts';
import { unsignedTailWarning } from '../../decisions/store.ts';
import type { UnsignedTail } from '../../decisions/writer.ts';

export interface HealthDeps {
  bundles: BundleRegistry;
  issuers: IssuerRegistry;
  defaultBundle: string;
  /** The bundles AuthZEN answers with (config authzen). */
  authzen: { readonly default_bundle?: string | undefined; readonly tenants: Readonly<Record<string, string>> };
  draining: { readonly value: boolean };
  decisionLog?: { readonly unavailable: Error | undefined; readonly unsignedAtOpen?: UnsignedTail | undefined } | undefined;
  /** Says when the live data cannot reach the policies at all (every decision denies), or a revision cannot take it. */
  evaluator?: Pick<PolicyEvaluator, 'liveDataFailure' | 'revisionFailure'> | undefined;
}

/**
 * /healthz: the process answers. /readyz: this replica can decide: not draining, the default
 * bundles (bundles.default, authzen.default_bundle) active, the decision log taking records
 * (see DecisionStore.unavailable: a strict log counts as not taking them once its commits have
 * failed for a while), the live data handed to the evaluation workers (live data too large to
 * serialize leaves every decision on this replica denying policy_resource_limit, whichever
 * bundle: a replica whose data is smaller, or that has not taken that write yet, can still
 * decide), the default bundles' instances holding it (one that cannot within
 * engine.max_memory_mb, or hung taking it, denies every decision of its bundle: the same
 * reasoning), every issuer's keys loaded at least once. An AuthZEN tenant's bundle that is not
 * active, or whose instances cannot hold the live data (one tenant's denies are no reason to take
 * every tenant's traffic away), is `degraded`, as is an AuthZEN bundle (default or tenant) that is active
 * but cannot answer AuthZEN (no `authzen` manifest metadata, or metadata naming no entrypoint
 * of it): its requests answer 503 as if it were not active, and nothing else would say why.
 * It is not a `problem`: the bundle serves /v1/decide, and every replica that took the same
 * push is alike.
 * Records the decision log held after its last checkpoint at start-up are `degraded` for the
 * life of the process: nothing fails, but they may have been added behind the stopped server,
 * and once signed nothing else will say so (see unsignedTailWarning).
 * An issuer whose keys loaded before but cannot be refreshed is `degraded`, not a problem:
 * every replica shares its identity provider, and taking them all out of the load balancer
 * at once would send no request anywhere better (its tokens deny token_keys_unavailable).
 */
export function healthRoutes(deps: HealthDeps) {
  const authzen = new AuthzenBundles(deps.bundles, deps.authzen);
  /** Why an active bundle AuthZEN routes `tenant` (undefined: no tenant) to cannot answer it, if it cannot. */
  const unsupported = (tenant: string | undefined): string | undefined => {
    const resolution = authzen.resolve(tenant);
    return resolution.ok ? undefined : `${resolution.message} (its AuthZEN requests answer 503)`;
  };
  /** Why an active bundle's revision cannot evaluate on the current live data, if a worker found it cannot. */
  const unevaluable = (bundle: PolicyBundle): string | undefined => {
    const failure = deps.evaluator?.revisionFailure?.(bundle.digest);
    return failure && `bundle ${bundle.name} (revision ${bundle.revision}) cannot evaluate on the live data (its decisions deny ${failure.code}): ${failure.message}`;
  };
  return new Hono()
    .get('/healthz', (c) => c.json({ status: 'ok' }))
    .get('/readyz', async (c) => {
      const problems: string[] = [];
      const degraded: string[] = [];
      if (deps.draining.value) problems.push('shutting down');
      const defaultBundle = deps.bundles.get(deps.defaultBundle);
      if (!defaultBundle) problems.push(`default bundle ${deps.defaultBundle} is not active`);
      const defaultUnevaluable = defaultBundle && unevaluable(defaultBundle);
      if (defaultUnevaluable !== undefined) problems.push(`default ${defaultUnevaluable}`);
      const authzenDefault = deps.authzen.default_bundle;
      const authzenBundle = authzenDefault === undefined ? undefined : deps.bundles.get(authzenDefault);
      if (authzenBundle) {
        const why = unsupported(undefined);
        if (why !== undefined) degraded.push(`AuthZEN default bundle ${authzenDefault} (authzen.default_bundle): ${why}`);
        const unfit = authzenDefault === deps.defaultBundle ? undefined : unevaluable(authzenBundle);
        if (unfit !== undefined) problems.push(`AuthZEN default ${unfit} (authzen.default_bundle)`);
      } else if (authzenDefault !== undefined && authzenDefault !== deps.defaultBundle) {
        problems.push(`AuthZEN default bundle ${authzenDefault} is not active (authzen.default_bundle)`);
      }
      // One tenant's bundle missing is that tenant's 503, not a reason to take every tenant's traffic away.
      for (const [tenant, bundle] of Object.entries(deps.authzen.tenants)) {
        const active = deps.bundles.get(bundle);
        if (!active) {
          degraded.push(`AuthZEN tenant ${tenant}: bundle ${bundle} is not active (its requests answer 503)`);
          continue;
        }
        const why = unsupported(tenant);
        if (why !== undefined) degraded.push(`AuthZEN tenant ${tenant}: ${why}`);
        const unfit = unevaluable(active);
        if (unfit !== undefined) degraded.push(`AuthZEN tenant ${tenant}: ${unfit}`);
      }
      const logProblem = deps.decisionLog?.unavailable;
      if (logProblem) problems.push(`decision log refuses records (decisions deny audit_unavailable): ${logProblem.message}`);
      const unsignedTail = deps.decisionLog?.unsignedAtOpen;
      if (unsignedTail) degraded.push(unsignedTailWarning(unsignedTail));
      const dataProblem = deps.evaluator?.liveDataFailure?.();
      if (dataProblem !== undefined) problems.push(`live data cannot be evaluated (decisions deny policy_resource_limit): ${dataProblem}`);
      const checks = await Promise.allSettled(deps.issuers.all().map((issuer) => issuer.checkKeys()));
      for (const check of checks) {
        if (check.status === 'fulfilled') continue;
        const error = check.reason as Error;
        (error instanceof ArbiterError && error.code === 'jwks_stale' ? degraded : problems).push(error.message);
      }
      const body = {
        status: problems.length === 0 ? 'ready' : 'not_ready',
        bundles: deps.bundles.list().map((b) => ({ name: b.name, revision: b.revision })),
        problems,
        degraded,
      };
      return c.json(body, problems.length === 0 ? 200 : 503);
    });
}
