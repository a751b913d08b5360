import { copyFileSync, cpSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { markPruned } from '../src/policy/lifecycle.ts';
import { MAX_PRUNED_RECORDS, type BundleIndex } from '../src/policy/store.ts';
import type { Arbiter } from '../src/server/start.ts';
import { adminCall, capturingLogger, postJson, startTestArbiter, tempDir } from './support/arbiter.ts';
import { build, signingArgs, signingKey, writeBundleSource, type SigningKey } from './support/bundle-sources.ts';
import { TestIssuer } from './support/issuer.ts';

let admins: TestIssuer;
let dir: string;
let key: SigningKey;
let token: string;
/** Unsigned revisions r1..r6 of bundle `rt`, built by opa. */
const archives: Record<string, Buffer> = {};

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

beforeAll(async () => {
  admins = await TestIssuer.create('https://admins.test.example');
  await admins.serve();
  token = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.read arbiter.bundles.write' });
  dir = tempDir('arbiter-bundles-retention-');
  key = signingKey(dir);
  const src = writeBundleSource(dir, 'rt');
  for (let i = 1; i <= 6; i++) archives[`r${i}`] = build(src, join(dir, `r${i}.tar.gz`), `r${i}`);
}, 60_000);

afterAll(async () => {
  await admins?.close();
});

function start(store: string, options: { maxRevisions?: number; signed?: boolean; logger?: ReturnType<typeof capturingLogger>['logger'] } = {}): Promise<Arbiter> {
  return startTestArbiter(
    {
      admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
      bundles: {
        store,
        ...(options.maxRevisions !== undefined && { retention: { max_revisions: options.maxRevisions } }),
        ...(options.signed && { require_signatures: true, signing: { keys: { default: { key: key.publicPem, algorithm: 'RS256' } }, scope: 'write' } }),
      },
    },
    options.logger ? { logger: options.logger } : {},
  );
}

const call = (arbiter: Arbiter, method: string, path: string, body?: Uint8Array | object) => adminCall(arbiter.url, token, method, path, body);

const put = (arbiter: Arbiter, archive: Uint8Array, name = 'rt') => call(arbiter, 'PUT', `/v1/bundles/${name}`, archive);
const activate = (arbiter: Arbiter, revision: string, name = 'rt') => call(arbiter, 'POST', `/v1/bundles/${name}/activate`, { revision });
const storedRevisions = async (arbiter: Arbiter, name = 'rt') => ((await call(arbiter, 'GET', `/v1/bundles/${name}`)).body!.revisions as { revision: string }[]).map((r) => r.revision);
const decidedBy = async (arbiter: Arbiter, name = 'rt') => (await postJson(`${arbiter.url}/v1/decide`, { policy: name, action: 'read', resource: { type: 'doc' } })).body!.policy?.revision as string | undefined;
/** Every file in the bundle's store directory but its index. */
const filesOf = (store: string, name = 'rt') => readdirSync(join(store, name)).filter((file) => file !== 'index.json').sort();
const archiveFiles = (...revisions: string[]) => revisions.map((revision) => `${sha256(archives[revision]!)}.tar.gz`).sort();

describe('bundles.retention.max_revisions', () => {
  it('defaults to 10 and refuses less than 1', async () => {
    const { parseConfig } = await import('../src/config/load.ts');
    expect(parseConfig({}).bundles.retention.max_revisions).toBe(10);
    expect(() => parseConfig({ bundles: { retention: { max_revisions: 0 } } })).toThrow(/bundles\.retention\.max_revisions/);
  });

  it('pushing max + k revisions keeps max of them, the active one included, and deletes the other archives, saying which', async () => {
    const store = join(tempDir(), 'bundles');
    const { logger, lines } = capturingLogger();
    const arbiter = await start(store, { maxRevisions: 3, logger });
    try {
      for (const revision of ['r1', 'r2', 'r3', 'r4', 'r5']) expect((await put(arbiter, archives[revision]!)).status).toBe(201);
      expect(await storedRevisions(arbiter)).toEqual(['r3', 'r4', 'r5']);
      expect(await decidedBy(arbiter)).toBe('r5');
      expect(filesOf(store)).toEqual(archiveFiles('r3', 'r4', 'r5'));
      const pruned = lines.filter((line) => line.msg === 'bundle revisions pruned');
      expect(pruned).toEqual([
        expect.objectContaining({ bundle: 'rt', max_revisions: 3, pruned: [{ revision: 'r1', digest: sha256(archives.r1!) }] }),
        expect.objectContaining({ bundle: 'rt', max_revisions: 3, pruned: [{ revision: 'r2', digest: sha256(archives.r2!) }] }),
      ]);

      // The oldest revision kept is a rollback away; a pruned one is a clear problem, and nothing changes.
      expect(await activate(arbiter, 'r3')).toMatchObject({ status: 200, body: { active: { revision: 'r3' } } });
      expect(await decidedBy(arbiter)).toBe('r3');
      const refused = await activate(arbiter, 'r1');
      expect(refused).toMatchObject({ status: 410, contentType: 'application/problem+json', body: { code: 'bundle_revision_pruned', detail: expect.stringContaining('bundles.retention.max_revisions') } });
      expect(await decidedBy(arbiter)).toBe('r3');
      expect(await storedRevisions(arbiter)).toEqual(['r3', 'r4', 'r5']);
    } finally {
      await arbiter.close();
    }

    // A restart serves the same active revision and keeps the same revisions.
    const again = await start(store, { maxRevisions: 3 });
    try {
      expect(await decidedBy(again)).toBe('r3');
      expect(await storedRevisions(again)).toEqual(['r3', 'r4', 'r5']);
      expect(filesOf(store)).toEqual(archiveFiles('r3', 'r4', 'r5'));
      expect(await activate(again, 'r2')).toMatchObject({ status: 410, body: { code: 'bundle_revision_pruned' } });
    } finally {
      await again.close();
    }
  });

  it('keeps the revisions active most recently: after a rollback, a new push prunes neither the rolled-back-to nor the replaced one', async () => {
    const store = join(tempDir(), 'bundles');
    const arbiter = await start(store, { maxRevisions: 3 });
    try {
      for (const revision of ['r1', 'r2', 'r3']) await put(arbiter, archives[revision]!);
      // r3 misbehaves: roll back to r1, then push a fix. What served before the fix (r1) and
      // the revision rolled back from (r3) stay; r2, active longest ago, goes.
      await activate(arbiter, 'r1');
      expect((await put(arbiter, archives.r4!)).status).toBe(201);
      expect(await storedRevisions(arbiter)).toEqual(['r1', 'r3', 'r4']);
      expect(await activate(arbiter, 'r1')).toMatchObject({ status: 200, body: { active: { revision: 'r1' } } });
      expect(filesOf(store)).toEqual(archiveFiles('r1', 'r3', 'r4'));
    } finally {
      await arbiter.close();
    }
  });

  it('an unsigned pruned revision pushed again is stored again; another archive under its name is still a conflict', async () => {
    const arbiter = await start(join(tempDir(), 'bundles'), { maxRevisions: 1 });
    try {
      await put(arbiter, archives.r1!);
      await put(arbiter, archives.r2!);
      expect(await storedRevisions(arbiter)).toEqual(['r2']);
      const impostor = build(writeBundleSource(dir, 'rt', { decision: '{"allow": false, "reasons": [{"code": "x"}]}' }), join(dir, 'impostor.tar.gz'), 'r1');
      expect(await put(arbiter, impostor)).toMatchObject({ status: 409, body: { check: 'bundle_revision_conflict' } });
      expect(await put(arbiter, archives.r1!)).toMatchObject({ status: 201, body: { revision: 'r1' } });
      expect(await storedRevisions(arbiter)).toEqual(['r1']);
      expect(await decidedBy(arbiter)).toBe('r1');
    } finally {
      await arbiter.close();
    }
  });

  it('a pruned signed revision is still a replay: its record outlives its archive', async () => {
    // Signed without iat: only the stored history tells these revisions apart.
    const src = writeBundleSource(dir, 'rs');
    const s1 = build(src, join(dir, 's1.tar.gz'), 's1', signingArgs(dir, key));
    const s2 = build(src, join(dir, 's2.tar.gz'), 's2', signingArgs(dir, key));
    const s3 = build(src, join(dir, 's3.tar.gz'), 's3', signingArgs(dir, key));
    const arbiter = await start(join(tempDir(), 'bundles'), { maxRevisions: 1, signed: true });
    try {
      expect((await put(arbiter, s1, 'rs')).status).toBe(201);
      expect((await put(arbiter, s2, 'rs')).status).toBe(201);
      expect(await storedRevisions(arbiter, 'rs')).toEqual(['s2']);
      const replayed = await put(arbiter, s1, 'rs');
      expect(replayed).toMatchObject({ status: 409, body: { check: 'bundle_replayed' } });
      // Not "activate it explicitly": that answers 410 for a pruned revision. What does serve it is said.
      expect(replayed.body!.detail).not.toContain('activate it explicitly');
      expect(replayed.body!.detail).toContain('pruned');
      expect(await decidedBy(arbiter, 'rs')).toBe('s2');
      expect((await put(arbiter, s3, 'rs')).status).toBe(201);
    } finally {
      await arbiter.close();
    }
  });

  it('a decision replay against a pruned revision is the same clear problem', async () => {
    const arbiter = await start(join(tempDir(), 'bundles'), { maxRevisions: 1 });
    try {
      await put(arbiter, archives.r1!);
      await put(arbiter, archives.r2!);
      await expect(arbiter.bundleLifecycle.withRevision('rt', 'r1', async () => 'used')).rejects.toMatchObject({ code: 'bundle_revision_pruned' });
    } finally {
      await arbiter.close();
    }
  });

  it('prunes at start-up (a lowered limit, archives a crash left behind), keeping the active revision', async () => {
    const store = join(tempDir(), 'bundles');
    const first = await start(store, { maxRevisions: 10 });
    try {
      for (const revision of ['r1', 'r2', 'r3', 'r4', 'r5', 'r6']) await put(first, archives[revision]!);
      await activate(first, 'r2');
    } finally {
      await first.close();
    }
    expect(filesOf(store)).toHaveLength(6);

    const { logger, lines } = capturingLogger();
    const second = await start(store, { maxRevisions: 2, logger });
    try {
      expect(await decidedBy(second)).toBe('r2');
      expect(await storedRevisions(second)).toEqual(['r2', 'r6']);
      expect(filesOf(store)).toEqual(archiveFiles('r2', 'r6'));
      expect(lines.find((line) => line.msg === 'bundle revisions pruned')).toMatchObject({ bundle: 'rt', pruned: ['r1', 'r3', 'r4', 'r5'].map((revision) => ({ revision, digest: sha256(archives[revision]!) })) });
    } finally {
      await second.close();
    }

    // A crash after the index was written but before the archives were deleted, or in the
    // middle of writing a file: what no kept revision names is deleted at the next start.
    copyFileSync(join(dir, 'r1.tar.gz'), join(store, 'rt', `${sha256(archives.r1!)}.tar.gz`));
    writeFileSync(join(store, 'rt', `.${sha256(archives.r3!)}.tar.gz.0b6f8e4e-5d3c-4f7e-9a51-3c1f0e2d9a77.tmp`), archives.r3!.subarray(0, 100));
    writeFileSync(join(store, 'rt', '.index.json.1f0e2d9a-5d3c-4f7e-9a51-0b6f8e4e3c77.tmp'), '{');
    const index = readFileSync(join(store, 'rt', 'index.json'), 'utf8');
    const third = await start(store, { maxRevisions: 2 });
    try {
      expect(await decidedBy(third)).toBe('r2');
      expect(filesOf(store)).toEqual(archiveFiles('r2', 'r6'));
      expect(readFileSync(join(store, 'rt', 'index.json'), 'utf8')).toBe(index);
    } finally {
      await third.close();
    }
  });
});

describe('a crash during the first push of a name', () => {
  it('leaves its archive and no index: the next start deletes them, and lists no such bundle', async () => {
    const store = join(tempDir(), 'bundles');
    const first = await start(store);
    try {
      expect((await put(first, archives.r1!)).status).toBe(201);
    } finally {
      await first.close();
    }
    // Killed after the archive of the first revision of `fresh` was written, before its index
    // was (or while it was being written).
    cpSync(join(store, 'rt'), join(store, 'fresh'), { recursive: true });
    rmSync(join(store, 'fresh', 'index.json'));
    writeFileSync(join(store, 'fresh', '.index.json.1f0e2d9a-5d3c-4f7e-9a51-0b6f8e4e3c77.tmp'), '{');
    const { logger, lines } = capturingLogger();
    const second = await start(store, { logger });
    try {
      expect(readdirSync(store)).toEqual(['rt']);
      expect(lines.find((line) => line.msg === 'deleted bundle archives no stored revision names (left by an interrupted write or prune)')).toMatchObject({
        bundle: 'fresh',
        digests: [sha256(archives.r1!)],
      });
      expect(((await call(second, 'GET', '/v1/bundles')).body!.bundles as { name: string }[]).map((bundle) => bundle.name)).not.toContain('fresh');
      expect(await decidedBy(second)).toBe('r1');
    } finally {
      await second.close();
    }
  });
});

describe('removing a bundle', () => {
  it('takes its directory away in one step, and a start deletes what a crash left half removed', async () => {
    const store = join(tempDir(), 'bundles');
    const first = await start(store);
    try {
      expect((await put(first, archives.r1!)).status).toBe(201);
      expect((await call(first, 'DELETE', '/v1/bundles/rt')).status).toBe(204);
      // Nothing of it is left behind, renamed or not.
      expect(readdirSync(store)).toEqual([]);
      expect((await put(first, archives.r2!)).status).toBe(201);
    } finally {
      await first.close();
    }
    // A crash after the rename that removes a bundle, before its files were deleted.
    cpSync(join(store, 'rt'), join(store, '.rt.5d3c0b6f-8e4e-4f7e-9a51-3c1f0e2d9a77.removed'), { recursive: true });
    const second = await start(store);
    try {
      expect(readdirSync(store)).toEqual(['rt']);
      expect(await decidedBy(second)).toBe('r2');
    } finally {
      await second.close();
    }
  });
});

describe('the records of pruned revisions', () => {
  it('are bounded: past MAX_PRUNED_RECORDS the oldest are forgotten, in stored order, the active one never', () => {
    const digest = (i: number) => i.toString(16).padStart(64, '0');
    const at = (i: number) => new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString();
    const total = MAX_PRUNED_RECORDS + 20;
    // The active revision is the oldest stored (a rollback), and the last activated before the prune.
    const index: BundleIndex = {
      name: 'rt',
      revisions: Array.from({ length: total }, (_, i) => ({ revision: `r${i}`, digest: digest(i), stored_at: at(i), stored_by: 'test', ...(i === 0 && { activated_at: at(total) }) })),
      active: { revision: 'r0', digest: digest(0), activated_at: at(total), activated_by: 'test' },
    };
    const pruned = markPruned(index, 3, at(total + 1));
    expect(pruned.map((r) => r.revision)).toEqual(Array.from({ length: total - 3 }, (_, i) => `r${i + 1}`));
    expect(index.revisions.filter((r) => r.pruned_at === undefined).map((r) => r.revision)).toEqual(['r0', `r${total - 2}`, `r${total - 1}`]);
    expect(index.revisions.filter((r) => r.pruned_at !== undefined)).toHaveLength(MAX_PRUNED_RECORDS);
    // The oldest records went (r1..r17), the active r0 stayed first: positions keep their order.
    expect(index.revisions.slice(0, 2).map((r) => r.revision)).toEqual(['r0', 'r18']);
    expect(markPruned(index, 3, at(total + 2))).toEqual([]);
  });
});

describe('retention across a clock stepped back', () => {
  it('keeps the revisions activated last by the order of activations, not by their times', () => {
    const digest = (i: number) => i.toString(16).padStart(64, '0');
    // r3 was activated last, but after the clock stepped back an hour; r2 before it, r1 first.
    const index: BundleIndex = {
      name: 'rt',
      revisions: [
        { revision: 'r1', digest: digest(1), stored_at: '2026-01-01T10:00:00.000Z', stored_by: 'test', activated_at: '2026-01-01T10:00:00.000Z', activation_seq: 1 },
        { revision: 'r2', digest: digest(2), stored_at: '2026-01-01T10:05:00.000Z', stored_by: 'test', activated_at: '2026-01-01T10:05:00.000Z', activation_seq: 2 },
        { revision: 'r3', digest: digest(3), stored_at: '2026-01-01T09:10:00.000Z', stored_by: 'test', activated_at: '2026-01-01T09:10:00.000Z', activation_seq: 3 },
        { revision: 'r4', digest: digest(4), stored_at: '2026-01-01T09:12:00.000Z', stored_by: 'test', activated_at: '2026-01-01T09:12:00.000Z', activation_seq: 4 },
      ],
      active: { revision: 'r4', digest: digest(4), activated_at: '2026-01-01T09:12:00.000Z', activated_by: 'test' },
    };
    // By time, r2 and r1 looked most recent after the active r4: the rollback target r3 went.
    expect(markPruned(index, 2, '2026-01-01T09:13:00.000Z').map((r) => r.revision)).toEqual(['r1', 'r2']);
  });

  it('numbers each activation in the stored index, a rollback included', async () => {
    const store = join(tempDir('arbiter-retention-seq-'), 'bundles');
    const arbiter = await start(store);
    try {
      for (const revision of ['r1', 'r2']) expect((await put(arbiter, archives[revision]!)).status).toBe(201);
      expect((await activate(arbiter, 'r1')).status).toBe(200);
      const index = JSON.parse(readFileSync(join(store, 'rt', 'index.json'), 'utf8')) as BundleIndex;
      expect(index.revisions.map((r) => [r.revision, r.activation_seq])).toEqual([
        ['r1', 3],
        ['r2', 2],
      ]);
    } finally {
      await arbiter.close();
    }
  });
});

describe('retention in pull mode', () => {
  it('a rollback by hand holds, the source wins again after a restart, and an older pruned archive is still refused', async () => {
    const { createServer } = await import('node:http');
    const src = writeBundleSource(dir, 'pr');
    const pulled: Record<string, Buffer> = {};
    for (const [i, revision] of ['v1', 'v2', 'v3'].entries()) pulled[revision] = build(src, join(dir, `pr-${revision}.tar.gz`), revision, signingArgs(dir, key, 1000 * (i + 1)));
    let served = pulled.v1!;
    let full = 0;
    const server = createServer((req, res) => {
      const etag = `"${sha256(served)}"`;
      if (req.headers['if-none-match'] === etag) return void res.writeHead(304, { etag }).end();
      full += 1;
      res.writeHead(200, { 'content-type': 'application/gzip', etag }).end(served);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/pr.tar.gz`;
    const store = join(tempDir(), 'bundles');
    const startPulling = () =>
      startTestArbiter({
        bundles: {
          store,
          retention: { max_revisions: 2 },
          require_signatures: true,
          signing: { keys: { default: { key: key.publicPem, algorithm: 'RS256' } }, scope: 'write' },
          sources: [{ name: 'pr', url, poll_interval_s: 0.05, timeout_ms: 5000 }],
        },
      });
    const waitFor = async (condition: () => boolean, what: string) => {
      for (let i = 0; i < 500 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 20));
      if (!condition()) throw new Error(`timed out waiting for ${what}`);
    };
    try {
      const first = await startPulling();
      try {
        for (const revision of ['v1', 'v2', 'v3']) {
          served = pulled[revision]!;
          await waitFor(() => first.bundles.get('pr')?.revision === revision, `${revision} pulled`);
        }
        expect((await first.bundleLifecycle.status('pr'))?.revisions.map((r) => r.revision)).toEqual(['v2', 'v3']);
        await first.bundleLifecycle.activate('pr', 'v2', 'admin');
        await expect(first.bundleLifecycle.activate('pr', 'v1', 'admin')).rejects.toMatchObject({ code: 'bundle_revision_pruned' });
        await new Promise((resolve) => setTimeout(resolve, 200));
        expect(first.bundles.get('pr')?.revision).toBe('v2');
      } finally {
        await first.close();
      }
      const second = await startPulling();
      try {
        await waitFor(() => second.bundles.get('pr')?.revision === 'v3', 'v3 from the source after a restart');
        served = pulled.v1!;
        const fetched = full;
        await waitFor(() => full > fetched, 'the pruned v1 fetched');
        await new Promise((resolve) => setTimeout(resolve, 200));
        expect(second.bundles.get('pr')?.revision).toBe('v3');
      } finally {
        await second.close();
      }
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
