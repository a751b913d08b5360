import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import pino from 'pino';
import { afterEach, describe, expect, inject, it, vi } from 'vitest';
import { readBundleArchive } from '../src/policy/archive.ts';
import type { PolicyBundle } from '../src/policy/bundle.ts';
import type { EvaluableBundle, PolicyEvaluation, PolicyEvaluator } from '../src/policy/evaluation/evaluator.ts';
import { InProcessEvaluator } from '../src/policy/evaluation/in-process.ts';
import { EvaluationPool } from '../src/policy/evaluation/pool.ts';
import { parseManifest } from '../src/policy/manifest.ts';
import { BundleRegistry } from '../src/policy/registry.ts';
import { LOOP_FOREVER, prefixExportedFunction } from './support/hostile-archives.ts';

async function bundle(name: string): Promise<EvaluableBundle> {
  const archive = new Uint8Array(readFileSync(join(inject('bundlesDir'), `${name}.tar.gz`)));
  const files = await readBundleArchive(archive);
  const data = JSON.parse(new TextDecoder().decode(files.get('data.json') ?? new TextEncoder().encode('{}'))) as Record<string, unknown>;
  return { digest: name, wasm: files.get('policy.wasm')!, data, roots: parseManifest(files).roots };
}

/** Revision `revision` of the echo bundle, as the registry holds it; its digest is the revision. */
async function echoRevision(revision: string): Promise<PolicyBundle> {
  const archive = new Uint8Array(readFileSync(join(inject('bundlesDir'), 'echo.tar.gz')));
  const files = await readBundleArchive(archive);
  const { wasm, data } = await bundle('echo');
  const manifest = parseManifest(files);
  return { name: 'echo', revision, digest: revision, manifest, data, roots: manifest.roots, wasm, entrypoints: new Set(['echo/decision']), archive };
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

  it('starts an evaluation\'s deadline when the worker gets to it, not while it waits behind others', async () => {
    // The pool's clock is a fake one the test moves: evaluations take real time, deadlines pass only when told.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const pool = new EvaluationPool({ workers: 1, deadlineMs: 1000, maxMemoryPages: 16_384, logger: pino({ level: 'silent' }) });
    try {
      const spin = await bundle('spin');
      expect(await pool.evaluate(spin, 'spin/decision', input({ quick: true }))).toMatchObject({ ok: true });
      // Both sent to the one worker at once: the runaway waits for the quick one.
      const quick = pool.evaluate(spin, 'spin/decision', input({ quick: true }));
      let looping: PolicyEvaluation | undefined;
      const loopingDone = pool.evaluate(spin, 'spin/decision', input({ spin: true })).then((result) => (looping = result));
      vi.advanceTimersByTime(600); // the quick one takes 600 ms
      expect(await quick).toMatchObject({ ok: true });
      vi.advanceTimersByTime(600); // 1,200 ms since both were sent, 600 ms since the runaway started
      await new Promise((resolve) => setImmediate(resolve));
      expect(looping).toBeUndefined();
      vi.advanceTimersByTime(500); // now past its own deadline: stopped, fail closed
      expect(await loopingDone).toMatchObject({ ok: false, code: 'policy_timeout' });
      expect(await pool.evaluate(spin, 'spin/decision', input({ quick: true }))).toMatchObject({ ok: true });
    } finally {
      await pool.close();
      vi.useRealTimers();
    }
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

  it('ignores a replaced worker\'s late busy: its module is not marked hung on the load deadline', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const pool = new EvaluationPool({ workers: 1, deadlineMs: 100, loadDeadlineMs: 1000, maxMemoryPages: 16_384, logger: pino({ level: 'silent' }) });
    try {
      const echo = await bundle('echo');
      expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true });
      const late = pool.evaluate(echo, 'echo/decision', input({}));
      const big = Object.fromEntries(Array.from({ length: 100_000 }, (_, i) => [`user:${i}@acme.example`, { grants: [{ id: `g-${i}`, actions: ['invoices.read'] }] }]));
      pool.setLiveData({ entitlements: big }, 2);
      // The main thread is held up (a long synchronous task) while the worker answers and starts
      // setting the big data (it says busy): the deadline is then seen before those messages are.
      const until = Date.now() + 1000;
      while (Date.now() < until);
      vi.advanceTimersByTime(100);
      expect(await late).toMatchObject({ ok: false, code: 'policy_timeout' });
      // Let the replaced worker's last messages arrive, then pass its load deadline.
      for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
      vi.advanceTimersByTime(1000);
      expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true, dataVersion: 2 });
    } finally {
      await pool.close();
      vi.useRealTimers();
    }
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

  it('loads a released revision for a decision that picked it before its release, and frees it again after', async () => {
    const pool = new EvaluationPool({ workers: 2, deadlineMs: 10_000, maxMemoryPages: 1024, logger: pino({ level: 'silent' }) });
    evaluator = pool;
    const echo = await bundle('echo');
    const held = async () => (await pool.policyInstances()).flatMap((thread) => thread.digests);
    expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true });
    // A newer revision was activated while decisions that had picked echo were verifying their tokens.
    pool.release('echo');
    expect(await held()).toEqual([]);
    const late = await Promise.all(Array.from({ length: 6 }, () => pool.evaluate(echo, 'echo/decision', input({}))));
    for (const result of late) expect(result).toMatchObject({ ok: true });
    expect(await held()).toEqual([]);
    // Still retired: a data update (a full copy into every instance) finds nothing of it, nor does the next late decision keep it.
    pool.setLiveData({ pair: { a: 1 } }, 2);
    expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true, dataVersion: 2 });
    expect(await held()).toEqual([]);
    // Activated again (a rollback): it stays loaded between decisions.
    pool.retain('echo');
    expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true });
    expect(await held()).toEqual(['echo']);
  });

  it('frees each revision the registry retires, though decisions that picked it before evaluate after (pull mode)', async () => {
    const pool = new EvaluationPool({ workers: 1, deadlineMs: 10_000, maxMemoryPages: 1024, logger: pino({ level: 'silent' }) });
    evaluator = pool;
    const registry = new BundleRegistry({ onRetire: (retired) => pool.release(retired.digest), onActivate: (active) => pool.retain(active.digest) });
    const held = async () => (await pool.policyInstances()).flatMap((thread) => thread.digests);
    registry.activate(await echoRevision('r0'));
    for (let n = 1; n <= 5; n++) {
      const picked = registry.get('echo')!; // a decision picks the active revision, then verifies its token ...
      const next = await echoRevision(`r${n}`);
      expect(await pool.evaluate(next, 'echo/decision', input({}))).toMatchObject({ ok: true }); // ... the next revision passes its smoke test ...
      registry.activate(next);
      expect(await pool.evaluate(picked, 'echo/decision', input({}))).toMatchObject({ ok: true }); // ... and the decision evaluates on its pick.
    }
    expect(await held()).toEqual(['r5']);
    // A rollback to a retired revision keeps it loaded between decisions.
    registry.activate(await echoRevision('r2'));
    for (let i = 0; i < 2; i++) expect(await pool.evaluate(registry.get('echo')!, 'echo/decision', input({}))).toMatchObject({ ok: true });
    expect(await held()).toEqual(['r2']);
  });

  it('denies policy_resource_limit while live data does not fit, and serves again once it does', async () => {
    const pool = new EvaluationPool({ workers: 1, deadlineMs: 10_000, maxMemoryPages: 64 /* 4 MiB */, logger: pino({ level: 'silent' }) });
    evaluator = pool;
    const [echo, spin] = [await bundle('echo'), await bundle('spin')];
    const held = async () => (await pool.policyInstances()).flatMap((thread) => thread.digests);
    expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true });
    // About 700 kB of JSON: parsed, more than 4 MiB of WebAssembly memory.
    const big = Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`k${i}`, { v: 'x'.repeat(20) }]));
    pool.setLiveData({ big, pair: { a: 2 } }, 2);
    // The loaded instance could not take the update (it is dropped, not left on old data); a new one cannot load with it.
    expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: false, code: 'policy_resource_limit', dataVersion: 2 });
    expect(await pool.evaluate(spin, 'spin/decision', input({ quick: true }))).toMatchObject({ ok: false, code: 'policy_resource_limit', dataVersion: 2 });
    expect(await held()).toEqual([]);
    pool.setLiveData({ pair: { a: 3 } }, 3);
    expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true, dataVersion: 3, resultSet: [{ result: { reasons: [{ pair: { a: 3 } }] } }] });
    expect(await pool.evaluate(spin, 'spin/decision', input({ quick: true }))).toMatchObject({ ok: true, dataVersion: 3 });
    // A version that does not fit, followed at once by one that does: the worker's report on the first arrives after the second was sent.
    pool.setLiveData({ big, pair: { a: 4 } }, 4);
    pool.setLiveData({ pair: { a: 5 } }, 5);
    expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true, dataVersion: 5, resultSet: [{ result: { reasons: [{ pair: { a: 5 } }] } }] });
  });

  it('says which revision cannot take the live data, across worker replacements, and tries each new version at once', async () => {
    const workers: Worker[] = [];
    const onWorker = (worker: Worker) => void workers.push(worker);
    process.on('worker', onWorker);
    try {
      const pool = new EvaluationPool({ workers: 1, deadlineMs: 10_000, maxMemoryPages: 64 /* 4 MiB */, logger: pino({ level: 'silent' }) });
      evaluator = pool;
      const echo = await bundle('echo');
      expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true });
      expect(pool.revisionFailure('echo')).toBeUndefined();
      const big = (tag: string) => Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`k${i}`, { v: tag.repeat(20) }]));
      pool.setLiveData({ big: big('x') }, 2);
      await vi.waitFor(() => expect(pool.revisionFailure('echo')).toMatchObject({ code: 'policy_resource_limit', message: expect.stringContaining('live data version 2') }), { timeout: 10_000 });
      // The worker stops (a crash): its replacement could not take that data either, and it is still said.
      await workers[0]!.terminate();
      await vi.waitFor(() => expect(workers).toHaveLength(2));
      expect(pool.revisionFailure('echo')).toMatchObject({ message: expect.stringContaining('live data version 2') });
      expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: false, code: 'policy_resource_limit', dataVersion: 2 });
      // The next version is tried at once, with no evaluation asking for it.
      pool.setLiveData({ big: big('y') }, 3);
      await vi.waitFor(() => expect(pool.revisionFailure('echo')).toMatchObject({ message: expect.stringContaining('live data version 3') }), { timeout: 10_000 });
      pool.setLiveData({ pair: { a: 4 } }, 4);
      expect(pool.revisionFailure('echo')).toBeUndefined();
      expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true, dataVersion: 4 });
      // A retired revision is not loaded again for the next version: nothing evaluates it.
      pool.setLiveData({ big: big('z') }, 5);
      await vi.waitFor(() => expect(pool.revisionFailure('echo')).toMatchObject({ message: expect.stringContaining('live data version 5') }), { timeout: 10_000 });
      pool.release('echo');
      pool.setLiveData({ big: big('w') }, 6);
      expect(await pool.policyInstances()).toEqual([{ thread: 'evaluator-0', digests: [] }]);
      expect(pool.revisionFailure('echo')).toBeUndefined();
    } finally {
      process.off('worker', onWorker);
    }
  });

  it('denies policy_resource_limit, not the version before, while live data is too large to hand to the workers', async () => {
    // Live data within data.max_size_bytes (unbounded) can still be past the longest string V8
    // builds (about 512 MiB): JSON.stringify then throws a RangeError, simulated here, since
    // building such a string in a test would take gigabytes. The write was acknowledged already.
    const pool = new EvaluationPool({ workers: 1, deadlineMs: 10_000, maxMemoryPages: 1024, logger: pino({ level: 'silent' }) });
    evaluator = pool;
    const echo = await bundle('echo');
    pool.setLiveData({ pair: { grant: true } }, 2);
    expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true, dataVersion: 2, resultSet: [{ result: { reasons: [{ pair: { grant: true } }] } }] });
    const stringify = vi.spyOn(JSON, 'stringify').mockImplementationOnce(() => {
      throw new RangeError('Invalid string length');
    });
    try {
      pool.setLiveData({ pair: { grant: false } }, 3);
    } catch {
      // As live data's listener does: the write is committed and answered whatever a listener throws.
    } finally {
      stringify.mockRestore();
    }
    // Not version 2, where the grant still stands: that answer would outlive its removal.
    expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: false, code: 'policy_resource_limit', dataVersion: 3 });
    pool.setLiveData({ pair: { grant: false } }, 4);
    expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true, dataVersion: 4, resultSet: [{ result: { reasons: [{ pair: { grant: false } }] } }] });
  });

  it('does not load a revision again and again on the version before while the latest cannot be handed to the workers', async () => {
    // A version the instance cannot take (past its memory ceiling), then at once one too large to
    // serialize: the worker's report on the first arrives after the second, which never reached it.
    const failedLoads: string[] = [];
    const logger = pino({ level: 'error' }, { write: (line: string) => void failedLoads.push(...(line.includes('failed to load') ? [line] : [])) });
    const pool = new EvaluationPool({ workers: 1, deadlineMs: 10_000, maxMemoryPages: 64 /* 4 MiB */, logger });
    evaluator = pool;
    const echo = await bundle('echo');
    expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true });
    const big = Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`k${i}`, { v: 'x'.repeat(20) }]));
    pool.setLiveData({ big }, 2);
    const stringify = vi.spyOn(JSON, 'stringify').mockImplementationOnce(() => {
      throw new RangeError('Invalid string length');
    });
    try {
      pool.setLiveData({ huge: true }, 3);
    } finally {
      stringify.mockRestore();
    }
    // Loading it again would hand it version 2 once more, fail once more, and so on for ever: a
    // worker compiling the module without end, an error logged each time, until the next version.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(failedLoads.length).toBeLessThanOrEqual(1);
    expect(pool.revisionFailure('echo')).toMatchObject({ code: 'policy_resource_limit' });
    expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: false, code: 'policy_resource_limit', dataVersion: 3 });
    pool.setLiveData({ pair: { a: 4 } }, 4);
    expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true, dataVersion: 4, resultSet: [{ result: { reasons: [{ pair: { a: 4 } }] } }] });
  });

  it('answers every evaluation when more than a worker takes at once are denied on the spot', async () => {
    const pool = new EvaluationPool({ workers: 1, deadlineMs: 10_000, maxMemoryPages: 64, logger: pino({ level: 'silent' }) });
    evaluator = pool;
    const echo = await bundle('echo');
    const big = Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`k${i}`, { v: 'x'.repeat(20) }]));
    pool.setLiveData({ big }, 2);
    // More than the worker's in-flight window: those queued beyond it must be answered too, not wait for the next call.
    const results = await Promise.all(Array.from({ length: 40 }, () => pool.evaluate(echo, 'echo/decision', input({}))));
    expect(results.every((r) => !r.ok && r.code === 'policy_resource_limit')).toBe(true);
  });

  it('starts no worker once closed, though a worker\'s last messages arrive after', async () => {
    const pool = new EvaluationPool({ workers: 1, deadlineMs: 1000, loadDeadlineMs: 300, maxMemoryPages: 1024, logger: pino({ level: 'silent' }) });
    evaluator = pool;
    const echo = await bundle('echo');
    // An OPA-built module whose runtime never returns once loaded: the worker says busy, then hangs.
    const hang = { digest: 'hang', wasm: prefixExportedFunction(echo.wasm, 'opa_heap_ptr_get', LOOP_FOREVER), data: {}, roots: ['hang'] };
    expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true });
    let started = 0;
    const onWorker = () => void (started += 1);
    process.on('worker', onWorker);
    try {
      const late = pool.evaluate(hang, 'hang/decision', input({}));
      // The main thread is held up (shutdown work) while the worker starts the load and says busy:
      // that message is delivered only after close().
      const until = Date.now() + 500;
      while (Date.now() < until);
      await pool.close();
      expect(await late).toMatchObject({ ok: false, code: 'policy_error' });
      // Past the load deadline the busy would have started: nothing is replaced after close.
      await new Promise((resolve) => setTimeout(resolve, 800));
      expect(started).toBe(0);
    } finally {
      process.off('worker', onWorker);
    }
  });

  it('denies policy_error, and keeps serving, when an evaluation\'s input cannot be built', async () => {
    const pool = new EvaluationPool({ workers: 1, deadlineMs: 1000, maxMemoryPages: 1024, logger: pino({ level: 'silent' }) });
    evaluator = pool;
    const echo = await bundle('echo');
    const unbuildable = () => {
      throw new RangeError('Invalid string length');
    };
    // Built when the worker can take it: after its start and module load, from a worker message.
    const [failed, good] = await Promise.all([pool.evaluate(echo, 'echo/decision', unbuildable), pool.evaluate(echo, 'echo/decision', input({}))]);
    expect(failed).toMatchObject({ ok: false, code: 'policy_error', message: expect.stringContaining('Invalid string length') });
    expect(good).toMatchObject({ ok: true });
    // And from evaluate itself, on a worker ready for it.
    expect(await pool.evaluate(echo, 'echo/decision', unbuildable)).toMatchObject({ ok: false, code: 'policy_error' });
    expect(await pool.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true });
  });

  it('answers policy_error for a module that cannot be instantiated', async () => {
    const pool = new EvaluationPool({ workers: 1, deadlineMs: 1000, maxMemoryPages: 256, logger: pino({ level: 'silent' }) });
    evaluator = pool;
    const broken = { digest: 'broken', wasm: new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1]), data: {}, roots: ['x'] };
    expect(await pool.evaluate(broken, 'x/decision', '{}')).toMatchObject({ ok: false, code: 'policy_error' });
  });
});

describe('in-process evaluator', () => {
  it('loads a released revision for a late decision without keeping it, and keeps it once retained', async () => {
    const inProcess = new InProcessEvaluator({ maxMemoryPages: 1024, logger: pino({ level: 'silent' }) });
    evaluator = inProcess;
    const echo = await bundle('echo');
    const held = async () => (await inProcess.policyInstances()).flatMap((thread) => thread.digests);
    expect(await inProcess.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true });
    inProcess.release('echo');
    expect(await inProcess.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true });
    expect(await held()).toEqual([]);
    inProcess.retain('echo');
    expect(await inProcess.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true });
    expect(await held()).toEqual(['echo']);
  });

  it('survives live data that does not fit: denies policy_resource_limit on the bundle until data that fits comes', async () => {
    const errors: string[] = [];
    const inProcess = new InProcessEvaluator({ maxMemoryPages: 64 /* 4 MiB */, logger: pino({ level: 'error' }, { write: (line: string) => errors.push(line) }) });
    evaluator = inProcess;
    const echo = await bundle('echo');
    expect(await inProcess.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true });
    const big = Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`k${i}`, { v: 'x'.repeat(20) }]));
    inProcess.setLiveData({ big, pair: { a: 2 } }, 2);
    expect(await inProcess.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: false, code: 'policy_resource_limit', dataVersion: 2 });
    expect(inProcess.revisionFailure('echo')).toMatchObject({ code: 'policy_resource_limit', message: expect.stringContaining('live data version 2') });
    expect(await inProcess.policyInstances()).toEqual([{ thread: 'main', digests: [] }]);
    expect(errors.map((line) => JSON.parse(line) as { digest: string; msg: string })).toMatchObject([{ digest: 'echo', msg: expect.stringMatching(/live data/) }]);
    // The next version is tried at once, not at the next evaluation (a replica out of rotation gets none).
    inProcess.setLiveData({ big, pair: { a: 3 } }, 3);
    await vi.waitFor(() => expect(inProcess.revisionFailure('echo')).toMatchObject({ message: expect.stringContaining('live data version 3') }));
    inProcess.setLiveData({ pair: { a: 4 } }, 4);
    expect(inProcess.revisionFailure('echo')).toBeUndefined();
    expect(await inProcess.evaluate(echo, 'echo/decision', input({}))).toMatchObject({ ok: true, dataVersion: 4, resultSet: [{ result: { reasons: [{ pair: { a: 4 } }] } }] });
  });

  it('runs an evaluation on the data version current when it starts, reports it, and builds its input then', async () => {
    const inProcess = new InProcessEvaluator({ maxMemoryPages: 1024, logger: pino({ level: 'silent' }) });
    evaluator = inProcess;
    const echo = await bundle('echo');
    inProcess.setLiveData({ pair: { a: 1 } }, 1);
    await inProcess.evaluate(echo, 'echo/decision', input({}));
    let builtAt = 0;
    let current = 1;
    const underWay = inProcess.evaluate(echo, 'echo/decision', () => ((builtAt = current), input({})));
    inProcess.setLiveData({ pair: { a: 2 } }, (current = 2));
    // Data, reported version and the moment the input was built agree: version 2 throughout.
    expect(await underWay).toMatchObject({ dataVersion: 2, resultSet: [{ result: { reasons: [{ pair: { a: 2 } }] } }] });
    expect(builtAt).toBe(2);
  });

  it('denies policy_error when an evaluation\'s input cannot be built', async () => {
    evaluator = new InProcessEvaluator({ maxMemoryPages: 1024, logger: pino({ level: 'silent' }) });
    const unbuildable = () => {
      throw new RangeError('Invalid string length');
    };
    expect(await evaluator.evaluate(await bundle('echo'), 'echo/decision', unbuildable)).toMatchObject({ ok: false, code: 'policy_error' });
  });

  it('gives the same answers as the pool', async () => {
    evaluator = new InProcessEvaluator({ maxMemoryPages: 1024, logger: pino({ level: 'silent' }) });
    evaluator.setLiveData({ pair: { a: 2 } }, 3);
    expect(await evaluator.evaluate(await bundle('echo'), 'echo/decision', input({}))).toMatchObject({
      ok: true,
      dataVersion: 3,
      resultSet: [{ result: { reasons: [{ pair: { a: 2 } }] } }],
    });
  });
});
