import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import { subjectFromToken, type PolicySubject } from '../../src/tokens/subject.ts';
import { tokenFingerprint, type VerifiedToken } from '../../src/tokens/verify.ts';

/** The issuer, audience and tenant claim the default policy's data (rego/authz/data.json) trusts. */
export const BENCH_ISSUER = 'https://idp.acme.example';
export const BENCH_AUDIENCE = 'https://api.example.com';
const TENANT_CLAIM = 'https://acme.example/claims/tenant';
const KID = 'bench-es256';
/** Tokens stay valid (and young enough) for the longest soak run. */
export const TOKEN_LIFETIME_S = 4 * 3600;

/** What each tenth request is: mostly grants, and one of each common denial. */
const KINDS = ['allow', 'allow', 'allow', 'allow', 'allow', 'allow', 'allow', 'no_entitlement', 'tenant_mismatch', 'scope_missing'] as const;
const ACTIONS = [
  { name: 'invoices.read', scope: 'invoices.read', type: 'invoice' },
  { name: 'invoices.list', scope: 'invoices.read', type: 'invoice' },
  { name: 'expenses.read', scope: 'expenses.read', type: 'expense_report' },
] as const;

export interface BenchCase {
  kind: (typeof KINDS)[number];
  token: string;
  action: { name: string };
  resource: { type: string; id: string; properties: { tenant: string } };
  context: { environment: string };
  /** input.subject as Arbiter builds it from this token: the "claims already verified" workload. */
  subject: PolicySubject;
}

export interface Workload {
  jwks: { keys: JWK[] };
  cases: BenchCase[];
  /** data.entitlements: the example document plus one subject per granted case. */
  entitlements: Record<string, unknown>;
  /** When the tokens were issued (seconds); verified inputs carry it as context.now. */
  issuedAt: number;
}

/** An ES256 key, `count` distinct signed tokens (distinct sub and jti) and the live data that judges them. */
export async function createWorkload(count: number): Promise<Workload> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const jwks = { keys: [{ ...(await exportJWK(publicKey)), kid: KID, alg: 'ES256', use: 'sig' }] };
  const entitlements = JSON.parse(readFileSync('examples/entitlements.json', 'utf8')) as Record<string, unknown>;
  const issuedAt = Math.floor(Date.now() / 1000);
  const cases: BenchCase[] = [];
  for (let i = 0; i < count; i++) {
    const kind = KINDS[i % KINDS.length]!;
    const action = ACTIONS[i % ACTIONS.length]!;
    const sub = `user:bench-${String(i).padStart(5, '0')}@acme.example`;
    if (kind !== 'no_entitlement') {
      entitlements[sub] = {
        description: `Benchmark subject ${i}.`,
        grants: [
          { id: `ent-bench-${i}-invoices`, actions: ['invoices.read', 'invoices.list'], tenants: ['acme'] },
          { id: `ent-bench-${i}-expenses`, actions: ['expenses.read'], tenants: ['acme'] },
        ],
      };
    }
    const scopes = kind === 'scope_missing' ? ['profile'] : [action.scope, 'profile'];
    const token = await new SignJWT({
      iss: BENCH_ISSUER,
      sub,
      aud: BENCH_AUDIENCE,
      client_id: 'acme-finance-portal',
      jti: randomUUID(),
      scope: scopes.join(' '),
      [TENANT_CLAIM]: 'acme',
      email: sub.slice('user:'.length),
      roles: ['accounts_payable'],
      iat: issuedAt,
      exp: issuedAt + TOKEN_LIFETIME_S,
    })
      .setProtectedHeader({ alg: 'ES256', kid: KID, typ: 'at+jwt' })
      .sign(privateKey);
    cases.push({
      kind,
      token,
      action: { name: action.name },
      resource: { type: action.type, id: `${action.type}-${i}`, properties: { tenant: kind === 'tenant_mismatch' ? 'globex' : 'acme' } },
      context: { environment: 'production' },
      subject: verifiedSubject(token, issuedAt),
    });
  }
  return { jwks, cases, entitlements, issuedAt };
}

/** The subject Arbiter's pipeline would build after verifying the token, built by the same function. */
function verifiedSubject(token: string, now: number): PolicySubject {
  const verified = {
    ok: true,
    payload: decodeJwt(token),
    header: decodeProtectedHeader(token),
    // What subjectFromToken reads of the issuer: the audiences Arbiter accepts from it (bench/lib/systems.ts).
    issuer: { config: { audiences: [BENCH_AUDIENCE] } } as unknown as VerifiedToken['issuer'],
    fingerprint: tokenFingerprint(token),
    keyGeneration: 0,
  } satisfies VerifiedToken;
  return subjectFromToken(verified, now);
}

/** Request bodies of one workload for one system, pre-serialised so the load generator only sends bytes. */
export interface Target {
  path: string;
  bodies: string[];
}

export type WorkloadName = 'verified_claims' | 'jwt';
export type SystemName = 'arbiter' | 'opa';

/** Workload (a): both systems get the same OPA data API request with the verified subject in the input. */
export function verifiedClaimsInput(c: BenchCase, now: number) {
  return {
    subject: c.subject,
    action: c.action,
    resource: c.resource,
    context: { ...c.context, now, request_id: c.subject.token!.fingerprint.slice(0, 16) },
    data_status: { entitlements: { source: 'bench', updated_at: now, age_s: 0, stale: false } },
  };
}

export function targetFor(workload: Workload, name: WorkloadName, system: SystemName): Target {
  const { cases, issuedAt } = workload;
  if (name === 'verified_claims') {
    return { path: '/v1/data/authz/decision', bodies: cases.map((c) => JSON.stringify({ input: verifiedClaimsInput(c, issuedAt) })) };
  }
  if (system === 'arbiter') {
    return {
      path: '/v1/decide',
      bodies: cases.map((c) => JSON.stringify({ token: c.token, action: c.action.name, resource: c.resource, context: c.context })),
    };
  }
  return {
    path: '/v1/data/bench/decision',
    bodies: cases.map((c) => JSON.stringify({ input: { token: c.token, action: c.action, resource: c.resource, context: c.context } })),
  };
}
