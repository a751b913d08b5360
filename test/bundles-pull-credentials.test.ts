import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type RequestListener } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.ts';
import { ConfigError } from '../src/errors.ts';
import type { Arbiter } from '../src/server/start.ts';
import { redirectRefusal } from '../src/policy/pull.ts';
import { adminCall, capturingLogger, startTestArbiter, tempDir } from './support/arbiter.ts';
import { build, writeBundleSource } from './support/bundle-sources.ts';
import { TestIssuer } from './support/issuer.ts';
import { waitFor } from './support/wait.ts';

/**
 * Pulled bundles authenticate to their bundle server as OPA's services[].credentials.bearer and
 * services[].headers do, from a file (read at each poll) or an environment variable, never from
 * a literal in the configuration; what authenticates never shows in logs or answers.
 */

let admins: TestIssuer;
let adminToken: string;
let dir: string;
const archives: Record<string, Buffer> = {};
const opened: { close(): Promise<void> | void }[] = [];

beforeAll(async () => {
  admins = await TestIssuer.create('https://admins.test.example');
  await admins.serve();
  adminToken = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.read' });
  dir = tempDir('arbiter-pull-credentials-');
  const src = writeBundleSource(dir, 'pc');
  for (const revision of ['c1', 'c2', 'c3']) archives[revision] = build(src, join(dir, `${revision}.tar.gz`), revision);
}, 60_000);

afterAll(async () => {
  await admins?.close();
});

afterEach(async () => {
  for (const item of opened.splice(0).reverse()) await item.close();
});

/** A bundle server on 127.0.0.1 that records the headers of each request. */
async function serveBundles(handler: (req: Parameters<RequestListener>[0], res: Parameters<RequestListener>[1]) => void) {
  const requests: IncomingHttpHeaders[] = [];
  const server = createServer((req, res) => {
    requests.push(req.headers);
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const source = {
    origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  opened.push(source);
  return source;
}

/** Answers `archive()` to a request whose `header` is `expected()`, 401 to any other. */
function guarded(header: string, expected: () => string, archive: () => Buffer) {
  return (req: Parameters<RequestListener>[0], res: Parameters<RequestListener>[1]) => {
    if (req.headers[header] !== expected()) return void res.writeHead(401).end();
    res.writeHead(200, { 'content-type': 'application/gzip' }).end(archive());
  };
}

async function start(source: Record<string, unknown>, logger?: ReturnType<typeof capturingLogger>['logger']): Promise<Arbiter> {
  const arbiter = await startTestArbiter(
    {
      admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
      bundles: { sources: [{ name: 'pc', poll_interval_s: 0.05, timeout_ms: 2000, ...source }] },
    },
    logger && { logger },
  );
  opened.push(arbiter);
  return arbiter;
}

/** Everything a reader of this server sees: its process log, /readyz, /metrics, the admin API's answers. */
async function everythingShown(arbiter: Arbiter, lines: unknown[]): Promise<string> {
  const ready = await (await fetch(`${arbiter.url}/readyz`)).text();
  const metrics = await (await fetch(`${arbiter.url}/metrics`)).text();
  const list = await adminCall(arbiter.url, adminToken, 'GET', '/v1/bundles');
  const one = await adminCall(arbiter.url, adminToken, 'GET', '/v1/bundles/pc');
  return [JSON.stringify(lines), ready, metrics, JSON.stringify(list.body), JSON.stringify(one.body)].join('\n');
}

describe('bundles.sources[].credentials.bearer', () => {
  it('sends the token of token_file, read again at each poll so a rotated token is used, and never shows it', async () => {
    const tokenFile = join(dir, 'rotating.token');
    let valid = 'pull-token-0ne-s3cr3t';
    writeFileSync(tokenFile, `${valid}\n`);
    let served = archives.c1!;
    const source = await serveBundles(guarded('authorization', () => `Bearer ${valid}`, () => served));
    const { logger, lines } = capturingLogger();
    const arbiter = await start({ url: `${source.origin}/pc.tar.gz`, credentials: { bearer: { token_file: tokenFile } } }, logger);

    await waitFor(() => arbiter.bundles.get('pc')?.revision === 'c1', 'c1 pulled with the token');
    // Rotated: the server takes only the new token, and the file holds it (no trailing newline this time).
    valid = 'pull-token-tw0-s3cr3t';
    writeFileSync(tokenFile, valid);
    served = archives.c2!;
    await waitFor(() => arbiter.bundles.get('pc')?.revision === 'c2', 'c2 pulled with the rotated token');
    expect(lines.some((line) => line.msg?.startsWith('bundle pull failed'))).toBe(false);

    const shown = await everythingShown(arbiter, lines);
    for (const secret of ['pull-token-0ne-s3cr3t', 'pull-token-tw0-s3cr3t', 's3cr3t']) expect(shown).not.toContain(secret);
  });

  it('fails the poll with a clear error while the token file is missing or empty, the active revision serving, and pulls again once it is back', async () => {
    const tokenFile = join(dir, 'vanishing.token');
    writeFileSync(tokenFile, 'vanishing-s3cr3t\n');
    let served = archives.c1!;
    const source = await serveBundles(guarded('authorization', () => 'Bearer vanishing-s3cr3t', () => served));
    const { logger, lines } = capturingLogger();
    const arbiter = await start({ url: `${source.origin}/pc.tar.gz`, credentials: { bearer: { token_file: tokenFile } } }, logger);
    await waitFor(() => arbiter.bundles.get('pc')?.revision === 'c1', 'c1 pulled');

    const failures = () => lines.filter((line) => line.msg?.startsWith('bundle pull failed'));
    served = archives.c2!;
    rmSync(tokenFile);
    const asked = source.requests.length;
    await waitFor(() => failures().length >= 1, 'a poll failed for the missing file');
    expect(failures()[0]).toMatchObject({ bundle: 'pc', check: 'bundle_credentials_unavailable' });
    expect(failures()[0]!.err.message).toContain('bundles.sources.0.credentials.bearer.token_file');
    expect(failures()[0]!.err.message).toContain(tokenFile);
    // Not sent without its credentials: the source was not asked.
    expect(source.requests.length).toBe(asked);

    writeFileSync(tokenFile, '\n');
    await waitFor(() => failures().some((line) => line.err.message.includes('is empty')), 'a poll failed for the empty file');
    expect(arbiter.bundles.get('pc')?.revision).toBe('c1');
    expect((await fetch(`${arbiter.url}/readyz`)).status).toBe(200);

    writeFileSync(tokenFile, 'vanishing-s3cr3t');
    await waitFor(() => arbiter.bundles.get('pc')?.revision === 'c2', 'c2 once the token is back');
    const pulls = await (await fetch(`${arbiter.url}/metrics`)).text();
    expect(pulls).toMatch(/arbiter_bundle_pulls_total\{bundle="pc",result="bundle_credentials_unavailable"\} [1-9]/);
    expect(await everythingShown(arbiter, lines)).not.toContain('vanishing-s3cr3t');
  });

  it('refuses a token that cannot be a header value (a line break inside), without showing it', async () => {
    const tokenFile = join(dir, 'split.token');
    writeFileSync(tokenFile, 'split-s3cr3t\nx-injected: 1\n');
    const source = await serveBundles((_req, res) => void res.writeHead(200, { 'content-type': 'application/gzip' }).end(archives.c1));
    const { logger, lines } = capturingLogger();
    const arbiter = await start({ url: `${source.origin}/pc.tar.gz`, credentials: { bearer: { token_file: tokenFile } } }, logger);
    await waitFor(() => lines.some((line) => line.msg?.startsWith('bundle pull failed')), 'a failed poll');
    expect(lines.find((line) => line.msg?.startsWith('bundle pull failed'))).toMatchObject({ check: 'bundle_credentials_unavailable' });
    expect(source.requests).toEqual([]);
    const shown = await everythingShown(arbiter, lines);
    expect(shown).not.toContain('split-s3cr3t');
    expect(shown).not.toContain('x-injected');
  });

  it('refuses a token file that is not a regular file (a FIFO would hold the poll, and shutdown, until written)', async () => {
    const fifo = join(dir, 'pipe.token');
    execFileSync('mkfifo', [fifo]);
    const source = await serveBundles((_req, res) => void res.writeHead(200, { 'content-type': 'application/gzip' }).end(archives.c1));
    const { logger, lines } = capturingLogger();
    const arbiter = await start({ url: `${source.origin}/pc.tar.gz`, credentials: { bearer: { token_file: fifo } } }, logger);
    await waitFor(() => lines.some((line) => line.msg?.startsWith('bundle pull failed')), 'a failed poll');
    expect(lines.find((line) => line.msg?.startsWith('bundle pull failed'))).toMatchObject({ check: 'bundle_credentials_unavailable', err: { message: expect.stringContaining('is not a regular file') } });
    expect(source.requests).toEqual([]);
    expect(arbiter.bundles.get('pc')).toBeUndefined();
  });

  it('takes the token from token_env, with the scheme given', async () => {
    const variable = `ARBITER_TEST_PULL_TOKEN_${process.pid}`;
    process.env[variable] = ' env-s3cr3t-token \n';
    opened.push({ close: () => void delete process.env[variable] });
    const source = await serveBundles(guarded('authorization', () => 'Token env-s3cr3t-token', () => archives.c1!));
    const { logger, lines } = capturingLogger();
    const arbiter = await start({ url: `${source.origin}/pc.tar.gz`, credentials: { bearer: { token_env: variable, scheme: 'Token' } } }, logger);
    await waitFor(() => arbiter.bundles.get('pc')?.revision === 'c1', 'c1 pulled with the token of the variable');
    expect(await everythingShown(arbiter, lines)).not.toContain('env-s3cr3t-token');
  });

  it('stops start-up naming the key when token_env names a variable that is unset or empty', async () => {
    const variable = `ARBITER_TEST_PULL_UNSET_${process.pid}`;
    const failure = await start({ url: 'http://127.0.0.1:9/pc.tar.gz', credentials: { bearer: { token_env: variable } } }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(ConfigError);
    expect((failure as ConfigError).issues).toEqual([{ path: 'bundles.sources.0.credentials.bearer.token_env', message: expect.stringContaining(variable) }]);
  });
});

describe('bundles.sources[].headers', () => {
  it('sends each header, from a file (read at each poll), a variable, or a literal', async () => {
    const keyFile = join(dir, 'api.key');
    writeFileSync(keyFile, 'api-key-s3cr3t\n');
    const variable = `ARBITER_TEST_PULL_HEADER_${process.pid}`;
    process.env[variable] = 'env-header-s3cr3t';
    opened.push({ close: () => void delete process.env[variable] });
    const source = await serveBundles((req, res) => {
      const ok = req.headers['x-api-key'] === 'api-key-s3cr3t' && req.headers['x-signed'] === 'env-header-s3cr3t' && req.headers['x-tenant'] === 'acme';
      res.writeHead(ok ? 200 : 403, { 'content-type': 'application/gzip' }).end(ok ? archives.c1 : undefined);
    });
    const { logger, lines } = capturingLogger();
    const arbiter = await start(
      { url: `${source.origin}/pc.tar.gz`, headers: { 'X-Api-Key': { file: keyFile }, 'X-Signed': { env: variable }, 'X-Tenant': 'acme' } },
      logger,
    );
    await waitFor(() => arbiter.bundles.get('pc')?.revision === 'c1', 'c1 pulled with the headers');
    const shown = await everythingShown(arbiter, lines);
    for (const secret of ['api-key-s3cr3t', 'env-header-s3cr3t']) expect(shown).not.toContain(secret);
  });
});

describe('the configuration of pull credentials', () => {
  const sourceWith = (extra: Record<string, unknown>) => ({ bundles: { sources: [{ name: 'pc', url: 'https://bundles.example.com/pc.tar.gz', ...extra }] } });
  const issues = (raw: unknown) => {
    try {
      parseConfig(raw);
    } catch (error) {
      if (error instanceof ConfigError) return error.issues;
      throw error;
    }
    return [];
  };

  it('takes token_file or token_env, exactly one, and a scheme that is one word', () => {
    expect(parseConfig(sourceWith({ credentials: { bearer: { token_file: '/run/secrets/pull' } } })).bundles.sources[0]!.credentials).toEqual({ bearer: { token_file: '/run/secrets/pull', scheme: 'Bearer' } });
    expect(issues(sourceWith({ credentials: { bearer: { token_file: '/a', token_env: 'B' } } }))).toEqual([{ path: 'bundles.sources.0.credentials.bearer', message: expect.stringContaining('exactly one of token_file, token_env') }]);
    expect(issues(sourceWith({ credentials: { bearer: {} } }))).toEqual([{ path: 'bundles.sources.0.credentials.bearer', message: expect.stringContaining('exactly one of token_file, token_env') }]);
    expect(issues(sourceWith({ credentials: { bearer: { token_file: '/a', scheme: 'Bearer x' } } }))).toEqual([{ path: 'bundles.sources.0.credentials.bearer.scheme', message: expect.any(String) }]);
    expect(issues(sourceWith({ credentials: { bearer: { token_env: 'NOT A NAME' } } }))).toEqual([{ path: 'bundles.sources.0.credentials.bearer.token_env', message: expect.any(String) }]);
  });

  it('refuses a literal token, OPA\'s credentials.bearer.token, saying where it goes instead, without echoing it', () => {
    const found = issues(sourceWith({ credentials: { bearer: { token: 'literal-s3cr3t' } } }));
    expect(found).toContainEqual({ path: 'bundles.sources.0.credentials.bearer.token', message: expect.stringMatching(/token_file or token_env/) });
    expect(JSON.stringify(found)).not.toContain('literal-s3cr3t');
  });

  it('refuses a literal value for a header that carries credentials, a header Arbiter sets itself, an invalid name, and a name given twice', () => {
    const at = (headers: Record<string, unknown>) => issues(sourceWith({ headers }));
    const literal = at({ Authorization: 'Bearer literal-s3cr3t' });
    expect(literal).toEqual([{ path: 'bundles.sources.0.headers.Authorization', message: expect.stringMatching(/\{env: NAME\} or \{file: PATH\}/) }]);
    expect(JSON.stringify(literal)).not.toContain('literal-s3cr3t');
    expect(at({ Cookie: 'session=1' })).toEqual([{ path: 'bundles.sources.0.headers.Cookie', message: expect.any(String) }]);
    expect(at({ 'If-None-Match': '"x"' })).toEqual([{ path: 'bundles.sources.0.headers.If-None-Match', message: expect.any(String) }]);
    expect(at({ Host: 'other.example' })).toEqual([{ path: 'bundles.sources.0.headers.Host', message: expect.any(String) }]);
    expect(at({ 'X Bad': 'v' })).toEqual([{ path: 'bundles.sources.0.headers.X Bad', message: expect.any(String) }]);
    expect(at({ 'X-Key': { env: 'A' }, 'x-key': { env: 'B' } })).toEqual([{ path: 'bundles.sources.0.headers.x-key', message: expect.stringContaining('X-Key') }]);
    expect(at({ 'X-Line': 'a\r\nb' })).toEqual([{ path: 'bundles.sources.0.headers.X-Line', message: expect.any(String) }]);
    expect(issues(sourceWith({ headers: { Authorization: { env: 'A' } }, credentials: { bearer: { token_env: 'B' } } }))).toEqual([
      { path: 'bundles.sources.0.headers.Authorization', message: expect.stringContaining('credentials.bearer') },
    ]);
    expect(parseConfig(sourceWith({ headers: { Authorization: { file: '/run/secrets/auth' }, 'X-Tenant': 'acme' } })).bundles.sources[0]!.headers).toEqual({
      Authorization: { file: '/run/secrets/auth' },
      'X-Tenant': 'acme',
    });
  });
});

describe('a redirect from the source', () => {
  const credentials = (tokenFile: string, keyFile: string) => ({ credentials: { bearer: { token_file: tokenFile } }, headers: { 'X-Api-Key': { file: keyFile }, 'X-Tenant': 'acme' } });
  const secrets = () => {
    const tokenFile = join(dir, `redirect-${Math.random().toString(36).slice(2)}.token`);
    const keyFile = join(dir, `redirect-${Math.random().toString(36).slice(2)}.key`);
    writeFileSync(tokenFile, 'redirect-token-s3cr3t\n');
    writeFileSync(keyFile, 'redirect-key-s3cr3t\n');
    return { tokenFile, keyFile };
  };

  it('is followed to another origin (another port) without the credentials or headers, which go to the source\'s origin only; ETags still spare downloads', async () => {
    const { tokenFile, keyFile } = secrets();
    let full = 0;
    const storage = await serveBundles((req, res) => {
      if (req.headers['if-none-match'] === '"c1"') return void res.writeHead(304, { etag: '"c1"' }).end();
      full += 1;
      res.writeHead(200, { 'content-type': 'application/gzip', etag: '"c1"' }).end(archives.c1);
    });
    const source = await serveBundles((req, res) => {
      if (req.headers.authorization !== 'Bearer redirect-token-s3cr3t' || req.headers['x-api-key'] !== 'redirect-key-s3cr3t') return void res.writeHead(401).end();
      res.writeHead(302, { location: `${storage.origin}/blobs/pc.tar.gz?signature=presigned-s3cr3t` }).end();
    });
    const { logger, lines } = capturingLogger();
    const arbiter = await start({ url: `${source.origin}/pc.tar.gz`, ...credentials(tokenFile, keyFile) }, logger);
    await waitFor(() => arbiter.bundles.get('pc')?.revision === 'c1', 'c1 pulled through the redirect');
    await waitFor(() => storage.requests.length >= 3, 'two conditional polls through the redirect');
    expect(full).toBe(1);
    expect(source.requests.every((headers) => headers.authorization === 'Bearer redirect-token-s3cr3t' && headers['x-tenant'] === 'acme')).toBe(true);
    for (const headers of storage.requests) {
      expect(headers.authorization).toBeUndefined();
      expect(headers['x-api-key']).toBeUndefined();
      expect(headers['x-tenant']).toBeUndefined();
    }
    const shown = await everythingShown(arbiter, lines);
    for (const secret of ['redirect-token-s3cr3t', 'redirect-key-s3cr3t', 'presigned-s3cr3t']) expect(shown).not.toContain(secret);
  });

  it('is followed on the source\'s own origin with the credentials', async () => {
    const { tokenFile, keyFile } = secrets();
    const source = await serveBundles((req, res) => {
      if (req.url === '/moved.tar.gz') return void res.writeHead(301, { location: '/pc.tar.gz' }).end();
      guarded('authorization', () => 'Bearer redirect-token-s3cr3t', () => archives.c1!)(req, res);
    });
    const arbiter = await start({ url: `${source.origin}/moved.tar.gz`, ...credentials(tokenFile, keyFile) });
    await waitFor(() => arbiter.bundles.get('pc')?.revision === 'c1', 'c1 pulled through a redirect on the same origin');
    expect(source.requests[1]).toMatchObject({ authorization: 'Bearer redirect-token-s3cr3t', 'x-api-key': 'redirect-key-s3cr3t' });
  });

  it('to plain http on another host, or to a URL with user:password@, fails the poll without following it', async () => {
    for (const [location, why] of [
      ['http://bundles.example.com/pc.tar.gz', /https/],
      ['https://puller:location-s3cr3t@bundles.example.com/pc.tar.gz', /user:password@/],
    ] as const) {
      const source = await serveBundles((_req, res) => void res.writeHead(307, { location }).end());
      const { logger, lines } = capturingLogger();
      const arbiter = await start({ url: `${source.origin}/pc.tar.gz` }, logger);
      await waitFor(() => lines.some((line) => line.msg?.startsWith('bundle pull failed')), 'a failed poll');
      const failure = lines.find((line) => line.msg?.startsWith('bundle pull failed'))!;
      expect(failure).toMatchObject({ bundle: 'pc', check: 'bundle_pull_failed' });
      expect(failure.err.message).toMatch(why);
      expect(JSON.stringify(lines)).not.toContain('location-s3cr3t');
      expect(arbiter.bundles.get('pc')).toBeUndefined();
    }
  });

  it('that loops fails the poll after 10 hops', async () => {
    const source = await serveBundles((req, res) => void res.writeHead(302, { location: req.url === '/a' ? '/b' : '/a' }).end());
    const { logger, lines } = capturingLogger();
    await start({ url: `${source.origin}/a` }, logger);
    await waitFor(() => lines.some((line) => line.msg?.startsWith('bundle pull failed')), 'a failed poll');
    expect(lines.find((line) => line.msg?.startsWith('bundle pull failed'))!.err.message).toMatch(/more than 10 redirects/);
    expect(source.requests.length).toBeGreaterThanOrEqual(11);
  });
});

describe('which redirects a source may follow', () => {
  // Sources elsewhere cannot be served on this machine's loopback-only network: the rule is checked as a function.
  const remote = new URL('https://bundles.example.com/authz.tar.gz');
  const local = new URL('http://127.0.0.1:8282/authz.tar.gz');

  it.each([
    ['a remote source to https elsewhere', remote, 'https://storage.example.net/authz.tar.gz?sig=x'],
    ['a loopback source to loopback http', local, 'http://localhost:9000/authz.tar.gz'],
    ['a loopback source to https elsewhere', local, 'https://storage.example.net/authz.tar.gz'],
  ])('follows %s', (_label, source, next) => {
    expect(redirectRefusal(source, new URL(next))).toBeUndefined();
  });

  it.each([
    ['a remote source to loopback https (a service of this machine)', remote, 'https://127.0.0.1:8443/admin', /another host may not lead to this one/],
    ['a remote source to localhost', remote, 'https://localhost/x', /another host may not lead to this one/],
    ['a remote source to IPv6 loopback', remote, 'https://[::1]:8443/x', /another host may not lead to this one/],
    ['a remote source to loopback http', remote, 'http://127.0.0.1:2379/v2/keys', /another host may not lead to this one/],
    // Other spellings of this machine: connecting to the unspecified address, or to an
    // IPv4-mapped loopback address, reaches the services listening on loopback.
    ['a remote source to the unspecified address 0.0.0.0', remote, 'https://0.0.0.0:8443/admin', /another host may not lead to this one/],
    ['a remote source to 0 (0.0.0.0)', remote, 'https://0:8443/admin', /another host may not lead to this one/],
    ['a remote source to the unspecified IPv6 address', remote, 'https://[::]:8443/admin', /another host may not lead to this one/],
    ['a remote source to an IPv4-mapped loopback over https', remote, 'https://[::ffff:127.0.0.1]:8443/admin', /another host may not lead to this one/],
    ['a remote source to an IPv4-mapped 0.0.0.0', remote, 'https://[::ffff:0.0.0.0]:8443/admin', /another host may not lead to this one/],
    ['a remote source to localhost with a trailing dot', remote, 'https://localhost.:8443/admin', /another host may not lead to this one/],
    ['a remote source to a name under .localhost (RFC 6761)', remote, 'https://etcd.localhost:2379/x', /another host may not lead to this one/],
    ['any source to plain http elsewhere', local, 'http://169.254.169.254/latest/meta-data/', /https only/],
    ['any source to an IPv4-mapped loopback over http', remote, 'http://[::ffff:127.0.0.1]/x', /https only/],
    ['any source to a URL with a password', local, 'https://user:pw@storage.example.net/x', /user:password@/],
    ['any source to another scheme', local, 'file:///etc/passwd', /a file: URL/],
  ])('refuses %s', (_label, source, next, why) => {
    expect(redirectRefusal(source, new URL(next))).toMatch(why);
  });

  it('refuses them because they do reach a service listening on loopback only', async () => {
    const service = createServer((_req, res) => res.end('loopback only'));
    await new Promise<void>((resolve) => service.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = service.address() as AddressInfo;
      for (const host of ['0.0.0.0', '[::ffff:127.0.0.1]']) expect(await (await fetch(`http://${host}:${port}/`)).text(), host).toBe('loopback only');
    } finally {
      await new Promise((resolve) => service.close(resolve));
    }
  });
});
