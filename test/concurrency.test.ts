import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Arbiter } from '../src/server/start.ts';
import { adminCall, postJson, startTestArbiter, tempDir } from './support/arbiter.ts';
import { build, writeBundleSource } from './support/bundle-sources.ts';
import { TestIssuer } from './support/issuer.ts';

/**
 * What happens while decisions are in flight, on the real server under concurrent load:
 * activations, rollbacks, live data writes, runaway policies, removals and shutdown.
 */
let admins: TestIssuer;
let adminToken: string;
let arbiter: Arbiter | undefined;
/** Revisions r1 and r2 of bundle `mix`: the rule and the bundle's own data both name the revision. */
const archives: Record<string, Uint8Array> = {};

beforeAll(async () => {
  admins = await TestIssuer.create('https://admins.test.example');
  await admins.serve();
  adminToken = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.write arbiter.bundles.read arbiter.data.write arbiter.decisions.read' }, { exp: Math.floor(Date.now() / 1000) + 3000 });
  const dir = tempDir('arbiter-concurrency-');
  for (const revision of ['r1', 'r2']) {
    const src = writeBundleSource(dir, 'mix', { decision: `{"allow": true, "reasons": [{"code": "rev", "rule": "${revision}", "data": data.mix.rev, "pair": pair}]}` });
    writeFileSync(join(src, 'pair.rego'), 'package mix\n\ndefault pair := null\n\npair := data.pair\n');
    writeFileSync(join(src, 'data.json'), JSON.stringify({ mix: { rev: revision } }));
    archives[revision] = new Uint8Array(build(src, join(dir, `mix-${revision}.tar.gz`), revision));
  }
}, 60_000);

afterAll(async () => {
  await admins?.close();
});

afterEach(async () => {
  await arbiter?.close();
  arbiter = undefined;
});

const start = (raw: Record<string, unknown> = {}) =>
  startTestArbiter({
    admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
    ...raw,
  });
const admin = (method: string, path: string, body?: Uint8Array | object) => adminCall(arbiter!.url, adminToken, method, path, body);
const ask = (policy: string, context: Record<string, unknown> = {}) =>
  postJson(`${arbiter!.url}/v1/decide`, { action: 'read', resource: { type: 'doc' }, policy, context });

describe('decisions under concurrent load', () => {
  it('answers every decision with the one revision that decided it while bundles are activated and rolled back', async () => {
    arbiter = await start({ engine: { workers: 2 } });
    expect((await admin('PUT', '/v1/bundles/mix', archives.r1!)).status).toBe(201);
    let stop = false;
    const answers: Awaited<ReturnType<typeof ask>>[] = [];
    const decider = async () => {
      while (!stop) answers.push(await ask('mix'));
    };
    const flipper = async () => {
      expect((await admin('PUT', '/v1/bundles/mix', archives.r2!)).status).toBe(201);
      for (let i = 0; i < 8; i++) {
        const revision = i % 2 === 0 ? 'r1' : 'r2';
        expect((await admin('POST', '/v1/bundles/mix/activate', { revision })).status).toBe(200);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      stop = true;
    };
    await Promise.all([flipper(), ...Array.from({ length: 16 }, decider)]);
    expect(answers.filter((a) => a.status !== 200)).toEqual([]);
    const bad = answers.filter((a) => {
      const reason = a.body!.reasons[0] as { rule?: string; data?: string };
      return !a.body!.allow || reason.rule !== a.body!.policy.revision || reason.data !== a.body!.policy.revision;
    });
    expect(bad.map((a) => a.body)).toEqual([]);
    const revisions = new Set(answers.map((a) => a.body!.policy.revision as string));
    expect(revisions).toEqual(new Set(['r1', 'r2']));
    // The decision log records the revision that answered.
    for (const answer of answers.filter((_, i) => i % 7 === 0)) {
      const record = await admin('GET', `/v1/decisions/${answer.body!.decision_id}`);
      expect(record.body).toMatchObject({ revision: answer.body!.policy.revision, data_version: answer.body!.data_version });
    }
  }, 60_000);

  it('never lets a decision see half a live data update, and records the version it saw', async () => {
    arbiter = await start({ engine: { workers: 2 } });
    expect((await admin('PUT', '/v1/bundles/mix', archives.r1!)).status).toBe(201);
    const written = new Map<number, number>();
    let stop = false;
    const writer = async () => {
      for (let i = 1; i <= 60; i++) {
        const response = i % 2 === 0 ? await admin('PUT', '/v1/data/pair', { a: i, b: i, big: 'x'.repeat(i * 1000) }) : await admin('PATCH', '/v1/data/pair', [
          { op: 'replace', path: '/a', value: i },
          { op: 'replace', path: '/b', value: i },
        ]);
        if (i === 1) expect(response.status).toBe(404);
        else {
          expect(response.status).toBe(200);
          written.set(response.body!.version as number, i);
        }
      }
      stop = true;
    };
    const answers: Awaited<ReturnType<typeof ask>>[] = [];
    const decider = async () => {
      while (!stop) answers.push(await ask('mix'));
    };
    await Promise.all([writer(), ...Array.from({ length: 16 }, decider)]);
    expect(answers.filter((a) => a.status !== 200)).toEqual([]);
    const seen = answers.filter((a) => a.body!.reasons[0].pair !== null);
    expect(seen.length).toBeGreaterThan(50);
    const torn = seen.filter((a) => {
      const { pair } = a.body!.reasons[0] as { pair: { a: number; b: number; big?: string } };
      return pair.a !== pair.b || written.get(a.body!.data_version as number) !== pair.a;
    });
    expect(torn.map((a) => ({ version: a.body!.data_version, pair: { ...a.body!.reasons[0].pair, big: undefined } }))).toEqual([]);
    for (const answer of seen.filter((_, i) => i % 11 === 0)) {
      const record = await admin('GET', `/v1/decisions/${answer.body!.decision_id}`);
      expect(record.body).toMatchObject({ data_version: answer.body!.data_version, revision: 'r1' });
    }
  }, 60_000);

  it('denies only the runaway evaluations: innocent decisions queued behind them are answered', async () => {
    arbiter = await start({ engine: { workers: 1, deadline_ms: 300 } });
    expect((await admin('PUT', '/v1/data/pair', { a: 1, b: 1 })).status).toBe(200);
    // Warm: the modules are loaded, so evaluations are sent to the worker behind the runaways.
    expect((await ask('echo')).body).toMatchObject({ allow: true });
    expect((await ask('spin', { quick: true })).body).toMatchObject({ allow: true });
    const runaways = Array.from({ length: 3 }, () => ask('spin', { spin: true }));
    const innocent = Array.from({ length: 30 }, (_, i) => (i % 2 === 0 ? ask('echo') : ask('spin', { quick: true })));
    const answered = await Promise.all(innocent);
    expect(answered.filter((a) => a.status !== 200 || a.body!.allow !== true).map((a) => a.body!.reasons[0].code)).toEqual([]);
    expect((await Promise.all(runaways)).map((a) => [a.status, a.body!.reasons[0].code])).toEqual(Array(3).fill([200, 'policy_timeout']));
    // The replacement worker has every bundle and the current live data.
    expect((await admin('PUT', '/v1/data/pair', { a: 2, b: 2 })).status).toBe(200);
    expect((await ask('echo')).body).toMatchObject({ allow: true, reasons: [{ pair: { a: 2, b: 2 } }] });
    expect((await ask('spin', { quick: true })).body).toMatchObject({ allow: true });
  }, 60_000);

  it('denies memory hogs with policy_resource_limit while good decisions run beside them', async () => {
    arbiter = await start({ engine: { workers: 2, max_memory_mb: 16, deadline_ms: 30_000 } });
    const hogs = Array.from({ length: 4 }, () => ask('spin', { hog: true }));
    const good = Array.from({ length: 30 }, () => ask('echo'));
    for (const hog of await Promise.all(hogs)) expect(hog).toMatchObject({ status: 200, body: { allow: false, reasons: [{ code: 'policy_resource_limit' }] } });
    for (const answer of await Promise.all(good)) expect(answer).toMatchObject({ status: 200, body: { allow: true } });
  }, 60_000);

  it('answers decisions queued for a bundle that is removed meanwhile, and denies the ones after', async () => {
    // The spin policy also grows memory as it loops: over 2 s it can reach the default ceiling
    // first, so the ceiling is raised for the deadline to be what stops it.
    arbiter = await start({ engine: { workers: 1, deadline_ms: 2000, max_memory_mb: 2048 } });
    expect((await admin('PUT', '/v1/bundles/mix', archives.r1!)).status).toBe(201);
    expect((await ask('mix')).body).toMatchObject({ allow: true });
    // The only worker is held by a runaway, so the decisions below wait for it with revision r1 picked.
    const runaway = ask('spin', { spin: true });
    await new Promise((resolve) => setTimeout(resolve, 100));
    const queued = Array.from({ length: 20 }, () => ask('mix'));
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect((await admin('DELETE', '/v1/bundles/mix')).status).toBe(204);
    const after = await ask('mix');
    for (const answer of await Promise.all(queued)) expect(answer).toMatchObject({ status: 200, body: { policy: { bundle: 'mix', revision: 'r1' } } });
    expect(after).toMatchObject({ status: 503, body: { allow: false, reasons: [{ code: 'no_active_bundle' }] } });
    expect((await runaway).body).toMatchObject({ reasons: [{ code: 'policy_timeout' }] });
    expect(arbiter!.bundles.get('mix')).toBeUndefined();
  }, 60_000);

  it('shuts down under load: every request is answered (no 500) or cut, and close settles', async () => {
    arbiter = await start({ engine: { workers: 2 } });
    const requests = Array.from({ length: 200 }, (_, i) =>
      ask(i % 3 === 0 ? 'spin' : 'echo', i % 3 === 0 ? { quick: true } : {}).then(
        (answer) => answer.status,
        () => 'cut' as const,
      ),
    );
    await new Promise((resolve) => setTimeout(resolve, 30));
    const closing = arbiter.close();
    const statuses = await Promise.all(requests);
    await closing;
    arbiter = undefined;
    expect(statuses.filter((status) => status !== 200 && status !== 'cut' && status !== 503)).toEqual([]);
  }, 60_000);
});
