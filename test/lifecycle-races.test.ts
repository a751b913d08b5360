import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import type { Arbiter } from '../src/server/start.ts';
import { adminCall, startTestArbiter, tempDir } from './support/arbiter.ts';
import { build, writeBundleSource } from './support/bundle-sources.ts';
import { TestIssuer } from './support/issuer.ts';
import { stopWorkersAtNextCheck } from './support/worker-crash.ts';

/**
 * Bundle changes racing live data writes, made deterministic by holding the evaluation worker's
 * module check (what every push and activation waits for) until the test lets it go.
 */
let admins: TestIssuer;
let adminToken: string;
let arbiter: Arbiter | undefined;
let archive: Uint8Array;

beforeAll(async () => {
  admins = await TestIssuer.create('https://admins.test.example');
  await admins.serve();
  adminToken = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.write arbiter.bundles.read arbiter.data.write arbiter.data.read' }, { exp: Math.floor(Date.now() / 1000) + 3000 });
  const dir = tempDir('arbiter-lifecycle-races-');
  // Its root is below the document "acl": the document is live data above the bundle's root.
  const src = writeBundleSource(dir, 'gate', { extraRoots: ['acl/admins'], decision: '{"allow": allow, "reasons": [{"code": "gate"}]}' });
  writeFileSync(join(src, 'allow.rego'), 'package gate\n\ndefault allow := false\n\nallow if data.acl.users[input.context.user] == true\n');
  writeFileSync(join(src, 'data.json'), JSON.stringify({ acl: { admins: { root: true } } }));
  archive = new Uint8Array(build(src, join(dir, 'gate.tar.gz'), 'r1'));
}, 60_000);

afterAll(async () => {
  await admins?.close();
});

afterEach(async () => {
  await arbiter?.close();
  arbiter = undefined;
});

/** Once armed, holds the next module check sent to an evaluation worker until `release`; `sent` resolves when it is held. */
function holdNextCheck(): { arm: () => void; sent: Promise<void>; release: () => void; dispose: () => void } {
  const sent = Promise.withResolvers<void>();
  const released = Promise.withResolvers<void>();
  let armed = false;
  let held = false;
  const onWorker = (worker: Worker) => {
    const post = worker.postMessage.bind(worker);
    worker.postMessage = (message: { type?: string }, ...rest: never[]) => {
      if (message?.type === 'check' && armed && !held) {
        held = true;
        sent.resolve();
        void released.promise.then(() => post(message, ...rest));
        return;
      }
      post(message, ...rest);
    };
  };
  process.on('worker', onWorker);
  return { arm: () => void (armed = true), sent: sent.promise, release: released.resolve, dispose: () => void process.off('worker', onWorker) };
}

it('never lets a push own a live document written while the push was being checked', async () => {
  const hold = holdNextCheck();
  try {
    arbiter = await startTestArbiter({
      admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
      engine: { workers: 1 },
    });
    const admin = (method: string, path: string, body?: Uint8Array | object) => adminCall(arbiter!.url, adminToken, method, path, body);
    hold.arm();
    const push = admin('PUT', '/v1/bundles/gate', archive);
    await hold.sent;
    // The push has passed its live data check and waits for its module check: a feed writes now.
    const write = await admin('PUT', '/v1/data/acl', { users: { alice: true } });
    hold.release();
    const pushed = await push;
    // Refused as it would be a moment later, under the active bundle: never a bundle that
    // freezes a document a feed has just written (its later writes refused).
    expect(write).toMatchObject({ status: 409, body: { code: 'data_path_owned_by_bundle' } });
    expect(write.body!.detail).toContain('bundle gate');
    expect(pushed.status).toBe(201);
    // Written elsewhere, and here once the bundle is gone: the claim ended with the push.
    expect((await admin('PUT', '/v1/data/other', { a: 1 })).status).toBe(200);
    expect((await admin('DELETE', '/v1/bundles/gate')).status).toBe(204);
    expect((await admin('PUT', '/v1/data/acl', { users: { alice: true } })).status).toBe(200);
  } finally {
    hold.dispose();
  }
}, 60_000);

it('lets live data be written under the roots again once a push is refused', async () => {
  const crash = stopWorkersAtNextCheck();
  const admin = (method: string, path: string, body?: Uint8Array | object) => adminCall(arbiter!.url, adminToken, method, path, body);
  try {
    arbiter = await startTestArbiter({
      admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
      engine: { workers: 1 },
    });
    crash.arm();
    // The worker checking the module stops twice: the push is answered 503, nothing changed.
    expect(await admin('PUT', '/v1/bundles/gate', archive)).toMatchObject({ status: 503, body: { check: 'wasm_check_interrupted' } });
  } finally {
    crash.dispose();
  }
  expect((await admin('PUT', '/v1/data/acl', { users: { alice: true } })).status).toBe(200);
}, 60_000);
