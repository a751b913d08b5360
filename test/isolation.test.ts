import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readBundleArchive } from '../src/policy/archive.ts';
import type { Arbiter } from '../src/server/start.ts';
import { capturingLogger, postJson, startTestArbiter, tempDir } from './support/arbiter.ts';
import { build, writeBundleSource } from './support/bundle-sources.ts';
import { LOOP_FOREVER, loopWhenFirstParamOver, packFiles, prefixExportedFunction } from './support/hostile-archives.ts';
import { TestIssuer } from './support/issuer.ts';

/** A runaway policy costs one deny, never the server (issue #7, isolation). */
let arbiter: Arbiter | undefined;
const ask = (policy: string, context: Record<string, unknown> = {}) =>
  postJson(`${arbiter!.url}/v1/decide`, { action: 'read', resource: { type: 'doc' }, policy, context });

afterEach(async () => {
  await arbiter?.close();
  arbiter = undefined;
});

describe('evaluation isolation', () => {
  it('denies a looping evaluation with policy_timeout while other requests keep being answered', async () => {
    arbiter = await startTestArbiter({ engine: { workers: 1, deadline_ms: 250, max_memory_mb: 2048 } });
    const looping = ask('spin', { spin: true });
    const others = Array.from({ length: 5 }, () => ask('echo'));
    expect((await looping).body).toMatchObject({ allow: false, reasons: [{ code: 'policy_timeout' }], policy: { bundle: 'spin' } });
    for (const other of await Promise.all(others)) expect(other.body).toMatchObject({ allow: true });
    expect((await ask('spin', { quick: true })).body).toMatchObject({ allow: true, reasons: [{ code: 'quick' }] });
  });

  it('names the bundle and revision, not only the digest, when it logs a runaway evaluation', async () => {
    const { logger, lines } = capturingLogger();
    arbiter = await startTestArbiter({ engine: { workers: 1, deadline_ms: 250, max_memory_mb: 2048 } }, { logger });
    const spin = arbiter.bundles.get('spin')!;
    expect((await ask('spin', { spin: true })).body).toMatchObject({ reasons: [{ code: 'policy_timeout' }] });
    expect(lines.find((line) => line.msg === 'policy evaluation exceeded its deadline; restarting its worker')).toMatchObject({
      digest: spin.digest,
      bundle: 'spin',
      revision: spin.revision,
    });
  });

  it('names the bundle and revision when an instance cannot take the live data', async () => {
    const { logger, lines } = capturingLogger();
    const admins = await TestIssuer.create('https://admins.test.example');
    await admins.serve();
    try {
      arbiter = await startTestArbiter(
        { admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] }, engine: { workers: 1, max_memory_mb: 4 } },
        { logger },
      );
      const echo = arbiter.bundles.get('echo')!;
      expect((await ask('echo')).body).toMatchObject({ allow: true });
      const token = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.data.write' });
      const put = await fetch(`${arbiter.url}/v1/data/big`, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ blob: 'x'.repeat(6 * 1024 * 1024) }) });
      expect(put.status).toBe(200);
      expect((await ask('echo')).body).toMatchObject({ allow: false, reasons: [{ code: 'policy_resource_limit' }] });
      const logged = lines.filter((line) => line.level >= 50 && line.digest === echo.digest);
      expect(logged.length).toBeGreaterThan(0);
      for (const line of logged) expect(line, line.msg).toMatchObject({ bundle: 'echo', revision: echo.revision });
    } finally {
      await admins.close();
    }
  });

  it('denies an evaluation that outgrows its memory ceiling with policy_resource_limit', async () => {
    arbiter = await startTestArbiter({ engine: { workers: 1, deadline_ms: 30_000, max_memory_mb: 16 } });
    expect((await ask('spin', { hog: true })).body).toMatchObject({ allow: false, reasons: [{ code: 'policy_resource_limit' }] });
    expect((await ask('spin', { quick: true })).body).toMatchObject({ allow: true });
    expect((await fetch(`${arbiter.url}/healthz`)).status).toBe(200);
  });
});

/**
 * Hand-patched modules whose own runtime code never returns while Arbiter loads them or sets
 * live data in them: no `opa build` output does this, but a pushed bundle can. The worker is
 * replaced after engine.load_deadline_ms, and the revision denies policy_timeout.
 */
describe('a module that hangs outside evaluation', () => {
  let admins: TestIssuer;
  let token: string;
  let hangsOnLoad: Buffer;
  let hangsOnBigData: Buffer;
  let hangsInTables: Buffer;

  beforeAll(async () => {
    admins = await TestIssuer.create('https://admins.test.example');
    await admins.serve();
    token = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.write arbiter.data.write' });
    const dir = tempDir('arbiter-isolation-');
    const patched = async (name: string, exportName: string, instructions: number[]) => {
      const files = await readBundleArchive(new Uint8Array(build(writeBundleSource(dir, name), join(dir, `${name}.tar.gz`), `${name}-1`)));
      return packFiles(new Map(files).set('policy.wasm', prefixExportedFunction(files.get('policy.wasm')!, exportName, instructions)));
    };
    // opa-wasm reads the heap pointer once it has parsed the (empty) data into a new instance.
    hangsOnLoad = await patched('hang', 'opa_heap_ptr_get', LOOP_FOREVER);
    // Allocating room for a data document over 64 KiB never returns: loads, then hangs on a big update.
    hangsOnBigData = await patched('bigdata', 'opa_malloc', loopWhenFirstParamOver(64 * 1024));
    // The static checks of a pushed module read its entrypoint table by calling it.
    hangsInTables = await patched('tables', 'entrypoints', LOOP_FOREVER);
  }, 60_000);

  afterAll(async () => {
    await admins?.close();
  });

  const start = (engine: Record<string, unknown> = {}) =>
    startTestArbiter({
      admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
      engine: { workers: 1, load_deadline_ms: 1000, ...engine },
    });
  const call = async (method: string, path: string, body: Uint8Array | object) => {
    const raw = body instanceof Uint8Array;
    const response = await fetch(`${arbiter!.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': raw ? 'application/gzip' : 'application/json' },
      body: raw ? new Uint8Array(body) : JSON.stringify(body),
    });
    return { status: response.status, body: (await response.json()) as Record<string, any> };
  };

  it('refuses a pushed bundle whose module never finishes loading, and keeps deciding', async () => {
    arbiter = await start();
    const pushed = await call('PUT', '/v1/bundles/hang', hangsOnLoad);
    expect(pushed).toMatchObject({ status: 422, body: { check: 'smoke_evaluation' } });
    expect(pushed.body.detail).toContain('policy_timeout');
    expect((await ask('echo')).body).toMatchObject({ allow: true });
    // The next push of the same bytes is refused too, not left hanging.
    expect((await call('PUT', '/v1/bundles/hang', hangsOnLoad)).status).toBe(422);
    expect((await ask('echo')).body).toMatchObject({ allow: true });
  });

  it('refuses a pushed bundle whose entrypoint table never returns, without stopping the server', async () => {
    arbiter = await start();
    const pushed = call('PUT', '/v1/bundles/tables', hangsInTables);
    // The check runs on a worker: the main thread keeps answering while it hangs.
    expect((await ask('echo')).body).toMatchObject({ allow: true });
    expect(await pushed).toMatchObject({ status: 422, body: { check: 'wasm_timeout' } });
    expect((await ask('echo')).body).toMatchObject({ allow: true });
  });

  it('does not deny a decision queued behind a pushed module hanging in its check', async () => {
    arbiter = await start({ deadline_ms: 250 });
    // Warm: the echo module is loaded on the only worker, so an evaluation is sent to it at once.
    expect((await ask('echo')).body).toMatchObject({ allow: true });
    const pushed = call('PUT', '/v1/bundles/tables', hangsInTables);
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Queued behind the hanging check, an evaluation must not be charged for the check's time.
    expect((await ask('echo')).body).toMatchObject({ allow: true });
    expect(await pushed).toMatchObject({ status: 422, body: { check: 'wasm_timeout' } });
  });

  it('denies a revision that hangs taking live data with policy_timeout, until the data changes', async () => {
    arbiter = await start();
    expect((await call('PUT', '/v1/bundles/bigdata', hangsOnBigData)).status).toBe(201);
    expect((await ask('bigdata')).body).toMatchObject({ allow: true });
    expect((await call('PUT', '/v1/data/big', { blob: 'x'.repeat(100 * 1024) })).status).toBe(200);
    expect((await ask('bigdata')).body).toMatchObject({ allow: false, reasons: [{ code: 'policy_timeout' }] });
    expect((await ask('echo')).body).toMatchObject({ allow: true });
    // Smaller data is a new version: the revision is loaded again, and takes it.
    expect((await call('PUT', '/v1/data/big', { blob: 'small' })).status).toBe(200);
    expect((await ask('bigdata')).body).toMatchObject({ allow: true });
  });
});
