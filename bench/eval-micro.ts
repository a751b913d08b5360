/**
 * In-process evaluation of the default policy, nothing else (`npm run bench:eval`).
 *
 *   node bench/eval-micro.ts [--iterations 20000] [--warmup 2000]
 *
 * Builds rego/authz with the pinned opa at -O=0 and -O=1, loads each module into a PolicyEngine
 * with the policy's data and the benchmark's entitlements, and times engine.evaluate() on prepared JSON inputs
 * (an allowed and a denied request). The faster level is the one to set as OPTIMIZATION_LEVEL.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { readBundleArchive } from '../src/policy/archive.ts';
import { PolicyEngine } from '../src/policy/engine.ts';
import { opaPath } from '../src/toolchain/opa.ts';
import { OPTIMIZATION_LEVEL } from '../src/toolchain/build.ts';
import { median, percentile } from './lib/load.ts';
import { createWorkload, verifiedClaimsInput } from './lib/workload.ts';

const { values: flags } = parseArgs({
  options: { iterations: { type: 'string', default: '20000' }, warmup: { type: 'string', default: '2000' } },
});
const iterations = Number(flags.iterations);
const warmup = Number(flags.warmup);
const LEVELS = [0, 1] as const;
const ENTRYPOINT = 'authz/decision';

const workload = await createWorkload(1000);
const allowed = workload.cases.find((c) => c.kind === 'allow')!;
const denied = workload.cases.find((c) => c.kind === 'no_entitlement')!;
const inputs = {
  allow: JSON.stringify(verifiedClaimsInput(allowed, workload.issuedAt)),
  deny: JSON.stringify(verifiedClaimsInput(denied, workload.issuedAt)),
};

/** The policy's own data document (the bundle's data.json). */
const policyData = JSON.parse(readFileSync('rego/authz/data.json', 'utf8')) as Record<string, unknown>;

const dir = mkdtempSync(join(tmpdir(), 'arbiter-eval-micro-'));
const results: Record<string, Record<string, { p50_us: number; p99_us: number; mean_us: number }>> = {};
try {
  for (const level of LEVELS) {
    const archive = join(dir, `authz-O${level}.tar.gz`);
    execFileSync(opaPath(), ['build', '-t', 'wasm', `-O=${level}`, '--ignore', '*_test.rego', '--ignore', '*.md', '-b', 'rego/authz', '-o', archive]);
    const files = await readBundleArchive(new Uint8Array(readFileSync(archive)));
    const engine = await PolicyEngine.load(files.get('policy.wasm') ?? files.get('/policy.wasm')!);
    engine.setData({ ...policyData, entitlements: workload.entitlements });
    results[`O${level}`] = {};
    for (const [name, input] of Object.entries(inputs)) {
      const first = engine.evaluate(ENTRYPOINT, input);
      if (!first.ok || first.result.allow !== (name === 'allow')) throw new Error(`-O=${level} ${name}: unexpected result ${JSON.stringify(first)}`);
      results[`O${level}`]![name] = time(() => engine.evaluate(ENTRYPOINT, input));
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

function time(evaluate: () => unknown) {
  for (let i = 0; i < warmup; i++) evaluate();
  const samples = new Float64Array(iterations);
  for (let i = 0; i < iterations; i++) {
    const start = process.hrtime.bigint();
    evaluate();
    samples[i] = Number(process.hrtime.bigint() - start) / 1000;
  }
  const sorted = [...samples].sort((a, b) => a - b);
  const round = (value: number) => Math.round(value * 10) / 10;
  return { p50_us: round(percentile(sorted, 0.5)), p99_us: round(percentile(sorted, 0.99)), mean_us: round(sorted.reduce((a, b) => a + b, 0) / sorted.length) };
}

const p50 = (level: number) => median(Object.values(results[`O${level}`]!).map((r) => r.p50_us));
const faster = p50(1) < p50(0) ? 1 : 0;
console.log(JSON.stringify({ iterations, node: process.version, entitlement_subjects: Object.keys(workload.entitlements).length, results }, null, 2));
console.log(`faster: -O=${faster} (median p50 ${p50(faster).toFixed(1)} µs vs ${p50(1 - faster).toFixed(1)} µs); OPTIMIZATION_LEVEL is ${OPTIMIZATION_LEVEL}`);
console.log(`target p50 < 15 µs for the default policy: ${p50(OPTIMIZATION_LEVEL) < 15 ? 'met' : 'NOT met'} at the current level`);
