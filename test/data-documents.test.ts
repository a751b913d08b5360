import { mkdtempSync, rmSync } from 'node:fs';
import type { DatabaseSync } from 'node:sqlite';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ownedByRoots, parseDataPath } from '../src/data/data-path.ts';
import { LiveData } from '../src/data/documents.ts';
import { liveDataChecks } from '../src/data/entitlements-schema.ts';
import type { LiveDataOptions, LiveDataSnapshot } from '../src/data/documents.ts';
import { openDataDatabase } from '../src/data/persistence.ts';

let dir: string;
let databases: DatabaseSync[];
let clock: number;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'arbiter-data-'));
  databases = [];
  clock = Date.UTC(2026, 0, 1);
});

afterEach(() => {
  for (const db of databases) if (db.isOpen) db.close();
  rmSync(dir, { recursive: true, force: true });
});

function open(options: LiveDataOptions = {}): LiveData {
  const db = openDataDatabase(join(dir, 'arbiter.db'));
  databases.push(db);
  return new LiveData(db, { now: () => clock, ...options });
}

function codeOf(action: () => unknown): string | undefined {
  try {
    action();
  } catch (error) {
    return (error as { code?: string }).code;
  }
  return undefined;
}

const alice = ['entitlements', 'user:alice@acme.example'];

describe('LiveData write failures', () => {
  it('a write SQLite cannot commit is data_store_write_failed and changes nothing', async () => {
    const live = open();
    live.put(alice, { roles: ['viewer'] });
    const before = live.snapshot();
    databases[0]!.exec('PRAGMA busy_timeout = 0');
    const { DatabaseSync: Database } = await import('node:sqlite');
    const blocker = new Database(join(dir, 'arbiter.db'));
    databases.push(blocker);
    blocker.exec('BEGIN EXCLUSIVE');
    expect(codeOf(() => live.put(alice, { roles: ['admin'] }))).toBe('data_store_write_failed');
    expect(live.snapshot()).toBe(before);
    blocker.exec('ROLLBACK');
    live.put(alice, { roles: ['admin'] });
    expect(live.get(alice)).toEqual({ roles: ['admin'] });
  });
});

describe('LiveData writes', () => {
  it('puts, reads, patches and deletes values by path', () => {
    const live = open();
    live.put(alice, { roles: ['viewer'] });
    expect(live.get(alice)).toEqual({ roles: ['viewer'] });
    expect(live.get(['entitlements'])).toEqual({ 'user:alice@acme.example': { roles: ['viewer'] } });

    live.patch(alice, [{ op: 'add', path: '/roles/-', value: 'editor' }]);
    expect(live.get([...alice, 'roles'])).toEqual(['viewer', 'editor']);

    live.delete(alice);
    expect(live.get(alice)).toBeUndefined();
    expect(live.get(['entitlements'])).toEqual({});
    live.delete(['entitlements']);
    expect(live.get([])).toEqual({});
  });

  it('creates missing parents but refuses to write through a non-object', () => {
    const live = open();
    live.put(['a', 'b', 'c'], 1);
    expect(live.get(['a'])).toEqual({ b: { c: 1 } });
    expect(codeOf(() => live.put(['a', 'b', 'c', 'd'], 2))).toBe('data_path_conflict');
  });

  it('reports missing targets for delete and patch', () => {
    const live = open();
    expect(codeOf(() => live.delete(['nothing']))).toBe('data_not_found');
    live.put(['doc'], { a: 1 });
    expect(codeOf(() => live.delete(['doc', 'b']))).toBe('data_not_found');
    expect(codeOf(() => live.delete(['doc', 'a', 'deeper']))).toBe('data_not_found');
    expect(codeOf(() => live.patch(['doc', 'b'], []))).toBe('data_not_found');
  });

  it('refuses to write at the root', () => {
    const live = open();
    expect(codeOf(() => live.put([], {}))).toBe('data_path_invalid');
    expect(codeOf(() => live.patch([], []))).toBe('data_path_invalid');
    expect(codeOf(() => live.delete([]))).toBe('data_path_invalid');
  });

  it('checks the entries of the entitlements document a write changes, and lets a delete through', () => {
    const grant = { id: 'g', actions: ['invoices.read'], tenants: ['acme'] };
    // Stored before the check (or with data.check_entitlements off): kept, and left alone.
    open().put(['entitlements'], { 'user:bob': { grants: { first: grant } } });
    databases.pop()!.close();
    const live = open({ checks: liveDataChecks(true) });
    live.put(alice, { grants: [grant] });
    live.patch(alice, [{ op: 'add', path: '/grants/-', value: { ...grant, id: 'g2' } }]);
    expect(codeOf(() => live.patch(['entitlements'], [{ op: 'add', path: '/user:bob/description', value: 'Bob' }]))).toBe('entitlements_invalid');
    expect(codeOf(() => live.put(alice, { grants: [{ ...grant, tenants: 'acme' }] }))).toBe('entitlements_invalid');
    expect(codeOf(() => live.put(['entitlements'], []))).toBe('entitlements_invalid');
    live.delete([...alice, 'grants']);
    live.delete(['entitlements', 'user:bob']);
    expect(live.get(['entitlements'])).toEqual({ 'user:alice@acme.example': {} });
    // Only the entitlements document is checked.
    live.put(['approvals'], { a: { grants: 'any' } });
  });

  it('refuses writes under, or above, a bundle root with data_path_owned_by_bundle', () => {
    const owned = ownedByRoots(['authz', 'shared/policy']);
    const live = open({ ownerOf: (path) => (owned(path) ? 'authz' : undefined) });
    for (const path of [['authz'], ['authz', 'x'], ['shared'], ['shared', 'policy', 'y']]) {
      expect(codeOf(() => live.put(path, 1))).toBe('data_path_owned_by_bundle');
    }
    expect(codeOf(() => live.patch(['authz'], []))).toBe('data_path_owned_by_bundle');
    expect(codeOf(() => live.delete(['authz']))).toBe('data_path_owned_by_bundle');
    live.put(['shared', 'other'], 1);
    live.put(['authzx'], 1);
    expect(live.get([])).toEqual({ shared: { other: 1 }, authzx: 1 });
  });

  it('treats an empty bundle root as owning everything', () => {
    const live = open({ ownerOf: () => 'everything' });
    expect(codeOf(() => live.put(['entitlements'], {}))).toBe('data_path_owned_by_bundle');
  });

  it('rejects values that are not JSON', () => {
    const live = open();
    for (const value of [undefined, () => 1, Number.NaN, Infinity, new Date(), { a: undefined }, { '': 1 }, [1, , 3]]) {
      expect(codeOf(() => live.put(['doc'], value))).toBe('data_invalid');
    }
    expect(live.snapshot().version).toBe(0);
  });

  it('enforces the depth limit counting the path', () => {
    const live = open({ limits: { maxDepth: 3 } });
    live.put(['a', 'b'], { c: 1 });
    expect(codeOf(() => live.put(['a', 'b'], { c: { d: 1 } }))).toBe('data_too_deep');
    expect(codeOf(() => live.put(['a', 'b', 'c', 'd'], 1))).toBe('data_too_deep');
    expect(codeOf(() => live.patch(['a'], [{ op: 'add', path: '/b/c', value: [1] }]))).toBe('data_too_deep');
    expect(live.get(['a'])).toEqual({ b: { c: 1 } });
  });

  it('enforces the total size limit across documents, counting replacements once', () => {
    const live = open({ limits: { maxTotalBytes: 40 } });
    live.put(['one'], 'x'.repeat(16)); // 18 bytes serialized
    live.put(['two'], 'y'.repeat(16));
    expect(codeOf(() => live.put(['three'], 'z'.repeat(16)))).toBe('data_too_large');
    live.put(['one'], 'x'.repeat(20)); // replaces 18 with 22: 40 in total
    expect(codeOf(() => live.patch(['two'], [{ op: 'replace', path: '', value: 'y'.repeat(17) }]))).toBe('data_too_large');
    live.delete(['two']);
    live.put(['three'], 'z'.repeat(16));
    expect(Object.keys(live.get([]) as object)).toEqual(['one', 'three']);
  });

  it('applies patches all or nothing', () => {
    const live = open();
    live.put(['doc'], { a: 1 });
    const before = live.snapshot();
    const code = codeOf(() =>
      live.patch(['doc'], [
        { op: 'add', path: '/b', value: 2 },
        { op: 'test', path: '/a', value: 2 },
      ]),
    );
    expect(code).toBe('json_patch_test_failed');
    expect(live.snapshot()).toBe(before);
    expect(live.get(['doc'])).toEqual({ a: 1 });
  });

  it('keeps __proto__ as an ordinary key', () => {
    const live = open();
    live.put(['doc', '__proto__', 'x'], 1);
    expect(live.get(['doc', '__proto__'])).toEqual({ x: 1 });
    expect(live.get(['doc', 'constructor'])).toBeUndefined();
    expect(Object.getPrototypeOf(live.get(['doc']))).toBe(Object.prototype);
  });
});

describe('LiveData snapshots', () => {
  it('increments the version on every update and isolates earlier snapshots', () => {
    const live = open();
    const input = { roles: ['viewer'] };
    const v1 = live.put(alice, input);
    input.roles.push('admin');
    expect(v1.version).toBe(1);
    expect(live.get(alice)).toEqual({ roles: ['viewer'] });

    const v2 = live.patch(alice, [{ op: 'replace', path: '/roles/0', value: 'owner' }]);
    const v3 = live.put(['approvals'], { req1: true });
    expect([v2.version, v3.version]).toEqual([2, 3]);
    expect(v1.data).toEqual({ entitlements: { 'user:alice@acme.example': { roles: ['viewer'] } } });
    expect(v1.documents).not.toHaveProperty('approvals');
    expect(v3.data).toEqual({ entitlements: { 'user:alice@acme.example': { roles: ['owner'] } }, approvals: { req1: true } });
    // Untouched documents are shared, not copied, between snapshots.
    expect(v3.data.entitlements).toBe(v2.data.entitlements);
  });

  it('hands out deeply frozen snapshots', () => {
    const live = open();
    const snapshot = live.put(alice, { roles: ['viewer'] });
    const roles = (snapshot.data.entitlements as Record<string, { roles: string[] }>)['user:alice@acme.example']!.roles;
    expect(() => roles.push('admin')).toThrow(TypeError);
    expect(Object.isFrozen(snapshot.data)).toBe(true);
    expect(Object.isFrozen(snapshot.documents)).toBe(true);
  });

  it('notifies listeners with the new snapshot after it is visible, and unsubscribes', () => {
    const live = open();
    const seen: LiveDataSnapshot[] = [];
    const unsubscribe = live.onChange((snapshot) => {
      expect(live.snapshot()).toBe(snapshot);
      seen.push(snapshot);
    });
    live.put(['doc'], 1);
    unsubscribe();
    live.put(['doc'], 2);
    expect(seen.map((s) => s.version)).toEqual([1]);
  });

  it('isolates a throwing listener from the write and from other listeners', () => {
    const errors: unknown[] = [];
    const live = open({ onListenerError: (error) => errors.push(error) });
    const versions: number[] = [];
    live.onChange(() => {
      throw new Error('push failed');
    });
    live.onChange((snapshot) => versions.push(snapshot.version));
    expect(live.put(['doc'], 1).version).toBe(1);
    expect(versions).toEqual([1]);
    expect(errors).toHaveLength(1);
  });
});

describe('LiveData status', () => {
  it('reports source, age and staleness per document', () => {
    const live = open();
    live.put(['entitlements'], {}, { source: 'hr-sync', max_age_s: 60 });
    clock += 30_000;
    live.put(['approvals'], {});
    clock += 30_500;
    expect(live.status(clock)).toEqual({
      entitlements: { source: 'hr-sync', updated_at: Date.UTC(2026, 0, 1) / 1000, age_s: 60, max_age_s: 60, stale: true },
      approvals: { source: null, updated_at: Date.UTC(2026, 0, 1) / 1000 + 30, age_s: 30, stale: false },
    });
    expect(live.status(clock - 500).entitlements!.stale).toBe(false);
  });

  it('keeps source and max age across writes that do not restate them, and refreshes updated_at', () => {
    const live = open();
    live.put(['entitlements'], { a: 1 }, { source: 'hr-sync', max_age_s: 60 });
    clock += 120_000;
    expect(live.status(clock).entitlements!.stale).toBe(true);
    live.patch(['entitlements'], [{ op: 'add', path: '/b', value: 2 }]);
    expect(live.status(clock).entitlements).toEqual({
      source: 'hr-sync',
      updated_at: clock / 1000,
      age_s: 0,
      max_age_s: 60,
      stale: false,
    });
    live.put(['entitlements', 'c'], 3, { max_age_s: 10 });
    expect(live.snapshot().documents.entitlements).toEqual({ source: 'hr-sync', max_age_s: 10, updated_at: clock });
  });

  it('applies data.default_max_age_s to documents written without a max age of their own', () => {
    const live = open({ defaultMaxAgeS: 3600 });
    live.put(['entitlements'], {});
    live.put(['approvals'], {}, { max_age_s: 60 });
    clock += 3_601_000;
    expect(live.status(clock)).toMatchObject({ entitlements: { max_age_s: 3600, stale: true }, approvals: { max_age_s: 60, stale: true } });
    expect(live.status(clock - 2_000).entitlements).toMatchObject({ stale: false });
  });

  it('rejects invalid metadata without writing', () => {
    const live = open();
    expect(codeOf(() => live.put(['doc'], 1, { max_age_s: -1 }))).toBe('data_meta_invalid');
    expect(codeOf(() => live.put(['doc'], 1, { source: '' }))).toBe('data_meta_invalid');
    expect(live.get(['doc'])).toBeUndefined();
  });

  it('keeps a document stale across a deletion inside it: taking something away says nothing of the rest', () => {
    const live = open();
    live.put(['entitlements'], { 'user:alice': { grants: [] }, 'user:mallory': { grants: [] } }, { source: 'hr-sync', max_age_s: 60 });
    // The feed stops; past its max age, decisions on the document fail closed.
    clock += 120_000;
    expect(live.status(clock).entitlements).toMatchObject({ age_s: 120, stale: true });
    // An operator removes one subject during the outage: the others' grants are as old as before,
    // and must not be served as fresh for another max age.
    live.delete(['entitlements', 'user:mallory']);
    expect(live.status(clock).entitlements).toMatchObject({ source: 'hr-sync', updated_at: Date.UTC(2026, 0, 1) / 1000, age_s: 120, stale: true });
    expect(live.snapshot().documents.entitlements!.updated_at).toBe(Date.UTC(2026, 0, 1));
    // The feed's next write makes it fresh again.
    live.patch(['entitlements'], [{ op: 'remove', path: '/user:alice' }]);
    expect(live.status(clock).entitlements).toMatchObject({ age_s: 0, stale: false });
  });

  it('drops the metadata of a deleted document', () => {
    const live = open();
    live.put(['doc'], 1, { source: 's' });
    live.delete(['doc']);
    expect(live.status(clock)).toEqual({});
  });
});

describe('LiveData persistence', () => {
  it('reloads the last committed state, version and metadata after a restart', () => {
    const first = open({ limits: { maxTotalBytes: 100 } });
    first.put(alice, { roles: ['viewer'] }, { source: 'hr-sync', max_age_s: 300 });
    first.put(['approvals'], { r1: 'granted' });
    first.patch(alice, [{ op: 'add', path: '/roles/-', value: 'editor' }]);
    first.put(['scratch'], 1);
    first.delete(['scratch']);
    expect(codeOf(() => first.put(['big'], 'x'.repeat(100)))).toBe('data_too_large');
    const committed = first.snapshot();
    databases.pop()!.close();

    const second = open({ limits: { maxTotalBytes: 100 } });
    expect(second.snapshot().version).toBe(committed.version);
    expect(second.snapshot().data).toEqual(committed.data);
    expect(second.snapshot().documents).toEqual(committed.documents);
    expect(Object.isFrozen(second.get(alice))).toBe(true);
    // Sizes are restored too: the limit still counts the reloaded documents.
    expect(codeOf(() => second.put(['big'], 'x'.repeat(60)))).toBe('data_too_large');
    expect(second.put(['next'], 1).version).toBe(committed.version + 1);
  });

  it('after the size limit is lowered below what is stored, accepts writes that do not grow the total', () => {
    const first = open({ limits: { maxTotalBytes: 1_000_000 } });
    first.put(['entitlements'], { 'user:mallory': { roles: ['admin'] }, 'user:bob': { roles: ['viewer'] } });
    first.put(['catalogue'], { blob: 'x'.repeat(200_000) });
    databases.pop()!.close();

    const live = open({ limits: { maxTotalBytes: 100_000 } });
    // Removing access must not be blocked by data stored under the old limit.
    live.delete(['entitlements', 'user:mallory']);
    expect(live.get(['entitlements', 'user:mallory'])).toBeUndefined();
    live.patch(['entitlements'], [{ op: 'replace', path: '/user:bob/roles/0', value: 'banned' }]); // same size
    live.put(['catalogue'], { blob: 'x'.repeat(150_000) });
    // Still refused: anything that grows the total while it is over the limit.
    expect(codeOf(() => live.put(['entitlements', 'user:eve'], { roles: ['viewer'] }))).toBe('data_too_large');
    try {
      live.patch(['entitlements'], [{ op: 'add', path: '/user:bob/roles/-', value: 'x' }]);
      expect.unreachable();
    } catch (error) {
      expect(error).toMatchObject({ code: 'data_too_large', message: expect.stringMatching(/would grow from \d+ to \d+ bytes, over the limit of 100000/) });
    }
    expect(live.get(['entitlements'])).toEqual({ 'user:bob': { roles: ['banned'] } });
    live.delete(['catalogue']);
    live.put(['entitlements', 'user:eve'], { roles: ['viewer'] });
  });

  it('does not change memory when the commit fails', () => {
    const live = open();
    live.put(['doc'], 1);
    databases[0]!.close();
    expect(() => live.put(['doc'], 2)).toThrow();
    expect(live.get(['doc'])).toBe(1);
    expect(live.snapshot().version).toBe(1);
  });
});

describe('parseDataPath', () => {
  it('splits on / and percent-decodes each segment on its own', () => {
    expect(parseDataPath('entitlements/user%3Aalice%40acme.example')).toEqual(alice);
    expect(parseDataPath('/a%2Fb/c/')).toEqual(['a/b', 'c']);
    expect(parseDataPath('')).toEqual([]);
    expect(codeOf(() => parseDataPath('a//b'))).toBe('data_path_invalid');
    expect(codeOf(() => parseDataPath('a/%E0%A4%A'))).toBe('data_path_invalid');
  });
});
