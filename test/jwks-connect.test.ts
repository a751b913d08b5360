import type { LookupAddress } from 'node:dns';
import { createServer, type RequestListener } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { isIP, type AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Arbiter } from '../src/server/start.ts';
import { adminCall, postJson, startTestArbiter, tempDir } from './support/arbiter.ts';
import { TestIssuer } from './support/issuer.ts';
import { trustedTestCertificate } from './support/test-ca.ts';

/**
 * A key set over plain http is held to where it connects, not to how jwks_uri spells the host:
 * the name is resolved once, every address must be this machine, and the connection goes to those
 * very addresses. A key set that crosses a network in clear text can be replaced on the way, and
 * a replaced key set is forged tokens accepted. This machine has only loopback, so the server is
 * given a resolver (StartOptions.resolveHost) that answers `localhost` with the address a test picks.
 */

const opened: { close(): Promise<void> | void }[] = [];
let tls: ReturnType<typeof trustedTestCertificate>;

beforeAll(() => {
  tls = trustedTestCertificate(tempDir('arbiter-jwks-connect-'), ['IP:127.0.0.1']);
}, 60_000);

afterAll(() => {
  tls?.untrust();
});

afterEach(async () => {
  for (const item of opened.splice(0).reverse()) await item.close();
});

/** A resolver answering each name with `answers(name, nth ask)`, and what it was asked. */
function resolver(answers: (hostname: string, asked: number) => string[]) {
  const asked: string[] = [];
  const resolve = async (hostname: string): Promise<LookupAddress[]> => {
    asked.push(hostname);
    return answers(hostname, asked.length).map((address) => ({ address, family: isIP(address) }));
  };
  return { resolve, asked };
}

async function idpOnLocalhost(name: string) {
  const idp = await TestIssuer.create(`https://${name}.test.example`);
  const port = new URL(await idp.serve()).port;
  opened.push(idp);
  return { idp, jwksUri: `http://localhost:${port}/jwks.json` };
}

async function start(raw: Record<string, unknown>, resolveHost: ReturnType<typeof resolver>['resolve']): Promise<Arbiter> {
  const arbiter = await startTestArbiter(raw, { resolveHost });
  opened.push(arbiter);
  return arbiter;
}

const request = (token: string) => ({ token, action: 'read', resource: { type: 'document', id: 'doc-1' } });
const issuerConfig = (idp: TestIssuer, jwksUri: string, extra: Record<string, unknown> = {}) => ({ issuer: idp.issuer, jwks_uri: jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'], ...extra });

describe('a key set over plain http', () => {
  it.each([
    ['another address', ['203.0.113.7']],
    ['this machine and another address', ['127.0.0.1', '203.0.113.7']],
  ])('is not fetched from a host whose name says loopback but resolves to %s: tokens deny token_keys_unavailable naming the address, and nothing is sent', async (_, addresses) => {
    const { idp, jwksUri } = await idpOnLocalhost('elsewhere');
    const { resolve, asked } = resolver(() => addresses);
    const arbiter = await start({ issuers: [issuerConfig(idp, jwksUri)] }, resolve);
    const res = await postJson(`${arbiter.url}/v1/decide`, request(await idp.sign({ scope: 'read' })));
    expect(res.body).toMatchObject({
      allow: false,
      reasons: [{ code: 'token_keys_unavailable', message: expect.stringContaining(`http://localhost:${new URL(jwksUri).port}/jwks.json resolves to 203.0.113.7, which is not connected to: plain http only to this machine`) }],
    });
    expect(asked).toContain('localhost');
    expect(idp.jwksFetches).toBe(0);
  });

  it('of the admin API\'s issuer is held to the same rule: admin calls answer 503 admin_keys_unavailable', async () => {
    const { idp, jwksUri } = await idpOnLocalhost('admins-elsewhere');
    const arbiter = await start({ admin: { issuers: [{ ...issuerConfig(idp, jwksUri), audiences: ['arbiter-admin'] }] } }, resolver(() => ['203.0.113.7']).resolve);
    const res = await adminCall(arbiter.url, await idp.sign({ scope: 'arbiter.bundles.read', aud: 'arbiter-admin' }), 'GET', '/v1/bundles');
    expect(res.status).toBe(503);
    expect(res.body).toMatchObject({ code: 'admin_keys_unavailable', detail: expect.stringContaining('which is not connected to: plain http only to this machine') });
    expect(idp.jwksFetches).toBe(0);
  });

  it('is fetched from the address its name resolved to when checked, not from another a second lookup would answer (DNS rebinding)', async () => {
    const { idp, jwksUri } = await idpOnLocalhost('rebinding');
    // Loopback when checked, elsewhere for any lookup after it: only a connection to the checked address verifies.
    const { resolve, asked } = resolver((_, nth) => (nth === 1 ? ['127.0.0.1'] : ['203.0.113.7']));
    const arbiter = await start({ issuers: [issuerConfig(idp, jwksUri)] }, resolve);
    const res = await postJson(`${arbiter.url}/v1/decide`, request(await idp.sign({ scope: 'read' })));
    expect(res.body).toMatchObject({ allow: true });
    expect(asked).toEqual(['localhost']);
    expect(idp.jwksFetches).toBe(1);
  });

});

/** A JWKS endpoint on 127.0.0.1 (https with the test CA's certificate unless `plain`) answering `handler`, counting its requests. */
async function endpoint(handler: RequestListener, plain = false) {
  let requests = 0;
  const listener: RequestListener = (req, res) => {
    requests += 1;
    handler(req, res);
  };
  const server = plain ? createServer(listener) : createHttpsServer(tls, listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  opened.push({ close: () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))) });
  return { url: `${plain ? 'http' : 'https'}://127.0.0.1:${port}/jwks.json`, requests: () => requests };
}

describe('a key set endpoint that stalls mid-body', () => {
  it.each([
    ['plain http', true],
    ['https', false],
  ])('is given up at jwks_timeout_ms over %s, its connection closed', async (_, plain) => {
    const idp = await TestIssuer.create('https://stalling.test.example');
    const closed = Promise.withResolvers<void>();
    const stalling = await endpoint((req, res) => {
      req.socket.on('close', () => closed.resolve());
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"keys": [');
    }, plain);
    const jwksUri = plain ? stalling.url.replace('127.0.0.1', 'localhost') : stalling.url;
    const arbiter = await start({ issuers: [issuerConfig(idp, jwksUri, { jwks_timeout_ms: 500 })] }, resolver(() => ['127.0.0.1']).resolve);
    const started = Date.now();
    const res = await postJson(`${arbiter.url}/v1/decide`, request(await idp.sign({ scope: 'read' })));
    expect(res.body).toMatchObject({ allow: false, reasons: [{ code: 'token_keys_unavailable' }] });
    expect(Date.now() - started).toBeLessThan(3000);
    await closed.promise;
    expect(stalling.requests()).toBe(1);
  });
});

describe('a key set over https that is compressed', () => {
  it('is held to 1 MiB as it inflates, not as it travels', async () => {
    const idp = await TestIssuer.create('https://deflating.test.example');
    // A valid key set padded past the limit, a few kB once gzipped: buffered whole, it would verify.
    const body = gzipSync(JSON.stringify({ ...idp.jwks(), padding: 'x'.repeat(4 * 1024 * 1024) }));
    const deflating = await endpoint((_req, res) => void res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': body.length }).end(body));
    const arbiter = await start({ issuers: [issuerConfig(idp, deflating.url)] }, resolver(() => []).resolve);
    const res = await postJson(`${arbiter.url}/v1/decide`, request(await idp.sign({ scope: 'read' })));
    expect(res.body).toMatchObject({ allow: false, reasons: [{ code: 'token_keys_unavailable', message: expect.stringContaining('answers more than 1048576 bytes') }] });
  });
});

describe('a key set endpoint that redirects', () => {
  it('is not followed, to plain http on another host least of all: tokens signed with the keys served there deny token_keys_unavailable saying so', async () => {
    // The issuer's name, with keys of someone else's: followed, the redirect would verify their tokens.
    const forger = await TestIssuer.create('https://redirected.test.example');
    opened.push(forger);
    const elsewhere = await forger.serve();
    for (const status of [301, 302, 303, 307, 308]) {
      const redirecting = await endpoint((_req, res) => void res.writeHead(status, { location: elsewhere.replace('127.0.0.1', 'localhost') }).end());
      const arbiter = await start({ issuers: [issuerConfig(forger, redirecting.url)] }, resolver(() => ['127.0.0.1']).resolve);
      const res = await postJson(`${arbiter.url}/v1/decide`, request(await forger.sign({ scope: 'read' })));
      expect(res.body, String(status)).toMatchObject({
        allow: false,
        reasons: [{ code: 'token_keys_unavailable', message: expect.stringContaining(`${redirecting.url} answers a redirect (${status}), which is not followed: jwks_uri must name the key set itself`) }],
      });
      expect(redirecting.requests(), String(status)).toBe(1);
    }
    expect(forger.jwksFetches).toBe(0);
  });

  it('is not followed over plain http either, nor round in a loop', async () => {
    const forger = await TestIssuer.create('https://looping.test.example');
    let url = '';
    const looping = await endpoint((_req, res) => void res.writeHead(307, { location: url }).end(), true);
    url = looping.url;
    const arbiter = await start({ issuers: [issuerConfig(forger, looping.url)] }, resolver(() => ['127.0.0.1']).resolve);
    const res = await postJson(`${arbiter.url}/v1/decide`, request(await forger.sign({ scope: 'read' })));
    expect(res.body).toMatchObject({ allow: false, reasons: [{ code: 'token_keys_unavailable', message: expect.stringContaining('answers a redirect (307), which is not followed') }] });
    expect(looping.requests()).toBe(1);
  });
});
