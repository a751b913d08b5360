import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.ts';
import { ConfigError } from '../src/errors.ts';
import type { Arbiter } from '../src/server/start.ts';
import { startTestArbiter } from './support/arbiter.ts';

/** Open TCP connections that send nothing: each holds one of the listener's connection slots. */
async function flood(url: string, count: number): Promise<Socket[]> {
  const { hostname, port } = new URL(url);
  return Promise.all(
    Array.from({ length: count }, () => new Promise<Socket>((resolve, reject) => {
      const socket = connect(Number(port), hostname, () => resolve(socket));
      socket.on('error', reject);
    })),
  );
}

/** The status of GET `url`, or the error that kept it from answering (a connection closed on arrival). */
async function statusOf(url: string): Promise<number | string> {
  try {
    // A fresh connection each time: a kept-alive one would hold a slot the test means to count.
    const response = await fetch(url, { headers: { connection: 'close' }, signal: AbortSignal.timeout(3000) });
    await response.arrayBuffer();
    return response.status;
  } catch (error) {
    return (error as Error).name;
  }
}

/** Sample values by series (`name{labels}` exactly as exposed). */
async function scrape(url: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${url}/metrics`, { headers: { connection: 'close' } })).text();
  return new Map(text.split('\n').filter((line) => line !== '' && !line.startsWith('#')).map((line) => [line.slice(0, line.lastIndexOf(' ')), Number(line.slice(line.lastIndexOf(' ') + 1))]));
}

const sockets: Socket[] = [];
let arbiter: Arbiter | undefined;

/** Whether this machine has an IPv6 loopback to listen on (some containers have none). */
const hasIpv6Loopback = await new Promise<boolean>((resolve) => {
  const probe = createServer();
  probe.once('error', () => resolve(false));
  probe.listen(0, '::1', () => probe.close(() => resolve(true)));
});

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  await arbiter?.close();
  arbiter = undefined;
});

describe('server.diagnostic', () => {
  it('is off by default: one listener, as before', () => {
    expect(parseConfig({}).server.diagnostic).toBeUndefined();
  });

  it('answers liveness on its own listener while the decision port is full (server.max_connections)', async () => {
    arbiter = await startTestArbiter({ server: { max_connections: 5, diagnostic: { port: 0, max_connections: 3 } } });
    const diagnostic = arbiter.diagnosticUrl!;
    expect(diagnostic).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(diagnostic).not.toBe(arbiter.url);
    expect(await statusOf(`${arbiter.url}/healthz`)).toBe(200);

    // A connection flood on the decision port: every slot held, the next connection closed on arrival.
    sockets.push(...(await flood(arbiter.url, 5)));
    expect(await statusOf(`${arbiter.url}/healthz`)).not.toBe(200);
    // The probes on the diagnostic listener do not queue behind it: the pod is not restarted for being busy.
    expect(await statusOf(`${diagnostic}/healthz`)).toBe(200);
    expect(await statusOf(`${diagnostic}/readyz`)).toBe(200);
    const samples = await scrape(diagnostic);
    expect(samples.get('arbiter_connections_dropped_total')).toBeGreaterThanOrEqual(1);
    expect(samples.get('arbiter_diagnostic_connections_dropped_total')).toBe(0);

    // Its own cap, apart from the main one: filling it refuses diagnostic connections only.
    for (const socket of sockets.splice(0)) socket.destroy();
    sockets.push(...(await flood(diagnostic, 3)));
    expect(await statusOf(`${diagnostic}/healthz`)).not.toBe(200);
    for (const socket of sockets.splice(0)) socket.destroy();
    // The main listener notices its closed connections as they close: wait until a slot is free.
    await expect.poll(() => statusOf(`${arbiter!.url}/healthz`)).toBe(200);
    expect((await scrape(arbiter.url)).get('arbiter_diagnostic_connections_dropped_total')).toBeGreaterThanOrEqual(1);
  });

  it('serves health and metrics only; the probes stay on the main port too', async () => {
    arbiter = await startTestArbiter({ server: { diagnostic: { port: 0 } } });
    const diagnostic = arbiter.diagnosticUrl!;
    expect(await statusOf(`${diagnostic}/metrics`)).toBe(200);
    for (const path of ['/v1/decide', '/v1/data', '/openapi.json', '/v1/bundles']) expect(await statusOf(`${diagnostic}${path}`), path).toBe(404);
    const refused = await fetch(`${diagnostic}/v1/decide`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    expect([refused.status, refused.headers.get('content-type')]).toEqual([404, 'application/problem+json']);
    for (const path of ['/healthz', '/readyz', '/metrics']) expect(await statusOf(`${arbiter.url}${path}`), path).toBe(200);
  });

  it.skipIf(!hasIpv6Loopback)('answers a probe without a Host on an IPv6 address (server.diagnostic.host ::1)', async () => {
    arbiter = await startTestArbiter({ server: { diagnostic: { host: '::1', port: 0 } } });
    expect(arbiter.diagnosticUrl).toMatch(/^http:\/\/\[::1\]:\d+$/);
    // HTTP/1.0 without Host, as a bare TCP-level probe sends it: the URL falls back to the listen address.
    const socket = connect(Number(new URL(arbiter.diagnosticUrl!).port), '::1');
    socket.end('GET /healthz HTTP/1.0\r\n\r\n');
    let raw = '';
    for await (const chunk of socket) raw += String(chunk);
    expect(raw).toMatch(/^HTTP\/1\.[01] 200 /);
  });

  it('leaves /metrics off it when metrics.enabled is false', async () => {
    arbiter = await startTestArbiter({ server: { diagnostic: { port: 0 } }, metrics: { enabled: false } });
    expect(await statusOf(`${arbiter.diagnosticUrl!}/healthz`)).toBe(200);
    expect(await statusOf(`${arbiter.diagnosticUrl!}/metrics`)).toBe(404);
  });

  it('answers probes while the main listener drains (/readyz 503, /healthz 200), then closes', async () => {
    arbiter = await startTestArbiter({ server: { diagnostic: { port: 0 }, shutdown_timeout_s: 10 } });
    const diagnostic = arbiter.diagnosticUrl!;
    // A request in flight on the main listener: its body has not all arrived, so the drain waits for it.
    const [upload] = await flood(arbiter.url, 1);
    sockets.push(upload!);
    upload!.write(`POST /v1/decide HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{`);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const closing = arbiter.close();
    arbiter = undefined;
    await expect.poll(() => statusOf(`${diagnostic}/readyz`)).toBe(503);
    expect(await statusOf(`${diagnostic}/healthz`)).toBe(200);
    upload!.destroy();
    await closing;
    expect(await statusOf(`${diagnostic}/healthz`)).not.toBe(200);
  });

  it('is closed with the server', async () => {
    arbiter = await startTestArbiter({ server: { diagnostic: { port: 0 } } });
    const diagnostic = arbiter.diagnosticUrl!;
    await arbiter.close();
    arbiter = undefined;
    expect(await statusOf(`${diagnostic}/healthz`)).not.toBe(200);
  });

  it('names its own keys when it cannot listen', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = (taken.address() as AddressInfo).port;
      const busy = await startTestArbiter({ server: { diagnostic: { port } } }).then(async (started) => void (await started.close()), (error: unknown) => error);
      expect(busy).toMatchObject({ code: 'listen_failed', message: expect.stringContaining('server.diagnostic.port') });
    } finally {
      taken.close();
    }
    const gateway = { authentication: 'api_key', api_keys: [{ id: 'edge', sha256: 'ab'.repeat(32) }] };
    const unknown = await startTestArbiter({ server: { diagnostic: { host: '192.0.2.1', port: 0 } }, gateway }).then(async (started) => void (await started.close()), (error: unknown) => error);
    expect(unknown).toBeInstanceOf(ConfigError);
    expect((unknown as ConfigError).issues).toEqual([{ path: 'server.diagnostic.host', message: expect.stringContaining('192.0.2.1') }]);
  });

  it('refuses the decision port for it, naming server.diagnostic.port', () => {
    expect(() => parseConfig({ server: { port: 8181, diagnostic: { port: 8181 } } })).toThrow(
      expect.objectContaining({ issues: [expect.objectContaining({ path: 'server.diagnostic.port', message: expect.stringContaining('server.port') })] }),
    );
    expect(() => parseConfig({ server: { port: 8181, diagnostic: { port: 8282, max_connections: 0 } } })).toThrow(
      expect.objectContaining({ issues: [expect.objectContaining({ path: 'server.diagnostic.max_connections' })] }),
    );
  });
});
