/**
 * Arbiter against the OPA server on the same policy, side by side (`npm run bench`).
 *
 *   node bench/run.ts [--rounds 4] [--duration 10] [--warmup 5] [--connections 32] [--tokens 1000]
 *                     [--workload verified_claims|jwt] [--decision-log off|relaxed|strict] [--workers N] [--quick] [--profile]
 *
 * Both servers run on loopback at once; one autocannon drives one of them at a time,
 * alternating Arbiter, OPA, Arbiter, OPA after a warm-up. See bench/README.md.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compareDecisions } from './lib/agreement.ts';
import { barChartSvg } from './lib/chart.ts';
import { measure, median, type LoadOptions, type RunMeasurement } from './lib/load.ts';
import { machineInfo, versions } from './lib/machine.ts';
import type { ServerProcess } from './lib/processes.ts';
import { serveJwks, startArbiterServer, startOpaServer } from './lib/systems.ts';
import { createWorkload, targetFor, type SystemName, type WorkloadName } from './lib/workload.ts';
import { scriptArgs } from '../src/toolchain/script-args.ts';

const { values: flags } = scriptArgs(import.meta.url, {
    rounds: { type: 'string', default: '4' },
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '5' },
    connections: { type: 'string', default: '32' },
    tokens: { type: 'string', default: '1000' },
    workload: { type: 'string', multiple: true },
    quick: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    // Like OPA's console decision log by default; `strict`/`relaxed` add Arbiter's durable audit log.
    'decision-log': { type: 'string', default: 'off' },
    workers: { type: 'string' },
  });

const settings = {
  rounds: flags.quick ? 1 : positiveInt(flags.rounds, 'rounds'),
  duration_s: flags.quick ? 3 : positiveInt(flags.duration, 'duration'),
  warmup_s: flags.quick ? 1 : positiveInt(flags.warmup, 'warmup'),
  connections: positiveInt(flags.connections, 'connections'),
  tokens: positiveInt(flags.tokens, 'tokens'),
  pipelining: 1,
  arbiter_decision_log: decisionLogMode(flags['decision-log']),
  arbiter_engine_workers: flags.workers === undefined ? 'default' : Number(flags.workers),
};
function decisionLogMode(value: string | undefined): 'off' | 'relaxed' | 'strict' {
  if (value === 'off' || value === 'relaxed' || value === 'strict') return value;
  return usage(`--decision-log must be off, relaxed or strict (got ${String(value)})`);
}

const WORKLOADS: WorkloadName[] = ['verified_claims', 'jwt'];
const workloads = (flags.workload as WorkloadName[] | undefined) ?? WORKLOADS;
for (const name of workloads) if (!WORKLOADS.includes(name)) usage(`unknown workload ${name}`);
const SYSTEMS: SystemName[] = ['arbiter', 'opa'];

/** Throughput and latency targets of issue #7 on the reference 2-core machine. */
const TARGETS = { verified_claims: { throughput_ratio: 1.0 }, jwt: { throughput_ratio: 1.5 } } as const;

const resultsDir = 'bench/results';
// When the run started (it names the result file), not when the report is written minutes later.
const startedAt = new Date().toISOString();
const workDir = mkdtempSync(join(tmpdir(), 'arbiter-bench-'));
const profileDir = join(resultsDir, 'profiles');
const workload = await createWorkload(settings.tokens);
const jwks = await serveJwks(workload.jwks);
const servers: Partial<Record<SystemName, ServerProcess>> = {};

try {
  if (flags.profile) mkdirSync(profileDir, { recursive: true });
  servers.opa = await startOpaServer(workload, workDir);
  servers.arbiter = await startArbiterServer(workload, workDir, {
    jwksUri: jwks.url,
    nodeFlags: flags.profile ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [],
    decisionLog: settings.arbiter_decision_log,
    ...(typeof settings.arbiter_engine_workers === 'number' && { workers: settings.arbiter_engine_workers }),
  });
  const running = servers as Record<SystemName, ServerProcess>;
  console.log(`machine: ${JSON.stringify(machineInfo())}`);
  console.log(`settings: ${JSON.stringify(settings)}`);

  const results: Record<string, WorkloadResult> = {};
  for (const name of workloads) {
    const targets = { arbiter: targetFor(workload, name, 'arbiter'), opa: targetFor(workload, name, 'opa') };
    const sample = Array.from({ length: Math.min(200, workload.cases.length) }, (_, i) => i);
    const agreement = await compareDecisions(running, targets, sample);
    if (agreement.disagreements.length > 0) {
      throw new Error(`${name}: the systems disagree on ${agreement.disagreements.length} of ${agreement.checked} inputs, e.g.\n${JSON.stringify(agreement.disagreements.slice(0, 3), null, 2)}`);
    }
    console.log(`${name}: same decisions on ${agreement.checked} inputs (${agreement.allowed} allowed, ${agreement.checked - agreement.allowed} denied)`);

    const load: LoadOptions = { connections: settings.connections, durationS: settings.duration_s };
    for (const system of SYSTEMS) await measure(running[system], targets[system], { ...load, durationS: settings.warmup_s });
    const runs: Record<SystemName, RunMeasurement[]> = { arbiter: [], opa: [] };
    for (let round = 1; round <= settings.rounds; round++) {
      for (const system of SYSTEMS) {
        const run = await measure(running[system], targets[system], load);
        if (run.non_2xx > 0 || run.errors > 0) throw new Error(`${name}/${system}: ${run.non_2xx} non-2xx responses, ${run.errors} errors`);
        runs[system].push(run);
        console.log(`${name} round ${round} ${system.padEnd(7)} ${describeRun(run)}`);
      }
    }
    results[name] = { agreement: { checked: agreement.checked, allowed: agreement.allowed }, runs, ...summarise(runs, TARGETS[name].throughput_ratio) };
  }

  const report: Report = {
    started_at: startedAt,
    machine: machineInfo(),
    versions: versions(),
    settings,
    workloads: results,
  };
  writeReport(report);
} finally {
  await Promise.all(Object.values(servers).map((server) => server.stop()));
  await jwks.close();
  rmSync(workDir, { recursive: true, force: true });
}

function summarise(runs: Record<SystemName, RunMeasurement[]>, throughputTarget: number) {
  const stats = (values: number[]) => ({ median: median(values), min: Math.min(...values), max: Math.max(...values) });
  const perSystem = (system: SystemName) => ({
    decisions_per_s: stats(runs[system].map((r) => r.decisions_per_s)),
    p50_ms: stats(runs[system].map((r) => r.latency_ms.p50)),
    p99_ms: stats(runs[system].map((r) => r.latency_ms.p99)),
    p99_9_ms: stats(runs[system].map((r) => r.latency_ms.p99_9)),
    cpu_us_per_decision: stats(runs[system].map((r) => r.cpu_us_per_decision)),
    peak_rss_mib: Math.max(...runs[system].map((r) => r.peak_rss_mib)),
  });
  // Ratios per round (each Arbiter run against the OPA run next to it), so drift of the machine cancels out.
  const ratios = (pick: (r: RunMeasurement) => number) => stats(runs.arbiter.map((r, i) => pick(r) / pick(runs.opa[i]!)));
  const throughput = ratios((r) => r.decisions_per_s);
  const p99 = ratios((r) => r.latency_ms.p99);
  return {
    summary: { arbiter: perSystem('arbiter'), opa: perSystem('opa') },
    ratio_arbiter_over_opa: {
      decisions_per_s: throughput,
      p99_ms: p99,
      cpu_us_per_decision: ratios((r) => r.cpu_us_per_decision),
    },
    targets: {
      throughput: { want: `>= ${throughputTarget}x`, met: throughput.median >= throughputTarget },
      p99: { want: "no worse than OPA's", met: p99.median <= 1 },
    },
  };
}

function describeRun(run: RunMeasurement): string {
  const ms = (value: number) => value.toFixed(2).padStart(6);
  return `${run.decisions_per_s.toFixed(0).padStart(6)} decisions/s  p50 ${ms(run.latency_ms.p50)} ms  p99 ${ms(run.latency_ms.p99)} ms  p99.9 ${ms(run.latency_ms.p99_9)} ms  ${run.cpu_us_per_decision.toFixed(0).padStart(4)} CPU-µs/decision  peak RSS ${run.peak_rss_mib.toFixed(0)} MiB`;
}

type WorkloadResult = { agreement: { checked: number; allowed: number }; runs: Record<SystemName, RunMeasurement[]> } & ReturnType<typeof summarise>;

interface Report {
  started_at: string;
  machine: ReturnType<typeof machineInfo>;
  versions: ReturnType<typeof versions>;
  settings: typeof settings;
  workloads: Record<string, WorkloadResult>;
}

function writeReport(report: Report): void {
  mkdirSync(resultsDir, { recursive: true });
  const json = `${JSON.stringify(report, null, 2)}\n`;
  const stamp = report.started_at.replaceAll(':', '-').replace(/\.\d+Z$/, 'Z');
  writeFileSync(join(resultsDir, `${stamp}.json`), json);
  writeFileSync(join(resultsDir, 'latest.json'), json);
  writeFileSync(join(resultsDir, 'latest.svg'), barChartSvg(report));
  for (const [name, result] of Object.entries(report.workloads)) {
    const { decisions_per_s, p99_ms } = result.ratio_arbiter_over_opa;
    const range = (s: { median: number; min: number; max: number }) => `${s.median.toFixed(2)}x (${s.min.toFixed(2)}-${s.max.toFixed(2)})`;
    console.log(`${name}: throughput Arbiter/OPA ${range(decisions_per_s)} [${result.targets.throughput.met ? 'met' : 'NOT met'} ${result.targets.throughput.want}], p99 Arbiter/OPA ${range(p99_ms)} [${result.targets.p99.met ? 'met' : 'NOT met'}]`);
  }
  console.log(`wrote ${resultsDir}/${stamp}.json, latest.json and latest.svg`);
}

function positiveInt(value: string | undefined, name: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed <= 0) usage(`--${name} must be a positive integer`);
  return parsed;
}

function usage(message: string): never {
  console.error(`bench: ${message}\nUsage: node bench/run.ts [--rounds N] [--duration S] [--warmup S] [--connections N] [--tokens N] [--workload verified_claims|jwt] [--decision-log off|relaxed|strict] [--workers N] [--quick] [--profile]`);
  process.exit(2);
}
