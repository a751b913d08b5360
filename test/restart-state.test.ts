import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadOrCreateDevIssuerKey, mintDevToken } from '../src/tokens/dev-issuer.ts';
import { adminCall, postJson, tempDir } from './support/arbiter.ts';
import { build, writeBundleSource } from './support/bundle-sources.ts';

/**
 * What an operator relies on across a kill -9 of the real CLI server, and across a restart
 * with a changed configuration: the revisions last activated serve, live data versions (ETags)
 * never go back, acknowledged revocations stay in force, the decision log verifies.
 */
type Json = Record<string, any>;

interface Served {
  child: ChildProcess;
  url: string;
  logged: Json[];
}

const children: ChildProcess[] = [];
let dir: string;
let keyFile: string;
let admin: string;
const archives: Record<string, Buffer> = {};

beforeAll(async () => {
  dir = tempDir('arbiter-restart-');
  keyFile = join(dir, 'dev.jwk.json');
  admin = await mintDevToken(await loadOrCreateDevIssuerKey(keyFile), {
    sub: 'ops@example',
    scope: 'arbiter.bundles.read arbiter.bundles.write arbiter.data.read arbiter.data.write arbiter.revocations.read arbiter.revocations.write arbiter.decisions.read',
  });
  const src = writeBundleSource(dir, 'rs');
  for (const revision of ['r1', 'r2', 'r3']) archives[revision] = build(src, join(dir, `${revision}.tar.gz`), revision);
  archives.echo2 = build('test/fixtures/rego/echo', join(dir, 'echo-2.tar.gz'), 'echo-2');
}, 60_000);

afterAll(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

/** A configuration with all its state in `state`, `bundles` and `decisionLog` merged over its sections. */
function writeConfig(state: string, { bundles = {}, decisionLog = {} }: { bundles?: Json; decisionLog?: Json } = {}): string {
  const file = join(state, `arbiter-${Math.random().toString(36).slice(2)}.yaml`);
  const config = {
    mode: 'development',
    server: { host: '127.0.0.1', port: 0 },
    dev_issuer: { enabled: true, key_file: keyFile },
    admin: { allow_dev_issuer: true },
    bundles: { dir: inject('bundlesDir'), default: 'echo', store: join(state, 'store'), ...bundles },
    data: { path: join(state, 'data.db') },
    decision_log: { path: join(state, 'decisions.db'), ...decisionLog },
  };
  writeFileSync(file, JSON.stringify(config));
  return file;
}

/** `arbiter serve`, once it logs that it listens, with its log lines. */
async function serve(configFile: string): Promise<Served> {
  const child = spawn(process.execPath, ['src/cli/main.ts', 'serve', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const logged: Json[] = [];
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`arbiter serve exited with ${code}: ${stderr}`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const entry = JSON.parse(line) as Json;
      logged.push(entry);
      if (entry.msg === 'arbiter listening') resolve(entry.url as string);
    });
  });
  return { child, url, logged };
}

async function kill9({ child }: Served): Promise<void> {
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

async function decide(served: Served, bundle: string): Promise<{ status: number; body: Json }> {
  const { status, body } = await postJson(`${served.url}/v1/decide`, { action: 'read', resource: { type: 'doc' }, policy: bundle });
  return { status, body: body! };
}

async function revisionOf(served: Served, bundle: string): Promise<string | undefined> {
  return (await decide(served, bundle)).body.policy?.revision as string | undefined;
}

async function until(condition: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('a kill -9', () => {
  it('keeps the revision activated last, the live data version and every acknowledged revocation; a second server stops naming the file', async () => {
    const state = tempDir();
    const config = writeConfig(state);
    let served = await serve(config);
    for (const revision of ['r1', 'r2', 'r3']) expect((await adminCall(served.url, admin, 'PUT', '/v1/bundles/rs', archives[revision])).status).toBe(201);
    const written = await fetch(`${served.url}/v1/data/notes`, { method: 'PUT', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: '{"a": 1}' });
    expect(written.status).toBe(200);
    const etag = written.headers.get('etag')!;
    const revoked = await adminCall(served.url, admin, 'POST', '/v1/revocations', { revocations: Array.from({ length: 20 }, (_, i) => ({ kind: 'sub', value: `user:${i}`, reason: 'left' })) });
    expect(revoked.status).toBe(201);
    const ids = (revoked.body!.revocations as { id: string }[]).map((entry) => entry.id);
    const single = await adminCall(served.url, admin, 'POST', '/v1/revocations', { kind: 'jti', value: 'stolen', reason: 'stolen' });
    expect(single.status).toBe(201);
    ids.push(single.body!.id as string);

    // While it runs, a second server on the same files stops at once, naming the key and the file.
    const second = spawn(process.execPath, ['src/cli/main.ts', 'serve', '--config', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    second.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    expect((await once(second, 'exit'))[0]).toBe(2);
    expect(stderr).toContain(`data.path: ${join(state, 'data.db')} is in use by another Arbiter process`);

    await kill9(served);
    served = await serve(config);
    expect(await revisionOf(served, 'rs')).toBe('r3');
    const read = await fetch(`${served.url}/v1/data/notes`, { headers: { authorization: `Bearer ${admin}` } });
    expect(read.headers.get('etag')).toBe(etag);
    expect(await read.json()).toMatchObject({ result: { a: 1 } });
    for (const id of ids) expect((await adminCall(served.url, admin, 'GET', `/v1/revocations/${id}`)).status).toBe(200);
    // A rollback, then a kill -9 in the middle of activating r2 again: its archive written, the index not yet.
    expect((await adminCall(served.url, admin, 'POST', '/v1/bundles/rs/activate', { revision: 'r1' })).status).toBe(200);
    await kill9(served);
    writeFileSync(join(state, 'store', 'rs', `.index.json.${Math.random().toString(36).slice(2)}.tmp`), '{"name": "rs", "revi');

    served = await serve(config);
    expect(await revisionOf(served, 'rs')).toBe('r1');
    expect(served.logged.find((line) => line.msg === 'bundle activated' && line.bundle === 'rs')).toMatchObject({ revision: 'r1' });
    expect((await adminCall(served.url, admin, 'GET', '/v1/bundles/rs')).body).toMatchObject({ active: { revision: 'r1' } });
    expect(readdirSync(join(state, 'store', 'rs')).filter((file) => file.endsWith('.tmp'))).toEqual([]);
    // The version goes on from where it was: the tag read before the kill matches once, then never again.
    const put = (headers: Record<string, string>) =>
      fetch(`${served.url}/v1/data/notes`, { method: 'PUT', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json', ...headers }, body: '{"a": 2}' });
    const next = await put({ 'if-match': etag });
    expect(next.status).toBe(200);
    expect(Number(JSON.parse(next.headers.get('etag')!))).toBe(Number(JSON.parse(etag)) + 1);
    expect((await put({ 'if-match': etag })).status).toBe(412);
    await kill9(served);
  });

  it('keeps a rollback to the embedded revision, over the bundle a new image embeds', async () => {
    const state = tempDir();
    let served = await serve(writeConfig(state));
    const embedded = (await revisionOf(served, 'echo'))!;
    expect((await adminCall(served.url, admin, 'PUT', '/v1/bundles/echo', archives.echo2)).status).toBe(201);
    expect((await adminCall(served.url, admin, 'POST', '/v1/bundles/echo/activate', { revision: embedded })).status).toBe(200);
    await kill9(served);
    const image = join(state, 'image');
    mkdirSync(image);
    build('test/fixtures/rego/echo', join(image, 'echo.tar.gz'), 'echo-3');
    served = await serve(writeConfig(state, { bundles: { dir: image } }));
    expect(await revisionOf(served, 'echo')).toBe(embedded);
    await kill9(served);
  });
});

describe('a restart with a changed configuration', () => {
  it('a pulled bundle keeps serving from the store when its source is removed, until a moved source serves another', async () => {
    const state = tempDir();
    const sources = await Promise.all(
      [archives.r2!, archives.r3!].map(async (archive) => {
        const server = createServer((_request, response) => response.writeHead(200, { 'content-type': 'application/gzip' }).end(archive));
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
        return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/rs.tar.gz`, server };
      }),
    );
    const pulling = (url: string) => ({ bundles: { sources: [{ name: 'rs', url, poll_interval_s: 1 }] } });
    try {
      let served = await serve(writeConfig(state, pulling(sources[0]!.url)));
      await until(async () => (await revisionOf(served, 'rs')) === 'r2', 'the first pull');
      await kill9(served);
      served = await serve(writeConfig(state));
      expect(await revisionOf(served, 'rs')).toBe('r2');
      await kill9(served);
      served = await serve(writeConfig(state, pulling(sources[1]!.url)));
      await until(async () => (await revisionOf(served, 'rs')) === 'r3', 'the moved source');
      await kill9(served);
    } finally {
      for (const { server } of sources) server.close();
    }
  });

  it('a decision log whose retention is shortened and checkpoints changed after a kill -9 still verifies', async () => {
    const state = tempDir();
    const auditor = (served: Served, path: string) => adminCall(served.url, admin, 'GET', path);
    let served = await serve(writeConfig(state, { decisionLog: { checkpoint: { every_records: 7 } } }));
    for (let i = 0; i < 30; i++) expect((await decide(served, 'echo')).status).toBe(200);
    await kill9(served);
    served = await serve(writeConfig(state, { decisionLog: { checkpoint: { every_records: 50 }, retention: { max_records: 10 } } }));
    // Retention runs at start-up.
    await until(async () => (await auditor(served, '/v1/decisions?limit=1000')).body!.decisions.length === 10, 'retention at start-up');
    for (let i = 0; i < 5; i++) await decide(served, 'echo');
    expect((await auditor(served, '/v1/decisions/verify')).body).toMatchObject({ ok: true });
    await kill9(served);
    served = await serve(writeConfig(state, { decisionLog: { checkpoint: { every_records: 3 } } }));
    for (let i = 0; i < 10; i++) await decide(served, 'echo');
    expect((await auditor(served, '/v1/decisions/verify')).body).toMatchObject({ ok: true });
    expect((await auditor(served, '/v1/decisions?limit=1000')).body!.decisions).toHaveLength(25);
    await kill9(served);
  });

  it('a stored active revision that signatures now refuse is not served, nor replaced by the embedded one', async () => {
    const state = tempDir();
    let served = await serve(writeConfig(state));
    expect((await adminCall(served.url, admin, 'PUT', '/v1/bundles/echo', archives.echo2)).status).toBe(201);
    await kill9(served);
    served = await serve(writeConfig(state, { bundles: { require_signatures: true } }));
    expect(await decide(served, 'echo')).toMatchObject({ status: 503, body: { allow: false, reasons: [{ code: 'no_active_bundle' }] } });
    expect(served.logged.find((line) => line.msg === 'stored bundle refused: it is not served until a revision is activated or pushed')).toMatchObject({
      bundle: 'echo',
      check: 'signature_missing',
    });
    expect((await fetch(`${served.url}/readyz`)).status).toBe(503);
    // Nothing was deleted: with signatures optional again, it serves.
    await kill9(served);
    served = await serve(writeConfig(state));
    expect(await revisionOf(served, 'echo')).toBe('echo-2');
    await kill9(served);
  });
});
