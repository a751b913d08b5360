import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { CompactSign, exportJWK, importJWK, type CompactJWSHeaderParameters, type CryptoKey } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { adminCall, startTestArbiter, postJson, tempDir } from './support/arbiter.ts';
import { TestIssuer } from './support/issuer.ts';
import type { Arbiter } from '../src/server/start.ts';
import { JWKS_FAILURE_BACK_OFF_MS } from '../src/tokens/trusted-issuers.ts';

let idp: TestIssuer;
let other: TestIssuer;
let arbiter: Arbiter;
let decide: string;

beforeAll(async () => {
  idp = await TestIssuer.create('https://idp.test.example');
  other = await TestIssuer.create('https://other.test.example');
  await idp.serve();
  await other.serve();
  arbiter = await startTestArbiter({
    issuers: [
      { issuer: idp.issuer, jwks_uri: idp.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'], max_token_age_s: 3600, max_lifetime_s: 7200, jwks_cooldown_s: 1 },
      { issuer: other.issuer, jwks_uri: other.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'], typ: 'at+jwt', required_claims: ['client_id'] },
    ],
  });
  decide = `${arbiter.url}/v1/decide`;
});

afterAll(async () => {
  await arbiter?.close();
  await idp?.close();
  await other?.close();
});

const request = (token?: string, extra: Record<string, unknown> = {}) => ({
  ...(token !== undefined && { token }),
  action: 'read',
  resource: { type: 'document', id: 'doc-1' },
  ...extra,
});

/** Signs an exact JSON payload text, for claims no JWT library would write (1e400, __proto__). */
async function signRaw(issuer: TestIssuer, payloadJson: string): Promise<string> {
  const key = issuer.keys[0]!;
  return new CompactSign(new TextEncoder().encode(payloadJson)).setProtectedHeader({ alg: 'ES256', kid: key.kid }).sign(key.privateKey);
}

/** Signs a valid token under extra header parameters, for those jose would refuse to sign (an unknown crit). */
async function signWithHeader(issuer: TestIssuer, header: Record<string, unknown>): Promise<string> {
  const key = issuer.keys[0]!;
  const now = Math.floor(Date.now() / 1000);
  const payload = { iss: issuer.issuer, sub: 'user:alice', aud: 'https://api.example.com', iat: now, exp: now + 60, scope: 'read' };
  const signingInput = `${Buffer.from(JSON.stringify({ alg: 'ES256', kid: key.kid, ...header })).toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
  const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key.privateKey, new TextEncoder().encode(signingInput));
  return `${signingInput}.${Buffer.from(signature).toString('base64url')}`;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** An array nested `depth` levels deep around one number. */
function nested(depth: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

describe('POST /v1/decide with a verified token', () => {
  it('allows, explains, names the revision and echoes the request id', async () => {
    const token = await idp.sign({ scope: 'read write', sub: 'user:alice' });
    const res = await postJson(decide, request(token, { context: { environment: 'production', now: 1 } }), { 'X-Request-ID': 'req-123' });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe('req-123');
    expect(res.body).toMatchObject({ allow: true, obligations: [], policy: { bundle: 'simple', revision: expect.any(String) } });
    expect(res.body!.decision_id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const [granted] = res.body!.reasons;
    expect(granted).toMatchObject({ code: 'granted', sub: 'user:alice', greeting: 'hello' });
    // Server-set context fields win over the caller's.
    expect(granted.context.now).toBeGreaterThan(1_700_000_000);
    expect(granted.context).toMatchObject({ environment: 'production', request_id: 'req-123' });
    expect(granted.token).toMatchObject({ alg: 'ES256', kid: 'key-1', typ: 'at+jwt', age_s: expect.any(Number), ttl_s: expect.any(Number) });
    expect(granted.token.fingerprint).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(JSON.stringify(res.body)).not.toContain(token);
  });

  it('gives time-sortable, unique decision ids', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await postJson(decide, request()))!.body!.decision_id);
    expect(new Set(ids).size).toBe(5);
    expect([...ids].sort()).toEqual(ids);
  });

  it('lets the policy decide for a request without a token', async () => {
    const res = await postJson(decide, request());
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ allow: false, reasons: [{ code: 'unauthenticated' }] });
  });

  it('flattens the RFC 8693 actor chain, outermost first', async () => {
    const token = await idp.sign({ scope: 'read', act: { sub: 'agent:assistant', client_id: 'agent-1', act: { sub: 'svc:orchestrator' } } });
    const res = await postJson(decide, request(token));
    expect(res.body!.reasons[0].act).toEqual([{ sub: 'agent:assistant', client_id: 'agent-1' }, { sub: 'svc:orchestrator' }]);
  });

  it('keeps a __proto__ claim as plain data', async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = await signRaw(
      idp,
      `{"iss":"${idp.issuer}","sub":"user:proto","aud":"https://api.example.com","iat":${now},"exp":${now + 60},"scope":"read","__proto__":{"polluted":true}}`,
    );
    const res = await postJson(decide, request(token));
    expect(res.body!.allow).toBe(true);
    expect(res.body!.reasons[0].claims.__proto__).toEqual({ polluted: true });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe('POST /v1/decide with a token that cannot be trusted', () => {
  const now = () => Math.floor(Date.now() / 1000);
  const cases: [string, () => Promise<string>][] = [
    ['token_expired', () => idp.sign({ scope: 'read' }, { iat: now() - 300, exp: now() - 100 })],
    ['token_not_yet_valid', () => idp.sign({ scope: 'read', nbf: now() + 600 })],
    ['token_not_yet_valid', () => idp.sign({ scope: 'read' }, { iat: now() + 600, exp: now() + 900 })],
    ['token_untrusted_issuer', () => idp.sign({ iss: 'https://evil.example' })],
    ['token_untrusted_issuer', () => signRaw(idp, `{"sub":"x","aud":"https://api.example.com","iat":${now()},"exp":${now() + 60}}`)],
    ['token_audience_mismatch', () => idp.sign({ aud: 'https://other-api.example.com' })],
    // An empty list names no audience: none of it is accepted.
    ['token_audience_mismatch', () => idp.sign({ aud: [] })],
    // Signed by the other issuer's key under idp's kid: routing by iss must never try other keys.
    ['token_bad_signature', () => idp.sign({}, { key: other.keys[0]!.privateKey })],
    ['token_algorithm_not_allowed', async () => {
      const secret = new TextEncoder().encode('x'.repeat(32));
      return new CompactSign(new TextEncoder().encode(JSON.stringify({ iss: idp.issuer, sub: 'a', aud: 'https://api.example.com', iat: now(), exp: now() + 60 })))
        .setProtectedHeader({ alg: 'HS256', kid: 'key-1' })
        .sign(secret);
    }],
    ['token_algorithm_not_allowed', async () => {
      const header = Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url');
      const body = Buffer.from(JSON.stringify({ iss: idp.issuer, sub: 'a', aud: 'https://api.example.com', iat: now(), exp: now() + 60 })).toString('base64url');
      return `${header}.${body}.`;
    }],
    ['token_malformed', async () => 'not-a-jwt'],
    ['token_malformed', async () => `e30.${Buffer.from('not json').toString('base64url')}.c2ln`],
    ['token_too_large', () => idp.sign({ padding: 'x'.repeat(9000) })],
    ['token_unknown_key', () => idp.sign({}, { kid: 'no-such-kid' })],
    ['token_type_invalid', () => other.sign({ client_id: 'c' }, { typ: 'JWT' })],
    ['token_claim_missing', () => other.sign({})],
    ['token_claim_missing', () => signRaw(idp, `{"iss":"${idp.issuer}","aud":"https://api.example.com","iat":${now()},"exp":${now() + 60}}`)],
    ['token_too_old', () => idp.sign({}, { iat: now() - 4000, exp: now() + 60 })],
    ['token_lifetime_too_long', () => idp.sign({}, { iat: now(), exp: now() + 7201 })],
    ['token_malformed', () => signRaw(idp, `{"iss":"${idp.issuer}","sub":"a","aud":"https://api.example.com","iat":${now()},"exp":1e400}`)],
    // Not token_not_yet_valid (a PEP may retry it) nor token_expired: no clock makes these valid.
    ['token_malformed', () => signRaw(idp, `{"iss":"${idp.issuer}","sub":"a","aud":"https://api.example.com","iat":${now()},"exp":${now() + 60},"nbf":1e400}`)],
    ['token_malformed', () => signRaw(idp, `{"iss":"${idp.issuer}","sub":"a","aud":"https://api.example.com","iat":1e400,"exp":${now() + 60}}`)],
    ['token_malformed', () => signRaw(idp, `{"iss":"${idp.issuer}","sub":"a","aud":"https://api.example.com","iat":${now()},"exp":-1e400}`)],
    // Any other number past a double's range would reach the policy as null, not as the issuer signed it.
    ['token_malformed', () => signRaw(idp, `{"iss":"${idp.issuer}","sub":"a","aud":"https://api.example.com","iat":${now()},"exp":${now() + 60},"scope":"read","max_amount":1e400}`)],
    ['token_malformed', () => signRaw(idp, `{"iss":"${idp.issuer}","sub":"a","aud":"https://api.example.com","iat":${now()},"exp":${now() + 60},"scope":"read","limits":{"amount":[-1e999]}}`)],
    // A number a double cannot hold reaches the policy as another: 9007199254740993 as 9007199254740992,
    // the id of another tenant, 0.1000000000000000055511 as 0.1, 1e-400 as 0.
    ['token_malformed', () => signRaw(idp, `{"iss":"${idp.issuer}","sub":"a","aud":"https://api.example.com","iat":${now()},"exp":${now() + 60},"scope":"read","tenant_id":9007199254740993}`)],
    ['token_malformed', () => signRaw(idp, `{"iss":"${idp.issuer}","sub":"a","aud":"https://api.example.com","iat":${now()},"exp":${now() + 60},"scope":"read","org":{"ids":[1, -12345678901234567891]}}`)],
    ['token_malformed', () => signRaw(idp, `{"iss":"${idp.issuer}","sub":"a","aud":"https://api.example.com","iat":${now()},"exp":${now() + 60},"scope":"read","limit":0.1000000000000000055511}`)],
    ['token_malformed', () => signRaw(idp, `{"iss":"${idp.issuer}","sub":"a","aud":"https://api.example.com","iat":${now()},"exp":${now() + 60},"scope":"read","tiny":1e-400}`)],
    // Claims revocations and the policy match as strings must be strings, or a token could slip past both.
    ['token_malformed', () => idp.sign({ sub: 42 as unknown as string })],
    ['token_malformed', () => idp.sign({ jti: { id: 'j' } as unknown as string })],
    ['token_malformed', () => idp.sign({ sid: ['s1'] })],
    ['token_malformed', () => idp.sign({ client_id: '' })],
    // azp stands in for client_id when the token has none: a list or an empty string would make a client_id revocation miss.
    ['token_malformed', () => idp.sign({ azp: ['web-app'] as unknown as string })],
    ['token_malformed', () => idp.sign({ azp: '' })],
    // The policy sees aud as input.subject.aud, a list of strings.
    ['token_malformed', () => idp.sign({ aud: ['https://api.example.com', { admin: true }] as unknown as string[] })],
    ['token_malformed', () => idp.sign({ aud: ['https://api.example.com', 7] as unknown as string[] })],
    ['token_malformed', () => idp.sign({ aud: ['https://api.example.com', ''] })],
    // A delegation chain the subject could not read would be dropped, and the agent with it.
    ['token_malformed', () => idp.sign({ act: [{ sub: 'agent:planner' }] })],
    ['token_malformed', () => idp.sign({ act: { sub: 'agent:planner', act: 'agent:orchestrator' } })],
    // Deeper than 32 actors: cutting the chain short would hide (and never check) the last ones.
    ['token_malformed', () => idp.sign({ act: Array.from({ length: 33 }, (_, i) => `agent:hop-${i}`).reduceRight<Record<string, unknown> | undefined>((inner, sub) => ({ sub, ...(inner && { act: inner }) }), undefined)! })],
    ['token_malformed', () => signRaw(idp, `{"iss":"${idp.issuer}","sub":"a","aud":"https://api.example.com","iat":"yesterday","exp":${now() + 60}}`)],
    ['token_malformed', () => signRaw(idp, `{"iss":"${idp.issuer}","sub":"a","aud":"https://api.example.com","iat":${now()},"exp":"1800000000"}`)],
    ['token_malformed', () => signRaw(idp, `{"iss":"${idp.issuer}","sub":"a","aud":"https://api.example.com","iat":${now()},"exp":null}`)],
    ['token_malformed', () => signRaw(idp, `{"iss":"${idp.issuer}","sub":"a","aud":"https://api.example.com","iat":${now()},"exp":${now() + 60},"nbf":"now"}`)],
    // A critical header extension Arbiter does not know (RFC 7515 §4.1.11): the algorithm is allowed.
    ['token_invalid', () => signWithHeader(idp, { crit: ['urn:example:ext'], 'urn:example:ext': true })],
  ];

  it.each(cases)('denies with %s', async (code, mint) => {
    const token = await mint();
    const res = await postJson(decide, request(token));
    expect(res.status).toBe(200);
    expect(res.body!.allow).toBe(false);
    expect(res.body!.reasons).toEqual([expect.objectContaining({ code })]);
    expect(res.body!.policy).toMatchObject({ bundle: 'simple' });
  });

  it('passes numbers to the policy as signed, however many digits they are written with, when a double holds them', async () => {
    const numbers = '"big":9007199254740992,"neg":-9007199254740993e3,"sum":0.30000000000000004,"huge":1e300,"exact":12.50,"zero":-0,"ms":1763872000123';
    const token = await signRaw(idp, `{"iss":"${idp.issuer}","sub":"a","aud":"https://api.example.com","iat":${now()},"exp":${now() + 60},"scope":"read",${numbers}}`);
    const res = await postJson(decide, request(token));
    expect(res.body).toMatchObject({ allow: true });
    expect(res.body!.reasons[0].claims).toMatchObject({ big: 9007199254740992, neg: -9007199254740993000, sum: 0.30000000000000004, huge: 1e300, exact: 12.5, zero: 0, ms: 1763872000123 });
  });

  it('names the number a double cannot hold, and what the policy would have seen instead', async () => {
    const token = await signRaw(idp, `{"iss":"${idp.issuer}","sub":"a","aud":"https://api.example.com","iat":${now()},"exp":${now() + 60},"scope":"read","tenant_id":9007199254740993}`);
    const res = await postJson(decide, request(token));
    expect(res.body).toMatchObject({ allow: false, reasons: [{ code: 'token_malformed', message: expect.stringMatching(/9007199254740993.*9007199254740992/) }] });
  });

  it('says what to fix for the mismatches an operator makes while connecting an issuer: iss spelt otherwise, audience, clock skew', async () => {
    const deny = async (token: string) => ((await postJson(decide, request(token))).body!.reasons as { code: string; message: string }[])[0]!;
    // The configured issuer differs from the token's iss only by a trailing slash (or case).
    expect(await deny(await idp.sign({ iss: `${idp.issuer}/` }))).toMatchObject({
      code: 'token_untrusted_issuer',
      message: expect.stringMatching(/the trusted issuer "https:\/\/idp\.test\.example" differs only by a trailing slash or letter case: iss must match it exactly/),
    });
    expect(await deny(await idp.sign({ iss: 'https://evil.example' }))).toMatchObject({ message: 'issuer "https://evil.example" is not trusted' });
    // Which audience the token has and which the issuer's configuration accepts.
    expect(await deny(await idp.sign({ aud: 'https://other-api.example.com' }))).toMatchObject({
      code: 'token_audience_mismatch',
      message: expect.stringMatching(/aud \["https:\/\/other-api\.example\.com"\] is none of the audiences accepted from https:\/\/idp\.test\.example: \["https:\/\/api\.example\.com"\]/),
    });
    // Issued in the future beyond the tolerance: the clocks disagree.
    expect(await deny(await idp.sign({ scope: 'read' }, { iat: now() + 600, exp: now() + 900 }))).toMatchObject({
      code: 'token_not_yet_valid',
      message: expect.stringMatching(/iat is (59\d|600) s ahead of this server's clock, past clock_tolerance_s \(30 s\): check the clocks of the issuer and this server/),
    });
  });

  it.each([
    ['in a claim value', { name: 'Al\ud800ice' }, undefined],
    ['in a nested claim name', { profile: { '\udc00': 1 } }, undefined],
    ['deep in an array', { groups: [['admins', 'x\ud83d']] }, undefined],
    ['in the typ header', {}, 'at+jwt\ud800'],
  ])('denies with token_malformed a token with a string that is not well-formed Unicode (a lone surrogate) %s', async (_label, claims, typ) => {
    const token = await idp.sign({ scope: 'read', ...claims }, typ === undefined ? {} : { typ });
    // A JSON escape such as \ud800 is all the token holds: the policy's JSON parser would refuse it.
    expect(Buffer.from(token.split('.')[typ === undefined ? 1 : 0]!, 'base64url').toString()).toMatch(/\\u(d8|dc)/);
    const res = await postJson(decide, request(token));
    expect(res.body).toMatchObject({ allow: false, reasons: [{ code: 'token_malformed', message: expect.stringContaining('Unicode') }] });
  });

  it('denies with token_malformed a signed token spelled another way than its compact serialization, so one token has one fingerprint', async () => {
    const token = await idp.sign({ scope: 'read' });
    const [header, payload, signature] = token.split('.') as [string, string, string];
    // An ES256 signature is 64 bytes, 86 characters: the last one carries 2 bits and 4 that must be zero.
    const last = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const trailingBits = `${signature.slice(0, -1)}${last[last.indexOf(signature.at(-1)!) | 1]}`;
    const spellings = [`${signature}==`, `${signature.slice(0, 40)}\n${signature.slice(40)}`, ` ${signature}`, trailingBits];
    expect(Buffer.from(trailingBits, 'base64url')).toEqual(Buffer.from(signature, 'base64url'));
    expect((await postJson(decide, request(token))).body).toMatchObject({ allow: true });
    for (const spelled of spellings) {
      const res = await postJson(decide, request(`${header}.${payload}.${spelled}`));
      expect(res.body).toMatchObject({ allow: false, reasons: [{ code: 'token_malformed' }] });
    }
  });

  it.each([
    ['ES256', 'ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551'],
    ['ES384', 'ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973'],
    ['ES512', '01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409'],
  ])('gives a %s token one fingerprint, though its signature verifies with s or with n - s', async (alg, orderHex) => {
    // ECDSA verifies (r, s) and (r, n - s) alike: anyone holding a token can spell its signature
    // the other way without the key, and would otherwise have it logged and seen by the policy
    // as another token.
    const ecdsa = await TestIssuer.create(`https://${alg.toLowerCase()}.test.example`, alg);
    await ecdsa.serve();
    const server = await startTestArbiter({
      issuers: [{ issuer: ecdsa.issuer, jwks_uri: ecdsa.jwksUri, audiences: ['https://api.example.com'], algorithms: [alg] }],
    });
    try {
      const token = await ecdsa.sign({ scope: 'read' });
      const [header, payload, signature] = token.split('.') as [string, string, string];
      const bytes = Buffer.from(signature, 'base64url');
      const half = bytes.length / 2;
      const s = BigInt(`0x${bytes.subarray(half).toString('hex')}`);
      const other = (BigInt(`0x${orderHex}`) - s).toString(16).padStart(half * 2, '0');
      const malleated = `${header}.${payload}.${Buffer.concat([bytes.subarray(0, half), Buffer.from(other, 'hex')]).toString('base64url')}`;
      const fingerprints: string[] = [];
      for (const spelled of [token, malleated, malleated, token]) {
        const res = await postJson(`${server.url}/v1/decide`, request(spelled));
        expect(res.body).toMatchObject({ allow: true });
        fingerprints.push(res.body!.reasons[0].token.fingerprint);
      }
      expect(new Set(fingerprints).size).toBe(1);
    } finally {
      await server.close();
      await ecdsa.close();
    }
  });

  it('picks up a rotated key after an unknown kid (JWKS refetch)', async () => {
    await sleep(1100); // past the cooldown since the last fetch (a token with an unknown kid above)
    const kid = await idp.addKey('rotated');
    const before = idp.jwksFetches;
    const res = await postJson(decide, request(await idp.sign({ scope: 'read' }, { kid })));
    expect(res.body).toMatchObject({ allow: true });
    expect(idp.jwksFetches).toBeGreaterThan(before);
  });
});

/** Signs `payload` (text or bytes) under `header` with `key` (ES256), for tokens jose would not write. */
async function signEs256(key: CryptoKey, header: Record<string, unknown>, payload: string | Uint8Array): Promise<string> {
  const signingInput = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(payload).toString('base64url')}`;
  const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key, new TextEncoder().encode(signingInput));
  return `${signingInput}.${Buffer.from(signature).toString('base64url')}`;
}

describe('a token that names, carries or chooses its own key, algorithm or shape', () => {
  const now = () => Math.floor(Date.now() / 1000);
  const claims = (extra: Record<string, unknown> = {}) => JSON.stringify({ iss: idp.issuer, sub: 'user:mallory', aud: 'https://api.example.com', iat: now(), exp: now() + 60, scope: 'read', ...extra });
  const decideOn = async (token: string) => (await postJson(decide, request(token))).body!;

  it.each([
    ['jwk', () => other.keys[0]!.publicJwk],
    ['jku', () => other.jwksUri],
    ['x5u', () => other.jwksUri],
    ['x5c', () => ['MIIBfjCCASOgAwIBAgIUZXhhbXBsZQ==']],
  ])('verifies with its issuer\'s key set only, whatever key its %s header offers', async (name, value) => {
    // Signed with another issuer's key, which the header hands over (jwk) or points at (a JWKS
    // really serving it): with idp's kid, another kid, and none.
    const fetches = other.jwksFetches;
    for (const kid of [idp.keys[0]!.kid, 'mallory', undefined]) {
      const header = { alg: 'ES256', [name]: value(), ...(kid !== undefined && { kid }) };
      const body = await decideOn(await signEs256(other.keys[0]!.privateKey, header, claims()));
      expect(body, `kid ${kid}`).toMatchObject({ allow: false, reasons: [{ code: kid === 'mallory' ? 'token_unknown_key' : 'token_bad_signature' }] });
    }
    expect(other.jwksFetches).toBe(fetches);
  });

  it('refuses HS256 signed with the issuer\'s public key as the secret, however it is spelt', async () => {
    const jwk = idp.keys[0]!.publicJwk;
    const spki = Buffer.from(await crypto.subtle.exportKey('spki', await crypto.subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: 'P-256' }, true, ['verify'])));
    const pem = `-----BEGIN PUBLIC KEY-----\n${spki.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END PUBLIC KEY-----\n`;
    for (const secret of [JSON.stringify(jwk), pem, spki]) {
      const token = await new CompactSign(new TextEncoder().encode(claims()))
        .setProtectedHeader({ alg: 'HS256', kid: idp.keys[0]!.kid })
        .sign(typeof secret === 'string' ? new TextEncoder().encode(secret) : new Uint8Array(secret));
      expect(await decideOn(token)).toMatchObject({ allow: false, reasons: [{ code: 'token_algorithm_not_allowed' }] });
    }
  });

  it('refuses a JWE (five parts) and a JWS with a part too many or too few as token_malformed', async () => {
    const token = await idp.sign({ scope: 'read' });
    const [header, payload, signature] = token.split('.') as [string, string, string];
    const part = (text: string) => Buffer.from(text).toString('base64url');
    for (const shape of [
      `${part('{"alg":"dir","enc":"A256GCM"}')}..${part('iv-iv-iv-iv')}.${part('ciphertext')}.${part('tag')}`,
      `${header}.${payload}.${signature}.${part('x')}.${part('y')}`,
      `${header}.${payload}.${signature}.`,
      `${header}..${payload}.${signature}`,
      `${header}.${payload}`,
    ]) {
      expect(await decideOn(shape), shape).toMatchObject({ allow: false, reasons: [{ code: 'token_malformed' }] });
    }
  });

  it('refuses claims that are not UTF-8 rather than read two signed values as one U+FFFD', async () => {
    for (const byte of [0xfe, 0xff]) {
      const payload = Buffer.concat([Buffer.from(claims().slice(0, -1)), Buffer.from(',"name":"user:'), Buffer.from([byte]), Buffer.from('"}')]);
      expect(await decideOn(await signEs256(idp.keys[0]!.privateKey, { alg: 'ES256', kid: idp.keys[0]!.kid }, payload))).toMatchObject({
        allow: false,
        reasons: [{ code: 'token_malformed' }],
      });
    }
  });

  it('reads a name given twice as its last value everywhere: to pick the issuer, to verify, and in the policy input', async () => {
    const key = idp.keys[0]!;
    const twice = (first: string, last: string) =>
      signEs256(key.privateKey, { alg: 'ES256', kid: key.kid }, `{"iss":${JSON.stringify(first)},"iss":${JSON.stringify(last)},"sub":"user:first","sub":"user:last","aud":"https://api.example.com","iat":${now()},"exp":${now() + 60},"scope":"read"}`);
    // idp's signature under idp's iss (the last): verified as idp's, and the policy sees the last sub.
    const verified = await decideOn(await twice(other.issuer, idp.issuer));
    expect(verified).toMatchObject({ allow: true, reasons: [{ sub: 'user:last', claims: { iss: idp.issuer, sub: 'user:last' } }] });
    // idp's signature under other's iss (the last): checked against other's keys only.
    expect(await decideOn(await twice(idp.issuer, other.issuer))).toMatchObject({ allow: false, reasons: [{ code: 'token_bad_signature' }] });
    // The header alike: the last alg is the one checked against the issuer's algorithms.
    const header = `${Buffer.from(`{"alg":"ES256","alg":"none","kid":"${key.kid}"}`).toString('base64url')}.${Buffer.from(claims()).toString('base64url')}`;
    const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key.privateKey, new TextEncoder().encode(header));
    expect(await decideOn(`${header}.${Buffer.from(signature).toString('base64url')}`)).toMatchObject({ allow: false, reasons: [{ code: 'token_algorithm_not_allowed' }] });
  });
});

describe('an RSA issuer allowing RS256 and PS256, whose key is published for RS256 only', () => {
  let rsa: TestIssuer;
  let server: Arbiter;

  beforeAll(async () => {
    rsa = await TestIssuer.create('https://rsa.test.example', 'RS256');
    await rsa.serve();
    server = await startTestArbiter({
      issuers: [{ issuer: rsa.issuer, jwks_uri: rsa.jwksUri, audiences: ['https://api.example.com'], algorithms: ['RS256', 'PS256'] }],
    });
  });

  afterAll(async () => {
    await server?.close();
    await rsa?.close();
  });

  const decideOn = async (token: string) => (await postJson(`${server.url}/v1/decide`, request(token))).body!;

  it('verifies RS256 with it, and no PS256 signature the same key made: the key\'s alg binds it', async () => {
    expect(await decideOn(await rsa.sign({ scope: 'read' }))).toMatchObject({ allow: true });
    const key = rsa.keys[0]!;
    const pss = await importJWK({ ...(await exportJWK(key.privateKey)), alg: 'PS256' }, 'PS256');
    for (const withoutKid of [false, true]) {
      const body = await decideOn(await rsa.sign({ scope: 'read' }, { alg: 'PS256', key: pss as CryptoKey, withoutKid }));
      expect(body, `withoutKid ${withoutKid}`).toMatchObject({ allow: false, reasons: [{ code: 'token_unknown_key' }] });
    }
  });

  it('refuses HS256 signed with its public key as the secret', async () => {
    const spki = Buffer.from(await crypto.subtle.exportKey('spki', await crypto.subtle.importKey('jwk', rsa.keys[0]!.publicJwk, { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, true, ['verify'])));
    const pem = `-----BEGIN PUBLIC KEY-----\n${spki.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END PUBLIC KEY-----\n`;
    const now = Math.floor(Date.now() / 1000);
    const token = await new CompactSign(new TextEncoder().encode(JSON.stringify({ iss: rsa.issuer, sub: 'user:mallory', aud: 'https://api.example.com', iat: now, exp: now + 60, scope: 'read' })))
      .setProtectedHeader({ alg: 'HS256', kid: rsa.keys[0]!.kid })
      .sign(new TextEncoder().encode(pem));
    expect(await decideOn(token)).toMatchObject({ allow: false, reasons: [{ code: 'token_algorithm_not_allowed' }] });
  });
});

describe('keys shared or named alike', () => {
  let dup: TestIssuer;
  let server: Arbiter;
  const sharing = 'https://tenant-b.test.example';

  beforeAll(async () => {
    dup = await TestIssuer.create('https://duplicate-kid.test.example');
    await dup.addKey('key-1'); // a second key under the same kid
    await dup.serve();
    server = await startTestArbiter({
      issuers: [
        { issuer: dup.issuer, jwks_uri: dup.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'] },
        { issuer: idp.issuer, jwks_uri: idp.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'] },
        // Another issuer entry on idp's key set, for another audience.
        { issuer: sharing, jwks_uri: idp.jwksUri, audiences: ['https://b-api.example.com'], algorithms: ['ES256'] },
      ],
    });
  });

  afterAll(async () => {
    await server?.close();
    await dup?.close();
  });

  const decideOn = async (token: string) => (await postJson(`${server.url}/v1/decide`, request(token))).body!;

  it('tries every key under a kid two keys share, and none of another issuer', async () => {
    for (const key of dup.keys) {
      expect(await decideOn(await dup.sign({ scope: 'read' }, { key: key.privateKey }))).toMatchObject({ allow: true });
    }
    expect(await decideOn(await dup.sign({ scope: 'read' }, { key: idp.keys[0]!.privateKey }))).toMatchObject({ allow: false, reasons: [{ code: 'token_bad_signature' }] });
  });

  it('holds each issuer entry on a shared key set to its own audiences', async () => {
    expect(await decideOn(await idp.sign({ scope: 'read', iss: sharing, aud: 'https://b-api.example.com' }))).toMatchObject({ allow: true, reasons: [{ claims: { iss: sharing } }] });
    expect(await decideOn(await idp.sign({ scope: 'read', iss: sharing }))).toMatchObject({ allow: false, reasons: [{ code: 'token_audience_mismatch' }] });
    expect(await decideOn(await idp.sign({ scope: 'read', aud: 'https://b-api.example.com' }))).toMatchObject({ allow: false, reasons: [{ code: 'token_audience_mismatch' }] });
  });
});

describe('a remembered verification', () => {
  let strict: TestIssuer;
  let server: Arbiter;

  beforeAll(async () => {
    strict = await TestIssuer.create('https://strict-clock.test.example');
    await strict.serve();
    server = await startTestArbiter({
      issuers: [{ issuer: strict.issuer, jwks_uri: strict.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'], clock_tolerance_s: 0, max_token_age_s: 60 }],
    });
  });

  afterAll(async () => {
    await server?.close();
    await strict?.close();
  });

  it('is not reused once the token has expired or grown too old: it is denied as if verified afresh', async () => {
    const now = Math.floor(Date.now() / 1000);
    const expiring = await strict.sign({ scope: 'read' }, { iat: now - 10, exp: now + 2 });
    const ageing = await strict.sign({ scope: 'read' }, { iat: now - 59, exp: now + 600 });
    for (const token of [expiring, ageing, expiring, ageing]) {
      expect((await postJson(`${server.url}/v1/decide`, request(token))).body).toMatchObject({ allow: true }); // verified, then remembered
    }
    await sleep((now + 2) * 1000 - Date.now() + 50); // past exp, and past iat + max_token_age_s
    expect((await postJson(`${server.url}/v1/decide`, request(expiring))).body).toMatchObject({ allow: false, reasons: [{ code: 'token_expired' }] });
    expect((await postJson(`${server.url}/v1/decide`, request(ageing))).body).toMatchObject({ allow: false, reasons: [{ code: 'token_too_old' }] });
  });
});

describe('a remembered verification of a token whose key the issuer has since removed', () => {
  it('is not reused once the key set held is stale (jwks_cache_max_age_s): the key set is fetched again and the token denied', async () => {
    const rotating = await TestIssuer.create('https://rotating.test.example');
    await rotating.serve();
    const server = await startTestArbiter({
      issuers: [{ issuer: rotating.issuer, jwks_uri: rotating.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'], jwks_cache_max_age_s: 1 }],
    });
    try {
      const token = await rotating.sign({ scope: 'read' });
      for (let i = 0; i < 2; i++) expect((await postJson(`${server.url}/v1/decide`, request(token))).body).toMatchObject({ allow: true }); // verified, then remembered
      // The identity provider rotates: the key that signed the token is no longer published.
      await rotating.addKey('next');
      rotating.keys.shift();
      const fetches = rotating.jwksFetches;
      await sleep(1100); // the key set held is now stale
      // Only this token is sent, so only its decision can find the key set stale.
      expect((await postJson(`${server.url}/v1/decide`, request(token))).body).toMatchObject({ allow: false, reasons: [{ code: 'token_unknown_key' }] });
      expect(rotating.jwksFetches).toBeGreaterThan(fetches);
    } finally {
      await server.close();
      await rotating.close();
    }
  });
});

describe('a token whose JSON nests deeper than 64 levels', () => {
  let server: Arbiter;

  beforeAll(async () => {
    // The largest max_token_bytes allowed: a claim can then nest tens of thousands deep.
    server = await startTestArbiter({
      tokens: { max_token_bytes: 64 * 1024 },
      issuers: [{ issuer: idp.issuer, jwks_uri: idp.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'] }],
    });
  });

  afterAll(async () => {
    await server?.close();
  });

  // Written as text: JSON.stringify itself overflows the stack at this depth.
  const deep = `${'['.repeat(10_000)}1${']'.repeat(10_000)}`;

  it.each([
    ['a claim', `,"deep":${deep}`, ''],
    ['the header', '', `,"ext":${deep}`], // not typ: a typ that is not a string is refused before its depth is looked at
  ])('is denied as token_malformed, and recorded, when %s nests that deep', async (_label, claims, header) => {
    const now = Math.floor(Date.now() / 1000);
    const payload = `{"iss":"${idp.issuer}","sub":"user:deep","aud":"https://api.example.com","iat":${now},"exp":${now + 60},"scope":"read"${claims}}`;
    const signingInput = `${Buffer.from(`{"alg":"ES256","kid":"${idp.keys[0]!.kid}"${header}}`).toString('base64url')}.${Buffer.from(payload).toString('base64url')}`;
    const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, idp.keys[0]!.privateKey, new TextEncoder().encode(signingInput));
    const token = `${signingInput}.${Buffer.from(signature).toString('base64url')}`;
    const res = await postJson(`${server.url}/v1/decide`, request(token));
    // Not internal_error or audit_unavailable: what serializes the policy input and the decision
    // record recurses, and must never be handed such a token.
    expect(res.body).toMatchObject({ allow: false, reasons: [{ code: 'token_malformed', message: expect.stringContaining('64 levels') }] });
    expect(server.decisionLog!.get(res.body!.decision_id as string)?.result).toMatchObject({ allow: false, reasons: [{ code: 'token_malformed' }] });
  });

  it('accepts 64 levels (the claims object is level 1)', async () => {
    const res = await postJson(`${server.url}/v1/decide`, request(await idp.sign({ scope: 'read', deep: nested(62) })));
    expect(res.body).toMatchObject({ allow: true });
  });
});

describe('a token without kid, from an issuer with several keys of its algorithm', () => {
  let several: TestIssuer;
  let server: Arbiter;
  let url: string;

  beforeAll(async () => {
    several = await TestIssuer.create('https://several-keys.test.example');
    // Twelve matching keys: more than the ten candidates a kid-less token is tried against.
    while (several.keys.length < 12) await several.addKey();
    await several.serve();
    server = await startTestArbiter({
      issuers: [{ issuer: several.issuer, jwks_uri: several.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'] }],
    });
    url = `${server.url}/v1/decide`;
  });

  afterAll(async () => {
    await server?.close();
    await several?.close();
  });

  const codeOf = async (token: string) => (await postJson(url, request(token))).body!.reasons[0].code as string;

  it('verifies with whichever candidate key signed it', async () => {
    for (const kid of ['key-1', 'key-2', 'key-10']) {
      const res = await postJson(url, request(await several.sign({ scope: 'read' }, { kid, withoutKid: true })));
      expect(res.body, kid).toMatchObject({ allow: true, reasons: [{ code: 'granted' }] });
    }
  });

  it('reports the claims of the key that verified it, not a bad signature', async () => {
    const now = Math.floor(Date.now() / 1000);
    expect(await codeOf(await several.sign({}, { kid: 'key-2', withoutKid: true, iat: now - 300, exp: now - 100 }))).toBe('token_expired');
  });

  it('denies token_bad_signature when no candidate verifies it, or only one past the tenth', async () => {
    expect(await codeOf(await several.sign({}, { withoutKid: true, key: idp.keys[0]!.privateKey }))).toBe('token_bad_signature');
    expect(await codeOf(await several.sign({ scope: 'read' }, { kid: 'key-11', withoutKid: true }))).toBe('token_bad_signature');
  });
});

describe('POST /v1/decide with a bad request', () => {
  const problemOf = async (init: RequestInit) => {
    const response = await fetch(decide, { method: 'POST', ...init });
    return { status: response.status, type: response.headers.get('content-type'), body: (await response.json()) as Record<string, any> };
  };

  it('415 for a non-JSON content type', async () => {
    const res = await problemOf({ headers: { 'content-type': 'text/plain' }, body: '{}' });
    expect(res).toMatchObject({ status: 415, type: 'application/problem+json', body: { code: 'unsupported_media_type', status: 415 } });
  });

  it('415 for a compressed body, rather than reading it as if it were not', async () => {
    // Undecoded, a gzip body reads as malformed JSON, and a body labelled gzip that is not would be taken as plain JSON.
    for (const encoding of ['gzip', 'br', 'identity, gzip']) {
      const res = await fetch(decide, { method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': encoding }, body: JSON.stringify(request()) });
      expect(res.status, encoding).toBe(415);
      expect(res.headers.get('accept-encoding'), encoding).toBe('identity');
      expect(await res.json(), encoding).toMatchObject({ code: 'unsupported_media_type', detail: expect.stringContaining(encoding) });
    }
    const identity = await fetch(decide, { method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': 'identity' }, body: JSON.stringify(request()) });
    expect(identity.status).toBe(200);
  });

  it('400 for malformed JSON and for an empty body', async () => {
    for (const body of ['{"action":', '']) {
      const res = await problemOf({ headers: { 'content-type': 'application/json' }, body });
      expect(res).toMatchObject({ status: 400, type: 'application/problem+json', body: { code: 'malformed_json' } });
    }
  });

  it('400 naming an unknown top-level key', async () => {
    const res = await postJson(decide, { ...request(), subject: 'alice' });
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toBe('application/problem+json');
    expect(res.body).toMatchObject({ code: 'invalid_request', errors: [{ pointer: '/subject', detail: 'unknown field' }] });
    // RFC 6901: "/" and "~" in a key are escaped, so the pointer names that key and no other.
    const odd = await postJson(decide, { ...request(), 'a/b~c': 1 });
    expect(odd.body!.errors).toEqual([{ pointer: '/a~1b~0c', detail: 'unknown field' }]);
  });

  it('400 naming a missing or mistyped field', async () => {
    const missing = await postJson(decide, { resource: { type: 'x' } });
    expect(missing.body!.errors).toEqual([expect.objectContaining({ pointer: '/action' })]);
    const mistyped = await postJson(decide, { action: 'read', resource: { type: 7 } });
    expect(mistyped.body!.errors).toEqual([expect.objectContaining({ pointer: '/resource/type' })]);
  });

  it('400 naming a field nested too deep or holding a lone surrogate, neither reaching the policy or the log', async () => {
    const json = { headers: { 'content-type': 'application/json' } };
    const base = JSON.stringify(request()).slice(0, -1);
    // 4,000 levels in 8 KB: recording such a request overflowed the stack (an unrecorded deny).
    const deep = await problemOf({ ...json, body: `${base},"context":{"x":${'['.repeat(4000)}${']'.repeat(4000)}}}` });
    expect(deep).toMatchObject({ status: 400, type: 'application/problem+json', body: { code: 'invalid_request' } });
    expect(deep.body.errors).toEqual([{ pointer: `/context/x${'/0'.repeat(62)}`, detail: 'nested deeper than 64 levels of objects and arrays' }]);
    // Valid JSON, not Unicode text: the policy's parser refused it (a policy_error deny).
    const lone = await problemOf({ ...json, body: `${base},"context":{"note":"a\\ud800b"}}` });
    expect(lone).toMatchObject({ status: 400, body: { code: 'invalid_request', errors: [{ pointer: '/context/note' }] } });
    const loneKey = await problemOf({ ...json, body: `${base},"resource":{"type":"doc","properties":{"\\udc00":1}}}` });
    expect(loneKey.body.errors).toEqual([{ pointer: '/resource/properties/\udc00', detail: 'key is not well-formed Unicode (it holds a lone surrogate)' }]);
    // A pair is text: allowed.
    const pair = await problemOf({ ...json, body: `${base},"context":{"note":"\\ud83d\\ude00"}}` });
    expect(pair.status).toBe(200);
  });

  it('400 naming a number too large for a double, which the policy would see as null', async () => {
    const json = { headers: { 'content-type': 'application/json' } };
    const base = JSON.stringify(request()).slice(0, -1);
    // JSON.parse reads 1e400 as Infinity, which the policy input serializes as null: a rule such
    // as `amount <= limit` would then hold (null sorts before numbers), where OPA keeps 1e400.
    for (const [literal, pointer] of [['1e400', '/resource/properties/amount'], ['-1E+309', '/resource/properties/amount'], [`1${'0'.repeat(400)}`, '/resource/properties/amount'],
      // A two-digit exponent on a long integer part: 1e349, past the range all the same.
      [`1${'0'.repeat(250)}e99`, '/resource/properties/amount']] as const) {
      const res = await problemOf({ ...json, body: `${base},"resource":{"type":"doc","properties":{"amount":${literal}}}}` });
      expect(res).toMatchObject({ status: 400, type: 'application/problem+json', body: { code: 'invalid_request' } });
      expect(res.body.errors).toEqual([{ pointer, detail: expect.stringContaining('finite') }]);
    }
    const inArray = await problemOf({ ...json, body: `${base},"context":{"limits":[1,2e308]}}` });
    expect(inArray.body.errors).toEqual([expect.objectContaining({ pointer: '/context/limits/1' })]);
    // Large, tiny and underflowing numbers that are finite stay numbers.
    for (const literal of ['1.7e308', '1e-400', '123456789012345678901234567890', '"1e400"']) {
      const res = await problemOf({ ...json, body: `${base},"resource":{"type":"doc","properties":{"amount":${literal}}}}` });
      expect(res.status).toBe(200);
    }
  });

  it('413 over the 64 KiB body limit', async () => {
    const res = await postJson(decide, request(undefined, { context: { blob: 'x'.repeat(70 * 1024) } }));
    expect(res.status).toBe(413);
    expect(res.body).toMatchObject({ code: 'body_too_large' });
  });

  it('404 problem for an unknown route', async () => {
    const res = await postJson(`${arbiter.url}/v1/nope`, {});
    expect(res).toMatchObject({ status: 404, body: { code: 'not_found' } });
  });
});

describe('policy failures fail closed', () => {
  it('denies with policy_contract_violation when the entrypoint returns junk', async () => {
    const res = await postJson(decide, request(undefined, { policy: 'junk' }));
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ allow: false, reasons: [{ code: 'policy_contract_violation' }], policy: { bundle: 'junk' } });
  });

  it('denies with policy_error when evaluation fails', async () => {
    const res = await postJson(decide, request(undefined, { policy: 'conflict', context: { first: true, second: true } }));
    expect(res.body).toMatchObject({ allow: false, reasons: [{ code: 'policy_error' }] });
  });

  it('503 with a deny body when the bundle is not active', async () => {
    const res = await postJson(decide, request(undefined, { policy: 'absent' }));
    expect(res.status).toBe(503);
    expect(res.body).toMatchObject({ allow: false, reasons: [{ code: 'no_active_bundle' }], policy: null });
  });
});

describe('a token header whose typ or kid is not a string', () => {
  const secret = new TextEncoder().encode('s'.repeat(32));
  const shared = 'https://hmac.test.example';
  let server: Arbiter;

  beforeAll(async () => {
    const secretFile = join(tempDir(), 'secret');
    writeFileSync(secretFile, secret);
    server = await startTestArbiter({
      issuers: [
        // Neither sets typ: nothing else looks at the header's typ.
        { issuer: idp.issuer, jwks_uri: idp.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'] },
        { issuer: shared, secret_file: secretFile, audiences: ['https://api.example.com'], algorithms: ['HS256'] },
      ],
    });
  });

  afterAll(async () => {
    await server?.close();
  });

  const claims = (iss: string) => {
    const now = Math.floor(Date.now() / 1000);
    return new TextEncoder().encode(JSON.stringify({ iss, sub: 'user:alice', aud: 'https://api.example.com', iat: now, exp: now + 60, scope: 'read' }));
  };
  const signed = (header: Record<string, unknown>) => new CompactSign(claims(idp.issuer)).setProtectedHeader({ alg: 'ES256', ...header } as CompactJWSHeaderParameters).sign(idp.keys[0]!.privateKey);
  const hmac = (header: Record<string, unknown>) => new CompactSign(claims(shared)).setProtectedHeader({ alg: 'HS256', ...header } as CompactJWSHeaderParameters).sign(secret);

  it.each([
    ['typ', 'a number, from a JWKS issuer', () => signed({ kid: idp.keys[0]!.kid, typ: 5 })],
    ['kid', 'a number, from a JWKS issuer', () => signed({ kid: 1, typ: 'at+jwt' })],
    ['typ', 'an object, from an HMAC issuer', () => hmac({ typ: { at: 'jwt' } })],
    ['kid', 'a number, from an HMAC issuer', () => hmac({ kid: 7 })],
  ])('denies with token_malformed a token whose %s is %s', async (name, _, mint) => {
    const res = await postJson(`${server.url}/v1/decide`, request(await mint()));
    expect(res.body).toMatchObject({ allow: false, reasons: [{ code: 'token_malformed', message: expect.stringContaining(name) }] });
  });

  it('verifies the same tokens with string headers, and without them', async () => {
    for (const token of [await signed({ kid: idp.keys[0]!.kid, typ: 'at+jwt' }), await hmac({ kid: 'k1', typ: 'at+jwt' }), await hmac({})]) {
      expect((await postJson(`${server.url}/v1/decide`, request(token))).body).toMatchObject({ allow: true });
    }
  });
});

describe('a token whose alg or iss is not a string', () => {
  // Refused before any signature is checked, so these need none that verifies.
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const unsigned = (header: unknown, claims: Record<string, unknown>) => `${part(header)}.${part(claims)}.${part('not checked')}`;
  const claims = () => {
    const now = Math.floor(Date.now() / 1000);
    return { iss: idp.issuer, sub: 'user:alice', aud: 'https://api.example.com', iat: now, exp: now + 60, scope: 'read' };
  };

  it('is token_malformed saying which, not an allowed algorithm called not allowed, nor an iss called missing', async () => {
    // Was "algorithm ES256 is not allowed for this issuer" (an issuer that allows ES256), and "token has no iss claim".
    const alg = await postJson(decide, request(unsigned({ alg: ['ES256'], kid: idp.keys[0]!.kid }, claims())));
    expect(alg.body).toMatchObject({ allow: false, reasons: [{ code: 'token_malformed', message: 'header alg must be a string' }] });
    const iss = await postJson(decide, request(unsigned({ alg: 'ES256', kid: idp.keys[0]!.kid }, { ...claims(), iss: [idp.issuer] })));
    expect(iss.body).toMatchObject({ allow: false, reasons: [{ code: 'token_malformed', message: 'iss must be a string' }] });
  });

  it('is still token_untrusted_issuer without iss, and token_algorithm_not_allowed for an algorithm the issuer does not allow', async () => {
    const { iss: _, ...withoutIss } = claims();
    const missing = await postJson(decide, request(unsigned({ alg: 'ES256' }, withoutIss)));
    expect(missing.body).toMatchObject({ allow: false, reasons: [{ code: 'token_untrusted_issuer', message: 'token has no iss claim' }] });
    const none = await postJson(decide, request(unsigned({ alg: 'none' }, claims())));
    expect(none.body).toMatchObject({ allow: false, reasons: [{ code: 'token_algorithm_not_allowed', message: 'algorithm "none" is not allowed for this issuer' }] });
  });
});

describe('issuer keys that cannot be loaded', () => {
  it.each([
    ['an error status', { status: 503, body: '{"error":"maintenance"}' }],
    ['a body that is not JSON', { status: 200, body: '<html>sign in</html>' }],
  ])('deny with token_keys_unavailable when the JWKS endpoint answers %s', async (_, failure) => {
    const troubled = await TestIssuer.create('https://troubled.test.example');
    await troubled.serve();
    troubled.jwksFailure = failure;
    const server = await startTestArbiter({
      issuers: [{ issuer: troubled.issuer, jwks_uri: troubled.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'], jwks_cooldown_s: 1 }],
    });
    try {
      const res = await postJson(`${server.url}/v1/decide`, request(await troubled.sign()));
      expect(res.body).toMatchObject({ allow: false, reasons: [{ code: 'token_keys_unavailable' }] });
      expect(troubled.jwksFetches).toBeGreaterThan(0);
      // Once the endpoint recovers (and the back-off after the failure is over), the same kind of
      // token verifies: nothing was cached from the failure.
      troubled.jwksFailure = undefined;
      await sleep(JWKS_FAILURE_BACK_OFF_MS + 100);
      const recovered = await postJson(`${server.url}/v1/decide`, request(await troubled.sign()));
      expect(recovered.body!.reasons[0].code).not.toMatch(/^token_/);
    } finally {
      await server.close();
      await troubled.close();
    }
  });
});

describe('a remote key set holding an RSA key shorter than 2048 bits', () => {
  it('denies its tokens token_invalid, as a key that cannot verify, without holding back the fetches of the key set', async () => {
    const rsa = await TestIssuer.create('https://short-rsa.test.example', 'RS256');
    await rsa.serve();
    // jose generates and signs with no such key: WebCrypto does both.
    const short = (await crypto.subtle.generateKey(
      { name: 'RSASSA-PKCS1-v1_5', modulusLength: 1024, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
      true,
      ['sign', 'verify'],
    )) as CryptoKeyPair;
    const { exportJWK } = await import('jose');
    rsa.keys.push({ kid: 'short', privateKey: short.privateKey, publicJwk: { ...(await exportJWK(short.publicKey)), kid: 'short', alg: 'RS256', use: 'sig' } });
    const now = Math.floor(Date.now() / 1000);
    const claims = { iss: rsa.issuer, sub: 'user:alice', aud: 'https://api.example.com', iat: now, exp: now + 60, scope: 'read' };
    const signingInput = `${Buffer.from(JSON.stringify({ alg: 'RS256', kid: 'short' })).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
    const signature = await crypto.subtle.sign('RSASSA-PKCS1-v1_5', short.privateKey, new TextEncoder().encode(signingInput));
    const shortToken = `${signingInput}.${Buffer.from(signature).toString('base64url')}`;
    const server = await startTestArbiter({
      issuers: [{ issuer: rsa.issuer, jwks_uri: rsa.jwksUri, audiences: ['https://api.example.com'], algorithms: ['RS256'], jwks_cooldown_s: 1 }],
    });
    try {
      expect((await postJson(`${server.url}/v1/decide`, request(await rsa.sign({ scope: 'read' })))).body).toMatchObject({ allow: true }); // key set loaded
      await sleep(1100); // past jwks_cooldown_s: a token naming a kid the key set lacks may fetch it again
      const res = await postJson(`${server.url}/v1/decide`, request(shortToken));
      expect(res.body).toMatchObject({ allow: false, reasons: [{ code: 'token_invalid', message: expect.stringContaining('2048') }] });
      // Nothing is wrong with the endpoint: at once, a token naming a key added since fetches it and verifies.
      const rotated = await rsa.addKey('rotated');
      expect((await postJson(`${server.url}/v1/decide`, request(await rsa.sign({ scope: 'read' }, { kid: rotated })))).body).toMatchObject({ allow: true });
      expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
    } finally {
      await server.close();
      await rsa.close();
    }
  });
});

describe('the verification cache of admin tokens', () => {
  it.each([
    ['0 (disabled)', 0, true],
    ['left at its default', undefined, false],
  ])('follows tokens.verification_cache_size %s: a token\'s signature is checked again only when disabled', async (_, size, verifiedAgain) => {
    const admins = await TestIssuer.create(`https://admins-cache-${size ?? 'default'}.test.example`);
    await admins.serve();
    const server = await startTestArbiter({
      admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
      ...(size !== undefined && { tokens: { verification_cache_size: size } }),
    });
    // Counts the signature checks the server (in this process) makes; each still runs as before.
    const signatureChecks = vi.spyOn(crypto.subtle, 'verify');
    try {
      const token = await admins.sign({ scope: 'arbiter.bundles.read', aud: 'arbiter-admin' });
      expect((await adminCall(server.url, token, 'GET', '/v1/bundles')).status).toBe(200);
      const checks = signatureChecks.mock.calls.length;
      expect((await adminCall(server.url, token, 'GET', '/v1/bundles')).status).toBe(200);
      expect(signatureChecks.mock.calls.length).toBe(checks + (verifiedAgain ? 1 : 0));
    } finally {
      signatureChecks.mockRestore();
      await server.close();
      await admins.close();
    }
  });
});

describe('the verification caches of decision and admin tokens', () => {
  it('keep apart: a token remembered on one side is verified against the other side\'s issuers', async () => {
    const admins = await TestIssuer.create('https://admins-apart.test.example');
    await admins.serve();
    const server = await startTestArbiter({
      issuers: [{ issuer: idp.issuer, jwks_uri: idp.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'] }],
      admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
    });
    try {
      // A decision token that asks for an admin scope: verified, and remembered, for decisions.
      const decisionToken = await idp.sign({ scope: 'read arbiter.bundles.read' });
      expect((await postJson(`${server.url}/v1/decide`, request(decisionToken))).body).toMatchObject({ allow: true });
      expect(await adminCall(server.url, decisionToken, 'GET', '/v1/bundles')).toMatchObject({ status: 401, body: { detail: 'token_untrusted_issuer' } });
      // An admin token, remembered by the admin API: no decision issuer vouches for it.
      const adminToken = await admins.sign({ scope: 'read arbiter.bundles.read', aud: 'arbiter-admin' });
      expect((await adminCall(server.url, adminToken, 'GET', '/v1/bundles')).status).toBe(200);
      expect((await postJson(`${server.url}/v1/decide`, request(adminToken))).body).toMatchObject({ allow: false, reasons: [{ code: 'token_untrusted_issuer' }] });
    } finally {
      await server.close();
      await admins.close();
    }
  });
});

describe('a JWKS endpoint answering an error status', () => {
  it('has the body of its answer given up at once, releasing the connection, rather than held until the fetch times out', async () => {
    const troubled = await TestIssuer.create('https://streaming-error.test.example');
    // An error page that keeps coming: the connection is free only once the body is cancelled.
    const closed = Promise.withResolvers<void>();
    const endpoint = createServer((req, res) => {
      req.socket.on('close', () => closed.resolve());
      res.writeHead(500, { 'content-type': 'text/html' });
      res.write('<html>'.padEnd(64 * 1024, ' '));
    });
    await new Promise<void>((resolve) => endpoint.listen(0, '127.0.0.1', resolve));
    const jwksUri = `http://127.0.0.1:${(endpoint.address() as AddressInfo).port}/jwks.json`;
    const server = await startTestArbiter({
      issuers: [{ issuer: troubled.issuer, jwks_uri: jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'], jwks_timeout_ms: 30_000 }],
    });
    try {
      const res = await postJson(`${server.url}/v1/decide`, request(await troubled.sign({ scope: 'read' })));
      expect(res.body).toMatchObject({ allow: false, reasons: [{ code: 'token_keys_unavailable' }] });
      const released = await Promise.race([closed.promise.then(() => true), sleep(2_000).then(() => false)]);
      expect(released).toBe(true);
    } finally {
      await server.close();
      endpoint.closeAllConnections();
      await new Promise((resolve) => endpoint.close(resolve));
    }
  });
});

describe('after a failed JWKS fetch', () => {
  it('decisions deny token_keys_unavailable at once for a second, and /readyz reports it, without fetching again', async () => {
    const troubled = await TestIssuer.create('https://backoff.test.example');
    await troubled.serve();
    troubled.jwksFailure = { status: 503, body: '{}' };
    const server = await startTestArbiter({
      issuers: [{ issuer: troubled.issuer, jwks_uri: troubled.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'] }],
    });
    try {
      for (let i = 0; i < 3; i++) {
        const res = await postJson(`${server.url}/v1/decide`, request(await troubled.sign({ scope: 'read' })));
        expect(res.body).toMatchObject({ allow: false, reasons: [{ code: 'token_keys_unavailable', message: expect.stringContaining(troubled.issuer) }] });
      }
      const ready = await fetch(`${server.url}/readyz`);
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as { problems: string[] }).problems).toEqual([expect.stringContaining(troubled.issuer)]);
      expect(troubled.jwksFetches).toBe(1);
      // Once the back-off is over, the next token fetches again, and verifies if the endpoint has recovered.
      troubled.jwksFailure = undefined;
      await sleep(JWKS_FAILURE_BACK_OFF_MS + 100);
      expect((await postJson(`${server.url}/v1/decide`, request(await troubled.sign({ scope: 'read' })))).body).toMatchObject({ allow: true });
      expect(troubled.jwksFetches).toBe(2);
    } finally {
      await server.close();
      await troubled.close();
    }
  });

  it('a probe refused by the back-off is not remembered for the cooldown: the replica is ready once the endpoint recovers', async () => {
    const troubled = await TestIssuer.create('https://probed-backoff.test.example');
    await troubled.serve();
    troubled.jwksFailure = { status: 503, body: '{}' };
    const server = await startTestArbiter({
      issuers: [{ issuer: troubled.issuer, jwks_uri: troubled.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'], jwks_cooldown_s: 30 }],
    });
    try {
      await postJson(`${server.url}/v1/decide`, request(await troubled.sign({ scope: 'read' })));
      // Within the back-off: refused without a fetch.
      expect((await fetch(`${server.url}/readyz`)).status).toBe(503);
      expect(troubled.jwksFetches).toBe(1);
      troubled.jwksFailure = undefined;
      await sleep(JWKS_FAILURE_BACK_OFF_MS + 100);
      // The cooldown (30 s) counts from a fetch that failed, not from a probe the back-off refused.
      expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
    } finally {
      await server.close();
      await troubled.close();
    }
  });

  it('tokens with an unknown kid do not fetch again meanwhile, and keys already held keep verifying', async () => {
    const rotating = await TestIssuer.create('https://rotating.test.example');
    await rotating.serve();
    const server = await startTestArbiter({
      issuers: [{ issuer: rotating.issuer, jwks_uri: rotating.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'], jwks_cooldown_s: 1 }],
    });
    const decide = async (kid?: string) => (await postJson(`${server.url}/v1/decide`, request(await rotating.sign({ scope: 'read' }, kid === undefined ? {} : { kid })))).body;
    try {
      expect(await decide()).toMatchObject({ allow: true });
      expect(rotating.jwksFetches).toBe(1);
      await sleep(1100); // past the cooldown: an unknown kid would fetch again
      const kid = await rotating.addKey('rotated');
      rotating.jwksFailure = { status: 503, body: '{}' };
      for (let i = 0; i < 3; i++) expect(await decide(kid)).toMatchObject({ allow: false, reasons: [{ code: 'token_keys_unavailable' }] });
      expect(await decide()).toMatchObject({ allow: true });
      expect(rotating.jwksFetches).toBe(2);
    } finally {
      await server.close();
      await rotating.close();
    }
  });
});

describe('a remote key set larger than 1 MiB', () => {
  it.each([
    ['with its Content-Length', false],
    ['chunked, its length unknown until read', true],
  ])('is refused as the endpoint failing (token_keys_unavailable, naming the issuer and the limit), sent %s', async (_, chunked) => {
    const bloated = await TestIssuer.create('https://bloated.test.example');
    await bloated.serve();
    // A valid key set, padded past the limit: buffered whole, it would verify.
    const body = JSON.stringify({ ...bloated.jwks(), padding: 'x'.repeat(2 * 1024 * 1024) });
    bloated.jwksFailure = { status: 200, body, chunked };
    const server = await startTestArbiter({
      issuers: [{ issuer: bloated.issuer, jwks_uri: bloated.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'] }],
    });
    try {
      const res = await postJson(`${server.url}/v1/decide`, request(await bloated.sign({ scope: 'read' })));
      expect(res.body).toMatchObject({ allow: false, reasons: [{ code: 'token_keys_unavailable', message: expect.stringMatching(/bloated\.test\.example.*1048576 bytes/) }] });
    } finally {
      await server.close();
      await bloated.close();
    }
  });
});

describe('a remote key set that publishes private key material', () => {
  it('is refused whole: tokens deny with token_keys_unavailable and /readyz is 503 naming the issuer', async () => {
    const leaky = await TestIssuer.create('https://leaky.test.example');
    await leaky.serve();
    const { exportJWK } = await import('jose');
    // A broken identity provider: its signing key's private half, next to the public key that still verifies.
    const leaked = { ...(await exportJWK(leaky.keys[0]!.privateKey)), kid: 'leaked' };
    leaky.jwksFailure = { status: 200, body: JSON.stringify({ keys: [...leaky.jwks().keys, leaked] }) };
    const server = await startTestArbiter({
      issuers: [{ issuer: leaky.issuer, jwks_uri: leaky.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'], jwks_cooldown_s: 1 }],
    });
    try {
      const res = await postJson(`${server.url}/v1/decide`, request(await leaky.sign({ scope: 'read' })));
      expect(res.body).toMatchObject({ allow: false, reasons: [{ code: 'token_keys_unavailable', message: expect.stringContaining('private key') }] });
      const ready = await fetch(`${server.url}/readyz`);
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as { problems: string[] }).problems).toEqual([expect.stringMatching(/leaky\.test\.example.*private key/)]);
      // Once the identity provider publishes public keys only (and the back-off is over), its tokens verify again.
      leaky.jwksFailure = undefined;
      await sleep(JWKS_FAILURE_BACK_OFF_MS + 100);
      expect((await postJson(`${server.url}/v1/decide`, request(await leaky.sign({ scope: 'read' })))).body).toMatchObject({ allow: true });
    } finally {
      await server.close();
      await leaky.close();
    }
  });
});

describe('POST /v1/issuance', () => {
  it('accounts for every requested scope: on a deny, those the policy did not refuse are refused too', async () => {
    const res = await postJson(`${arbiter.url}/v1/issuance`, { policy: 'echo', client_id: 'c', scopes: ['a', 'b', 'c'], audience: 'https://api.example.com' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ allow: false, granted_scopes: [], max_ttl_s: 0 });
    expect(res.body!.refused_scopes).toEqual([
      { scope: 'b', code: 'nope' },
      { scope: 'a', code: 'closed' },
      { scope: 'c', code: 'closed' },
    ]);
  });

  it('lists each requested scope once in refused_scopes, and no scope that was not requested', async () => {
    // The echo policy's deny refuses b, which this request does not ask for; a is asked for twice.
    const res = await postJson(`${arbiter.url}/v1/issuance`, { policy: 'echo', client_id: 'c', scopes: ['a', 'a'], audience: 'https://api.example.com' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ allow: false, granted_scopes: [], max_ttl_s: 0 });
    expect(res.body!.refused_scopes).toEqual([{ scope: 'a', code: 'closed' }]);
  });

  it('grants only scopes that were requested, whatever the policy answers', async () => {
    const res = await postJson(`${arbiter.url}/v1/issuance`, { policy: 'echo', client_id: 'overreach', scopes: ['a', 'b'], audience: 'https://api.example.com' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ allow: true, granted_scopes: ['a'], max_ttl_s: 60 });
    // b is refused, but not "granted": on an allow the first reason explains a grant.
    expect(res.body!.refused_scopes).toEqual([{ scope: 'b', code: 'not_granted' }]);
  });

  it('grants each scope once, however often it was asked for and granted', async () => {
    // The by-prefix policy grants every requested "public." scope as listed, duplicates included:
    // a token service joining the answer into a scope claim would write the scope twice.
    const res = await postJson(`${arbiter.url}/v1/issuance`, { policy: 'echo', client_id: 'by-prefix', scopes: ['public.read', 'public.write', 'public.read'], audience: 'https://api.example.com' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ allow: true, granted_scopes: ['public.read', 'public.write'], refused_scopes: [] });
  });

  it('refuses a requested scope that is not one OAuth scope token, naming it', async () => {
    // A token service joins granted scopes with spaces into the token's scope claim: a "scope"
    // holding a space, granted by a policy that matches scopes by prefix, would smuggle in another.
    const ok = await postJson(`${arbiter.url}/v1/issuance`, { policy: 'echo', client_id: 'by-prefix', scopes: ['public.read'], audience: 'https://api.example.com' });
    expect(ok.body).toMatchObject({ allow: true, granted_scopes: ['public.read'] });
    for (const scope of ['public.read payments.write', 'public.read\tpayments.write', 'public.read\npayments.write', 'public."quoted"', 'public.caf\u00e9']) {
      const res = await postJson(`${arbiter.url}/v1/issuance`, { policy: 'echo', client_id: 'by-prefix', scopes: ['public.read', scope], audience: 'https://api.example.com' });
      expect(res.status, scope).toBe(400);
      expect(res.headers.get('content-type')).toBe('application/problem+json');
      expect(res.body!.errors).toEqual([expect.objectContaining({ pointer: '/scopes/1' })]);
    }
  });

  it('denies an allow that breaks the issuance contract, granting nothing', async () => {
    for (const client of ['scopeless-allow', 'no-lifetime', 'granted-and-refused', 'unasked-only']) {
      const res = await postJson(`${arbiter.url}/v1/issuance`, { policy: 'echo', client_id: client, scopes: ['a'], audience: 'https://api.example.com' });
      expect(res.status).toBe(200);
      expect(res.body, client).toMatchObject({ allow: false, reasons: [{ code: 'policy_contract_violation' }], granted_scopes: [], max_ttl_s: 0 });
      expect(res.body!.refused_scopes).toEqual([{ scope: 'a', code: 'policy_contract_violation' }]);
      // Recorded as the deny it was answered as, and replayed alike.
      expect(arbiter.decisionLog!.get(res.body!.decision_id as string)?.result).toMatchObject({ allow: false, reasons: [{ code: 'policy_contract_violation' }] });
    }
  });
});

describe('health', () => {
  it('/healthz answers and /readyz reports bundles and issuer keys', async () => {
    expect((await fetch(`${arbiter.url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${arbiter.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: 'ready', bundles: expect.arrayContaining([expect.objectContaining({ name: 'simple' })]) });
  });

  it('/readyz stays ready, reporting the issuer as degraded, when keys it loaded before cannot be refreshed', async () => {
    // Every replica shares the identity provider: taking them all out of the load balancer at
    // once would send no request anywhere better. Its tokens deny token_keys_unavailable meanwhile.
    const flaky = await TestIssuer.create('https://flaky.test.example');
    await flaky.serve();
    const server = await startTestArbiter({
      issuers: [{ issuer: flaky.issuer, jwks_uri: flaky.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'], jwks_cache_max_age_s: 1, jwks_cooldown_s: 1 }],
    });
    try {
      expect((await postJson(`${server.url}/v1/decide`, request(await flaky.sign({ scope: 'read' })))).body).toMatchObject({ allow: true });
      flaky.jwksFailure = { status: 503, body: '{}' };
      await sleep(1100);
      const ready = await fetch(`${server.url}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toMatchObject({ status: 'ready', problems: [], degraded: [expect.stringContaining(flaky.issuer)] });
    } finally {
      await server.close();
      await flaky.close();
    }
  });

  it('/readyz reloads an unloadable key set at most once per cooldown, however often it is probed', async () => {
    const troubled = await TestIssuer.create('https://probed.test.example');
    await troubled.serve();
    troubled.jwksFailure = { status: 503, body: '{}' };
    const server = await startTestArbiter({
      issuers: [{ issuer: troubled.issuer, jwks_uri: troubled.jwksUri, audiences: ['a'], algorithms: ['ES256'], jwks_cooldown_s: 30 }],
    });
    try {
      for (let i = 0; i < 5; i++) {
        const ready = await fetch(`${server.url}/readyz`);
        expect(ready.status).toBe(503);
        expect(((await ready.json()) as { problems: string[] }).problems).toEqual([expect.stringContaining(troubled.issuer)]);
      }
      expect(troubled.jwksFetches).toBe(1);
    } finally {
      await server.close();
      await troubled.close();
    }
  });

  it('/readyz is 503 when an issuer JWKS cannot be loaded or the default bundle is missing', async () => {
    const down = await TestIssuer.create('https://down.test.example');
    await down.serve();
    const uri = down.jwksUri;
    await down.close();
    const server = await startTestArbiter({
      issuers: [{ issuer: down.issuer, jwks_uri: uri, audiences: ['a'], algorithms: ['ES256'], jwks_timeout_ms: 500 }],
      bundles: { default: 'absent' },
    });
    try {
      const ready = await fetch(`${server.url}/readyz`);
      expect(ready.status).toBe(503);
      const body = (await ready.json()) as { problems: string[] };
      expect(body.problems).toHaveLength(2);
      const res = await postJson(`${server.url}/v1/decide`, request());
      expect(res).toMatchObject({ status: 503, body: { allow: false, reasons: [{ code: 'no_active_bundle' }] } });
    } finally {
      await server.close();
    }
  });
});
