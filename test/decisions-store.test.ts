import { generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { DatabaseSync, StatementSync, type SQLInputValue } from 'node:sqlite';
import { pathToFileURL } from 'node:url';
import type { Worker } from 'node:worker_threads';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DecisionReader } from '../src/decisions/reader-thread.ts';
import { DecisionStore } from '../src/decisions/store.ts';
import type { DecisionFilters } from '../src/decisions/query.ts';
import type { DecisionRecord, StoredDecision } from '../src/decisions/record.ts';
import { chainHash, GENESIS_HASH, loadOrCreateCheckpointKey, signMark } from '../src/decisions/chain.ts';
import type { MarkRow } from '../src/decisions/chain.ts';
import { canonicalJson } from '../src/decisions/canonical-json.ts';
import { deriveIndexColumns } from '../src/decisions/record.ts';
import { pruneStep } from '../src/decisions/retention.ts';
import { migrate } from '../src/decisions/schema.ts';
import { ChainWriter } from '../src/decisions/writer.ts';
import { decision, tempDir } from './support/decisions.ts';

let temp: ReturnType<typeof tempDir>;
let store: DecisionStore | undefined;

beforeEach(() => {
  temp = tempDir();
});

afterEach(async () => {
  await store?.close();
  store = undefined;
  temp.cleanup();
});

async function open(options: Record<string, unknown> = {}): Promise<DecisionStore> {
  store = await DecisionStore.open({ path: temp.path, ...options });
  return store;
}

function ids(decisions: readonly StoredDecision[]): string[] {
  return decisions.map((d) => d.decision_id);
}

describe('append and get', () => {
  it('stores the record as given, chained from genesis', async () => {
    const log = await open();
    const record = decision({ sub: 'alice', reasons: ['granted', 'mfa_seen'] });
    await log.append(record);

    const stored = log.get(record.decision_id);
    expect(stored).toMatchObject({ ...record, seq: 1, prev_hash: GENESIS_HASH });
    expect(stored?.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(log.get('0190e0a0-0000-7000-8000-000000000000')).toBeUndefined();
  });

  it('group-commits 1,000 concurrent appends: all stored, far fewer transactions, chain intact', async () => {
    const log = await open();
    const batches: number[] = [];
    log.onCommitted((committed) => batches.push(committed.length));
    const records = Array.from({ length: 1_000 }, (_, i) => decision({ sub: `user-${i}` }));

    await Promise.all(records.map((record) => log.append(record)));

    expect(batches.reduce((a, b) => a + b, 0)).toBe(1_000);
    expect(batches.length).toBeLessThanOrEqual(10);
    for (const record of records) expect(log.get(record.decision_id)?.decision_id).toBe(record.decision_id);
    expect(log.stats).toMatchObject({ pending: 0, committed: 1_000, failed: 0 });
    expect(log.stats.commits).toBe(batches.length);
    expect(await log.verify()).toMatchObject({ ok: true, checked: 1_000 });
  });

  it('stores values with newlines, quotes and non-ASCII text exactly', async () => {
    const log = await open();
    const record = decision({ sub: 'line one\nline two "quoted" \u2028 é 🚀\r\n' });
    const other = decision({ sub: '\n' });
    await Promise.all([log.append(record), log.append(other)]);
    expect(log.get(record.decision_id)).toMatchObject(record);
    expect(log.get(other.decision_id)).toMatchObject(other);
    expect(log.query({ sub: (record.input.subject as { sub: string }).sub }).decisions.map((d) => d.decision_id)).toEqual([record.decision_id]);
    expect(await log.verify()).toMatchObject({ ok: true, checked: 2 });
  });

  it('hands committed records to listeners in chain order', async () => {
    const log = await open();
    const seen: StoredDecision[] = [];
    const unsubscribe = log.onCommitted((committed) => seen.push(...committed));
    const records = Array.from({ length: 5 }, () => decision());
    await Promise.all(records.map((record) => log.append(record)));
    unsubscribe();
    await log.append(decision());

    expect(ids(seen)).toEqual(ids(records as StoredDecision[]));
    expect(seen.map((d) => d.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(seen[1]?.prev_hash).toBe(seen[0]?.hash);
  });

  it('refuses an invalid record, and a duplicate id without failing its batch-mates', async () => {
    const log = await open();
    const bad = { ...decision(), decision_id: 'not-a-uuid' };
    await expect(log.append(bad)).rejects.toMatchObject({ code: 'decision_record_invalid' });
    await expect(log.append({ ...decision(), extra: 1 } as DecisionRecord)).rejects.toMatchObject({
      code: 'decision_record_invalid',
    });

    const seen: StoredDecision[] = [];
    log.onCommitted((committed) => seen.push(...committed));
    const first = decision();
    const other = decision();
    const results = await Promise.allSettled([log.append(first), log.append({ ...first }), log.append(other)]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(log.get(other.decision_id)).toBeDefined();
    // Listeners learn the links as stored, the failed record skipped without a gap in seq.
    expect(seen).toEqual([log.get(first.decision_id), log.get(other.decision_id)]);
    expect(seen.map((d) => d.seq)).toEqual([1, 2]);
    expect(await log.verify()).toMatchObject({ ok: true, checked: 2 });
  });

  it('continues the chain after close and reopen', async () => {
    let log = await open();
    await Promise.all([log.append(decision()), log.append(decision())]);
    await log.close();

    log = await open();
    const third = decision();
    await log.append(third);
    expect(log.get(third.decision_id)?.seq).toBe(3);
    expect(await log.verify()).toMatchObject({ ok: true, checked: 3 });
  });

  it('close() leaves every record in the database file itself, no -wal file beside it (a copy of the file is the whole log)', async () => {
    const log = await open();
    await Promise.all([log.append(decision()), log.append(decision()), log.append(decision())]);
    await log.close();
    expect(existsSync(`${temp.path}-wal`)).toBe(false);
    // Read as a copy of the file alone is: without a WAL.
    const db = new DatabaseSync(`${pathToFileURL(temp.path).href}?immutable=1`, { readOnly: true });
    try {
      expect(db.prepare('SELECT count(*) AS n FROM decisions').get()).toEqual({ n: 3 });
    } finally {
      db.close();
    }
  });

  it('close() after reads on the reader thread answers them first, and still leaves no -wal file: the reader closes before the writer', async () => {
    const log = await open();
    const first = decision();
    await Promise.all([log.append(first), log.append(decision())]);
    expect(await log.reader.get(first.decision_id)).toMatchObject({ decision_id: first.decision_id, seq: 1 });
    const queued = log.reader.query({}, { limit: 10 });
    await log.close();
    expect((await queued).decisions.map((d) => d.seq)).toEqual([2, 1]);
    expect(existsSync(`${temp.path}-wal`)).toBe(false);
    await expect(log.reader.query()).rejects.toMatchObject({ code: 'decision_log_closed' });
  });

  it('close() during a verify on the reader thread lets the walk finish and close its connections first: no -wal file', async () => {
    const log = await open();
    await Promise.all(Array.from({ length: 50 }, () => log.append(decision())));
    const verified = log.reader.verify();
    await log.close();
    expect(await verified).toMatchObject({ ok: true, checked: 50 });
    expect(existsSync(`${temp.path}-wal`)).toBe(false);
  });

  it("a read past the reader thread's heap cap ends that thread, not the process: that read fails, the next starts a new thread", async () => {
    const log = await open();
    const padding = 'x'.repeat(512 * 1024);
    const records = Array.from({ length: 200 }, () => decision({ context: { padding } }));
    await Promise.all(records.map((record) => log.append(record)));
    // One page of 100 MiB of bodies, read and parsed, on a thread capped at 40 MiB (an idle reader
    // thread uses ~16 MiB, its modules loaded; the one the store starts is capped at 512 MiB).
    const reader = new DecisionReader(temp.path, 2000, { id: 'unused', publicKey: generateKeyPairSync('ed25519').publicKey }, { maxOldGenerationSizeMb: 40 });
    try {
      await expect(reader.query({}, { limit: 1000 })).rejects.toThrow(/reader thread stopped.*memory/);
      expect(await reader.get(records[0]!.decision_id)).toMatchObject({ decision_id: records[0]!.decision_id, seq: 1 });
      expect((await reader.query({}, { limit: 2 })).decisions.map((d) => d.seq)).toEqual([200, 199]);
    } finally {
      await reader.close();
    }
  }, 60_000);

  it('rejects appends after close', async () => {
    const log = await open();
    await log.close();
    await expect(log.append(decision())).rejects.toMatchObject({ code: 'decision_log_closed' });
  });

  it('refuses invalid options with a ConfigError naming the key', async () => {
    await expect(DecisionStore.open({ path: temp.path, mask: [{ pointer: '/result/allow', mode: 'erase' }] })).rejects.toMatchObject({
      code: 'config_invalid',
      issues: [expect.objectContaining({ path: 'decision_log.mask.0' })],
    });
    // 30 days: longer than a Node timer runs (it would prune every millisecond).
    await expect(DecisionStore.open({ path: temp.path, retention: { max_records: 10, check_interval_s: 2_592_000 } })).rejects.toMatchObject({
      code: 'config_invalid',
      issues: [{ path: 'decision_log.retention.check_interval_s', message: expect.stringContaining('at most 2147483') }],
    });
  });
});

describe('durability', () => {
  it('strict: rejects while the database cannot be written, and recovers after', async () => {
    const log = await open({ busy_timeout_ms: 50 });
    await log.append(decision());

    // Another process holding the write lock (a backup, a shell) makes the log unwritable.
    const blocker = new DatabaseSync(temp.path);
    blocker.exec('BEGIN EXCLUSIVE');
    const blocked = decision();
    await expect(log.append(blocked)).rejects.toMatchObject({ code: 'decision_log_write_failed' });
    blocker.exec('ROLLBACK');
    blocker.close();

    const after = decision();
    await log.append(after);
    expect(log.get(blocked.decision_id)).toBeUndefined();
    expect(log.get(after.decision_id)?.seq).toBe(2);
    expect(await log.verify()).toMatchObject({ ok: true, checked: 2 });
  });

  it('relaxed: resolves at once, reports the loss window, commits within flush_interval_ms', async () => {
    const log = await open({ durability: 'relaxed', flush_interval_ms: 20 });
    const records = Array.from({ length: 10 }, () => decision());
    await Promise.all(records.map((record) => log.append(record)));
    expect(log.stats.pending).toBe(10);
    expect(log.get(records[0]!.decision_id)).toBeUndefined();

    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(log.stats.pending).toBe(0);
    for (const record of records) expect(log.get(record.decision_id)).toBeDefined();
  });

  it('relaxed: a record queued during a slow commit is due flush_interval_ms after it arrived, not after that commit', async () => {
    const log = await open({ durability: 'relaxed', flush_interval_ms: 1000, busy_timeout_ms: 20_000 });
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    // Another connection holds the write lock: the first group's commit waits for it.
    const blocker = new DatabaseSync(temp.path);
    blocker.exec('BEGIN EXCLUSIVE');
    await log.append(decision());
    await sleep(1100); // the first group is being committed (and waits)
    const queuedMeanwhile = decision();
    await log.append(queuedMeanwhile); // due 1,000 ms from now
    await sleep(1500);
    blocker.exec('ROLLBACK');
    blocker.close();
    const released = performance.now();
    while (log.get(queuedMeanwhile.decision_id) === undefined) await sleep(10);
    // Its deadline passed while the lock was held: committed right after the first group, not a
    // whole interval (1,000 ms) later.
    expect(performance.now() - released).toBeLessThan(600);
  });

  it('relaxed: close() commits what is still pending', async () => {
    let log = await open({ durability: 'relaxed', flush_interval_ms: 60_000 });
    const record = decision();
    await log.append(record);
    await log.close();
    log = await open();
    expect(log.get(record.decision_id)).toBeDefined();
  });

  it('relaxed: keeps records whose commit failed, refuses more until they commit, in order', async () => {
    const log = await open({ durability: 'relaxed', flush_interval_ms: 10, busy_timeout_ms: 20, max_pending: 5 });
    const errors: Error[] = [];
    log.onError((error) => errors.push(error));
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    // Another process holds the write lock for longer than busy_timeout_ms: every commit fails.
    const blocker = new DatabaseSync(temp.path);
    blocker.exec('BEGIN EXCLUSIVE');
    const accepted: DecisionRecord[] = [];
    const refusals: string[] = [];
    for (let round = 0; round < 10; round += 1) {
      for (let i = 0; i < 5; i += 1) {
        const record = decision();
        await log.append(record).then(
          () => accepted.push(record),
          (error: { code: string }) => refusals.push(error.code),
        );
      }
      await sleep(80);
    }
    // Nothing was committed, nothing accepted was dropped, and the log stopped accepting.
    expect(log.stats).toMatchObject({ committed: 0, failed: 0 });
    expect(log.stats.pending).toBe(accepted.length);
    expect(accepted.length).toBeLessThanOrEqual(5);
    expect(refusals.length).toBe(50 - accepted.length);
    // Refused as unavailable once a commit has failed; as a backlog when the queue filled first
    // (on a loaded machine the first failing commit can take longer than a round).
    for (const code of refusals) expect(['decision_log_unavailable', 'decision_log_backlog']).toContain(code);
    expect(errors.length).toBeGreaterThan(0);
    // Once a commit has failed the log is unavailable, not merely full: it refuses as such
    // (and the refusal is not accepted, so the counts below stand).
    await expect(log.append(decision())).rejects.toMatchObject({ code: 'decision_log_unavailable' });

    blocker.exec('ROLLBACK');
    blocker.close();
    // Polled, not slept for: on a busy machine the retry may take longer than a fixed wait.
    await expect.poll(() => log.stats.pending, { timeout: 10_000 }).toBe(0);
    expect(log.stats).toMatchObject({ pending: 0, committed: accepted.length, failed: 0 });
    // Committed in the order they were accepted, chained correctly, and the log accepts again.
    expect(accepted.map((record) => log.get(record.decision_id)?.seq)).toEqual(accepted.map((_, i) => i + 1));
    const after = decision();
    await log.append(after);
    await expect.poll(() => log.get(after.decision_id)?.seq, { timeout: 10_000 }).toBe(accepted.length + 1);
    expect(await log.verify()).toMatchObject({ ok: true, checked: accepted.length + 1 });
  });

  it('relaxed: refuses appends once the writer thread is gone, and still closes', async () => {
    const writers: Worker[] = [];
    const onWorker = (worker: Worker) => writers.push(worker);
    process.on('worker', onWorker);
    const log = await open({ durability: 'relaxed', flush_interval_ms: 50 }).finally(() => process.off('worker', onWorker));
    const errors: Error[] = [];
    log.onError((error) => errors.push(error));
    await log.append(decision());
    expect(writers).toHaveLength(1);
    await writers[0]!.terminate(); // as if the thread had crashed

    await expect(log.append(decision())).rejects.toMatchObject({ code: 'decision_log_unavailable' });
    await new Promise((resolve) => setTimeout(resolve, 100));
    // The record it held cannot be committed any more: counted and reported, not queued for ever.
    expect(log.stats).toMatchObject({ pending: 0, failed: 1 });
    expect(errors.map((error) => (error as { code?: string }).code)).toContain('decision_log_unavailable');
    await expect(log.close()).rejects.toMatchObject({ code: 'decision_log_unavailable' });
  });

  it('close() ends the writer thread, and lets the file go, even when its final checkpoint cannot be signed', async () => {
    const writers: Worker[] = [];
    const onWorker = (worker: Worker) => writers.push(worker);
    process.on('worker', onWorker);
    const log = await open({ busy_timeout_ms: 50 }).finally(() => process.off('worker', onWorker));
    await log.append(decision()); // not signed yet: close() signs it
    const exited = new Promise((resolve) => writers[0]!.once('exit', resolve));
    // Another process holding the write lock at shutdown, as a full disk would fail the checkpoint too.
    const blocker = new DatabaseSync(temp.path);
    blocker.exec('BEGIN EXCLUSIVE');
    try {
      await expect(log.close()).rejects.toMatchObject({ code: 'decision_log_write_failed' });
    } finally {
      blocker.exec('ROLLBACK');
      blocker.close();
    }
    store = undefined;
    const timeout = new Promise((resolve) => setTimeout(() => resolve('still running'), 2000));
    expect(await Promise.race([exited, timeout])).not.toBe('still running');
    // The record it committed is kept; the next writer signs it.
    const reopened = await open();
    expect(await reopened.verify()).toMatchObject({ ok: true, checked: 1 });
  });

  it('relaxed: keeps a record whose seq another writer took, as an outage, rather than drop it', async () => {
    const log = await open({ durability: 'relaxed', flush_interval_ms: 10 });
    const errors: Error[] = [];
    log.onError((error) => errors.push(error));
    // A second Arbiter on the same file (a restart overlapping the old process) chains on first.
    const other = await DecisionStore.open({ path: temp.path });
    try {
      await other.append(decision());
    } finally {
      await other.close();
    }
    const answered = decision();
    await log.append(answered);
    await new Promise((resolve) => setTimeout(resolve, 150));
    // Not this record's fault (its id is new): it waits to be retried, and the log stops accepting.
    expect(log.stats).toMatchObject({ failed: 0, pending: 1 });
    await expect(log.append(decision())).rejects.toMatchObject({ code: 'decision_log_unavailable' });
    expect(errors[0]?.message).toMatch(/another writer/);
  });

  it('relaxed: refuses appends beyond max_pending', async () => {
    const log = await open({ durability: 'relaxed', flush_interval_ms: 60_000, max_pending: 2, max_batch: 10 });
    await log.append(decision());
    await log.append(decision());
    await expect(log.append(decision())).rejects.toMatchObject({ code: 'decision_log_backlog' });
  });
});

describe('query', () => {
  const T = 1_700_000_000_000;
  const fixtures = {
    a: decision({ timestamp: T + 1, iss: 'https://idp.a', sub: 'alice', client_id: 'web', action: 'read', resource_type: 'document', resource_id: 'd1', allow: true, reasons: ['granted'], revision: 'r1', caller: 'gateway-b', endpoint: '/v1/data' }),
    b: decision({ timestamp: T + 2, iss: 'https://idp.a', sub: 'bob', client_id: 'cli', action: 'write', resource_type: 'document', resource_id: 'd2', allow: false, reasons: ['scope_missing'], revision: 'r1' }),
    c: decision({ timestamp: T + 3, iss: 'https://idp.b', sub: 'alice', client_id: 'cli', action: 'delete', resource_type: 'invoice', resource_id: 'i1', allow: false, reasons: ['scope_missing', 'revoked'], revision: 'r2', bundle: 'billing', caller: null, endpoint: '/access/v1/evaluation' }),
    d: decision({ timestamp: T + 4, iss: 'https://idp.b', sub: 'carol', client_id: 'web', action: 'read', resource_type: 'invoice', resource_id: 'd1', allow: true, reasons: ['granted'], revision: 'r2', caller: 'gateway-b', endpoint: '/v1/data' }),
  };

  const cases: [string, DecisionFilters, (keyof typeof fixtures)[]][] = [
    ['no filter (newest first)', {}, ['d', 'c', 'b', 'a']],
    ['from (inclusive)', { from: T + 2 }, ['d', 'c', 'b']],
    ['to (exclusive)', { to: T + 3 }, ['b', 'a']],
    ['from + to', { from: T + 2, to: T + 4 }, ['c', 'b']],
    ['iss', { iss: 'https://idp.b' }, ['d', 'c']],
    ['sub', { sub: 'alice' }, ['c', 'a']],
    ['client_id', { client_id: 'cli' }, ['c', 'b']],
    ['action', { action: 'read' }, ['d', 'a']],
    ['resource_type', { resource_type: 'invoice' }, ['d', 'c']],
    ['resource_id', { resource_id: 'd1' }, ['d', 'a']],
    ['allow=true', { allow: true }, ['d', 'a']],
    ['allow=false', { allow: false }, ['c', 'b']],
    ['reason', { reason: 'scope_missing' }, ['c', 'b']],
    ['reason (second of several)', { reason: 'revoked' }, ['c']],
    ['reason + other filters', { reason: 'scope_missing', sub: 'alice', to: T + 10 }, ['c']],
    ['bundle', { bundle: 'billing' }, ['c']],
    ['revision', { revision: 'r2' }, ['d', 'c']],
    ['caller', { caller: 'gateway-b' }, ['d', 'a']],
    ['caller (exact: no prefix)', { caller: 'gateway' }, []],
    ['endpoint', { endpoint: '/v1/data' }, ['d', 'a']],
    ['endpoint (exact: no prefix)', { endpoint: '/v1' }, []],
    ['caller + endpoint', { caller: 'gateway-a', endpoint: '/v1/decide' }, ['b']],
    ['combined', { sub: 'alice', allow: false }, ['c']],
    ['nothing matches', { sub: 'mallory' }, []],
  ];

  it.each(cases)('filters by %s', async (_name, filters, expected) => {
    const log = await open();
    await Promise.all(Object.values(fixtures).map((record) => log.append(record)));
    const page = log.query(filters);
    expect(ids(page.decisions)).toEqual(expected.map((key) => fixtures[key].decision_id));
    expect(page.next_cursor).toBeNull();
  });

  it('pages with a cursor, unaffected by appends between pages', async () => {
    const log = await open();
    const base = Date.now() - 100_000;
    const records = Array.from({ length: 60 }, (_, i) => decision({ timestamp: base + i * 10 }));
    // Two decisions made in the same millisecond: the seq breaks the tie.
    records.push(decision({ timestamp: base + 590 }));
    await Promise.all(records.map((record) => log.append(record)));

    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = log.query({ to: base + 100_000 }, { limit: 7, cursor });
      seen.push(...ids(page.decisions));
      cursor = page.next_cursor ?? undefined;
      pages += 1;
      // Decisions keep arriving while the auditor pages.
      await Promise.all([log.append(decision({ timestamp: base + 50_000 })), log.append(decision())]);
    } while (cursor);

    // Exactly the records present at the first page, newest first; for the two with equal
    // timestamps, the later seq (the one appended last) first.
    expect(seen).toEqual([...records].reverse().map((r) => r.decision_id));
    expect(new Set(seen).size).toBe(seen.length);
    expect(pages).toBe(Math.ceil(61 / 7));
  });

  it('refuses a cursor it did not issue and invalid filters', async () => {
    const log = await open();
    expect(() => log.query({}, { cursor: 'garbage' })).toThrow(expect.objectContaining({ code: 'decision_cursor_invalid' }));
    expect(() => log.query({}, { limit: 0 })).toThrow(expect.objectContaining({ code: 'decision_query_invalid' }));
    expect(() => log.query({ allow: 'yes' } as unknown as DecisionFilters)).toThrow(
      expect.objectContaining({ code: 'decision_query_invalid' }),
    );
  });

  it('exports every match, across internal pages, newest first', async () => {
    const log = await open({ max_batch: 5_000 });
    const base = 1_600_000_000_000;
    const records = Array.from({ length: 2_300 }, (_, i) => decision({ timestamp: base + i, allow: i % 2 === 0 }));
    await Promise.all(records.map((record) => log.append(record)));

    const exported = [...log.export({ allow: true })];
    const expected = records.filter((_, i) => i % 2 === 0).reverse();
    expect(exported.length).toBe(1_150);
    expect(ids(exported)).toEqual(expected.map((r) => r.decision_id));
  });

  it('stops an export that retention pruned under, rather than end it short as if complete', async () => {
    const log = await open({ max_batch: 5_000, retention: { max_age_days: 1, check_interval_s: 86_400 } });
    const base = Date.now() - 100_000;
    await Promise.all(Array.from({ length: 2_300 }, (_, i) => log.append(decision({ timestamp: base + i }))));

    // The export reads the newest records first: retention deletes the oldest, not read yet.
    const exported: StoredDecision[] = [];
    const iterator = log.export()[Symbol.iterator]();
    for (let i = 0; i < 10; i++) exported.push(iterator.next().value as StoredDecision);
    expect(await log.prune(base + 1_800 + 86_400_000)).toBe(1_800);
    expect(() => {
      for (let next = iterator.next(); !next.done; next = iterator.next()) exported.push(next.value);
    }).toThrow(expect.objectContaining({ code: 'decision_export_incomplete' }));
    // Everything it did hand out was a record, in order.
    expect(new Set(exported.map((d) => d.seq)).size).toBe(exported.length);

    // An export that starts after the prune (or that no prune overtakes) is whole.
    expect([...log.export()]).toHaveLength(500);
  });

  it('lets an export from a time retention by age has not reached run through a prune', async () => {
    const log = await open({ max_batch: 5_000, retention: { max_age_days: 1, check_interval_s: 86_400 } });
    const base = Date.now() - 100_000;
    await Promise.all(Array.from({ length: 2_300 }, (_, i) => log.append(decision({ timestamp: base + i }))));

    // Age retention deletes only what is older than its cutoff (base + 300): an export from there on lost nothing.
    const iterator = log.export({ from: base + 300 })[Symbol.iterator]();
    const exported = [iterator.next().value as StoredDecision];
    expect(await log.prune(base + 300 + 86_400_000)).toBe(300);
    for (let next = iterator.next(); !next.done; next = iterator.next()) exported.push(next.value);
    expect(exported).toHaveLength(2_000);

    // From before the cutoff, it may have: stopped.
    const older = log.export({ from: base + 299 })[Symbol.iterator]();
    older.next();
    expect(await log.prune(base + 400 + 86_400_000)).toBe(100);
    expect(() => {
      for (let next = older.next(); !next.done; next = older.next());
    }).toThrow(expect.objectContaining({ code: 'decision_export_incomplete' }));
  });

  it('refuses the next page of a query that retention pruned under since its first page, rather than serve pages short as if complete', async () => {
    const log = await open({ max_batch: 5_000, retention: { max_age_days: 1, max_records: 1_000, check_interval_s: 86_400 } });
    const base = Date.now() - 100_000;
    await Promise.all(Array.from({ length: 1_000 }, (_, i) => log.append(decision({ timestamp: base + i, allow: i % 2 === 0 }))));
    // An auditor pages through every allow, newest first: 500 of them, 100 a page.
    const first = log.query({ allow: true }, { limit: 100 });
    const second = log.query({ allow: true }, { limit: 100, cursor: first.next_cursor! });
    expect(second.decisions).toHaveLength(100);
    // Retention by count deletes the 200 oldest, which the pages still to come would have held.
    await Promise.all(Array.from({ length: 200 }, (_, i) => log.append(decision({ timestamp: base + 1_000 + i, allow: false }))));
    expect(await log.prune(base)).toBe(200);
    expect(() => log.query({ allow: true }, { limit: 100, cursor: second.next_cursor! })).toThrow(expect.objectContaining({ code: 'decision_query_incomplete' }));
    // Asked again from the first page, the query pages through what is left, whole.
    const seen: number[] = [];
    let cursor: string | undefined;
    do {
      const page = log.query({ allow: true }, { limit: 100, cursor });
      seen.push(...page.decisions.map((d) => d.seq));
      cursor = page.next_cursor ?? undefined;
    } while (cursor);
    // 500 allows, less the 100 among the 200 oldest.
    expect(seen).toHaveLength(400);
  });

  it('lets a query from a time retention by age has not reached page on through a prune', async () => {
    const log = await open({ max_batch: 5_000, retention: { max_age_days: 1, check_interval_s: 86_400 } });
    const base = Date.now() - 100_000;
    await Promise.all(Array.from({ length: 1_000 }, (_, i) => log.append(decision({ timestamp: base + i }))));
    const recent = log.query({ from: base + 300 }, { limit: 100 });
    const older = log.query({ from: base + 299 }, { limit: 100 });
    expect(await log.prune(base + 300 + 86_400_000)).toBe(300);
    // Nothing from base + 300 on was deleted: the pages go on.
    expect(log.query({ from: base + 300 }, { limit: 100, cursor: recent.next_cursor! }).decisions).toHaveLength(100);
    expect(() => log.query({ from: base + 299 }, { limit: 100, cursor: older.next_cursor! })).toThrow(expect.objectContaining({ code: 'decision_query_incomplete' }));
  });

  it('stops an export through a prune by count whatever its from: that deletes records of any age', async () => {
    const log = await open({ max_batch: 5_000, retention: { max_age_days: 1, max_records: 2_000, check_interval_s: 86_400 } });
    const base = Date.now() - 100_000;
    await Promise.all(Array.from({ length: 2_000 }, (_, i) => log.append(decision({ timestamp: base + i }))));
    const iterator = log.export({ from: base + 500 })[Symbol.iterator]();
    iterator.next();
    // 300 more: retention by count now deletes the 300 oldest, older than the export's from, but
    // nothing bounds the age of what a count deletes.
    await Promise.all(Array.from({ length: 300 }, (_, i) => log.append(decision({ timestamp: base + 2_000 + i }))));
    expect(await log.prune(base)).toBe(300);
    expect(() => {
      for (let next = iterator.next(); !next.done; next = iterator.next());
    }).toThrow(expect.objectContaining({ code: 'decision_export_incomplete' }));
  });
});

describe('schema', () => {
  function userVersion(path: string): number {
    const db = new DatabaseSync(path, { readOnly: true });
    try {
      return (db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version;
    } finally {
      db.close();
    }
  }

  /**
   * Turns a current log back into what version 2 wrote: checkpoints and anchors signed
   * without next_by and no column for it, no anchor before anything was pruned.
   */
  function downgradeToVersion2(path: string): void {
    const key = loadOrCreateCheckpointKey(`${path}.checkpoint-key.jwk`);
    const db = new DatabaseSync(path);
    db.exec('DELETE FROM anchors WHERE seq = 0');
    for (const kind of ['checkpoint', 'anchor'] as const) {
      const table = `${kind}s`;
      for (const row of db.prepare(`SELECT * FROM ${table}`).all() as unknown as MarkRow[]) {
        const { seq, hash, record_count, created_at } = row;
        const { signature } = signMark({ kind, seq, hash, record_count, created_at }, key);
        db.prepare(`UPDATE ${table} SET signature = ? WHERE seq = ?`).run(signature, seq);
      }
    }
    db.exec(`
      ALTER TABLE checkpoints DROP COLUMN next_by;
      ALTER TABLE anchors DROP COLUMN next_by;
      PRAGMA user_version = 2;
    `);
    db.close();
  }

  /** Turns a current log back into the version 1 layout: a row per reason code per decision. */
  function downgradeToVersion1(path: string): void {
    downgradeToVersion2(path);
    const db = new DatabaseSync(path);
    db.exec(`
      CREATE TABLE decision_reasons (seq INTEGER NOT NULL, code TEXT NOT NULL, timestamp INTEGER NOT NULL, PRIMARY KEY (seq, code)) WITHOUT ROWID;
      CREATE INDEX decision_reasons_by_code ON decision_reasons (code, timestamp, seq);
      INSERT INTO decision_reasons (seq, code, timestamp)
        SELECT d.seq, c.code, d.timestamp FROM decisions d JOIN reason_set_codes c ON c.reason_set = d.reason_set;
      DROP INDEX decisions_by_reason_set;
      ALTER TABLE decisions DROP COLUMN reason_set;
      DROP TABLE reason_sets;
      DROP TABLE reason_set_codes;
      PRAGMA user_version = 1;
    `);
    db.close();
  }

  it('upgrades a version 2 log to version 3: records, verify and appends keep working', async () => {
    let log = await open({ checkpoint: { every_records: 10 } });
    const records = Array.from({ length: 25 }, () => decision());
    for (const record of records) await log.append(record);
    await log.close();
    store = undefined;
    downgradeToVersion2(temp.path);

    log = await open({ checkpoint: { every_records: 10 } });
    expect(userVersion(temp.path)).toBe(3);
    expect(log.get(records[24]!.decision_id)?.seq).toBe(25);
    await log.append(decision());
    expect(await log.verify()).toMatchObject({ ok: true, checked: 26 });

    // From the upgrade on, the signed bounds tell deleted checkpoints.
    const db = new DatabaseSync(temp.path);
    db.exec('DELETE FROM checkpoints');
    db.close();
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: records[24]!.decision_id, seq: 25, reason: 'checkpoint_missing' });
  });

  it('upgrades a version 2 log with an unsigned tail or a retention anchor: the head is signed as found', async () => {
    const checkpoint = { every_records: 10 };
    const retention = { max_records: 15, check_interval_s: 3_600 };
    let log = await open({ checkpoint, retention });
    for (let i = 0; i < 28; i++) await log.append(decision());
    expect(await log.prune()).toBe(13);
    await log.close();
    store = undefined;
    // Version 2 wrote no checkpoint for the last records when killed before one was due.
    const db = new DatabaseSync(temp.path);
    db.exec('DELETE FROM checkpoints WHERE seq > 20');
    db.close();
    downgradeToVersion2(temp.path);

    log = await open({ checkpoint });
    // The checkpoint at 20 (from version 2) and the one signed at 28 on upgrade.
    expect(await log.verify()).toEqual({ ok: true, checked: 15, checkpoints_verified: 2 });
    for (let i = 0; i < 12; i++) await log.append(decision());
    expect(await log.verify()).toEqual({ ok: true, checked: 27, checkpoints_verified: 3 });
    await log.close();
    log = await open({ checkpoint, retention });
    await log.prune();
    expect(await log.verify()).toMatchObject({ ok: true, checked: 15 });
  });

  it('does not upgrade (and sign) a version 2 log whose retention anchor is not signed by the key', async () => {
    const log = await open({ checkpoint: { every_records: 10 }, retention: { max_records: 5, check_interval_s: 3_600 } });
    for (let i = 0; i < 12; i++) await log.append(decision());
    await log.prune();
    await log.close();
    store = undefined;
    downgradeToVersion2(temp.path);
    const db = new DatabaseSync(temp.path);
    db.exec("UPDATE anchors SET hash = '" + 'f'.repeat(64) + "'");
    db.close();
    await expect(open({ checkpoint: { every_records: 10 } })).rejects.toThrow(/anchor at seq 7 is not signed/);
    expect(userVersion(temp.path)).toBe(2);
  });

  it('upgrades a version 1 log: reason filters, verify and appends keep working', async () => {
    let log = await open();
    const denied = decision({ allow: false, reasons: ['scope_missing', 'revoked'] });
    const granted = decision({ allow: true, reasons: ['granted'] });
    await log.append(denied);
    await log.append(granted);
    await log.close();
    store = undefined;
    downgradeToVersion1(temp.path);

    log = await open();
    expect(ids(log.query({ reason: 'revoked' }).decisions)).toEqual([denied.decision_id]);
    expect(ids(log.query({ reason: 'granted' }).decisions)).toEqual([granted.decision_id]);
    const later = decision({ allow: false, reasons: ['revoked'] });
    await log.append(later);
    expect(ids(log.query({ reason: 'revoked' }).decisions)).toEqual([later.decision_id, denied.decision_id]);
    expect(await log.verify()).toMatchObject({ ok: true, checked: 3 });
    expect(userVersion(temp.path)).toBe(3);
  });

  it.each([0, 1, 2])('refuses, naming decision_log.path, a version 3 log whose schema version was set back to %i', async (version) => {
    const log = await open();
    for (let i = 0; i < 3; i++) await log.append(decision());
    await log.close();
    store = undefined;
    const db = new DatabaseSync(temp.path);
    db.exec(`PRAGMA user_version = ${version}`);
    db.close();
    const refused = await open().then(
      () => undefined,
      (error: unknown) => error,
    );
    store = undefined;
    expect(refused).toMatchObject({
      code: 'config_invalid',
      issues: [{ path: 'decision_log.path', message: expect.stringMatching(new RegExp(`schema version ${version} does not match its tables.*changed outside Arbiter or written by another version`)) }],
    });
    expect(userVersion(temp.path)).toBe(version);
  });

  it('does not sign a rewritten log whose schema version was set to 0, as if it were new', async () => {
    // Records rewritten with their hashes recomputed, the checkpoints that would tell deleted:
    // taken for a new log, its chain start and head were signed again and verify passed.
    const log = await open({ checkpoint: { every_records: 2 } });
    const records = Array.from({ length: 5 }, () => decision());
    for (const record of records) await log.append(record);
    await log.close();
    store = undefined;
    const db = new DatabaseSync(temp.path);
    db.prepare('UPDATE decisions SET body = ?, allow = 0 WHERE seq = 3').run(JSON.stringify({ ...records[2]!, result: { ...records[2]!.result, allow: false } }));
    let prev = (db.prepare('SELECT hash FROM decisions WHERE seq = 2').get() as { hash: string }).hash;
    for (const { seq, body } of db.prepare('SELECT seq, body FROM decisions WHERE seq >= 3 ORDER BY seq').all() as { seq: number; body: string }[]) {
      prev = chainHash(prev, seq, body);
      db.prepare('UPDATE decisions SET prev_hash = (SELECT hash FROM decisions WHERE seq = ?), hash = ? WHERE seq = ?').run(seq - 1, prev, seq);
    }
    db.exec('DELETE FROM checkpoints; PRAGMA user_version = 0');
    db.close();
    await expect(open({ checkpoint: { every_records: 2 } })).rejects.toThrow(/schema version 0 does not match its tables/);
    store = undefined;
  });

  it('refuses a log written by a newer version', async () => {
    const log = await open();
    await log.close();
    store = undefined;
    const db = new DatabaseSync(temp.path);
    db.exec('PRAGMA user_version = 99');
    db.close();
    await expect(open()).rejects.toThrow(/schema version 99 is newer/);
  });
});

/** Every match, page by page through the cursors. */
function everyPage(log: DecisionStore, filters: DecisionFilters, limit: number): StoredDecision[] {
  const seen: StoredDecision[] = [];
  let cursor: string | undefined;
  do {
    const page = log.query(filters, { limit, cursor });
    seen.push(...page.decisions);
    cursor = page.next_cursor ?? undefined;
  } while (cursor);
  return seen;
}

describe('reason filters over several sets of codes', () => {
  it('merges the sets containing a code, newest first, across pages', async () => {
    const log = await open();
    const T = Date.UTC(2025, 0, 1);
    const combos = [['revoked'], ['revoked', 'scope_missing'], ['scope_missing'], ['revoked', 'tenant_mismatch']];
    const all: DecisionRecord[] = [];
    for (let i = 0; i < 40; i++) all.push(decision({ timestamp: T + i, allow: false, reasons: combos[i % combos.length]! }));
    for (const record of all) await log.append(record);

    const expected = all.filter((record) => record.result.reasons.some((reason) => reason.code === 'revoked')).reverse();
    expect(ids(everyPage(log, { reason: 'revoked' }, 7))).toEqual(ids(expected as StoredDecision[]));
    expect(log.query({ reason: 'unknown_code' }).decisions).toEqual([]);
    expect(ids(log.query({ reason: 'revoked', to: T + 4 }).decisions)).toEqual([all[3]!, all[1]!, all[0]!].map((r) => r.decision_id));
  });
});

describe('reason sets at scale', () => {
  it('answers a code held by more sets than it merges with one query, in page order', async () => {
    const log = await open();
    const T = Date.UTC(2025, 0, 1);
    const all = Array.from({ length: 70 }, (_, i) => decision({ timestamp: T + i, allow: false, reasons: ['common', `unique-${i}`] }));
    await Promise.all(all.map((record) => log.append(record)));
    expect(ids(everyPage(log, { reason: 'common' }, 9))).toEqual(ids([...all].reverse() as StoredDecision[]));
    expect(ids(log.query({ reason: 'unique-5' }).decisions)).toEqual([all[5]!.decision_id]);
  });

  it('reads the bodies of one page only, however many reason sets a code is in', async () => {
    const log = await open({ durability: 'relaxed', max_batch: 5_000, max_pending: 10_000 });
    const T = Date.UTC(2025, 0, 1);
    let t = 0;
    for (let set = 0; set < 20; set++) {
      for (let i = 0; i < 101; i++) await log.append(decision({ timestamp: T + t++, allow: false, reasons: ['scope_missing', `check_${set}`] }));
    }
    await log.close();
    const reopened = await open();
    const all = StatementSync.prototype.all;
    let bodies = 0;
    // Observed, not replaced: every row node:sqlite hands back is counted when it carries a body.
    StatementSync.prototype.all = function (this: StatementSync, ...args: unknown[]) {
      const rows = (all as (...params: unknown[]) => Record<string, SQLInputValue>[]).apply(this, args);
      bodies += rows.filter((row) => 'body' in row).length;
      return rows;
    } as typeof all;
    try {
      const page = reopened.query({ reason: 'scope_missing' }, { limit: 100 });
      expect(page.decisions.map((d) => d.timestamp)).toEqual(Array.from({ length: 100 }, (_, i) => T + 2019 - i));
    } finally {
      StatementSync.prototype.all = all;
    }
    // 20 sets x 101 positions were merged; only the page's records (and the look-ahead) were read whole.
    expect(bodies).toBeLessThanOrEqual(101);
  });

  it('a writer that remembers few sets finds the others in the database', () => {
    const dir = tempDir();
    const db = new DatabaseSync(dir.path);
    try {
      migrate(db);
      const writer = new ChainWriter(db, loadOrCreateCheckpointKey(`${dir.path}.key.jwk`), { everyRecords: 1_000, intervalMs: 60_000 }, 2);
      const prepare = (codes: string[]) => {
        const record = decision({ allow: false, reasons: codes });
        const { decision_id, timestamp, endpoint, caller, bundle, revision } = record;
        return { decision_id, timestamp, endpoint, caller, bundle, revision, columns: deriveIndexColumns(record), body: canonicalJson(record) };
      };
      const combos = [['a'], ['b'], ['c'], ['a', 'b'], ['d']];
      for (const codes of combos) writer.commit([prepare(codes)]);
      // Sets seen before, whether remembered or not, and a batch repeating a new one.
      writer.commit([prepare(['d']), prepare(['c']), prepare(['a']), prepare(['e']), prepare(['e'])]);
      const sets = db.prepare('SELECT id, codes FROM reason_sets ORDER BY id').all() as { id: number; codes: string }[];
      expect(sets.map((set) => set.codes)).toEqual(['["a"]', '["b"]', '["c"]', '["a","b"]', '["d"]', '["e"]']);
      const used = db.prepare('SELECT reason_set FROM decisions ORDER BY seq').all() as { reason_set: number }[];
      expect(used.map((row) => row.reason_set)).toEqual([1, 2, 3, 4, 5, 5, 3, 1, 6, 6]);
    } finally {
      db.close();
      dir.cleanup();
    }
  });

  it('finds a stored set it never remembered once retention has freed room in its memory', () => {
    const dir = tempDir();
    const db = new DatabaseSync(dir.path);
    try {
      migrate(db);
      const key = loadOrCreateCheckpointKey(`${dir.path}.key.jwk`);
      const writer = new ChainWriter(db, key, { everyRecords: 1_000, intervalMs: 60_000 }, 2);
      const prepare = (codes: string[]) => {
        const record = decision({ allow: false, reasons: codes });
        const { decision_id, timestamp, endpoint, caller, bundle, revision } = record;
        return { decision_id, timestamp, endpoint, caller, bundle, revision, columns: deriveIndexColumns(record), body: canonicalJson(record) };
      };
      writer.commit([prepare(['a'])]);
      writer.commit([prepare(['b'])]); // remembered: a, b (the bound is 2)
      writer.commit([prepare(['c'])]); // stored only
      const step = pruneStep(db, key, 1, 10, Date.now());
      writer.forgetReasonSets(step.droppedReasonSets);
      expect(step.droppedReasonSets).toEqual(['["a"]']);
      // Room in memory does not make ["c"] new: inserting it again would break the UNIQUE index.
      expect(() => writer.commit([prepare(['c'])])).not.toThrow();
      const used = db.prepare('SELECT reason_set FROM decisions ORDER BY seq').all() as { reason_set: number }[];
      expect(used.map((row) => row.reason_set)).toEqual([2, 3, 3]);
    } finally {
      db.close();
      dir.cleanup();
    }
  });

  it('files records under long codes (not remembered, to bound memory) in one set all the same', async () => {
    const log = await open();
    const long = `user alice@example.com may not read ${'x'.repeat(2_000)}`;
    const records = [decision({ allow: false, reasons: [long] }), decision({ allow: false, reasons: [long] })];
    for (const record of records) await log.append(record);
    await log.append(decision({ allow: false, reasons: [long, 'other'] }));
    expect(ids(log.query({ reason: long }).decisions)).toHaveLength(3);
    const db = new DatabaseSync(temp.path, { readOnly: true });
    const sets = db.prepare('SELECT count(*) AS n FROM reason_sets').get() as { n: number };
    db.close();
    expect(sets.n).toBe(2);
    expect(await log.verify()).toMatchObject({ ok: true, checked: 3 });
  });
});

describe('a record whose integer column was edited past 2^53 (node:sqlite cannot read it as a number)', () => {
  const tooBig = '9223372036854775807';
  function tamper(sql: string): void {
    const db = new DatabaseSync(temp.path);
    try {
      db.exec(sql);
    } finally {
      db.close();
    }
  }
  function corruptAt(read: () => unknown, seq: number): void {
    expect(read).toThrow(expect.objectContaining({ code: 'decision_log_corrupt', seq, message: expect.stringContaining(`seq ${seq}`) }));
  }

  it('is named by seq wherever it is read: get, every query path and export', async () => {
    const log = await open();
    const T = Date.UTC(2025, 0, 1);
    const combos = [['revoked'], ['revoked', 'scope_missing'], ['scope_missing']];
    const all = Array.from({ length: 6 }, (_, i) => decision({ timestamp: T + i, allow: false, reasons: combos[i % combos.length]! }));
    for (const record of all) await log.append(record);
    tamper(`UPDATE decisions SET timestamp = ${tooBig} WHERE seq = 2`);

    corruptAt(() => log.get(all[1]!.decision_id), 2);
    // It sorts first: every unfiltered first page meets it.
    corruptAt(() => log.query(), 2);
    corruptAt(() => log.query({ reason: 'scope_missing' }), 2); // two sets, merged
    corruptAt(() => log.query({ reason: 'revoked', from: T }), 2); // two sets, merged
    corruptAt(() => log.query({ allow: false }), 2);
    corruptAt(() => [...log.export()], 2);
    // Records that do not match it still read.
    expect(ids(log.query({ to: T + 6 }).decisions)).toEqual(ids([...all].reverse().filter((r) => r !== all[1]) as StoredDecision[]));
  });

  it('stops an export at it, after every record before it, and leaves a page that does not show it readable', async () => {
    const log = await open();
    const T = Date.UTC(2025, 0, 1);
    const all = Array.from({ length: 4 }, (_, i) => decision({ timestamp: T + i }));
    for (const record of all) await log.append(record);
    // The oldest record's timestamp set below -2^53: it sorts last, after every other record.
    tamper(`UPDATE decisions SET timestamp = -${tooBig} WHERE seq = 1`);
    const exported: string[] = [];
    corruptAt(() => {
      for (const record of log.export()) exported.push(record.decision_id);
    }, 1);
    expect(exported).toEqual(ids([...all].reverse().slice(0, 3) as StoredDecision[]));
    // A page of the three newest reads, though the read looked one record further to know there are more.
    expect(ids(log.query({}, { limit: 3 }).decisions)).toEqual(exported);
  });

  it('stops an export filtered by a code of several reason sets at it too, and leaves a page that does not show it readable', async () => {
    const log = await open();
    const T = Date.UTC(2025, 0, 1);
    // 'revoked' is in two reason sets: a page of it merges one read per set.
    const all = Array.from({ length: 4 }, (_, i) => decision({ timestamp: T + i, allow: false, reasons: i % 2 === 0 ? ['revoked'] : ['revoked', 'scope_missing'] }));
    for (const record of all) await log.append(record);
    tamper(`UPDATE decisions SET timestamp = -${tooBig} WHERE seq = 1`);
    const exported: string[] = [];
    corruptAt(() => {
      for (const record of log.export({ reason: 'revoked' })) exported.push(record.decision_id);
    }, 1);
    expect(exported).toEqual(ids([...all].reverse().slice(0, 3) as StoredDecision[]));
    const page = log.query({ reason: 'revoked' }, { limit: 3 });
    expect(ids(page.decisions)).toEqual(exported);
    corruptAt(() => log.query({ reason: 'revoked' }, { limit: 3, cursor: page.next_cursor! }), 1);
  });

  it('a reason set id edited past 2^53 in the code index matches no record rather than failing the query', async () => {
    const log = await open();
    const record = decision({ allow: false, reasons: ['revoked'] });
    await log.append(record);
    tamper(`UPDATE reason_set_codes SET reason_set = ${tooBig}`);
    expect(log.query({ reason: 'revoked' }).decisions).toEqual([]);
    expect(ids(log.query().decisions)).toEqual([record.decision_id]);
  });
});
