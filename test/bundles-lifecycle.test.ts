import { appendFileSync, readdirSync } from 'node:fs';
import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parseConfig } from '../src/config/load.ts';
import { startArbiter, type Arbiter } from '../src/server/start.ts';
import { capturingLogger, postJson, startTestArbiter, tempDir } from './support/arbiter.ts';
import { readBundleArchive } from '../src/policy/archive.ts';
import { build, signingArgs, signingKey, writeBundleSource, type SigningKey } from './support/bundle-sources.ts';
import { packFiles, prefixExportedFunction } from './support/hostile-archives.ts';
import { TestIssuer } from './support/issuer.ts';
import { stopWorkersAtNextCheck } from './support/worker-crash.ts';
import { MAX_INTERRUPTED_CHECKS } from '../src/policy/pull.ts';
import { waitFor } from './support/wait.ts';

/** Response bodies are asserted field by field, so they stay loosely typed. */
 
type Json = Record<string, any>;

let admins: TestIssuer;
let dir: string;
let token: string;
const archives: Record<string, Buffer> = {};

const adminConfig = () => ({ admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] } });

async function put(arbiter: Arbiter, name: string, archive: Uint8Array) {
  const response = await fetch(`${arbiter.url}/v1/bundles/${name}`, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/gzip' }, body: new Uint8Array(archive) });
  return { status: response.status, body: (await response.json()) as Json };
}

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

/** A bundle server on 127.0.0.1 answering `path` with `handler`: its URL, and how to stop it. */
async function serveBundles(path: string, handler: RequestListener): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}${path}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/**
 * Serves `archive` at /lc.tar.gz under `etag`, answering 304 to a request that names it, and
 * counts both answers; once `gate` resolves, when given (answers wait for it).
 */
async function serveTagged(archive: Uint8Array, etag: string, gate: Promise<void> = Promise.resolve()) {
  const counts = { full: 0, notModified: 0 };
  const source = await serveBundles('/lc.tar.gz', (req, res) => {
    void gate.then(() => {
      if (req.headers['if-none-match'] === etag) return void (counts.notModified++, res.writeHead(304, { etag }).end());
      counts.full += 1;
      res.writeHead(200, { 'content-type': 'application/gzip', etag }).end(archive);
    });
  });
  return { source, counts };
}

/**
 * A server on one evaluation worker pulling p1, whose next `times` module checks never finish: as
 * each check is sent, the real worker is stopped (as a crash stops it), then its replacement as
 * soon as it is created. Armed and served once the server is up, so the checks of start-up (the
 * embedded bundles) are not the ones stopped.
 */
async function pullWithWorkerCrashes(times: number) {
  const crashes = stopWorkersAtNextCheck(times);
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const { source, counts } = await serveTagged(archives.p1!, '"p1"', released);
  const { logger, lines } = capturingLogger();
  const arbiter = await startTestArbiter({ engine: { workers: 1 }, bundles: { sources: [{ name: 'lc', url: source.url, poll_interval_s: 0.05, timeout_ms: 5000 }] } }, { logger });
  crashes.arm();
  release();
  return { crashes, source, counts, arbiter, lines };
}

beforeAll(async () => {
  admins = await TestIssuer.create('https://admins.test.example');
  await admins.serve();
  token = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.read arbiter.bundles.write' });
  dir = tempDir('arbiter-bundles-lifecycle-');
  const lc = writeBundleSource(dir, 'lc');
  for (const revision of ['u1', 'u2', 'p1', 'p2']) archives[revision] = build(lc, join(dir, `${revision}.tar.gz`), revision);
  archives.echo2 = build('test/fixtures/rego/echo', join(dir, 'echo2.tar.gz'), 'echo-2');
}, 60_000);

afterAll(async () => {
  await admins?.close();
});

describe('restart', () => {
  /** Starts a server on `store` whose log lines are kept in `lines`. */
  async function start(store: string, lines: string[]): Promise<Arbiter> {
    const config = parseConfig({
      mode: 'development',
      ...adminConfig(),
      server: { host: '127.0.0.1', port: 0 },
      bundles: { dir: inject('bundlesDir'), default: 'simple', store },
      data: { path: join(tempDir(), 'data.db') },
      // Not the default .arbiter/decisions.db: the repository's own, which `npm start` writes.
      decision_log: { path: join(tempDir(), 'decisions.db') },
    });
    return startArbiter(config, { logger: pino({ level: 'info' }, { write: (line: string) => lines.push(line) }) });
  }

  it('serves the last active revisions from the store, over the embedded ones, and refuses a tampered file', async () => {
    const store = join(tempDir(), 'bundles');
    const lines: string[] = [];
    const first = await start(store, lines);
    expect(first.bundles.get('echo')?.revision).not.toBe('echo-2');
    expect((await put(first, 'lc', archives.u1!)).status).toBe(201);
    expect((await put(first, 'echo', archives.echo2!)).status).toBe(201);
    await first.close();

    const second = await start(store, lines);
    expect(second.bundles.get('lc')?.revision).toBe('u1');
    expect(second.bundles.get('echo')?.revision).toBe('echo-2');
    expect((await second.bundleLifecycle.status('lc'))?.active).toMatchObject({ revision: 'u1', source: 'store', activated_by: 'https://admins.test.example#ops@example' });
    await second.close();

    const [stored] = readdirSync(join(store, 'lc')).filter((file) => file.endsWith('.tar.gz'));
    appendFileSync(join(store, 'lc', stored!), 'tampered');
    lines.length = 0;
    const third = await start(store, lines);
    try {
      expect(third.bundles.get('lc')).toBeUndefined();
      expect(third.bundles.get('echo')?.revision).toBe('echo-2');
      const refusal = lines.map((line) => JSON.parse(line) as Record<string, unknown>).find((entry) => entry.bundle === 'lc' && entry.level === 50);
      expect(refusal).toMatchObject({ check: 'bundle_store_digest_mismatch', msg: expect.stringContaining('stored bundle refused') });
      const decision = (await postJson(`${third.url}/v1/decide`, { policy: 'lc', action: 'read', resource: { type: 'doc' } })).body!;
      expect(decision).toMatchObject({ allow: false, reasons: [{ code: 'no_active_bundle' }] });
    } finally {
      await third.close();
    }
  });
});

describe('the embedded revision, once a push replaces it', () => {
  /** The image: a bundles.dir of its own shipping `emb` at e1 (signed by `key` at iat 2000 when given), and its sources. */
  function embeddedImage(key?: SigningKey): { src: string; bundlesDir: string; e1: Buffer } {
    const src = writeBundleSource(dir, 'emb');
    const bundlesDir = tempDir();
    return { src, bundlesDir, e1: build(src, join(bundlesDir, 'emb.tar.gz'), 'e1', key ? signingArgs(dir, key, 2000) : []) };
  }
  /** A server on `bundlesDir` and `store`, with admin access; signatures required when `key` is given. */
  function startEmbedded(bundlesDir: string, store: string, options: { key?: SigningKey; logger?: Logger } = {}): Promise<Arbiter> {
    const signed = options.key && { require_signatures: true, signing: { keys: { default: { key: options.key.publicPem, algorithm: 'RS256' } }, scope: 'write' } };
    return startTestArbiter({ ...adminConfig(), bundles: { dir: bundlesDir, default: 'emb', store, ...signed } }, options.logger ? { logger: options.logger } : {});
  }
  const newStore = () => join(tempDir(), 'bundles');
  const decidedBy = async (arbiter: Arbiter) => (await postJson(`${arbiter.url}/v1/decide`, { policy: 'emb', action: 'read', resource: { type: 'doc' } })).body!.policy?.revision as string | undefined;
  const statusOf = async (arbiter: Arbiter) => (await (await fetch(`${arbiter.url}/v1/bundles/emb`, { headers: { authorization: `Bearer ${token}` } })).json()) as Json;
  const activate = (arbiter: Arbiter, revision: string) =>
    fetch(`${arbiter.url}/v1/bundles/emb/activate`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ revision }) });

  it('is stored then, so it can be rolled back to, after a restart too', async () => {
    const { src, bundlesDir, e1 } = embeddedImage();
    const r2 = build(src, join(dir, 'emb-r2.tar.gz'), 'r2');
    const store = newStore();
    const first = await startEmbedded(bundlesDir, store);
    try {
      expect(await decidedBy(first)).toBe('e1');
      expect((await put(first, 'emb', r2)).status).toBe(201);
      const status = await statusOf(first);
      expect(status.revisions.map((r: Json) => [r.revision, r.stored_by])).toEqual([['e1', 'arbiter:bundles.dir'], ['r2', expect.stringContaining('ops@example')]]);
      expect(status.revisions[0].digest).toBe(sha256(e1));
      expect((await activate(first, 'e1')).status).toBe(200);
      expect(await decidedBy(first)).toBe('e1');
      expect((await activate(first, 'r2')).status).toBe(200);
    } finally {
      await first.close();
    }
    const second = await startEmbedded(bundlesDir, store);
    try {
      expect(await decidedBy(second)).toBe('r2');
      expect((await activate(second, 'e1')).status).toBe(200);
      expect(await decidedBy(second)).toBe('e1');
    } finally {
      await second.close();
    }
  });

  it('is not replaced by another archive under its revision: refused as a revision conflict, as a stored one would be', async () => {
    // Replays find a revision by name: two archives under one name would replay its decisions on the wrong one.
    const { bundlesDir, e1 } = embeddedImage();
    const sameName = build(writeBundleSource(dir, 'emb', { decision: '{"allow": false, "reasons": [{"code": "other_build"}]}' }), join(dir, 'emb-e1-other.tar.gz'), 'e1');
    expect(sha256(sameName)).not.toBe(sha256(e1));
    const arbiter = await startEmbedded(bundlesDir, newStore());
    try {
      expect(await put(arbiter, 'emb', sameName)).toMatchObject({ status: 409, body: { code: 'bundle_revision_conflict' } });
      expect(await decidedBy(arbiter)).toBe('e1');
      expect(await statusOf(arbiter)).toMatchObject({ active: { revision: 'e1', digest: sha256(e1), source: 'embedded' }, revisions: [] });
    } finally {
      await arbiter.close();
    }
  });

  it('pushed while it is the active one, is stored as the desired state: a new image does not replace it', async () => {
    const { src, bundlesDir, e1 } = embeddedImage();
    const store = newStore();
    const first = await startEmbedded(bundlesDir, store);
    try {
      const pushed = await put(first, 'emb', e1);
      expect(pushed).toMatchObject({ status: 200, body: { outcome: 'unchanged', revision: 'e1' } });
      expect(pushed.body.bundle.revisions.map((r: Json) => r.revision)).toEqual(['e1']);
    } finally {
      await first.close();
    }
    // The image is upgraded: bundles.dir now ships e2.
    build(src, join(bundlesDir, 'emb.tar.gz'), 'e2');
    const second = await startEmbedded(bundlesDir, store);
    try {
      expect(await decidedBy(second)).toBe('e1');
    } finally {
      await second.close();
    }
  });

  it('pushed while it is the active one where signatures are required, is checked as a push: an unsigned one is refused, and still served', async () => {
    const { bundlesDir, e1 } = embeddedImage();
    const key = signingKey(tempDir());
    const store = newStore();
    for (let start = 0; start < 2; start++) {
      const arbiter = await startEmbedded(bundlesDir, store, { key });
      try {
        // bundles.dir is trusted at start, as the config file is.
        expect(await decidedBy(arbiter)).toBe('e1');
        if (start === 0) expect(await put(arbiter, 'emb', e1)).toMatchObject({ status: 422, body: { code: 'signature_missing' } });
        expect(await statusOf(arbiter)).toMatchObject({ active: { revision: 'e1', source: 'embedded' }, revisions: [] });
      } finally {
        await arbiter.close();
      }
    }
  });

  it('pushed while it is the active one and refused, is counted and logged as any refused push is', async () => {
    const { bundlesDir, e1 } = embeddedImage();
    const { logger, lines } = capturingLogger();
    const arbiter = await startEmbedded(bundlesDir, newStore(), { key: signingKey(tempDir()), logger });
    try {
      expect(await put(arbiter, 'emb', e1)).toMatchObject({ status: 422, body: { code: 'signature_missing' } });
      const metrics = await (await fetch(`${arbiter.url}/metrics`)).text();
      expect(metrics).toContain('arbiter_bundle_rejections_total{bundle="emb",check="signature_missing"} 1\n');
      expect(lines.filter((line) => line.msg === 'bundle rejected')).toEqual([expect.objectContaining({ bundle: 'emb', check: 'signature_missing', actor: expect.stringContaining('ops@example') })]);
    } finally {
      await arbiter.close();
    }
  });

  it('stored signed where signatures are required, keeps its signature: rolled back to, an older signed archive is refused as replayed', async () => {
    const key = signingKey(tempDir());
    const { src, bundlesDir } = embeddedImage(key);
    const r2 = build(src, join(dir, 'emb-r2-signed.tar.gz'), 'r2', signingArgs(dir, key, 3000));
    // Signed before e1 and never stored here: what the iat rule refuses while e1 is active.
    const older = build(src, join(dir, 'emb-older-signed.tar.gz'), 'older', signingArgs(dir, key, 1000));
    const arbiter = await startEmbedded(bundlesDir, newStore(), { key });
    try {
      const pushed = await put(arbiter, 'emb', r2);
      expect(pushed.status).toBe(201);
      expect(pushed.body.bundle.revisions[0]).toMatchObject({ revision: 'e1', stored_by: 'arbiter:bundles.dir', signature: { keyid: 'default', iat: 2000 } });
      expect((await activate(arbiter, 'e1')).status).toBe(200);
      expect(await put(arbiter, 'emb', older)).toMatchObject({ status: 409, body: { code: 'bundle_replayed' } });
      expect(await decidedBy(arbiter)).toBe('e1');
    } finally {
      await arbiter.close();
    }
  });
});

describe('the embedded revision of a deleted signed bundle', () => {
  it('pushed while it serves, is held to the replay mark the deletion kept: signed before it, it is refused, and the mark stays', async () => {
    const key = signingKey(tempDir());
    const src = writeBundleSource(dir, 'emb');
    const r2 = build(src, join(dir, 'emb-mark-r2.tar.gz'), 'r2', signingArgs(dir, key, 3000));
    // Signed after e1, before r2, never stored here: what the mark refuses.
    const between = build(src, join(dir, 'emb-mark-between.tar.gz'), 'between', signingArgs(dir, key, 2500));
    const bundlesDir = tempDir();
    const store = join(tempDir(), 'bundles');
    const signing = { require_signatures: true, signing: { keys: { default: { key: key.publicPem, algorithm: 'RS256' } }, scope: 'write' } };
    const start = () => startTestArbiter({ ...adminConfig(), bundles: { dir: bundlesDir, default: 'other', store, ...signing } });
    let arbiter = await start();
    try {
      expect((await put(arbiter, 'emb', r2)).status).toBe(201);
      expect((await fetch(`${arbiter.url}/v1/bundles/emb`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } })).status).toBe(204);
    } finally {
      await arbiter.close();
    }
    // A later image ships emb at e1, signed before r2: served from bundles.dir, as a deleted bundle's is.
    const e1 = build(src, join(bundlesDir, 'emb.tar.gz'), 'e1', signingArgs(dir, key, 2000));
    arbiter = await start();
    try {
      expect(arbiter.bundles.get('emb')?.revision).toBe('e1');
      expect(await put(arbiter, 'emb', between)).toMatchObject({ status: 409, body: { check: 'bundle_replayed' } });
      // Pushing the archive it serves would store it as the active revision, in place of the mark.
      expect(await put(arbiter, 'emb', e1)).toMatchObject({ status: 409, body: { check: 'bundle_replayed' } });
      expect(await put(arbiter, 'emb', between)).toMatchObject({ status: 409, body: { check: 'bundle_replayed' } });
      expect(arbiter.bundles.get('emb')?.revision).toBe('e1');
      expect(await put(arbiter, 'emb', r2)).toMatchObject({ status: 201, body: { revision: 'r2' } });
    } finally {
      await arbiter.close();
    }
  }, 60_000);
});

describe('bundle signatures at start-up', () => {
  it('warns when unsigned bundles will be accepted (development mode), says when they will not', async () => {
    const said = async (raw: Record<string, unknown>) => {
      const { logger, lines } = capturingLogger();
      const arbiter = await startTestArbiter(raw, { logger });
      await arbiter.close();
      return lines.filter((line) => /bundle signatures/.test(line.msg as string)).map((line) => ({ level: line.level as number, msg: line.msg as string }));
    };
    expect(await said({})).toEqual([{ level: 40, msg: expect.stringContaining('bundle signatures not required') }]);
    expect(await said({ mode: 'production' })).toEqual([{ level: 30, msg: expect.stringContaining('bundle signatures required') }]);
    expect(await said({ mode: 'production', bundles: { require_signatures: false } })).toEqual([{ level: 40, msg: expect.stringContaining('bundles.require_signatures') }]);
  });
});

describe('swapping revisions under load', () => {
  it('loses or fails no decision, and each reports one of the two revisions', async () => {
    const arbiter = await startTestArbiter(adminConfig());
    try {
      expect((await put(arbiter, 'lc', archives.u1!)).status).toBe(201);
      let swapping = true;
      const revisions = new Set<string>();
      const statuses = new Set<number>();
      const decide = async () => {
        while (swapping) {
          const response = await postJson(`${arbiter.url}/v1/decide`, { policy: 'lc', action: 'read', resource: { type: 'doc' } });
          statuses.add(response.status);
          revisions.add(response.body?.policy?.revision);
        }
      };
      const deciders = Array.from({ length: 4 }, decide);
      for (let i = 0; i < 12; i++) {
        const response = await put(arbiter, 'lc', i % 2 === 0 ? archives.u2! : archives.u1!);
        expect(response.status).toBe(201);
      }
      swapping = false;
      await Promise.all(deciders);
      expect([...statuses]).toEqual([200]);
      expect([...revisions].sort()).toEqual(['u1', 'u2']);
      // The worker holds each active revision once, u1 included though it was swapped out and back
      // in five times, and not u2, though decisions that picked it before its last swap ran after.
      expect((await postJson(`${arbiter.url}/v1/decide`, { policy: 'lc', action: 'read', resource: { type: 'doc' } })).body?.policy?.revision).toBe('u1');
      const instances = await arbiter.metrics.registry.getSingleMetric('arbiter_policy_instances')!.get();
      expect(instances.values).toEqual([{ labels: { thread: 'evaluator-0' }, value: arbiter.bundles.list().length }]);
    } finally {
      await arbiter.close();
    }
  });
});

describe('pull mode', () => {
  let server: Server;
  let url: string;
  let current: Buffer;
  let served = 0;
  let notModified = 0;

  beforeAll(async () => {
    current = archives.p1!;
    server = createServer((req, res) => {
      const etag = `"${current.byteLength}-${current.subarray(-16).toString('hex')}"`;
      if (req.headers['if-none-match'] === etag) {
        notModified += 1;
        res.writeHead(304, { etag }).end();
        return;
      }
      served += 1;
      res.writeHead(200, { 'content-type': 'application/gzip', etag }).end(current);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/bundles/lc.tar.gz`;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('activates what the source serves, keeps it on 304, follows a change, and replicas converge', async () => {
    const source = { name: 'lc', url, poll_interval_s: 0.05, timeout_ms: 2000 };
    const replicas = [await startTestArbiter({ bundles: { sources: [source] } }), await startTestArbiter({ bundles: { sources: [source] } })];
    try {
      await waitFor(() => replicas.every((r) => r.bundles.get('lc')?.revision === 'p1'), 'p1 on every replica');
      await waitFor(() => notModified >= 4, 'conditional polls answered 304');
      expect(served).toBe(2);
      expect(replicas.every((r) => r.bundles.get('lc')?.revision === 'p1')).toBe(true);

      current = archives.p2!;
      await waitFor(() => replicas.every((r) => r.bundles.get('lc')?.revision === 'p2'), 'p2 on every replica');
      expect(served).toBe(4);
      expect((await replicas[0]!.bundleLifecycle.status('lc'))?.active).toMatchObject({ revision: 'p2', activated_by: `pull:${url}` });
    } finally {
      await Promise.all(replicas.map((r) => r.close()));
    }
  });

  it('counts polls by result and keeps the time of the last success, for alerts on a stale replica', async () => {
    let answers = 0;
    const source = await serveBundles('/bundles/lc.tar.gz', (req, res) => {
      // A failure, the bundle, then 304s to its ETag.
      answers += 1;
      if (answers === 1) return void res.writeHead(503).end();
      if (req.headers['if-none-match'] === '"p1"') return void res.writeHead(304, { etag: '"p1"' }).end();
      res.writeHead(200, { 'content-type': 'application/gzip', etag: '"p1"' }).end(archives.p1);
    });
    const arbiter = await startTestArbiter({ bundles: { sources: [{ name: 'lc', url: source.url, poll_interval_s: 0.05, timeout_ms: 2000 }] } });
    const pulls = async () => new Map((await arbiter.metrics.bundlePulls.get()).values.map((v) => [`${v.labels.bundle}/${v.labels.result}`, v.value]));
    try {
      const before = Date.now() / 1000;
      await waitFor(() => answers >= 4, 'a failure, the bundle and two 304s');
      const counted = await pulls();
      expect(counted.get('lc/bundle_pull_failed')).toBe(1);
      expect(counted.get('lc/ok')).toBeGreaterThanOrEqual(2);
      const [lastSuccess] = (await arbiter.metrics.bundlePullLastSuccess.get()).values;
      expect(lastSuccess).toMatchObject({ labels: { bundle: 'lc' } });
      expect(lastSuccess!.value).toBeGreaterThanOrEqual(Math.floor(before));
    } finally {
      await arbiter.close();
      await source.close();
    }
  });

  it('keeps a credential in the source URL out of logs, errors and the recorded actor', async () => {
    let answers = 0;
    const source = await serveBundles('/bundles/lc.tar.gz', (_req, res) => {
      // First a failure (logged with the URL and the error), then the bundle (activated by the source).
      answers += 1;
      if (answers === 1) res.writeHead(503).end();
      else res.writeHead(200, { 'content-type': 'application/gzip' }).end(archives.p1);
    });
    const { logger, lines } = capturingLogger();
    const arbiter = await startTestArbiter({ bundles: { sources: [{ name: 'lc', url: `${source.url}?access_token=s3cr3t-pull-token`, poll_interval_s: 0.05, timeout_ms: 2000 }] } }, { logger });
    try {
      await waitFor(() => arbiter.bundles.get('lc')?.revision === 'p1', 'p1 pulled after a failed poll');
      expect(lines.some((line) => line.msg?.startsWith('bundle pull failed'))).toBe(true);
      expect(JSON.stringify(lines)).not.toContain('s3cr3t-pull-token');
      expect((await arbiter.bundleLifecycle.status('lc'))?.active).toMatchObject({ activated_by: `pull:${source.url}?…` });
    } finally {
      await arbiter.close();
      await source.close();
    }
  });

  it('fetches a bundle refused for this server\'s state again, and activates it once that state changes', async () => {
    // Its roots overlap the embedded echo bundle: a refusal about this server, not about the archive.
    const overlapping = build(writeBundleSource(dir, 'pl', { extraRoots: ['echo'] }), join(dir, 'pl1.tar.gz'), 'pl1');
    let fetched = 0;
    const source = await serveBundles('/pl.tar.gz', (req, res) => {
      if (req.headers['if-none-match'] === '"pl1"') {
        res.writeHead(304, { etag: '"pl1"' }).end();
        return;
      }
      fetched += 1;
      res.writeHead(200, { 'content-type': 'application/gzip', etag: '"pl1"' }).end(overlapping);
    });
    const arbiter = await startTestArbiter({ bundles: { sources: [{ name: 'pl', url: source.url, poll_interval_s: 0.05, timeout_ms: 2000 }] } });
    try {
      await waitFor(() => fetched >= 2, 'a second full fetch after the refusal');
      expect(arbiter.bundles.get('pl')).toBeUndefined();
      await arbiter.bundleLifecycle.remove('echo', 'test');
      await waitFor(() => arbiter.bundles.get('pl')?.revision === 'pl1', 'pl1 once echo is gone');
    } finally {
      await arbiter.close();
      await source.close();
    }
  });

  it('pulls again an archive refused as replayed once the hand-pushed revision that caused it is removed', async () => {
    const key = signingKey(dir);
    const pulled = build(writeBundleSource(dir, 'pb'), join(dir, 'pb-v1.tar.gz'), 'v1', signingArgs(dir, key, 1000));
    const hotfix = build(writeBundleSource(dir, 'pb', { decision: '{"allow": false, "reasons": [{"code": "manual"}]}' }), join(dir, 'pb-hotfix.tar.gz'), 'hotfix', signingArgs(dir, key, 2000));
    let release!: () => void;
    const firstPoll = new Promise<void>((resolve) => (release = resolve));
    let fetched = 0;
    const source = await serveBundles('/pb.tar.gz', (req, res) => {
      void firstPoll.then(() => {
        if (req.headers['if-none-match'] === '"v1"') return void res.writeHead(304, { etag: '"v1"' }).end();
        fetched += 1;
        res.writeHead(200, { 'content-type': 'application/gzip', etag: '"v1"' }).end(pulled);
      });
    });
    const arbiter = await startTestArbiter({
      bundles: { require_signatures: true, signing: { keys: { default: { key: key.publicPem, algorithm: 'RS256' } }, scope: 'write' }, sources: [{ name: 'pb', url: source.url, poll_interval_s: 0.05, timeout_ms: 5000 }] },
    });
    try {
      // A newer signed hotfix pushed by hand: the source's older archive is refused as replayed...
      await arbiter.bundleLifecycle.accept('pb', hotfix, 'admin');
      release();
      await waitFor(() => fetched >= 1, 'the source fetched');
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(arbiter.bundles.get('pb')?.revision).toBe('hotfix');
      // ...and served again once the hotfix is removed, not left out for good.
      await arbiter.bundleLifecycle.remove('pb', 'admin');
      await waitFor(() => arbiter.bundles.get('pb')?.revision === 'v1', 'the pulled revision active again');
    } finally {
      await arbiter.close();
      await source.close();
    }
  });

  describe('signed, across restarts', () => {
    let key: ReturnType<typeof signingKey>;
    const pulled: Record<string, Buffer> = {};

    beforeAll(() => {
      key = signingKey(dir);
      const src = writeBundleSource(dir, 'ps');
      pulled.v1 = build(src, join(dir, 'ps-v1.tar.gz'), 'v1', signingArgs(dir, key, 1000));
      pulled.v2 = build(src, join(dir, 'ps-v2.tar.gz'), 'v2', signingArgs(dir, key, 2000));
    }, 60_000);

    /** A source serving `archive()` at each request, with an ETag unless `etags` is false; counts full answers. */
    async function source(archive: () => Buffer, etags = true) {
      const counts = { full: 0 };
      const server = await serveBundles('/ps.tar.gz', (req, res) => {
        const body = archive();
        const etag = `"${sha256(body)}"`;
        if (etags && req.headers['if-none-match'] === etag) return void res.writeHead(304, { etag }).end();
        counts.full += 1;
        res.writeHead(200, { 'content-type': 'application/gzip', ...(etags && { etag }) }).end(body);
      });
      return { ...server, counts };
    }

    const start = (store: string, url: string) =>
      startTestArbiter({
        bundles: {
          store,
          require_signatures: true,
          signing: { keys: { default: { key: key.publicPem, algorithm: 'RS256' } }, scope: 'write' },
          sources: [{ name: 'ps', url, poll_interval_s: 0.05, timeout_ms: 5000 }],
        },
      });

    it('a rollback by hand holds while the source serves the same revision, and the source wins again after a restart', async () => {
      for (const etags of [true, false]) {
        let served = pulled.v1!;
        const bundles = await source(() => served, etags);
        const store = join(tempDir(), 'bundles');
        const first = await start(store, bundles.url);
        try {
          await waitFor(() => first.bundles.get('ps')?.revision === 'v1', 'v1 pulled');
          served = pulled.v2!;
          await waitFor(() => first.bundles.get('ps')?.revision === 'v2', 'v2 pulled');
          await first.bundleLifecycle.activate('ps', 'v1', 'admin');
          const polled = bundles.counts.full;
          await new Promise((resolve) => setTimeout(resolve, 300));
          if (!etags) expect(bundles.counts.full).toBeGreaterThan(polled);
          expect(first.bundles.get('ps')?.revision).toBe('v1');
        } finally {
          await first.close();
        }
        // README: the rollback holds "until the source serves a new revision or Arbiter restarts".
        const second = await start(store, bundles.url);
        try {
          await waitFor(() => second.bundles.get('ps')?.revision === 'v2', `v2 from the source after a restart (etags: ${etags})`);
        } finally {
          await second.close();
          await bundles.close();
        }
      }
    });

    it('rolls a fleet back when the source serves the older policy as a new revision, not the older archive', async () => {
      let served = pulled.v2!;
      const bundles = await source(() => served);
      const arbiter = await start(join(tempDir(), 'bundles'), bundles.url);
      try {
        await waitFor(() => arbiter.bundles.get('ps')?.revision === 'v2', 'v2 pulled');
        served = pulled.v1!;
        await waitFor(() => bundles.counts.full >= 2, 'the older archive fetched');
        await new Promise((resolve) => setTimeout(resolve, 200));
        expect(arbiter.bundles.get('ps')?.revision).toBe('v2');
        const metrics = await (await fetch(`${arbiter.url}/metrics`)).text();
        expect(metrics).toContain('arbiter_bundle_rejections_total{bundle="ps",check="bundle_replayed"}');
        served = build(writeBundleSource(dir, 'ps'), join(dir, 'ps-v3.tar.gz'), 'v3', signingArgs(dir, key, 3000));
        await waitFor(() => arbiter.bundles.get('ps')?.revision === 'v3', 'v3, the older policy re-signed');
      } finally {
        await arbiter.close();
        await bundles.close();
      }
    });

    it('a stored revision refused at start is taken again from the source that serves it', async () => {
      const bundles = await source(() => pulled.v1!);
      const store = join(tempDir(), 'bundles');
      const first = await start(store, bundles.url);
      try {
        await waitFor(() => first.bundles.get('ps')?.revision === 'v1', 'v1 pulled');
      } finally {
        await first.close();
      }
      const [stored] = readdirSync(join(store, 'ps')).filter((file) => file.endsWith('.tar.gz'));
      appendFileSync(join(store, 'ps', stored!), 'damaged');
      const second = await start(store, bundles.url);
      try {
        await waitFor(() => second.bundles.get('ps')?.revision === 'v1', 'v1 from the source after its stored archive was refused');
      } finally {
        await second.close();
        await bundles.close();
      }
    });
  });

  it('does not check again an archive refused for itself that a source without ETags keeps serving', async () => {
    const files = new Map(await readBundleArchive(archives.p1!));
    const refused = packFiles(files.set('entitlements/data.json', new Uint8Array(Buffer.from('{}'))));
    let fetched = 0;
    const source = await serveBundles('/lc.tar.gz', (_req, res) => {
      fetched += 1;
      res.writeHead(200, { 'content-type': 'application/gzip' }).end(refused);
    });
    const arbiter = await startTestArbiter({ bundles: { sources: [{ name: 'lc', url: source.url, poll_interval_s: 0.01, timeout_ms: 2000 }] } });
    try {
      await waitFor(() => fetched >= 3, 'three fetches');
      const metrics = await (await fetch(`${arbiter.url}/metrics`)).text();
      expect(metrics).toContain('arbiter_bundle_rejections_total{bundle="lc",check="bundle_data_outside_roots"} 1\n');
    } finally {
      await arbiter.close();
      await source.close();
    }
  });

  it('keeps reporting an archive refused for itself while its source answers 304 to its ETag, without fetching or checking it again', async () => {
    const files = new Map(await readBundleArchive(archives.p1!));
    const refused = packFiles(files.set('entitlements/data.json', new Uint8Array(Buffer.from('{}'))));
    const { source, counts } = await serveTagged(refused, '"bad"');
    const { logger, lines } = capturingLogger();
    const arbiter = await startTestArbiter({ bundles: { sources: [{ name: 'lc', url: source.url, poll_interval_s: 0.01, timeout_ms: 2000 }] } }, { logger });
    try {
      await waitFor(() => counts.notModified >= 3, 'three conditional polls');
      const failures = lines.filter((line) => line.msg?.startsWith('bundle pull failed'));
      // As when a source without ETags serves it again: each poll fails naming the check.
      expect(failures.length).toBeGreaterThanOrEqual(3);
      expect(failures.every((line) => line.check === 'bundle_data_outside_roots')).toBe(true);
      expect(counts.full).toBe(1);
      const metrics = await (await fetch(`${arbiter.url}/metrics`)).text();
      expect(metrics).toContain('arbiter_bundle_rejections_total{bundle="lc",check="bundle_data_outside_roots"} 1\n');
    } finally {
      await arbiter.close();
      await source.close();
    }
  });

  it('checks again at the next poll a module whose check the evaluation worker never finished (it stopped twice), and activates it', async () => {
    const { crashes, source, counts, arbiter, lines } = await pullWithWorkerCrashes(1);
    try {
      await waitFor(() => lines.some((line) => line.msg?.startsWith('bundle pull failed')), 'the first activation failed');
      expect(crashes.stops).toBe(2);
      expect(lines.find((line) => line.msg?.startsWith('bundle pull failed'))).toMatchObject({ bundle: 'lc', check: 'wasm_check_interrupted' });
      // The source serves the same archive under the same ETag: the next poll fetches and checks it again.
      await waitFor(() => arbiter.bundles.get('lc')?.revision === 'p1', 'p1 activated by a later poll');
      expect(counts.full).toBe(2);
      expect((await postJson(`${arbiter.url}/v1/decide`, { action: 'read', resource: { type: 'doc' }, policy: 'lc' })).body).toMatchObject({ allow: true });
    } finally {
      crashes.dispose();
      await arbiter.close();
      await source.close();
    }
  });

  it('refuses, until its source changes, a module whose every check stopped the evaluation worker (MAX_INTERRUPTED_CHECKS in a row)', async () => {
    const { crashes, source, counts, arbiter, lines } = await pullWithWorkerCrashes(MAX_INTERRUPTED_CHECKS);
    try {
      await waitFor(() => counts.notModified >= 2, 'conditional polls after the module was refused');
      expect(crashes.stops).toBe(2 * MAX_INTERRUPTED_CHECKS);
      expect(counts.full).toBe(MAX_INTERRUPTED_CHECKS);
      expect(lines.filter((line) => line.msg?.startsWith('bundle refused until its source changes'))).toMatchObject([{ bundle: 'lc', checks: MAX_INTERRUPTED_CHECKS }]);
      expect(arbiter.bundles.get('lc')).toBeUndefined();
    } finally {
      crashes.dispose();
      await arbiter.close();
      await source.close();
    }
  });

  it('does not download or check again a module that cannot be instantiated: that refusal is the module\'s', async () => {
    const files = await readBundleArchive(archives.p1!);
    // `unreachable` first in entrypoints(): every instance traps when asked for its entrypoint table.
    const trapping = packFiles(new Map(files).set('policy.wasm', prefixExportedFunction(files.get('policy.wasm')!, 'entrypoints', [0x00])));
    const { source, counts } = await serveTagged(trapping, '"trap"');
    const { logger, lines } = capturingLogger();
    const arbiter = await startTestArbiter({ bundles: { sources: [{ name: 'lc', url: source.url, poll_interval_s: 0.01, timeout_ms: 2000 }] } }, { logger });
    try {
      await waitFor(() => counts.notModified >= 3, 'three conditional polls');
      const failures = lines.filter((line) => line.msg?.startsWith('bundle pull failed'));
      expect(failures.every((line) => line.check === 'wasm_instantiate')).toBe(true);
      expect(counts.full).toBe(1);
      const metrics = await (await fetch(`${arbiter.url}/metrics`)).text();
      expect(metrics).toContain('arbiter_bundle_rejections_total{bundle="lc",check="wasm_instantiate"} 1\n');
    } finally {
      await arbiter.close();
      await source.close();
    }
  });

  it('takes an archive again whose download was cut short, though its ETag is the one it was refused under', async () => {
    // A body delimited by the connection's close (no Content-Length, not chunked) ends where a
    // proxy or a reset server cut it: the gzip is truncated. The next download is whole.
    let answers = 0;
    const source = await serveBundles('/lc.tar.gz', (req, res) => {
      answers += 1;
      if (req.headers['if-none-match'] === '"p1"') return void res.writeHead(304, { etag: '"p1"' }).end();
      if (answers === 1) {
        res.useChunkedEncodingByDefault = false;
        res.writeHead(200, { 'content-type': 'application/gzip', etag: '"p1"', connection: 'close' });
        res.write(archives.p1!.subarray(0, archives.p1!.byteLength >> 1), () => res.socket?.end());
        return;
      }
      res.writeHead(200, { 'content-type': 'application/gzip', etag: '"p1"' }).end(archives.p1);
    });
    const { logger, lines } = capturingLogger();
    const arbiter = await startTestArbiter({ bundles: { sources: [{ name: 'lc', url: source.url, poll_interval_s: 0.05, timeout_ms: 2000 }] } }, { logger });
    try {
      await waitFor(() => answers >= 3, 'polls after the cut download');
      expect(lines.find((line) => line.msg?.startsWith('bundle pull failed'))).toMatchObject({ check: 'archive_not_gzip' });
      await waitFor(() => arbiter.bundles.get('lc')?.revision === 'p1', 'p1 downloaded whole');
    } finally {
      await arbiter.close();
      await source.close();
    }
  });

  it('does not serve the embedded bundle of a pulled name: the replica is not ready until its source delivers', async () => {
    // bundles.dir has an echo bundle too; a source that is down must not leave it deciding.
    let up = false;
    let polls = 0;
    const source = await serveBundles('/echo.tar.gz', (_req, res) => {
      polls += 1;
      if (!up) return void res.writeHead(503).end();
      res.writeHead(200, { 'content-type': 'application/gzip' }).end(archives.echo2);
    });
    const arbiter = await startTestArbiter({ bundles: { default: 'echo', sources: [{ name: 'echo', url: source.url, poll_interval_s: 0.05, timeout_ms: 2000 }] } });
    try {
      await waitFor(() => polls >= 1, 'a failed poll');
      expect(arbiter.bundles.get('echo')).toBeUndefined();
      expect((await fetch(`${arbiter.url}/readyz`)).status).toBe(503);
      expect(await postJson(`${arbiter.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } })).toMatchObject({ status: 503, body: { allow: false } });
      up = true;
      await waitFor(() => arbiter.bundles.get('echo')?.revision === 'echo-2', 'the revision the source serves');
      expect((await fetch(`${arbiter.url}/readyz`)).status).toBe(200);
    } finally {
      await arbiter.close();
      await source.close();
    }
  });

  it('says at start-up which configured bundle nothing serves: neither stored, in bundles.dir, nor pulled (a typo)', async () => {
    const { logger, lines } = capturingLogger();
    const source = await serveBundles('/pulled.tar.gz', (_req, res) => void res.writeHead(503).end());
    const arbiter = await startTestArbiter(
      {
        bundles: { default: 'simpel', sources: [{ name: 'pulled', url: source.url, poll_interval_s: 60, timeout_ms: 2000 }] },
        authzen: { default_bundle: 'pulled', tenants: { acme: 'echo', globex: 'ehco' } },
      },
      { logger },
    );
    try {
      const said = lines.filter((line) => line.msg?.startsWith('configured bundle not served'));
      expect(said.map((line) => [line.key, line.bundle])).toEqual([
        ['bundles.default', 'simpel'],
        ['authzen.tenants.globex', 'ehco'],
      ]);
      expect(said[0]).toMatchObject({ level: 50 });
    } finally {
      await arbiter.close();
      await source.close();
    }
  });

  it('is not ready without the AuthZEN default bundle, and reports a tenant bundle missing as degraded', async () => {
    const served = build(writeBundleSource(dir, 'az'), join(dir, 'az.tar.gz'), 'a1');
    let up = false;
    const source = await serveBundles('/az.tar.gz', (_req, res) => {
      if (!up) return void res.writeHead(503).end();
      res.writeHead(200, { 'content-type': 'application/gzip' }).end(served);
    });
    const down = await serveBundles('/tz.tar.gz', (_req, res) => void res.writeHead(503).end());
    const arbiter = await startTestArbiter({
      authzen: { default_bundle: 'az', tenants: { acme: 'tz' } },
      bundles: {
        sources: [
          { name: 'az', url: source.url, poll_interval_s: 0.05, timeout_ms: 2000 },
          { name: 'tz', url: down.url, poll_interval_s: 0.05, timeout_ms: 2000 },
        ],
      },
    });
    const readiness = async () => {
      const res = await fetch(`${arbiter.url}/readyz`);
      return { ...((await res.json()) as { problems: string[]; degraded: string[] }), status: res.status };
    };
    try {
      expect(await readiness()).toMatchObject({
        status: 503,
        problems: [expect.stringContaining('AuthZEN default bundle az is not active')],
        degraded: [expect.stringContaining('AuthZEN tenant acme: bundle tz is not active')],
      });
      up = true;
      await waitFor(() => arbiter.bundles.get('az')?.revision === 'a1', 'the AuthZEN default bundle pulled');
      // Active, but it declares no AuthZEN support: still ready, and degraded says so.
      expect(await readiness()).toMatchObject({
        status: 200,
        problems: [],
        degraded: [expect.stringContaining('AuthZEN default bundle az (authzen.default_bundle): bundle az does not declare authzen'), expect.stringContaining('AuthZEN tenant acme')],
      });
      // The API document says so too: it named issuers alone as degraded, bundles.default alone as required.
      const readyz = ((await (await fetch(`${arbiter.url}/openapi.json`)).json()) as { paths: Record<string, any> }).paths['/readyz'].get;
      expect(readyz.summary).toContain('authzen.default_bundle');
      expect(readyz.responses['200'].content['application/json'].schema.properties.degraded.description).toContain('AuthZEN tenant');
    } finally {
      await arbiter.close();
      await source.close();
      await down.close();
    }
  });

  it('a 304 to a request that named no ETag is a failed poll, not a silent success', async () => {
    const source = await serveBundles('/lc.tar.gz', (_req, res) => void res.writeHead(304).end());
    const { logger, lines } = capturingLogger();
    const arbiter = await startTestArbiter({ bundles: { sources: [{ name: 'lc', url: source.url, poll_interval_s: 0.05, timeout_ms: 2000 }] } }, { logger });
    try {
      await waitFor(() => lines.some((line) => line.msg?.startsWith('bundle pull failed')), 'a failed poll');
      const failure = lines.find((line) => line.msg?.startsWith('bundle pull failed'))!;
      expect(failure).toMatchObject({ bundle: 'lc', check: 'bundle_pull_failed', err: { message: expect.stringContaining('304') } });
    } finally {
      await arbiter.close();
      await source.close();
    }
  });

  it('refuses a source that is not https unless it is loopback', () => {
    expect(() => parseConfig({ bundles: { sources: [{ name: 'lc', url: 'http://bundles.example.com/lc.tar.gz' }] } })).toThrow(/https/);
    expect(parseConfig({ bundles: { sources: [{ name: 'lc', url: 'https://bundles.example.com/lc.tar.gz' }] } }).bundles.sources[0]).toMatchObject({ poll_interval_s: 60 });
  });

  it('refuses a source URL with user:password@, saying where the credential goes instead', () => {
    expect(() => parseConfig({ bundles: { sources: [{ name: 'lc', url: 'https://puller:s3cr3t@bundles.example.com/lc.tar.gz' }] } })).toThrow(
      /bundles\.sources\.0\.url: must not carry user:password@ \(put the credential in credentials or headers;/,
    );
  });
});
