import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK } from 'jose';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Decision } from '../src/decisions/pipeline.ts';
import { ArbiterMetrics } from '../src/metrics/registry.ts';
import { THREAD_READ_TIMEOUT_MS } from '../src/metrics/thread-heap.ts';
import { readBundleArchive } from '../src/policy/archive.ts';
import { MAX_JWKS_BYTES } from '../src/tokens/key-set.ts';
import type { Arbiter } from '../src/server/start.ts';
import { postJson, startTestArbiter, tempDir } from './support/arbiter.ts';
import { build, writeBundleSource } from './support/bundle-sources.ts';
import { strictExposition } from './support/exposition.ts';
import { LOOP_FOREVER, packFiles, prefixExportedFunction } from './support/hostile-archives.ts';
import { TestIssuer } from './support/issuer.ts';
import { whileLocked } from './support/sqlite-lock.ts';
import { waitFor } from './support/wait.ts';

let idp: TestIssuer;
let offline: TestIssuer;
let arbiter: Arbiter;

beforeAll(async () => {
  idp = await TestIssuer.create('https://idp.test.example');
  await idp.serve();
  // Trusted, but its JWKS URL has nothing listening: every fetch fails.
  offline = await TestIssuer.create('https://offline.test.example');
  arbiter = await startTestArbiter({
    issuers: [
      { issuer: idp.issuer, jwks_uri: idp.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'] },
      { issuer: offline.issuer, jwks_uri: 'http://127.0.0.1:9/jwks.json', audiences: ['https://api.example.com'], algorithms: ['ES256'], jwks_timeout_ms: 2000 },
    ],
  });
});

afterAll(async () => {
  await arbiter?.close();
  await idp?.close();
});

/** Sample values by series (`name{labels}` exactly as exposed). */
async function scrape(url: string): Promise<Map<string, number>> {
  const res = await fetch(`${url}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  const samples = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const split = line.lastIndexOf(' ');
    samples.set(line.slice(0, split), Number(line.slice(split + 1)));
  }
  return samples;
}

const decide = (body: Record<string, unknown>) => postJson(`${arbiter.url}/v1/decide`, { action: 'read', resource: { type: 'document' }, ...body });

describe('GET /metrics', () => {
  it('counts decisions, their latency and token failures by reason', async () => {
    const allow = await decide({ token: await idp.sign({ scope: 'read' }) });
    const deny = await decide({});
    const malformed = await decide({ token: 'not-a-jwt' });
    const unreachable = await decide({ token: await offline.sign({ scope: 'read' }) });
    expect([allow.body!.allow, deny.body!.reasons[0].code, malformed.body!.reasons[0].code, unreachable.body!.reasons[0].code]).toEqual([
      true,
      'unauthenticated',
      'token_malformed',
      'token_keys_unavailable',
    ]);

    const samples = await scrape(arbiter.url);
    expect(samples.get('arbiter_decisions_total{endpoint="/v1/decide",allow="true",reason="granted"}')).toBe(1);
    expect(samples.get('arbiter_decisions_total{endpoint="/v1/decide",allow="false",reason="unauthenticated"}')).toBe(1);
    expect(samples.get('arbiter_decisions_total{endpoint="/v1/decide",allow="false",reason="token_malformed"}')).toBe(1);
    expect(samples.get('arbiter_token_verification_failures_total{reason="token_malformed"}')).toBe(1);
    expect(samples.get('arbiter_token_verification_failures_total{reason="token_keys_unavailable"}')).toBe(1);
    expect(samples.get('arbiter_decision_duration_seconds_count{endpoint="/v1/decide"}')).toBe(4);
    expect(samples.get('arbiter_decision_duration_seconds_sum{endpoint="/v1/decide"}')).toBeGreaterThan(0);
    expect(samples.get('arbiter_decision_duration_seconds_bucket{le="+Inf",endpoint="/v1/decide"}')).toBe(4);

    expect(idp.jwksFetches).toBeGreaterThan(0);
    expect(samples.get(`arbiter_jwks_fetches_total{issuer="${idp.issuer}",use="decision"}`)).toBe(idp.jwksFetches);
    expect(samples.get(`arbiter_jwks_fetch_failures_total{issuer="${idp.issuer}",use="decision"}`)).toBe(0);
    expect(samples.get(`arbiter_jwks_fetch_failures_total{issuer="${offline.issuer}",use="decision"}`)).toBeGreaterThan(0);

    const simple = arbiter.bundles.get('simple')!;
    expect(samples.get(`arbiter_bundle_info{bundle="simple",revision="${simple.revision}"}`)).toBe(1);
    expect(samples.has('process_cpu_seconds_total')).toBe(true);
    expect(samples.get('arbiter_decision_log_queue_depth')).toBe(0);
    // Worker threads' heaps, which the nodejs_heap_* metrics (main thread only) do not cover.
    for (const thread of ['evaluator-0', 'decision-log-writer']) {
      const used = samples.get(`arbiter_thread_heap_bytes{thread="${thread}",kind="used"}`)!;
      const total = samples.get(`arbiter_thread_heap_bytes{thread="${thread}",kind="total"}`)!;
      expect(used).toBeGreaterThan(100_000);
      expect(total).toBeGreaterThanOrEqual(used);
    }
    // One instance per active revision, counted by the worker that holds them.
    expect(samples.get('arbiter_policy_instances{thread="evaluator-0"}')).toBe(arbiter.bundles.list().length);
  });

  it('says what the decision latency histogram measures: not the decision log commit a strict decision waits for', async () => {
    // latency_us is taken before the record is appended (it is part of the record), so the
    // histogram cannot include the commit: its help must not claim the whole time to answer.
    const text = await (await fetch(`${arbiter.url}/metrics`)).text();
    const help = text.split('\n').find((line) => line.startsWith('# HELP arbiter_decision_duration_seconds '))!;
    expect(help).toMatch(/latency_us/);
    expect(help).toMatch(/not the wait for the decision log/);
    expect(help).toMatch(/arbiter_decision_log_commit_seconds/);
  });

  it('exposes every token failure reason and each remote issuer\'s JWKS fetches at 0 from the start, so the first one shows to increase()', async () => {
    // A series that appears with its first count has no earlier sample: increase() over it is 0.
    const idle = await TestIssuer.create('https://idle.test.example');
    const server = await startTestArbiter({
      issuers: [{ issuer: idle.issuer, jwks_uri: 'http://127.0.0.1:9/jwks.json', audiences: ['https://api.example.com'], algorithms: ['ES256'] }],
      admin: { issuers: [{ issuer: 'https://admins.test.example', jwks_uri: 'http://127.0.0.1:9/admin-jwks.json', audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
    });
    try {
      const samples = await scrape(server.url);
      for (const reason of ['token_bad_signature', 'token_expired', 'token_keys_unavailable', 'token_invalid']) {
        expect(samples.get(`arbiter_token_verification_failures_total{reason="${reason}"}`), reason).toBe(0);
      }
      for (const [issuer, use] of [[idle.issuer, 'decision'], ['https://admins.test.example', 'admin']]) {
        expect(samples.get(`arbiter_jwks_fetches_total{issuer="${issuer}",use="${use}"}`), issuer).toBe(0);
        expect(samples.get(`arbiter_jwks_fetch_failures_total{issuer="${issuer}",use="${use}"}`), issuer).toBe(0);
      }
    } finally {
      await server.close();
    }
  });

  it('counts bundle activations and rejections by check', async () => {
    const dir = tempDir();
    copyFileSync(join(inject('bundlesDir'), 'simple.tar.gz'), join(dir, 'simple.tar.gz'));
    writeFileSync(join(dir, 'broken.tar.gz'), 'not a bundle');
    const server = await startTestArbiter({ bundles: { dir } });
    try {
      const samples = await scrape(server.url);
      expect(samples.get('arbiter_bundle_activations_total{bundle="simple"}')).toBe(1);
      expect(samples.get('arbiter_bundle_rejections_total{bundle="broken",check="archive_not_gzip"}')).toBe(1);
    } finally {
      await server.close();
    }
  });

  it('keeps the bundle label of rejections bounded: pushed names past the first 100 count as "other"', async () => {
    // Any holder of arbiter.bundles.write can push junk under names of its choosing: one series each would grow without end.
    const admins = await TestIssuer.create('https://admins.test.example');
    await admins.serve();
    const server = await startTestArbiter({ admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] } });
    try {
      const token = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.write' });
      for (let i = 0; i < 120; i++) {
        const res = await fetch(`${server.url}/v1/bundles/junk-${i}`, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/gzip' }, body: 'not a bundle' });
        expect(res.status).toBe(422);
      }
      const rejections = [...(await scrape(server.url))].filter(([series]) => series.startsWith('arbiter_bundle_rejections_total{'));
      const names = new Set(rejections.map(([series]) => /bundle="([^"]*)"/.exec(series)![1]));
      expect(names.size).toBe(101);
      expect(names.has('junk-0') && names.has('junk-99') && names.has('other')).toBe(true);
      expect(rejections.find(([series]) => series.includes('bundle="other"'))![1]).toBe(20);
    } finally {
      await server.close();
      await admins.close();
    }
  });

  it('counts the JWKS fetches of an issuer trusted for decisions and admin tokens alike per use: two key sets, two series', async () => {
    // As README's example: one identity provider signs both, each list has its own key set (cache, timeouts).
    const shared = await TestIssuer.create('https://shared.test.example');
    await shared.serve();
    const server = await startTestArbiter({
      issuers: [{ issuer: shared.issuer, jwks_uri: shared.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'] }],
      admin: { issuers: [{ issuer: shared.issuer, jwks_uri: shared.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
    });
    try {
      const before = await scrape(server.url);
      const series = (name: string, use: string) => `${name}{issuer="${shared.issuer}",use="${use}"}`;
      const decisionFetches = before.get(series('arbiter_jwks_fetches_total', 'decision'));
      const adminFetches = before.get(series('arbiter_jwks_fetches_total', 'admin'));
      expect([decisionFetches, adminFetches]).toEqual([expect.any(Number), expect.any(Number)]);
      for (const use of ['decision', 'admin']) expect(before.get(series('arbiter_jwks_fetch_failures_total', use)), use).toBe(0);
      // A kid neither key set holds makes each fetch again, once: its own series only.
      await shared.addKey('rotated');
      const decided = await postJson(`${server.url}/v1/decide`, { action: 'read', resource: { type: 'document' }, token: await shared.sign({ scope: 'read' }, { kid: 'rotated' }) });
      expect(decided.body!.allow).toBe(true);
      const afterDecision = await scrape(server.url);
      expect(afterDecision.get(series('arbiter_jwks_fetches_total', 'decision'))).toBe(decisionFetches! + 1);
      expect(afterDecision.get(series('arbiter_jwks_fetches_total', 'admin'))).toBe(adminFetches);
      const adminToken = await shared.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.read' }, { kid: 'rotated' });
      expect((await fetch(`${server.url}/v1/bundles`, { headers: { authorization: `Bearer ${adminToken}` } })).status).toBe(200);
      const afterAdmin = await scrape(server.url);
      expect(afterAdmin.get(series('arbiter_jwks_fetches_total', 'admin'))).toBe(adminFetches! + 1);
      expect(afterAdmin.get(series('arbiter_jwks_fetches_total', 'decision'))! + afterAdmin.get(series('arbiter_jwks_fetches_total', 'admin'))!).toBe(shared.jwksFetches);
    } finally {
      await server.close();
      await shared.close();
    }
  });

  it('counts admin token refusals by reason, each at 0 from the start, as gateway refusals are', async () => {
    const admins = await TestIssuer.create('https://admins.test.example');
    await admins.serve();
    const server = await startTestArbiter({ admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] } });
    const call = (token?: string, path = '/v1/bundles', init: RequestInit = {}) =>
      fetch(`${server.url}${path}`, { ...init, headers: { ...(token !== undefined && { authorization: `Bearer ${token}` }), ...(init.headers as Record<string, string>) } });
    const failures = (samples: Map<string, number>, reason: string) => samples.get(`arbiter_admin_auth_failures_total{reason="${reason}"}`);
    try {
      const start = await scrape(server.url);
      for (const reason of ['missing_token', 'token_malformed', 'token_expired', 'token_keys_unavailable', 'token_revoked', 'insufficient_scope']) {
        expect(failures(start, reason), reason).toBe(0);
      }
      expect((await call()).status).toBe(401);
      expect((await call('not.a.token')).status).toBe(401);
      expect((await call('not.a.token')).status).toBe(401);
      const reader = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.read arbiter.revocations.write' });
      expect((await call(reader, '/v1/bundles/x', { method: 'DELETE' })).status).toBe(403);
      const stolen = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.read', jti: 'stolen-1' });
      const revoked = await call(reader, '/v1/revocations', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ kind: 'jti', value: 'stolen-1', iss: admins.issuer, reason: 'leaked' }),
      });
      expect(revoked.status).toBe(201);
      expect((await call(stolen)).status).toBe(401);
      const samples = await scrape(server.url);
      expect(failures(samples, 'missing_token')).toBe(1);
      expect(failures(samples, 'token_malformed')).toBe(2);
      expect(failures(samples, 'insufficient_scope')).toBe(1);
      expect(failures(samples, 'token_revoked')).toBe(1);
      expect(failures(samples, 'token_expired')).toBe(0);
    } finally {
      await server.close();
      await admins.close();
    }
  });

  it('counts a JWKS refused for holding private keys or for its size as a failed fetch', async () => {
    const leaky = await TestIssuer.create('https://leaky.test.example');
    leaky.jwksFailure = { status: 200, body: JSON.stringify({ keys: [{ ...(await exportJWK(leaky.keys[0]!.privateKey)), kid: leaky.keys[0]!.kid }] }) };
    const huge = await TestIssuer.create('https://huge.test.example');
    huge.jwksFailure = { status: 200, body: JSON.stringify({ keys: [], padding: 'x'.repeat(MAX_JWKS_BYTES) }), chunked: true };
    await Promise.all([leaky.serve(), huge.serve()]);
    const issuerConfig = (issuer: TestIssuer) => ({ issuer: issuer.issuer, jwks_uri: issuer.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'] });
    const server = await startTestArbiter({ issuers: [issuerConfig(leaky), issuerConfig(huge)] });
    try {
      for (const issuer of [leaky, huge]) {
        const res = await postJson(`${server.url}/v1/decide`, { action: 'read', resource: { type: 'document' }, token: await issuer.sign({ scope: 'read' }) });
        expect(res.body!.reasons[0].code).toBe('token_keys_unavailable');
      }
      const samples = await scrape(server.url);
      for (const issuer of [leaky, huge]) {
        expect(issuer.jwksFetches, issuer.issuer).toBeGreaterThan(0);
        expect(samples.get(`arbiter_jwks_fetches_total{issuer="${issuer.issuer}",use="decision"}`), issuer.issuer).toBe(issuer.jwksFetches);
        expect(samples.get(`arbiter_jwks_fetch_failures_total{issuer="${issuer.issuer}",use="decision"}`), issuer.issuer).toBe(issuer.jwksFetches);
      }
    } finally {
      await server.close();
      await Promise.all([leaky.close(), huge.close()]);
    }
  });

  it('reports the decision log queue as it is at the scrape, and times each commit of a batch', async () => {
    // relaxed: appends return before their commit, so a gauge sampled then never reads 0 again.
    const relaxed = await startTestArbiter({ decision_log: { durability: 'relaxed', flush_interval_ms: 50 } });
    try {
      await Promise.all(Array.from({ length: 5 }, () => postJson(`${relaxed.url}/v1/decide`, { action: 'read', resource: { type: 'document' } })));
      await expect.poll(() => relaxed.decisionLog!.stats.committed, { timeout: 5000 }).toBe(5);
      const samples = await scrape(relaxed.url);
      expect(samples.get('arbiter_decision_log_queue_depth')).toBe(0);
      // One observation per commit (its batch), not per decision.
      expect(samples.get('arbiter_decision_log_commit_seconds_count')).toBe(relaxed.decisionLog!.stats.commits);
    } finally {
      await relaxed.close();
    }
  });

  it('answers while an evaluation worker is busy outside evaluations, leaving out what that worker cannot tell yet', async () => {
    // A worker checking a pushed module (or loading one, or taking a large live data version)
    // runs module code until engine.load_deadline_ms (2 minutes by default): a scrape that waited
    // for it would time out at Prometheus, and every metric would be missing just then.
    const dir = tempDir('arbiter-metrics-');
    const files = await readBundleArchive(new Uint8Array(build(writeBundleSource(dir, 'tables'), join(dir, 'tables.tar.gz'), 'tables-1')));
    const hangsInTables = packFiles(new Map(files).set('policy.wasm', prefixExportedFunction(files.get('policy.wasm')!, 'entrypoints', LOOP_FOREVER)));
    const admins = await TestIssuer.create('https://admins.test.example');
    await admins.serve();
    const server = await startTestArbiter({
      admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
      engine: { workers: 1, load_deadline_ms: 6000 },
    });
    try {
      const token = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.write' });
      const pushed = fetch(`${server.url}/v1/bundles/tables`, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/gzip' }, body: new Uint8Array(hangsInTables) });
      // The check runs on the only worker, past the time a scrape waits for it.
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const started = performance.now();
      const samples = await scrape(server.url);
      expect(performance.now() - started).toBeLessThan(THREAD_READ_TIMEOUT_MS + 2000);
      expect(samples.has('arbiter_decision_log_queue_depth')).toBe(true);
      expect(samples.has('arbiter_policy_instances{thread="evaluator-0"}')).toBe(false);
      expect((await pushed).status).toBe(422);
      // Free again, the worker is counted at the next scrape.
      expect((await scrape(server.url)).has('arbiter_policy_instances{thread="evaluator-0"}')).toBe(true);
    } finally {
      await server.close();
      await admins.close();
    }
  }, 30_000);

  it("reports the decision log reader thread's heap only once a read started it, and answers while a read holds it", async () => {
    // The reader thread starts with the first auditor read: a scrape must neither start it nor
    // wait on it while a long read holds it.
    const server = await startTestArbiter();
    const used = 'arbiter_thread_heap_bytes{thread="decision-log-reader",kind="used"}';
    const total = 'arbiter_thread_heap_bytes{thread="decision-log-reader",kind="total"}';
    try {
      const reader = server.decisionLog!.reader;
      expect((await scrape(server.url)).has(used)).toBe(false);
      // Still none: the scrape before did not start the thread.
      expect((await scrape(server.url)).has(used)).toBe(false);

      expect(await reader.get('00000000-0000-4000-8000-000000000000')).toBeUndefined();
      const started = await scrape(server.url);
      expect(started.get(used)).toBeGreaterThan(100_000);
      expect(started.get(total)).toBeGreaterThanOrEqual(started.get(used)!);

      const release = reader.holdForTests();
      try {
        const held = reader.get('00000000-0000-4000-8000-000000000000');
        await waitFor(() => reader.heldForTests === 1, 'the read to reach the reader thread');
        const before = performance.now();
        const during = await scrape(server.url);
        expect(performance.now() - before).toBeLessThan(THREAD_READ_TIMEOUT_MS + 2000);
        // Every other thread is there. The held one may be too (V8 answers a heap request while the
        // thread waits in Atomics.wait, as the hold does, not while it runs SQLite's code in a long
        // query): either way the scrape did not wait past THREAD_READ_TIMEOUT_MS for it.
        expect(during.has('arbiter_thread_heap_bytes{thread="decision-log-writer",kind="used"}')).toBe(true);
        expect(during.has('arbiter_thread_heap_bytes{thread="evaluator-0",kind="used"}')).toBe(true);
        release();
        expect(await held).toBeUndefined();
      } finally {
        release();
      }
      expect((await scrape(server.url)).has(used)).toBe(true);
    } finally {
      await server.close();
    }
  }, 30_000);

  it('exposes the last successful pull of a source that never succeeded, as 0, so an alert on its age fires', async () => {
    // A replica restarted while its bundle server is down serves what its store holds, for as
    // long as the source stays down: an absent series would keep `time() - last_success` silent.
    const server = await startTestArbiter({ bundles: { sources: [{ name: 'remote', url: 'http://127.0.0.1:9/remote.tar.gz', poll_interval_s: 3600, timeout_ms: 1000 }] } });
    try {
      await expect.poll(async () => (await scrape(server.url)).get('arbiter_bundle_pulls_total{bundle="remote",result="bundle_pull_failed"}'), { timeout: 5000 }).toBe(1);
      expect((await scrape(server.url)).get('arbiter_bundle_pull_last_success_timestamp_seconds{bundle="remote"}')).toBe(0);
    } finally {
      await server.close();
    }
  });

  it('tells a commit that waited on a lock for over a second from one that hung: buckets up to past busy_timeout_ms', async () => {
    // busy_timeout_ms is 2 s by default: a commit waiting on a backup's lock for 1-2 s is what the histogram is for.
    const path = join(tempDir('arbiter-metrics-'), 'decisions.db');
    const server = await startTestArbiter({ decision_log: { path, busy_timeout_ms: 5000 } });
    try {
      await whileLocked(path, async (release) => {
        const waiting = postJson(`${server.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } });
        await new Promise((resolve) => setTimeout(resolve, 1500));
        release();
        expect((await waiting).status).toBe(200);
      });
      const samples = await scrape(server.url);
      expect(samples.get('arbiter_decision_log_commit_seconds_bucket{le="1"}')).toBe(0);
      expect(samples.get('arbiter_decision_log_commit_seconds_bucket{le="2.5"}')).toBe(1);
    } finally {
      await server.close();
    }
  });

  it('shows how old each live document is and whether it is stale, as policies see it, computed at the scrape', async () => {
    arbiter.liveData.put(['feed'], { v: 1 }, { source: 'hr-sync', max_age_s: 1 });
    arbiter.liveData.put(['unbounded'], { v: 1 });
    const fresh = await scrape(arbiter.url);
    expect(fresh.get('arbiter_live_data_age_seconds{document="feed"}')).toBe(0);
    expect(fresh.get('arbiter_live_data_stale{document="feed"}')).toBe(0);
    // No write and no decision in between: the feed stopping shows at the next scrape by itself.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const later = await scrape(arbiter.url);
    expect(later.get('arbiter_live_data_age_seconds{document="feed"}')).toBe(1);
    expect(later.get('arbiter_live_data_stale{document="feed"}')).toBe(1);
    // Without a max age (nor data.default_max_age_s) a document never goes stale, as in input.data_status.
    expect(later.get('arbiter_live_data_stale{document="unbounded"}')).toBe(0);
    expect(arbiter.liveData.status(Date.now()).feed!.stale).toBe(true);
    // A deleted document's series goes with it.
    arbiter.liveData.delete(['unbounded']);
    expect((await scrape(arbiter.url)).has('arbiter_live_data_age_seconds{document="unbounded"}')).toBe(false);
    arbiter.liveData.delete(['feed']);
  });

  it('is valid Prometheus text exposition, with label values an admin or a policy chose escaped', async () => {
    // The reader is strict: it finds a quote left unescaped, a repeated HELP and a counter not named _total.
    expect(strictExposition('# TYPE a counter\na{x="q"q"} 1\n# HELP b x\n# HELP b x\n')).toHaveLength(3);
    const admins = await TestIssuer.create('https://admins.test.example');
    await admins.serve();
    const server = await startTestArbiter({ admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] } });
    try {
      const token = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.write arbiter.data.write' });
      const dir = tempDir();
      // A revision is whatever the bundle's manifest says; a document name whatever a writer chose.
      const archive = build(writeBundleSource(dir, 'hostile'), join(dir, 'hostile.tar.gz'), 'r"1\\x\ny');
      const pushed = await fetch(`${server.url}/v1/bundles/hostile`, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/gzip' }, body: new Uint8Array(archive) });
      expect(pushed.status).toBe(201);
      const written = await fetch(`${server.url}/v1/data/${encodeURIComponent('d"o\\c')}`, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{"a":1}' });
      expect(written.status).toBe(200);
      await postJson(`${server.url}/v1/decide`, { action: 'read', resource: { type: 'document' }, policy: 'hostile' });
      await postJson(`${server.url}/v1/decide`, { token: 'not-a-jwt', action: 'read', resource: { type: 'document' } });

      const res = await fetch(`${server.url}/metrics`);
      expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
      const text = await res.text();
      expect(strictExposition(text)).toEqual([]);
      expect(text).toContain('arbiter_bundle_info{bundle="hostile",revision="r\\"1\\\\x\\ny"} 1\n');
      expect(text).toContain('arbiter_live_data_stale{document="d\\"o\\\\c"} 0\n');
    } finally {
      await server.close();
      await admins.close();
    }
  });

  it('is not served when metrics.enabled is false', async () => {
    const quiet = await startTestArbiter({ metrics: { enabled: false } });
    try {
      const res = await fetch(`${quiet.url}/metrics`);
      expect(res.status).toBe(404);
    } finally {
      await quiet.close();
    }
  });
});

describe('reason labels', () => {
  const decision = (code: string): Decision => ({
    decision_id: 'id',
    allow: false,
    reasons: [{ code }],
    obligations: [],
    policy: null,
    data_version: 0,
    result: null,
    answered: true,
    latency_us: 10,
  });

  it('keeps the bundle label of activations bounded: names past the first 100 count as "other"', async () => {
    // Pushed and removed bundles keep their series for the life of the process.
    const metrics = new ArbiterMetrics({ activeBundles: () => [] });
    for (let i = 0; i < 120; i++) metrics.bundleActivated(`pushed-${i}`);
    metrics.bundleActivated('pushed-0');
    const byBundle = new Map((await metrics.bundleActivations.get()).values.map((v) => [v.labels.bundle, v.value]));
    expect(byBundle.size).toBe(101);
    expect([byBundle.get('pushed-0'), byBundle.get('pushed-99'), byBundle.has('pushed-100'), byBundle.get('other')]).toEqual([2, 1, false, 20]);
  });

  it('keeps the document label of live data freshness bounded: documents past the first 100 count as "other", the oldest of them', async () => {
    // Anyone with arbiter.data.write names documents, as many as data.max_size_bytes has room for.
    const statuses: Record<string, { age_s: number; stale: boolean }> = {};
    for (let i = 0; i < 150; i++) statuses[`doc-${i}`] = { age_s: i, stale: i === 120 };
    statuses['line\nbreak'] = { age_s: 1, stale: false };
    const metrics = new ArbiterMetrics({ activeBundles: () => [], liveDataStatus: () => statuses });
    const read = async (name: string) => new Map((await metrics.registry.getSingleMetric(name)!.get()).values.map((v) => [v.labels.document, v.value]));
    const ages = await read('arbiter_live_data_age_seconds');
    const stale = await read('arbiter_live_data_stale');
    expect([ages.size, stale.size]).toEqual([101, 101]);
    expect([ages.get('doc-0'), ages.get('doc-99'), ages.has('doc-100'), ages.get('other')]).toEqual([0, 99, false, 149]);
    expect([stale.get('doc-99'), stale.get('other')]).toEqual([0, 1]);
  });

  it("keeps Arbiter's own reason codes as labels of their own when policies have used up the reason label budget", async () => {
    // A policy whose reason codes carry request data (a user id, or whatever the caller sent) uses
    // up the first 200 labels: token_*, policy_* and audit_unavailable must not become "other" then.
    const dir = tempDir();
    const src = writeBundleSource(tempDir(), 'chatty', { decision: '{"allow": false, "reasons": [{"code": object.get(input, ["context", "code"], "quiet")}]}' });
    build(src, join(dir, 'chatty.tar.gz'), 'r1');
    const server = await startTestArbiter({ bundles: { dir, default: 'chatty' } });
    try {
      const ask = (body: Record<string, unknown>) => postJson(`${server.url}/v1/decide`, { action: 'read', resource: { type: 'document' }, ...body });
      for (let i = 0; i < 200; i++) expect((await ask({ context: { code: `denied.user-${i}` } })).body!.reasons[0].code).toBe(`denied.user-${i}`);
      expect((await ask({ token: 'not-a-jwt' })).body!.reasons[0].code).toBe('token_malformed');
      expect((await ask({ policy: 'nowhere' })).body!.reasons[0].code).toBe('no_active_bundle');

      const samples = await scrape(server.url);
      expect(samples.get('arbiter_decisions_total{endpoint="/v1/decide",allow="false",reason="denied.user-199"}')).toBe(1);
      expect(samples.get('arbiter_decisions_total{endpoint="/v1/decide",allow="false",reason="token_malformed"}')).toBe(1);
      expect(samples.get('arbiter_decisions_total{endpoint="/v1/decide",allow="false",reason="no_active_bundle"}')).toBe(1);
      expect(samples.has('arbiter_decisions_total{endpoint="/v1/decide",allow="false",reason="other"}')).toBe(false);
    } finally {
      await server.close();
    }
  });

  it('keeps policy reason codes to a bounded set of plain labels', async () => {
    const metrics = new ArbiterMetrics({ activeBundles: () => [] });
    for (let i = 0; i < 250; i++) metrics.decided(decision(`code_${i}`), '/v1/decide');
    metrics.decided(decision('code_0'), '/v1/decide');
    metrics.decided(decision('Has Spaces'), '/v1/decide');
    metrics.decided(decision('x'.repeat(65)), '/v1/decide');

    const values = (await metrics.decisions.get()).values;
    const byReason = new Map(values.map((v) => [v.labels.reason, v.value]));
    expect(byReason.size).toBe(201);
    expect(byReason.get('code_0')).toBe(2);
    expect(byReason.get('code_199')).toBe(1);
    expect(byReason.has('code_200')).toBe(false);
    // 50 codes past the cap, and two that are not plain codes.
    expect(byReason.get('other')).toBe(52);
  });
});
