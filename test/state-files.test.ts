import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import fsPromises, { open } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../src/errors.ts';
import { BundleStore } from '../src/policy/store.ts';
import { loadOrCreateDevIssuerKey, mintDevToken } from '../src/tokens/dev-issuer.ts';
import { capturingLogger, startTestArbiter, tempDir } from './support/arbiter.ts';
import { build, writeBundleSource } from './support/bundle-sources.ts';

/** What Arbiter writes is for its own user: nothing group or others can read or write, whatever the umask. */
let savedUmask: number | undefined;
afterEach(() => {
  if (savedUmask !== undefined) process.umask(savedUmask);
  savedUmask = undefined;
});

function modes(dir: string, found: { path: string; mode: number; dir: boolean }[] = []): { path: string; mode: number; dir: boolean }[] {
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    const stat = statSync(path);
    found.push({ path, mode: stat.mode & 0o777, dir: stat.isDirectory() });
    if (stat.isDirectory()) modes(path, found);
  }
  return found;
}

describe('state on disk', () => {
  it.each([
    ['0000', 0o000],
    ['0022', 0o022],
  ])('keeps directories and files to the owner under umask %s', async (_label, umask) => {
    const root = tempDir();
    savedUmask = process.umask(umask);
    const arbiter = await startTestArbiter({
      data: { path: join(root, 'state', 'data.db') },
      decision_log: { path: join(root, 'audit', 'decisions.db') },
      bundles: { store: join(root, 'store', 'bundles') },
    });
    await new BundleStore(join(root, 'store', 'bundles')).writeIndex({ name: 'x', revisions: [], active: null });
    await arbiter.close();
    const written = modes(root);
    expect(written.map((entry) => entry.path)).toEqual(expect.arrayContaining([join(root, 'audit', 'decisions.db'), join(root, 'state', 'data.db')]));
    expect(written.filter((entry) => (entry.mode & 0o077) !== 0).map((entry) => `${entry.path} ${entry.mode.toString(8)}`)).toEqual([]);
  });

  it('generates one development issuer key when two first starts race (the server and arbiter token)', async () => {
    const dir = tempDir();
    const file = join(dir, 'dev.jwk.json');
    const keys = await Promise.all([loadOrCreateDevIssuerKey(file), loadOrCreateDevIssuerKey(file), loadOrCreateDevIssuerKey(file)]);
    expect(new Set(keys.map((key) => key.publicJwk.kid)).size).toBe(1);
    expect((await loadOrCreateDevIssuerKey(file)).publicJwk.kid).toBe(keys[0]!.publicJwk.kid);
    // Written under another name first: nothing but the key is left beside it.
    expect(readdirSync(dir)).toEqual(['dev.jwk.json']);
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('refuses a development issuer key that group or others can read', async () => {
    const file = join(tempDir(), 'dev.jwk.json');
    await loadOrCreateDevIssuerKey(file);
    chmodSync(file, 0o644);
    const error = await loadOrCreateDevIssuerKey(file).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).issues).toEqual([{ path: 'dev_issuer.key_file', message: expect.stringContaining('chmod 600') }]);
  });

  it('stops start-up, naming dev_issuer.key_file, on a key file it cannot read, rather than generate a key or crash', async () => {
    const dir = tempDir();
    // A link to a key that is not there (a secret not mounted), and a link to itself.
    symlinkSync(join(dir, 'unmounted', 'dev.jwk.json'), join(dir, 'dangling.jwk.json'));
    symlinkSync(join(dir, 'loop.jwk.json'), join(dir, 'loop.jwk.json'));
    for (const name of ['dangling.jwk.json', 'loop.jwk.json']) {
      const keyFile = join(dir, name);
      const refused = await startTestArbiter({ dev_issuer: { enabled: true, key_file: keyFile } }).then(
        async (started) => void (await started.close()),
        (error: unknown) => error,
      );
      expect(refused, name).toBeInstanceOf(ConfigError);
      expect((refused as ConfigError).issues, name).toEqual([{ path: 'dev_issuer.key_file', message: expect.stringContaining(keyFile) }]);
    }
    expect(readdirSync(dir).sort()).toEqual(['dangling.jwk.json', 'loop.jwk.json']);
  });

  it('stops start-up, naming dev_issuer.key_file, on a key whose tokens the server would not accept', async () => {
    const dir = tempDir();
    const good = await loadOrCreateDevIssuerKey(join(dir, 'good.jwk.json'));
    const other = await loadOrCreateDevIssuerKey(join(dir, 'other.jwk.json'));
    const { d: _d, ...p384 } = { ...good.privateJwk, crv: 'P-384' };
    const broken: Record<string, object> = {
      // A private half that is not the public one's: every token it signs fails its signature.
      'another key\'s d': { ...good.privateJwk, d: other.privateJwk.d },
      'a P-384 key': { ...p384, d: good.privateJwk.d },
      'an alg other than ES256': { ...good.privateJwk, alg: 'RS256' },
      'a use other than sig': { ...good.privateJwk, use: 'enc' },
      'a kid that is not a string': { ...good.privateJwk, kid: 7 },
    };
    for (const [label, jwk] of Object.entries(broken)) {
      const keyFile = join(dir, `${label.replaceAll(/\W/g, '-')}.jwk.json`);
      writeFileSync(keyFile, JSON.stringify(jwk), { mode: 0o600 });
      const refused = await startTestArbiter({ dev_issuer: { enabled: true, key_file: keyFile } }).then(
        async (started) => void (await started.close()),
        (error: unknown) => error,
      );
      expect(refused, label).toBeInstanceOf(ConfigError);
      expect((refused as ConfigError).issues, label).toEqual([{ path: 'dev_issuer.key_file', message: expect.stringContaining(keyFile) }]);
      // Kept as it is: the operator decides whether to delete it.
      expect(JSON.parse(readFileSync(keyFile, 'utf8')), label).toEqual(jwk);
    }
  });
});

describe('the decision log checkpoint key', () => {
  it('is created with its directory when decision_log.checkpoint.key_path names one not made yet, as the log\'s own is', async () => {
    // config check called such a key_path valid ("created if missing"); start-up stopped on
    // "ENOENT: scandir" naming the key, the only state path whose directory was not created.
    const root = tempDir();
    const keyPath = join(root, 'keys', 'audit', 'checkpoint.jwk');
    const arbiter = await startTestArbiter({ decision_log: { path: join(root, 'decisions.db'), checkpoint: { key_path: keyPath } } });
    await arbiter.close();
    expect(statSync(keyPath).mode & 0o777).toBe(0o600);
    expect(statSync(join(root, 'keys', 'audit')).mode & 0o077).toBe(0);
  });
});

describe('state files named twice', () => {
  it('refuses data.path and decision_log.path naming one file, saying so, before either is opened', async () => {
    const dir = tempDir();
    const file = join(dir, 'state.db');
    symlinkSync(dir, join(dir, 'link'));
    for (const decisions of [file, join(dir, 'link', 'state.db')]) {
      const failure = await startTestArbiter({ data: { path: file }, decision_log: { path: decisions } }).then(
        async (started) => void (await started.close()),
        (error: unknown) => error,
      );
      expect(failure).toBeInstanceOf(ConfigError);
      expect((failure as ConfigError).issues).toEqual([{ path: 'decision_log.path', message: expect.stringContaining('data.path') }]);
      // Neither store was created in it: the data tables would make it a decision log "changed outside Arbiter".
      expect(existsSync(file)).toBe(false);
    }
  });
});

describe('a live data store changed outside Arbiter', () => {
  it.each([
    ['JSON that does not parse', "UPDATE live_documents SET json = '{\"grants\": [' WHERE name = 'approvals'", /approvals.*JSON/],
    ['JSON that is no live data (an empty key)', "UPDATE live_documents SET json = '{\"\": 1}' WHERE name = 'approvals'", /approvals.*object keys must be non-empty/],
    ['metadata that does not parse', "UPDATE live_documents SET meta = 'yesterday' WHERE name = 'approvals'", /approvals.*metadata.*JSON/],
    ['metadata of the wrong shape', "UPDATE live_documents SET meta = '{\"updated_at\": \"yesterday\"}' WHERE name = 'approvals'", /approvals.*metadata.*updated_at/],
  ])('stops start-up naming data.path, the document and what is wrong: %s', async (_label, damage, why) => {
    const path = join(tempDir(), 'data.db');
    const first = await startTestArbiter({ data: { path } });
    first.liveData.put(['approvals'], { grants: [] }, { source: 'approvals-sync' });
    await first.close();
    const db = new DatabaseSync(path);
    db.exec(damage);
    db.close();
    const refused = await startTestArbiter({ data: { path } }).then(
      async (started) => void (await started.close()),
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(ConfigError);
    expect((refused as ConfigError).issues).toEqual([{ path: 'data.path', message: expect.stringMatching(why) }]);
    expect((refused as ConfigError).issues[0]!.message).toContain(path);
  });
});

describe('bundle store durability', () => {
  /** Records the path of every FileHandle.sync() while `action` runs (Linux: from /proc/self/fd). */
  async function syncedDuring(action: () => Promise<unknown>): Promise<string[]> {
    const probe = await open(join(tempDir(), 'probe'), 'w');
    const prototype = Object.getPrototypeOf(probe) as { sync(this: { fd: number }): Promise<void> };
    await probe.close();
    const original = prototype.sync;
    const synced: string[] = [];
    prototype.sync = function (this: { fd: number }) {
      synced.push(readlinkSync(`/proc/self/fd/${this.fd}`));
      return original.call(this);
    };
    try {
      await action();
    } finally {
      prototype.sync = original;
    }
    return synced;
  }

  it('makes a new bundle, and a removed one, durable in the store directory itself', async () => {
    const root = join(tempDir(), 'bundles');
    const store = new BundleStore(root);
    // The entry for the new bundle's directory lives in the store directory: power loss must not lose it.
    expect(await syncedDuring(() => store.writeIndex({ name: 'fresh', revisions: [], active: null }))).toContain(root);
    // Nor bring back a bundle whose removal was acknowledged.
    expect(await syncedDuring(() => store.remove('fresh'))).toContain(root);
  });
});

describe('bundle removal', () => {
  /** Runs `action` while deleting anything renamed away by a removal fails, as on a disk gone read-only. */
  async function whileRemovedDirsStick<T>(action: () => Promise<T>): Promise<T> {
    const original = fsPromises.rm;
    fsPromises.rm = async (path, options) => {
      if (String(path).endsWith('.removed')) throw Object.assign(new Error(`EACCES: permission denied, rm '${String(path)}'`), { code: 'EACCES' });
      return original(path, options);
    };
    syncBuiltinESMExports();
    try {
      return await action();
    } finally {
      fsPromises.rm = original;
      syncBuiltinESMExports();
    }
  }

  it('is done once the bundle is renamed away, even when the store directory cannot then be synced', async () => {
    const dir = tempDir();
    const store = join(dir, 'bundles');
    const archive = build(writeBundleSource(dir, 'unsynced'), join(dir, 'unsynced.tar.gz'), 'v1');
    const { logger, lines } = capturingLogger();
    const arbiter = await startTestArbiter({ bundles: { store } }, { logger });
    const probe = await open(join(dir, 'probe'), 'w');
    const prototype = Object.getPrototypeOf(probe) as { sync(this: { fd: number }): Promise<void> };
    await probe.close();
    const original = prototype.sync;
    try {
      await arbiter.bundleLifecycle.accept('unsynced', archive, 'admin');
      // The store directory's sync fails (an I/O error): the rename has happened all the same.
      prototype.sync = function (this: { fd: number }) {
        if (readlinkSync(`/proc/self/fd/${this.fd}`) === store) return Promise.reject(Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' }));
        return original.call(this);
      };
      await arbiter.bundleLifecycle.remove('unsynced', 'admin');
      prototype.sync = original;
      expect(arbiter.bundles.get('unsynced')).toBeUndefined();
      expect(lines.find((line) => line.msg === 'removed bundle files left behind')).toMatchObject({ leftover: expect.stringContaining('power loss') });
    } finally {
      prototype.sync = original;
      await arbiter.close();
    }
  });

  it('is done once the bundle is renamed away: a deletion that fails after it is logged, and finished at the next start', async () => {
    const dir = tempDir();
    const store = join(dir, 'bundles');
    const archive = build(writeBundleSource(dir, 'gone'), join(dir, 'gone.tar.gz'), 'v1');
    const { logger, lines } = capturingLogger();
    const first = await startTestArbiter({ bundles: { store } }, { logger });
    try {
      await first.bundleLifecycle.accept('gone', archive, 'admin');
      await whileRemovedDirsStick(() => first.bundleLifecycle.remove('gone', 'admin'));
      // Served no more, as the store (renamed away) says: not left active over a removal that stuck.
      expect(first.bundles.get('gone')).toBeUndefined();
      expect(await first.bundleLifecycle.status('gone')).toBeUndefined();
      expect(lines.find((line) => line.msg === 'removed bundle files left behind')).toMatchObject({ bundle: 'gone', leftover: expect.stringContaining('EACCES') });
      expect(readdirSync(store).filter((entry) => entry.endsWith('.removed'))).toHaveLength(1);
    } finally {
      await first.close();
    }
    const again = await startTestArbiter({ bundles: { store } });
    try {
      expect(again.bundles.get('gone')).toBeUndefined();
      expect(readdirSync(store).filter((entry) => entry.endsWith('.removed'))).toEqual([]);
    } finally {
      await again.close();
    }
  });
});

describe('data seeds', () => {
  it('never bring back a seeded document whose deletion was acknowledged, restart after restart', async () => {
    const dir = tempDir();
    const seed = join(dir, 'entitlements.json');
    writeFileSync(seed, JSON.stringify({ 'user:alice': { grants: [] } }));
    const keyFile = join(dir, 'dev.jwk.json');
    const config = {
      dev_issuer: { enabled: true, key_file: keyFile },
      admin: { allow_dev_issuer: true },
      data: { path: join(dir, 'data.db'), seed: { entitlements: seed } },
    };
    const admin = await mintDevToken(await loadOrCreateDevIssuerKey(keyFile), { sub: 'ops@example', scope: 'arbiter.data.read arbiter.data.write' });
    const entitlements = (arbiter: { url: string }, method = 'GET') =>
      fetch(`${arbiter.url}/v1/data/entitlements`, { method, headers: { authorization: `Bearer ${admin}` } }).then((response) => response.status);
    const first = await startTestArbiter(config);
    expect(await entitlements(first)).toBe(200);
    expect(await entitlements(first, 'DELETE')).toBe(204);
    await first.close();
    for (let restart = 0; restart < 2; restart++) {
      const again = await startTestArbiter(config);
      expect(await entitlements(again)).toBe(404);
      await again.close();
    }
  });

  it('load from a file whose path is longer than a source may be, reporting its end as the source', async () => {
    const dir = join(tempDir(), 'd'.repeat(200), 'e'.repeat(100));
    mkdirSync(dir, { recursive: true });
    const seed = join(dir, 'entitlements.json');
    writeFileSync(seed, JSON.stringify({ 'user:alice': { grants: [] } }));
    const arbiter = await startTestArbiter({ data: { seed: { entitlements: seed } } });
    try {
      const { source } = arbiter.liveData.status(Date.now()).entitlements!;
      expect(source!.length).toBeLessThanOrEqual(256);
      expect(source).toMatch(/^seed:….*\/entitlements\.json$/);
      expect(seed.endsWith(source!.slice('seed:…'.length))).toBe(true);
    } finally {
      await arbiter.close();
    }
  });
});
