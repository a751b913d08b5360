import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Logger } from 'pino';
import { hashValue } from '../src/decisions/mask.ts';
import { newDecisionId } from '../src/decisions/record.ts';
import { decision as recordOf } from './support/decisions.ts';
import { STRICT_OUTAGE_AFTER_MS } from '../src/decisions/store.ts';
import { decisionPageSchema, replayReportSchema, storedDecisionSchema, verifyReportSchema } from '../src/server/openapi/schemas.ts';
import type { Arbiter } from '../src/server/start.ts';
import { capturingLogger, postJson, startTestArbiter, tempDir } from './support/arbiter.ts';
import { build } from './support/bundle-sources.ts';
import { TestIssuer } from './support/issuer.ts';
import { whileLocked } from './support/sqlite-lock.ts';
import { waitFor } from './support/wait.ts';

/** Response bodies are asserted field by field, so they stay loosely typed. */
type Json = Record<string, any>;

const run = promisify(execFile);

let admins: TestIssuer;
let idp: TestIssuer;
let partner: TestIssuer;
let arbiter: Arbiter;
let disabled: Arbiter;
let dir: string;
let logPath: string;
let shippedPath: string;
let readToken: string;
let processLog: Record<string, any>[];
const archives: Record<string, Buffer> = {};

const AUDIENCE = 'https://api.example.com';
const issuerConfig = (issuer: TestIssuer) => ({ issuer: issuer.issuer, jwks_uri: issuer.jwksUri, audiences: [AUDIENCE], algorithms: ['ES256'] });
const adminConfig = () => ({ admin: { issuers: [{ ...issuerConfig(admins), audiences: ['arbiter-admin'] }] } });

/**
 * The `audit` test bundle. r1 allows authenticated reads and denies anything else; r2 denies
 * everything: replaying an r1 decision against r2 must show the difference.
 */
const AUDIT_POLICIES = {
  r1: `package audit

# METADATA
# entrypoint: true
decision := {"allow": true, "reasons": [{"code": "granted"}], "obligations": []} if {
	input.subject.authenticated
	input.action.name == "read"
} else := {"allow": false, "reasons": [{"code": "denied"}], "obligations": []}
`,
  r2: `package audit

# METADATA
# entrypoint: true
decision := {"allow": false, "reasons": [{"code": "frozen"}], "obligations": []}

# METADATA
# entrypoint: true
issuance := {"allow": true, "reasons": [{"code": "granted"}], "obligations": []}
`,
};

async function call(arbiterUnderTest: Arbiter, method: string, path: string, options: { token?: string | null; body?: object } = {}) {
  const token = options.token === undefined ? readToken : options.token;
  const response = await fetch(`${arbiterUnderTest.url}${path}`, {
    method,
    headers: {
      ...(token !== null && { authorization: `Bearer ${token}` }),
      ...(options.body !== undefined && { 'content-type': 'application/json' }),
    },
    ...(options.body !== undefined && { body: JSON.stringify(options.body) }),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, text, body: text && /^application\/(problem\+)?json/.test(response.headers.get('content-type') ?? '') ? (JSON.parse(text) as Json) : undefined };
}

const get = (path: string, token?: string | null) => call(arbiter, 'GET', path, { token });

interface Made {
  id: string;
  iss: string;
  sub: string;
  client_id: string;
  action: string;
  resource_type: string;
  resource_id: string;
  allow: boolean;
  reason: string;
}

/** One decision by `who` through /v1/decide on the audit bundle; returns what the test expects to find recorded. */
async function decide(who: { issuer: TestIssuer; sub: string; client_id: string }, action: string, resource: { type: string; id: string }, context: Json = {}): Promise<Made> {
  const token = await who.issuer.sign({ sub: who.sub, client_id: who.client_id, scope: 'read' });
  const res = await postJson(`${arbiter.url}/v1/decide`, { token, action, resource, context, policy: 'audit' });
  expect(res.status).toBe(200);
  return {
    id: res.body!.decision_id as string,
    iss: who.issuer.issuer,
    sub: who.sub,
    client_id: who.client_id,
    action,
    resource_type: resource.type,
    resource_id: resource.id,
    allow: res.body!.allow as boolean,
    reason: res.body!.reasons[0].code as string,
  };
}

/** Every page of GET /v1/decisions for `params`, as decision ids in the order served. */
async function allIds(params: Record<string, string>, limit = 1000): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | null = null;
  do {
    const query = new URLSearchParams({ ...params, limit: String(limit), ...(cursor !== null && { cursor }) });
    const page = await get(`/v1/decisions?${query}`);
    expect(page.status, page.text).toBe(200);
    ids.push(...(page.body!.decisions as Json[]).map((d) => d.decision_id as string));
    cursor = page.body!.next_cursor as string | null;
  } while (cursor !== null);
  return ids;
}

function storedBodies(): string[] {
  const db = new DatabaseSync(logPath, { readOnly: true });
  try {
    return (db.prepare('SELECT body FROM decisions').all() as { body: string }[]).map((row) => row.body);
  } finally {
    db.close();
  }
}

function cli(...args: string[]) {
  return run(process.execPath, ['src/cli/main.ts', 'decisions', ...args, '--url', arbiter.url, '--token', readToken]).then(
    (result) => ({ code: 0, ...result }),
    (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
  );
}

beforeAll(async () => {
  [admins, idp, partner] = await Promise.all([
    TestIssuer.create('https://admins.test.example'),
    TestIssuer.create('https://idp.test.example'),
    TestIssuer.create('https://partner.test.example'),
  ]);
  await Promise.all([admins.serve(), idp.serve(), partner.serve()]);
  dir = tempDir('arbiter-decisions-http-');
  for (const [revision, policy] of Object.entries(AUDIT_POLICIES)) {
    const src = join(dir, `audit-${revision}`);
    mkdirSync(src);
    writeFileSync(join(src, 'policy.rego'), policy);
    writeFileSync(join(src, '.manifest'), JSON.stringify({ roots: ['audit'] }));
    archives[revision] = build(src, join(dir, `audit-${revision}.tar.gz`), revision);
  }
  logPath = join(dir, 'decisions.db');
  shippedPath = join(dir, 'shipped.ndjson');
  const captured = capturingLogger();
  processLog = captured.lines;
  arbiter = await startTestArbiter(
    {
      ...adminConfig(),
      issuers: [issuerConfig(idp), issuerConfig(partner)],
      opa_compat: { enabled: true },
      decision_log: {
        path: logPath,
        busy_timeout_ms: 200,
        mask: [
          { pointer: '/input/context/client_ip', mode: 'erase' },
          { pointer: '/input/subject/sub', mode: 'hash' },
          // The verified payload is kept under claims too: masking a claim means masking both.
          { pointer: '/input/subject/claims/sub', mode: 'hash' },
        ],
        transport: { target: 'pino/file', options: { destination: shippedPath } },
      },
    },
    { logger: captured.logger },
  );
  disabled = await startTestArbiter({ ...adminConfig(), decision_log: { enabled: false } });
  readToken = await admins.sign({ sub: 'auditor@example', aud: 'arbiter-admin', scope: 'arbiter.decisions.read' });
  const pushToken = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.write' });
  const pushed = await fetch(`${arbiter.url}/v1/bundles/audit`, { method: 'PUT', headers: { authorization: `Bearer ${pushToken}`, 'content-type': 'application/gzip' }, body: new Uint8Array(archives.r1!) });
  expect(pushed.status).toBe(201);
}, 60_000);

afterAll(async () => {
  await arbiter?.close();
  await disabled?.close();
  await Promise.all([admins?.close(), idp?.close(), partner?.close()]);
});

const alice = () => ({ issuer: idp, sub: 'user:alice', client_id: 'web' });
const bob = () => ({ issuer: idp, sub: 'user:bob', client_id: 'cli' });
const carol = () => ({ issuer: partner, sub: 'user:carol', client_id: 'web' });

describe('admin authorization', () => {
  it('401 without a token, 403 without arbiter.decisions.read', async () => {
    const none = await get('/v1/decisions', null);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toContain('scope="arbiter.decisions.read"');
    const bundlesOnly = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.read' });
    for (const path of ['/v1/decisions', '/v1/decisions/verify', '/v1/decisions/export', '/v1/decisions/0190b8c4-0000-7000-8000-000000000000']) {
      expect((await get(path, bundlesOnly)).body).toMatchObject({ status: 403, code: 'forbidden' });
    }
    expect((await call(arbiter, 'POST', '/v1/decisions/x/replay', { token: null, body: {} })).status).toBe(401);
  });

  it('answers 503 decision_log_disabled when the log is off (after authentication)', async () => {
    expect((await call(disabled, 'GET', '/v1/decisions', { token: null })).status).toBe(401);
    for (const path of ['/v1/decisions', '/v1/decisions/verify', '/v1/decisions/export', '/v1/decisions/some-id']) {
      expect((await call(disabled, 'GET', path)).body).toMatchObject({ status: 503, code: 'decision_log_disabled' });
    }
    expect((await call(disabled, 'POST', '/v1/decisions/some-id/replay', { body: {} })).body).toMatchObject({ status: 503, code: 'decision_log_disabled' });
  });
});

describe('recording', () => {
  it('stores every one of many concurrent decisions, retrievable by id', async () => {
    const made = await Promise.all(Array.from({ length: 40 }, (_, i) => decide(i % 2 ? alice() : bob(), i % 3 ? 'read' : 'write', { type: 'doc', id: `d-${i}` })));
    expect(new Set(made.map((m) => m.id)).size).toBe(40);
    for (const m of made) {
      const res = await get(`/v1/decisions/${m.id}`);
      expect(res.status).toBe(200);
      expect(storedDecisionSchema.safeParse(res.body).success).toBe(true);
      expect(res.body).toMatchObject({
        decision_id: m.id,
        endpoint: '/v1/decide',
        rule: 'decision',
        bundle: 'audit',
        revision: 'r1',
        result: { allow: m.allow, reasons: [{ code: m.reason }] },
        input: { action: { name: m.action }, resource: { type: 'doc', id: m.resource_id } },
      });
    }
  });

  it('finds a decision by its id in capitals too: a UUID is the same whatever the case of its hex digits', async () => {
    const made = await decide(alice(), 'read', { type: 'doc', id: 'upper' });
    const upper = made.id.toUpperCase();
    const res = await get(`/v1/decisions/${upper}`);
    expect(res.status, res.text).toBe(200);
    expect(res.body).toMatchObject({ decision_id: made.id });
    const replayed = await call(arbiter, 'POST', `/v1/decisions/${upper}/replay`, { body: {} });
    expect(replayed.status, replayed.text).toBe(200);
    expect(replayed.body).toMatchObject({ decision_id: made.id, same: true });
  });

  it('keeps the token fingerprint and the claim names, never the raw token', async () => {
    const token = await idp.sign({ sub: 'user:dave', client_id: 'web', scope: 'read', department: 'audit' });
    const res = await postJson(`${arbiter.url}/v1/decide`, { token, action: 'read', resource: { type: 'doc', id: 'x' }, policy: 'audit' });
    const record = (await get(`/v1/decisions/${res.body!.decision_id}`)).body!;
    expect(record.input.subject.token.fingerprint).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(record.claim_names).toEqual(expect.arrayContaining(['iss', 'sub', 'client_id', 'scope', 'department']));
    expect(JSON.stringify(record)).not.toContain(token);
    // Nor any part of it: the signature is what would let someone replay the token.
    const signature = token.split('.')[2]!;
    const body = storedBodies().find((text) => text.includes(res.body!.decision_id as string))!;
    expect(body).toContain(record.input.subject.token.fingerprint);
    expect(body).not.toContain(signature);
    expect(storedBodies().some((text) => text.includes(token))).toBe(false);
  });

  it('records `__proto__` and `constructor` members of the request as sent, like any other key', async () => {
    // JSON.parse makes them own members; a copy by assignment would drop `__proto__` (or set a prototype).
    const sent = '{"action":"read","resource":{"type":"doc","id":"proto","properties":{"__proto__":{"tenant":"other"},"constructor":"c"}},"context":{"__proto__":{"purpose":"x"},"client_ip":"203.0.113.9"},"policy":"audit"}';
    const decided = await postJson(`${arbiter.url}/v1/decide`, sent);
    expect(decided.status).toBe(200);
    const record = (await get(`/v1/decisions/${decided.body!.decision_id}`)).body!;
    expect(Object.keys(record.input.resource.properties)).toEqual(['__proto__', 'constructor']);
    expect(Object.getOwnPropertyDescriptor(record.input.resource.properties, '__proto__')?.value).toEqual({ tenant: 'other' });
    expect(Object.getOwnPropertyDescriptor(record.input.context, '__proto__')?.value).toEqual({ purpose: 'x' });

    const evaluated = await postJson(`${arbiter.url}/v1/data/audit/decision`, '{"input":{"__proto__":{"a":1},"action":{"name":"read"}}}');
    expect(evaluated.status).toBe(200);
    const raw = (await get(`/v1/decisions/${evaluated.body!.decision_id}`)).body!;
    expect(Object.keys(raw.input).sort()).toEqual(['__proto__', 'action']);
    expect((await get('/v1/decisions/verify')).body).toMatchObject({ ok: true });
  });

  it('masks what decision_log.mask says: client_ip erased, sub hashed', async () => {
    const m = await decide(alice(), 'read', { type: 'doc', id: 'masked' }, { client_ip: '203.0.113.9', purpose: 'review' });
    const record = (await get(`/v1/decisions/${m.id}`)).body!;
    expect(record.input.context).toMatchObject({ purpose: 'review' });
    expect(record.input.context).not.toHaveProperty('client_ip');
    expect(record.input.subject.sub).toBe(hashValue('user:alice'));
    expect(record.input.subject.claims.sub).toBe(hashValue('user:alice'));
    const body = storedBodies().find((text) => text.includes(m.id))!;
    expect(body).not.toContain('203.0.113.9');
    expect(body).not.toContain('user:alice');
    // The process log line of the same decision is masked by the same rules.
    const line = processLog.find((entry) => entry.decision_id === m.id)!;
    expect(line.subject).toMatchObject({ iss: idp.issuer, sub: hashValue('user:alice') });
    expect(JSON.stringify(line)).not.toContain('user:alice');
  });

  it('logs no masked sub for a decision whose record has none', async () => {
    const res = await postJson(`${arbiter.url}/v1/decide`, { action: 'read', resource: { type: 'doc', id: 'anonymous' }, policy: 'audit' });
    const record = (await get(`/v1/decisions/${res.body!.decision_id}`)).body!;
    expect(record.input.subject).not.toHaveProperty('sub');
    // A hash of nothing would read as a subject that every anonymous decision shares.
    const line = processLog.find((entry) => entry.decision_id === res.body!.decision_id)!;
    expect(line.subject).not.toHaveProperty('sub');
  });

  it('ships committed records to the pino transport, and keeps them out of the process log', async () => {
    const made = await Promise.all([decide(alice(), 'read', { type: 'doc', id: 's1' }), decide(bob(), 'write', { type: 'doc', id: 's2' })]);
    let shipped: Json[] = [];
    for (let i = 0; i < 100 && !made.every((m) => shipped.some((s) => s.decision_id === m.id)); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      shipped = readFileSync(shippedPath, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line) as Json);
    }
    for (const m of made) {
      const line = shipped.find((s) => s.decision_id === m.id);
      expect(line).toMatchObject({ decision_id: m.id, hash: expect.stringMatching(/^[0-9a-f]{64}$/), result: { allow: m.allow } });
      // Shipped records are masked like stored ones.
      expect(line!.input.subject.sub).toBe(hashValue(m.sub));
    }
    // The transport carries records only, and the process log has a line per decision, never the record.
    expect(shipped.every((s) => s.msg === undefined && s.seq !== undefined)).toBe(true);
    const processLines = processLog.filter((line) => made.some((m) => line.decision_id === m.id));
    expect(processLines.map((line) => line.msg)).toEqual(['decision', 'decision']);
    expect(processLog.some((line) => line.hash !== undefined || line.prev_hash !== undefined || line.input !== undefined)).toBe(false);
  });
});

describe('GET /v1/decisions', () => {
  let made: Made[];
  let timestamps: Map<string, number>;
  let since: string;

  beforeAll(async () => {
    since = String(Date.now());
    made = [];
    // Sequential in small groups, so timestamps spread over several milliseconds.
    const people = [alice(), bob(), carol()];
    for (let i = 0; i < 18; i += 3) {
      made.push(
        ...(await Promise.all(
          people.map((who, j) => decide(who, (i + j) % 4 === 0 ? 'write' : 'read', { type: j === 2 ? 'photo' : 'doc', id: `q-${(i + j) % 5}` })),
        )),
      );
      await new Promise((resolve) => setTimeout(resolve, 3));
    }
    timestamps = new Map();
    for (const m of made) timestamps.set(m.id, (await get(`/v1/decisions/${m.id}`)).body!.timestamp as number);
  });

  const expectIds = async (params: Record<string, string>, predicate: (m: Made) => boolean) => {
    const expected = made.filter(predicate).map((m) => m.id).sort();
    expect(expected.length, JSON.stringify(params)).toBeGreaterThan(0);
    expect((await allIds({ from: since, ...params })).sort(), JSON.stringify(params)).toEqual(expected);
  };

  it('filters by each field', async () => {
    await expectIds({}, () => true);
    await expectIds({ iss: partner.issuer }, (m) => m.iss === partner.issuer);
    // The subject is masked by hashing: it is found by its hash, not by its value.
    await expectIds({ sub: hashValue('user:bob') }, (m) => m.sub === 'user:bob');
    expect(await allIds({ from: since, sub: 'user:bob' })).toEqual([]);
    await expectIds({ client_id: 'cli' }, (m) => m.client_id === 'cli');
    await expectIds({ action: 'write' }, (m) => m.action === 'write');
    await expectIds({ resource_type: 'photo' }, (m) => m.resource_type === 'photo');
    await expectIds({ resource_id: 'q-3' }, (m) => m.resource_id === 'q-3');
    await expectIds({ allow: 'true' }, (m) => m.allow);
    await expectIds({ allow: 'false' }, (m) => !m.allow);
    await expectIds({ reason: 'denied' }, (m) => m.reason === 'denied');
    await expectIds({ bundle: 'audit', revision: 'r1' }, () => true);
    expect(await allIds({ from: since, revision: 'r9' })).toEqual([]);
    await expectIds({ action: 'read', resource_type: 'doc', client_id: 'web' }, (m) => m.action === 'read' && m.resource_type === 'doc' && m.client_id === 'web');
  });

  it('filters by time range, from inclusive and to exclusive, in epoch ms or RFC 3339', async () => {
    const sorted = [...new Set(timestamps.values())].sort((a, b) => a - b);
    expect(sorted.length).toBeGreaterThan(2);
    const [from, to] = [sorted[1]!, sorted.at(-1)!];
    const inRange = (m: Made) => timestamps.get(m.id)! >= from && timestamps.get(m.id)! < to;
    await expectIds({ from: String(from), to: String(to) }, inRange);
    await expectIds({ from: new Date(from).toISOString(), to: new Date(to).toISOString() }, inRange);
    await expectIds({ from: new Date(from).toISOString().replace('Z', '+00:00') }, (m) => timestamps.get(m.id)! >= from);
    // Finer than a millisecond: a decision at `to` ms is before to + 0.1 ms, one at `from` ms is not at or after from + 0.1 ms.
    const finer = (ms: number) => new Date(ms).toISOString().replace('Z', '1Z');
    expect(finer(to)).toMatch(/\.\d{4}Z$/);
    await expectIds({ from: String(from), to: finer(to) }, (m) => timestamps.get(m.id)! >= from && timestamps.get(m.id)! <= to);
    await expectIds({ from: finer(from), to: String(to) }, (m) => timestamps.get(m.id)! > from && timestamps.get(m.id)! < to);
    await expectIds({ from: new Date(from).toISOString().replace('Z', '000Z'), to: new Date(to).toISOString().replace('Z', '000000Z') }, inRange);
  });

  it('answers newest first and names a bad parameter with 400', async () => {
    const page = await get(`/v1/decisions?from=${since}&limit=5`);
    expect(decisionPageSchema.safeParse(page.body).success).toBe(true);
    const seen = (page.body!.decisions as Json[]).map((d) => [d.timestamp, d.seq] as [number, number]);
    expect(seen).toEqual([...seen].sort((a, b) => b[0] - a[0] || b[1] - a[1]));

    for (const [query, parameter] of [
      ['allow=maybe', 'allow'],
      ['from=yesterday', 'from'],
      ['to=2025-01-01', 'to'],
      ['from=2025-02-30T00:00:00Z', 'from'],
      ['to=2025-13-01T00:00:00Z', 'to'],
      ['from=2025-01-31T24:00:00Z', 'from'],
      // The bound a limit broke, not a claim that 5000 is no whole number.
      ['limit=0', 'limit: must be at least 1'],
      ['limit=5000', 'limit: must be at most 1000'],
      ['limit=5.5', 'limit: must be a whole number'],
      ['colour=red', 'colour'],
      // A + left unencoded in a URL arrives as a space: the answer says so.
      ['from=2025-01-31T00:00:00+05:30', 'from: must be an RFC 3339 date-time with offset or epoch milliseconds (a + in a URL query is a space: write it %2B)'],
      // A window given backwards is a typo, not a question whose answer is nothing.
      ['from=2025-02-01T00:00:00Z&to=2025-01-01T00:00:00Z', 'from: must not be after to'],
      ['from=1738368000000&to=1738281600000', 'from: must not be after to'],
    ] as const) {
      const res = await get(`/v1/decisions?${query}`);
      expect(res.status, query).toBe(400);
      expect(res.body, query).toMatchObject({ code: 'decision_query_invalid', detail: expect.stringContaining(parameter) });
    }
    // A filter given twice is ambiguous (both? either?): refused, never half applied.
    for (const query of ['allow=false&allow=true', 'reason=denied&reason=granted', 'limit=5&limit=500']) {
      for (const path of ['/v1/decisions', '/v1/decisions/export']) {
        if (path.endsWith('export') && query.startsWith('limit')) continue;
        const res = await get(`${path}?${query}`);
        expect(res.status, `${path}?${query}`).toBe(400);
        expect(res.body, query).toMatchObject({ code: 'decision_query_invalid', detail: expect.stringContaining(query.split('=')[0]!) });
      }
    }
    const backwards = await get('/v1/decisions/export?from=2025-02-01T00:00:00Z&to=2025-01-01T00:00:00Z');
    expect(backwards.status).toBe(400);
    expect(backwards.body).toMatchObject({ code: 'decision_query_invalid', detail: expect.stringContaining('from: must not be after to') });
    // An empty window (to is exclusive) is no typo: nothing matches it.
    expect((await get('/v1/decisions?from=1738281600000&to=1738281600000')).body).toEqual({ decisions: [], next_cursor: null });
    expect((await get('/v1/decisions?cursor=bm9wZQ')).body).toMatchObject({ status: 400, code: 'decision_cursor_invalid' });
    expect((await get('/v1/decisions/0190b8c4-0000-7000-8000-000000000000')).body).toMatchObject({ status: 404, code: 'decision_not_found' });
  });

  it('pages without duplicates or gaps while decisions keep being written', async () => {
    const before = await allIds({ from: since });
    const paged: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const query = new URLSearchParams({ from: since, limit: '4', ...(cursor !== null && { cursor }) });
      const page = await get(`/v1/decisions?${query}`);
      paged.push(...(page.body!.decisions as Json[]).map((d) => d.decision_id as string));
      cursor = page.body!.next_cursor as string | null;
      pages += 1;
      // New decisions between pages: newer than every cursor, so they never enter this walk.
      await Promise.all([decide(alice(), 'read', { type: 'doc', id: `p-${pages}` }), decide(carol(), 'write', { type: 'doc', id: `p-${pages}` })]);
    } while (cursor !== null);
    expect(pages).toBeGreaterThan(3);
    expect(new Set(paged).size).toBe(paged.length);
    expect(paged).toEqual(before);
  });

  it('exports the same decisions as NDJSON, streamed', async () => {
    const params = new URLSearchParams({ from: since, allow: 'false' });
    const res = await get(`/v1/decisions/export?${params}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/x-ndjson');
    const lines = res.text.split('\n');
    expect(lines.pop()).toBe('');
    const exported = lines.map((line) => JSON.parse(line) as Json);
    expect(exported.every((d) => d.result.allow === false)).toBe(true);
    expect(exported.map((d) => d.decision_id)).toEqual(await allIds(Object.fromEntries(params), 3));
    expect((await get('/v1/decisions/export?allow=no')).body).toMatchObject({ status: 400, code: 'decision_query_invalid' });
  });
});

describe('filters by the gateway that asked (caller) and the endpoint that answered', () => {
  const KEYS = { 'kong-eu': 'kong-eu-gateway-secret', 'envoy-us': 'envoy-us-gateway-secret' } as const;
  type Caller = keyof typeof KEYS;
  let gated: Arbiter;
  /** What each request sent was: who sent it and which endpoint answered; the records must say the same. */
  const sent: { caller: Caller; endpoint: string }[] = [];
  let records: Json[];

  const gatedGet = (path: string) => call(gated, 'GET', path);
  const gatedCli = (...args: string[]) =>
    run(process.execPath, ['src/cli/main.ts', 'decisions', ...args, '--url', gated.url, '--token', readToken]).then(
      (result) => ({ code: 0, ...result }),
      (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
    );
  /** The ids a query on the gated server answers, every page of it. */
  const gatedIds = async (params: Record<string, string>) => {
    const page = await gatedGet(`/v1/decisions?${new URLSearchParams({ ...params, limit: '1000' })}`);
    expect(page.status, page.text).toBe(200);
    expect(page.body!.next_cursor).toBeNull();
    return (page.body!.decisions as Json[]).map((d) => d.decision_id as string);
  };
  const idsWhere = (predicate: (record: Json) => boolean) => records.filter(predicate).map((record) => record.decision_id as string);

  beforeAll(async () => {
    const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');
    gated = await startTestArbiter({
      ...adminConfig(),
      opa_compat: { enabled: true },
      authzen: { default_bundle: 'todo' },
      gateway: { authentication: 'api_key', api_keys: Object.entries(KEYS).map(([id, key]) => ({ id, sha256: sha256(key) })) },
    });
    const requests = {
      '/v1/decide': ['/v1/decide', { action: 'read', resource: { type: 'doc' }, policy: 'echo' }],
      '/v1/data': ['/v1/data/echo/decision', { input: { action: 'read' } }],
      '/access/v1/evaluation': ['/access/v1/evaluation', { subject: { type: 'user', id: 'u' }, action: { name: 'can_read_todos' }, resource: { type: 'todo', id: 't1' } }],
    } as const;
    // kong-eu asks every endpoint twice, envoy-us /v1/decide and the OPA data API once each.
    const plan: [Caller, keyof typeof requests][] = [
      ['kong-eu', '/v1/decide'], ['kong-eu', '/v1/decide'], ['kong-eu', '/v1/data'], ['kong-eu', '/v1/data'],
      ['kong-eu', '/access/v1/evaluation'], ['kong-eu', '/access/v1/evaluation'],
      ['envoy-us', '/v1/decide'], ['envoy-us', '/v1/data'],
    ];
    for (const [caller, endpoint] of plan) {
      const [path, body] = requests[endpoint];
      const res = await postJson(`${gated.url}${path}`, body, { 'x-api-key': KEYS[caller] });
      expect(res.status, `${caller} ${path}`).toBe(200);
      sent.push({ caller, endpoint });
    }
    const all = await gatedGet('/v1/decisions?limit=1000');
    records = all.body!.decisions as Json[];
    // Every request recorded once, under the key that asked and the endpoint that answered.
    expect(records.map((r) => `${r.caller} ${r.endpoint}`).sort()).toEqual(sent.map((s) => `${s.caller} ${s.endpoint}`).sort());
  }, 60_000);

  afterAll(async () => {
    await gated?.close();
  });

  it('GET /v1/decisions matches caller and endpoint exactly, alone, together and with other filters', async () => {
    for (const [params, predicate, count] of [
      [{ caller: 'kong-eu' }, (r: Json) => r.caller === 'kong-eu', 6],
      [{ caller: 'envoy-us' }, (r: Json) => r.caller === 'envoy-us', 2],
      [{ endpoint: '/v1/decide' }, (r: Json) => r.endpoint === '/v1/decide', 3],
      [{ endpoint: '/v1/data' }, (r: Json) => r.endpoint === '/v1/data', 3],
      [{ endpoint: '/access/v1/evaluation' }, (r: Json) => r.endpoint === '/access/v1/evaluation', 2],
      [{ caller: 'envoy-us', endpoint: '/v1/data' }, (r: Json) => r.caller === 'envoy-us' && r.endpoint === '/v1/data', 1],
      [{ caller: 'kong-eu', endpoint: '/v1/decide', from: '0', allow: 'true' }, (r: Json) => r.caller === 'kong-eu' && r.endpoint === '/v1/decide' && r.result.allow === true, 2],
    ] as const) {
      const expected = idsWhere(predicate);
      expect(expected, JSON.stringify(params)).toHaveLength(count);
      expect(await gatedIds(params), JSON.stringify(params)).toEqual(expected);
    }
    // Exact matches: no prefix, no case folding, no path below the endpoint.
    for (const params of [{ caller: 'kong' }, { caller: 'KONG-EU' }, { endpoint: '/v1/data/echo/decision' }, { endpoint: '/v1' }, { caller: 'envoy-us', endpoint: '/access/v1/evaluation' }] as Record<string, string>[]) {
      expect(await gatedIds(params), JSON.stringify(params)).toEqual([]);
    }
    // Given twice, refused as every filter is, never half applied.
    for (const query of ['caller=kong-eu&caller=envoy-us', 'endpoint=/v1/decide&endpoint=/v1/data']) {
      for (const path of ['/v1/decisions', '/v1/decisions/export']) {
        const res = await gatedGet(`${path}?${query}`);
        expect(res.status, `${path}?${query}`).toBe(400);
        expect(res.body, query).toMatchObject({ code: 'decision_query_invalid', detail: expect.stringContaining(query.split('=')[0]!) });
      }
    }
  });

  it('exports what the same filters match', async () => {
    const res = await gatedGet(`/v1/decisions/export?${new URLSearchParams({ caller: 'kong-eu', endpoint: '/v1/data' })}`);
    expect(res.status).toBe(200);
    const exported = res.text.trimEnd().split('\n').map((line) => JSON.parse(line) as Json);
    expect(exported.map((d) => d.decision_id)).toEqual(idsWhere((r) => r.caller === 'kong-eu' && r.endpoint === '/v1/data'));
    expect(exported).toHaveLength(2);
  });

  it('arbiter decisions query and export take --caller and --endpoint', async () => {
    const queried = await gatedCli('query', '--caller', 'envoy-us', '--json');
    expect(queried.code, queried.stderr).toBe(0);
    expect((JSON.parse(queried.stdout) as Json).decisions.map((d: Json) => d.decision_id)).toEqual(idsWhere((r) => r.caller === 'envoy-us'));
    const both = await gatedCli('query', '--caller', 'kong-eu', '--endpoint', '/access/v1/evaluation', '--json');
    expect((JSON.parse(both.stdout) as Json).decisions.map((d: Json) => d.decision_id)).toEqual(idsWhere((r) => r.caller === 'kong-eu' && r.endpoint === '/access/v1/evaluation'));

    const out = join(dir, 'by-endpoint.ndjson');
    const exported = await gatedCli('export', '--endpoint', '/v1/decide', '--out', out);
    expect(exported.code, exported.stderr).toBe(0);
    expect(readFileSync(out, 'utf8').trimEnd().split('\n').map((line) => (JSON.parse(line) as Json).decision_id)).toEqual(idsWhere((r) => r.endpoint === '/v1/decide'));
    expect(exported.stderr).toContain('exported 3 decisions');
    // Filters, so refused where filters are (replay reads none).
    const refused = await gatedCli('replay', '0190b8c4-0000-7000-8000-000000000000', '--caller', 'kong-eu');
    expect({ code: refused.code, stdout: refused.stdout }).toEqual({ code: 2, stdout: '' });
    expect(refused.stderr).toContain('decisions replay does not take --caller');
  });

  it('the OpenAPI document lists both on the query and the export', async () => {
    const spec = (await (await fetch(`${gated.url}/openapi.json`)).json()) as Json;
    for (const path of ['/v1/decisions', '/v1/decisions/export']) {
      const parameters = spec.paths[path].get.parameters as Json[];
      for (const name of ['caller', 'endpoint']) {
        expect(parameters.find((p) => p.name === name), `${path} ${name}`).toMatchObject({ in: 'query', required: false, schema: { type: 'string', description: expect.stringContaining('exact match') } });
      }
    }
  });
});

describe('audit_unavailable', () => {
  it('denies when the log cannot be written, and allows again once it can', async () => {
    const denied = await whileLocked(logPath, async () => {
      const token = await idp.sign({ sub: 'user:alice', scope: 'read' });
      return (await postJson(`${arbiter.url}/v1/decide`, { token, action: 'read', resource: { type: 'doc' }, policy: 'audit' })).body!;
    });
    expect(denied).toMatchObject({ allow: false, reasons: [{ code: 'audit_unavailable' }] });
    // The policy ran before the record failed: the answer names the data it read, as documented.
    expect(denied.data_version).toEqual(expect.any(Number));
    // It was not recorded: that is why it was denied.
    expect((await get(`/v1/decisions/${denied.decision_id}`)).status).toBe(404);
    const allowed = await decide(alice(), 'read', { type: 'doc', id: 'after-lock' });
    expect(allowed).toMatchObject({ allow: true, reason: 'granted' });
    expect((await get(`/v1/decisions/${allowed.id}`)).status).toBe(200);
  });
});

describe('a decision no bundle answers', () => {
  it('still records whose token it was, verified or refused, and still denies 503', async () => {
    const token = await idp.sign({ sub: 'user:dave', client_id: 'web', scope: 'read' });
    const res = await postJson(`${arbiter.url}/v1/decide`, { token, action: 'read', resource: { type: 'doc', id: 'outage' }, policy: 'absent' });
    expect(res).toMatchObject({ status: 503, body: { allow: false, reasons: [{ code: 'no_active_bundle' }], policy: null } });
    const record = (await get(`/v1/decisions/${res.body!.decision_id}`)).body!;
    expect(record).toMatchObject({ bundle: null, revision: null, data_version: null, result: { allow: false, reasons: [{ code: 'no_active_bundle' }] } });
    // The verified subject, masked as any: an auditor finds whose requests the outage denied.
    expect(record.input.subject).toMatchObject({ authenticated: true, iss: idp.issuer, sub: hashValue('user:dave'), client_id: 'web', token: { fingerprint: expect.any(String) } });
    expect(record.claim_names).toEqual(expect.arrayContaining(['sub', 'client_id']));
    expect(await allIds({ iss: idp.issuer, resource_id: 'outage' })).toEqual([res.body!.decision_id]);
    expect(JSON.stringify(record)).not.toContain(token);

    const now = Math.floor(Date.now() / 1000);
    const expired = await idp.sign({ sub: 'user:dave' }, { iat: now - 300, exp: now - 100 });
    const refused = await postJson(`${arbiter.url}/v1/decide`, { token: expired, action: 'read', resource: { type: 'doc', id: 'outage' }, policy: 'absent' });
    expect(refused).toMatchObject({ status: 503, body: { allow: false, reasons: [{ code: 'no_active_bundle' }], policy: null } });
    const refusedRecord = (await get(`/v1/decisions/${refused.body!.decision_id}`)).body!;
    expect(refusedRecord.input.subject).toEqual({ authenticated: false, rejected_token: { code: 'token_expired', fingerprint: expect.any(String), claimed_iss: idp.issuer } });
    expect(JSON.stringify(refusedRecord)).not.toContain(expired);
    // Neither names a policy that could answer: nothing to replay.
    expect((await call(arbiter, 'POST', `/v1/decisions/${res.body!.decision_id}/replay`, { body: {} })).body).toMatchObject({ code: 'decision_not_replayable' });
  });
});

describe('a decision no bundle answers, while the log cannot record it either', () => {
  it('is still a 503 (no bundle), with the audit failure as its reason', async () => {
    const path = join(tempDir('arbiter-unanswered-'), 'decisions.db');
    const server = await startTestArbiter({ bundles: { default: 'absent' }, decision_log: { path, busy_timeout_ms: 100 } });
    try {
      const res = await whileLocked(path, () => postJson(`${server.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } }));
      expect(res).toMatchObject({ status: 503, body: { allow: false, reasons: [{ code: 'audit_unavailable' }] } });
    } finally {
      await server.close();
    }
  });
});

describe('readiness and the decision log', () => {
  it('/readyz is 503 while a relaxed log refuses appends (every decision would deny audit_unavailable), ready again once it commits', async () => {
    const path = join(tempDir('arbiter-readyz-log-'), 'decisions.db');
    const relaxed = await startTestArbiter({ decision_log: { path, durability: 'relaxed', flush_interval_ms: 50, busy_timeout_ms: 100 } });
    try {
      await whileLocked(path, async (release) => {
        await postJson(`${relaxed.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } });
        await expect.poll(async () => (await fetch(`${relaxed.url}/readyz`)).status, { timeout: 5000 }).toBe(503);
        const body = (await (await fetch(`${relaxed.url}/readyz`)).json()) as Json;
        expect(body.problems).toEqual([expect.stringContaining('decision log')]);
        release();
        await expect.poll(async () => (await fetch(`${relaxed.url}/readyz`)).status, { timeout: 5000 }).toBe(200);
      });
    } finally {
      await relaxed.close();
    }
  });
});

describe('a decision log whose last records no checkpoint covers at start-up', () => {
  it('is logged as a warning and listed under degraded in /readyz, naming the seqs and verify; a clean restart is not', async () => {
    const path = join(tempDir('arbiter-unsigned-tail-'), 'decisions.db');
    const first = await startTestArbiter({ decision_log: { path } });
    try {
      for (let i = 0; i < 3; i++) await postJson(`${first.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } });
    } finally {
      await first.close();
    }
    const clean = capturingLogger();
    const again = await startTestArbiter({ decision_log: { path } }, { logger: clean.logger });
    try {
      expect(((await (await fetch(`${again.url}/readyz`)).json()) as Json).degraded).toEqual([]);
      expect(clean.lines.filter((line) => line.level === 40 && /checkpoint/.test(String(line.msg)))).toEqual([]);
    } finally {
      await again.close();
    }
    // Behind the stopped server, without the key: the checkpoint its shutdown signed (seq 3) deleted,
    // which lets records be chained on behind it; verify passes such a log.
    const db = new DatabaseSync(path);
    db.exec('DELETE FROM checkpoints');
    db.close();
    const captured = capturingLogger();
    const server = await startTestArbiter({ decision_log: { path } }, { logger: captured.logger });
    try {
      const ready = await fetch(`${server.url}/readyz`);
      expect(ready.status).toBe(200);
      expect(((await ready.json()) as Json).degraded).toEqual([expect.stringMatching(/decision log: records seq 1 to 3 .*no signed checkpoint.*arbiter decisions verify/)]);
      expect(captured.lines).toContainEqual(
        expect.objectContaining({ level: 40, from_seq: 1, to_seq: 3, msg: expect.stringMatching(/no signed checkpoint.*arbiter decisions verify/) }),
      );
      // Decisions go on: a warning, not a refusal.
      expect((await postJson(`${server.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } })).body!.reasons).not.toContainEqual(expect.objectContaining({ code: 'audit_unavailable' }));
    } finally {
      await server.close();
    }
  });
});

describe('readiness and a relaxed decision log at max_pending', () => {
  it('/readyz is 503 while the records waiting are max_pending (the next decision would deny audit_unavailable), ready again once they commit', async () => {
    const path = join(tempDir('arbiter-readyz-backlog-'), 'decisions.db');
    const relaxed = await startTestArbiter({ decision_log: { path, durability: 'relaxed', flush_interval_ms: 3000, max_pending: 2 } });
    try {
      for (let i = 0; i < 2; i++) expect((await postJson(`${relaxed.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } })).body!.reasons).not.toContainEqual(expect.objectContaining({ code: 'audit_unavailable' }));
      const denied = await postJson(`${relaxed.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } });
      expect(denied.body).toMatchObject({ allow: false, reasons: [{ code: 'audit_unavailable' }] });
      const ready = await fetch(`${relaxed.url}/readyz`);
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as Json).problems).toEqual([expect.stringMatching(/decision log .*max_pending/)]);
      await expect.poll(async () => (await fetch(`${relaxed.url}/readyz`)).status, { timeout: 6000, interval: 200 }).toBe(200);
    } finally {
      await relaxed.close();
    }
  });
});

describe('readiness and a strict decision log whose commits keep failing', () => {
  // The lock of another connection is what makes commits fail here: it fails them as surely as
  // a full disk or a read-only file would (SQLITE_BUSY after busy_timeout_ms, the same path
  // in the writer), also for root, whom chmod does not stop, and it can be lifted to recover.
  const readiness = async (server: Arbiter) => {
    const response = await fetch(`${server.url}/readyz`);
    return { status: response.status, body: (await response.json()) as Json };
  };

  it('/readyz is 503 naming the decision log once commits have failed for a while, ready again once one succeeds, with no decision needed', async () => {
    const path = join(tempDir('arbiter-readyz-strict-'), 'decisions.db');
    const strict = await startTestArbiter({ decision_log: { path, busy_timeout_ms: 100 } });
    try {
      await whileLocked(path, async (release) => {
        const denied = await postJson(`${strict.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } });
        expect(denied.body).toMatchObject({ allow: false, reasons: [{ code: 'audit_unavailable' }] });
        // One failed commit is not an outage yet.
        expect((await readiness(strict)).status).toBe(200);
        await expect.poll(async () => (await readiness(strict)).status, { timeout: STRICT_OUTAGE_AFTER_MS + 10_000, interval: 250 }).toBe(503);
        expect((await readiness(strict)).body.problems).toEqual([expect.stringMatching(/decision log .*audit_unavailable/)]);
        release();
        // No traffic reaches a replica out of the load balancer: it must find out by itself.
        await expect.poll(async () => (await readiness(strict)).status, { timeout: 5000, interval: 100 }).toBe(200);
      });
      const allowed = await postJson(`${strict.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } });
      expect(allowed.body!.reasons).not.toContainEqual(expect.objectContaining({ code: 'audit_unavailable' }));
    } finally {
      await strict.close();
    }
  });

  it('is 503 while decisions keep coming and their commits keep failing, even when the probe alone would go through', async () => {
    // A probe writes one page: a disk with a little room left, or a log another writer has
    // chained on, lets it through while every decision's commit fails. A trigger refusing every
    // insert is such a failure: the probe writes no decision. The decisions are what counts.
    const path = join(tempDir('arbiter-readyz-probe-'), 'decisions.db');
    const strict = await startTestArbiter({ decision_log: { path, busy_timeout_ms: 100 } });
    const other = new DatabaseSync(path);
    try {
      other.exec("CREATE TRIGGER refuse_decisions BEFORE INSERT ON decisions BEGIN SELECT RAISE(ABORT, 'no room left'); END");
      const statuses: number[] = [];
      for (const until = Date.now() + STRICT_OUTAGE_AFTER_MS + 3000; Date.now() < until && !statuses.includes(503); ) {
        const denied = await postJson(`${strict.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } });
        expect(denied.body).toMatchObject({ allow: false, reasons: [{ code: 'audit_unavailable' }] });
        statuses.push((await readiness(strict)).status);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      expect(statuses).toContain(503);
      // Out of the load balancer, no decision comes: the probe going through makes it ready
      // again, and the decisions it then receives are what tell.
      await expect.poll(async () => (await readiness(strict)).status, { timeout: 5000, interval: 100 }).toBe(200);
      other.exec('DROP TRIGGER refuse_decisions');
      const allowed = await postJson(`${strict.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } });
      expect(allowed.body!.reasons).not.toContainEqual(expect.objectContaining({ code: 'audit_unavailable' }));
    } finally {
      other.close();
      await strict.close();
    }
  });

  it('is 503 while a commit has hung for as long, decisions waiting on it, ready again once it goes through', async () => {
    // A disk that stops answering (a stalled network volume) fails no commit: the fsync just
    // does not return, and every decision waits for it. A lock held past the moment is the same
    // wait here, with a busy_timeout_ms longer than the outage threshold.
    const path = join(tempDir('arbiter-readyz-hung-'), 'decisions.db');
    const strict = await startTestArbiter({ decision_log: { path, busy_timeout_ms: 30_000 } });
    try {
      await whileLocked(path, async (release) => {
        const waiting = postJson(`${strict.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } });
        expect((await readiness(strict)).status).toBe(200);
        await expect.poll(async () => (await readiness(strict)).status, { timeout: STRICT_OUTAGE_AFTER_MS + 5000, interval: 250 }).toBe(503);
        expect((await readiness(strict)).body.problems).toEqual([expect.stringMatching(/decision log .*under way/)]);
        release();
        expect((await waiting).body!.reasons).not.toContainEqual(expect.objectContaining({ code: 'audit_unavailable' }));
        await expect.poll(async () => (await readiness(strict)).status, { timeout: 5000, interval: 100 }).toBe(200);
      });
    } finally {
      await strict.close();
    }
  }, 30_000);

  it('stays ready through one failed commit when the next attempt succeeds', async () => {
    const path = join(tempDir('arbiter-readyz-transient-'), 'decisions.db');
    const strict = await startTestArbiter({ decision_log: { path, busy_timeout_ms: 100 } });
    try {
      await whileLocked(path, async () => {
        const denied = await postJson(`${strict.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } });
        expect(denied.body).toMatchObject({ allow: false, reasons: [{ code: 'audit_unavailable' }] });
      });
      const statuses: number[] = [];
      for (const until = Date.now() + STRICT_OUTAGE_AFTER_MS + 1500; Date.now() < until; ) {
        statuses.push((await readiness(strict)).status);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      expect(new Set(statuses)).toEqual(new Set([200]));
    } finally {
      await strict.close();
    }
  });
});

describe('POST /v1/decisions/{id}/replay', () => {
  it('shows the recorded and the new result side by side, against the active or a stored revision', async () => {
    const recorded = await decide(alice(), 'read', { type: 'doc', id: 'replayed' });
    expect(recorded.allow).toBe(true);
    const pushToken = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.write' });
    const pushed = await fetch(`${arbiter.url}/v1/bundles/audit`, { method: 'PUT', headers: { authorization: `Bearer ${pushToken}`, 'content-type': 'application/gzip' }, body: new Uint8Array(archives.r2!) });
    expect(pushed.status).toBe(201);

    const againstActive = await call(arbiter, 'POST', `/v1/decisions/${recorded.id}/replay`, { body: {} });
    expect(againstActive.status, againstActive.text).toBe(200);
    expect(replayReportSchema.safeParse(againstActive.body).success).toBe(true);
    expect(againstActive.body).toMatchObject({
      decision_id: recorded.id,
      entrypoint: 'audit/decision',
      recorded: { revision: 'r1', allow: true, reasons: [{ code: 'granted' }] },
      replayed: { revision: 'r2', allow: false, reasons: [{ code: 'frozen' }] },
      same: false,
      masked: true,
    });

    // The older revision comes from the store without being activated.
    const againstOlder = await call(arbiter, 'POST', `/v1/decisions/${recorded.id}/replay`, { body: { revision: 'r1' } });
    expect(againstOlder.body).toMatchObject({ replayed: { revision: 'r1', allow: true, reasons: [{ code: 'granted' }] }, same: true });
    expect(arbiter.bundles.get('audit')?.revision).toBe('r2');
    expect((await postJson(`${arbiter.url}/v1/decide`, { token: await idp.sign({ scope: 'read' }), action: 'read', resource: { type: 'doc' }, policy: 'audit' })).body).toMatchObject({ reasons: [{ code: 'frozen' }] });
  });

  it('records the live data version that decided, and replay shows it beside today\'s', async () => {
    const token = await idp.sign({ sub: 'user:alice', client_id: 'web', scope: 'read' });
    const answered = await postJson(`${arbiter.url}/v1/decide`, { token, action: 'read', resource: { type: 'doc', id: 'versioned' }, policy: 'audit' });
    const id = answered.body!.decision_id as string;
    const decidedOn = answered.body!.data_version as number;
    expect(decidedOn).toEqual(expect.any(Number));
    const stored = await get(`/v1/decisions/${id}`);
    expect(storedDecisionSchema.safeParse(stored.body).success).toBe(true);
    expect(stored.body).toMatchObject({ decision_id: id, data_version: decidedOn });

    const dataToken = await admins.sign({ sub: 'feed@example', aud: 'arbiter-admin', scope: 'arbiter.data.write' });
    const written = await fetch(`${arbiter.url}/v1/data/replay_marker`, { method: 'PUT', headers: { authorization: `Bearer ${dataToken}`, 'content-type': 'application/json' }, body: '{"written": true}' });
    expect(written.status, await written.text()).toBeLessThan(300);
    const replay = await call(arbiter, 'POST', `/v1/decisions/${id}/replay`, { body: {} });
    expect(replayReportSchema.safeParse(replay.body).success).toBe(true);
    expect(replay.body).toMatchObject({ recorded: { data_version: decidedOn } });
    expect((replay.body!.replayed as Json).data_version).toBeGreaterThan(decidedOn);
  });

  it('records a null data version when no policy ran', async () => {
    const refused = await postJson(`${arbiter.url}/v1/decide`, { token: 'not-a-jwt', action: 'read', resource: { type: 'doc' }, policy: 'audit' });
    expect(refused.body).toMatchObject({ allow: false, data_version: null });
    expect((await get(`/v1/decisions/${refused.body!.decision_id}`)).body).toMatchObject({ data_version: null });
  });

  it('judges a replayed issuance by the output /v1/issuance asks for, as when it decided', async () => {
    const pushToken = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.write' });
    await fetch(`${arbiter.url}/v1/bundles/audit`, { method: 'PUT', headers: { authorization: `Bearer ${pushToken}`, 'content-type': 'application/gzip' }, body: new Uint8Array(archives.r2!) });
    // r2's issuance allows without granted_scopes: the endpoint refuses that as a contract violation.
    const issued = await postJson(`${arbiter.url}/v1/issuance`, { client_id: 'c', scopes: ['read'], audience: 'https://api.example.com', policy: 'audit' });
    expect(issued.body).toMatchObject({ allow: false, reasons: [{ code: 'policy_contract_violation' }] });
    const replay = await call(arbiter, 'POST', `/v1/decisions/${issued.body!.decision_id}/replay`, { body: {} });
    expect(replay.body).toMatchObject({ replayed: { revision: 'r2', allow: false, reasons: [{ code: 'policy_contract_violation' }] }, same: true });
  });

  it('records the scopes and lifetime an issuance granted, and replay compares them', async () => {
    // Two revisions that allow alike (same reasons) but mint different tokens.
    const issuance = (scopes: string, ttl: number) => `package mint

# METADATA
# entrypoint: true
decision := {"allow": false, "reasons": [{"code": "denied"}], "obligations": []}

# METADATA
# entrypoint: true
issuance := {"allow": true, "reasons": [{"code": "granted"}], "obligations": [], "granted_scopes": ${scopes}, "refused_scopes": [], "max_ttl_s": ${ttl}}
`;
    const pushToken = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.write' });
    const push = async (revision: string, policy: string) => {
      const src = join(dir, `mint-${revision}`);
      mkdirSync(src);
      writeFileSync(join(src, 'policy.rego'), policy);
      writeFileSync(join(src, '.manifest'), JSON.stringify({ roots: ['mint'] }));
      const archive = build(src, join(dir, `mint-${revision}.tar.gz`), revision);
      const pushed = await fetch(`${arbiter.url}/v1/bundles/mint`, { method: 'PUT', headers: { authorization: `Bearer ${pushToken}`, 'content-type': 'application/gzip' }, body: new Uint8Array(archive) });
      expect(pushed.status, await pushed.text()).toBe(201);
    };
    await push('m1', issuance('["read"]', 300));
    const issued = await postJson(`${arbiter.url}/v1/issuance`, { client_id: 'c', scopes: ['read', 'write'], audience: 'https://api.example.com', policy: 'mint' });
    expect(issued.body).toMatchObject({ allow: true, granted_scopes: ['read'], max_ttl_s: 300 });
    const id = issued.body!.decision_id as string;
    await push('m2', issuance('["read", "write"]', 3600));
    // What the token service was told to mint is part of the audit record.
    expect(arbiter.decisionLog!.get(id)?.result).toMatchObject({ allow: true, value: { granted_scopes: ['read'], max_ttl_s: 300 } });
    const replay = await call(arbiter, 'POST', `/v1/decisions/${id}/replay`, { body: {} });
    expect(replay.body).toMatchObject({ recorded: { revision: 'm1', allow: true }, replayed: { revision: 'm2', allow: true, value: { granted_scopes: ['read', 'write'] } }, same: false });
    const again = await call(arbiter, 'POST', `/v1/decisions/${id}/replay`, { body: { revision: 'm1' } });
    expect(again.body).toMatchObject({ same: true });
  });

  it('denies, records and replays as that deny an issuance allow granting only scopes nobody asked for', async () => {
    // /v1/issuance grants only requested scopes: answering this allow would tell the token
    // service "allow" with nothing to mint, while the record said the policy granted "admin".
    const src = join(dir, 'unasked');
    mkdirSync(src);
    writeFileSync(
      join(src, 'policy.rego'),
      `package unasked

# METADATA
# entrypoint: true
decision := {"allow": false, "reasons": [{"code": "denied"}], "obligations": []}

# METADATA
# entrypoint: true
issuance := {"allow": true, "reasons": [{"code": "granted"}], "obligations": [], "granted_scopes": ["admin"], "refused_scopes": [], "max_ttl_s": 300}
`,
    );
    writeFileSync(join(src, '.manifest'), JSON.stringify({ roots: ['unasked'] }));
    const archive = build(src, join(dir, 'unasked.tar.gz'), 'u1');
    const pushToken = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.write' });
    const pushed = await fetch(`${arbiter.url}/v1/bundles/unasked`, { method: 'PUT', headers: { authorization: `Bearer ${pushToken}`, 'content-type': 'application/gzip' }, body: new Uint8Array(archive) });
    expect(pushed.status, await pushed.text()).toBe(201);

    const issued = await postJson(`${arbiter.url}/v1/issuance`, { client_id: 'c', scopes: ['read', 'write'], audience: AUDIENCE, policy: 'unasked' });
    expect(issued.status).toBe(200);
    expect(issued.body).toMatchObject({ allow: false, reasons: [{ code: 'policy_contract_violation', message: expect.stringContaining('"admin"') }], granted_scopes: [], max_ttl_s: 0 });
    expect(issued.body!.refused_scopes).toEqual([
      { scope: 'read', code: 'policy_contract_violation' },
      { scope: 'write', code: 'policy_contract_violation' },
    ]);
    // The auditor sees what the token service was told, and why: the same deny, the same reason.
    const id = issued.body!.decision_id as string;
    const stored = await get(`/v1/decisions/${id}`);
    expect(stored.body!.result).toEqual({ allow: false, reasons: issued.body!.reasons, obligations: [] });
    const replay = await call(arbiter, 'POST', `/v1/decisions/${id}/replay`, { body: {} });
    expect(replay.body).toMatchObject({ replayed: { revision: 'u1', allow: false, reasons: issued.body!.reasons }, same: true });
  });

  it('records and replays what the OPA data API answered, a bare boolean included', async () => {
    arbiter.liveData.put(['pair'], { v: 1 });
    try {
      const answered = await postJson(`${arbiter.url}/v1/data/echo/pair_is_one`, { input: {} });
      expect(answered.body).toMatchObject({ result: true });
      const id = answered.body!.decision_id as string;
      // `allow := true` answers the boolean itself: an allow, with the value kept as answered.
      expect(arbiter.decisionLog!.get(id)?.result).toEqual({ allow: true, reasons: [], obligations: [], value: true });
      arbiter.liveData.put(['pair'], { v: 2 });
      const replay = await call(arbiter, 'POST', `/v1/decisions/${id}/replay`, { body: {} });
      expect(replay.body).toMatchObject({ recorded: { allow: true, value: true }, replayed: { allow: false, value: false }, same: false });
    } finally {
      arbiter.liveData.delete(['pair']);
    }
  });

  it('records an undefined OPA data API answer as null, so replay sees it become defined', async () => {
    const asked = await postJson(`${arbiter.url}/v1/data/echo/pair_value`, { input: {} });
    expect(asked.body).not.toHaveProperty('result');
    const id = asked.body!.decision_id as string;
    expect(arbiter.decisionLog!.get(id)?.result).toMatchObject({ allow: false, value: null });
    arbiter.liveData.put(['pair'], { v: 'now defined' });
    try {
      const replay = await call(arbiter, 'POST', `/v1/decisions/${id}/replay`, { body: {} });
      expect(replay.body).toMatchObject({ recorded: { value: null }, replayed: { value: 'now defined' }, same: false });
    } finally {
      arbiter.liveData.delete(['pair']);
    }
  });

  it('replays an OPA data API decision whatever its input holds: the subject there is the caller\'s, never a token Arbiter refused', async () => {
    // An input copied from a record of a refused token (to ask the policy about it) is the caller's input as given.
    const input = { subject: { authenticated: false, rejected_token: { code: 'token_expired', fingerprint: 'x', claimed_iss: null } } };
    const asked = await postJson(`${arbiter.url}/v1/data/echo/string_reasons`, { input });
    expect(asked.status).toBe(200);
    const id = asked.body!.decision_id as string;
    expect(arbiter.decisionLog!.get(id)?.input).toEqual(input);
    const replay = await call(arbiter, 'POST', `/v1/decisions/${id}/replay`, { body: {} });
    expect(replay.status).toBe(200);
    expect(replay.body).toMatchObject({ entrypoint: 'echo/string_reasons', same: true });
  });

  it('replays an OPA data API record from before answers were recorded on allow, reasons and obligations', async () => {
    const asked = await postJson(`${arbiter.url}/v1/data/echo/string_reasons`, { input: {} });
    const stored = arbiter.decisionLog!.get(asked.body!.decision_id as string)!;
    expect(stored.result).toHaveProperty('value');
    // The record as the previous release wrote it: the same but for result.value.
    const { seq: _seq, prev_hash: _prev, hash: _hash, ...record } = stored;
    const { value: _value, ...result } = record.result;
    const older = { ...record, decision_id: newDecisionId(), result };
    await arbiter.decisionLog!.append(older);
    const replay = await call(arbiter, 'POST', `/v1/decisions/${older.decision_id}/replay`, { body: {} });
    expect(replay.body).toMatchObject({ replayed: { allow: true }, same: true });
  });

  it('answers 404 for an unknown decision or revision, 409 when no policy ran', async () => {
    const some = await decide(bob(), 'read', { type: 'doc', id: 'r' });
    expect((await call(arbiter, 'POST', '/v1/decisions/0190b8c4-0000-7000-8000-000000000000/replay', { body: {} })).body).toMatchObject({ status: 404, code: 'decision_not_found' });
    expect((await call(arbiter, 'POST', `/v1/decisions/${some.id}/replay`, { body: { revision: 'r7' } })).body).toMatchObject({ status: 404, code: 'bundle_revision_not_found' });
    expect((await call(arbiter, 'POST', `/v1/decisions/${some.id}/replay`, { body: { version: 'r1' } })).body).toMatchObject({ status: 400, code: 'invalid_request' });
    const refused = await postJson(`${arbiter.url}/v1/decide`, { token: 'not.a.token', action: 'read', resource: { type: 'doc' }, policy: 'audit' });
    expect(refused.body!.reasons[0].code).toMatch(/^token_/);
    expect((await call(arbiter, 'POST', `/v1/decisions/${refused.body!.decision_id}/replay`, { body: {} })).body).toMatchObject({ status: 409, code: 'decision_not_replayable' });
  });
});

describe('a decision looked up before its record commits', () => {
  it('answers 404 saying it may not be committed yet on a relaxed log, which a strict one never needs to say', async () => {
    const relaxed = await startTestArbiter({ ...adminConfig(), decision_log: { path: join(dir, 'relaxed-lookup.db'), durability: 'relaxed', flush_interval_ms: 60_000 } });
    try {
      const answered = await postJson(`${relaxed.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } });
      const id = answered.body!.decision_id as string;
      for (const lookup of [call(relaxed, 'GET', `/v1/decisions/${id}`), call(relaxed, 'POST', `/v1/decisions/${id}/replay`, { body: {} })]) {
        expect((await lookup).body).toMatchObject({ status: 404, code: 'decision_not_found', detail: expect.stringMatching(/not committed yet.*relaxed.*60000 ms/) });
      }
      const shown = await run(process.execPath, ['src/cli/main.ts', 'decisions', 'get', id, '--url', relaxed.url, '--token', readToken]).catch((error: { stderr: string }) => error);
      expect(shown.stderr).toMatch(/404: decision_not_found: .*not committed yet/);
    } finally {
      await relaxed.close();
    }
    const unknown = await get('/v1/decisions/0190b8c4-0000-7000-8000-000000000000');
    expect(unknown.body).toMatchObject({ status: 404, code: 'decision_not_found' });
    expect(unknown.body!.detail).not.toMatch(/committed/);
  });
});

describe('arbiter decisions (CLI)', () => {
  it('ends quietly when the reader closes the pipe (export | head)', async () => {
    await decide(carol(), 'write', { type: 'photo', id: 'pipe' });
    const child = spawn(process.execPath, ['src/cli/main.ts', 'decisions', 'export', '--url', arbiter.url, '--token', readToken], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout.destroy(); // the reader is gone before the first line is written
    const [code] = (await once(child, 'exit')) as [number | null];
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
  });

  it('shows the verified sub, else the subject an AuthZEN PEP asserted, marked as asserted', async () => {
    const made = await decide(alice(), 'read', { type: 'doc', id: 'cli-asserted' });
    const { seq: _seq, prev_hash: _prev, hash: _hash, ...base } = arbiter.decisionLog!.get(made.id)!;
    const asserted = { authenticated: false, asserted: true, type: 'user', id: 'u1', properties: {} };
    await arbiter.decisionLog!.append({ ...base, decision_id: newDecisionId(), endpoint: '/access/v1/evaluation', input: { ...base.input, subject: asserted } });
    const lines = (await cli('query', '--resource-id', 'cli-asserted')).stdout.split('\n').filter((line) => line.includes('cli-asserted'));
    expect(lines).toHaveLength(2);
    expect(lines.filter((line) => line.includes('  user:u1(asserted)  '))).toHaveLength(1);
    // The other is the verified decision: its sub is masked as sha256:<hex> by this server's decision_log.mask.
    expect(lines.filter((line) => /  sha256:[0-9a-f]+  /.test(line))).toHaveLength(1);
  });

  it('marks the sub of an OPA data API record as unverified: its whole input is the caller\'s', async () => {
    const made = await decide(alice(), 'read', { type: 'doc', id: 'cli-opa-input' });
    const { seq: _seq, prev_hash: _prev, hash: _hash, ...base } = arbiter.decisionLog!.get(made.id)!;
    await arbiter.decisionLog!.append({ ...base, decision_id: newDecisionId(), endpoint: '/v1/data', input: { ...base.input, subject: { sub: 'user:whoever-the-caller-says' } } });
    const lines = (await cli('query', '--resource-id', 'cli-opa-input')).stdout.split('\n').filter((line) => line.includes('cli-opa-input'));
    expect(lines).toHaveLength(2);
    expect(lines.filter((line) => /  sha256:[0-9a-f]+\(unverified\)  /.test(line))).toHaveLength(1);
    expect(lines.filter((line) => /  sha256:[0-9a-f]+  /.test(line))).toHaveLength(1);
  });

  it('prints what callers sent with its control characters escaped: a value cannot forge a line or drive the terminal', async () => {
    const forged = 'cli-forged\n2026-01-01T00:00:00.000Z  01900000-0000-7000-8000-000000000000  allow  user:admin  delete  doc/all';
    const made = await decide(alice(), 'read', { type: 'doc', id: forged });
    const { seq: _seq, prev_hash: _prev, hash: _hash, ...base } = arbiter.decisionLog!.get(made.id)!;
    const asserted = { authenticated: false, asserted: true, type: 'user', id: 'u1\u001b]0;owned\u0007\u009b2J', properties: {} };
    await arbiter.decisionLog!.append({ ...base, decision_id: newDecisionId(), endpoint: '/access/v1/evaluation', input: { ...base.input, subject: asserted } });
    const { stdout, code } = await cli('query', '--resource-id', forged);
    expect(code).toBe(0);
    const lines = stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line).toContain('doc/cli-forged\\n2026-01-01T00:00:00.000Z');
    expect(stdout).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
    expect(lines.filter((line) => line.includes('  user:u1\\u001b]0;owned\\u0007\\u009b2J(asserted)  '))).toHaveLength(1);
  });

  it('refuses an option its subcommand does not read, rather than ignore it (exit 2, nothing asked)', async () => {
    const out = join(dir, 'not-written.ndjson');
    for (const [args, option] of [
      [['export', '--limit', '1'], '--limit'],
      [['export', '--cursor', 'x'], '--cursor'],
      [['query', '--out', out], '--out'],
      [['verify', '--from', '0'], '--from'],
      [['get', '0190b8c4-0000-7000-8000-000000000000', '--allow', 'true'], '--allow'],
      [['replay', '0190b8c4-0000-7000-8000-000000000000', '--client-id', 'web'], '--client-id'],
    ] as const) {
      const result = await cli(...args);
      expect({ code: result.code, stdout: result.stdout }, args.join(' ')).toEqual({ code: 2, stdout: '' });
      expect(result.stderr, args.join(' ')).toContain(`decisions ${args[0]} does not take ${option}`);
    }
    expect(existsSync(out)).toBe(false);
  });

  it('takes a decision id for get and replay, never a path the server serves something else at', async () => {
    for (const args of [['get', 'verify'], ['get', 'export'], ['replay', 'verify'], ['get', '../bundles']]) {
      const result = await cli(...args);
      expect({ code: result.code, stdout: result.stdout }, args.join(' ')).toEqual({ code: 2, stdout: '' });
      expect(result.stderr, args.join(' ')).toContain('is not a decision id');
    }
    const made = await decide(alice(), 'read', { type: 'doc', id: 'cli-upper' });
    expect(JSON.parse((await cli('get', made.id.toUpperCase())).stdout)).toMatchObject({ decision_id: made.id });
  });

  it('gets, queries, exports and replays over HTTP', async () => {
    const m = await decide(carol(), 'write', { type: 'photo', id: 'cli' });
    const got = await cli('get', m.id);
    expect(got.code).toBe(0);
    expect(JSON.parse(got.stdout)).toMatchObject({ decision_id: m.id, result: { allow: false } });

    const queried = await cli('query', '--iss', partner.issuer, '--resource-id', 'cli', '--allow', 'false', '--json');
    expect(JSON.parse(queried.stdout).decisions.map((d: Json) => d.decision_id)).toEqual([m.id]);
    const human = await cli('query', '--resource-id', 'cli');
    expect(human.stdout).toContain(m.id);

    const out = join(dir, 'export.ndjson');
    const exported = await cli('export', '--iss', partner.issuer, '--out', out);
    expect(exported.code).toBe(0);
    const count = (await allIds({ iss: partner.issuer })).length;
    expect(readFileSync(out, 'utf8').trim().split('\n')).toHaveLength(count);
    expect(exported.stderr).toContain(`exported ${count} decisions`);
    // What it holds is what the decision log (0600) keeps from others: so does the file.
    expect((statSync(out).mode & 0o777).toString(8)).toBe('600');

    expect((await cli('replay', m.id)).stdout).toContain('same result');
    const replayed = await cli('replay', m.id, '--revision', 'r1');
    expect(replayed.stdout).toMatch(/recorded r2: deny \[frozen\]\nreplayed r1: deny \[denied\]\nDIFFERENT result/);

    const bad = await cli('query', '--allow', 'maybe');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('decision_query_invalid');
    const usage = await cli('get');
    expect(usage.code).toBe(2);
  });
});

describe('GET /v1/decisions/verify', () => {
  it('reports ok, then the first record whose stored row was tampered with', async () => {
    const intact = await get('/v1/decisions/verify');
    expect(verifyReportSchema.safeParse(intact.body).success).toBe(true);
    expect(intact.body).toMatchObject({ ok: true, checked: expect.any(Number) });
    expect(intact.body!.checked).toBeGreaterThan(50);
    expect((await cli('verify')).code).toBe(0);

    const victim = await decide(bob(), 'write', { type: 'doc', id: 'tampered' });
    await decide(bob(), 'read', { type: 'doc', id: 'after-tampered' });
    const db = new DatabaseSync(logPath);
    try {
      db.prepare("UPDATE decisions SET body = replace(body, '\"allow\":false', '\"allow\":true') WHERE decision_id = ?").run(victim.id);
      expect((db.prepare('SELECT changes() AS n').get() as { n: number }).n).toBe(1);
    } finally {
      db.close();
    }
    const broken = await get('/v1/decisions/verify');
    expect(broken.body).toMatchObject({ ok: false, first_mismatch: { decision_id: victim.id, reason: 'hash_mismatch' } });
    const verified = await cli('verify');
    expect(verified.code).toBe(1);
    expect(verified.stdout).toContain(victim.id);
  });
});

/**
 * A server of its own with a decision log of `decisions` records whose seq 2 row is then
 * changed outside Arbiter by `set` (the assignments of an SQL UPDATE over the row); `use` gets
 * the server and the damaged record's decision id.
 */
async function withDamagedRecord(file: string, decisions: number, set: string, use: (damaged: Arbiter, victim: string) => Promise<void>, logger?: Logger): Promise<void> {
  const damagedPath = join(dir, file);
  const damaged = await startTestArbiter({ ...adminConfig(), decision_log: { path: damagedPath } }, { ...(logger && { logger }) });
  try {
    for (let i = 0; i < decisions; i++) expect((await postJson(`${damaged.url}/v1/decide`, { action: 'read', resource: { type: 'doc', id: `${file}-${i}` } })).status).toBe(200);
    const db = new DatabaseSync(damagedPath);
    let victim: string;
    try {
      victim = (db.prepare('SELECT decision_id FROM decisions WHERE seq = 2').get() as { decision_id: string }).decision_id;
      db.prepare(`UPDATE decisions SET ${set} WHERE seq = 2`).run();
    } finally {
      db.close();
    }
    await use(damaged, victim);
  } finally {
    await damaged.close();
  }
}

/** Each of `paths` answers 500 decision_log_corrupt naming the damaged record, seq 2. */
async function expectCorruptAnswers(damaged: Arbiter, paths: string[]): Promise<void> {
  for (const path of paths) {
    const answer = await call(damaged, 'GET', path);
    expect(answer.status, path).toBe(500);
    expect(answer.headers.get('content-type'), path).toBe('application/problem+json');
    expect(answer.body, path).toMatchObject({ code: 'decision_log_corrupt', seq: 2, detail: expect.stringContaining('seq 2') });
  }
}

describe('reads of the decision log', () => {
  it('run off the thread that serves decisions: decisions and /healthz answer while a query is held, which then answers in full', async () => {
    const before = await decide(alice(), 'read', { type: 'doc', id: 'held-read' });
    const release = arbiter.decisionLog!.reader.holdForTests();
    let settled = false;
    try {
      const query = get('/v1/decisions?resource_id=held-read').finally(() => (settled = true));
      // The query has reached the reader thread, which now blocks as a long read would.
      await waitFor(() => arbiter.decisionLog!.reader.heldForTests === 1, 'the query to reach the reader thread');
      // Reads asked meanwhile queue behind it on the one reader thread.
      const byId = get(`/v1/decisions/${before.id}`);
      const exported = get('/v1/decisions/export?resource_id=held-read');

      const during = await decide(alice(), 'read', { type: 'doc', id: 'held-read' });
      expect((await fetch(`${arbiter.url}/healthz`)).status).toBe(200);
      expect(settled).toBe(false);

      release();
      const page = await query;
      expect(page.status, page.text).toBe(200);
      // Newest first, masked as stored (sub hashed, client_ip erased), the decision made while it was held included.
      expect((page.body!.decisions as Json[]).map((d) => d.decision_id)).toEqual([during.id, before.id]);
      expect(page.body!.decisions[0].input.subject.sub).toBe(hashValue('user:alice'));
      expect((await byId).body).toMatchObject({ decision_id: before.id });
      expect((await exported).text.trimEnd().split('\n').map((line) => (JSON.parse(line) as Json).decision_id)).toEqual([during.id, before.id]);
    } finally {
      release();
    }
  });

  it('verify too: decisions answer while the chain walk waits on the reader thread, which then reports as before', async () => {
    await decide(alice(), 'read', { type: 'doc', id: 'held-verify' });
    const release = arbiter.decisionLog!.reader.holdForTests();
    let settled = false;
    try {
      const verify = get('/v1/decisions/verify').finally(() => (settled = true));
      await waitFor(() => arbiter.decisionLog!.reader.heldForTests === 1, 'verify to reach the reader thread');
      await decide(alice(), 'read', { type: 'doc', id: 'held-verify' });
      expect(settled).toBe(false);
      release();
      const report = await verify;
      expect(report.status, report.text).toBe(200);
      // The report of the walk on the calling thread (an earlier test left this log tampered with).
      expect(report.body).toEqual(await arbiter.decisionLog!.verify());
    } finally {
      release();
    }
  });

  it('answer 500 when the reader thread fails, without taking the server down, and the next read starts a new thread', async () => {
    const path = join(dir, 'reader-fails.db');
    const captured = capturingLogger();
    const server = await startTestArbiter({ ...adminConfig(), decision_log: { path } }, { logger: captured.logger });
    try {
      // The reader thread opens the file with the first read: moved away, it cannot, and stops.
      renameSync(path, `${path}.away`);
      try {
        const failed = await call(server, 'GET', '/v1/decisions');
        expect(failed.status).toBe(500);
        expect(failed.body).toMatchObject({ code: 'internal_error' });
      } finally {
        renameSync(`${path}.away`, path);
      }
      expect(captured.lines).toContainEqual(expect.objectContaining({ msg: 'unhandled error', err: expect.objectContaining({ message: expect.stringContaining('reader thread stopped') }) }));
      expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
      expect(await call(server, 'GET', '/v1/decisions')).toMatchObject({ status: 200, body: { decisions: [], next_cursor: null } });
    } finally {
      await server.close();
    }
  });
});

describe('an export or a paged query that retention prunes under', () => {
  it('ends with a decision_export_incomplete problem line, not short as if whole', async () => {
    const captured = capturingLogger();
    const pruned = await startTestArbiter(
      { ...adminConfig(), decision_log: { path: join(dir, 'pruned-under-export.db'), max_batch: 5_000, retention: { max_age_days: 1, check_interval_s: 86_400 } } },
      { logger: captured.logger },
    );
    try {
      const base = Date.now() - 100_000;
      const padding = 'x'.repeat(1_000);
      await Promise.all(Array.from({ length: 6_000 }, (_, i) => pruned.decisionLog!.append(recordOf({ timestamp: base + i, context: { padding } }))));

      const response = await fetch(`${pruned.url}/v1/decisions/export`, { headers: { authorization: `Bearer ${readToken}` } });
      expect(response.status).toBe(200);
      const reader = response.body!.getReader();
      let text = new TextDecoder().decode((await reader.read()).value);
      // Retention deletes the 5,000 oldest, which the export (newest first) has not reached.
      expect(await pruned.decisionLog!.prune(base + 5_000 + 86_400_000)).toBe(5_000);
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) text += new TextDecoder().decode(chunk.value);

      const lines = text.trimEnd().split('\n').map((line) => JSON.parse(line) as Json);
      expect(lines.at(-1)).toMatchObject({ code: 'decision_export_incomplete', status: 409 });
      expect(lines.length - 1).toBeLessThan(6_000);
      // A race to run again, logged as such rather than as a fault of the log.
      expect(captured.lines.filter((line) => line.msg === 'decision export stopped before its end')).toMatchObject([{ level: 40, err: { code: 'decision_export_incomplete' } }]);

      // Asked again, what retention kept exports whole.
      const again = await call(pruned, 'GET', '/v1/decisions/export');
      expect(again.text.trimEnd().split('\n').map((line) => (JSON.parse(line) as Json).decision_id)).toHaveLength(1_000);
    } finally {
      await pruned.close();
    }
  });

  it('answers the next page of a query retention pruned under 409 decision_query_incomplete, which the CLI reports', async () => {
    const pruned = await startTestArbiter({ ...adminConfig(), decision_log: { path: join(dir, 'pruned-under-query.db'), max_batch: 5_000, retention: { max_age_days: 1, check_interval_s: 86_400 } } });
    try {
      const base = Date.now() - 100_000;
      await Promise.all(Array.from({ length: 300 }, (_, i) => pruned.decisionLog!.append(recordOf({ timestamp: base + i }))));
      const first = await call(pruned, 'GET', '/v1/decisions?limit=100');
      const cursor = (first.body as { next_cursor: string }).next_cursor;
      // Retention deletes the 200 oldest: the next two pages' records.
      expect(await pruned.decisionLog!.prune(base + 200 + 86_400_000)).toBe(200);
      const next = await call(pruned, 'GET', `/v1/decisions?limit=100&cursor=${cursor}`);
      expect(next.status).toBe(409);
      expect(next.body).toMatchObject({ code: 'decision_query_incomplete', detail: expect.stringContaining('query again from the first page') });
      const listed = await run(process.execPath, ['src/cli/main.ts', 'decisions', 'query', '--limit', '100', '--cursor', cursor, '--url', pruned.url, '--token', readToken]).then(
        () => ({ code: 0, stderr: '' }),
        (error: { code: number; stderr: string }) => error,
      );
      expect(listed.code).toBe(1);
      expect(listed.stderr).toContain('decision_query_incomplete');
      expect(listed.stderr).toContain('run the query again without --cursor');
    } finally {
      await pruned.close();
    }
  });
});

describe('a decision log record damaged outside Arbiter', () => {
  it('is named by seq when an integer column was edited past 2^53 (node:sqlite cannot read it), the CLI included', async () => {
    await withDamagedRecord('too-big.db', 3, 'timestamp = 9223372036854775807', async (damaged, victim) => {
      // The row sorts first: every unfiltered first page meets it.
      await expectCorruptAnswers(damaged, ['/v1/decisions', '/v1/decisions?action=read', `/v1/decisions/${victim}`]);
      const exported = await call(damaged, 'GET', '/v1/decisions/export');
      expect(exported.status).toBe(200);
      expect(exported.text.split('\n').filter(Boolean).map((line) => JSON.parse(line) as Json)).toMatchObject([{ code: 'decision_log_corrupt', seq: 2 }]);

      for (const args of [['get', victim], ['query']]) {
        const answer = await run(process.execPath, ['src/cli/main.ts', 'decisions', ...args, '--url', damaged.url, '--token', readToken]).then(
          () => ({ code: 0, stderr: '' }),
          (error: { code: number; stderr: string }) => ({ code: error.code, stderr: error.stderr }),
        );
        expect(answer.code, args[0]).toBe(1);
        expect(answer.stderr, args[0]).toContain('decision_log_corrupt');
        expect(answer.stderr, args[0]).toContain('seq 2');
      }
    });
  });

  it('stopping an export is logged as a fault: its 200 went out before the record was met', async () => {
    const captured = capturingLogger();
    await withDamagedRecord(
      'damaged-logged.db',
      3,
      `body = '{"decision_id": tru'`,
      async (damaged) => {
        const exported = await call(damaged, 'GET', '/v1/decisions/export');
        expect(exported.status).toBe(200);
        expect(captured.lines.filter((line) => line.msg === 'decision export stopped before its end')).toMatchObject([
          // The request id the auditor was answered with finds this line, as for any admin fault.
          { level: 50, path: '/v1/decisions/export', request_id: exported.headers.get('x-request-id'), seq: 2, err: { code: 'decision_log_corrupt' }, admin: { sub: expect.any(String) } },
        ]);
      },
      captured.logger,
    );
  });

  it('is named by seq when read, ends an export with an error record the CLI reports, and fails verify', async () => {
    await withDamagedRecord('damaged.db', 3, `body = '{"decision_id": tru'`, async (damaged, victim) => {
      await expectCorruptAnswers(damaged, ['/v1/decisions', `/v1/decisions/${victim}`]);

      const exported = await call(damaged, 'GET', '/v1/decisions/export');
      expect(exported.status).toBe(200);
      const lines = exported.text.split('\n');
      expect(lines.pop()).toBe('');
      expect(lines.map((line) => JSON.parse(line) as Json)).toMatchObject([{ seq: 3 }, { type: 'urn:arbiter:problem:decision_log_corrupt', code: 'decision_log_corrupt', seq: 2 }]);

      const out = join(dir, 'damaged.ndjson');
      const cliExport = await run(process.execPath, ['src/cli/main.ts', 'decisions', 'export', '--url', damaged.url, '--token', readToken, '--out', out]).then(
        () => ({ code: 0, stderr: '' }),
        (error: { code: number; stderr: string }) => ({ code: error.code, stderr: error.stderr }),
      );
      expect(cliExport.code).toBe(1);
      expect(cliExport.stderr).toContain('decision_log_corrupt');
      expect(cliExport.stderr).toContain('seq 2');
      expect(cliExport.stderr).toContain('after 1 decisions');

      expect((await call(damaged, 'GET', '/v1/decisions/verify')).body).toMatchObject({ ok: false, first_mismatch: { seq: 2, reason: 'hash_mismatch' } });
    });
  });

  it('is named by seq when its body is JSON but no longer a decision record, replay included', async () => {
    await withDamagedRecord('not-a-record.db', 2, `body = '{"decision_id": "' || decision_id || '", "input": 7}'`, async (damaged, victim) => {
      for (const [method, path] of [['GET', `/v1/decisions/${victim}`], ['GET', '/v1/decisions'], ['POST', `/v1/decisions/${victim}/replay`]] as const) {
        const answer = await call(damaged, method, path, method === 'POST' ? { body: {} } : {});
        expect(answer.status, path).toBe(500);
        expect(answer.body, path).toMatchObject({ code: 'decision_log_corrupt', seq: 2, detail: expect.stringContaining('not a decision record') });
      }
    });
  });
});
