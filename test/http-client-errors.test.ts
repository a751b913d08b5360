import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Arbiter } from '../src/server/start.ts';
import { capturingLogger, postJson, startTestArbiter } from './support/arbiter.ts';

/** What reaches the server as bytes, not as a well-formed request: answered as problems, never logged as faults. */
let arbiter: Arbiter;
let lines: Record<string, any>[];

beforeAll(async () => {
  const captured = capturingLogger();
  lines = captured.lines;
  arbiter = await startTestArbiter({ server: { request_timeout_s: 1 } }, { logger: captured.logger });
});

afterAll(async () => {
  await arbiter?.close();
});

/** Writes raw bytes, optionally hangs up after `closeAfterMs`, and returns everything the server answered. */
function raw(data: Buffer | string, closeAfterMs?: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(Number(new URL(arbiter.url).port), '127.0.0.1', () => {
      socket.write(data);
      if (closeAfterMs !== undefined) setTimeout(() => socket.destroy(), closeAfterMs);
    });
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    socket.on('error', () => undefined);
    setTimeout(() => socket.destroy(), 5000);
  });
}

const bodyOf = (answer: string) => JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;

describe('requests the HTTP parser refuses', () => {
  it('a raw non-ASCII byte in the request target: 400 malformed_request as problem+json', async () => {
    const answer = await raw(Buffer.concat([Buffer.from('GET /healthz?sub='), Buffer.from([0xe9]), Buffer.from(' HTTP/1.1\r\nHost: localhost\r\n\r\n')]));
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(answer).toMatch(/content-type: application\/problem\+json/i);
    expect(bodyOf(answer)).toMatchObject({ status: 400, code: 'malformed_request' });
  });

  it('headers past the limit: 431 headers_too_large as problem+json', async () => {
    const answer = await raw(`GET /healthz HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${'a'.repeat(100_000)}\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 431 /);
    expect(bodyOf(answer)).toMatchObject({ status: 431, code: 'headers_too_large' });
  });

  it('a body that stalls past server.request_timeout_s: 408 request_timeout as problem+json', async () => {
    const answer = await raw('POST /v1/decide HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"act');
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(bodyOf(answer)).toMatchObject({ status: 408, code: 'request_timeout' });
  });
});

describe('request targets the HTTP adapter refuses before the app runs', () => {
  it.each([
    ['a backslash in the path', 'GET /v1\\decide HTTP/1.1\r\nHost: localhost\r\n\r\n'],
    ['the asterisk form', 'OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n'],
    ['a target that is not a path', 'GET healthz HTTP/1.1\r\nHost: localhost\r\n\r\n'],
    ['a Host header that is not a host', 'GET /healthz HTTP/1.1\r\nHost: a@b\r\n\r\n'],
  ])('%s: 400 malformed_request as problem+json', async (_label, request) => {
    const answer = await raw(request, 1000);
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(answer).toMatch(/content-type: application\/problem\+json/i);
    expect(bodyOf(answer)).toMatchObject({ status: 400, code: 'malformed_request' });
  });
});

describe('CONNECT, which Node hands to no request handler', () => {
  it.each([
    ['an authority target', 'CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n'],
    ['a path target', 'CONNECT /v1/decide HTTP/1.1\r\nHost: localhost\r\n\r\n'],
  ])('%s: 405 method_not_allowed as problem+json, not a dropped connection', async (_label, request) => {
    const answer = await raw(request, 1000);
    expect(answer).toMatch(/^HTTP\/1\.1 405 /);
    expect(answer).toMatch(/content-type: application\/problem\+json/i);
    expect(answer).toMatch(/\r\nallow: ?\r\n/i);
    expect(bodyOf(answer)).toMatchObject({ status: 405, code: 'method_not_allowed' });
    expect((await fetch(`${arbiter.url}/healthz`)).status).toBe(200);
  });
});

describe('connections that send nothing', () => {
  it('a connection that never sends a byte is closed after server.request_timeout_s, as a stalled request is', async () => {
    // Node's headersTimeout only starts at a request's first byte: without a timeout of its own,
    // a connection that sends nothing holds a file descriptor for as long as the client likes,
    // and enough of them (each costs the client nothing) leave none for the next gateway.
    const sockets = Array.from({ length: 50 }, () => connect(Number(new URL(arbiter.url).port), '127.0.0.1').on('error', () => undefined));
    const started = performance.now();
    const closedAfter = await Promise.all(sockets.map((socket) => new Promise<number>((resolve) => socket.on('close', () => resolve(performance.now() - started)))).map((closed, i) =>
      Promise.race([closed, new Promise<number>((resolve) => setTimeout(() => (sockets[i]!.destroy(), resolve(Infinity)), 6000))]),
    ));
    // request_timeout_s is 1 here; Node checks timeouts every second.
    expect(Math.max(...closedAfter)).toBeLessThan(4000);
    expect((await fetch(`${arbiter.url}/healthz`)).status).toBe(200);
  });

  it('the timeout before the first byte does not cut a request that takes its time once it arrived', async () => {
    // A decision whose evaluation outlasts request_timeout_s (a slow policy within its
    // deadline) is answered: the connection is idle only while the server works on it.
    const slow = await startTestArbiter({ server: { request_timeout_s: 1 }, engine: { deadline_ms: 3000, max_memory_mb: 2048 } });
    try {
      const started = performance.now();
      const answer = await postJson(`${slow.url}/v1/decide`, { action: 'read', resource: { type: 'doc' }, policy: 'spin', context: { spin: true } });
      expect(performance.now() - started).toBeGreaterThan(2500);
      expect(answer).toMatchObject({ status: 200, body: { allow: false, reasons: [{ code: 'policy_timeout' }] } });
    } finally {
      await slow.close();
    }
  });
});

it('a client that hangs up mid-body is not logged as a server fault', async () => {
  await raw('POST /v1/decide HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"act', 200);
  await new Promise((resolve) => setTimeout(resolve, 300));
  expect(lines.filter((line) => line.msg === 'unhandled error')).toEqual([]);
  expect(lines.some((line) => line.msg === 'client closed the connection before its request was complete')).toBe(true);
  expect((await fetch(`${arbiter.url}/healthz`)).status).toBe(200);
});

describe('the same on a keep-alive connection that answered a request before', () => {
  /** Sends a first request, then `second` on the same connection once the first is answered. */
  function afterAnAnsweredRequest(second: Buffer | string): Promise<string> {
    return new Promise((resolve) => {
      const socket = connect(Number(new URL(arbiter.url).port), '127.0.0.1', () => socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n'));
      const chunks: Buffer[] = [];
      let sent = false;
      socket.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        if (!sent) {
          sent = true;
          setTimeout(() => socket.write(second), 50);
        }
      });
      socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
      socket.on('error', () => undefined);
      setTimeout(() => socket.destroy(), 5000);
    });
  }

  it.each([
    ['headers past the limit', `GET /healthz HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${'a'.repeat(100_000)}\r\n\r\n`, 'HTTP/1.1 431'],
    ['a raw non-ASCII byte', Buffer.concat([Buffer.from('GET /healthz?sub='), Buffer.from([0xe9]), Buffer.from(' HTTP/1.1\r\nHost: localhost\r\n\r\n')]), 'HTTP/1.1 400'],
    ['a stalled body', 'POST /v1/decide HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"act', 'HTTP/1.1 408'],
  ])('%s on the second request gets its problem too', async (_label, second, status) => {
    const answer = await afterAnAnsweredRequest(second);
    expect(answer.match(/HTTP\/1\.1 \d+/g)).toEqual(['HTTP/1.1 200', status]);
  });
});

describe('server.max_connections', () => {
  it('closes a connection past the cap on arrival, counts and logs it, and accepts again once one closes', async () => {
    const captured = capturingLogger();
    const capped = await startTestArbiter({ server: { max_connections: 3 } }, { logger: captured.logger });
    const port = Number(new URL(capped.url).port);
    const open = () =>
      new Promise<Socket>((resolve) => {
        const socket = connect(port, '127.0.0.1', () => resolve(socket)).on('error', () => undefined);
      });
    const healthOn = (socket: Socket) =>
      new Promise<string>((resolve) => {
        socket.once('data', (chunk: Buffer) => resolve(chunk.toString('latin1')));
        socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
      });
    const closedWithin = (socket: Socket, ms: number) =>
      new Promise<boolean>((resolve) => {
        socket.on('close', () => resolve(true));
        setTimeout(() => resolve(false), ms);
      });
    try {
      // Each answers a request: the server has accepted all three.
      const held = [await open(), await open(), await open()];
      for (const socket of held) expect(await healthOn(socket)).toMatch(/^HTTP\/1\.1 200 /);
      const fourth = await open();
      expect(await closedWithin(fourth, 2000)).toBe(true);
      expect(await closedWithin(held[0]!, 200)).toBe(false);

      // Once one closes, the next connection is accepted (the server learns of the close a moment later).
      held[0]!.destroy();
      let scraped = '';
      await expect
        .poll(async () => (scraped = await fetch(`${capped.url}/metrics`).then((res) => res.text(), () => '')), { timeout: 3000 })
        .toMatch(/^arbiter_connections_dropped_total \d+$/m);
      // Scrapes tried before the server saw the close were dropped too.
      const dropped = Number(/^arbiter_connections_dropped_total (\d+)$/m.exec(scraped)![1]);
      expect(dropped).toBeGreaterThanOrEqual(1);
      // Logged whole the first time; repeats within a second are counted into one line after it.
      expect(captured.lines.find((line) => line.msg === 'connection refused: server.max_connections are open')).toMatchObject({ level: 40, reason: 'max_connections', max_connections: 3, remote_address: '127.0.0.1' });
      for (const socket of held) socket.destroy();
    } finally {
      await capped.close();
    }
  });

  it('a bad value stops start-up naming the key', async () => {
    await expect(startTestArbiter({ server: { max_connections: 0 } })).rejects.toThrow(/server\.max_connections/);
  });
});
