import type { ServerProcess } from './processes.ts';
import type { SystemName, Target } from './workload.ts';

/** allow plus the sorted reason codes: what must match between the two systems. */
interface Verdict {
  allow: boolean;
  reasons: string[];
}

export interface Disagreement {
  index: number;
  arbiter: Verdict | string;
  opa: Verdict | string;
}

/**
 * Sends the same sample of requests to both systems and returns every case where their
 * decisions differ: a benchmark of two systems that disagree measures nothing.
 */
export async function compareDecisions(
  servers: Record<SystemName, ServerProcess>,
  targets: Record<SystemName, Target>,
  indexes: readonly number[],
): Promise<{ checked: number; allowed: number; disagreements: Disagreement[] }> {
  const disagreements: Disagreement[] = [];
  let allowed = 0;
  for (const index of indexes) {
    const [arbiter, opa] = await Promise.all([
      verdict(servers.arbiter, targets.arbiter, index),
      verdict(servers.opa, targets.opa, index),
    ]);
    if (typeof arbiter !== 'string' && arbiter.allow) allowed++;
    if (JSON.stringify(arbiter) !== JSON.stringify(opa)) disagreements.push({ index, arbiter, opa });
  }
  return { checked: indexes.length, allowed, disagreements };
}

async function verdict(server: ServerProcess, target: Target, index: number): Promise<Verdict | string> {
  const response = await fetch(`${server.url}${target.path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: target.bodies[index],
  });
  const text = await response.text();
  if (response.status !== 200) return `HTTP ${response.status}: ${text.slice(0, 300)}`;
  const body = JSON.parse(text) as { result?: { allow?: unknown; reasons?: { code: string }[] }; allow?: unknown; reasons?: { code: string }[] };
  // The OPA data API wraps the decision in `result`; /v1/decide returns it at the top level.
  const decision = body.result ?? body;
  if (typeof decision.allow !== 'boolean' || !Array.isArray(decision.reasons)) return `no decision in ${text.slice(0, 300)}`;
  return { allow: decision.allow, reasons: decision.reasons.map((r) => r.code).sort() };
}
