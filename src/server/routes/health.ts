import { Hono } from 'hono';
import { ArbiterError } from '../../errors.ts';
import type { BundleRegistry } from '../../policy/registry.ts';
import type { IssuerRegistry } from '../../tokens/trusted-issuers.ts';

export interface HealthDeps {
  bundles: BundleRegistry;
  issuers: IssuerRegistry;
  defaultBundle: string;
  draining: { readonly value: boolean };
  decisionLog?: { readonly unavailable: Error | undefined } | undefined;
}

/**
 * /healthz: the process answers. /readyz: this replica can decide: not draining, the default
 * bundle active, the decision log taking records (see DecisionStore.unavailable: a strict log
 * counts as not taking them once its commits have failed for a while), every issuer's keys
 * loaded at least once.
 * An issuer whose keys loaded before but cannot be refreshed is `degraded`, not a problem:
 * every replica shares its identity provider, and taking them all out of the load balancer
 * at once would send no request anywhere better (its tokens deny token_keys_unavailable).
 */
export function healthRoutes(deps: HealthDeps) {
  return new Hono()
    .get('/healthz', (c) => c.json({ status: 'ok' }))
    .get('/readyz', async (c) => {
      const problems: string[] = [];
      const degraded: string[] = [];
      if (deps.draining.value) problems.push('shutting down');
      if (!deps.bundles.get(deps.defaultBundle)) problems.push(`default bundle ${deps.defaultBundle} is not active`);
      const logProblem = deps.decisionLog?.unavailable;
      if (logProblem) problems.push(`decision log refuses records (decisions deny audit_unavailable): ${logProblem.message}`);
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
