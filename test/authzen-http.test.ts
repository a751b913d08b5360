import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Arbiter } from '../src/server/start.ts';
import { postJson, startTestArbiter, tempDir } from './support/arbiter.ts';
import { TestIssuer } from './support/issuer.ts';
import { whileLocked } from './support/sqlite-lock.ts';

// Opaque subject ids of the Todo scenario (rego/todo/README.md).
const rick = 'CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs';
const morty = 'CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs';
const summer = 'CiRmZDI2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs';
const beth = 'CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs';

const user = (id: string, properties?: Record<string, unknown>) => ({ type: 'user', id, ...(properties && { properties }) });
const todoOwnedBy = (email: string, id = 't1') => ({ type: 'todo', id, properties: { ownerID: email } });

let idp: TestIssuer;
let arbiter: Arbiter;
const url = (path: string) => `${arbiter.url}${path}`;

beforeAll(async () => {
  idp = await TestIssuer.create('https://idp.test.example');
  await idp.serve();
  arbiter = await startTestArbiter({
    issuers: [{ issuer: idp.issuer, jwks_uri: idp.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'] }],
    authzen: { default_bundle: 'todo', tenants: { echo: 'azecho', plain: 'simple', ghost: 'no_such_bundle', 'todo-a': 'todo', 'todo-b': 'todo' } },
  });
});

afterAll(async () => {
  await arbiter?.close();
  await idp?.close();
});

interface PolicyInput {
  subject: Record<string, unknown>;
  action: unknown;
  resource: unknown;
  context: Record<string, unknown>;
}

/** The policy input the azecho bundle saw, from its one reason. */
function echoedInput(body: unknown): PolicyInput {
  const [reason] = (body as { context: { reasons: { id: string; reason_admin: { en: string } }[] } }).context.reasons;
  expect(reason!.id).toBe('echo');
  return JSON.parse(reason!.reason_admin.en) as PolicyInput;
}

describe('POST /access/v1/evaluation', () => {
  it('answers with the decision and the reasons as reason objects in context', async () => {
    const res = await postJson(url('/access/v1/evaluation'), { subject: user(rick), action: { name: 'can_create_todo' }, resource: { type: 'todo', id: 't1' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(res.body).toEqual({
      decision: true,
      context: {
        decision_id: expect.stringMatching(/^[0-9a-f-]{36}$/),
        reasons: [{ id: 'granted_by_role', reason_admin: { en: 'role admin may can_create_todo' } }],
      },
    });
  });

  it('denies with the policy reason', async () => {
    const res = await postJson(url('/access/v1/evaluation'), { subject: user(beth), action: { name: 'can_create_todo' }, resource: { type: 'todo', id: 't1' } });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ decision: false, context: { reasons: [{ id: 'not_permitted', reason_admin: { en: expect.any(String) } }] } });
  });

  it('echoes X-Request-ID and gives it to the policy', async () => {
    const res = await postJson(
      url('/access/v1/evaluation'),
      { subject: user(rick), action: { name: 'can_read_todos' }, resource: { type: 'todo', id: 't1' } },
      { 'X-Request-ID': 'pep-req-42', 'X-Tenant': 'echo' },
    );
    expect(res.headers.get('x-request-id')).toBe('pep-req-42');
    expect(echoedInput(res.body!).context.request_id).toBe('pep-req-42');
    const bad = await postJson(url('/access/v1/evaluation'), '{', { 'X-Request-ID': 'pep-req-43' });
    expect(bad.status).toBe(400);
    expect(bad.headers.get('x-request-id')).toBe('pep-req-43');
  });

  it('ignores unknown fields at every level', async () => {
    const res = await postJson(url('/access/v1/evaluation'), {
      subject: { ...user(morty), nickname: 'morty' },
      action: { name: 'can_update_todo', verb: 'PUT' },
      resource: { ...todoOwnedBy('morty@the-citadel.com'), owner: 'x' },
      context: { time: '2026-01-01T00:00:00Z' },
      future_extension: { anything: [1, 2] },
    });
    expect(res.status).toBe(200);
    expect(res.body!.decision).toBe(true);
  });

  it('maps the entities onto the policy input', async () => {
    const res = await postJson(
      url('/access/v1/evaluation'),
      { subject: user('u1', { department: 'Sales' }), action: { name: 'can_read' }, resource: { type: 'doc', id: 'd1' }, context: { ip: '10.0.0.1' } },
      { 'X-Tenant': 'echo' },
    );
    const input = echoedInput(res.body!);
    expect(input.subject).toMatchObject({ authenticated: false, asserted: true, type: 'user', id: 'u1', properties: { department: 'Sales' } });
    expect(input.action).toEqual({ name: 'can_read', properties: {} });
    expect(input.resource).toEqual({ type: 'doc', id: 'd1', properties: {} });
    expect(input.context).toMatchObject({ ip: '10.0.0.1', now: expect.any(Number), request_id: expect.any(String) });
  });

  it('checks a subject asserted without a token against sub revocations, by its id', async () => {
    const ask = async (id: string) => echoedInput((await postJson(url('/access/v1/evaluation'), { subject: user(id), action: { name: 'can_read' }, resource: { type: 'doc', id: 'd1' } }, { 'X-Tenant': 'echo' })).body!).subject;
    expect((await ask('u-revoked')).revoked).toEqual({ revoked: false });
    const entry = await arbiter.revocations.add({ kind: 'sub', value: 'u-revoked', reason: 'left the company' });
    try {
      expect((await ask('u-revoked')).revoked).toEqual({ revoked: true, reason: 'left the company', revocation_id: entry.id });
      expect((await ask('u-other')).revoked).toEqual({ revoked: false });
    } finally {
      arbiter.revocations.remove(entry.id);
    }
    // The Todo policy denies on it: rick may create to-dos until his sub is revoked.
    const create = () => postJson(url('/access/v1/evaluation'), { subject: user(rick), action: { name: 'can_create_todo' }, resource: { type: 'todo', id: 't1' } });
    expect((await create()).body!.decision).toBe(true);
    const rickRevoked = await arbiter.revocations.add({ kind: 'sub', value: rick, reason: 'left the citadel' });
    try {
      expect((await create()).body).toMatchObject({ decision: false, context: { reasons: [{ id: 'subject_revoked' }] } });
    } finally {
      arbiter.revocations.remove(rickRevoked.id);
    }
  });

  const problemOf = async (init: RequestInit) => {
    const response = await fetch(url('/access/v1/evaluation'), { method: 'POST', ...init });
    return { status: response.status, type: response.headers.get('content-type'), body: (await response.json()) as { code: string; errors?: { pointer: string }[] } };
  };
  const valid = { subject: user(rick), action: { name: 'can_read_todos' }, resource: { type: 'todo', id: 't1' } };

  it.each([
    ['malformed JSON', { headers: { 'content-type': 'application/json' }, body: '{"subject": ' }, 'malformed_json'],
    ['an empty body', { headers: { 'content-type': 'application/json' }, body: '' }, 'malformed_json'],
    ['another content type', { headers: { 'content-type': 'text/plain' }, body: JSON.stringify(valid) }, 'unsupported_media_type'],
    ['no content type', { body: new Blob([JSON.stringify(valid)]) }, 'unsupported_media_type'],
    ['a JSON array', { headers: { 'content-type': 'application/json' }, body: '[]' }, 'invalid_request'],
  ] as const)('answers 400 for %s', async (_, init, code) => {
    const res = await problemOf(init);
    expect(res.status).toBe(400);
    expect(res.type).toBe('application/problem+json');
    expect(res.body.code).toBe(code);
  });

  it.each([
    ['subject.id a number', { ...valid, subject: { type: 'user', id: 7 } }, '/subject/id'],
    ['action missing', { subject: valid.subject, resource: valid.resource }, '/action'],
    ['resource.id missing', { ...valid, resource: { type: 'todo' } }, '/resource/id'],
    ['resource.properties an array', { ...valid, resource: { type: 'todo', id: 't1', properties: [] } }, '/resource/properties'],
    ['context a string', { ...valid, context: 'now' }, '/context'],
    ['access_token a number', { ...valid, subject: user(rick, { access_token: 1 }) }, '/subject/properties/access_token'],
  ])('answers 400 for %s, naming the field', async (_, body, pointer) => {
    const res = await problemOf({ headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ code: 'invalid_request', errors: [expect.objectContaining({ pointer })] });
  });
});

describe('bundle selection', () => {
  const request = { subject: user(rick), action: { name: 'can_read_todos' }, resource: { type: 'todo', id: 't1' } };

  it('picks the tenant bundle from X-Tenant, or else from context.tenant', async () => {
    const byHeader = await postJson(url('/access/v1/evaluation'), request, { 'X-Tenant': 'echo' });
    expect(echoedInput(byHeader.body!).subject.id).toBe(rick);
    const byContext = await postJson(url('/access/v1/evaluation'), { ...request, context: { tenant: 'echo' } });
    expect(echoedInput(byContext.body!).context.tenant).toBe('echo');
    const agreeing = await postJson(url('/access/v1/evaluation'), { ...request, context: { tenant: 'echo' } }, { 'X-Tenant': 'echo' });
    expect(echoedInput(agreeing.body!).context.tenant).toBe('echo');
  });

  it.each([
    ['an evaluation', '/access/v1/evaluation', {}],
    ['a batch', '/access/v1/evaluations', { evaluations: [{}] }],
    ['a search', '/access/v1/search/subject', { subject: { type: 'user' } }],
  ])('refuses %s whose context.tenant names another tenant than X-Tenant (one bundle would answer for the other)', async (_label, path, extra) => {
    const res = await postJson(url(path), { ...request, ...extra, context: { tenant: 'echo' } }, { 'X-Tenant': 'ghost' });
    expect(res).toMatchObject({ status: 400, body: { code: 'invalid_request', errors: [{ pointer: '/context/tenant' }] } });
  });

  it.each([
    ['a bundle without authzen metadata', 'plain', /does not declare authzen/],
    ['a bundle that is not active', 'ghost', /no active bundle named no_such_bundle/],
    ['an unknown tenant', 'nobody', /no AuthZEN bundle is configured for tenant "nobody"/],
    ['a tenant named like an Object member', 'constructor', /no AuthZEN bundle is configured for tenant "constructor"/],
  ])('answers 503 for %s', async (_, tenant, detail) => {
    const res = await postJson(url('/access/v1/evaluation'), request, { 'X-Tenant': tenant });
    expect(res.status).toBe(503);
    expect(res.headers.get('content-type')).toBe('application/problem+json');
    expect(res.body).toMatchObject({ code: 'authzen_unavailable', detail: expect.stringMatching(detail) });
  });
});

describe('/readyz', () => {
  it('lists as degraded a tenant whose bundle is active but declares no AuthZEN support, as one whose bundle is not active', async () => {
    const res = await fetch(url('/readyz'));
    expect(res.status).toBe(200);
    const body = (await res.json()) as { status: string; degraded: string[] };
    expect(body.status).toBe('ready');
    expect(body.degraded).toEqual(
      expect.arrayContaining([expect.stringMatching(/^AuthZEN tenant plain: bundle simple does not declare authzen .*503/), expect.stringContaining('AuthZEN tenant ghost: bundle no_such_bundle is not active')]),
    );
    expect(body.degraded.some((line) => line.includes('tenant echo'))).toBe(false);
  });

  it('lists as degraded an AuthZEN default bundle that is active but declares no AuthZEN support', async () => {
    const plain = await startTestArbiter({ authzen: { default_bundle: 'simple' } });
    try {
      expect(await postJson(`${plain.url}/access/v1/evaluation`, { subject: user(rick), action: { name: 'can_read_todos' }, resource: { type: 'todo', id: 't1' } })).toMatchObject({
        status: 503,
        body: { code: 'authzen_unavailable', detail: expect.stringContaining('bundle simple does not declare authzen') },
      });
      const res = await fetch(`${plain.url}/readyz`);
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ status: 'ready', problems: [], degraded: [expect.stringMatching(/^AuthZEN default bundle simple \(authzen.default_bundle\): bundle simple does not declare authzen/)] });
    } finally {
      await plain.close();
    }
  });

  it('is not ready while the default bundles cannot hold the live data, and lists such a tenant bundle as degraded', async () => {
    // About 700 kB of JSON seeded at start: parsed, more than the 4 MiB each instance may use.
    const seed = join(tempDir(), 'big.json');
    writeFileSync(seed, JSON.stringify(Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`k${i}`, { v: 'x'.repeat(20) }]))));
    const cramped = await startTestArbiter({
      bundles: { default: 'simple' },
      authzen: { default_bundle: 'todo', tenants: { echo: 'azecho' } },
      engine: { max_memory_mb: 4 },
      data: { seed: { big: seed } },
    });
    try {
      await expect
        .poll(async () => (await fetch(`${cramped.url}/readyz`)).json(), { timeout: 15_000 })
        .toMatchObject({
          status: 'not_ready',
          problems: expect.arrayContaining([
            expect.stringMatching(/^default bundle simple \(revision .*\) cannot evaluate on the live data \(its decisions deny policy_resource_limit\)/),
            expect.stringMatching(/^AuthZEN default bundle todo \(revision .*\) cannot evaluate on the live data .*\(authzen.default_bundle\)$/),
          ]),
          degraded: expect.arrayContaining([expect.stringMatching(/^AuthZEN tenant echo: bundle azecho \(revision .*\) cannot evaluate on the live data/)]),
        });
    } finally {
      await cramped.close();
    }
  });
});

describe('subject access tokens', () => {
  const request = (token: string, tenant = 'echo') =>
    postJson(url('/access/v1/evaluation'), { subject: user(rick, { access_token: token, department: 'R&D' }), action: { name: 'can_read_todos' }, resource: { type: 'todo', id: 't1' } }, { 'X-Tenant': tenant });

  it('verifies subject.properties.access_token like /v1/decide and keeps it out of the input', async () => {
    const token = await idp.sign({ sub: 'rick', scope: 'todo' });
    const res = await request(token);
    expect(res.body!.decision).toBe(true);
    const input = echoedInput(res.body!);
    expect(input.subject).toMatchObject({ authenticated: true, asserted: true, iss: idp.issuer, sub: 'rick', scopes: ['todo'], type: 'user', id: rick });
    expect(input.subject.properties).toEqual({ department: 'R&D' });
    expect(JSON.stringify(res.body)).not.toContain(token);
  });

  it('denies a token that cannot be trusted, with the token reason', async () => {
    const now = Math.floor(Date.now() / 1000);
    const expired = await idp.sign({ sub: 'rick' }, { iat: now - 300, exp: now - 100 });
    const echo = await request(expired);
    expect(echo.status).toBe(200);
    expect(echo.body).toMatchObject({ decision: false, context: { reasons: [{ id: 'token_expired' }] } });
    // The Todo policy would allow Rick without a token: a bad token still denies.
    const todo = await postJson(url('/access/v1/evaluation'), { subject: user(rick, { access_token: expired }), action: { name: 'can_read_todos' }, resource: { type: 'todo', id: 't1' } });
    expect(todo.body).toMatchObject({ decision: false, context: { reasons: [{ id: 'token_expired' }] } });
    const garbage = await request('not-a-jwt');
    expect(garbage.body).toMatchObject({ decision: false, context: { reasons: [{ id: 'token_malformed' }] } });
  });

  it('records the subject the PEP asserted beside a token it refused: a bad token does not hide whom the PEP asked about', async () => {
    const now = Math.floor(Date.now() / 1000);
    const expired = await idp.sign({ sub: 'rick' }, { iat: now - 300, exp: now - 100 });
    const res = await postJson(url('/access/v1/evaluation'), { subject: user(rick, { access_token: expired, department: 'R&D' }), action: { name: 'can_read_todos' }, resource: { type: 'todo', id: 't1' } });
    expect(res.body).toMatchObject({ decision: false, context: { reasons: [{ id: 'token_expired' }] } });
    const record = arbiter.decisionLog!.get((res.body as { context: { decision_id: string } }).context.decision_id)!;
    expect(record.input.subject).toEqual({
      asserted: true,
      type: 'user',
      id: rick,
      properties: { department: 'R&D' },
      authenticated: false,
      rejected_token: { code: 'token_expired', fingerprint: expect.any(String), claimed_iss: idp.issuer },
    });
    // Still the token's refusal: no policy ran, nothing to replay, and the token is not stored.
    expect(record.claim_names).toEqual([]);
    expect(JSON.stringify(record)).not.toContain(expired);
  });

  // The policy decides on the asserted id (the Todo policy reads only it): sending a token of
  // another sub along must not take the asserted subject out of reach of its sub revocation.
  it('checks the asserted id against sub revocations when the token names another sub', async () => {
    const token = await idp.sign({ sub: 'pep-service' });
    const create = () => postJson(url('/access/v1/evaluation'), { subject: user(rick, { access_token: token }), action: { name: 'can_create_todo' }, resource: { type: 'todo', id: 't1' } });
    expect((await create()).body!.decision).toBe(true);
    const rickRevoked = await arbiter.revocations.add({ kind: 'sub', value: rick, reason: 'left the citadel' });
    try {
      expect((await create()).body).toMatchObject({ decision: false, context: { reasons: [{ id: 'subject_revoked' }] } });
      const input = echoedInput((await request(token)).body!);
      expect(input.subject).toMatchObject({ authenticated: true, sub: 'pep-service', revoked: { revoked: true, reason: 'left the citadel', revocation_id: rickRevoked.id } });
    } finally {
      arbiter.revocations.remove(rickRevoked.id);
    }
  });
});

describe('POST /access/v1/evaluations', () => {
  const evaluations = (body: Record<string, unknown>, headers: Record<string, string> = {}) => postJson(url('/access/v1/evaluations'), body, headers);
  // allow, deny, allow for morty
  const mixed = {
    subject: user(morty),
    action: { name: 'can_update_todo' },
    evaluations: [
      { resource: todoOwnedBy('morty@the-citadel.com') },
      { resource: todoOwnedBy('rick@the-citadel.com') },
      { resource: todoOwnedBy('morty@the-citadel.com', 't2') },
    ],
  };

  it('replaces a default entity whole with the item one', async () => {
    const res = await evaluations({
      subject: user(morty),
      action: { name: 'can_update_todo' },
      resource: todoOwnedBy('morty@the-citadel.com'),
      evaluations: [{}, { resource: { type: 'todo', id: 't2' } }, { subject: user(beth) }, { action: { name: 'can_read_todos' } }],
    });
    expect(res.status).toBe(200);
    expect(JSON.stringify(res.body!.evaluations)).toBe('[{"decision":true},{"decision":false},{"decision":false},{"decision":true}]');
  });

  it.each([
    ['execute_all', mixed.evaluations, '[{"decision":true},{"decision":false},{"decision":true}]'],
    ['deny_on_first_deny', mixed.evaluations, '[{"decision":true},{"decision":false}]'],
    ['permit_on_first_permit', [mixed.evaluations[1], mixed.evaluations[0], mixed.evaluations[1]], '[{"decision":false},{"decision":true}]'],
  ])('%s returns the evaluations it ran, in order', async (semantic, items, expected) => {
    const res = await evaluations({ ...mixed, evaluations: items, options: { evaluations_semantic: semantic } });
    expect(JSON.stringify(res.body)).toBe(`{"evaluations":${expected}}`);
  });

  it('defaults to execute_all and refuses an unknown semantic', async () => {
    const res = await evaluations(mixed);
    expect(res.body!.evaluations).toHaveLength(3);
    const bad = await evaluations({ ...mixed, options: { evaluations_semantic: 'majority' } });
    expect(bad.status).toBe(400);
    expect(bad.body!.errors[0].pointer).toBe('/options/evaluations_semantic');
  });

  it('denies a bad item without failing the batch', async () => {
    const items = [mixed.evaluations[0], 42, { action: { name: 5 } }, { resource: { type: 'todo' } }, mixed.evaluations[0]];
    const res = await evaluations({ ...mixed, evaluations: items });
    expect(res.status).toBe(200);
    expect(JSON.stringify(res.body!.evaluations)).toBe('[{"decision":true},{"decision":false},{"decision":false},{"decision":false},{"decision":true}]');
  });

  it('takes an item member given as null for the item\'s (a deny), not the default', async () => {
    const res = await evaluations({ ...mixed, evaluations: [{ subject: null, resource: todoOwnedBy('morty@the-citadel.com') }] });
    expect(JSON.stringify(res.body!.evaluations)).toBe('[{"decision":false}]');
  });

  it('does not let the batch\'s bundle answer an item that names another tenant', async () => {
    const res = await evaluations({ ...mixed, evaluations: [mixed.evaluations[0], { ...mixed.evaluations[0], context: { tenant: 'echo' } }], options: { include_reasons: true } });
    expect(res.body!.evaluations[0].decision).toBe(true);
    expect(res.body!.evaluations[1]).toMatchObject({ decision: false, context: { reasons: [{ id: 'invalid_evaluation', reason_admin: { en: expect.stringContaining('/context/tenant') } }] } });
  });

  it('counts a bad item as a deny for deny_on_first_deny', async () => {
    const res = await evaluations({ ...mixed, evaluations: [mixed.evaluations[0], 'x', mixed.evaluations[0]], options: { evaluations_semantic: 'deny_on_first_deny' } });
    expect(JSON.stringify(res.body!.evaluations)).toBe('[{"decision":true},{"decision":false}]');
  });

  it('adds reasons to items only when include_reasons is set', async () => {
    const res = await evaluations({ ...mixed, evaluations: [mixed.evaluations[0], { action: { name: 5 } }], options: { include_reasons: true } });
    expect(res.body!.evaluations).toEqual([
      { decision: true, context: { decision_id: expect.any(String), reasons: [{ id: 'granted_to_owner', reason_admin: { en: expect.any(String) } }] } },
      { decision: false, context: { reasons: [{ id: 'invalid_evaluation', reason_admin: { en: expect.stringContaining('evaluations[1]: /action/name') } }] } },
    ]);
  });

  it('keeps obligations in item context even without reasons', async () => {
    const res = await evaluations(
      { subject: user('u1'), resource: { type: 'doc', id: 'd1' }, evaluations: [{ action: { name: 'with_obligation' } }, { action: { name: 'deny_me' } }] },
      { 'X-Tenant': 'echo' },
    );
    expect(JSON.stringify(res.body!.evaluations)).toBe('[{"decision":true,"context":{"obligations":[{"type":"audit"}]}},{"decision":false}]');
  });

  it.each([['missing', undefined], ['empty', []]])('behaves as a single evaluation when evaluations is %s', async (_, items) => {
    const res = await evaluations({ subject: user(rick), action: { name: 'can_delete_todo' }, resource: todoOwnedBy('morty@the-citadel.com'), evaluations: items });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ decision: true, context: { decision_id: expect.any(String), reasons: [{ id: 'granted_by_role', reason_admin: { en: expect.any(String) } }] } });
    const incomplete = await evaluations({ subject: user(rick), action: { name: 'can_delete_todo' }, evaluations: items });
    expect(incomplete.status).toBe(400);
    expect(incomplete.body!.errors[0].pointer).toBe('/resource');
  });

  it('answers 400 for wrong types at the top level', async () => {
    for (const body of [{ ...mixed, subject: 'morty' }, { ...mixed, evaluations: {} }, { ...mixed, options: { include_reasons: 'yes' } }]) {
      const res = await evaluations(body);
      expect(res.status).toBe(400);
      expect(res.body!.code).toBe('invalid_request');
    }
  });
});

describe('search', () => {
  type Page = { page: { next_token: string }; results: Record<string, unknown>[] };

  /** Follows next_token to the end, asserting every page but the last is full. */
  async function walk(path: string, body: Record<string, unknown>, limit: number): Promise<Page[]> {
    const pages: Page[] = [];
    let token: string | undefined;
    do {
      const res = await postJson(url(path), { ...body, page: { limit, ...(token !== undefined && { token }) } });
      expect(res.status).toBe(200);
      pages.push(res.body as Page);
      token = res.body!.page.next_token;
      expect(pages.length).toBeLessThan(20);
    } while (token !== '');
    for (const page of pages.slice(0, -1)) expect(page.results).toHaveLength(limit);
    return pages;
  }

  const subjectQuery = { subject: { type: 'user' }, action: { name: 'can_create_todo' }, resource: { type: 'todo', id: 't1' } };

  it('finds the subjects allowed, in candidate order', async () => {
    const res = await postJson(url('/access/v1/search/subject'), subjectQuery);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ page: { next_token: '' }, results: [user(rick), user(morty), user(summer)] });
  });

  it('lowers a page limit above the maximum, however large, instead of refusing it', async () => {
    for (const limit of [5000, 2 ** 60]) {
      const res = await postJson(url('/access/v1/search/subject'), { ...subjectQuery, page: { limit } });
      expect(res.status, String(limit)).toBe(200);
      expect(res.body!.results).toEqual([user(rick), user(morty), user(summer)]);
    }
  });

  it('walks every page with limit 1 and ends with an empty next_token', async () => {
    const pages = await walk('/access/v1/search/subject', subjectQuery, 1);
    expect(pages.map((p) => p.results)).toEqual([[user(rick)], [user(morty)], [user(summer)]]);
    expect(pages.at(-1)!.page.next_token).toBe('');
  });

  // A PEP (and the AuthZEN certification harness) asks for the next page with page.token alone.
  it('keeps the page limit of the token when the next request sends the token without a limit', async () => {
    const pages: Page[] = [];
    let page: Record<string, unknown> = { limit: 1 };
    do {
      const res = await postJson(url('/access/v1/search/subject'), { ...subjectQuery, page });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      pages.push(res.body as Page);
      page = { token: res.body!.page.next_token };
      expect(pages.length).toBeLessThan(5);
    } while (page.token !== '');
    expect(pages.map((p) => p.results)).toEqual([[user(rick)], [user(morty)], [user(summer)]]);
    // The limit the token carries is bound by its digest: another one is refused, alone or not.
    const text = Buffer.from(pages[0]!.page.next_token, 'base64url').toString();
    const relimited = Buffer.from(text.replace(/\.1$/, '.2')).toString('base64url');
    for (const body of [{ ...subjectQuery, page: { token: relimited } }, { ...subjectQuery, page: { limit: 2, token: relimited } }]) {
      const res = await postJson(url('/access/v1/search/subject'), body);
      expect(res.status).toBe(400);
      expect(res.body!.code).toBe('invalid_page_token');
    }
  });

  // The AuthZEN drafts, up to the last one before 1.0, send the next page as page.next_token:
  // ignored, it would answer the first page again, with the same token, for ever.
  it('takes page.next_token in a request as the page token of the drafts', async () => {
    const first = await postJson(url('/access/v1/search/subject'), { ...subjectQuery, page: { limit: 1 } });
    const token = first.body!.page.next_token as string;
    const next = await postJson(url('/access/v1/search/subject'), { ...subjectQuery, page: { next_token: token } });
    expect(next.status, JSON.stringify(next.body)).toBe(200);
    expect(next.body!.results).toEqual([user(morty)]);
    for (const next_token of [token, '']) {
      const same = await postJson(url('/access/v1/search/subject'), { ...subjectQuery, page: { token, next_token } });
      expect(same.body!.results).toEqual([user(morty)]);
    }
    const forged = await postJson(url('/access/v1/search/subject'), { ...subjectQuery, page: { next_token: 'bm90IGEgdG9rZW4' } });
    expect(forged.status).toBe(400);
    expect(forged.body!.code).toBe('invalid_page_token');
    // Two different tokens: which page is meant cannot be told.
    const both = await postJson(url('/access/v1/search/subject'), { ...subjectQuery, page: { token, next_token: 'bm90IGEgdG9rZW4' } });
    expect(both.status).toBe(400);
    expect(both.body!.errors).toEqual([{ pointer: '/page/next_token', detail: expect.any(String) }]);
  });

  // An empty page.token names no page (the first), as an empty next_token does: a draft PEP
  // that sends both, the token empty, means the page its next_token names.
  it('takes page.next_token beside an empty page.token', async () => {
    const first = await postJson(url('/access/v1/search/subject'), { ...subjectQuery, page: { limit: 1 } });
    const token = first.body!.page.next_token as string;
    const next = await postJson(url('/access/v1/search/subject'), { ...subjectQuery, page: { token: '', next_token: token } });
    expect(next.status, JSON.stringify(next.body)).toBe(200);
    expect(next.body!.results).toEqual([user(morty)]);
  });

  it('ignores a subject id in a subject search', async () => {
    const res = await postJson(url('/access/v1/search/subject'), { ...subjectQuery, subject: user(beth) });
    expect(res.body!.results).toEqual([user(rick), user(morty), user(summer)]);
  });

  it('finds resources, paginated', async () => {
    const pages = await walk('/access/v1/search/resource', { subject: user(beth), action: { name: 'can_read_user' }, resource: { type: 'user' } }, 2);
    expect(pages.map((p) => p.results.length)).toEqual([2, 2, 1]);
    expect(pages.flatMap((p) => p.results).map((r) => r.id)).toEqual([
      'beth@the-smiths.com', 'jerry@the-smiths.com', 'morty@the-citadel.com', 'rick@the-citadel.com', 'summer@the-smiths.com',
    ]);
  });

  it('returns an empty page when the bundle lists no candidates', async () => {
    const res = await postJson(url('/access/v1/search/resource'), { subject: user(beth), action: { name: 'can_read_todos' }, resource: { type: 'todo' } });
    expect(res.body).toEqual({ page: { next_token: '' }, results: [] });
  });

  it('finds actions', async () => {
    const res = await postJson(url('/access/v1/search/action'), { subject: user(morty), resource: todoOwnedBy('morty@the-citadel.com') });
    expect(res.body!.results).toEqual([{ name: 'can_create_todo' }, { name: 'can_delete_todo' }, { name: 'can_read_todos' }, { name: 'can_update_todo' }]);
  });

  it('refuses a tampered token, or a token replayed against another query', async () => {
    const first = await postJson(url('/access/v1/search/subject'), { ...subjectQuery, page: { limit: 1 } });
    const token = first.body!.page.next_token as string;
    expect(token).not.toBe('');
    const [offset, digest] = Buffer.from(token, 'base64url').toString().split('.');
    const tampered = Buffer.from(`${offset}.${digest!.slice(0, -1)}${digest!.endsWith('A') ? 'B' : 'A'}`).toString('base64url');
    const attempts = [
      { ...subjectQuery, page: { limit: 1, token: tampered } },
      { ...subjectQuery, page: { limit: 1, token: `${token}x` } },
      { ...subjectQuery, page: { limit: 1, token: 'bm90IGEgdG9rZW4' } },
      { ...subjectQuery, page: { limit: 2, token } },
      { ...subjectQuery, action: { name: 'can_read_todos' }, page: { limit: 1, token } },
      { ...subjectQuery, context: { tenant_hint: 'x' }, page: { limit: 1, token } },
    ];
    for (const body of attempts) {
      const res = await postJson(url('/access/v1/search/subject'), body);
      expect(res.status).toBe(400);
      expect(res.body!.code).toBe('invalid_page_token');
      // Named like every other bad field: by JSON pointer, to the member the body gave it in.
      expect(res.body!.errors).toEqual([{ pointer: '/page/token', detail: expect.any(String) }]);
    }
    const drafts = await postJson(url('/access/v1/search/subject'), { ...subjectQuery, page: { limit: 1, next_token: tampered } });
    expect(drafts.status).toBe(400);
    expect(drafts.body).toMatchObject({ code: 'invalid_page_token', errors: [{ pointer: '/page/next_token' }] });
    const honest = await postJson(url('/access/v1/search/subject'), { ...subjectQuery, page: { limit: 1, token } });
    expect(honest.body!.results).toEqual([user(morty)]);
  });

  // Tenants may share a bundle whose policy reads input.context.tenant: the offsets of one tenant's results say nothing of another's.
  it('refuses a token replayed for another tenant, even one the same bundle answers', async () => {
    const tokenFor = async (headers: Record<string, string>) => {
      const res = await postJson(url('/access/v1/search/subject'), { ...subjectQuery, page: { limit: 1 } }, headers);
      expect(res.status).toBe(200);
      return res.body!.page.next_token as string;
    };
    const issued: [Record<string, string>, string][] = [
      [{}, await tokenFor({})],
      [{ 'X-Tenant': 'todo-a' }, await tokenFor({ 'X-Tenant': 'todo-a' })],
    ];
    for (const [headers, token] of issued) {
      for (const other of [{}, { 'X-Tenant': 'todo-a' }, { 'X-Tenant': 'todo-b' }] as Record<string, string>[]) {
        const res = await postJson(url('/access/v1/search/subject'), { ...subjectQuery, page: { token } }, other);
        const same = JSON.stringify(other) === JSON.stringify(headers);
        expect(res.status, `${JSON.stringify(headers)} -> ${JSON.stringify(other)}`).toBe(same ? 200 : 400);
        if (same) expect(res.body!.results).toEqual([user(morty)]);
        else expect(res.body!.code).toBe('invalid_page_token');
      }
    }
  });

  it('answers 400 for a bad page and 501 for a search the bundle does not support', async () => {
    for (const page of [{ limit: 0 }, { limit: 1.5 }, { limit: '10' }, { token: 5 }]) {
      const res = await postJson(url('/access/v1/search/subject'), { ...subjectQuery, page });
      expect(res.status).toBe(400);
    }
    const unsupported = await postJson(url('/access/v1/search/resource'), { subject: user('u1'), action: { name: 'read' }, resource: { type: 'doc' } }, { 'X-Tenant': 'echo' });
    expect(unsupported.status).toBe(501);
    expect(unsupported.body!.code).toBe('search_unsupported');
  });

  it('returns only candidates allowed without conditions: an allow with obligations is left out', async () => {
    const res = await postJson(url('/access/v1/search/action'), { subject: user('u1'), resource: { type: 'doc', id: 'd1' } }, { 'X-Tenant': 'echo' });
    expect(res.status).toBe(200);
    expect(res.body!.results).toEqual([{ name: 'plain' }]);
  });

  it('echoes X-Request-ID', async () => {
    const res = await postJson(url('/access/v1/search/subject'), subjectQuery, { 'X-Request-ID': 'search-1' });
    expect(res.headers.get('x-request-id')).toBe('search-1');
  });
});

describe('search while the decision log cannot record', () => {
  it('answers 500 audit_unavailable at the first unrecorded candidate, not a complete-looking empty page', async () => {
    const logPath = join(tempDir(), 'decisions.db');
    const locked = await startTestArbiter({ authzen: { default_bundle: 'todo' }, decision_log: { path: logPath, busy_timeout_ms: 200 } });
    try {
      await whileLocked(logPath, async () => {
        const started = Date.now();
        const res = await postJson(`${locked.url}/access/v1/search/subject`, { subject: { type: 'user' }, action: { name: 'can_create_todo' }, resource: { type: 'todo', id: 't1' } });
        expect(res.status).toBe(500);
        expect(res.body).toMatchObject({ code: 'audit_unavailable' });
        // One candidate waited for the lock, not every candidate the bundle lists.
        expect(Date.now() - started).toBeLessThan(5 * 200);
      });
    } finally {
      await locked.close();
    }
  });
});

describe('a batch while the decision log cannot record', () => {
  it('answers 500 audit_unavailable at the first unrecorded item, instead of waiting for the log on every item', async () => {
    const logPath = join(tempDir(), 'decisions.db');
    const locked = await startTestArbiter({ authzen: { default_bundle: 'todo' }, decision_log: { path: logPath, busy_timeout_ms: 200 } });
    try {
      await whileLocked(logPath, async () => {
        const item = { subject: { type: 'user', id: 'u' }, action: { name: 'can_read_todos' }, resource: { type: 'todo', id: 't1' } };
        const started = Date.now();
        const res = await postJson(`${locked.url}/access/v1/evaluations`, { evaluations: Array.from({ length: 100 }, () => item) });
        expect(res.status).toBe(500);
        expect(res.body).toMatchObject({ code: 'audit_unavailable' });
        // Not 100 items each waiting busy_timeout_ms (20 s): the batch stopped at the first.
        expect(Date.now() - started).toBeLessThan(10_000);
      });
    } finally {
      await locked.close();
    }
  });
});

describe('GET /.well-known/authzen-configuration', () => {
  it('describes the endpoints of the default bundle', async () => {
    const response = await fetch(url('/.well-known/authzen-configuration'), { headers: { 'X-Request-ID': 'meta-1' } });
    expect(response.status).toBe(200);
    expect(response.headers.get('x-request-id')).toBe('meta-1');
    expect(await response.json()).toEqual({
      policy_decision_point: arbiter.url,
      access_evaluation_endpoint: `${arbiter.url}/access/v1/evaluation`,
      access_evaluations_endpoint: `${arbiter.url}/access/v1/evaluations`,
      search_subject_endpoint: `${arbiter.url}/access/v1/search/subject`,
      search_resource_endpoint: `${arbiter.url}/access/v1/search/resource`,
      search_action_endpoint: `${arbiter.url}/access/v1/search/action`,
    });
  });

  it('leaves out the searches a tenant bundle does not support', async () => {
    const response = await fetch(url('/.well-known/authzen-configuration'), { headers: { 'X-Tenant': 'echo' } });
    // The document depends on X-Tenant: a shared cache must not give one tenant's to another.
    expect(response.headers.get('vary')).toMatch(/(^|,\s*)x-tenant(\s*,|$)/i);
    // azecho lists action candidates only.
    expect(Object.keys((await response.json()) as object).sort()).toEqual([
      'access_evaluation_endpoint',
      'access_evaluations_endpoint',
      'policy_decision_point',
      'search_action_endpoint',
    ]);
  });
});

describe('GET /.well-known/authzen-configuration/<path> for a public_url with a path', () => {
  // AuthZEN 1.0, PDP metadata: the document is at the well-known string inserted between the host
  // and the path of the PDP identifier, so a PEP given https://pdp.example.com/authz asks here.
  it('serves the metadata where a PEP derives it from policy_decision_point, and only there', async () => {
    const prefixed = await startTestArbiter({ authzen: { default_bundle: 'todo', public_url: 'https://pdp.example.com/authz/' } });
    try {
      for (const path of ['/.well-known/authzen-configuration/authz', '/.well-known/authzen-configuration/authz/', '/.well-known/authzen-configuration']) {
        const response = await fetch(`${prefixed.url}${path}`);
        expect(response.status, path).toBe(200);
        expect(response.headers.get('content-type'), path).toMatch(/^application\/json/);
        expect(await response.json(), path).toMatchObject({
          policy_decision_point: 'https://pdp.example.com/authz',
          access_evaluation_endpoint: 'https://pdp.example.com/authz/access/v1/evaluation',
        });
      }
      const other = await fetch(`${prefixed.url}/.well-known/authzen-configuration/other`);
      expect(other.status).toBe(404);
      expect(other.headers.get('content-type')).toBe('application/problem+json');
      // The document lists the route it serves.
      const spec = (await (await fetch(`${prefixed.url}/openapi.json`)).json()) as { paths: Record<string, unknown> };
      expect(Object.keys(spec.paths)).toContain('/.well-known/authzen-configuration/{identifier_path}');
    } finally {
      await prefixed.close();
    }
  });
});
