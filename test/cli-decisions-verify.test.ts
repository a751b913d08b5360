import { execFile } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { backup, DatabaseSync } from 'node:sqlite';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { DecisionStore } from '../src/decisions/store.ts';
import type { Arbiter } from '../src/server/start.ts';
import { postJson, startTestArbiter, tempDir } from './support/arbiter.ts';
import { corruptReasonCodesIndex, decision } from './support/decisions.ts';

/**
 * `arbiter decisions verify --db`: the server's verification run by the CLI on the SQLite file
 * itself (a backup copy, or the live log), read-only and without a server: online verify waits
 * for headers Node's fetch gives up on after 300 s, and an auditor may hold only a copy.
 */
const run = promisify(execFile);
type Result = { code: number; stdout: string; stderr: string };
const verify = (...args: string[]): Promise<Result> =>
  run(process.execPath, ['src/cli/main.ts', 'decisions', 'verify', ...args]).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: Result) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
  );

async function decide(arbiter: Arbiter, count: number, id = 'doc'): Promise<void> {
  for (let i = 0; i < count; i++) {
    expect((await postJson(`${arbiter.url}/v1/decide`, { action: 'read', resource: { type: 'doc', id: `${id}-${i}` } })).status).toBe(200);
  }
}

/** A log written by a real server, closed: its file, its key file, and the directory. */
async function closedLog(records: number): Promise<{ dir: string; path: string; keyPath: string }> {
  const dir = tempDir('arbiter-verify-offline-');
  const path = join(dir, 'decisions.db');
  // A checkpoint every 10 records: the copy holds several signatures to check.
  const arbiter = await startTestArbiter({ decision_log: { path, checkpoint: { every_records: 10 } } });
  try {
    await decide(arbiter, records);
  } finally {
    await arbiter.close();
  }
  return { dir, path, keyPath: `${path}.checkpoint-key.jwk` };
}

/** A backup of the log, as `sqlite3 decisions.db ".backup backup.db"` makes one: a file alone. */
async function backupCopy(path: string): Promise<{ dir: string; copy: string }> {
  const dir = tempDir('arbiter-verify-copy-');
  const copy = join(dir, 'backup.db');
  const source = new DatabaseSync(path, { readOnly: true });
  try {
    await backup(source, copy);
  } finally {
    source.close();
  }
  chmodSync(copy, 0o400);
  return { dir, copy };
}

describe('arbiter decisions verify --db (offline)', () => {
  it('verifies a copy with the server key, signatures included, as online verify reports it, leaving no -wal/-shm beside it', async () => {
    const log = await closedLog(25);
    const { dir, copy } = await backupCopy(log.path);
    const human = await verify('--db', copy, '--key', log.keyPath);
    expect(human).toMatchObject({ code: 0, stdout: expect.stringMatching(/^decision log intact: 25 records, [1-9]\d* signed checkpoints verified\n$/) });
    const json = await verify('--db', copy, '--key', log.keyPath, '--json');
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({ ok: true, checked: 25, checkpoints_verified: expect.any(Number) });
    expect(JSON.parse(json.stdout).checkpoints_verified).toBeGreaterThanOrEqual(2);
    expect(readdirSync(dir)).toEqual(['backup.db']);

    // The public half is enough: an auditor need not hold the key that signs.
    const { d: _private, ...publicJwk } = JSON.parse(readFileSync(log.keyPath, 'utf8')) as Record<string, string>;
    const publicKey = join(log.dir, 'public.jwk');
    writeFileSync(publicKey, JSON.stringify(publicJwk));
    chmodSync(publicKey, 0o644);
    expect(await verify('--db', copy, '--key', publicKey)).toMatchObject({ code: 0, stdout: expect.stringContaining('decision log intact: 25 records') });
  });

  it('finds a tampered record in a copy, named as online verify names it (exit 1)', async () => {
    const log = await closedLog(8);
    const { copy } = await backupCopy(log.path);
    chmodSync(copy, 0o600);
    const db = new DatabaseSync(copy);
    const victim = (db.prepare('SELECT decision_id FROM decisions WHERE seq = 3').get() as { decision_id: string }).decision_id;
    // The record now says it was about another document.
    expect(db.prepare("UPDATE decisions SET body = replace(body, '\"doc-2\"', '\"doc-7\"') WHERE seq = 3").run().changes).toBe(1);
    expect(db.prepare('SELECT body FROM decisions WHERE seq = 3').get()).toMatchObject({ body: expect.stringContaining('"doc-7"') });
    db.close();
    const result = await verify('--db', copy, '--key', log.keyPath);
    expect(result.code).toBe(1);
    expect(result.stdout).toBe(`decision log NOT intact: hash_mismatch at seq 3 (decision ${victim}), after 2 good records\n`);
    expect(result.stderr).toContain('keep the database file as evidence');
    const json = await verify('--db', copy, '--key', log.keyPath, '--json');
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toEqual({ ok: false, checked: 2, checkpoints_verified: expect.any(Number), first_mismatch: { decision_id: victim, seq: 3, reason: 'hash_mismatch' } });
  });

  it('says which records are gone: those before the record it names for a gap, those a checkpoint signs for a cut-off end', async () => {
    const log = await closedLog(25);
    const { copy: gap } = await backupCopy(log.path);
    chmodSync(gap, 0o600);
    let db = new DatabaseSync(gap);
    const after = (db.prepare('SELECT decision_id FROM decisions WHERE seq = 4').get() as { decision_id: string }).decision_id;
    expect(db.prepare('DELETE FROM decisions WHERE seq = 3').run().changes).toBe(1);
    db.close();
    const deleted = await verify('--db', gap, '--key', log.keyPath);
    expect(deleted.code).toBe(1);
    // Seq 4 is there: it is seq 3 that is not. The JSON report names the record after the gap.
    expect(deleted.stdout).toBe(`decision log NOT intact: record_missing: records before seq 4 (decision ${after}, the first record after the gap) were deleted, after 2 good records\n`);
    expect(JSON.parse((await verify('--db', gap, '--key', log.keyPath, '--json')).stdout)).toMatchObject({ first_mismatch: { decision_id: after, seq: 4, reason: 'record_missing' } });

    const { copy: cut } = await backupCopy(log.path);
    chmodSync(cut, 0o600);
    db = new DatabaseSync(cut);
    // The checkpoint signed at seq 20 (every 10 records) vouches for records cut off from the end.
    expect(db.prepare('SELECT seq FROM checkpoints WHERE seq = 20').get()).toBeDefined();
    db.prepare('DELETE FROM checkpoints WHERE seq > 20').run();
    expect(db.prepare('DELETE FROM decisions WHERE seq >= 18').run().changes).toBe(8);
    db.close();
    const truncated = await verify('--db', cut, '--key', log.keyPath);
    expect(truncated.code).toBe(1);
    expect(truncated.stdout).toBe('decision log NOT intact: records_missing_at_end: the checkpoint at seq 20 signs records the log no longer holds (its end was cut off), after 17 good records\n');
  });

  it('names no seq for a damaged index that names no record (the reason codes\' index stored out of order)', async () => {
    const dir = tempDir('arbiter-verify-codes-');
    const path = join(dir, 'decisions.db');
    const log = await DecisionStore.open({ path });
    try {
      for (const shape of [{ allow: false, reasons: ['scope_missing'] }, { allow: true, reasons: ['granted'] }]) {
        for (let i = 0; i < 3; i++) await log.append(decision(shape));
      }
    } finally {
      await log.close();
    }
    corruptReasonCodesIndex(path);
    const found = await verify('--db', path, '--key', `${path}.checkpoint-key.jwk`);
    expect(found.code).toBe(1);
    expect(found.stdout).toMatch(/^decision log NOT intact: index_corrupt \(.*no record.*\), after 6 good records\n$/);
    expect(found.stdout).not.toMatch(/seq/);
  });

  it('says the signatures were not checked without the key, rather than report ok (exit 1); another key fails them', async () => {
    const log = await closedLog(5);
    const { dir, copy } = await backupCopy(log.path);
    const unkeyed = await verify('--db', copy, '--json');
    expect(unkeyed.code).toBe(1);
    expect(JSON.parse(unkeyed.stdout)).toEqual({ ok: false, checked: 5, checkpoints_verified: 0, not_checked: 'checkpoint_signatures' });
    expect(unkeyed.stderr).toContain('no checkpoint key at');
    expect((await verify('--db', copy)).stdout).toMatch(/signatures were NOT checked/);

    // A key named that is not there is said as such.
    const missing = await verify('--db', copy, '--key', join(dir, 'nope.jwk'));
    expect(missing).toMatchObject({ code: 1, stdout: '' });
    expect(missing.stderr).toContain('nope.jwk does not exist');

    const other = await closedLog(1);
    const wrong = await verify('--db', copy, '--key', other.keyPath);
    expect(wrong.code).toBe(1);
    expect(wrong.stdout).toContain('anchor_signature_invalid');
    expect(wrong.stderr).toContain('if this is not the key that signs this log');
  });

  it('takes the log and its key from --config, as the server would open them', async () => {
    const log = await closedLog(4);
    const config = join(log.dir, 'arbiter.yaml');
    writeFileSync(config, `decision_log:\n  path: ${JSON.stringify(log.path)}\n  checkpoint:\n    key_path: ${JSON.stringify(log.keyPath)}\n`);
    expect(await verify('--config', config)).toMatchObject({ code: 0, stdout: expect.stringContaining('decision log intact: 4 records') });
    // The server stopped cleanly: the file was read alone, and left so.
    expect(existsSync(`${log.path}-wal`) || existsSync(`${log.path}-shm`)).toBe(false);
    // A backup copy checked with the key the configuration names.
    const { copy } = await backupCopy(log.path);
    expect(await verify('--config', config, '--db', copy)).toMatchObject({ code: 0, stdout: expect.stringContaining('decision log intact: 4 records') });
  });

  it('verifies the live log while the server keeps writing to it, without holding the writer up', async () => {
    const dir = tempDir('arbiter-verify-live-');
    const path = join(dir, 'decisions.db');
    const arbiter = await startTestArbiter({ decision_log: { path, checkpoint: { every_records: 20 } } });
    try {
      await decide(arbiter, 60, 'before');
      let writing = true;
      let written = 0;
      const writer = (async () => {
        while (writing) {
          await decide(arbiter, 1, `during-${written}`);
          written += 1;
        }
      })();
      const result = await verify('--db', path, '--json');
      const verified = await verify('--db', path);
      writing = false;
      await writer;
      expect(written).toBeGreaterThan(0);
      // Without --key the default key file beside the log is used, as the server's.
      expect(result.code, result.stderr).toBe(0);
      expect(JSON.parse(result.stdout)).toMatchObject({ ok: true, checkpoints_verified: expect.any(Number) });
      expect(JSON.parse(result.stdout).checked).toBeGreaterThanOrEqual(60);
      expect(verified).toMatchObject({ code: 0, stdout: expect.stringContaining('decision log intact') });
    } finally {
      await arbiter.close();
    }
  });

  it('refuses --url/--token with --db, --key without a log, and says when the file is not there', async () => {
    const dir = tempDir('arbiter-verify-usage-');
    const db = join(dir, 'decisions.db');
    expect(await verify('--db', db, '--url', 'http://127.0.0.1:1')).toMatchObject({ code: 2, stdout: '' });
    expect(await verify('--key', join(dir, 'k.jwk'))).toMatchObject({ code: 2, stderr: expect.stringContaining('--key needs the decision log') });
    const missing = await verify('--db', db);
    expect(missing).toMatchObject({ code: 1, stderr: expect.stringContaining(`cannot verify ${db}: no such file`) });
    expect(existsSync(db)).toBe(false);
  });
});
