/**
 * Decision log benchmarks (not part of the test suite; no assertions).
 *
 *   node bench/decision-log.ts ingest [records=200000] [rate=20000] [http_rate=0]
 *   node bench/decision-log.ts query [records=1000000] [queries=200]
 *
 * ingest: strict appends offered at `rate` per second (open loop); reports the rate
 * achieved, append latency (until durable) and the main-thread CPU spent per decision, and
 * appends the run to bench/results/decision-log-ingest.jsonl.
 * With http_rate > 0, the same process also serves POST requests at that rate (autocannon
 * in a child process), each parsing a JSON body, appending one decision (strict) and
 * answering: `http_rate` of the offered `rate` then arrives over HTTP, `records` more in
 * process at the rest of it.
 * query: fills a log with `records` decisions, then reports p50/p95 of a first page
 * (limit 50) and of a page deep in the results for each indexed filter.
 */
import { spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DecisionStore } from '../src/decisions/store.ts';
import { newDecisionId } from '../src/decisions/record.ts';
import type { DecisionRecord } from '../src/decisions/record.ts';
import type { DecisionFilters } from '../src/decisions/query.ts';
import { machineInfo, versions } from './lib/machine.ts';
import { scriptArgs, scriptUsageError } from '../src/toolchain/script-args.ts';

const ACTIONS = ['read', 'write', 'delete', 'approve', 'list', 'export', 'share', 'comment'];
const RESOURCE_TYPES = ['document', 'invoice', 'account', 'report', 'project'];
const REASONS = ['scope_missing', 'no_entitlement', 'token_revoked', 'tenant_mismatch', 'token_too_old_for_risk'];
/** What an allow of the default policy (rego/authz) explains itself with: six reasons, each indexed by its code. */
const GRANT_REASONS = [
  { code: 'issuer_trusted', rule_id: 'issuer-acme-idp', issuer: 'https://idp.example.com' },
  { code: 'environment_matched', rule_id: 'audience-production', environment: 'production' },
  { code: 'tenant_matched', rule_id: 'tenant-claim-acme-idp', tenant: 'acme' },
  { code: 'scope_granted', scope: 'documents.read' },
  { code: 'mapping_matched', rule_id: 'mapping-acme-employees', subject: 'user-1' },
  { code: 'entitlement_granted', entitlement_id: 'ent-1', subject: 'user-1' },
];
const ISSUERS = ['https://idp.example.com', 'https://login.partner.test', 'https://sso.internal'];

function sampleDecision(i: number, timestamp: number): DecisionRecord {
  const allow = i % 3 !== 0;
  return {
    decision_id: newDecisionId(),
    timestamp,
    caller: `gateway-${i % 4}`,
    endpoint: '/v1/decide',
    bundle: 'main',
    revision: `rev-${Math.floor(i / 100_000)}`,
    input: {
      subject: { iss: ISSUERS[i % ISSUERS.length], sub: `user-${i % 10_000}`, client_id: `client-${i % 50}`, acr: 'mfa' },
      action: { name: ACTIONS[i % ACTIONS.length] },
      resource: { type: RESOURCE_TYPES[i % RESOURCE_TYPES.length], id: `res-${i % 100_000}`, owner: `user-${(i * 7) % 10_000}` },
      context: { client_ip: `10.0.${i % 256}.${(i >> 8) % 256}`, user_agent: 'curl/8.5', time: new Date(timestamp).toISOString() },
      claims: { scope: 'documents:read documents:write', amr: ['pwd', 'otp'], tenant: `tenant-${i % 20}` },
    },
    claim_names: ['iss', 'sub', 'aud', 'exp', 'iat', 'scope', 'client_id', 'amr', 'acr', 'tenant'],
    result: {
      allow,
      reasons: allow ? GRANT_REASONS : [{ code: REASONS[i % REASONS.length] as string, message: 'see policy' }],
      obligations: allow ? [{ type: 'log_access' }] : [],
    },
    latency_us: 150 + (i % 400),
  };
}

/**
 * Open loop, as requests arrive at a server: every millisecond the decisions due by then
 * are appended, whether or not earlier ones are durable yet.
 */
async function ingest(records: number, rate: number, httpRate: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'arbiter-bench-'));
  const store = await DecisionStore.open({
    path: join(dir, 'decisions.db'),
    mask: [{ pointer: '/input/context/client_ip', mode: 'hash' }],
  });
  const latencies: number[] = [];
  const appends: Promise<void>[] = [];
  const start = performance.now();
  const cpuStart = process.threadCpuUsage();
  const processCpuStart = process.cpuUsage();
  let issued = 0;
  const inProcessRate = rate - httpRate;
  const http = httpRate > 0 ? await serveDecisions(store, httpRate, records / inProcessRate) : undefined;
  while (issued < records) {
    const due = Math.min(records, Math.floor(((performance.now() - start) * inProcessRate) / 1000));
    for (; issued < due; issued++) {
      const t = performance.now();
      appends.push(store.append(sampleDecision(issued, Date.now())).then(() => void latencies.push(performance.now() - t)));
    }
    await new Promise<void>((resolve) => setTimeout(resolve, 1));
  }
  await Promise.all(appends);
  const served = await http?.done;
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.threadCpuUsage(cpuStart);
  const processCpu = process.cpuUsage(processCpuStart);
  const { commits, committed } = store.stats;
  await store.close();
  const mainUs = (cpu.user + cpu.system) / records;
  // What is left of the main thread (which also serves HTTP in a server) at this rate.
  const mainBusy = (cpu.user + cpu.system) / 1e6 / seconds;
  // The rest of the process's CPU is the writer thread's (and V8/libuv helpers').
  const writerUs = (processCpu.user + processCpu.system) / records - mainUs;
  latencies.sort((a, b) => a - b);
  console.log(
    `ingest strict, offered ${rate}/s: ${records} decisions durable in ${seconds.toFixed(2)} s = ${Math.round(records / seconds)}/s, ` +
      `${commits} commits (avg ${Math.round(committed / commits)}/commit), append latency p50 ${percentile(latencies, 50).toFixed(1)} ms ` +
      `p99 ${percentile(latencies, 99).toFixed(1)} ms; CPU per decision: main thread ${mainUs.toFixed(1)} µs ` +
      `(including building the sample decision; the main thread was busy ${(mainBusy * 100).toFixed(0)}% of the run), ` +
      `other threads (the writer, GC helpers) ${writerUs.toFixed(1)} µs; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`,
  );
  if (served) {
    console.log(
      `  while serving HTTP: ${served.requests} requests (${Math.round(served.requests / seconds)}/s, ${served.non2xx} non-2xx), ` +
        `latency p50 ${served.p50} ms p99 ${served.p99} ms (autocannon, whole ms); total durable ${Math.round((records + served.requests) / seconds)}/s`,
    );
  }
  const round1 = (value: number) => Math.round(value * 10) / 10;
  const run = {
    measured_at: new Date().toISOString(),
    machine: machineInfo(),
    versions: versions(),
    offered_per_s: rate,
    offered_http_per_s: httpRate,
    in_process_records: records,
    reasons_per_allow: GRANT_REASONS.length,
    seconds: round1(seconds),
    in_process_durable_per_s: Math.round(records / seconds),
    http_requests: served?.requests ?? 0,
    http_non_2xx: served?.non2xx ?? 0,
    http_latency_ms: served && { p50: served.p50, p99: served.p99 },
    total_durable_per_s: Math.round((records + (served?.requests ?? 0)) / seconds),
    commits,
    append_latency_ms: { p50: round1(percentile(latencies, 50)), p99: round1(percentile(latencies, 99)) },
    cpu_us_per_decision: { main_thread: round1(mainUs), other_threads: round1(writerUs) },
  };
  mkdirSync('bench/results', { recursive: true });
  appendFileSync('bench/results/decision-log-ingest.jsonl', `${JSON.stringify(run)}\n`);
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Enough connections for autocannon to offer the HTTP rate: with strict durability every
 * answer waits for a group commit (10-20 ms under this load), so by Little's law 2,000/s
 * needs 20-40 requests in flight, and 32 connections capped it at 1,300-1,650/s.
 */
const HTTP_CONNECTIONS = 64;

/**
 * A stand-in for the decide endpoint on the main thread: parse the request, log a decision
 * (strict, so the answer waits for its commit), answer. Load comes from autocannon in a
 * child process at `rate` requests/s for `seconds`.
 */
async function serveDecisions(
  store: DecisionStore,
  rate: number,
  seconds: number,
): Promise<{ done: Promise<{ requests: number; non2xx: number; p50: number; p99: number }> }> {
  let n = 0;
  const server = createServer((request, response) => {
    let body = '';
    request.setEncoding('utf8');
    request.on('data', (chunk: string) => (body += chunk));
    request.on('end', () => {
      const { input } = JSON.parse(body) as { input: DecisionRecord['input'] };
      const decision = sampleDecision(n++, Date.now());
      store.append({ ...decision, input: { ...decision.input, ...input } }).then(
        () => response.writeHead(200, { 'content-type': 'application/json' }).end(`{"decision_id":"${decision.decision_id}","allow":${decision.result.allow}}`),
        () => response.writeHead(503).end(),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const body = JSON.stringify({ input: sampleDecision(1, Date.now()).input });
  const child = spawn(
    process.execPath,
    [fileURLToPath(new URL('../node_modules/autocannon/autocannon.js', import.meta.url)), '-j', '-c', String(HTTP_CONNECTIONS), '-R', String(rate),
      '-d', String(Math.max(1, Math.round(seconds))), '-m', 'POST', '-H', 'content-type=application/json', '-b', body, `http://127.0.0.1:${port}/`],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const done = new Promise<{ requests: number; non2xx: number; p50: number; p99: number }>((resolve) => {
    child.on('close', () => {
      server.close();
      const result = JSON.parse(output) as { requests: { total: number }; non2xx: number; latency: { p50: number; p99: number } };
      resolve({ requests: result.requests.total, non2xx: result.non2xx, p50: result.latency.p50, p99: result.latency.p99 });
    });
  });
  return { done };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] as number;
}

async function query(records: number, queries: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'arbiter-bench-'));
  const store = await DecisionStore.open({ path: join(dir, 'decisions.db'), durability: 'relaxed', max_batch: 5_000 });
  const t0 = Date.now() - records * 10; // one decision every 10 ms, ending now
  const fillStart = performance.now();
  for (let i = 0; i < records; i++) {
    await store.append(sampleDecision(i, t0 + i * 10));
    // Relaxed appends resolve at once: hold back while the writer catches up.
    while (store.stats.pending > 20_000) await new Promise<void>((resolve) => setTimeout(resolve, 5));
  }
  while (store.stats.pending > 0) await new Promise<void>((resolve) => setTimeout(resolve, 10));
  console.log(`filled ${records} decisions in ${((performance.now() - fillStart) / 1000).toFixed(1)} s`);

  const pick = <T>(values: readonly T[], n: number): T => values[n % values.length] as T;
  const span = records * 10;
  const filters: Record<string, (n: number) => DecisionFilters> = {
    none: () => ({}),
    'from/to (1 h window)': (n) => ({ from: t0 + ((n * 7919) % span), to: t0 + ((n * 7919) % span) + 3_600_000 }),
    iss: (n) => ({ iss: pick(ISSUERS, n) }),
    sub: (n) => ({ sub: `user-${(n * 37) % 10_000}` }),
    client_id: (n) => ({ client_id: `client-${n % 50}` }),
    action: (n) => ({ action: pick(ACTIONS, n) }),
    resource_type: (n) => ({ resource_type: pick(RESOURCE_TYPES, n) }),
    resource_id: (n) => ({ resource_id: `res-${(n * 101) % 100_000}` }),
    allow: (n) => ({ allow: n % 2 === 0 }),
    reason: (n) => ({ reason: pick(REASONS, n) }),
    revision: (n) => ({ revision: `rev-${n % Math.max(1, Math.ceil(records / 100_000))}` }),
    'sub + from/to (1 day)': (n) => ({ sub: `user-${(n * 37) % 10_000}`, from: t0, to: t0 + 86_400_000 }),
    'action + allow=false': (n) => ({ action: pick(ACTIONS, n), allow: false }),
  };
  for (const [name, make] of Object.entries(filters)) {
    const first: number[] = [];
    const deep: number[] = [];
    for (let n = 0; n < queries; n++) {
      let t = performance.now();
      const page = store.query(make(n), { limit: 50 });
      first.push(performance.now() - t);
      if (page.next_cursor) {
        // Page 2 through a cursor, then a page far behind (the cursor of the 20th page).
        let cursor: string | null = page.next_cursor;
        for (let p = 0; p < 20 && cursor; p++) cursor = store.query(make(n), { limit: 50, cursor }).next_cursor;
        if (cursor) {
          t = performance.now();
          store.query(make(n), { limit: 50, cursor });
          deep.push(performance.now() - t);
        }
      }
    }
    first.sort((a, b) => a - b);
    deep.sort((a, b) => a - b);
    const fmt = (values: number[]) =>
      values.length === 0 ? 'n/a' : `p50 ${percentile(values, 50).toFixed(2)} ms, p95 ${percentile(values, 95).toFixed(2)} ms`;
    console.log(`${name.padEnd(24)} first page: ${fmt(first)} | page 22: ${fmt(deep)}`);
  }
  let t = performance.now();
  let exported = 0;
  for (const _ of store.export({ action: 'read' })) exported++;
  console.log(`export action=read: ${exported} rows in ${(performance.now() - t).toFixed(0)} ms`);
  t = performance.now();
  const report = await store.verify();
  console.log(`verify: ${JSON.stringify(report)} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}

// The mode is asked for, not assumed: an ingest run appends to a committed results file.
const { positionals } = scriptArgs(import.meta.url, {}, process.argv.slice(2), { positionals: true });
const [mode, a, b, c] = positionals;
if (mode === 'ingest') await ingest(Number(a ?? 200_000), Number(b ?? 20_000), Number(c ?? 0));
else if (mode === 'query') await query(Number(a ?? 1_000_000), Number(b ?? 200));
else scriptUsageError(import.meta.url, mode === undefined ? 'name a mode: ingest or query' : `unknown mode ${mode}: use ingest or query`);
