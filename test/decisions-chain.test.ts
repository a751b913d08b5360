import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { canonicalJson } from '../src/decisions/canonical-json.ts';
import { chainHash, createCheckpointKey, GENESIS_HASH, loadOrCreateCheckpointKey } from '../src/decisions/chain.ts';
import { deriveIndexColumns, newDecisionId } from '../src/decisions/record.ts';
import type { DecisionRecord } from '../src/decisions/record.ts';
import { migrate } from '../src/decisions/schema.ts';
import { DecisionStore } from '../src/decisions/store.ts';
import { verifyChain } from '../src/decisions/verify.ts';
import { ChainWriter, sealChainStart } from '../src/decisions/writer.ts';
import type { PreparedDecision } from '../src/decisions/writer.ts';
import { corruptReasonCodesIndex, decision, tempDir } from './support/decisions.ts';

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
  store = await DecisionStore.open({ path: temp.path, checkpoint: { every_records: 10 }, ...options });
  return store;
}

/** Appends one at a time so every record is its own commit (checkpoints land every 10). */
async function fill(log: DecisionStore, count: number, shape: Parameters<typeof decision>[0] = {}): Promise<DecisionRecord[]> {
  const records: DecisionRecord[] = [];
  for (let i = 0; i < count; i++) {
    const record = decision(shape);
    await log.append(record);
    records.push(record);
  }
  return records;
}

/** A record as the store hands it to the writer. */
function prepared(record: DecisionRecord): PreparedDecision {
  const { decision_id, timestamp, endpoint, caller, bundle, revision } = record;
  return { decision_id, timestamp, endpoint, caller, bundle, revision, columns: deriveIndexColumns(record), body: canonicalJson(record) };
}

/** What an attacker with write access to the file does: a separate connection. */
function tamper(sql: string, ...params: (string | number)[]): void {
  const db = new DatabaseSync(temp.path);
  db.prepare(sql).run(...params);
  db.close();
}

/** Recomputes prev_hash and hash from `seq` on over the bodies as they now are: what an attacker without the key does after an edit. */
function rechainFrom(db: DatabaseSync, seq: number): void {
  let prev = seq === 1 ? GENESIS_HASH : (db.prepare('SELECT hash FROM decisions WHERE seq = ?').get(seq - 1) as { hash: string }).hash;
  for (const row of db.prepare('SELECT seq, body FROM decisions WHERE seq >= ? ORDER BY seq').all(seq) as { seq: number; body: string }[]) {
    const hash = chainHash(prev, row.seq, row.body);
    db.prepare('UPDATE decisions SET prev_hash = ?, hash = ? WHERE seq = ?').run(prev, hash, row.seq);
    prev = hash;
  }
}

/** Turns the deny at `seq` into an allow, body and index column. */
const FLIP_TO_ALLOW = `UPDATE decisions SET body = replace(body, '"allow":false', '"allow":true'), allow = 1 WHERE seq = ?`;

/**
 * Plants a forged decision at `seq` without the key: a copy of the oldest record under a
 * new id, turned into an allow, with made-up chain columns. Returns the forged id.
 */
function plant(seq: number): string {
  const forgedId = newDecisionId();
  tamper(
    `INSERT INTO decisions (seq, decision_id, timestamp, endpoint, caller, bundle, revision, iss, sub, client_id, action,
       resource_type, resource_id, allow, reason_set, body, prev_hash, hash)
     SELECT ?, ?, timestamp, endpoint, caller, bundle, revision, iss, 'mallory', client_id, action, resource_type, resource_id, 1,
       reason_set, replace(replace(replace(body, decision_id, ?), '"alice"', '"mallory"'), '"allow":false', '"allow":true'), 'x', 'y'
     FROM decisions ORDER BY seq LIMIT 1`,
    seq, forgedId, forgedId,
  );
  return forgedId;
}

/**
 * Appends a forged allow at the end of the chain without the key: a new record chained on
 * from the last one, its hash and index columns computed as the writer would. Returns its id.
 */
function appendForged(): string {
  const forged = decision({ sub: 'mallory', allow: true, reasons: ['granted'] });
  const db = new DatabaseSync(temp.path);
  try {
    const head = (db.prepare('SELECT seq, hash FROM decisions ORDER BY seq DESC LIMIT 1').get() ?? db.prepare('SELECT seq, hash FROM anchors').get()) as { seq: number; hash: string };
    db.prepare("INSERT OR IGNORE INTO reason_sets (id, codes) VALUES (1000, '[\"granted\"]')").run();
    const set = (db.prepare("SELECT id FROM reason_sets WHERE codes = '[\"granted\"]'").get() as { id: number }).id;
    db.prepare("INSERT OR IGNORE INTO reason_set_codes (code, reason_set) VALUES ('granted', ?)").run(set);
    const { columns, body, ...row } = prepared(forged);
    const seq = head.seq + 1;
    db.prepare(
      `INSERT INTO decisions (seq, decision_id, timestamp, endpoint, caller, bundle, revision, iss, sub, client_id, action,
         resource_type, resource_id, allow, reason_set, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(seq, row.decision_id, row.timestamp, row.endpoint, row.caller, row.bundle, row.revision, columns.iss, columns.sub, columns.client_id,
      columns.action, columns.resource_type, columns.resource_id, columns.allow, set, body, head.hash, chainHash(head.hash, seq, body));
  } finally {
    db.close();
  }
  return forged.decision_id;
}

describe('verify', () => {
  it('reports a clean chain with its checkpoints', async () => {
    const log = await open();
    await fill(log, 25);
    expect(await log.verify()).toEqual({ ok: true, checked: 25, checkpoints_verified: 2 });
  });

  it('reports a clean chain whose records hold strings that are not well-formed Unicode', async () => {
    // SQLite stores text as UTF-8, where a lone surrogate becomes U+FFFD: the index columns
    // must be compared as stored, or any caller could make a clean log fail verify.
    const log = await open();
    const record = decision({ resource_id: 'doc-\ud800', sub: 'user:\udc00', reasons: ['granted', 'odd-\ud83d'] });
    await log.append(record);
    await fill(log, 2);
    expect(await log.verify()).toEqual({ ok: true, checked: 3, checkpoints_verified: expect.any(Number) });
    expect(log.query({ resource_id: 'doc-\ufffd' }).decisions.map((stored) => stored.decision_id)).toEqual([record.decision_id]);
  });

  it('creates the checkpoint key next to the database, readable by the owner only', async () => {
    await open();
    expect(statSync(`${temp.path}.checkpoint-key.jwk`).mode & 0o777).toBe(0o600);
  });

  it('creates a key at checkpoint.key_path for a new log', async () => {
    const keyPath = `${temp.dir}/elsewhere.jwk`;
    const log = await open({ checkpoint: { every_records: 10, key_path: keyPath } });
    await fill(log, 3);
    expect(statSync(keyPath).mode & 0o777).toBe(0o600);
    expect(await log.verify()).toMatchObject({ ok: true, checked: 3 });
  });

  it('refuses to open a signed log whose key file is missing or another key, naming checkpoint.key_path', async () => {
    const log = await open();
    await fill(log, 3);
    await log.close();
    store = undefined;
    const keyPath = `${temp.path}.checkpoint-key.jwk`;
    const refusal = {
      code: 'config_invalid',
      issues: [{ path: 'decision_log.checkpoint.key_path', message: expect.stringMatching(/restore the key file/) }],
    };

    // Moved: key_path names a file that does not exist. No key is generated in its place.
    const moved = `${temp.dir}/moved.jwk`;
    await expect(DecisionStore.open({ path: temp.path, checkpoint: { key_path: moved } })).rejects.toMatchObject(refusal);
    expect(existsSync(moved)).toBe(false);
    // Another key: it did not sign the anchor.
    const other = `${temp.dir}/other.jwk`;
    loadOrCreateCheckpointKey(other);
    await expect(DecisionStore.open({ path: temp.path, checkpoint: { key_path: other } })).rejects.toMatchObject(refusal);
    // Deleted from its default place.
    renameSync(keyPath, `${keyPath}.bak`);
    await expect(DecisionStore.open({ path: temp.path })).rejects.toMatchObject(refusal);
    expect(existsSync(keyPath)).toBe(false);

    // Restored: the untouched log opens and verifies.
    renameSync(`${keyPath}.bak`, keyPath);
    expect(await (await open()).verify()).toMatchObject({ ok: true, checked: 3 });
  });

  it('refuses a checkpoint key others can read, or one that is not a key, naming checkpoint.key_path (start-up stops as for any bad key)', async () => {
    const log = await open();
    await fill(log, 3);
    await log.close();
    store = undefined;
    const keyPath = `${temp.path}.checkpoint-key.jwk`;
    // What a copy with the default umask, or a volume remounted group-readable, leaves.
    chmodSync(keyPath, 0o644);
    await expect(DecisionStore.open({ path: temp.path })).rejects.toMatchObject({
      code: 'config_invalid',
      issues: [{ path: 'decision_log.checkpoint.key_path', message: expect.stringMatching(/readable by group or others \(chmod 600 it\)/) }],
    });
    chmodSync(keyPath, 0o600);
    const notAKey = `${temp.dir}/not-a-key.jwk`;
    writeFileSync(notAKey, JSON.stringify({ kty: 'RSA' }), { mode: 0o600 });
    await expect(DecisionStore.open({ path: `${temp.dir}/other.db`, checkpoint: { key_path: notAKey } })).rejects.toMatchObject({
      code: 'config_invalid',
      issues: [{ path: 'decision_log.checkpoint.key_path', message: expect.stringMatching(/not a private Ed25519 JWK/) }],
    });
  });

  it('refuses a checkpoint key file that is not JSON without quoting it (part of the private key), naming checkpoint.key_path', async () => {
    const log = await open();
    await fill(log, 1);
    await log.close();
    store = undefined;
    const keyPath = `${temp.path}.checkpoint-key.jwk`;
    const text = readFileSync(keyPath, 'utf8');
    const { d } = JSON.parse(text) as { d: string };
    // An edit that lost the quote before d: V8's SyntaxError quotes the text that follows the fault.
    writeFileSync(keyPath, text.replace(`"d":"${d}"`, `"d":x${d}"`), { mode: 0o600 });
    const refused = await DecisionStore.open({ path: temp.path }).then(
      () => undefined,
      (error: unknown) => error as { code: string; issues: { path: string; message: string }[] },
    );
    expect(refused).toMatchObject({ code: 'config_invalid', issues: [{ path: 'decision_log.checkpoint.key_path', message: expect.stringMatching(/is not JSON/) }] });
    expect(JSON.stringify(refused!.issues)).not.toContain(d.slice(0, 8));
  });

  it('finds a record whose stored body was edited', async () => {
    const log = await open();
    const records = await fill(log, 15);
    const target = records[6]!;
    tamper("UPDATE decisions SET body = replace(body, '\"allow\":true', '\"allow\":false') WHERE decision_id = ?", target.decision_id);
    expect(await log.verify()).toMatchObject({
      ok: false,
      checked: 6,
      first_mismatch: { decision_id: target.decision_id, seq: 7, reason: 'hash_mismatch' },
    });
  });

  it.each([
    ['null', 'null'],
    ['a record whose reasons are not objects', '{"result": {"allow": true, "reasons": [1]}}'],
  ])('reports a rechained body that is %s as index_mismatch, not a crash', async (_label, body) => {
    const log = await open();
    const records = await fill(log, 3);
    const db = new DatabaseSync(temp.path);
    db.prepare('UPDATE decisions SET body = ? WHERE seq = 2').run(body);
    rechainFrom(db, 2);
    db.close();
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: records[1]!.decision_id, seq: 2, reason: 'index_mismatch' });
  });

  it('finds an index column edited to mislead queries', async () => {
    const log = await open();
    const records = await fill(log, 5);
    tamper('UPDATE decisions SET sub = ? WHERE decision_id = ?', 'someone-else', records[2]!.decision_id);
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: records[2]!.decision_id, seq: 3, reason: 'index_mismatch' });
  });

  it('names a row or mark whose integer was edited past 2^53 rather than failing the walk (node:sqlite cannot read it as a number)', async () => {
    const log = await open();
    const records = await fill(log, 15);
    const tooBig = '9223372036854775807';
    tamper(`UPDATE decisions SET timestamp = ${tooBig} WHERE seq = 3`);
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: records[2]!.decision_id, seq: 3, reason: 'index_mismatch' });
    tamper(`UPDATE decisions SET timestamp = ? WHERE seq = 3`, records[2]!.timestamp);
    tamper(`UPDATE decisions SET reason_set = ${tooBig} WHERE seq = 4`);
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: records[3]!.decision_id, seq: 4, reason: 'index_mismatch' });
    tamper(`UPDATE decisions SET reason_set = 1 WHERE seq = 4`);
    expect(await log.verify()).toMatchObject({ ok: true });
    tamper(`UPDATE checkpoints SET created_at = ${tooBig} WHERE seq = 10`);
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: records[9]!.decision_id, seq: 10, reason: 'checkpoint_signature_invalid' });
    tamper(`UPDATE anchors SET record_count = ${tooBig}`);
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: null, seq: 0, reason: 'anchor_signature_invalid' });
  });

  it('finds an index whose entries were edited to hide a record from filtered queries', async () => {
    const log = await open();
    await fill(log, 3);
    const hidden = decision({ sub: 'mallory' });
    await log.append(hidden);
    await fill(log, 8);
    expect(log.query({ sub: 'mallory' }).decisions.map((d) => d.decision_id)).toEqual([hidden.decision_id]);
    // Rebuilt without mallory's entry, then declared whole again: the rows are untouched, the
    // chain intact, and SQLite trusts the index, so a query by sub no longer finds the record.
    const db = new DatabaseSync(temp.path, { defensive: false });
    const { sql } = db.prepare("SELECT sql FROM sqlite_master WHERE name = 'decisions_by_sub'").get() as { sql: string };
    db.exec("DROP INDEX decisions_by_sub; CREATE INDEX decisions_by_sub ON decisions (sub, timestamp) WHERE sub <> 'mallory'");
    db.exec('PRAGMA writable_schema = ON');
    db.prepare("UPDATE sqlite_master SET sql = ? WHERE name = 'decisions_by_sub'").run(sql);
    db.exec('PRAGMA writable_schema = OFF');
    db.close();
    store = undefined;
    await log.close();
    const reopened = await open();
    expect(reopened.query({ sub: 'mallory' }).decisions).toEqual([]);
    expect(await reopened.verify()).toMatchObject({ ok: false, first_mismatch: { decision_id: hidden.decision_id, seq: 4, reason: 'index_corrupt' } });
  });

  it('finds the reason code index stored out of order, which misleads a reason filter', async () => {
    const log = await open();
    const denied = await fill(log, 3, { allow: false, reasons: ['scope_missing'] });
    const allowed = await fill(log, 3, { allow: true, reasons: ['granted'] });
    const found = (reader: DecisionStore, code: string) => reader.query({ reason: code }).decisions.map((d) => d.decision_id).sort();
    const truth = [denied.map((d) => d.decision_id).sort(), allowed.map((d) => d.decision_id).sort()];
    expect([found(log, 'scope_missing'), found(log, 'granted')]).toEqual(truth);
    corruptReasonCodesIndex(temp.path);
    store = undefined;
    await log.close();
    const reopened = await open();
    expect([found(reopened, 'scope_missing'), found(reopened, 'granted')]).not.toEqual(truth);
    // The message names no record: the entries are the codes' index, not rows of decisions.
    expect(await reopened.verify()).toMatchObject({ ok: false, first_mismatch: { decision_id: null, seq: 0, reason: 'index_corrupt' } });
  });

  it('finds a record filed under another set of reason codes', async () => {
    const log = await open();
    await log.append(decision({ allow: true, reasons: ['granted'] }));
    const records = await fill(log, 3, { allow: false, reasons: ['revoked'] });
    tamper("UPDATE decisions SET reason_set = (SELECT id FROM reason_sets WHERE codes = '[\"granted\"]') WHERE seq = 3");
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: records[1]!.decision_id, seq: 3, reason: 'index_mismatch' });
  });

  it('finds a reason code removed from the index, or added to it', async () => {
    const log = await open();
    const records = await fill(log, 3, { allow: false, reasons: ['revoked', 'scope_missing'] });
    tamper("DELETE FROM reason_set_codes WHERE code = 'revoked'");
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: records[0]!.decision_id, seq: 1, reason: 'index_mismatch' });
    tamper("INSERT INTO reason_set_codes (code, reason_set) SELECT 'revoked', reason_set FROM reason_set_codes WHERE code = 'scope_missing'");
    expect(await log.verify()).toMatchObject({ ok: true });
    tamper("INSERT INTO reason_set_codes (code, reason_set) SELECT 'granted', reason_set FROM reason_set_codes WHERE code = 'scope_missing'");
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: records[0]!.decision_id, seq: 1, reason: 'index_mismatch' });
  });

  it('finds a record deleted from the middle', async () => {
    const log = await open();
    const records = await fill(log, 15);
    tamper('DELETE FROM decisions WHERE decision_id = ?', records[4]!.decision_id);
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: records[5]!.decision_id, seq: 6, reason: 'record_missing' });
  });

  it('finds a rewritten chain through the signed checkpoint', async () => {
    const log = await open();
    const records = await fill(log, 15);
    // Edit record 3 and recompute every hash after it, as an attacker without the key would.
    const db = new DatabaseSync(temp.path);
    db.prepare("UPDATE decisions SET body = replace(body, '\"alice\"', '\"mallory\"'), sub = 'mallory' WHERE seq = 3").run();
    rechainFrom(db, 3);
    db.close();
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: records[9]!.decision_id, seq: 10, reason: 'checkpoint_mismatch' });
  });

  it('finds a chain rewritten behind deleted checkpoints', async () => {
    let log = await open();
    const records = await fill(log, 25, { allow: false });
    await log.close();
    log = await open();
    // Without the key: flip record 7 to an allow, recompute every hash, drop the checkpoints.
    const db = new DatabaseSync(temp.path);
    db.prepare(FLIP_TO_ALLOW).run(7);
    rechainFrom(db, 7);
    db.exec('DELETE FROM checkpoints');
    db.close();
    expect(await log.verify()).toEqual({
      ok: false,
      checked: 9,
      checkpoints_verified: 0,
      first_mismatch: { decision_id: records[9]!.decision_id, seq: 10, reason: 'checkpoint_missing' },
    });
  });

  it('finds a checkpoint deleted from the middle, and one whose bound was edited', async () => {
    const log = await open();
    const records = await fill(log, 25);
    tamper('DELETE FROM checkpoints WHERE seq = 20');
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: records[19]!.decision_id, seq: 20, reason: 'checkpoint_missing' });
    tamper('UPDATE checkpoints SET next_by = 30 WHERE seq = 10');
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: records[9]!.decision_id, seq: 10, reason: 'checkpoint_signature_invalid' });
    tamper('UPDATE checkpoints SET next_by = NULL WHERE seq = 10');
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: records[9]!.decision_id, seq: 10, reason: 'checkpoint_signature_invalid' });
  });

  it('finds the anchor the chain starts from deleted', async () => {
    const log = await open();
    await fill(log, 5);
    tamper('DELETE FROM anchors');
    expect(await log.verify()).toEqual({ ok: false, checked: 0, checkpoints_verified: 0, first_mismatch: { decision_id: null, seq: 0, reason: 'anchor_missing' } });
  });

  it('finds a forged checkpoint signature', async () => {
    const log = await open();
    const records = await fill(log, 12);
    tamper("UPDATE checkpoints SET signature = 'AAAA' || substr(signature, 5) WHERE seq = 10");
    expect((await log.verify()).first_mismatch).toEqual({
      decision_id: records[9]!.decision_id,
      seq: 10,
      reason: 'checkpoint_signature_invalid',
    });
  });

  it('finds records truncated from the end behind a checkpoint', async () => {
    const log = await open();
    await fill(log, 20);
    tamper('DELETE FROM decisions WHERE seq > 15');
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: null, seq: 20, reason: 'records_missing_at_end' });
  });

  it('finds a record planted at seq 0, before the chain starts, that get and query would serve', async () => {
    const log = await open();
    await fill(log, 12, { allow: false });
    const forged = plant(0);
    expect(log.get(forged)).toMatchObject({ seq: 0, result: { allow: true } });
    expect(log.query({ sub: 'mallory' }).decisions.map((d) => d.decision_id)).toEqual([forged]);
    expect(await log.verify()).toEqual({
      ok: false,
      checked: 0,
      checkpoints_verified: 0,
      first_mismatch: { decision_id: forged, seq: 0, reason: 'record_before_start' },
    });
  });

  it.each([
    ['an unsigned tail', 13],
    ['a head a checkpoint had signed already', 10],
    ['nothing but the start of the chain', 0],
  ])('finds a record added after a clean shutdown (%s), also once the next start has signed on from it', async (_label, count) => {
    let log = await open();
    await fill(log, count);
    await log.close();
    const forged = appendForged();
    log = await open();
    const mismatch = { decision_id: forged, seq: count + 1, reason: 'checkpoint_missing' };
    expect((await log.verify()).first_mismatch).toEqual(mismatch);
    expect(log.query({ sub: 'mallory' }).decisions.map((d) => d.decision_id)).toEqual([forged]);
    // The restarted writer chains on from whatever the file ends with, and signs it.
    await fill(log, 12);
    await log.close();
    log = await open();
    expect((await log.verify()).first_mismatch).toEqual(mismatch);
  });

  it('verifies a log closed and reopened, with or without records in between', async () => {
    let log = await open();
    await fill(log, 10);
    await log.close();
    log = await open();
    await log.close();
    log = await open();
    await fill(log, 3);
    await log.close();
    log = await open();
    expect(await log.verify()).toMatchObject({ ok: true, checked: 13 });
  });

  it('signs the tail on close, so truncation after a clean shutdown shows', async () => {
    let log = await open();
    await fill(log, 13);
    await log.close();
    tamper('DELETE FROM decisions WHERE seq = 13');
    log = await open();
    expect((await log.verify()).first_mismatch).toMatchObject({ seq: 13, reason: 'records_missing_at_end' });
  });
});

describe('records no checkpoint covers when the log opens', () => {
  it('are none after a clean shutdown, nor in a new log', async () => {
    let log = await open();
    expect(log.unsignedAtOpen).toBeUndefined();
    await fill(log, 13);
    await log.close();
    log = await open();
    expect(log.unsignedAtOpen).toBeUndefined();
  });

  it('are named when the shutdown checkpoint was deleted and a record chained on behind the stopped server, which verify alone passes', async () => {
    let log = await open();
    await fill(log, 13);
    await log.close();
    // Without the key: the checkpoint the shutdown signed deleted, a forged allow chained on.
    tamper('DELETE FROM checkpoints WHERE seq = 13');
    appendForged();
    log = await open();
    expect(log.unsignedAtOpen).toEqual({ from: 11, to: 14, checkpoint: 10 });
    expect(await log.verify()).toMatchObject({ ok: true, checked: 14 });
  });

  it('are named after a writer died without signing its tail', async () => {
    const key = loadOrCreateCheckpointKey(`${temp.path}.checkpoint-key.jwk`);
    const db = new DatabaseSync(temp.path);
    try {
      migrate(db, (migrating) => sealChainStart(migrating, key, 10));
      new ChainWriter(db, key, { everyRecords: 10, intervalMs: 3_600_000 }).commit(Array.from({ length: 7 }, () => prepared(decision())));
    } finally {
      db.close();
    }
    const log = await open();
    // Nothing but the anchor at genesis covers them.
    expect(log.unsignedAtOpen).toEqual({ from: 1, to: 7, checkpoint: 0 });
  });
});

describe('retention', () => {
  it.each([
    ['an edited anchor bound', 'UPDATE anchors SET next_by = 1000000000'],
    ['a forged checkpoint below the prune point', "INSERT INTO checkpoints (seq, hash, record_count, created_at, key_id, signature, next_by) VALUES (5, 'x', 5, 0, 'x', 'x', 1000000000)"],
  ])('refuses to sign over %s, so the rewrite it covers stays visible to verify', async (_label, forge) => {
    let log = await open();
    await fill(log, 25, { allow: false });
    await log.close();
    // Without the key: flip a record that retention keeps, re-chain after it, drop the checkpoints, forge a bound.
    const db = new DatabaseSync(temp.path);
    db.prepare(FLIP_TO_ALLOW).run(18);
    rechainFrom(db, 18);
    db.exec('DELETE FROM checkpoints');
    db.exec(forge);
    db.close();
    log = await open({ retention: { max_records: 10, check_interval_s: 3_600 } });
    await expect(log.prune()).rejects.toThrow(/not signed by the checkpoint key/);
    expect((await log.verify()).ok).toBe(false);
  });

  it('prunes the oldest beyond max_records and the rest still verifies, also after reopen', async () => {
    let log = await open({ retention: { max_records: 20, check_interval_s: 3_600 } });
    const records = await fill(log, 45);
    expect(await log.prune()).toBe(25);

    const remaining = [...log.export()];
    expect(remaining.map((d) => d.decision_id)).toEqual(records.slice(25).reverse().map((r) => r.decision_id));
    expect(log.get(records[24]!.decision_id)).toBeUndefined();
    expect(await log.verify()).toMatchObject({ ok: true, checked: 20 });

    await log.close();
    log = await open({ retention: { max_records: 20, check_interval_s: 3_600 } });
    const next = decision();
    await log.append(next);
    expect(log.get(next.decision_id)?.seq).toBe(46);
    expect(await log.verify()).toMatchObject({ ok: true });
  });

  it('deletes the reason codes only pruned records used, and files later records under them afresh', async () => {
    const log = await open({ retention: { max_records: 10, check_interval_s: 3_600 } });
    // Codes that carry request data, as OPA-style deny messages do.
    for (let i = 0; i < 30; i++) await log.append(decision({ allow: false, reasons: ['shared', `user alice-${i}@example.com may not read invoice ${i}`] }));
    expect(await log.prune()).toBe(20);
    const db = new DatabaseSync(temp.path, { readOnly: true });
    const codes = (db.prepare('SELECT code FROM reason_set_codes').all() as { code: string }[]).map((row) => row.code);
    const sets = (db.prepare('SELECT count(*) AS n FROM reason_sets').get() as { n: number }).n;
    db.close();
    expect(codes.filter((code) => code.includes('alice-0@'))).toEqual([]);
    expect(sets).toBe(10);
    expect(log.query({ reason: 'shared' }).decisions).toHaveLength(10);
    // A set the writer had cached and retention deleted is stored again, not pointed at.
    const again = decision({ allow: false, reasons: ['shared', 'user alice-0@example.com may not read invoice 0'] });
    await log.append(again);
    expect(log.query({ reason: 'user alice-0@example.com may not read invoice 0' }).decisions.map((d) => d.decision_id)).toEqual([again.decision_id]);
    expect(await log.verify()).toMatchObject({ ok: true, checked: 11 });
  });


  it('leaves nothing a pruned record held readable in the database file', async () => {
    const log = await open({ retention: { max_records: 5, check_interval_s: 3_600 } });
    for (let i = 0; i < 60; i++) {
      await log.append(decision({ sub: `pruned-subject-${i}-end`, allow: false, reasons: [`user pruned-code-${i}-end may not read`], context: { note: 'n'.repeat(200) } }));
    }
    expect(await log.prune()).toBe(55);
    await log.close();
    store = undefined;
    // Everything the WAL holds moved into the database file, as SQLite does on its own over time.
    const db = new DatabaseSync(temp.path);
    db.prepare('PRAGMA wal_checkpoint(TRUNCATE)').get();
    db.close();
    const file = readFileSync(temp.path).toString('latin1');
    const left = [...file.matchAll(/pruned-(subject|code)-(\d+)-end/g)].filter((match) => Number(match[2]) < 55).map((match) => match[0]);
    expect(left).toEqual([]);
    expect(file).toContain('pruned-subject-59-end');
  });
  it('leaves nothing a pruned record held in the write-ahead log either, while the log stays open', async () => {
    const log = await open({ retention: { max_records: 5, check_interval_s: 3_600 } });
    for (let i = 0; i < 60; i++) await log.append(decision({ sub: `walled-subject-${i}-end`, allow: false }));
    expect(await log.prune()).toBe(55);
    // No checkpoint by hand and no close: the files as an attacker with read access finds them now.
    const files = [temp.path, `${temp.path}-wal`].filter((path) => existsSync(path)).map((path) => readFileSync(path).toString('latin1')).join('');
    const left = [...files.matchAll(/walled-subject-(\d+)-end/g)].filter((match) => Number(match[1]) < 55).map((match) => match[0]);
    expect([...new Set(left)]).toEqual([]);
    expect(files).toContain('walled-subject-59-end');
  });

  it('prunes by age, keeping everything younger than max_age_days', async () => {
    const log = await open({ retention: { max_age_days: 30 } });
    const day = 86_400_000;
    const old = await fill(log, 5, { timestamp: Date.now() - 40 * day });
    const young = await fill(log, 5, { timestamp: Date.now() - 2 * day });
    // (The run at open may already have pruned some of them: check the state, not the count.)
    await log.prune();
    for (const record of old) expect(log.get(record.decision_id)).toBeUndefined();
    for (const record of young) expect(log.get(record.decision_id)).toBeDefined();
    expect(await log.verify()).toMatchObject({ ok: true, checked: 5 });
  });

  it('continues the chain from the anchor when everything was pruned', async () => {
    const log = await open({ retention: { max_age_days: 1 } });
    const old = await fill(log, 3, { timestamp: Date.now() - 10 * 86_400_000 });
    await log.prune();
    for (const record of old) expect(log.get(record.decision_id)).toBeUndefined();
    const next = decision();
    await log.append(next);
    expect(log.get(next.decision_id)?.seq).toBe(4);
    expect(await log.verify()).toMatchObject({ ok: true, checked: 1 });
  });

  it('finds a record planted among the pruned seqs, below the anchor', async () => {
    const log = await open({ retention: { max_records: 5 } });
    await fill(log, 12, { allow: false });
    expect(await log.prune()).toBe(7);
    const forged = plant(3);
    expect(log.get(forged)).toMatchObject({ seq: 3, result: { allow: true } });
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: forged, seq: 3, reason: 'record_before_start' });
    // The anchor's own seq is below the start too: nothing chains a record there either.
    tamper('DELETE FROM decisions WHERE seq = 3');
    const atAnchor = plant(7);
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: atAnchor, seq: 7, reason: 'record_before_start' });
  });

  it('still finds checkpoints deleted after pruning, from the bound the anchor carries on', async () => {
    const log = await open({ retention: { max_records: 5 } });
    const records = await fill(log, 14);
    expect(await log.prune()).toBe(9);
    expect(await log.verify()).toMatchObject({ ok: true, checked: 5, checkpoints_verified: 1 });
    tamper('DELETE FROM checkpoints');
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: records[9]!.decision_id, seq: 10, reason: 'checkpoint_missing' });
  });

  it('still finds the first kept record deleted, and a forged anchor', async () => {
    const log = await open({ retention: { max_records: 5 } });
    const records = await fill(log, 12);
    await log.prune();
    tamper('DELETE FROM decisions WHERE seq = 8');
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: records[8]!.decision_id, seq: 9, reason: 'record_missing' });

    // Pretending more was pruned needs a new anchor, which needs the key.
    tamper("UPDATE anchors SET seq = 8, hash = (SELECT hash FROM decisions WHERE seq = 9)");
    expect((await log.verify()).first_mismatch).toEqual({ decision_id: null, seq: 8, reason: 'anchor_signature_invalid' });
  });
});

/** The seqs the log has signed checkpoints for. */
function checkpointSeqs(): number[] {
  const db = new DatabaseSync(temp.path, { readOnly: true });
  try {
    return (db.prepare('SELECT seq FROM checkpoints ORDER BY seq').all() as { seq: number }[]).map((row) => row.seq);
  } finally {
    db.close();
  }
}

describe('checkpoint cadence', () => {
  it('signs a checkpoint every every_records records, also inside one large group commit', async () => {
    const log = await open();
    const committed: number[] = [];
    log.onCommitted((batch) => committed.push(batch.length));
    await Promise.all(Array.from({ length: 95 }, () => log.append(decision())));
    expect(Math.max(...committed)).toBeGreaterThan(10);
    expect(checkpointSeqs()).toEqual([10, 20, 30, 40, 50, 60, 70, 80, 90]);
    expect(await log.verify()).toMatchObject({ ok: true, checked: 95, checkpoints_verified: 9 });
  });

  it('keeps the bound the last checkpoint signed when restarted with a larger every_records', async () => {
    // A writer that died at seq 12 (no close): its checkpoint at 10 promised the next one by seq 20.
    const key = loadOrCreateCheckpointKey(`${temp.path}.checkpoint-key.jwk`);
    const db = new DatabaseSync(temp.path);
    try {
      migrate(db, (migrating) => sealChainStart(migrating, key, 10));
      new ChainWriter(db, key, { everyRecords: 10, intervalMs: 3_600_000 }).commit(Array.from({ length: 12 }, () => prepared(decision())));
    } finally {
      db.close();
    }
    const log = await open({ checkpoint: { every_records: 1_000 } });
    await fill(log, 20);
    expect(checkpointSeqs()).toEqual([10, 20]);
    expect(await log.verify()).toMatchObject({ ok: true, checked: 32 });
  });

  it('signs the first record after a clean shutdown, then applies a smaller every_records from there on', async () => {
    let log = await open({ checkpoint: { every_records: 1_000 } });
    await fill(log, 15);
    await log.close();
    // The checkpoint signed at close lets no record follow without one.
    log = await open({ checkpoint: { every_records: 4 } });
    await fill(log, 10);
    expect(checkpointSeqs()).toEqual([15, 16, 20, 24]);
    expect(await log.verify()).toMatchObject({ ok: true, checked: 25 });
  });

  it('leaves an unsigned tail shorter than every_records when the writer dies, which verifies', async () => {
    const key = loadOrCreateCheckpointKey(`${temp.path}.checkpoint-key.jwk`);
    const db = new DatabaseSync(temp.path);
    try {
      migrate(db, (migrating) => sealChainStart(migrating, key, 10));
      const writer = new ChainWriter(db, key, { everyRecords: 10, intervalMs: 3_600_000 });
      writer.commit(Array.from({ length: 35 }, () => prepared(decision())));
      writer.commit([prepared(decision())]);
      // No close(): no final checkpoint, as after kill -9.
    } finally {
      db.close();
    }
    expect(checkpointSeqs()).toEqual([10, 20, 30]);
    expect(await verifyChain(temp.path, key)).toEqual({ ok: true, checked: 36, checkpoints_verified: 3 });
  });
});

describe('creating the checkpoint key', () => {
  it('writes it whole under a name of its own and keeps a key another process made meanwhile', () => {
    const dir = mkdtempSync(join(tmpdir(), 'arbiter-checkpoint-key-'));
    try {
      const path = join(dir, 'checkpoint-key.jwk');
      const made = createCheckpointKey(path);
      expect(statSync(path).mode & 0o777).toBe(0o600);
      expect(readdirSync(dir)).toEqual(['checkpoint-key.jwk']);
      // A second creation (a racing process) neither fails on the file nor replaces it.
      const again = createCheckpointKey(path);
      expect(again.id).toBe(made.id);
      expect(readdirSync(dir)).toEqual(['checkpoint-key.jwk']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('deletes the temporary file (a private key) a crash left before linking it, not one a racing start is writing', () => {
    const dir = mkdtempSync(join(tmpdir(), 'arbiter-checkpoint-key-'));
    try {
      const path = join(dir, 'checkpoint-key.jwk');
      const crashed = `${path}.0b5e1b6c-6d47-4a4e-9f0e-2c1d5d3c9a11.tmp`;
      const racing = `${path}.7c9f1e2a-1b3d-4c5e-8f6a-9b0c1d2e3f4a.tmp`;
      writeFileSync(crashed, '{"kty":"OKP"}', { mode: 0o600 });
      utimesSync(crashed, new Date(Date.now() - 3_600_000), new Date(Date.now() - 3_600_000));
      writeFileSync(racing, '{"kty":"OKP"}', { mode: 0o600 });
      createCheckpointKey(path);
      expect(readdirSync(dir).sort()).toEqual(['checkpoint-key.jwk', 'checkpoint-key.jwk.7c9f1e2a-1b3d-4c5e-8f6a-9b0c1d2e3f4a.tmp']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
