import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { opaPath } from '../src/toolchain/opa.ts';
import type { Arbiter } from '../src/server/start.ts';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { postJson, startTestArbiter, tempDir } from './support/arbiter.ts';
import { whileLocked } from './support/sqlite-lock.ts';

let enabled: Arbiter;
let disabled: Arbiter;

beforeAll(async () => {
  enabled = await startTestArbiter({ opa_compat: { enabled: true } });
  disabled = await startTestArbiter();
});

afterAll(async () => {
  await enabled?.close();
  await disabled?.close();
});

/** What the real OPA answers for the same query on the same sources. */
function opaEval(query: string, input: unknown): unknown {
  const output = execFileSync(opaPath(), ['eval', '--format', 'json', '--stdin-input', '-d', 'test/fixtures/rego/simple', query], {
    input: JSON.stringify(input),
  });
  return (JSON.parse(output.toString()) as { result: { expressions: { value: unknown }[] }[] }).result[0]!.expressions[0]!.value;
}

const allowedInput = {
  subject: { authenticated: true, sub: 'user:alice', scopes: ['read'], act: [], claims: { tenant: 'acme' }, token: { age_s: 3 } },
  action: { name: 'read' },
  resource: { type: 'document', id: 'doc-1' },
  context: { environment: 'production', now: 1_800_000_000 },
};

describe('POST /v1/data/{bundle}/{rule} when opa_compat is enabled', () => {
  it('answers with OPA\'s result for the same input, as OPA shapes it', async () => {
    const res = await postJson(`${enabled.url}/v1/data/simple/decision`, { input: allowedInput });
    expect(res.status).toBe(200);
    expect(Object.keys(res.body!).sort()).toEqual(['decision_id', 'result']);
    expect(res.body!.decision_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.body!.result).toEqual(opaEval('data.simple.decision', allowedInput));
    expect(res.body!.result.allow).toBe(true);
  });

  it('evaluates the input as sent: an unverified subject is not turned anonymous', async () => {
    const input = { ...allowedInput, subject: { ...allowedInput.subject, scopes: [] }, action: { name: 'write' } };
    const res = await postJson(`${enabled.url}/v1/data/simple/decision`, { input });
    expect(res.status).toBe(200);
    expect(res.body!.result).toEqual(opaEval('data.simple.decision', input));
    expect(res.body!.result.reasons.map((r: { code: string }) => r.code).sort()).toEqual(['scope_missing', 'wrong_action']);
  });

  it('records rules whose reasons are not {code} objects instead of failing as audit_unavailable', async () => {
    const res = await postJson(`${enabled.url}/v1/data/echo/string_reasons`, { input: allowedInput });
    expect(res.status).toBe(200);
    expect(res.body!.result).toEqual({ allow: true, reasons: ['because', 7] });
    const record = enabled.decisionLog!.get(res.body!.decision_id as string);
    expect(record?.result.reasons).toEqual([{ code: 'because' }, { code: 'unrecognised_reason', value: 7 }]);
  });

  it('answers a policy reason named audit_unavailable as the policy gave it: only the log decides that a record failed', async () => {
    const res = await postJson(`${enabled.url}/v1/data/echo/caller_reasons`, { input: { reasons: ['audit_unavailable', 'other'] } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body!.result).toEqual({ allow: false, reasons: ['audit_unavailable', 'other'] });
    expect(enabled.decisionLog!.get(res.body!.decision_id as string)?.result.reasons).toEqual([{ code: 'audit_unavailable' }, { code: 'other' }]);
  });

  it('records which authenticated gateway sent the (unverified) input', async () => {
    const key = 'opa-compat-gateway-key';
    const gated = await startTestArbiter({
      opa_compat: { enabled: true },
      gateway: { authentication: 'api_key', api_keys: [{ id: 'kong-eu', sha256: createHash('sha256').update(key).digest('hex') }] },
    });
    try {
      const res = await postJson(`${gated.url}/v1/data/simple/decision`, { input: allowedInput }, { authorization: `ApiKey ${key}` });
      expect(res.status).toBe(200);
      expect(gated.decisionLog!.get(res.body!.decision_id as string)?.caller).toBe('kong-eu');
    } finally {
      await gated.close();
    }
  });

  it('answers 404 for a bundle or entrypoint that is not active', async () => {
    for (const path of ['nosuch/decision', 'simple/nosuch', 'simple/decision/deeper']) {
      const res = await postJson(`${enabled.url}/v1/data/${path}`, { input: allowedInput });
      expect(res.status, path).toBe(404);
      expect(res.body!.code).toBe('entrypoint_not_found');
    }
  });

  it('reads an encoded slash as part of its key, as OPA does: the path names no entrypoint', async () => {
    // azecho/candidates/actions is an entrypoint; OPA reads candidates%2Factions as one key,
    // "candidates/actions", which no rule is, and answers it undefined instead.
    const plain = await postJson(`${enabled.url}/v1/data/azecho/candidates/actions`, { input: {} });
    expect(plain.status).toBe(200);
    expect(plain.body!.result).toEqual(expect.any(Array));
    for (const path of ['azecho/candidates%2Factions', 'azecho/candidates%2factions', 'azecho%2Fcandidates/actions']) {
      const res = await postJson(`${enabled.url}/v1/data/${path}`, { input: {} });
      expect(res.status, path).toBe(404);
      expect(res.body, path).not.toHaveProperty('result');
      expect(res.body!.code, path).toBe('entrypoint_not_found');
    }
    // Other encoded characters are the characters they encode, as in OPA.
    const encoded = await postJson(`${enabled.url}/v1/data/simpl%65/decisio%6E`, { input: allowedInput });
    expect(encoded.status).toBe(200);
    expect(encoded.body!.result.allow).toBe(true);
  });

  it('records a request for a bundle or entrypoint that is not active, as a deny the 404 names', async () => {
    for (const [path, code] of [['nosuch/decision', 'no_active_bundle'], ['simple/nosuch', 'entrypoint_missing']] as const) {
      const res = await postJson(`${enabled.url}/v1/data/${path}`, { input: allowedInput });
      expect(res.status, path).toBe(404);
      expect(res.body!.code, path).toBe('entrypoint_not_found');
      const record = enabled.decisionLog!.get(res.body!.decision_id as string);
      expect(record, path).toMatchObject({ endpoint: '/v1/data', rule: path.split('/')[1], input: allowedInput, result: { allow: false, reasons: [{ code }] } });
    }
  });

  it('refuses strict-builtin-errors rather than allow on a builtin error OPA would make fatal', async () => {
    const url = `${enabled.url}/v1/data/echo/allow_unless_over_five`;
    // OPA's default: a builtin error (to_number("abc")) leaves the deny undefined, so this allows.
    const lenient = await postJson(url, { input: { x: 'abc' } });
    expect(lenient.status).toBe(200);
    expect(lenient.body!.result).toBe(true);
    // Asked for strict errors, OPA answers 500; the WebAssembly engine cannot, so it must not answer.
    for (const query of ['strict-builtin-errors=true', 'strict-builtin-errors', 'strict-builtin-errors=TRUE', 'strict-builtin-errors=false&strict-builtin-errors=true']) {
      const res = await postJson(`${url}?${query}`, { input: { x: 'abc' } });
      expect(res.status, query).toBe(400);
      expect(res.headers.get('content-type'), query).toBe('application/problem+json');
      expect(res.body!.code, query).toBe('query_parameter_unsupported');
      expect(res.body!.detail, query).toContain('strict-builtin-errors');
    }
    const off = await postJson(`${url}?strict-builtin-errors=false`, { input: { x: 'abc' } });
    expect(off.status).toBe(200);
    expect(off.body!.result).toBe(true);
  });

  it('answers 400 problems for malformed bodies', async () => {
    const url = `${enabled.url}/v1/data/simple/decision`;
    const malformed = await postJson(url, '{"input": ');
    expect(malformed.status).toBe(400);
    expect(malformed.headers.get('content-type')).toBe('application/problem+json');
    expect(malformed.body!.code).toBe('malformed_json');

    for (const body of [{}, { input: [1, 2] }, { input: 'x' }, { input: {}, extra: true }]) {
      const res = await postJson(url, body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body!.code).toBe('invalid_request');
    }
  });
});

describe('POST /v1/data/{bundle}/{rule} with a gzip body (Content-Encoding: gzip), as OPA accepts', () => {
  const url = () => `${enabled.url}/v1/data/simple/decision`;
  const send = (body: Uint8Array | string, encoding = 'gzip') =>
    fetch(url(), { method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': encoding }, body: typeof body === 'string' ? body : new Uint8Array(body) });

  it('answers it as the same body uncompressed', async () => {
    const plain = await postJson(url(), { input: allowedInput });
    for (const encoding of ['gzip', 'GZIP', 'x-gzip']) {
      const res = await send(gzipSync(JSON.stringify({ input: allowedInput })), encoding);
      expect(res.status, encoding).toBe(200);
      const body = (await res.json()) as Record<string, unknown>;
      expect(body.result, encoding).toEqual(plain.body!.result);
      expect(enabled.decisionLog!.get(body.decision_id as string)?.input, encoding).toEqual(allowedInput);
    }
  });

  it('holds the decompressed body to the body limit: a small gzip that inflates past it is 413', async () => {
    // 64 KiB of input in a few hundred bytes of gzip.
    const res = await send(gzipSync(JSON.stringify({ input: { pad: 'a'.repeat(64 * 1024) } })));
    expect(res.status).toBe(413);
    expect(((await res.json()) as Record<string, unknown>).code).toBe('body_too_large');
  });

  it('answers a body that is not gzip with a 400 problem, and still refuses other codings', async () => {
    const corrupt = await send(JSON.stringify({ input: allowedInput }));
    expect(corrupt.status).toBe(400);
    expect(corrupt.headers.get('content-type')).toBe('application/problem+json');
    expect(((await corrupt.json()) as Record<string, unknown>).code).toBe('malformed_json');
    const brotli = await send(JSON.stringify({ input: allowedInput }), 'br');
    expect(brotli.status).toBe(415);
    expect(brotli.headers.get('accept-encoding')).toBe('gzip, identity');
  });

  it('is not accepted by the decision endpoints, which read bodies as sent', async () => {
    const res = await fetch(`${enabled.url}/v1/decide`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' }, body: new Uint8Array(gzipSync(JSON.stringify({ action: 'read' }))) });
    expect(res.status).toBe(415);
  });
});

describe('POST /v1/data/{bundle}/{rule} for a bundle or entrypoint that is not active, while the log cannot record it', () => {
  it('is 500 audit_unavailable, not a 404 whose decision_id names no record', async () => {
    const path = join(tempDir('arbiter-opa-unrecorded-'), 'decisions.db');
    const server = await startTestArbiter({ opa_compat: { enabled: true }, decision_log: { path, busy_timeout_ms: 100 } });
    try {
      for (const rule of ['nosuch/decision', 'simple/nosuch']) {
        const res = await whileLocked(path, () => postJson(`${server.url}/v1/data/${rule}`, { input: allowedInput }));
        expect(res.status, rule).toBe(500);
        expect(res.body, rule).toMatchObject({ code: 'audit_unavailable', decision_id: expect.any(String) });
        expect(server.decisionLog!.get(res.body!.decision_id as string), rule).toBeUndefined();
      }
    } finally {
      await server.close();
    }
  });
});

describe('POST /v1/data/{bundle}/{rule} by default', () => {
  it('does not exist: caller-supplied claims are never evaluated unless enabled', async () => {
    const res = await postJson(`${disabled.url}/v1/data/simple/decision`, { input: allowedInput });
    // The path is live data's (GET, PUT, PATCH, DELETE): POST is not served there.
    expect(res.status).toBe(405);
    expect(res.body!.code).toBe('method_not_allowed');
    expect(res.headers.get('allow')).not.toContain('POST');
  });
});
