import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { readBundleArchive } from '../src/policy/archive.ts';
import type { EvaluableBundle, PolicyEvaluator } from '../src/policy/evaluation/evaluator.ts';
import { InProcessEvaluator } from '../src/policy/evaluation/in-process.ts';
import { EvaluationPool } from '../src/policy/evaluation/pool.ts';

async function bundle(name: string): Promise<EvaluableBundle> {
  const archive = new Uint8Array(readFileSync(join(inject('bundlesDir'), `${name}.tar.gz`)));
  const files = await readBundleArchive(archive);
  return { digest: name, wasm: files.get('policy.wasm')!, data: JSON.parse(new TextDecoder().decode(files.get('data.json') ?? new TextEncoder().encode('{}'))) as Record<string, unknown> };
}

const input = (context: Record<string, unknown>) => JSON.stringify({ action: { name: 'read' }, context, subject: { revoked: { revoked: false } }, data_status: {} });
let evaluator: PolicyEvaluator | undefined;

afterEach(async () => {
  await evaluator?.close();
  evaluator = undefined;
});

describe('evaluation pool (worker threads)', () => {
  it('evaluates with bundle data over live data and reports the data version', async () => {
    const pool = new EvaluationPool({ workers: 2, deadlineMs: 1000, maxMemoryPages: 1024, logger: pino({ level: 'silent' }) });
    evaluator = pool;
    pool.setLiveData({ pair: { a: 1 }, echo: { shadowed: true } }, 7);
    const result = await pool.evaluate(await bundle('echo'), 'echo/decision', input({}));
    expect(result).toMatchObject({ ok: true, dataVersion: 7, resultSet: [{ result: { allow: true, reasons: [{ pair: { a: 1 } }] } }] });
  });

  it('stops a looping policy at its deadline, keeps serving, and lets innocent neighbours finish', async () => {
    const pool = new EvaluationPool({ workers: 1, deadlineMs: 300, maxMemoryPages: 16_384, logger: pino({ level: 'silent' }) });
    evaluator = pool;
    const spin = await bundle('spin');
    const [looping, quick] = await Promise.all([
      pool.evaluate(spin, 'spin/decision', input({ spin: true })),
      pool.evaluate(spin, 'spin/decision', input({ quick: true })),
    ]);
    expect(looping).toMatchObject({ ok: false, code: 'policy_timeout' });
    expect(quick).toMatchObject({ ok: true, resultSet: [{ result: { reasons: [{ code: 'quick' }] } }] });
    expect(await pool.evaluate(spin, 'spin/decision', input({ quick: true }))).toMatchObject({ ok: true });
  });

  it('denies with policy_resource_limit when a policy outgrows its memory ceiling', async () => {
    const pool = new EvaluationPool({ workers: 1, deadlineMs: 10_000, maxMemoryPages: 256, logger: pino({ level: 'silent' }) });
    evaluator = pool;
    const spin = await bundle('spin');
    expect(await pool.evaluate(spin, 'spin/decision', input({ hog: true }))).toMatchObject({ ok: false, code: 'policy_resource_limit' });
    expect(await pool.evaluate(spin, 'spin/decision', input({ quick: true }))).toMatchObject({ ok: true });
  });

  it('holds evaluations while a large data update is applied, so the update does not eat their deadline', async () => {
    const pool = new EvaluationPool({ workers: 1, deadlineMs: 100, maxMemoryPages: 16_384, logger: pino({ level: 'silent' }) });
    evaluator = pool;
    const echo = await bundle('echo');
    expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true, dataVersion: 0 });
    // About 8 MB of live data: applying it takes far longer than the 100 ms deadline.
    const big = Object.fromEntries(Array.from({ length: 100_000 }, (_, i) => [`user:${i}@acme.example`, { grants: [{ id: `g-${i}`, actions: ['invoices.read'] }] }]));
    pool.setLiveData({ entitlements: big, pair: { a: 9 } }, 2);
    const results = await Promise.all(Array.from({ length: 5 }, () => pool.evaluate(echo, 'echo/decision', input({}))));
    for (const result of results) expect(result).toMatchObject({ ok: true, dataVersion: 2, resultSet: [{ result: { reasons: [{ pair: { a: 9 } }] } }] });
  });

  it('reports the instances each worker holds and frees a released revision', async () => {
    const pool = new EvaluationPool({ workers: 1, deadlineMs: 10_000, maxMemoryPages: 1024, logger: pino({ level: 'silent' }) });
    evaluator = pool;
    await pool.evaluate(await bundle('echo'), 'echo/decision', input({}));
    await pool.evaluate(await bundle('spin'), 'spin/decision', input({ quick: true }));
    expect(await pool.policyInstances()).toEqual([{ thread: 'evaluator-0', digests: ['echo', 'spin'] }]);
    pool.release('spin');
    expect(await pool.policyInstances()).toEqual([{ thread: 'evaluator-0', digests: ['echo'] }]);
  });

  it('answers policy_error for a module that cannot be instantiated', async () => {
    const pool = new EvaluationPool({ workers: 1, deadlineMs: 1000, maxMemoryPages: 256, logger: pino({ level: 'silent' }) });
    evaluator = pool;
    const broken = { digest: 'broken', wasm: new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1]), data: {} };
    expect(await pool.evaluate(broken, 'x/decision', '{}')).toMatchObject({ ok: false, code: 'policy_error' });
  });
});

describe('in-process evaluator', () => {
  it('gives the same answers as the pool', async () => {
    evaluator = new InProcessEvaluator({ maxMemoryPages: 1024 });
    evaluator.setLiveData({ pair: { a: 2 } }, 3);
    expect(await evaluator.evaluate(await bundle('echo'), 'echo/decision', input({}))).toMatchObject({
      ok: true,
      dataVersion: 3,
      resultSet: [{ result: { reasons: [{ pair: { a: 2 } }] } }],
    });
  });
});
