import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Arbiter } from '../src/server/start.ts';
import { adminCall, startTestArbiter, tempDir } from './support/arbiter.ts';
import { build, writeBundleSource } from './support/bundle-sources.ts';
import { TestIssuer } from './support/issuer.ts';

/**
 * A chaos run: a few hundred decisions in flight while bundles are pushed, activated and rolled
 * back, grants are written and removed, tokens are revoked, evaluation workers crash and the
 * issuer rotates its keys. No answer may be a 500, no decision that started after a removal or
 * revocation was acknowledged may allow, and every decision is recorded once, with the revision
 * that answered it.
 */
let admins: TestIssuer;
let idp: TestIssuer;
let arbiter: Arbiter;
let adminToken: string;
const archives: Record<string, Uint8Array> = {};
/** The evaluation workers this process starts: those sent live data. */
const workers = new Set<Worker>();
const onWorker = (worker: Worker) => {
  const post = worker.postMessage.bind(worker);
  worker.postMessage = (message: { type?: string }, ...rest: never[]) => {
    if (message?.type === 'data') workers.add(worker);
    post(message, ...rest);
  };
};
process.on('worker', onWorker);

beforeAll(async () => {
  [admins, idp] = await Promise.all([TestIssuer.create('https://admins.test.example'), TestIssuer.create('https://idp.test.example')]);
  await Promise.all([admins.serve(), idp.serve()]);
  adminToken = await admins.sign(
    { sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.write arbiter.bundles.read arbiter.data.write arbiter.revocations.write arbiter.decisions.read' },
    { exp: Math.floor(Date.now() / 1000) + 3000 },
  );
  const dir = tempDir('arbiter-chaos-');
  for (const revision of ['g1', 'g2', 'g3']) {
    const src = writeBundleSource(dir, 'grants', { decision: `{"allow": allow, "reasons": [{"code": "rev", "rule": "${revision}"}]}` });
    writeFileSync(
      join(src, 'allow.rego'),
      'package grants\n\ndefault allow := false\n\nallow if {\n\tnot input.subject.revoked.revoked\n\tinput.subject.authenticated\n\tdata.access[input.subject.sub] == true\n}\n',
    );
    archives[revision] = new Uint8Array(build(src, join(dir, `grants-${revision}.tar.gz`), revision));
  }
  arbiter = await startTestArbiter({
    issuers: [{ issuer: idp.issuer, jwks_uri: idp.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'], jwks_cooldown_s: 1 }],
    admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
    bundles: { default: 'grants' },
    engine: { workers: 2 },
  });
}, 60_000);

afterAll(async () => {
  await arbiter?.close();
  await Promise.all([admins?.close(), idp?.close()]);
});

const admin = (method: string, path: string, body?: Uint8Array | object) => adminCall(arbiter.url, adminToken, method, path, body);

interface Asked {
  user: string;
  token: string;
  started: number;
  status: number;
  body: Record<string, any>;
}

it('keeps every answer right while everything changes at once', async () => {
  expect((await admin('PUT', '/v1/bundles/grants', archives.g1!)).status).toBe(201);
  const users = Array.from({ length: 40 }, (_, i) => `user:${i}`);
  expect((await admin('PUT', '/v1/data/access', Object.fromEntries(users.map((u) => [u, true])))).status).toBe(200);
  const tokens = new Map<string, string>();
  for (const [i, user] of users.entries()) {
    tokens.set(user, await idp.sign({ sub: user, jti: `jti-${i}`, sid: `sid-${i}`, client_id: `client-${i}` }));
  }
  // Times (performance.now) at which a user's access was taken away, by the acknowledgement.
  const removedAt = new Map<string, number>();
  const revokedUsers = new Map<string, number>();
  /** Tokens signed with the key published during the run. */
  const rotated = new Set<string>();
  let stop = false;
  const asked: Asked[] = [];
  let seq = 0;
  let stopped = 0;
  const decider = async () => {
    while (!stop) {
      const user = users[seq++ % users.length]!;
      const token = tokens.get(user)!;
      const started = performance.now();
      const response = await fetch(`${arbiter.url}/v1/decide`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token, action: 'read', resource: { type: 'doc' } }),
      });
      const text = await response.text();
      asked.push({ user, token, started, status: response.status, body: JSON.parse(text) as Record<string, any> });
    }
  };
  const bundles = async () => {
    expect((await admin('PUT', '/v1/bundles/grants', archives.g2!)).status).toBe(201);
    for (let i = 0; i < 10 && !stop; i++) {
      expect((await admin('POST', '/v1/bundles/grants/activate', { revision: i % 2 === 0 ? 'g1' : 'g2' })).status).toBe(200);
    }
    expect((await admin('PUT', '/v1/bundles/grants', archives.g3!)).status).toBe(201);
  };
  const data = async () => {
    for (const [i, user] of users.slice(0, 15).entries()) {
      const op = i % 3;
      const response =
        op === 0
          ? await admin('DELETE', `/v1/data/access/${encodeURIComponent(user)}`)
          : op === 1
            ? await admin('PATCH', '/v1/data/access', [{ op: 'remove', path: `/${user}` }])
            : await admin('PUT', `/v1/data/access/${encodeURIComponent(user)}`, { removed: true });
      expect([200, 204]).toContain(response.status);
      removedAt.set(user, performance.now());
    }
  };
  const revocations = async () => {
    const kinds = ['sub', 'jti', 'sid', 'client_id'] as const;
    for (const [i, user] of users.slice(20, 32).entries()) {
      const n = 20 + i;
      const kind = kinds[i % kinds.length]!;
      const value = { sub: user, jti: `jti-${n}`, sid: `sid-${n}`, client_id: `client-${n}` }[kind];
      const response = await admin('POST', '/v1/revocations', { kind, value, iss: idp.issuer, reason: 'chaos' });
      expect(response.status).toBe(201);
      revokedUsers.set(user, performance.now());
    }
  };
  const crashes = async () => {
    try {
      for (let i = 0; i < 3 && !stop; i++) {
        await new Promise((resolve) => setTimeout(resolve, 150));
        const live = [...workers].filter((w) => w.threadId !== -1);
        const victim = live.at(-1);
        if (victim) {
          await victim.terminate();
          stopped += 1;
        }
      }
    } finally {
      process.off('worker', onWorker);
    }
  };
  const rotation = async () => {
    // The issuer publishes a new key and signs with it from now on, for users revoked and not.
    await idp.addKey('key-2');
    await new Promise((resolve) => setTimeout(resolve, 1100)); // past jwks_cooldown_s: the unknown kid fetches the key set
    for (const [i, user] of users.entries()) {
      if (i % 3 !== 0) continue;
      const token = await idp.sign({ sub: user, jti: `jti-${i}`, sid: `sid-${i}`, client_id: `client-${i}` }, { kid: 'key-2' });
      rotated.add(token);
      tokens.set(user, token);
    }
  };
  const changes = Promise.all([bundles(), data(), revocations(), crashes(), rotation()]);
  const deciders = Array.from({ length: 150 }, decider);
  await changes;
  // A last revocation answering a key compromise: every token issued until now.
  const cutOff = Math.floor(Date.now() / 1000) + 1;
  await new Promise((resolve) => setTimeout(resolve, 100));
  const before = await admin('POST', '/v1/revocations', { kind: 'issued_before', iss: idp.issuer, before: cutOff, reason: 'compromise' });
  expect(before.status).toBe(201);
  const compromisedAt = performance.now();
  await new Promise((resolve) => setTimeout(resolve, 300));
  stop = true;
  await Promise.all(deciders);

  expect(asked.filter((a) => a.status !== 200).map((a) => [a.status, a.body])).toEqual([]);
  const wrong = asked.filter((a) => {
    if (!a.body.allow) return false;
    const removed = removedAt.get(a.user);
    const revoked = revokedUsers.get(a.user);
    return (removed !== undefined && a.started > removed) || (revoked !== undefined && a.started > revoked) || a.started > compromisedAt;
  });
  expect(wrong.map((a) => ({ user: a.user, body: a.body }))).toEqual([]);
  expect(asked.length).toBeGreaterThan(200);
  const denied = asked.filter((a) => !a.body.allow).map((a) => a.body.reasons[0].code as string);
  // A decision whose worker is stopped twice while it waits is denied policy_error: fail closed.
  expect([...new Set(denied)].filter((code) => code !== 'rev' && code !== 'policy_error')).toEqual([]);
  expect(asked.some((a) => a.body.allow && rotated.has(a.token))).toBe(true);
  // Recorded once each, with the revision and data version that answered.
  const log = arbiter.decisionLog!;
  for (const a of asked) {
    const record = log.get(a.body.decision_id as string);
    expect(record).toMatchObject({ revision: a.body.policy.revision, data_version: a.body.data_version, result: { allow: a.body.allow } });
  }
  expect([...log.export()].length).toBe(asked.length);
  const revisions = new Set(asked.map((a) => a.body.policy.revision as string));
  expect(revisions).toContain('g1');
  expect(revisions).toContain('g3');
  expect(await log.verify()).toMatchObject({ ok: true });
  expect(stopped).toBeGreaterThan(0);
}, 120_000);
