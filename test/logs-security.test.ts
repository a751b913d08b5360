import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { parseConfig } from '../src/config/load.ts';
import type { Arbiter } from '../src/server/start.ts';
import { adminCall, capturingLogger, postJson, startTestArbiter, tempDir } from './support/arbiter.ts';
import { build } from './support/bundle-sources.ts';
import { TestIssuer } from './support/issuer.ts';
import { whileLocked } from './support/sqlite-lock.ts';

/**
 * What Arbiter writes where others read it (answers to gateways, /readyz, the decision log,
 * the process log) must not carry the credentials it was configured with.
 */
describe('a credential in a jwks_uri', () => {
  const opened: { close(): Promise<void> | void }[] = [];
  afterEach(async () => {
    for (const item of opened.splice(0).reverse()) await item.close();
  });

  it('refuses user:password@, which fetch refuses with the whole URL (password included) in its error', () => {
    const issuer = { issuer: 'https://idp.example', jwks_uri: 'https://arbiter:s3cr3t-jwks@idp.example/jwks', audiences: ['api'], algorithms: ['ES256'] };
    expect(() => parseConfig({ issuers: [issuer] })).toThrow(/issuers\.0\.jwks_uri: must not carry user:password@/);
    expect(() => parseConfig({ admin: { issuers: [{ ...issuer, audiences: ['admin'] }] } })).toThrow(/admin\.issuers\.0\.jwks_uri: must not carry user:password@/);
  });

  it('keeps a query-string credential out of denies, the decision log, /readyz and the process log when the key set is refused', async () => {
    const secret = 'jwks-query-s3cr3t';
    // An identity provider in trouble: its key set is past the 1 MiB a key set may take.
    const server: Server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(`{"keys":[${' '.repeat(1024 * 1024)}]}`));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    opened.push({ close: () => new Promise<void>((resolve) => server.close(() => resolve())) });
    const jwksUri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json?key=${secret}`;
    const idp = await TestIssuer.create('https://idp.test.example');
    const { logger, lines } = capturingLogger();
    const config = { issuer: idp.issuer, jwks_uri: jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'] };
    const arbiter: Arbiter = await startTestArbiter({ issuers: [config], admin: { issuers: [{ ...config, audiences: ['arbiter-admin'] }] } }, { logger });
    opened.push(arbiter);

    const decided = await postJson(`${arbiter.url}/v1/decide`, { token: await idp.sign({ scope: 'read' }), action: 'read', resource: { type: 'doc' } });
    expect(decided.body).toMatchObject({ allow: false, reasons: [{ code: 'token_keys_unavailable' }] });
    // The message still says what failed, and where: the URL without its query.
    expect(decided.body!.reasons[0].message).toContain(`/jwks.json?… answers more than`);
    const admin = await fetch(`${arbiter.url}/v1/bundles`, { headers: { authorization: `Bearer ${await idp.sign({ aud: 'arbiter-admin', scope: 'arbiter.bundles.read' })}` } });
    expect(admin.status).toBe(503);
    const ready = await fetch(`${arbiter.url}/readyz`);
    const record = await arbiter.decisionLog!.get(decided.body!.decision_id as string);

    for (const text of [JSON.stringify(decided.body), await admin.text(), await ready.text(), JSON.stringify(record), JSON.stringify(lines)]) {
      expect(text).not.toContain(secret);
    }
  });
});

describe('a server fault answered by an admin endpoint', () => {
  it('is an error-level line naming the fault, not only an info access line', async () => {
    const admins = await TestIssuer.create('https://admins.test.example');
    await admins.serve();
    const dir = tempDir('arbiter-logs-');
    const logPath = join(dir, 'decisions.db');
    const { logger, lines } = capturingLogger();
    const arbiter = await startTestArbiter(
      { admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] }, decision_log: { path: logPath } },
      { logger },
    );
    try {
      for (let i = 0; i < 3; i++) await postJson(`${arbiter.url}/v1/decide`, { action: 'read', resource: { type: 'doc', id: `d-${i}` } });
      // Changed outside Arbiter: evidence of tampering, or of a failing disk.
      const db = new DatabaseSync(logPath);
      const victim = (db.prepare('SELECT decision_id FROM decisions WHERE seq = 2').get() as { decision_id: string }).decision_id;
      db.prepare(`UPDATE decisions SET body = '{"decision_id": tru' WHERE seq = 2`).run();
      db.close();
      const token = await admins.sign({ sub: 'auditor@example', aud: 'arbiter-admin', scope: 'arbiter.decisions.read' });
      const answer = await adminCall(arbiter.url, token, 'GET', `/v1/decisions/${victim}`);
      expect(answer.body).toMatchObject({ status: 500, code: 'decision_log_corrupt' });
      const faults = lines.filter((line) => line.level >= 50);
      expect(faults).toEqual([
        expect.objectContaining({ path: `/v1/decisions/${victim}`, status: 500, code: 'decision_log_corrupt', detail: expect.stringContaining('seq 2'), admin: { iss: admins.issuer, sub: 'auditor@example' } }),
      ]);
    } finally {
      await arbiter.close();
      await admins.close();
    }
  });
});

describe('admin tokens that prove nobody', () => {
  it('are logged at most once a second per reason, so a flood of guesses cannot flood the log', async () => {
    const admins = await TestIssuer.create('https://admins.test.example');
    await admins.serve();
    const { logger, lines } = capturingLogger();
    const arbiter = await startTestArbiter({ admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] } }, { logger });
    try {
      const forged = `${(await admins.sign({ aud: 'arbiter-admin', scope: 'arbiter.bundles.read' })).slice(0, -4)}AAAA`;
      const answers = await Promise.all(Array.from({ length: 50 }, () => fetch(`${arbiter.url}/v1/bundles`, { headers: { authorization: `Bearer ${forged}` } }).then((res) => res.status)));
      expect(answers).toEqual(Array(50).fill(401));
      const rejected = () => lines.filter((line) => line.msg?.startsWith('admin token rejected'));
      // One whole line, then one summary counting the rest once the second is over.
      await expect.poll(() => rejected().reduce((sum, line) => sum + (line.suppressed ?? 1), 0), { timeout: 3000 }).toBe(50);
      expect(rejected().length).toBeLessThanOrEqual(3);
      expect(rejected()[0]).toMatchObject({ level: 40, path: '/v1/bundles', iss: admins.issuer });
    } finally {
      await arbiter.close();
      await admins.close();
    }
  });
});

describe('the process log line of a decision', () => {
  it('shows a prefix of a long input field, while the decision record keeps it whole', async () => {
    const { logger, lines } = capturingLogger();
    const arbiter = await startTestArbiter({}, { logger });
    try {
      const id = `doc-${'x'.repeat(996)}`;
      const decided = await postJson(`${arbiter.url}/v1/decide`, { action: 'read', resource: { type: 'doc', id } });
      expect(decided.status).toBe(200);
      const line = lines.find((l) => l.msg === 'decision' && l.decision_id === decided.body!.decision_id)!;
      expect(line.resource).toEqual({ type: 'doc', id: `${id.slice(0, 256)}…(744 more)` });
      const record = await arbiter.decisionLog!.get(decided.body!.decision_id as string);
      expect(record?.input).toMatchObject({ resource: { id } });
    } finally {
      await arbiter.close();
    }
  });
});

describe('the process log line of an AuthZEN decision', () => {
  const evaluation = (id: string) => ({ subject: { type: 'user', id }, action: { name: 'read' }, resource: { type: 'doc', id: '1' } });
  const decisionLine = (lines: Record<string, any>[], answer: Awaited<ReturnType<typeof postJson>>) =>
    lines.find((line) => line.msg === 'decision' && line.decision_id === answer.body!.context.decision_id)!;

  it('names the subject the PEP asked about (its type and id), masked and clipped as the other fields are', async () => {
    const { logger, lines } = capturingLogger();
    const arbiter = await startTestArbiter({ authzen: { default_bundle: 'azecho' } }, { logger });
    try {
      const asked = await postJson(`${arbiter.url}/access/v1/evaluation`, evaluation('alice@acme.example'));
      expect(asked.status).toBe(200);
      expect(decisionLine(lines, asked)).toMatchObject({ endpoint: '/access/v1/evaluation', subject: { type: 'user', id: 'alice@acme.example' } });
      const id = `user-${'x'.repeat(995)}`;
      const long = await postJson(`${arbiter.url}/access/v1/evaluation`, evaluation(id));
      expect(decisionLine(lines, long).subject).toEqual({ type: 'user', id: `${id.slice(0, 256)}…(744 more)` });
    } finally {
      await arbiter.close();
    }
    const masked = capturingLogger();
    const hashing = await startTestArbiter({ authzen: { default_bundle: 'azecho' }, decision_log: { mask: [{ pointer: '/input/subject/id', mode: 'hash' }] } }, { logger: masked.logger });
    try {
      const asked = await postJson(`${hashing.url}/access/v1/evaluation`, evaluation('alice@acme.example'));
      const line = decisionLine(masked.lines, asked);
      expect(line.subject).toEqual({ type: 'user', id: expect.stringMatching(/^sha256:[0-9a-f]{64}$/) });
      expect(JSON.stringify(masked.lines)).not.toContain('alice@acme.example');
    } finally {
      await hashing.close();
    }
  });
});

describe('a JWKS fetch that fails', () => {
  it('is logged at warn, naming the issuer, the URL without its query and why, once per fetch', async () => {
    const { logger, lines } = capturingLogger();
    const idp = await TestIssuer.create('https://idp.test.example');
    // Nothing listens there: every fetch fails, and every token of the issuer denies token_keys_unavailable.
    const jwksUri = 'http://127.0.0.1:9/jwks.json?key=jwks-s3cr3t';
    const arbiter = await startTestArbiter({ issuers: [{ issuer: idp.issuer, jwks_uri: jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'] }] }, { logger });
    try {
      const decided = await postJson(`${arbiter.url}/v1/decide`, { token: await idp.sign({ scope: 'read' }), action: 'read', resource: { type: 'doc' } });
      expect(decided.body).toMatchObject({ allow: false, reasons: [{ code: 'token_keys_unavailable' }] });
      const failed = lines.filter((line) => line.msg === 'JWKS fetch failed');
      expect(failed).toEqual([
        expect.objectContaining({ level: 40, iss: idp.issuer, jwks_uri: 'http://127.0.0.1:9/jwks.json?…', err: expect.objectContaining({ message: expect.stringContaining('ECONNREFUSED') }) }),
      ]);
      expect(JSON.stringify(lines)).not.toContain('jwks-s3cr3t');
    } finally {
      await arbiter.close();
    }
  });
});

describe('an AuthZEN search whose candidates entrypoint fails', () => {
  it('answers 500 and logs it at error, with the request id, the bundle and what failed', async () => {
    // No decision is made when the candidates cannot be listed: without this line the 500 shows nowhere on the server.
    const dir = tempDir('arbiter-logs-');
    const src = join(dir, 'src-azbroken');
    mkdirSync(src);
    writeFileSync(join(src, 'policy.rego'), 'package azbroken\n\n# METADATA\n# entrypoint: true\ndecision := {"allow": true, "reasons": [{"code": "granted"}]}\n');
    writeFileSync(join(src, 'candidates.rego'), 'package azbroken.candidates\n\n# METADATA\n# entrypoint: true\nactions := "not a list"\n');
    writeFileSync(join(src, '.manifest'), JSON.stringify({ roots: ['azbroken'], metadata: { authzen: { evaluation: 'azbroken/decision', search: { action: 'azbroken/candidates/actions' } } } }));
    const bundles = join(dir, 'bundles');
    mkdirSync(bundles);
    build(src, join(bundles, 'azbroken.tar.gz'), 'b1');
    copyFileSync(join(inject('bundlesDir'), 'simple.tar.gz'), join(bundles, 'simple.tar.gz'));
    const { logger, lines } = capturingLogger();
    const arbiter = await startTestArbiter({ bundles: { dir: bundles }, authzen: { default_bundle: 'azbroken' } }, { logger });
    try {
      const res = await postJson(`${arbiter.url}/access/v1/search/action`, { subject: { type: 'user', id: 'alice' }, resource: { type: 'doc', id: '1' } }, { 'x-request-id': 'search-1' });
      expect(res).toMatchObject({ status: 500, body: { code: 'policy_contract_violation' } });
      expect(lines.find((line) => line.msg === 'AuthZEN search failed')).toMatchObject({
        level: 50,
        request_id: 'search-1',
        endpoint: '/access/v1/search/action',
        bundle: 'azbroken',
        code: 'policy_contract_violation',
        detail: expect.stringContaining('azbroken/candidates/actions'),
      });
    } finally {
      await arbiter.close();
    }
  });
});

describe('the error line of a decision the log could not record', () => {
  it('names the request id and the bundle, as the decision line does: at logging.level error it is the only line', async () => {
    const path = join(tempDir('arbiter-logs-'), 'decisions.db');
    const { logger, lines } = capturingLogger();
    const arbiter = await startTestArbiter({ decision_log: { path, busy_timeout_ms: 100 } }, { logger });
    try {
      const denied = await whileLocked(path, () => postJson(`${arbiter.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } }, { 'x-request-id': 'gw-audit-1' }));
      expect(denied.body).toMatchObject({ allow: false, reasons: [{ code: 'audit_unavailable' }] });
      expect(lines.find((line) => line.msg === 'decision could not be recorded: denied')).toMatchObject({
        level: 50,
        decision_id: denied.body!.decision_id,
        request_id: 'gw-audit-1',
        endpoint: '/v1/decide',
        bundle: 'simple',
      });
    } finally {
      await arbiter.close();
    }
  });
});
