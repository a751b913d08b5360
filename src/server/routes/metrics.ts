import { Hono } from 'hono';
import type { ArbiterMetrics } from '../../metrics/registry.ts';

/** Prometheus scrape endpoint; unauthenticated like /healthz, so mounted only when `metrics.enabled`. */
export function metricsRoutes(metrics: ArbiterMetrics) {
  return new Hono().get('/metrics', async (c) => c.body(await metrics.scrape(), 200, { 'Content-Type': metrics.contentType }));
}
