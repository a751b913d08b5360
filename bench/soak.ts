/**
 * Memory under a steady load (`npm run bench:soak`): proves there is no per-evaluation leak.
 *
 *   node bench/soak.ts [--minutes 10] [--rate 1000] [--warmup 60] [--connections 32] [--workload jwt|verified_claims]
 *                      [--node-flag=--max-semi-space-size=8 ...]
 *
 * Drives Arbiter alone at a fixed rate (below its capacity, so queues stay empty), first for
 * --warmup seconds unmeasured (caches, JIT and the heap reach their working size), then for
 * --minutes while sampling RSS every 10 s. Target: every sample and the last minute within 10%
 * of the first measured minute. Each sample also keeps the V8 heaps /metrics reports (main thread,
 * evaluation workers, decision-log writer), so a run that grows shows which thread grew.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { measure, median } from './lib/load.ts';
import { machineInfo, versions } from './lib/machine.ts';
import { memoryMiB } from './lib/processes.ts';
import { serveJwks, startArbiterServer } from './lib/systems.ts';
import { createWorkload, targetFor, type WorkloadName } from './lib/workload.ts';
import { scriptArgs } from '../src/toolchain/script-args.ts';

const { values: flags } = scriptArgs(import.meta.url, {
    minutes: { type: 'string', default: '10' },
    rate: { type: 'string', default: '1000' },
    warmup: { type: 'string', default: '60' },
    connections: { type: 'string', default: '32' },
    workload: { type: 'string', default: 'jwt' },
    'node-flag': { type: 'string', multiple: true, default: [] },
  });
const minutes = Number(flags.minutes);
const rate = Number(flags.rate);
const connections = Number(flags.connections);
const warmupS = Number(flags.warmup);
const workloadName = flags.workload as WorkloadName;
if (!(minutes >= 1) || !(warmupS >= 0) || !(rate > 0) || !(connections > 0) || !['jwt', 'verified_claims'].includes(workloadName)) {
  console.error('Usage: node bench/soak.ts [--minutes N>=1] [--rate N] [--warmup S] [--connections N] [--workload jwt|verified_claims]');
  process.exit(2);
}
const SAMPLE_EVERY_S = 10;
const TOLERANCE = 0.1;

const workDir = mkdtempSync(join(tmpdir(), 'arbiter-soak-'));
const workload = await createWorkload(1000);
const jwks = await serveJwks(workload.jwks);
// The production default: every decision recorded durably before it is answered.
const nodeFlags = flags['node-flag'];
const arbiter = await startArbiterServer(workload, workDir, { jwksUri: jwks.url, decisionLog: 'strict', nodeFlags });
const target = targetFor(workload, workloadName, 'arbiter');
try {
  if (warmupS > 0) await measure(arbiter, target, { connections, durationS: warmupS, overallRate: rate });
  const samples: { t_s: number; rss_mib: number; heaps_mib: Record<string, number> }[] = [];
  const started = Date.now();
  const sampler = setInterval(() => {
    const t_s = Math.round((Date.now() - started) / 1000);
    const rss_mib = round(memoryMiB(arbiter.pid).rss);
    void heapsMiB(arbiter.url).then((heaps_mib) => samples.push({ t_s, rss_mib, heaps_mib }));
  }, SAMPLE_EVERY_S * 1000);
  const run = await measure(arbiter, target, { connections, durationS: minutes * 60, overallRate: rate });
  clearInterval(sampler);
  await sleep(1000); // the last scrape
  samples.sort((a, b) => a.t_s - b.t_s);

  const perMinute = 60 / SAMPLE_EVERY_S;
  const firstMinute = median(samples.slice(0, perMinute).map((s) => s.rss_mib));
  const lastMinute = median(samples.slice(-perMinute).map((s) => s.rss_mib));
  const maxDeviation = Math.max(...samples.map((s) => Math.abs(s.rss_mib - firstMinute) / firstMinute));
  const growth = (lastMinute - firstMinute) / firstMinute;
  const report = {
    started_at: new Date(started).toISOString(),
    machine: machineInfo(),
    versions: versions(),
    settings: { minutes, warmup_s: warmupS, rate, connections, workload: workloadName, sample_every_s: SAMPLE_EVERY_S, node_flags: nodeFlags },
    load: { decisions: run.decisions, decisions_per_s: round(run.decisions_per_s), latency_ms: run.latency_ms, non_2xx: run.non_2xx, errors: run.errors, cpu_us_per_decision: round(run.cpu_us_per_decision) },
    rss_mib: { first_minute_median: firstMinute, last_minute_median: lastMinute, growth: round(growth, 3), max_deviation_from_first_minute: round(maxDeviation, 3), peak: round(run.peak_rss_mib) },
    target: { want: `RSS within ${TOLERANCE * 100}% of the first minute`, met: Math.abs(growth) <= TOLERANCE && maxDeviation <= TOLERANCE },
    samples,
  };
  mkdirSync('bench/results', { recursive: true });
  writeFileSync('bench/results/soak-latest.json', `${JSON.stringify(report, null, 2)}\n`);
  console.log(JSON.stringify({ ...report, samples: undefined }, null, 2));
  console.log(`soak: RSS first minute ${firstMinute} MiB, last minute ${lastMinute} MiB (${(growth * 100).toFixed(1)}%), max deviation ${(maxDeviation * 100).toFixed(1)}%: ${report.target.met ? 'PASS' : 'FAIL'}`);
  process.exitCode = report.target.met ? 0 : 1;
} finally {
  await arbiter.stop();
  await jwks.close();
  rmSync(workDir, { recursive: true, force: true });
}

/**
 * The V8 heaps in MiB, as /metrics reports them: main.used/main.total (nodejs_heap_size_*) and
 * <thread>.used/<thread>.total (arbiter_thread_heap_bytes). Empty when the scrape fails: a sample
 * is still an RSS sample.
 */
async function heapsMiB(baseUrl: string): Promise<Record<string, number>> {
  const heaps: Record<string, number> = {};
  try {
    const text = await (await fetch(`${baseUrl}/metrics`)).text();
    const mib = (value: string) => round(Number(value) / 2 ** 20);
    for (const match of text.matchAll(/^nodejs_heap_size_(used|total)_bytes (\S+)$/gm)) heaps[`main.${match[1]}`] = mib(match[2]!);
    for (const match of text.matchAll(/^arbiter_thread_heap_bytes\{thread="([^"]+)",kind="(used|total)"\} (\S+)$/gm)) heaps[`${match[1]}.${match[2]}`] = mib(match[3]!);
  } catch {
    // Not fatal: the server may be between answers under load; RSS is the measurement.
  }
  return heaps;
}

function round(value: number, digits = 1): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}
