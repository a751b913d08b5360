/**
 * The default policy's acceptance scenarios (issue #3) over HTTP: real dev-issuer tokens,
 * the bundle built from rego/authz, the example entitlements seeded as live data.
 */
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Arbiter } from '../src/server/start.ts';
import { buildBundle } from '../src/toolchain/build.ts';
import { loadOrCreateDevIssuerKey, mintDevToken, type DevIssuerKey, type DevTokenOptions } from '../src/tokens/dev-issuer.ts';
import { postJson, startTestArbiter, tempDir } from './support/arbiter.ts';
import { TestIssuer } from './support/issuer.ts';

const ALICE = 'user:alice@acme.example';
const AGENT = 'agent:expense-assistant';
const STAGING = 'https://staging.api.example.com';

let key: DevIssuerKey;
let keyFile: string;
let arbiter: Arbiter;

/** `data`: more data settings, e.g. check_entitlements: false to store what a malformed feed sends. */
async function start(data: Record<string, unknown> = {}): Promise<Arbiter> {
  return startTestArbiter({
    dev_issuer: { enabled: true, key_file: keyFile },
    admin: { allow_dev_issuer: true },
    bundles: { default: 'authz' },
    data: { path: join(tempDir(), 'data.db'), seed: { entitlements: 'examples/entitlements.json' }, ...data },
  });
}

const token = (options: Partial<DevTokenOptions> = {}) =>
  mintDevToken(key, { sub: ALICE, scope: 'invoices.read', ...options, claims: { tenant: 'acme', ...options.claims } });

const invoice = { type: 'invoice', id: 'inv-1', properties: { tenant: 'acme' } };

async function decide(server: Arbiter, body: Record<string, unknown>) {
  const res = await postJson(`${server.url}/v1/decide`, { action: 'invoices.read', resource: invoice, context: { environment: 'production' }, ...body });
  expect(res.status).toBe(200);
  return res.body as { allow: boolean; reasons: { code: string; [k: string]: unknown }[]; obligations: { type: string }[] };
}

const codes = (decision: { reasons: { code: string }[] }) => decision.reasons.map((r) => r.code);

async function admin(server: Arbiter, method: string, path: string, body: unknown, headers: Record<string, string> = {}) {
  const adminToken = await mintDevToken(key, { sub: 'admin@acme.example', scope: 'arbiter.data.write arbiter.revocations.write' });
  const response = await fetch(`${server.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  expect(response.status).toBeLessThan(300);
  return response.status === 204 ? undefined : ((await response.json()) as Record<string, any>);
}

beforeAll(async () => {
  keyFile = join(tempDir(), 'dev-issuer.jwk.json');
  key = await loadOrCreateDevIssuerKey(keyFile);
  arbiter = await start();
});

afterAll(async () => {
  await arbiter?.close();
});

describe('default policy over /v1/decide', () => {
  it('1: scope, mapping and entitlement present, same tenant, production audience: allow, explained', async () => {
    const decision = await decide(arbiter, { token: await token() });
    expect(decision.allow).toBe(true);
    expect(decision.reasons).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ code: 'scope_granted' }),
        expect.objectContaining({ code: 'mapping_matched', rule_id: 'mapping-acme-employees' }),
        expect.objectContaining({ code: 'entitlement_granted' }),
      ]),
    );
    expect(JSON.stringify(decision.reasons)).toContain('ent-alice-invoices-read');
  });

  it('2: scope missing', async () => {
    expect(codes(await decide(arbiter, { token: await token({ scope: 'expenses.read' }) }))).toEqual(['scope_missing']);
  });

  it('3: unknown action', async () => {
    expect(codes(await decide(arbiter, { token: await token(), action: 'invoices.shred' }))).toContain('unknown_action');
  });

  it('4: token tenant differs from resource tenant', async () => {
    expect(codes(await decide(arbiter, { token: await token({ claims: { tenant: 'globex' } }) }))).toEqual(['tenant_mismatch']);
  });

  it('5: non-production audience used in production', async () => {
    expect(codes(await decide(arbiter, { token: await token({ aud: STAGING }) }))).toEqual(['environment_mismatch']);
  });

  it('6: a permissions claim without an entitlement is not enough', async () => {
    const decision = await decide(arbiter, { token: await token({ sub: 'user:bob@acme.example', claims: { permissions: ['invoices.read'] } }) });
    expect(decision.allow).toBe(false);
    expect(codes(decision)).toContain('no_entitlement');
  });

  it('8: high-risk action with a token older than the limit: step-up', async () => {
    const decision = await decide(arbiter, { token: await token({ scope: 'invoices.write', ageSeconds: 400 }), action: 'invoices.approve' });
    expect(codes(decision)).toEqual(['token_too_old_for_risk']);
    expect(decision.obligations).toEqual([expect.objectContaining({ type: 'step_up' })]);
  });

  it('8: a token refreshed after an old sign-in (auth_time) still needs step-up; a recent sign-in does not', async () => {
    const now = Math.floor(Date.now() / 1000);
    const refreshed = await decide(arbiter, { token: await token({ scope: 'invoices.write', claims: { auth_time: now - 3600 } }), action: 'invoices.approve' });
    expect(codes(refreshed)).toEqual(['token_too_old_for_risk']);
    expect(refreshed.reasons[0]).toMatchObject({ age_from: 'auth_time', max_token_age_s: 300 });
    expect(refreshed.reasons[0]!.age_s).toBeGreaterThanOrEqual(3600);
    const signedInNow = await decide(arbiter, { token: await token({ scope: 'invoices.write', claims: { auth_time: now - 10 } }), action: 'invoices.approve' });
    expect(signedInNow.allow).toBe(true);
    expect(signedInNow.reasons).toContainEqual(expect.objectContaining({ code: 'token_fresh', age_from: 'auth_time' }));
    // An auth_time after iat cannot make a token fresher than its issuance.
    const future = await decide(arbiter, { token: await token({ scope: 'invoices.write', ageSeconds: 400, claims: { auth_time: now + 60 } }), action: 'invoices.approve' });
    expect(codes(future)).toEqual(['token_too_old_for_risk']);
    expect(codes(await decide(arbiter, { token: await token({ scope: 'invoices.write', claims: { auth_time: 'yesterday' } }), action: 'invoices.approve' }))).toEqual(['token_malformed']);
  });

  it('9: a permitted agent acting for a permitted user, low risk: allow with each actor grant', async () => {
    const decision = await decide(arbiter, { token: await token({ claims: { act: { sub: AGENT } } }) });
    expect(decision.allow).toBe(true);
    expect(JSON.stringify(decision.reasons)).toContain('ent-expense-assistant-invoices');
  });

  it('10: an actor in the chain lacks the grant', async () => {
    expect(codes(await decide(arbiter, { token: await token({ claims: { act: { sub: 'agent:unknown-bot' } } }) }))).toContain('delegation_not_permitted');
  });

  it('11: a chain deeper than the limit', async () => {
    const act = { sub: AGENT, act: { sub: AGENT, act: { sub: AGENT } } };
    expect(codes(await decide(arbiter, { token: await token({ claims: { act } }) }))).toContain('delegation_too_deep');
  });

  it('12: high-risk action through an agent: approval required, then allowed with an accepted approval', async () => {
    const agentToken = await token({ scope: 'invoices.write', claims: { act: { sub: AGENT } } });
    const without = await decide(arbiter, { token: agentToken, action: 'invoices.approve' });
    expect(codes(without)).toEqual(['approval_required']);
    expect(without.obligations).toEqual([expect.objectContaining({ type: 'approval_required', actor: AGENT, tenant: 'acme' })]);

    const expiresAt = Math.floor(Date.now() / 1000) + 600;
    await admin(arbiter, 'PUT', '/v1/data/approvals', { 'apr-1': { action: 'invoices.approve', subject: ALICE, resource_id: 'inv-1', approved_by: 'user:carol@acme.example', expires_at: expiresAt } });
    const withApproval = await decide(arbiter, { token: agentToken, action: 'invoices.approve', context: { environment: 'production', approval_id: 'apr-1' } });
    expect(withApproval.allow).toBe(true);
    expect(JSON.stringify(withApproval.reasons)).toContain('apr-1');
  });

  it('an agent client whose id has a "/" is an actor all the same: judged, and approval required for high risk', async () => {
    // "*" stays inside one "/" segment: with agents "agent:*" this agent was an ordinary client,
    // and Alice's token let it approve invoices without its own grant or a human approval.
    const agentClientToken = await token({ scope: 'invoices.write', claims: { client_id: 'agent:acme/expense-bot' } });
    const decision = await decide(arbiter, { token: agentClientToken, action: 'invoices.approve' });
    expect(decision.allow).toBe(false);
    expect(codes(decision).sort()).toEqual(['approval_required', 'delegation_not_permitted']);
  });

  it('13: no token', async () => {
    expect(codes(await decide(arbiter, {}))).toEqual(['unauthenticated']);
  });

  it('14: revoked token', async () => {
    const revoked = await token();
    expect((await decide(arbiter, { token: revoked })).allow).toBe(true);
    const { jti } = JSON.parse(Buffer.from(revoked.split('.')[1]!, 'base64url').toString()) as { jti: string };
    await admin(arbiter, 'POST', '/v1/revocations', { kind: 'jti', value: jti, reason: 'laptop stolen' });
    expect(codes(await decide(arbiter, { token: revoked }))).toEqual(['token_revoked']);
  });

  it('15: several failures at once: every applicable code', async () => {
    const decision = await decide(arbiter, { token: await token({ aud: STAGING, scope: 'expenses.read', claims: { tenant: 'globex' } }) });
    expect(codes(decision)).toEqual(expect.arrayContaining(['environment_mismatch', 'scope_missing', 'tenant_mismatch']));
  });
});

describe('default policy and the audiences an issuer is configured for', () => {
  // The staging identity provider is trusted for the staging API only: an audience it adds
  // beside that one was accepted by no configuration and is no evidence of an environment.
  it('maps to an environment only the audiences the issuer is accepted for', async () => {
    const staging = await TestIssuer.create('https://idp.acme.example');
    await staging.serve();
    const server = await startTestArbiter({
      issuers: [{ issuer: staging.issuer, jwks_uri: staging.jwksUri, audiences: [STAGING], algorithms: ['ES256'] }],
      bundles: { default: 'authz' },
      data: { path: join(tempDir(), 'data.db'), seed: { entitlements: 'examples/entitlements.json' } },
    });
    try {
      const claims = { sub: ALICE, scope: 'invoices.read', 'https://acme.example/claims/tenant': 'acme' };
      const both = await staging.sign({ ...claims, aud: [STAGING, 'https://api.example.com'] });
      expect(await decide(server, { token: both, context: { environment: 'staging' } })).toMatchObject({ allow: true });
      const production = await decide(server, { token: both });
      expect(codes(production)).toEqual(['environment_mismatch']);
      expect(production.reasons[0]).toMatchObject({ token_environments: ['staging'] });
    } finally {
      await server.close();
      await staging.close();
    }
  });
});

describe('default policy when entitlements are unavailable', () => {
  it('7: entitlement data missing or stale: entitlements_unavailable', async () => {
    const server = await start();
    try {
      await admin(server, 'PUT', '/v1/data/entitlements', { [ALICE]: { grants: [{ id: 'g', actions: ['invoices.read'], tenants: ['acme'] }] } }, { 'arbiter-data-max-age': '1' });
      expect((await decide(server, { token: await token() })).allow).toBe(true);
      await new Promise((resolve) => setTimeout(resolve, 2100));
      expect(codes(await decide(server, { token: await token() }))).toEqual(['entitlements_unavailable']);
      await admin(server, 'DELETE', '/v1/data/entitlements', undefined);
      expect(codes(await decide(server, { token: await token() }))).toEqual(['entitlements_unavailable']);
    } finally {
      await server.close();
    }
  });
});

describe('default policy on malformed live entitlements', () => {
  // A feed that sends grants, actions or tenants as objects: Rego's "in" would read the
  // object's values, so each of these would entitle Alice (and the agent) to invoices.read.
  const malformed = [
    { grants: { first: { id: 'ent-object-grants', actions: ['invoices.read'], tenants: ['acme'] } } },
    { grants: [{ id: 'ent-object-tenants', actions: ['invoices.read'], tenants: { primary: 'acme' } }] },
    { grants: [{ id: 'ent-object-actions', actions: { read: 'invoices.read' }, tenants: ['acme'] }] },
  ];

  it('entitles neither the subject nor a client to be issued a scope: fail closed', async () => {
    // Such a write is refused (data.check_entitlements), but data stored before that check, or
    // with it off, can hold it: the policy must not rely on the write path.
    const server = await start({ check_entitlements: false });
    try {
      const caller = await mintDevToken(key, { sub: 'spiffe://acme.example/ns/identity/sa/token-service' });
      for (const entry of malformed) {
        await admin(server, 'PUT', '/v1/data/entitlements', { [ALICE]: entry, [AGENT]: entry });
        const decision = await decide(server, { token: await token() });
        expect(decision.allow).toBe(false);
        expect(codes(decision)).toEqual(['no_entitlement']);
        const issued = await postJson(`${server.url}/v1/issuance`, { token: caller, client_id: AGENT, scopes: ['invoices.read'], audience: 'https://api.example.com' });
        expect(issued.body).toMatchObject({ allow: false, granted_scopes: [], refused_scopes: [{ scope: 'invoices.read', code: 'no_entitlement' }] });
      }
    } finally {
      await server.close();
    }
  });
});

describe('governed issuance over /v1/issuance', () => {
  it('16: some requested scopes granted, some refused with reasons, a maximum TTL', async () => {
    const caller = await mintDevToken(key, { sub: 'spiffe://acme.example/ns/identity/sa/token-service' });
    const res = await postJson(`${arbiter.url}/v1/issuance`, {
      token: caller,
      client_id: AGENT,
      subject: ALICE,
      scopes: ['invoices.read', 'expenses.write', 'payments.write', 'openid', 'admin'],
      audience: 'https://api.example.com',
      purpose: 'expense_filing',
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ allow: true, granted_scopes: ['expenses.write', 'invoices.read', 'openid'], max_ttl_s: 1800 });
    const refused = (res.body!.refused_scopes as { scope: string; code: string }[]).map((r) => `${r.scope}:${r.code}`);
    expect(refused).toEqual(expect.arrayContaining(['payments.write:no_mapping', 'admin:scope_unknown']));
  });

  it('matches the caller and each actor of its chain on issuer and sub: the sub under another issuer is not the token service', async () => {
    const TOKEN_SERVICE = 'spiffe://acme.example/ns/identity/sa/token-service';
    const issue = async (act: Record<string, unknown>) => {
      const caller = await mintDevToken(key, { sub: TOKEN_SERVICE, claims: { act } });
      const res = await postJson(`${arbiter.url}/v1/issuance`, { token: caller, client_id: AGENT, subject: ALICE, scopes: ['invoices.read'], audience: 'https://api.example.com' });
      expect(res.status).toBe(200);
      return res.body!;
    };
    // An actor the token names without an iss is vouched for by the token's issuer.
    expect(await issue({ sub: TOKEN_SERVICE })).toMatchObject({ allow: true, granted_scopes: ['invoices.read'] });
    // The same sub from an issuer no callers rule names is someone else.
    const partner = await issue({ sub: TOKEN_SERVICE, iss: 'https://partner.example' });
    expect(partner).toMatchObject({ allow: false, granted_scopes: [], max_ttl_s: 0 });
    expect(partner.reasons).toEqual(
      expect.arrayContaining([expect.objectContaining({ code: 'caller_not_permitted', caller: TOKEN_SERVICE, issuer: 'https://partner.example', actor_depth: 1 })]),
    );
  });

  it('grants nothing for a revoked client or subject, whichever issuer the revocation names', async () => {
    const server = await start();
    try {
      const caller = await mintDevToken(key, { sub: 'spiffe://acme.example/ns/identity/sa/token-service' });
      const issue = async (request: Record<string, unknown> = {}) =>
        (await postJson(`${server.url}/v1/issuance`, { token: caller, client_id: AGENT, subject: ALICE, scopes: ['invoices.read'], audience: 'https://api.example.com', ...request })).body!;
      expect(await issue()).toMatchObject({ allow: true, granted_scopes: ['invoices.read'] });

      // The agent, revoked by its sub under another issuer than the token service's.
      const agentRevocation = await admin(server, 'POST', '/v1/revocations', { kind: 'sub', value: AGENT, iss: 'https://idp.acme.example', reason: 'agent compromised' });
      const refusedClient = await issue();
      expect(refusedClient).toMatchObject({ allow: false, granted_scopes: [], refused_scopes: [{ scope: 'invoices.read', code: 'request_denied' }] });
      expect(refusedClient.reasons).toContainEqual(expect.objectContaining({ code: 'party_revoked', party: 'client', revocation_id: agentRevocation!.id }));

      // Alice, revoked by sub: no token for her through any client.
      await admin(server, 'POST', '/v1/revocations', { kind: 'sub', value: ALICE, reason: 'offboarded' });
      const refusedSubject = await issue({ client_id: 'acme-finance-portal' });
      expect(refusedSubject).toMatchObject({ allow: false, granted_scopes: [] });
      expect(refusedSubject.reasons).toContainEqual(expect.objectContaining({ code: 'party_revoked', party: 'subject', reason: 'offboarded' }));
    } finally {
      await server.close();
    }
  });

  it('refuses a workload revoked by client_id when it is named as the subject', async () => {
    const server = await start();
    try {
      const workload = 'spiffe://acme.example/ns/billing/sa/invoice-worker';
      const caller = await mintDevToken(key, { sub: 'spiffe://acme.example/ns/identity/sa/token-service' });
      const issue = async () =>
        (await postJson(`${server.url}/v1/issuance`, { token: caller, client_id: AGENT, subject: workload, scopes: ['invoices.read'], audience: 'https://api.example.com' })).body!;
      expect(await issue()).toMatchObject({ allow: true, granted_scopes: ['invoices.read'] });
      await admin(server, 'POST', '/v1/revocations', { kind: 'client_id', value: workload, reason: 'workload compromised' });
      const refused = await issue();
      expect(refused).toMatchObject({ allow: false, granted_scopes: [] });
      expect(refused.reasons).toContainEqual(expect.objectContaining({ code: 'party_revoked', party: 'subject' }));
    } finally {
      await server.close();
    }
  });

  it('refuses a client revoked while its issuance waited for the policy', async () => {
    const server = await startTestArbiter({
      dev_issuer: { enabled: true, key_file: keyFile },
      admin: { allow_dev_issuer: true },
      bundles: { default: 'authz' },
      data: { path: join(tempDir(), 'data.db'), seed: { entitlements: 'examples/entitlements.json' } },
      // One worker, held by a spinning decision until its (short) deadline.
      engine: { workers: 1, deadline_ms: 1000 },
    });
    try {
      const caller = await mintDevToken(key, { sub: 'spiffe://acme.example/ns/identity/sa/token-service' });
      const issue = () => postJson(`${server.url}/v1/issuance`, { token: caller, client_id: AGENT, subject: ALICE, scopes: ['invoices.read'], audience: 'https://api.example.com' });
      expect((await issue()).body).toMatchObject({ allow: true, granted_scopes: ['invoices.read'] });
      const spinning = postJson(`${server.url}/v1/decide`, { policy: 'spin', action: 'read', resource: { type: 'doc' }, context: { spin: true } });
      await new Promise((resolve) => setTimeout(resolve, 100));
      const queued = issue();
      await new Promise((resolve) => setTimeout(resolve, 100));
      await admin(server, 'POST', '/v1/revocations', { kind: 'client_id', value: AGENT, reason: 'agent compromised' });
      const answer = (await queued).body!;
      expect(answer).toMatchObject({ allow: false, granted_scopes: [] });
      expect(answer.reasons).toContainEqual(expect.objectContaining({ code: 'party_revoked', party: 'client', reason: 'agent compromised' }));
      await spinning;
    } finally {
      await server.close();
    }
  });

  it('grants a scope only for an action and a tenant the client and the subject share, as live data says now', async () => {
    const server = await start();
    try {
      const caller = await mintDevToken(key, { sub: 'spiffe://acme.example/ns/identity/sa/token-service' });
      const issue = async () =>
        (await postJson(`${server.url}/v1/issuance`, { token: caller, client_id: AGENT, subject: ALICE, scopes: ['invoices.read'], audience: 'https://api.example.com' })).body!;
      const entitle = (agentTenant: string) =>
        admin(server, 'PUT', '/v1/data/entitlements', {
          [ALICE]: { grants: [{ id: 'ent-alice-read', actions: ['invoices.read'], tenants: ['acme'] }] },
          [AGENT]: { grants: [{ id: 'ent-agent-read', actions: ['invoices.read'], tenants: [agentTenant] }] },
        });
      // The agent may read invoices, but only another tenant's: it cannot read Alice's.
      await entitle('globex');
      expect(await issue()).toMatchObject({ allow: false, granted_scopes: [], max_ttl_s: 0, refused_scopes: [{ scope: 'invoices.read', code: 'no_shared_entitlement' }] });
      await entitle('acme');
      expect(await issue()).toMatchObject({ allow: true, granted_scopes: ['invoices.read'], refused_scopes: [] });
    } finally {
      await server.close();
    }
  });

  it('holds a token service to the clients, audiences and scopes its callers rule limits it to', async () => {
    // The default policy built with the development token service's rule limited: its sources,
    // its data.json with limits, the pinned opa.
    const sources = join(tempDir(), 'authz');
    cpSync('rego/authz', sources, { recursive: true });
    const data = JSON.parse(readFileSync(join(sources, 'data.json'), 'utf8')) as { authz: { issuance_rules: { callers: Record<string, unknown>[] } } };
    for (const rule of data.authz.issuance_rules.callers) Object.assign(rule, { clients: ['agent:*'], audiences: ['https://api.example.com'], scopes: ['invoices.*', 'openid'] });
    writeFileSync(join(sources, 'data.json'), JSON.stringify(data));
    const bundles = join(tempDir(), 'bundles');
    mkdirSync(bundles);
    buildBundle(sources, join(bundles, 'authz.tar.gz'));
    const server = await startTestArbiter({
      dev_issuer: { enabled: true, key_file: keyFile },
      bundles: { dir: bundles, default: 'authz' },
      data: { path: join(tempDir(), 'data.db'), seed: { entitlements: 'examples/entitlements.json' } },
    });
    try {
      const TOKEN_SERVICE = 'spiffe://acme.example/ns/identity/sa/token-service';
      const caller = await mintDevToken(key, { sub: TOKEN_SERVICE });
      const issue = async (request: Record<string, unknown> = {}) => {
        const res = await postJson(`${server.url}/v1/issuance`, { token: caller, client_id: AGENT, subject: ALICE, scopes: ['invoices.read', 'expenses.write'], audience: 'https://api.example.com', ...request });
        expect(res.status).toBe(200);
        return res.body!;
      };
      // Within its limits: the scopes beyond them are refused by name, the others judged as ever.
      const within = await issue();
      expect(within).toMatchObject({ allow: true, granted_scopes: ['invoices.read'], refused_scopes: [{ scope: 'expenses.write', code: 'caller_not_permitted' }] });
      expect(within.reasons).toContainEqual(expect.objectContaining({ code: 'caller_not_permitted', limit: 'scopes', scope: 'expenses.write', caller: TOKEN_SERVICE }));
      // Another client, another audience: nothing at all.
      const workload = 'spiffe://acme.example/ns/billing/sa/invoice-worker';
      const otherClient = await issue({ client_id: workload, subject: undefined, scopes: ['invoices.read'] });
      expect(otherClient).toMatchObject({ allow: false, granted_scopes: [], max_ttl_s: 0, refused_scopes: [{ scope: 'invoices.read', code: 'request_denied' }] });
      expect(otherClient.reasons).toContainEqual(expect.objectContaining({ code: 'caller_not_permitted', limit: 'clients', client_id: workload, caller: TOKEN_SERVICE }));
      const otherAudience = await issue({ audience: STAGING });
      expect(otherAudience).toMatchObject({ allow: false, granted_scopes: [] });
      expect(otherAudience.reasons).toContainEqual(expect.objectContaining({ code: 'caller_not_permitted', limit: 'audiences', audience: STAGING }));
    } finally {
      await server.close();
    }
  });

  it('grants nothing to a caller the policy does not know', async () => {
    const res = await postJson(`${arbiter.url}/v1/issuance`, {
      token: await token(),
      client_id: AGENT,
      scopes: ['invoices.read'],
      audience: 'https://api.example.com',
    });
    expect(res.body).toMatchObject({ allow: false, granted_scopes: [], max_ttl_s: 0 });
    expect(codes(res.body as { reasons: { code: string }[] })).toContain('caller_not_permitted');
    // A token service reads every requested scope's fate: none is left out of both lists.
    expect((res.body!.refused_scopes as { scope: string }[]).map((r) => r.scope)).toEqual(['invoices.read']);
  });
});
