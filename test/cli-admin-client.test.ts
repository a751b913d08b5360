import { execFile, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type RequestListener, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { describe, expect, it, vi } from 'vitest';
import { adminRequest, adminUrl } from '../src/cli/admin-client.ts';
import { tempDir } from './support/arbiter.ts';

/**
 * The admin CLI against servers that are not a well-behaved Arbiter (a proxy's pages, another
 * service, a connection cut mid-answer): one `arbiter:` line and the right exit code, never a
 * stack trace, never the admin token sent somewhere else.
 */
const run = promisify(execFile);
type Result = { code: number; stdout: string; stderr: string };
const cli = (args: string[], env: Record<string, string> = {}): Promise<Result> =>
  run(process.execPath, ['src/cli/main.ts', ...args], { env: { ...process.env, ARBITER_TOKEN: 'a.b.c', ...env } }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: Result) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
  );
const STACK = /\n\s+at /;

async function withServer(handler: RequestListener, test: (url: string) => Promise<void>): Promise<void> {
  const server: Server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    await test(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  } finally {
    server.closeAllConnections();
    server.close();
  }
}

/** A decision id, as get and replay take (any other argument is a usage error). */
const DECISION_ID = '0190b8c4-0000-7000-8000-000000000000';

describe('arbiter admin commands against servers that are not Arbiter', () => {
  it('an answer cut off mid-body: one line, exit 1', async () => {
    await withServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
      res.write('{"bundles":[');
      setTimeout(() => res.socket!.destroy(), 50);
    }, async (url) => {
      const result = await cli(['bundle', 'list', '--url', url]);
      expect(result).toMatchObject({ code: 1, stderr: expect.stringMatching(/^arbiter: GET \/v1\/bundles: the connection closed/) });
      expect(result.stderr).not.toMatch(STACK);
    });
  });

  it('JSON of another shape: one line naming what was expected, exit 1', async () => {
    await withServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}'), async (url) => {
      for (const args of [['bundle', 'list'], ['decisions', 'query'], ['decisions', 'verify'], ['decisions', 'replay', DECISION_ID], ['decisions', 'get', DECISION_ID]]) {
        const result = await cli([...args, '--url', url]);
        expect(result.code, args.join(' ')).toBe(1);
        expect(result.stderr, args.join(' ')).toMatch(/answered JSON that is not a/);
        expect(result.stderr, args.join(' ')).not.toMatch(STACK);
      }
    });
  });

  it('JSON of the right outline whose members the command prints are missing or wrong: one line, exit 1', async () => {
    const answers: [string[], string][] = [
      [['decisions', 'query'], '{"decisions":[{"result":{"reasons":[]}}],"next_cursor":null}'],
      [['decisions', 'query'], '{"decisions":[{"timestamp":1e20,"input":{},"result":{"reasons":[]}}],"next_cursor":null}'],
      [['decisions', 'replay', DECISION_ID], '{"recorded":{"reasons":[null],"obligations":[]},"replayed":{"reasons":[],"obligations":[]}}'],
      [['bundle', 'list'], '{"bundles":[{"name":"x","revisions":[{}]}]}'],
    ];
    for (const [args, answer] of answers) {
      await withServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(answer), async (url) => {
        const result = await cli([...args, '--url', url]);
        expect(result.code, answer).toBe(1);
        expect(result.stderr, answer).toMatch(/answered JSON that is not a/);
        expect(result.stderr, answer).not.toMatch(STACK);
      });
    }
  });

  it('a refusal whose code names an Object member or is not a string: the code as sent, no advice invented', async () => {
    for (const [code, shown] of [['"constructor"', 'constructor'], ['{"x":1}', 'error']] as const) {
      await withServer((_req, res) => res.writeHead(400, { 'content-type': 'application/problem+json' }).end(`{"code":${code},"detail":"d"}`), async (url) => {
        const result = await cli(['bundle', 'list', '--url', url]);
        expect(result.code).toBe(1);
        expect(result.stderr).toBe(`arbiter: GET /v1/bundles failed with 400: ${shown}: d\n`);
      });
    }
  });

  it('a refusal that is not a problem document (a proxy\'s 404 page): says the server may not be Arbiter, exit 1', async () => {
    // ARBITER_URL at a proxy's root rather than the path it serves Arbiter under: the answer was
    // reported as "failed with 404: error", which says nothing of where to look.
    for (const body of ['', '<html><body>Not Found</body></html>', '"not found"']) {
      await withServer((_req, res) => res.writeHead(404, { 'content-type': 'text/html' }).end(body), async (url) => {
        const result = await cli(['bundle', 'list', '--url', url]);
        expect(result.code, body).toBe(1);
        expect(result.stderr, body).toBe(`arbiter: GET /v1/bundles failed with 404, and the answer is not a problem document: is ${url} an Arbiter server (its host, port and path)?\n`);
      });
    }
  });

  it('prints the code and detail of a refusal with their control characters escaped, as it prints listings', async () => {
    // A detail quotes what others wrote (a bundle's revision, a subject), and the server may not be
    // Arbiter: a newline printed a forged line, an escape sequence drove the operator's terminal.
    await withServer((_req, res) => res.writeHead(409, { 'content-type': 'application/problem+json' }).end(JSON.stringify({ code: 'x\u001b[31m', detail: 'revision r1\narbiter: bundle list ok\u001b[2J\u009b1m' })), async (url) => {
      const result = await cli(['bundle', 'list', '--url', url]);
      expect(result.code).toBe(1);
      expect(result.stderr).toBe('arbiter: GET /v1/bundles failed with 409: x\\u001b[31m: revision r1\\narbiter: bundle list ok\\u001b[2J\\u009b1m\n');
    });
  });

  it('escapes bidirectional controls and line/paragraph separators too (Trojan Source), in refusals and listings', async () => {
    // U+202E (right-to-left override) and its kin reorder what the terminal shows: "r1\u202egnp.exe"
    // displays as "r1exe.png"; U+2028/U+2029 break a line in some terminals. All from others.
    const bidi = 'r1\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029\u200e\u200f\u061c';
    const escaped = 'r1\\u202a\\u202b\\u202c\\u202d\\u202e\\u2066\\u2067\\u2068\\u2069\\u2028\\u2029\\u200e\\u200f\\u061c';
    await withServer((_req, res) => res.writeHead(409, { 'content-type': 'application/problem+json' }).end(JSON.stringify({ code: 'conflict', detail: `revision ${bidi}` })), async (url) => {
      const result = await cli(['bundle', 'list', '--url', url]);
      expect(result.stderr).toBe(`arbiter: GET /v1/bundles failed with 409: conflict: revision ${escaped}\n`);
    });
    const status = { name: 'authz', active: { revision: bidi, activated_at: '2026-01-01T00:00:00.000Z', activated_by: `ops${bidi}`, source: 'store' }, revisions: [] };
    await withServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ bundles: [status] })), async (url) => {
      const { code, stdout } = await cli(['bundle', 'list', '--url', url]);
      expect(code).toBe(0);
      expect(stdout).toContain(escaped);
      expect(stdout).not.toMatch(/[\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/);
    });
  });

  it('bundle list, activate and push print revisions and actors with their control characters escaped', async () => {
    // A revision is whatever a bundle's .manifest says (a pulled source's too), an actor whatever
    // an admin token's sub is: a newline would print a forged line, an escape sequence drive the terminal.
    const forged = 'r1\n  stored r0  sha256:000000000000  2026-01-01T00:00:00.000Z\u001b[2J';
    const escaped = 'r1\\n  stored r0  sha256:000000000000  2026-01-01T00:00:00.000Z\\u001b[2J';
    const status = {
      name: 'authz',
      active: { revision: forged, activated_at: '2026-01-01T00:00:00.000Z', activated_by: 'https://idp#ops\u001b]0;x\u0007', source: 'store' },
      revisions: [{ revision: forged, digest: 'a'.repeat(64), stored_at: '2026-01-01T00:00:00.000Z' }],
    };
    await withServer((req, res) => {
      const answer = req.method === 'GET' ? { bundles: [status] } : req.method === 'PUT' ? { outcome: 'activated', revision: forged, digest: 'a'.repeat(64) } : status;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
    }, async (url) => {
      for (const args of [['bundle', 'list'], ['bundle', 'activate', 'authz', 'r1'], ['bundle', 'push', 'bundles/authz.tar.gz']]) {
        const { code, stdout } = await cli([...args, '--url', url]);
        expect(code, args.join(' ')).toBe(0);
        expect(stdout, args.join(' ')).toContain(escaped);
        expect(stdout, args.join(' ')).not.toMatch(/[\u0000-\u0009\u000b-\u001f]/);
        expect(stdout.split('\n').filter((line) => line.startsWith('  stored r0')), args.join(' ')).toEqual([]);
      }
    });
  });

  it('keeps the path of the server URL: the token goes to Arbiter behind a proxy path, not to the root', async () => {
    const seen: string[] = [];
    await withServer((req, res) => {
      seen.push(req.url!);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"bundles":[]}');
    }, async (url) => {
      expect((await cli(['bundle', 'list', '--url', `${url}/arbiter/`])).code).toBe(0);
    });
    expect(seen).toEqual(['/arbiter/v1/bundles']);
  });

  it('a redirect is not followed: the answer of a host the operator did not name is no answer (exit 1)', async () => {
    // fetch drops the token on a redirect to another origin, then trusts whatever answers there:
    // `decisions verify` would print "intact" from that host, `bundle push` send it the archive.
    const elsewhere: string[] = [];
    await withServer((req, res) => {
      elsewhere.push(`${req.method} ${req.url}`);
      res.writeHead(200, { 'content-type': 'application/json' }).end(req.url === '/v1/decisions/verify' ? '{"ok":true,"checked":0,"checkpoints_verified":0}' : '{"bundles":[]}');
    }, async (other) => {
      for (const status of [301, 307]) {
        await withServer((req, res) => res.writeHead(status, { location: `${other}${req.url}` }).end(), async (url) => {
          for (const args of [['bundle', 'list'], ['decisions', 'verify'], ['bundle', 'push', 'bundles/authz.tar.gz']]) {
            const result = await cli([...args, '--url', url]);
            expect(result, `${status} ${args.join(' ')}`).toMatchObject({ code: 1, stdout: '' });
            expect(result.stderr, `${status} ${args.join(' ')}`).toContain(`redirect (${status}) to ${other}/`);
            expect(result.stderr).not.toMatch(STACK);
          }
        });
      }
    });
    expect(elsewhere).toEqual([]);
  });

  it('an export that stops part-way leaves the --out file as it was, and no partial file beside it', async () => {
    // A file at the path given reads as the export asked for: a SIEM would ingest half of one,
    // and yesterday's complete export would be gone.
    const record = (n: number) => `{"decision_id":"0190b8c4-0000-7000-8000-00000000000${n}","seq":${n}}\n`;
    const stops: [string, (res: ServerResponse) => void][] = [
      ['a problem line', (res) => res.end(`${record(1)}{"type":"urn:arbiter:problem:decision_log_corrupt","code":"decision_log_corrupt","detail":"seq 2"}\n`)],
      ['a cut connection', (res) => {
        res.write(record(1));
        setTimeout(() => res.socket!.destroy(), 50);
      }],
    ];
    for (const [how, stop] of stops) {
      const dir = tempDir();
      const out = join(dir, 'day.ndjson');
      writeFileSync(out, 'yesterday\n');
      await withServer((_req, res) => stop(res.writeHead(200, { 'content-type': 'application/x-ndjson' })), async (url) => {
        const result = await cli(['decisions', 'export', '--url', url, '--out', out]);
        expect(result.code, how).toBe(1);
        expect(result.stderr, how).toContain(`${out} was left as it was`);
      });
      expect(readFileSync(out, 'utf8'), how).toBe('yesterday\n');
      expect(readdirSync(dir), how).toEqual(['day.ndjson']);
    }
  });

  it('an export interrupted (SIGINT, SIGTERM) leaves no file behind', async () => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      const dir = tempDir();
      const out = join(dir, 'day.ndjson');
      let sent = Promise.withResolvers<void>();
      await withServer((_req, res) => {
        // One record, then the rest of a long export still to come.
        res.writeHead(200, { 'content-type': 'application/x-ndjson' }).write('{"decision_id":"0190b8c4-0000-7000-8000-000000000001"}\n', () => sent.resolve());
      }, async (url) => {
        const child = spawn(process.execPath, ['src/cli/main.ts', 'decisions', 'export', '--url', url, '--out', out], { env: { ...process.env, ARBITER_TOKEN: 'a.b.c' }, stdio: 'ignore' });
        await sent.promise;
        // The record reaches the file before the signal does.
        for (let waited = 0; waited < 5000 && !readdirSync(dir).some((name) => statSync(join(dir, name)).size > 0); waited += 20) await sleep(20);
        child.kill(signal);
        // Ended by the signal, as a shell expects of an interrupted command.
        const [code, killedBy] = (await once(child, 'exit')) as [number | null, string | null];
        expect({ code, killedBy }, signal).toEqual({ code: null, killedBy: signal });
      });
      expect(readdirSync(dir), signal).toEqual([]);
      sent = Promise.withResolvers<void>();
    }
  });

  it('an export answered with something other than NDJSON fails, the file untouched', async () => {
    await withServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html>login</html>\n'), async (url) => {
      const out = join(tempDir(), 'day.ndjson');
      const result = await cli(['decisions', 'export', '--url', url, '--out', out]);
      expect(result).toMatchObject({ code: 1, stderr: expect.stringContaining('not the NDJSON of a decision export') });
    });
  });
});

/** An address of this machine that is not loopback, as another host would reach it; undefined without one. */
const lanAddress = Object.values(networkInterfaces())
  .flat()
  .find((entry) => entry !== undefined && !entry.internal && entry.family === 'IPv4')?.address;

describe('an admin command over plain http', () => {
  it.skipIf(lanAddress === undefined)('warns that the token goes in clear to a host that is not this machine, and still asks', async () => {
    const server: Server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"bundles":[]}'));
    await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve));
    const { port } = server.address() as AddressInfo;
    try {
      const remote = await cli(['bundle', 'list', '--url', `http://${lanAddress}:${port}`]);
      expect(remote.code).toBe(0);
      const warnings = remote.stderr.split('\n').filter((line) => /warning/.test(line));
      expect(warnings).toEqual([expect.stringMatching(new RegExp(`^arbiter: warning: the admin token goes to ${lanAddress!.replaceAll('.', '\\.')}:${port} over plain http.*https://`))]);
      expect(remote.stderr).not.toContain('a.b.c');
      // Loopback, by address or name: the token does not leave this machine (a proxy in front may terminate TLS).
      for (const host of ['127.0.0.1', 'localhost']) {
        const local = await cli(['bundle', 'list', '--url', `http://${host}:${port}`]);
        expect(local, host).toMatchObject({ code: 0, stderr: '' });
      }
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('an admin command over TLS', () => {
  it("says a certificate is not trusted, and how to trust a private CA, rather than 'is the server running?'", async () => {
    const dir = tempDir();
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'server.key', '-out', 'server.pem',
      '-subj', '/CN=arbiter.test', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1'], { cwd: dir, stdio: 'pipe' });
    const server = createHttpsServer({ key: readFileSync(join(dir, 'server.key')), cert: readFileSync(join(dir, 'server.pem')) }, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"bundles":[]}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const untrusted = await cli(['bundle', 'list', '--url', url]);
      expect(untrusted.code).toBe(1);
      expect(untrusted.stderr).toContain('TLS certificate is not trusted');
      expect(untrusted.stderr).toContain('NODE_EXTRA_CA_CERTS');
      expect(untrusted.stderr).not.toContain('is the server running');
      // What it says to do works.
      expect(await cli(['bundle', 'list', '--url', url], { NODE_EXTRA_CA_CERTS: join(dir, 'server.pem') })).toMatchObject({ code: 0, stdout: 'no bundles\n' });
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('how long an admin command waits', () => {
  it('gives up on an answer whose body stalls after its headers, within the answer timeout', async () => {
    // A proxy that sends headers and then nothing: the CLI hung until undici's body timeout (300 s).
    await withServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).write('{"bund');
    }, async (url) => {
      const said: string[] = [];
      const spy = vi.spyOn(console, 'error').mockImplementation((line: string) => void said.push(line));
      try {
        const started = performance.now();
        const answer = await adminRequest({ url, token: 'a.b.c', answerTimeoutMs: 300 }, 'GET', '/v1/bundles');
        expect(answer).toBeUndefined();
        expect(performance.now() - started).toBeLessThan(5000);
        expect(said).toEqual([`arbiter: ${url} did not send its whole answer to GET /v1/bundles within 0.3 s`]);
      } finally {
        spy.mockRestore();
      }
    });
  });
});

describe('arbiter admin commands given a URL or output they cannot use', () => {
  it('keeps the token on the configured host whatever the base path holds (//, .., backslashes)', () => {
    for (const base of ['http://arbiter.internal:8181//arbiter', 'http://arbiter.internal:8181/x/..//evil', 'http://arbiter.internal:8181/\\evil']) {
      expect(adminUrl(base, '/v1/bundles?x=1').host, base).toBe('arbiter.internal:8181');
    }
    expect(adminUrl('http://h:1/arbiter/', '/v1/decisions?limit=5').href).toBe('http://h:1/arbiter/v1/decisions?limit=5');
  });

  it('a URL that is not http(s), or carries a password: a usage error that does not echo it', async () => {
    const ftp = await cli(['bundle', 'list', '--url', 'ftp://127.0.0.1:8181']);
    expect(ftp).toMatchObject({ code: 2, stderr: expect.stringContaining('must be an http(s) URL') });
    const withPassword = await cli(['bundle', 'list', '--url', 'http://ops:hunter2@127.0.0.1:8181']);
    expect(withPassword.code).toBe(2);
    expect(withPassword.stderr).not.toContain('hunter2');
  });

  it('an export into a directory that does not exist says so before asking the server', async () => {
    const result = await cli(['decisions', 'export', '--url', 'http://127.0.0.1:9', '--out', join(tempDir(), 'missing', 'day.ndjson')]);
    expect(result).toMatchObject({ code: 1, stderr: expect.stringMatching(/^arbiter: cannot write .*missing.*does not exist/) });
  });
});
