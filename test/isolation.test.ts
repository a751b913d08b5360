import { afterEach, describe, expect, it } from 'vitest';
import type { Arbiter } from '../src/server/start.ts';
import { postJson, startTestArbiter } from './support/arbiter.ts';

/** A runaway policy costs one deny, never the server (issue #7, isolation). */
let arbiter: Arbiter | undefined;
const ask = (policy: string, context: Record<string, unknown> = {}) =>
  postJson(`${arbiter!.url}/v1/decide`, { action: 'read', resource: { type: 'doc' }, policy, context });

afterEach(async () => {
  await arbiter?.close();
  arbiter = undefined;
});

describe('evaluation isolation', () => {
  it('denies a looping evaluation with policy_timeout while other requests keep being answered', async () => {
    arbiter = await startTestArbiter({ engine: { workers: 1, deadline_ms: 250, max_memory_mb: 2048 } });
    const looping = ask('spin', { spin: true });
    const others = Array.from({ length: 5 }, () => ask('echo'));
    expect((await looping).body).toMatchObject({ allow: false, reasons: [{ code: 'policy_timeout' }], policy: { bundle: 'spin' } });
    for (const other of await Promise.all(others)) expect(other.body).toMatchObject({ allow: true });
    expect((await ask('spin', { quick: true })).body).toMatchObject({ allow: true, reasons: [{ code: 'quick' }] });
  });

  it('denies an evaluation that outgrows its memory ceiling with policy_resource_limit', async () => {
    arbiter = await startTestArbiter({ engine: { workers: 1, deadline_ms: 30_000, max_memory_mb: 16 } });
    expect((await ask('spin', { hog: true })).body).toMatchObject({ allow: false, reasons: [{ code: 'policy_resource_limit' }] });
    expect((await ask('spin', { quick: true })).body).toMatchObject({ allow: true });
    expect((await fetch(`${arbiter.url}/healthz`)).status).toBe(200);
  });
});
