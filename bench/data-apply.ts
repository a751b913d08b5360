/**
 * What applying live data costs as it grows (`npm run bench:data`, issue #6).
 *
 *   node bench/data-apply.ts [--sizes 10KB,100KB,1MB,10MB,50MB] [--repeats 3] [--decisions 500] [--max-memory-mb 1024]
 *
 * For entitlement documents of each size, measured separately:
 *   a. LiveData.put: validation, serialization and the SQLite commit (synchronous = FULL);
 *   b. JSON.stringify of all live data, what the evaluation pool does on the main thread per
 *      update, and JSON.parse of it, what each worker then does;
 *   c. setData of the live data overlaid with the bundle's data into a policy instance (the
 *      worker's other step, PolicyEngine.setData), on a fresh instance growing its memory as the
 *      server's does, and on one whose memory is sized up front;
 *   d. end to end through a server process: PUT /v1/data/entitlements until a decision that
 *      depends on the new entitlement allows, with one client deciding all along, whose slowest
 *      decision and failures during the update show what the update costs decisions;
 *   e. sequential decisions with no update running: p50/p99 per size.
 * Writes bench/results/data-apply-latest.json.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadPolicy } from '@open-policy-agent/opa-wasm';
import { LiveData } from '../src/data/documents.ts';
import { openDataDatabase } from '../src/data/persistence.ts';
import { readBundleArchive } from '../src/policy/archive.ts';
import { overlay } from '../src/policy/overlay.ts';
import { buildBundle } from '../src/toolchain/build.ts';
import { entitlementsOfSize, invoiceReader, subjectId } from './lib/entitlements.ts';
import { adminToken, decide, invoiceReaderToken, readInvoiceRequest, startLiveServer, type LiveServer } from './lib/live-server.ts';
import { median, percentile } from './lib/load.ts';
import { machineInfo, versions } from './lib/machine.ts';
import { memoryMiB } from './lib/processes.ts';
import { scriptArgs } from '../src/toolchain/script-args.ts';

const { values: flags } = scriptArgs(import.meta.url, {
    sizes: { type: 'string', default: '10KB,100KB,1MB,10MB,50MB' },
    repeats: { type: 'string', default: '3' },
    decisions: { type: 'string', default: '500' },
    'max-memory-mb': { type: 'string', default: '1024' },
  });
const sizes = flags.sizes.split(',').map(parseSize);
const repeats = Number(flags.repeats);
const decisionCount = Number(flags.decisions);
const maxMemoryMb = Number(flags['max-memory-mb']);
/** Above this size one repeat of the slow steps (c, d) is enough and more would take minutes. */
const LARGE = 5_000_000;
const WASM_PAGE = 64 * 1024;
/** The server's default engine.max_memory_mb: data needing more cannot be applied without raising it. */
const DEFAULT_MAX_MEMORY_MB = 256;

function parseSize(text: string): { label: string; bytes: number } {
  const match = /^(\d+(?:\.\d+)?)(KB|MB)$/.exec(text.trim());
  if (!match) throw new Error(`--sizes: ${text} is not like 10KB or 50MB`);
  return { label: text.trim(), bytes: Number(match[1]) * (match[2] === 'KB' ? 1e3 : 1e6) };
}

function timeMs(work: () => unknown): number {
  const start = performance.now();
  work();
  return performance.now() - start;
}

const ms = (value: number) => Math.round(value * 100) / 100;
const summary = (values: number[]) => ({ median_ms: ms(median(values)), max_ms: ms(Math.max(...values)), runs: values.length });

const dir = mkdtempSync(join(tmpdir(), 'arbiter-bench-data-'));
const archive = join(dir, 'authz.tar.gz');
buildBundle('rego/authz', archive);
const files = await readBundleArchive(new Uint8Array(readFileSync(archive)));
const wasm = files.get('policy.wasm')!;
const bundleData = JSON.parse(new TextDecoder().decode(files.get('data.json')!)) as Record<string, unknown>;

interface SizeResult {
  size: string;
  bytes: number;
  subjects: number;
  store: ReturnType<typeof measureStore>;
  engine: Awaited<ReturnType<typeof measureSetData>>;
  end_to_end: Awaited<ReturnType<typeof measureEndToEnd>>;
  steady_decisions: Awaited<ReturnType<typeof measureSteadyDecisions>>;
}
const results: SizeResult[] = [];
let server: LiveServer | undefined;
try {
  server = await startLiveServer(join(dir, 'server'), { maxDataBytes: 128 * 1024 * 1024, maxMemoryMb });
  const admin = await adminToken(server.issuerKey, ['arbiter.data.write']);
  for (const size of sizes) {
    const { document, subjects } = entitlementsOfSize(size.bytes);
    const runs = size.bytes > LARGE ? 1 : repeats;
    console.log(`\n${size.label}: ${subjects} subjects`);
    const store = measureStore(document, runs);
    console.log(`  a. LiveData.put ${store.put.median_ms} ms; b. stringify ${store.stringify.median_ms} ms, parse ${store.parse.median_ms} ms (${store.bytes} bytes)`);
    const engine = await measureSetData(document, runs);
    console.log(`  c. setData ${engine.set_data.median_ms} ms (memory sized up front: ${engine.set_data_presized.median_ms} ms), ${engine.wasm_memory_mib} MiB of WASM memory`);
    const endToEnd = await measureEndToEnd(server, admin, document, size.label, runs);
    console.log(
      `  d. PUT 2xx ${endToEnd.put.median_ms} ms, allowed after ${endToEnd.visible.median_ms} ms; ` +
        `concurrent decisions: slowest ${endToEnd.concurrent.slowest_ms} ms, ${endToEnd.concurrent.failed} failed ${endToEnd.concurrent.failure_codes.join(' ')}`,
    );
    const steady = await measureSteadyDecisions(server, decisionCount);
    console.log(`  e. ${decisionCount} sequential decisions: p50 ${steady.p50_ms} ms, p99 ${steady.p99_ms} ms; server RSS ${steady.server_rss_mib} MiB`);
    results.push({ size: size.label, bytes: store.bytes, subjects, store, engine, end_to_end: endToEnd, steady_decisions: steady });
  }
} finally {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
}

const report = {
  benchmark: 'data-apply',
  time: new Date().toISOString(),
  machine: machineInfo(),
  versions: versions(),
  settings: { sizes: sizes.map((s) => s.label), repeats, large_sizes_repeats: 1, decisions: decisionCount, engine_max_memory_mb: maxMemoryMb, engine_workers: 1 },
  results,
};
mkdirSync('bench/results', { recursive: true });
writeFileSync('bench/results/data-apply-latest.json', `${JSON.stringify(report, null, 2)}\n`);
printTable();
console.log('\nwrote bench/results/data-apply-latest.json');

/** (a) and (b), in this process on a fresh SQLite file. */
function measureStore(document: object, runs: number) {
  const storeDir = mkdtempSync(join(dir, 'store-'));
  const db = openDataDatabase(join(storeDir, 'data.db'));
  try {
    const live = new LiveData(db, { limits: { maxTotalBytes: 256 * 1024 * 1024 } });
    const put = Array.from({ length: runs }, () => timeMs(() => live.put(['entitlements'], document)));
    const data = live.snapshot().data;
    let json = '';
    const stringify = Array.from({ length: runs }, () => timeMs(() => (json = JSON.stringify(data))));
    const parse = Array.from({ length: runs }, () => timeMs(() => JSON.parse(json)));
    return { bytes: Buffer.byteLength(json), put: summary(put), stringify: summary(stringify), parse: summary(parse) };
  } finally {
    db.close();
    rmSync(storeDir, { recursive: true, force: true });
  }
}

/**
 * (c): what a worker does per update once it has parsed the data. opa-wasm's loadPolicy with
 * the options PolicyEngine.load passes (5 pages initially, the ceiling as maximum), called
 * directly so the instance's memory can be read and, for the second figure, sized up front.
 */
async function measureSetData(document: object, runs: number) {
  const data = overlay({ entitlements: document }, { data: bundleData, roots: ['authz'] });
  const maximum = (maxMemoryMb * 1024 * 1024) / WASM_PAGE;
  const setData: number[] = [];
  let pages = 0;
  for (let i = 0; i < runs; i++) {
    // A fresh instance, as a worker has after start or replacement: its memory grows as the data loads.
    const policy = await loadPolicy(wasm.slice(), { initial: 5, maximum });
    setData.push(timeMs(() => policy.setData(data)));
    pages = memoryOf(policy).buffer.byteLength / WASM_PAGE;
  }
  const presized: number[] = [];
  for (let i = 0; i < runs; i++) {
    const policy = await loadPolicy(wasm.slice(), { initial: pages, maximum });
    presized.push(timeMs(() => policy.setData(data)));
  }
  const mib = (pages * WASM_PAGE) / 2 ** 20;
  return {
    set_data: summary(setData),
    set_data_presized: summary(presized),
    wasm_memory_mib: Math.round(mib * 10) / 10,
    fits_default_max_memory: mib <= DEFAULT_MAX_MEMORY_MB,
  };
}

function memoryOf(policy: object): WebAssembly.Memory {
  return (policy as { mem: WebAssembly.Memory }).mem;
}

/**
 * (d): a probe subject absent from the served document is added by a PUT of the whole document;
 * its token is then decided on until allowed. A second client decides on an entitled subject
 * throughout, to see what the update does to decisions that happen meanwhile.
 */
async function measureEndToEnd(target: LiveServer, admin: string, document: Record<string, unknown>, label: string, runs: number) {
  const base = JSON.stringify(document);
  const steadyToken = await invoiceReaderToken(target.issuerKey, Object.keys(document)[0]!);
  await putEntitlements(target, admin, base);
  const put: number[] = [];
  const visible: number[] = [];
  const firstDecisionAllowed: boolean[] = [];
  let slowest = 0;
  let failed = 0;
  let concurrentDecisions = 0;
  const failureCodes = new Set<string>();
  for (let run = 0; run < runs; run++) {
    const probeLabel = `probe-${label}-${run}`;
    const probe = subjectId(probeLabel);
    const probeBody = readInvoiceRequest(await invoiceReaderToken(target.issuerKey, probe));
    const before = await decide(target.url, probeBody);
    if (before.allow) throw new Error(`${probe} is allowed before its entitlement exists`);
    // Prepend the probe subject to the already serialized document: the client's own cost stays out of the timing.
    const body = `{${JSON.stringify(probe)}:${JSON.stringify(invoiceReader(probeLabel))},${base.slice(1)}`;

    let updating = true;
    const background = (async () => {
      const steadyBody = readInvoiceRequest(steadyToken);
      while (updating) {
        const start = performance.now();
        const answer = await decide(target.url, steadyBody);
        slowest = Math.max(slowest, performance.now() - start);
        concurrentDecisions++;
        if (answer.status !== 200 || !answer.allow) {
          failed++;
          for (const code of answer.codes) failureCodes.add(code);
        }
      }
    })();
    const start = performance.now();
    await putEntitlements(target, admin, body);
    const acknowledged = performance.now();
    let polls = 0;
    for (;;) {
      const answer = await decide(target.url, probeBody);
      polls++;
      if (answer.allow) break;
      if (performance.now() - acknowledged > 600_000) throw new Error(`${probe} still denied 10 minutes after the PUT`);
    }
    const allowed = performance.now();
    updating = false;
    await background;
    put.push(acknowledged - start);
    visible.push(allowed - acknowledged);
    firstDecisionAllowed.push(polls === 1);
  }
  return {
    put: summary(put),
    visible: summary(visible),
    /** Whether the first decision after the PUT's 2xx already saw the new entitlement. */
    first_decision_after_2xx_allowed: firstDecisionAllowed.every(Boolean),
    concurrent: { decisions: concurrentDecisions, slowest_ms: ms(slowest), failed, failure_codes: [...failureCodes] },
  };
}

async function putEntitlements(target: LiveServer, admin: string, body: string): Promise<void> {
  const response = await fetch(`${target.url}/v1/data/entitlements`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json', 'arbiter-data-source': 'bench' },
    body,
  });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`PUT /v1/data/entitlements: ${response.status} ${text.slice(0, 500)}`);
}

/** (e): sequential decisions on one connection, nothing else happening. */
async function measureSteadyDecisions(target: LiveServer, count: number) {
  const entitled = await invoiceReaderToken(target.issuerKey, subjectId('gen-0000000'));
  const body = readInvoiceRequest(entitled);
  for (let i = 0; i < 100; i++) await decide(target.url, body);
  const latencies: number[] = [];
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    const answer = await decide(target.url, body);
    latencies.push(performance.now() - start);
    if (!answer.allow) throw new Error(`steady decision denied: ${answer.codes.join(', ')}`);
  }
  latencies.sort((a, b) => a - b);
  return { p50_ms: ms(percentile(latencies, 0.5)), p99_ms: ms(percentile(latencies, 0.99)), server_rss_mib: Math.round(memoryMiB(target.pid).rss) };
}

function printTable(): void {
  const header = ['size', 'put (a)', 'stringify (b)', 'parse (b)', 'setData (c)', 'setData presized', 'WASM MiB', 'PUT 2xx (d)', 'allowed after 2xx', 'first decision allowed', 'slowest concurrent', 'failed', 'p50 (e)', 'p99 (e)'];
  console.log(`\n| ${header.join(' | ')} |\n|${header.map(() => '---').join('|')}|`);
  for (const r of results) {
    const row = [
      r.size, r.store.put.median_ms, r.store.stringify.median_ms, r.store.parse.median_ms, r.engine.set_data.median_ms,
      r.engine.set_data_presized.median_ms, r.engine.wasm_memory_mib, r.end_to_end.put.median_ms, r.end_to_end.visible.median_ms, r.end_to_end.first_decision_after_2xx_allowed,
      r.end_to_end.concurrent.slowest_ms, r.end_to_end.concurrent.failed, r.steady_decisions.p50_ms, r.steady_decisions.p99_ms,
    ];
    console.log(`| ${row.join(' | ')} |`);
  }
  console.log('(milliseconds, medians; one run for sizes above 5 MB)');
}
