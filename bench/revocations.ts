/**
 * Revocation store benchmarks (not part of the test suite; no assertions).
 *
 *   node bench/revocations.ts [revocations=50000] [concurrency=1000] [batch=1000]
 *
 * Runs, each on a fresh SQLite file with synchronous = FULL:
 * - sequential: one `add` awaited at a time, a commit (fsync) per revocation;
 * - concurrent: `concurrency` adds in flight, as a busy admin API would have them,
 *   so group commit puts many in one transaction;
 * - addMany: batches of `batch` revocations, one transaction each;
 * - check: decisions' revocation checks against the filled store, hits and misses;
 * - reload: opening the filled store again (restart time).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DatabaseSync } from 'node:sqlite';
import { openDataDatabase } from '../src/data/persistence.ts';
import { Revocations } from '../src/data/revocations.ts';
import type { RevocationInput } from '../src/data/revocation-schema.ts';

const ISSUER = 'https://idp.example.com';
const KINDS = ['jti', 'sid', 'sub', 'client_id'] as const;

function sample(i: number): RevocationInput {
  return { kind: KINDS[i % KINDS.length]!, value: `value-${i}`, iss: ISSUER, reason: 'benchmark', expires_at: 4_000_000_000 };
}

async function timed(label: string, count: number, run: () => Promise<unknown>): Promise<void> {
  const start = performance.now();
  await run();
  const seconds = (performance.now() - start) / 1000;
  console.log(`${label.padEnd(34)} ${count} in ${seconds.toFixed(2)} s = ${Math.round(count / seconds)} revocations/s`);
}

function fresh(): { dir: string; db: DatabaseSync; store: Revocations } {
  const dir = mkdtempSync(join(tmpdir(), 'arbiter-bench-revocations-'));
  const db = openDataDatabase(join(dir, 'arbiter.db'));
  return { dir, db, store: new Revocations(db) };
}

const [total = 50_000, concurrency = 1_000, batch = 1_000] = process.argv.slice(2).map(Number);
const sequentialCount = Math.min(total, 5_000);

{
  const { dir, db, store } = fresh();
  await timed('sequential add (commit each)', sequentialCount, async () => {
    for (let i = 0; i < sequentialCount; i++) await store.add(sample(i));
  });
  db.close();
  rmSync(dir, { recursive: true, force: true });
}

{
  const { dir, db, store } = fresh();
  let issued = 0;
  await timed(`concurrent add (${concurrency} in flight)`, total, () =>
    Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (issued < total) await store.add(sample(issued++));
      }),
    ),
  );
  db.close();
  rmSync(dir, { recursive: true, force: true });
}

{
  const { dir, db, store } = fresh();
  await timed(`addMany (batches of ${batch})`, total, async () => {
    for (let i = 0; i < total; i += batch) {
      await store.addMany(Array.from({ length: Math.min(batch, total - i) }, (_, j) => sample(i + j)));
    }
  });

  const checks = 1_000_000;
  const nowS = Math.floor(Date.now() / 1000);
  let hits = 0;
  const start = performance.now();
  for (let i = 0; i < checks; i++) {
    // Every other check names a revoked value; the rest miss on every kind.
    const value = i % 2 === 0 ? `value-${i % total}` : `unknown-${i}`;
    const token = { iss: ISSUER, jti: value, sid: value, sub: value, client_id: value, iat: nowS };
    if (store.check(token, nowS).revoked) hits++;
  }
  const seconds = (performance.now() - start) / 1000;
  console.log(
    `${'check'.padEnd(34)} ${checks} in ${seconds.toFixed(2)} s = ${Math.round(checks / seconds)} checks/s ` +
      `(${((seconds * 1e6) / checks).toFixed(2)} µs each, ${hits} revoked, ${store.size} revocations held)`,
  );

  db.close();
  const reloadStart = performance.now();
  const reopened = openDataDatabase(join(dir, 'arbiter.db'));
  const reloaded = new Revocations(reopened);
  console.log(`${'reload on open'.padEnd(34)} ${reloaded.size} revocations in ${(performance.now() - reloadStart).toFixed(0)} ms`);
  reopened.close();
  rmSync(dir, { recursive: true, force: true });
}
