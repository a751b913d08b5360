/**
 * Revocations through the HTTP API (`npm run bench:revocations`, issue #6).
 *
 *   node bench/revocations-http.ts [--duration 5] [--connections 32] [--batch 1000] [--batch-connections 4]
 *                                  [--probes 200] [--decision-rate 300]
 *
 * Against a server process (default policy, SQLite with synchronous = FULL):
 *   a. one revocation per POST /v1/revocations, `--connections` clients sending back to back;
 *   b. `{"revocations": [...]}` batches of `--batch`, `--batch-connections` clients;
 *   c. visibility under load: while `--decision-rate` decisions/s run on other tokens, each of
 *      `--probes` tokens is decided (allowed, and its verification now cached), revoked by jti,
 *      and decided again right after the 201: that decision must be denied with token_revoked.
 * Writes bench/results/revocations-latest.json; exits 1 when any probe was not denied.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { decodeJwt } from 'jose';
import { invoiceReader, subjectId, type SubjectEntitlements } from './lib/entitlements.ts';
import { adminToken, decide, invoiceReaderToken, readInvoiceRequest, startLiveServer, type LiveServer } from './lib/live-server.ts';
import { machineInfo, versions } from './lib/machine.ts';
import { scriptArgs } from '../src/toolchain/script-args.ts';

const { values: flags } = scriptArgs(import.meta.url, {
    duration: { type: 'string', default: '5' },
    connections: { type: 'string', default: '32' },
    batch: { type: 'string', default: '1000' },
    'batch-connections': { type: 'string', default: '4' },
    probes: { type: 'string', default: '200' },
    'decision-rate': { type: 'string', default: '300' },
  });
const durationS = Number(flags.duration);
const connections = Number(flags.connections);
const batchSize = Number(flags.batch);
const batchConnections = Number(flags['batch-connections']);
const probeCount = Number(flags.probes);
const decisionRate = Number(flags['decision-rate']);
/** Tokens the background decision load cycles through; none of them is revoked. */
const LOAD_SUBJECTS = 100;
/** Revocations of the throughput runs outlive the run, like a jti revocation set to its token's exp. */
const EXPIRES_AT = Math.floor(Date.now() / 1000) + 3 * 3600;

const dir = mkdtempSync(join(tmpdir(), 'arbiter-bench-revocations-'));
const entitlements: Record<string, SubjectEntitlements> = {};
for (let i = 0; i < LOAD_SUBJECTS; i++) entitlements[subjectId(`load-${i}`)] = invoiceReader(`load-${i}`);
for (let i = 0; i < probeCount; i++) entitlements[subjectId(`probe-${i}`)] = invoiceReader(`probe-${i}`);
const entitlementsFile = join(dir, 'entitlements.json');
writeFileSync(entitlementsFile, JSON.stringify(entitlements));

let server: LiveServer | undefined;
let report: Record<string, unknown>;
try {
  // A batch of 1000 is ~100 KB of JSON: within data.max_body_bytes (8 MiB), the limit revocation batches have.
  server = await startLiveServer(join(dir, 'server'), { entitlementsFile });
  const admin = await adminToken(server.issuerKey, ['arbiter.revocations.write']);

  const single = await revocationRun(server, admin, connections, 1);
  console.log(`a. one per request, ${connections} clients: ${single.revocations_per_s} revocations/s, p50 ${single.latency_ms.p50} ms, p99 ${single.latency_ms.p99} ms`);
  const batched = await revocationRun(server, admin, batchConnections, batchSize);
  console.log(`b. batches of ${batchSize}, ${batchConnections} clients: ${batched.revocations_per_s} revocations/s, p50 ${batched.latency_ms.p50} ms per batch`);
  const visibility = await visibilityRun(server, admin);
  console.log(
    `c. ${visibility.probes} revocations under ${visibility.background.decisions_per_s} decisions/s: ` +
      `${visibility.visibility_failures} decided allow after the 201 (must be 0); revoke p50 ${visibility.revoke_ms.p50} ms`,
  );
  report = {
    benchmark: 'revocations-http',
    time: new Date().toISOString(),
    machine: machineInfo(),
    versions: versions(),
    settings: { duration_s: durationS, connections, batch: batchSize, batch_connections: batchConnections, probes: probeCount, decision_rate: decisionRate },
    single,
    batched,
    visibility,
  };
} finally {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
}
mkdirSync('bench/results', { recursive: true });
writeFileSync('bench/results/revocations-latest.json', `${JSON.stringify(report, null, 2)}\n`);
console.log('wrote bench/results/revocations-latest.json');
if ((report.visibility as { visibility_failures: number }).visibility_failures > 0) process.exitCode = 1;

/** (a) and (b): POST /v1/revocations back to back for `durationS`, every entry a distinct jti. */
async function revocationRun(target: LiveServer, admin: string, clients: number, perRequest: number) {
  let next = 0;
  const entry = () => ({ kind: 'jti', value: `bench-${perRequest}-${next++}`, reason: 'benchmark', expires_at: EXPIRES_AT });
  const result = await cannon({
    url: target.url,
    connections: clients,
    duration: durationS,
    requests: [
      {
        method: 'POST',
        path: '/v1/revocations',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${admin}` },
        setupRequest: (request) => ({
          ...request,
          body: JSON.stringify(perRequest === 1 ? entry() : { revocations: Array.from({ length: perRequest }, entry) }),
        }),
      },
    ],
  });
  const created = result['2xx'];
  return {
    clients,
    per_request: perRequest,
    requests: created,
    revocations: created * perRequest,
    revocations_per_s: Math.round((created * perRequest) / durationS),
    latency_ms: { p50: result.latency.p50, p99: result.latency.p99 },
    non_2xx: result.non2xx,
    errors: result.errors + result.timeouts,
  };
}

/** (c): revoke-then-decide probes while a steady decision load runs. */
async function visibilityRun(target: LiveServer, admin: string) {
  const loadBodies = await Promise.all(
    Array.from({ length: LOAD_SUBJECTS }, async (_, i) => readInvoiceRequest(await invoiceReaderToken(target.issuerKey, subjectId(`load-${i}`)))),
  );
  let next = 0;
  const background = cannon({
    url: target.url,
    connections: 8,
    overallRate: decisionRate,
    duration: 600,
    requests: [
      { method: 'POST', path: '/v1/decide', headers: { 'content-type': 'application/json' }, setupRequest: (r) => ({ ...r, body: loadBodies[next++ % loadBodies.length]! }) },
    ],
  });
  const started = performance.now();

  const failures: { probe: number; allow: boolean; codes: string[] }[] = [];
  let notAllowedBefore = 0;
  const revokeMs: number[] = [];
  for (let i = 0; i < probeCount; i++) {
    const token = await invoiceReaderToken(target.issuerKey, subjectId(`probe-${i}`));
    const body = readInvoiceRequest(token);
    if (!(await decide(target.url, body)).allow) notAllowedBefore++;
    const start = performance.now();
    const response = await fetch(`${target.url}/v1/revocations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${admin}` },
      body: JSON.stringify({ kind: 'jti', value: decodeJwt(token).jti, reason: 'benchmark probe' }),
    });
    await response.text();
    revokeMs.push(performance.now() - start);
    if (response.status !== 201) throw new Error(`revocation of probe ${i}: ${response.status}`);
    const after = await decide(target.url, body);
    if (after.allow || !after.codes.includes('token_revoked')) failures.push({ probe: i, allow: after.allow, codes: after.codes });
  }

  const elapsedS = (performance.now() - started) / 1000;
  const load = await background.stop();
  revokeMs.sort((a, b) => a - b);
  return {
    probes: probeCount,
    visibility_failures: failures.length,
    failures: failures.slice(0, 20),
    /** Probes denied before their revocation: the check would prove nothing for them. */
    not_allowed_before_revocation: notAllowedBefore,
    revoke_ms: { p50: round(revokeMs[Math.floor(revokeMs.length / 2)]!), max: round(revokeMs.at(-1)!) },
    background: { decisions_per_s: Math.round(load['2xx'] / elapsedS), non_2xx: load.non2xx, errors: load.errors + load.timeouts },
  };
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

/** autocannon as a promise; `stop()` ends a run early and resolves with its result. */
function cannon(options: autocannon.Options): Promise<autocannon.Result> & { stop(): Promise<autocannon.Result> } {
  let instance: autocannon.Instance | undefined;
  const done = new Promise<autocannon.Result>((resolve, reject) => {
    instance = autocannon(options, (error, result) => (error ? reject(error as Error) : resolve(result)));
  });
  return Object.assign(done, {
    stop() {
      instance!.stop();
      return done;
    },
  });
}
