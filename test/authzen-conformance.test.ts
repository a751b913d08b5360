import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Arbiter } from '../src/server/start.ts';
import { postJson, startTestArbiter } from './support/arbiter.ts';

/**
 * The OpenID AuthZEN interop suite's Todo decisions, judged as the public harness judges
 * them: a single evaluation by `decision`, a batch by JSON.stringify of `evaluations`.
 * The file lives beside the repository (../shared/authzen/), as in CI.
 */
const decisionsFile = fileURLToPath(new URL('../../shared/authzen/todo-decisions.json', import.meta.url));
if (!existsSync(decisionsFile)) {
  throw new Error(`AuthZEN interop decisions not found at ${decisionsFile}: the conformance suite needs ../shared/authzen/todo-decisions.json beside the repository`);
}

interface InteropCase<E> {
  request: Record<string, unknown>;
  expected: E;
}

const decisions = JSON.parse(readFileSync(decisionsFile, 'utf8')) as {
  evaluation: InteropCase<boolean>[];
  evaluations: InteropCase<{ decision: boolean }[]>[];
};

let arbiter: Arbiter;

beforeAll(async () => {
  arbiter = await startTestArbiter({ authzen: { default_bundle: 'todo' } });
});

afterAll(async () => {
  await arbiter?.close();
});

describe('AuthZEN Todo interop decisions', () => {
  it('has every case of the suite', () => {
    expect(decisions.evaluation).toHaveLength(40);
    expect(decisions.evaluations).toHaveLength(3);
  });

  it.each(decisions.evaluation.map((c, i) => [i + 1, c] as const))('evaluation %i', async (_, { request, expected }) => {
    const res = await postJson(`${arbiter.url}/access/v1/evaluation`, request);
    expect(res.status).toBe(200);
    expect(res.body!.decision).toBe(expected);
  });

  it.each(decisions.evaluations.map((c, i) => [i + 1, c] as const))('evaluations %i', async (_, { request, expected }) => {
    const res = await postJson(`${arbiter.url}/access/v1/evaluations`, request);
    expect(res.status).toBe(200);
    expect(JSON.stringify(res.body!.evaluations)).toBe(JSON.stringify(expected));
  });
});
