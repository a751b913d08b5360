import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { connect, createServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.ts';
import { ConfigError } from '../src/errors.ts';
import { allowedHostsOf } from '../src/server/middleware/host-check.ts';
import type { Arbiter } from '../src/server/start.ts';
import { capturingLogger, startTestArbiter } from './support/arbiter.ts';

const DECIDE_BODY = { action: 'read', resource: { type: 'doc' }, policy: 'echo' };
const GATEWAY_KEY = 's3cret-gateway-key';
const API_KEY_GATEWAY = { authentication: 'api_key', api_keys: [{ id: 'kong-eu', sha256: createHash('sha256').update(GATEWAY_KEY).digest('hex') }] };
const REFUSED = 'request refused: Host not allowed';

let arbiter: Arbiter | undefined;

/** Whether this machine has an IPv6 loopback to listen on (some containers have none). */
const hasIpv6Loopback = await new Promise<boolean>((resolve) => {
  const probe = createServer();
  probe.once('error', () => resolve(false));
  probe.listen(0, '::1', () => probe.close(() => resolve(true)));
});

/** The raw answer to an HTTP/1.0 GET of `path` without Host, as an old client or probe sends it. */
async function withoutHost(host: string, port: number, path: string): Promise<string> {
  const socket = connect(port, host);
  socket.end(`GET ${path} HTTP/1.0\r\n\r\n`);
  let raw = '';
  for await (const chunk of socket) raw += String(chunk);
  return raw;
}

afterEach(async () => {
  await arbiter?.close();
  arbiter = undefined;
});

interface Answer {
  status: number;
  contentType: string | undefined;
  body: Record<string, any> | undefined;
}

/**
 * A request to `base` carrying the Host header `host`, as a browser sends it to a page's origin:
 * fetch will not let a caller set Host, node:http does. POSTs send `body` as JSON.
 */
function withHost(base: string, host: string, path: string, options: { method?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
    const request = httpRequest(`${base}/`, {
      method: options.method ?? (payload === undefined ? 'GET' : 'POST'),
      path,
      headers: { host, connection: 'close', ...(payload !== undefined && { 'content-type': 'application/json' }), ...options.headers },
    });
    request.on('error', reject);
    request.on('response', (response) => {
      let text = '';
      response.on('data', (chunk: Buffer) => (text += chunk.toString()));
      response.on('end', () => {
        const contentType = response.headers['content-type'];
        resolve({ status: response.statusCode!, contentType, body: text && contentType?.includes('json') ? (JSON.parse(text) as Record<string, any>) : undefined });
      });
    });
    request.end(payload);
  });
}

/** Sample values by series (`name{labels}` exactly as exposed). */
async function scrape(url: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return new Map(text.split('\n').filter((line) => line !== '' && !line.startsWith('#')).map((line) => [line.slice(0, line.lastIndexOf(' ')), Number(line.slice(line.lastIndexOf(' ') + 1))]));
}

describe('Host check with gateway.authentication none (DNS rebinding)', () => {
  it('refuses a Host that is no loopback name, 421 host_not_allowed, before any policy runs: counted, logged, not a decision', async () => {
    const { logger, lines } = capturingLogger();
    arbiter = await startTestArbiter({}, { logger });
    const host = `attacker.example:${arbiter.port}`;
    const committed = arbiter.decisionLog!.stats.committed;

    const refused = await withHost(arbiter.url, host, '/v1/decide', { body: DECIDE_BODY, headers: { 'x-request-id': 'rebound-1' } });
    expect(refused.status).toBe(421);
    expect(refused.contentType).toBe('application/problem+json');
    expect(refused.body).toMatchObject({ type: 'urn:arbiter:problem:host_not_allowed', status: 421, code: 'host_not_allowed', host, instance: '/v1/decide' });
    expect(refused.body!.detail).toContain(host);
    expect(refused.body!.detail).toContain('server.allowed_hosts');

    // The whole listener: health, admin endpoints (before their bearer token is asked for), unknown paths.
    for (const [method, path] of [['GET', '/healthz'], ['GET', '/metrics'], ['GET', '/v1/bundles'], ['POST', '/v1/revocations'], ['GET', '/nowhere'], ['GET', '/openapi.json']] as const) {
      expect((await withHost(arbiter.url, host, path, { method })).body, `${method} ${path}`).toMatchObject({ code: 'host_not_allowed' });
    }
    // Names that only look like loopback ones.
    for (const other of ['localhost.attacker.example', 'attacker.example.localhost.evil', '127.0.0.1.nip.io', 'localhost.', `[::2]:${arbiter.port}`, '0.0.0.0']) {
      expect((await withHost(arbiter.url, other, '/v1/decide', { body: DECIDE_BODY })).status, other).toBe(421);
    }

    expect(arbiter.decisionLog!.stats.committed).toBe(committed);
    expect(lines.some((line) => line.decision_id !== undefined)).toBe(false);
    expect(lines.find((line) => line.msg === REFUSED)).toMatchObject({ level: 40, reason: 'host_not_allowed', host, request_id: 'rebound-1', method: 'POST', path: '/v1/decide' });
    expect((await scrape(arbiter.url)).get('arbiter_host_refusals_total')).toBe(7 + 6);
  });

  it('answers loopback spellings, with or without a port, and requests without a Host (no browser sends one)', async () => {
    arbiter = await startTestArbiter();
    const { port } = arbiter;
    for (const host of [`localhost:${port}`, 'localhost', `LocalHost:${port}`, `127.0.0.1:${port}`, '127.0.0.1', `127.8.9.10:${port}`, `[::1]:${port}`, '[::1]', `app.localhost:${port}`, 'a.b.localhost']) {
      const answer = await withHost(arbiter.url, host, '/v1/decide', { body: DECIDE_BODY });
      expect(answer.status, host).toBe(200);
      expect(answer.body, host).toHaveProperty('decision_id');
    }
    // HTTP/1.0 without Host: the URL falls back to the listen address.
    expect(await withoutHost('127.0.0.1', port, '/healthz')).toMatch(/^HTTP\/1\.[01] 200 /);
  });

  it.skipIf(!hasIpv6Loopback)('answers a request without a Host on an IPv6 listen address (server.host ::1)', async () => {
    arbiter = await startTestArbiter({ server: { host: '::1' } });
    expect(await withoutHost('::1', arbiter.port, '/healthz')).toMatch(/^HTTP\/1\.[01] 200 /);
  });

  it('answers the names listed in server.allowed_hosts, any port; a leading dot lists a name and its subdomains', async () => {
    arbiter = await startTestArbiter({ server: { allowed_hosts: ['Arbiter.Test', '.dev.example', '[FD00::7]', '192.0.2.10'] } });
    const { port } = arbiter;
    for (const host of [`arbiter.test:${port}`, 'ARBITER.TEST', 'dev.example', `api.dev.example:${port}`, 'a.b.dev.example', '[fd00::7]:8181', '192.0.2.10', `localhost:${port}`]) {
      expect((await withHost(arbiter.url, host, '/v1/decide', { body: DECIDE_BODY })).status, host).toBe(200);
    }
    for (const host of ['attacker.example', 'www.arbiter.test', 'evil-dev.example', 'dev.example.attacker.example', '192.0.2.11']) {
      expect((await withHost(arbiter.url, host, '/v1/decide', { body: DECIDE_BODY })).status, host).toBe(421);
    }
  });

  it('does not check the diagnostic listener: probes name it by the pod address', async () => {
    arbiter = await startTestArbiter({ server: { diagnostic: { port: 0 } } });
    const probe = `10.1.2.3:${new URL(arbiter.diagnosticUrl!).port}`;
    expect((await withHost(arbiter.diagnosticUrl!, probe, '/healthz')).status).toBe(200);
    expect((await withHost(arbiter.diagnosticUrl!, probe, '/readyz')).status).toBe(200);
    expect((await withHost(arbiter.diagnosticUrl!, probe, '/metrics')).status).toBe(200);
    expect((await withHost(arbiter.url, probe, '/healthz')).status).toBe(421);
  });

  it('documents the refusal on every operation in the OpenAPI document', async () => {
    arbiter = await startTestArbiter();
    const spec = (await (await fetch(`${arbiter.url}/openapi.json`)).json()) as Record<string, any>;
    for (const [path, method] of [['/v1/decide', 'post'], ['/healthz', 'get'], ['/v1/bundles', 'get']] as const) {
      expect(spec.paths[path][method].responses['421'].description, path).toContain('host_not_allowed');
    }
  });
});

describe('Host check with gateway authentication', () => {
  it('is off unless server.allowed_hosts is set: any Host is answered as before', async () => {
    const { logger, lines } = capturingLogger();
    arbiter = await startTestArbiter({ gateway: API_KEY_GATEWAY }, { logger });
    const host = `attacker.example:${arbiter.port}`;
    expect((await withHost(arbiter.url, host, '/v1/decide', { body: DECIDE_BODY, headers: { 'x-api-key': GATEWAY_KEY } })).status).toBe(200);
    expect((await withHost(arbiter.url, host, '/v1/decide', { body: DECIDE_BODY })).body).toMatchObject({ code: 'gateway_unauthenticated' });
    expect((await withHost(arbiter.url, host, '/healthz')).status).toBe(200);
    expect(lines.some((line) => line.msg === REFUSED)).toBe(false);
    expect((await scrape(arbiter.url)).get('arbiter_host_refusals_total')).toBe(0);
    const spec = (await (await fetch(`${arbiter.url}/openapi.json`)).json()) as Record<string, any>;
    expect(spec.paths['/v1/decide'].post.responses['421']).toBeUndefined();
  });

  it('is on when server.allowed_hosts is set, even empty: loopback names and the listed names pass', async () => {
    arbiter = await startTestArbiter({ gateway: API_KEY_GATEWAY, server: { allowed_hosts: ['pdp.internal'] } });
    const { port } = arbiter;
    const asGateway = { body: DECIDE_BODY, headers: { 'x-api-key': GATEWAY_KEY } };
    expect((await withHost(arbiter.url, `attacker.example:${port}`, '/v1/decide', asGateway)).body).toMatchObject({ code: 'host_not_allowed' });
    for (const host of [`pdp.internal:${port}`, `localhost:${port}`, `127.0.0.1:${port}`]) {
      expect((await withHost(arbiter.url, host, '/v1/decide', asGateway)).status, host).toBe(200);
    }
    await arbiter.close();
    arbiter = await startTestArbiter({ gateway: API_KEY_GATEWAY, server: { allowed_hosts: [] } });
    expect((await withHost(arbiter.url, 'pdp.internal', '/v1/decide', asGateway)).status).toBe(421);
    expect((await withHost(arbiter.url, `localhost:${arbiter.port}`, '/v1/decide', asGateway)).status).toBe(200);
  });

  it('answers a request without a Host on a wildcard listen address: no browser sends one, and an old probe may', async () => {
    arbiter = await startTestArbiter({ gateway: API_KEY_GATEWAY, server: { host: '0.0.0.0', allowed_hosts: ['pdp.internal'] } });
    expect(await withoutHost('127.0.0.1', arbiter.port, '/healthz')).toMatch(/^HTTP\/1\.[01] 200 /);
    expect((await withHost(`http://127.0.0.1:${arbiter.port}`, `attacker.example:${arbiter.port}`, '/healthz')).status).toBe(421);
  });
});

describe('what the main listener answers (allowedHostsOf)', () => {
  const of = (authentication: 'none' | 'api_key', host: string, allowed?: string[]) =>
    allowedHostsOf({ server: { host, ...(allowed && { allowed_hosts: allowed }) }, gateway: { authentication } } as Parameters<typeof allowedHostsOf>[0]);

  it('checks with authentication none, and with authentication only when server.allowed_hosts is set', () => {
    expect(of('none', '127.0.0.1')).toEqual([]);
    expect(of('api_key', '0.0.0.0')).toBeUndefined();
    expect(of('api_key', '0.0.0.0', [])).toEqual([]);
  });

  it('answers the listen address too when it names one interface (arbiter health and clients use it)', () => {
    expect(of('api_key', '10.0.0.5', ['pdp.internal'])).toEqual(['pdp.internal', '10.0.0.5']);
    expect(of('api_key', 'FD00::5', [])).toEqual(['[fd00::5]']);
    expect(of('api_key', 'PDP.Internal', [])).toEqual(['pdp.internal']);
    expect(of('api_key', '::', ['pdp.internal'])).toEqual(['pdp.internal']);
  });
});

describe('server.allowed_hosts validation', () => {
  function issuesOf(allowed: unknown): { path: string; message: string }[] {
    try {
      parseConfig({ server: { allowed_hosts: allowed } });
    } catch (error) {
      if (error instanceof ConfigError) return [...error.issues];
      throw error;
    }
    return [];
  }

  it.each([
    ['arbiter.test:8181', /port/],
    ['http://arbiter.test', /scheme/],
    ['arbiter.test/v1', /path/],
    ['fd00::1', /brackets/],
    ['*.example.com', /\.example\.com/],
    ['', /empty/],
    ['.', /host name/],
    ['user@arbiter.test', /host name/],
    ['arbiter test', /host name/],
    ['.192.0.2.10', /IP address/],
  ])('refuses %j, naming the key', (entry, message) => {
    const issues = issuesOf(['ok.example', entry]);
    expect(issues).toEqual([{ path: 'server.allowed_hosts.1', message: expect.stringMatching(message) }]);
  });

  it('refuses a value that is not a list of names', () => {
    expect(issuesOf('arbiter.test').map((issue) => issue.path)).toEqual(['server.allowed_hosts']);
    expect(issuesOf(true).map((issue) => issue.path)).toEqual(['server.allowed_hosts']);
  });

  it('stops start-up naming the key', async () => {
    await expect(startTestArbiter({ server: { allowed_hosts: ['arbiter.test:8181'] } })).rejects.toThrow(/server\.allowed_hosts\.0/);
  });
});
