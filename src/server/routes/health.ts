import { Hono } from 'hono';
import type { BundleRegistry } from '../../policy/registry.ts';
import type { IssuerRegistry } from '../../tokens/trusted-issuers.ts';

export interface HealthDeps {
  bundles: BundleRegistry;
  issuers: IssuerRegistry;
  defaultBundle: string;
  draining: { readonly value: boolean };
}

/** /healthz: the process answers. /readyz: it can decide (default bundle active, every issuer's keys loadable). */
export function healthRoutes(deps: HealthDeps) {
  return new Hono()
    .get('/healthz', (c) => c.json({ status: 'ok' }))
    .get('/readyz', async (c) => {
      const problems: string[] = [];
      if (deps.draining.value) problems.push('shutting down');
      if (!deps.bundles.get(deps.defaultBundle)) problems.push(`default bundle ${deps.defaultBundle} is not active`);
      const checks = await Promise.allSettled(deps.issuers.all().map((issuer) => issuer.checkKeys()));
      for (const check of checks) if (check.status === 'rejected') problems.push((check.reason as Error).message);
      const body = {
        status: problems.length === 0 ? 'ready' : 'not_ready',
        bundles: deps.bundles.list().map((b) => ({ name: b.name, revision: b.revision })),
        problems,
      };
      return c.json(body, problems.length === 0 ? 200 : 503);
    });
}
