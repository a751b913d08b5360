/**
 * The default policy's allow and its denials must agree: allow lists the passing side of every
 * check and does not read denials (it is cheaper that way), so a check added to one and not the
 * other would allow a request that a check fails, or deny one without a reason. This test
 * generates thousands of requests, each a few random mutations away from an allowed one, and
 * evaluates both rules in the bundle built from rego/authz by the pinned opa.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { readBundleArchive } from '../src/policy/archive.ts';
import { PolicyEngine, singleResult } from '../src/policy/engine.ts';
import { buildBundle } from '../src/toolchain/build.ts';
import { tempDir } from './support/arbiter.ts';

const NOW = 1_767_225_600;
const DEV_ISSUER = 'urn:arbiter:dev-issuer';
const ACME_IDP = 'https://idp.acme.example';
const PRODUCTION = 'https://api.example.com';
const STAGING = 'https://staging.api.example.com';
const ALICE = 'user:alice@acme.example';
const INVOICE_WORKER = 'spiffe://acme.example/ns/billing/sa/invoice-worker';
const EXPENSE_ASSISTANT = 'agent:expense-assistant';
const GENERATED = 6000;

/** Every code a request can earn; the generator must reach each of them. */
const DENIAL_CODES = [
  'unauthenticated', 'token_revoked', 'issuer_not_trusted', 'entitlements_unavailable', 'unknown_action',
  'resource_type_mismatch', 'purpose_not_allowed', 'risk_level_unknown', 'environment_missing', 'environment_mismatch',
  'tenant_missing', 'tenant_mismatch', 'scope_missing', 'no_mapping', 'no_entitlement', 'token_too_old_for_risk',
  'delegation_too_deep', 'delegation_not_permitted', 'approval_required', 'request_tenant_mismatch',
  'tenant_issuer_not_trusted',
];
const GRANT_CODES = new Set([
  'issuer_trusted', 'environment_matched', 'tenant_matched', 'scope_granted', 'mapping_matched',
  'entitlement_granted', 'actor_granted', 'token_fresh', 'approval_accepted',
]);

type Json = Record<string, any>;
type Reason = { code: string };

function subject(iss: string, sub: string, tenantClaim: string, scopes: string[], act: Json[] = []): Json {
  return {
    authenticated: true,
    iss,
    sub,
    aud: [PRODUCTION],
    scopes,
    act,
    claims: { iss, sub, aud: PRODUCTION, scope: scopes.join(' '), [tenantClaim]: 'acme', roles: ['clerk'], iat: NOW - 30, exp: NOW + 570 },
    token: { alg: 'ES256', iat: NOW - 30, exp: NOW + 570, age_s: 30, ttl_s: 570, fingerprint: 'fp' },
    revoked: { revoked: false },
  };
}

function request(subjectDoc: Json, action: string, resourceType: string, context: Json = {}): Json {
  return {
    subject: subjectDoc,
    action: { name: action },
    resource: { type: resourceType, id: 'inv-1', properties: { tenant: 'acme' } },
    context: { environment: 'production', now: NOW, ...context },
    data_status: { entitlements: { stale: false }, approvals: { stale: false } },
  };
}

const agent = { sub: EXPENSE_ASSISTANT, client_id: EXPENSE_ASSISTANT };

/** Allowed requests (checked): the starting points of the mutations. */
const ALLOWED: Json[] = [
  request(subject(DEV_ISSUER, ALICE, 'tenant', ['invoices.read']), 'invoices.read', 'invoice'),
  request(subject(ACME_IDP, INVOICE_WORKER, 'https://acme.example/claims/tenant', ['invoices.read']), 'invoices.list', 'invoice'),
  request(subject(DEV_ISSUER, ALICE, 'tenant', ['invoices.write'], [agent]), 'invoices.approve', 'invoice', { approval_id: 'apr-1' }),
  request(subject(DEV_ISSUER, ALICE, 'tenant', ['expenses.write'], [agent]), 'expenses.submit', 'expense_report'),
  request(subject(DEV_ISSUER, ALICE, 'tenant', ['payments.write']), 'payments.send', 'payment', { purpose: 'vendor_payment' }),
];

/** Each mutation sets one field to a value drawn from a small domain; undefined deletes it. */
const MUTATIONS: [path: string, values: unknown[]][] = [
  ['subject.authenticated', [false, 'yes']],
  ['subject.iss', [DEV_ISSUER, ACME_IDP, 'https://evil.example', undefined]],
  ['subject.sub', [ALICE, INVOICE_WORKER, EXPENSE_ASSISTANT, 'user:bob@acme.example', 'user:mallory@globex.example', undefined]],
  ['subject.aud', [[PRODUCTION], [STAGING], [STAGING, PRODUCTION], [], ['https://other.example']]],
  ['subject.scopes', [['invoices.read'], ['invoices.write'], ['expenses.write', 'invoices.read'], ['payments.write'], []]],
  ['subject.claims.tenant', ['acme', 'globex', 42, undefined]],
  ['subject.claims.https://acme.example/claims/tenant', ['acme', 'globex', undefined]],
  ['subject.token.age_s', [30, 299, 301, 4000, undefined]],
  ['subject.revoked', [{ revoked: true, reason: 'stolen', revocation_id: 'rev-1' }, { revoked: false }]],
  ['subject.act', [[], [agent], [{ client_id: EXPENSE_ASSISTANT }], [{ sub: INVOICE_WORKER }], [{}], [agent, agent], [agent, agent, agent]]],
  ['action.name', ['invoices.read', 'invoices.list', 'invoices.approve', 'invoices.export', 'payments.send', 'expenses.read', 'expenses.submit', 'nope', 7, undefined]],
  ['resource.type', ['invoice', 'payment', 'expense_report', 'other', undefined]],
  ['resource.id', ['inv-1', 'inv-2', undefined]],
  ['resource.properties.tenant', ['acme', 'globex', '', undefined]],
  ['context.environment', ['production', 'staging', '', undefined]],
  ['context.now', [NOW, NOW + 2000, undefined]],
  ['context.purpose', ['vendor_payment', 'payroll', 'marketing', undefined]],
  ['context.approval_id', ['apr-1', 'apr-2', 'apr-bound', 'apr-other-actor', 'apr-other-tenant', 'apr-other', undefined]],
  ['data_status.entitlements', [{ stale: false }, { stale: true }, {}, undefined]],
  ['data_status.approvals', [{ stale: false }, { stale: true }, undefined]],
  // The OAuth client: an agent other than the subject is its current actor unless act names it.
  ['subject.client_id', [EXPENSE_ASSISTANT, 'agent:travel-planner', 'acme-finance-portal', ALICE, undefined]],
  ['subject.token.auth_age_s', [30, 400, undefined]],
  // The tenant an AuthZEN request was routed by.
  ['context.tenant', ['acme', 'globex', 7, undefined]],
];

/** mulberry32: a seeded generator, so a failure names a request that can be regenerated. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

function setPath(doc: Json, path: string, value: unknown): void {
  // Claim names may contain dots: the last key of a claims path is everything after "claims.".
  const claims = path.indexOf('.claims.');
  const keys = claims >= 0 ? [...path.slice(0, claims).split('.'), 'claims', path.slice(claims + '.claims.'.length)] : path.split('.');
  let node = doc;
  for (const key of keys.slice(0, -1)) node = node[key] ??= {};
  const last = keys.at(-1)!;
  if (value === undefined) delete node[last];
  else node[last] = structuredClone(value);
}

const byJson = (reasons: Reason[]) => reasons.map((reason) => JSON.stringify(reason, Object.keys(reason).sort())).sort();

let engine: PolicyEngine;

beforeAll(async () => {
  const out = join(tempDir(), 'authz-with-denials.tar.gz');
  buildBundle('rego/authz', out, { extraArgs: ['-e', 'authz/denials'] });
  const files = await readBundleArchive(new Uint8Array(readFileSync(out)));
  engine = await PolicyEngine.load(files.get('/policy.wasm') ?? files.get('policy.wasm')!);
  const policyData = JSON.parse(readFileSync('rego/authz/data.json', 'utf8')) as Json;
  // An action whose risk level the data does not define, so that risk_level_unknown is reachable.
  policyData.authz.actions['invoices.export'] = { scope: 'invoices.read', risk: 'critical', resource_types: ['invoice'] };
  const entitlements = JSON.parse(readFileSync('examples/entitlements.json', 'utf8')) as Json;
  // The examples entitle nobody to send payments (without it no request with a purpose is
  // allowed), and nobody to the test's action of unknown risk (which only its risk should deny).
  entitlements[ALICE].grants.push({ id: 'ent-alice-payments', actions: ['payments.send', 'invoices.export'], tenants: ['acme'] });
  engine.setData({
    ...policyData,
    entitlements,
    approvals: {
      'apr-1': { action: 'invoices.approve', subject: ALICE, resource_id: 'inv-1', approved_by: 'user:bob@acme.example', expires_at: NOW + 900 },
      'apr-2': { action: 'invoices.approve', subject: ALICE, approved_by: 'user:bob@acme.example', expires_at: NOW + 900 },
      // Approvals bound to the agent and tenant of the starting request, and to others.
      'apr-bound': { action: 'invoices.approve', subject: ALICE, actor: EXPENSE_ASSISTANT, tenant: 'acme', approved_by: 'user:bob@acme.example', expires_at: NOW + 900 },
      'apr-other-actor': { action: 'invoices.approve', subject: ALICE, actor: INVOICE_WORKER, approved_by: 'user:bob@acme.example', expires_at: NOW + 900 },
      'apr-other-tenant': { action: 'invoices.approve', subject: ALICE, tenant: 'globex', approved_by: 'user:bob@acme.example', expires_at: NOW + 900 },
    },
  });
});

function decide(input: Json): { allow: boolean; reasons: Reason[]; denials: Reason[] } {
  const json = JSON.stringify(input);
  const decision = engine.evaluate('authz/decision', json);
  if (!decision.ok) throw new Error(`${decision.code}: ${decision.message} for ${json}`);
  const denials = engine.evaluateRaw('authz/denials', json);
  if (!denials.ok) throw new Error(`${denials.code}: ${denials.message} for ${json}`);
  return { allow: decision.result.allow, reasons: decision.result.reasons, denials: singleResult(denials.resultSet) as Reason[] };
}

describe('default policy: allow and denials agree', () => {
  it('allows the starting requests', () => {
    for (const input of ALLOWED) expect(decide(input), JSON.stringify(input)).toMatchObject({ allow: true, denials: [] });
  });

  it('allows exactly when no check fails, and a deny gives every failed check as its reasons', () => {
    const next = random(20261122);
    const seen = new Map<string, number>();
    let allowed = 0;
    for (let i = 0; i < GENERATED; i++) {
      const input = structuredClone(ALLOWED[Math.floor(next() * ALLOWED.length)]!);
      const mutations = 1 + Math.floor(next() * 3);
      for (let m = 0; m < mutations; m++) {
        const [path, values] = MUTATIONS[Math.floor(next() * MUTATIONS.length)]!;
        setPath(input, path, values[Math.floor(next() * values.length)]);
      }
      const { allow, reasons, denials } = decide(input);
      const context = `request ${i}: ${JSON.stringify(input)}`;
      expect(allow, context).toBe(denials.length === 0);
      if (allow) {
        allowed++;
        expect(reasons.filter((reason) => !GRANT_CODES.has(reason.code)), context).toEqual([]);
      } else {
        // denials is a set, in WebAssembly's hash order; the decision sorts it.
        expect(byJson(reasons), context).toEqual(byJson(denials));
      }
      for (const reason of denials) seen.set(reason.code, (seen.get(reason.code) ?? 0) + 1);
    }
    // The generator must exercise both outcomes and every check, or the agreement above proves little.
    expect(allowed).toBeGreaterThan(GENERATED * 0.05);
    expect(DENIAL_CODES.filter((code) => !seen.has(code))).toEqual([]);
  });
});
