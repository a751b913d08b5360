/**
 * In-process evaluation of the default policy, nothing else (`npm run bench:eval`).
 *
 *   node bench/eval-micro.ts [--rounds 40] [--chunk 1000]
 *
 * Builds rego/authz with the pinned opa at -O=0 and -O=1, loads each module into a PolicyEngine
 * with the policy's data and the benchmark's entitlements, and times engine.evaluate() (input
 * encoding, opa_eval, result decoding, contract check) on prepared JSON inputs: an allowed and
 * a denied request. The faster level is the one to set as OPTIMIZATION_LEVEL.
 *
 * Three stand-in policies, built and timed the same way at OPTIMIZATION_LEVEL, split an allowed
 * decision's time: a constant deny on the empty input (the fixed cost of a call), the same on the
 * real input (plus parsing it inside WebAssembly), and a constant holding the allowed decision's
 * exact output (plus building, writing and decoding it). What the full policy takes beyond that
 * last one is its rules.
 *
 * Levels and inputs take turns in chunks of `chunk` evaluations for `rounds` rounds: on a
 * shared VM, memory-bound code runs up to 1.8x slower for seconds at a time while plain
 * arithmetic does not, and interleaving lets every variant see those periods alike. Besides the
 * p50 over all samples, the spread of the per-chunk medians shows them.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readBundleArchive } from '../src/policy/archive.ts';
import { PolicyEngine } from '../src/policy/engine.ts';
import { opaPath } from '../src/toolchain/opa.ts';
import { buildBundle, OPTIMIZATION_LEVEL } from '../src/toolchain/build.ts';
import { median, percentile } from './lib/load.ts';
import { machineInfo, versions } from './lib/machine.ts';
import { createWorkload, verifiedClaimsInput } from './lib/workload.ts';
import { scriptArgs } from '../src/toolchain/script-args.ts';

const { values: flags } = scriptArgs(import.meta.url, { rounds: { type: 'string', default: '40' }, chunk: { type: 'string', default: '1000' } });
const rounds = Number(flags.rounds);
const chunk = Number(flags.chunk);
const LEVELS = [0, 1] as const;
const ENTRYPOINT = 'authz/decision';
const TARGET_P50_US = 15;

const workload = await createWorkload(1000);
const allowed = workload.cases.find((c) => c.kind === 'allow')!;
const denied = workload.cases.find((c) => c.kind === 'no_entitlement')!;
const inputs = {
  allow: JSON.stringify(verifiedClaimsInput(allowed, workload.issuedAt)),
  deny: JSON.stringify(verifiedClaimsInput(denied, workload.issuedAt)),
};

/** The policy's own data document (the bundle's data.json). */
const policyData = JSON.parse(readFileSync('rego/authz/data.json', 'utf8')) as Record<string, unknown>;

interface Variant {
  /** O0 or O1 for the default policy at that level; stand_in for the breakdown's policies. */
  group: string;
  name: string;
  level: number;
  input: string;
  evaluate: () => unknown;
  samples: number[];
  chunkMedians: number[];
}

const dir = mkdtempSync(join(tmpdir(), 'arbiter-eval-micro-'));
const variants: Variant[] = [];
/** The default policy's allowed decision, as JSON: the output stand-in returns exactly this. */
let allowedOutput = '';
try {
  for (const level of LEVELS) {
    const archive = join(dir, `authz-O${level}.tar.gz`);
    execFileSync(opaPath(), ['build', '-t', 'wasm', `-O=${level}`, '--ignore', '*_test.rego', '--ignore', '*.md', '-b', 'rego/authz', '-o', archive]);
    const files = await readBundleArchive(new Uint8Array(readFileSync(archive)));
    const engine = await PolicyEngine.load(files.get('policy.wasm') ?? files.get('/policy.wasm')!);
    engine.setData({ ...policyData, entitlements: workload.entitlements });
    for (const [name, input] of Object.entries(inputs)) {
      const first = engine.evaluate(ENTRYPOINT, input);
      if (!first.ok || first.result.allow !== (name === 'allow')) throw new Error(`-O=${level} ${name}: unexpected result ${JSON.stringify(first)}`);
      variants.push({ group: `O${level}`, name, level, input, evaluate: () => engine.evaluate(ENTRYPOINT, input), samples: [], chunkMedians: [] });
    }
  }
  const fullPolicy = variants.find((v) => v.group === `O${OPTIMIZATION_LEVEL}` && v.name === 'allow')!;
  allowedOutput = JSON.stringify((fullPolicy.evaluate() as { result: unknown }).result);
  const emptyDeny = '{"allow": false, "reasons": [], "obligations": []}';
  const standIns: [name: string, decision: string, input: string][] = [
    ['call', emptyDeny, '{}'],
    ['call_and_input', emptyDeny, inputs.allow],
    ['call_input_and_output', allowedOutput, inputs.allow],
  ];
  for (const [name, decision, input] of standIns) {
    const engine = await standInEngine(dir, name, decision);
    variants.push({ group: 'stand_in', name, level: OPTIMIZATION_LEVEL, input, evaluate: () => engine.evaluate(ENTRYPOINT, input), samples: [], chunkMedians: [] });
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

for (let round = 0; round < rounds; round++) {
  for (const variant of variants) {
    for (let i = 0; i < chunk / 5; i++) variant.evaluate();
    const times = new Float64Array(chunk);
    for (let i = 0; i < chunk; i++) {
      const start = process.hrtime.bigint();
      variant.evaluate();
      times[i] = Number(process.hrtime.bigint() - start) / 1000;
    }
    times.sort();
    variant.chunkMedians.push(percentile([...times], 0.5));
    variant.samples.push(...times);
  }
}

const round1 = (value: number) => Math.round(value * 10) / 10;
const results: Record<string, Record<string, object>> = {};
for (const variant of variants) {
  const sorted = variant.samples.sort((a, b) => a - b);
  const chunks = [...variant.chunkMedians].sort((a, b) => a - b);
  (results[variant.group] ??= {})[variant.name] = {
    p50_us: round1(percentile(sorted, 0.5)),
    p99_us: round1(percentile(sorted, 0.99)),
    mean_us: round1(sorted.reduce((a, b) => a + b, 0) / sorted.length),
    chunk_p50_us: { min: round1(chunks[0]!), median: round1(median(chunks)), max: round1(chunks.at(-1)!) },
  };
}

const variantP50 = (group: string, name: string) => percentile([...variants.find((v) => v.group === group && v.name === name)!.samples], 0.5);
const p50 = (level: number) => median(variants.filter((v) => v.group === `O${level}`).map((v) => percentile([...v.samples], 0.5)));
const current = variants.filter((v) => v.group === `O${OPTIMIZATION_LEVEL}`).map((v) => percentile([...v.samples], 0.5));
// Differences of p50s: an estimate of each part's typical cost, not of its distribution.
const standIn = (name: string) => variantP50('stand_in', name);
const breakdown = {
  call_us: round1(standIn('call')),
  input_parse_us: round1(standIn('call_and_input') - standIn('call')),
  output_us: round1(standIn('call_input_and_output') - standIn('call_and_input')),
  rules_us: round1(variantP50(`O${OPTIMIZATION_LEVEL}`, 'allow') - standIn('call_input_and_output')),
};
const report = {
  measured_at: new Date().toISOString(),
  machine: machineInfo(),
  versions: versions(),
  rounds,
  chunk,
  entitlement_subjects: Object.keys(workload.entitlements).length,
  optimization_level: OPTIMIZATION_LEVEL,
  target_p50_us: TARGET_P50_US,
  results,
  allowed_breakdown_p50_us: breakdown,
};
mkdirSync('bench/results', { recursive: true });
writeFileSync('bench/results/eval-micro-latest.json', `${JSON.stringify(report, null, 2)}\n`);
console.log(JSON.stringify(results, null, 2));
const faster = p50(1) < p50(0) ? 1 : 0;
console.log(`faster: -O=${faster} (median p50 ${p50(faster).toFixed(1)} µs vs ${p50(1 - faster).toFixed(1)} µs); OPTIMIZATION_LEVEL is ${OPTIMIZATION_LEVEL}`);
console.log(
  `allowed decision at -O=${OPTIMIZATION_LEVEL}, p50 by part: call ${breakdown.call_us} µs, input parse ${breakdown.input_parse_us} µs, ` +
    `output ${breakdown.output_us} µs, rules ${breakdown.rules_us} µs (${inputs.allow.length} B in, ${Buffer.byteLength(allowedOutput)} B out)`,
);
console.log(`target p50 < ${TARGET_P50_US} µs (allowed and denied) at -O=${OPTIMIZATION_LEVEL}: ${Math.max(...current) < TARGET_P50_US ? 'met' : 'NOT met'}`);
console.log('written to bench/results/eval-micro-latest.json');

/** A bundle whose authz/decision is the constant `decision` (Rego accepts JSON as a term), built like the policy. */
async function standInEngine(dir: string, name: string, decision: string): Promise<PolicyEngine> {
  const src = join(dir, `stand-in-${name}`);
  mkdirSync(src);
  writeFileSync(join(src, 'policy.rego'), `package authz\n\ndecision := ${decision}\n`);
  const archive = join(dir, `stand-in-${name}.tar.gz`);
  buildBundle(src, archive, { extraArgs: ['-e', ENTRYPOINT] });
  const files = await readBundleArchive(new Uint8Array(readFileSync(archive)));
  const engine = await PolicyEngine.load(files.get('policy.wasm') ?? files.get('/policy.wasm')!);
  engine.setData({ ...policyData, entitlements: workload.entitlements });
  const first = engine.evaluate(ENTRYPOINT, '{}');
  if (!first.ok) throw new Error(`stand-in ${name}: ${JSON.stringify(first)}`);
  return engine;
}
