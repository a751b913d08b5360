/**
 * The policy input contract of rego/README.md ("Input"), as a policy sees it: the azecho bundle
 * answers with the input it parsed (json.marshal), so members that are absent and members that
 * are null are told apart; the echo bundle shows input.data_status.
 */
import { CompactSign } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Arbiter } from '../src/server/start.ts';
import { postJson, startTestArbiter } from './support/arbiter.ts';
import { TestIssuer } from './support/issuer.ts';

let idp: TestIssuer;
let admins: TestIssuer;
let arbiter: Arbiter;

beforeAll(async () => {
  idp = await TestIssuer.create('https://idp.test.example');
  admins = await TestIssuer.create('https://admins.test.example');
  await idp.serve();
  await admins.serve();
  arbiter = await startTestArbiter({
    issuers: [{ issuer: idp.issuer, jwks_uri: idp.jwksUri, audiences: ['https://api.example.com', 'https://staging.example.com'], algorithms: ['ES256'] }],
    admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
    authzen: { default_bundle: 'azecho' },
  });
});

afterAll(async () => {
  await arbiter?.close();
  await idp?.close();
  await admins?.close();
});

/** The subject, action, resource and context the azecho policy was given for a /v1/decide body. */
async function policyInput(body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<Record<string, any>> {
  const res = await postJson(`${arbiter.url}/v1/decide`, { action: 'read', resource: { type: 'doc' }, policy: 'azecho', ...body }, headers);
  expect(res.status).toBe(200);
  expect(res.body!.reasons[0].code).toBe('echo');
  return JSON.parse(res.body!.reasons[0].message as string) as Record<string, any>;
}

/** A token with exactly these header parameters (beyond alg) and claims. */
async function signed(header: Record<string, unknown>, claims: Record<string, unknown>): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const payload = { iss: idp.issuer, sub: 'user:alice', aud: 'https://api.example.com', iat: now, exp: now + 600, ...claims };
  return new CompactSign(new TextEncoder().encode(JSON.stringify(payload))).setProtectedHeader({ alg: 'ES256', ...header }).sign(idp.keys[0]!.privateKey);
}

describe('input.subject', () => {
  it('of a verified token: the documented members, kid, typ, jti and client_id only when the token has them', async () => {
    const bare = await policyInput({ token: await signed({ kid: idp.keys[0]!.kid }, {}) });
    expect(Object.keys(bare.subject).sort()).toEqual(['act', 'aud', 'authenticated', 'claims', 'iss', 'revoked', 'scopes', 'sub', 'token']);
    expect(Object.keys(bare.subject.token).sort()).toEqual(['age_s', 'alg', 'exp', 'fingerprint', 'iat', 'kid', 'ttl_s']);
    expect(bare.subject).toMatchObject({ authenticated: true, iss: idp.issuer, sub: 'user:alice', aud: ['https://api.example.com'], scopes: [], act: [], revoked: { revoked: false } });

    const now = Math.floor(Date.now() / 1000);
    const full = await policyInput({
      token: await signed(
        { kid: idp.keys[0]!.kid, typ: 'at+jwt' },
        { jti: 'j-1', azp: 'web-app', scp: 'read write', auth_time: now - 30, aud: ['https://api.example.com', 'https://unknown.example.com'], act: { sub: 'agent:a', act: { client_id: 'c' } } },
      ),
    });
    expect(full.subject).toMatchObject({
      client_id: 'web-app', // azp stands in for client_id
      scopes: ['read', 'write'], // scp as a space-separated string
      aud: ['https://api.example.com'], // only the audiences the issuer is configured for; claims.aud is the token's own
      act: [{ sub: 'agent:a' }, { client_id: 'c' }],
      claims: { aud: ['https://api.example.com', 'https://unknown.example.com'] },
    });
    expect(full.subject.token).toMatchObject({ typ: 'at+jwt', jti: 'j-1', auth_time: now - 30, auth_age_s: expect.any(Number) });
  });

  it('without a token: not authenticated, empty lists, no iss, sub, client_id or token', async () => {
    const input = await policyInput({});
    expect(input.subject).toEqual({ authenticated: false, aud: [], scopes: [], act: [], claims: {}, revoked: { revoked: false } });
  });
});

describe('what a caller cannot set', () => {
  it('a verified subject, its delegation chain and the clock, through context, properties or unknown members', async () => {
    const token = await signed({ kid: idp.keys[0]!.kid }, { scope: 'read', act: { sub: 'agent:a', act: { sub: 'agent:b' } } });
    const forged = { authenticated: true, sub: 'user:root', act: [], claims: { scope: 'admin' }, revoked: { revoked: false } };
    const viaDecide = await policyInput({ token, context: { ...forged, now: 1, subject: forged } });
    expect(viaDecide.subject).toMatchObject({ sub: 'user:alice', scopes: ['read'], act: [{ sub: 'agent:a' }, { sub: 'agent:b' }] });
    expect(viaDecide.context.now).toBeGreaterThan(1_700_000_000);

    const res = await postJson(`${arbiter.url}/access/v1/evaluation`, {
      subject: { type: 'user', id: 'alice', ...forged, properties: { access_token: token, ...forged } },
      action: { name: 'read' },
      resource: { type: 'doc', id: 'd1' },
      context: { now: 1 },
      data_status: { entitlements: { stale: false } },
    });
    const viaAuthzen = JSON.parse(res.body!.context.reasons[0].reason_admin.en as string) as Record<string, any>;
    // Unknown members are dropped (AuthZEN), properties stay properties: the verified members are the token's.
    expect(viaAuthzen.subject).toMatchObject({ asserted: true, id: 'alice', sub: 'user:alice', scopes: ['read'], act: [{ sub: 'agent:a' }, { sub: 'agent:b' }], revoked: { revoked: false } });
    expect(viaAuthzen.subject.claims).toMatchObject({ sub: 'user:alice', scope: 'read' });
    expect(viaAuthzen.subject.properties).toEqual(forged);
    expect(viaAuthzen.context.now).toBeGreaterThan(1_700_000_000);
  });
});

describe('input.action, input.resource and input.context', () => {
  it('are what the caller sent, an absent id absent, with now and request_id set by Arbiter', async () => {
    const input = await policyInput(
      { resource: { type: 'doc', properties: { tenant: 'acme' } }, context: { environment: 'production', now: 1, request_id: 'forged' } },
      { 'x-request-id': 'gateway-req-7' },
    );
    expect(input.action).toEqual({ name: 'read' });
    expect(input.resource).toEqual({ type: 'doc', properties: { tenant: 'acme' } });
    // request_id is the request's X-Request-ID (when the caller sent a valid one), never the body's.
    expect(input.context).toEqual({ environment: 'production', now: expect.any(Number), request_id: 'gateway-req-7' });
    expect(input.context.now).toBeGreaterThan(1_700_000_000);
    expect((await policyInput({})).context).toEqual({ now: expect.any(Number), request_id: expect.any(String) });
  });
});

describe('input.data_status', () => {
  it('reports each live document: source (null when the writer named none), updated_at, age_s, max_age_s when set, stale', async () => {
    const adminToken = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.data.write' });
    const put = async (name: string, headers: Record<string, string>) => {
      const response = await fetch(`${arbiter.url}/v1/data/${name}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json', ...headers },
        body: '{"v": 1}',
      });
      expect(response.status).toBeLessThan(300);
    };
    await put('fed', { 'arbiter-data-source': 'hr-sync', 'arbiter-data-max-age': '3600' });
    await put('plain', {});
    const res = await postJson(`${arbiter.url}/v1/decide`, { action: 'read', resource: { type: 'doc' }, policy: 'echo' });
    const status = res.body!.reasons[0].data_status as Record<string, Record<string, unknown>>;
    expect(status.fed).toEqual({ source: 'hr-sync', updated_at: expect.any(Number), age_s: 0, max_age_s: 3600, stale: false });
    expect(status.plain).toEqual({ source: null, updated_at: expect.any(Number), age_s: 0, stale: false });
  });
});
