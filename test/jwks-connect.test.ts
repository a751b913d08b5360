import type { LookupAddress } from 'node:dns';
import { createServer } from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { Arbiter } from '../src/server/start.ts';
import { adminCall, postJson, startTestArbiter } from './support/arbiter.ts';
import { TestIssuer } from './support/issuer.ts';

/**
 * A key set over plain http is held to where it connects, not to how jwks_uri spells the host:
 * the name is resolved once, every address must be this machine, and the connection goes to those
 * very addresses. A key set that crosses a network in clear text can be replaced on the way, and
 * a replaced key set is forged tokens accepted. This machine has only loopback, so the server is
 * given a resolver (StartOptions.resolveHost) that answers `localhost` with the address a test picks.
 */

const opened: { close(): Promise<void> | void }[] = [];

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

  it('that stalls mid-body is given up at jwks_timeout_ms, its connection closed', async () => {
    const idp = await TestIssuer.create('https://stalling.test.example');
    const closed = Promise.withResolvers<void>();
    const endpoint = createServer((req, res) => {
      req.socket.on('close', () => closed.resolve());
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"keys": [');
    });
    await new Promise<void>((resolve) => endpoint.listen(0, '127.0.0.1', resolve));
    opened.push({ close: () => new Promise<void>((resolve) => (endpoint.closeAllConnections(), endpoint.close(() => resolve()))) });
    const jwksUri = `http://localhost:${(endpoint.address() as AddressInfo).port}/jwks.json`;
    const arbiter = await start({ issuers: [issuerConfig(idp, jwksUri, { jwks_timeout_ms: 500 })] }, resolver(() => ['127.0.0.1']).resolve);
    const started = Date.now();
    const res = await postJson(`${arbiter.url}/v1/decide`, request(await idp.sign({ scope: 'read' })));
    expect(res.body).toMatchObject({ allow: false, reasons: [{ code: 'token_keys_unavailable' }] });
    expect(Date.now() - started).toBeLessThan(3000);
    await closed.promise;
  });
});
