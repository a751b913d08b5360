import type { LookupAddress } from 'node:dns';
import { createServer as createHttpServer, type RequestListener } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { isIP, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectRefusal } from '../src/policy/pull.ts';
import type { Arbiter } from '../src/server/start.ts';
import { capturingLogger, startTestArbiter, tempDir } from './support/arbiter.ts';
import { build, writeBundleSource } from './support/bundle-sources.ts';
import { trustedTestCertificate } from './support/test-ca.ts';
import { waitFor } from './support/wait.ts';

/**
 * A poll is held to where it connects, not to how the URL spells the host: the addresses a hop's
 * name resolves to are checked, and the connection goes to those very addresses (no second
 * lookup a DNS answer could change in between). This machine has only loopback, so the names
 * below (under .test, which no DNS answers) are resolved by a resolver the test gives the server;
 * the servers they lead to are real, on 127.0.0.1, with certificates of a test CA this process trusts.
 */

let dir: string;
let archive: Buffer;
let tls: ReturnType<typeof trustedTestCertificate>;
const opened: { close(): Promise<void> | void }[] = [];

beforeAll(() => {
  dir = tempDir('arbiter-pull-connect-');
  archive = build(writeBundleSource(dir, 'pn'), join(dir, 'n1.tar.gz'), 'n1');
  tls = trustedTestCertificate(dir, ['DNS:bundles.example.test', 'DNS:internal.example.test']);
}, 60_000);

afterAll(() => {
  tls?.untrust();
});

afterEach(async () => {
  for (const item of opened.splice(0).reverse()) await item.close();
});

/** A bundle server on 127.0.0.1 (https with the test certificate unless `plain`) counting its requests. */
async function serve(handler: RequestListener, plain = false) {
  const paths: string[] = [];
  const listener: RequestListener = (req, res) => {
    paths.push(req.url!);
    handler(req, res);
  };
  const server = plain ? createHttpServer(listener) : createHttpsServer(tls, listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const bundleServer = {
    port: (server.address() as AddressInfo).port,
    paths,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
  opened.push(bundleServer);
  return bundleServer;
}

const serveArchive: RequestListener = (_req, res) => void res.writeHead(200, { 'content-type': 'application/gzip' }).end(archive);

/** A resolver answering `names` (name -> address), and what it was asked. */
function resolver(names: Record<string, string>) {
  const asked: string[] = [];
  const resolve = async (hostname: string): Promise<LookupAddress[]> => {
    asked.push(hostname);
    const address = names[hostname];
    if (address === undefined) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND', hostname });
    return [{ address, family: isIP(address) }];
  };
  return { resolve, asked };
}

async function start(url: string, resolveHost: ReturnType<typeof resolver>['resolve']) {
  const { logger, lines } = capturingLogger();
  const arbiter: Arbiter = await startTestArbiter({ bundles: { sources: [{ name: 'pn', url, poll_interval_s: 0.05, timeout_ms: 2000 }] } }, { logger, resolveHost });
  opened.push(arbiter);
  const failure = async () => {
    await waitFor(() => lines.some((line) => line.msg?.startsWith('bundle pull failed')), 'a failed poll');
    return lines.find((line) => line.msg?.startsWith('bundle pull failed'))!;
  };
  return { arbiter, lines, failure };
}

describe('the addresses a poll connects to', () => {
  it('may be this machine for the source\'s own name and origin, wherever the operator\'s DNS points it', async () => {
    const source = await serve((req, res) => (req.url === '/moved.tar.gz' ? void res.writeHead(301, { location: '/pn.tar.gz' }).end() : serveArchive(req, res)));
    const { arbiter } = await start(`https://bundles.example.test:${source.port}/moved.tar.gz`, resolver({ 'bundles.example.test': '127.0.0.1' }).resolve);
    await waitFor(() => arbiter.bundles.get('pn')?.revision === 'n1', 'n1 pulled from a source whose name resolves to loopback');
    expect(source.paths.slice(0, 2)).toEqual(['/moved.tar.gz', '/pn.tar.gz']);
  });

  it('may not be this machine once a source on another host redirects elsewhere, whatever name leads there: the poll fails naming the URL and the address, and nothing is sent', async () => {
    for (const address of ['127.0.0.1', '127.8.9.10', '::ffff:127.0.0.1', '0.0.0.0']) {
      const internal = await serve(serveArchive);
      const source = await serve((_req, res) => void res.writeHead(302, { location: `https://internal.example.test:${internal.port}/pn.tar.gz?signature=s3cr3t` }).end());
      const { resolve, asked } = resolver({ 'bundles.example.test': '127.0.0.1', 'internal.example.test': address });
      const { arbiter, lines, failure } = await start(`https://bundles.example.test:${source.port}/pn.tar.gz`, resolve);
      const failed = await failure();
      expect(failed).toMatchObject({ bundle: 'pn', check: 'bundle_pull_failed' });
      expect(failed.err.message).toContain(`https://internal.example.test:${internal.port}/pn.tar.gz?…`);
      expect(failed.err.message).toContain(`resolves to ${address}`);
      expect(failed.err.message).toContain('a source on another host may not lead to this machine');
      expect(asked).toContain('internal.example.test');
      expect(source.paths.length).toBeGreaterThan(0);
      expect(internal.paths).toEqual([]);
      expect(JSON.stringify(lines)).not.toContain('s3cr3t');
      expect(arbiter.bundles.get('pn')).toBeUndefined();
    }
  });

  it('still have the certificate checked against the URL\'s name, not the address', async () => {
    const source = await serve(serveArchive);
    const { arbiter, failure } = await start(`https://elsewhere.example.test:${source.port}/pn.tar.gz`, resolver({ 'elsewhere.example.test': '127.0.0.1' }).resolve);
    const failed = await failure();
    expect(failed).toMatchObject({ bundle: 'pn', check: 'bundle_pull_failed' });
    expect(failed.err.message).toMatch(/altnames.*elsewhere\.example\.test/);
    expect(source.paths).toEqual([]);
    expect(arbiter.bundles.get('pn')).toBeUndefined();
  });

  it('over plain http must be this machine: a loopback name that resolves elsewhere is not connected to', async () => {
    const local = await serve(serveArchive, true);
    const { arbiter, failure } = await start(`http://localhost:${local.port}/pn.tar.gz`, resolver({ localhost: '203.0.113.7' }).resolve);
    const failed = await failure();
    expect(failed).toMatchObject({ bundle: 'pn', check: 'bundle_pull_failed' });
    expect(failed.err.message).toContain(`http://localhost:${local.port}/pn.tar.gz resolves to 203.0.113.7`);
    expect(failed.err.message).toContain('plain http only to this machine');
    expect(local.paths).toEqual([]);
    expect(arbiter.bundles.get('pn')).toBeUndefined();
  });
});

describe('which addresses a hop may connect to', () => {
  const refusal = (source: string, hop: string, address: string) => connectRefusal(new URL(source), new URL(hop), address);

  it('lets the source\'s own origin go wherever its name resolves, and a redirect elsewhere anywhere but this machine', () => {
    for (const address of ['127.0.0.1', '10.0.0.7', '2001:db8::7']) expect(refusal('https://bundles.example.com/a', 'https://bundles.example.com/b', address)).toBeUndefined();
    // Link-local too (cloud metadata): over https, which metadata services do not speak; plain http is refused below.
    for (const address of ['10.0.0.7', '2001:db8::7', '169.254.169.254']) expect(refusal('https://bundles.example.com/a', 'https://storage.example.net/b', address)).toBeUndefined();
  });

  it('refuses this machine, in any form, to a redirect of a source on another host: another host, or another port of its own', () => {
    for (const address of ['127.0.0.1', '127.255.0.9', '::1', '::ffff:127.0.0.1', '0.0.0.0', '::', '::ffff:0.0.0.0']) {
      expect(refusal('https://bundles.example.com/a', 'https://storage.example.net/b', address), address).toMatch(/a source on another host may not lead to this machine/);
      expect(refusal('https://bundles.example.com/a', 'https://bundles.example.com:8443/b', address), address).toMatch(/may not lead to this machine/);
    }
  });

  it('lets a source on this machine lead anywhere over https, and to this machine over http', () => {
    for (const source of ['http://127.0.0.1:8181/a', 'https://localhost:8443/a', 'http://[::1]:8181/a']) {
      expect(refusal(source, 'http://localhost:9000/b', '127.0.0.1')).toBeUndefined();
      expect(refusal(source, 'https://storage.example.net/b', '127.0.0.1')).toBeUndefined();
      expect(refusal(source, 'https://storage.example.net/b', '10.0.0.7')).toBeUndefined();
    }
  });

  it('refuses plain http to an address that is not this machine, whatever the name says', () => {
    for (const address of ['10.0.0.7', '169.254.169.254', '::ffff:10.0.0.7', 'fe80::1']) {
      expect(refusal('http://localhost:8181/a', 'http://localhost:8181/a', address), address).toMatch(/plain http only to this machine/);
    }
  });
});
