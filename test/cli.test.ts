import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { chmodSync, closeSync, copyFileSync, cpSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { parseConfig } from '../src/config/load.ts';
import { readBundleArchive } from '../src/policy/archive.ts';
import { startTestArbiter, tempDir } from './support/arbiter.ts';
import { waitFor } from './support/wait.ts';

const run = promisify(execFile);
const cli = (...args: string[]) =>
  run(process.execPath, ['src/cli/main.ts', ...args]).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
  );

describe('arbiter CLI', () => {
  it('prints usage with --help (0) and refuses an unknown command (2)', async () => {
    const help = await cli('--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Usage: arbiter <command>');
    const unknown = await cli('frobnicate');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown command');
    const none = await cli();
    expect(none).toMatchObject({ code: 2, stdout: '' });
    expect(none.stderr).toContain('Usage: arbiter <command>');
  });

  it('says in decisions query --help that --sub takes the hash when the log masks sub with hash', async () => {
    // A masked log stores sha256:<hex> in sub: the plain value matches nothing, and answers an empty page.
    const help = await cli('decisions', 'query', '--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/--sub[^\n]*\n?[^\n]*sha256:<hex>/);
    expect(help.stdout).toContain('decision_log.mask');
  });

  it("names the command and its --help when an option or argument is refused (2)", async () => {
    for (const [args, said] of [
      [['serve', '--bogus'], "Unknown option '--bogus'"],
      [['serve', 'extra'], "Unexpected argument 'extra'"],
      [['decisions', 'query', '--limit'], "Option '--limit <value>' argument missing"],
    ] as const) {
      const refused = await cli(...args);
      expect(refused, args.join(' ')).toMatchObject({ code: 2, stdout: '' });
      expect(refused.stderr, args.join(' ')).toContain(`arbiter ${args[0]}: ${said}`);
      expect(refused.stderr, args.join(' ')).toContain(`arbiter ${args[0]} --help`);
    }
  });

  it('refuses a malformed admin token or URL as a usage error, without echoing the token', async () => {
    const env = { ...process.env, ARBITER_URL: 'http://127.0.0.1:9', ARBITER_TOKEN: 'eyJhbGciOi.secret-part\nsecond-line' };
    const token = await run(process.execPath, ['src/cli/main.ts', 'bundle', 'list'], { env }).catch((error: { code: number; stderr: string }) => error);
    expect(token).toMatchObject({ code: 2 });
    expect((token as { stderr: string }).stderr).toContain('admin token');
    expect((token as { stderr: string }).stderr).not.toContain('secret-part');
    const url = await run(process.execPath, ['src/cli/main.ts', 'bundle', 'list'], { env: { ...env, ARBITER_TOKEN: 'a.b.c', ARBITER_URL: 'not a url' } }).catch(
      (error: { code: number; stderr: string }) => error,
    );
    expect(url).toMatchObject({ code: 2 });
    expect((url as { stderr: string }).stderr).toContain('is not a URL');
  });

  it("does not take the CLI's own variables for misspelt configuration overrides", async () => {
    // ARBITER_TOKEN, which the README has operators export for the admin commands, is one letter
    // off the top-level key `tokens`: serve warned at every start to set ARBITER_TOKENS instead.
    const dir = tempDir();
    const config = join(dir, 'arbiter.yaml');
    writeFileSync(config, 'server: {port: 8181}\n');
    const env = { ...process.env, ARBITER_TOKEN: 'a.b.c', ARBITER_URL: 'http://127.0.0.1:9', ARBITER_OPA: '/usr/bin/opa', ARBITER_CONFIG: config, ARBITER_TOOLS: dir };
    const { stdout } = await run(process.execPath, ['src/cli/main.ts', 'config', 'check', '--json'], { env });
    expect(JSON.parse(stdout)).toMatchObject({ valid: true, notes: [] });
  });

  it('says it cannot write its output (a full disk) in one line, exit 1, without a stack trace', async () => {
    const full = openSync('/dev/full', 'w');
    try {
      const child = spawn(process.execPath, ['src/cli/main.ts', 'gateway-key', '--id', 'edge'], { stdio: ['ignore', full, 'pipe'] });
      let stderr = '';
      child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const [code] = (await once(child, 'exit')) as [number];
      expect({ code, stderr }).toEqual({ code: 1, stderr: 'arbiter: cannot write the output: ENOSPC: no space left on device, write\n' });
    } finally {
      closeSync(full);
    }
  });

  it('mints a development token, and says what is missing when it cannot', async () => {
    const dir = tempDir();
    const config = join(dir, 'dev.yaml');
    writeFileSync(config, `dev_issuer: {enabled: true, key_file: ${JSON.stringify(join(dir, 'key.jwk.json'))}}\n`);
    const missing = await cli('token', '--config', config);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('--sub is required');

    const minted = await cli('token', '--config', config, '--sub', 'user:alice@acme.example', '--scope', 'invoices.read', '--claim', 'tenant=acme', '--act', 'agent:a', '--act', 'agent:b', '--json');
    expect(minted.code).toBe(0);
    const { token } = JSON.parse(minted.stdout) as { token: string };
    expect(decodeProtectedHeader(token)).toMatchObject({ alg: 'ES256', typ: 'at+jwt' });
    expect(decodeJwt(token)).toMatchObject({ iss: 'urn:arbiter:dev-issuer', sub: 'user:alice@acme.example', tenant: 'acme', act: { sub: 'agent:a', act: { sub: 'agent:b' } } });

    // Claims the options set would silently replace a --claim of the same name: refused instead.
    for (const args of [['--claim', 'jti=5'], ['--claim', 'exp=1'], ['--scope', 'a', '--claim', 'scope=b']]) {
      const overwritten = await cli('token', '--config', config, '--sub', 'x', ...args);
      expect(overwritten, args.join(' ')).toMatchObject({ code: 2, stderr: expect.stringContaining('would be overwritten') });
    }
    const malformedActor = await cli('token', '--config', config, '--sub', 'x', '--claim', 'act="agent"', '--json');
    expect(decodeJwt((JSON.parse(malformedActor.stdout) as { token: string }).token).act).toBe('agent');

    const disabled = join(dir, 'prod.yaml');
    writeFileSync(disabled, 'mode: production\n');
    const refused = await cli('token', '--config', disabled, '--sub', 'x');
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('dev_issuer.enabled');
  });

  it('token takes --ttl and --age as digits: an empty value (--ttl "$UNSET") is not a lifetime of 0 (2)', async () => {
    const dir = tempDir();
    const config = join(dir, 'dev.yaml');
    writeFileSync(config, `dev_issuer: {enabled: true, key_file: ${JSON.stringify(join(dir, 'key.jwk.json'))}}\n`);
    const odd = [['--ttl', ''], ['--age', ' '], ['--ttl', '0x10'], ['--age', '1e3']] as const;
    const answers = await Promise.all(odd.map(([flag, value]) => cli('token', '--config', config, '--sub', 'x', `${flag}=${value}`)));
    for (const [index, [flag, value]] of odd.entries()) {
      expect(answers[index], `${flag}=${value}`).toMatchObject({ code: 2, stdout: '', stderr: expect.stringContaining(`${flag} expects whole seconds`) });
    }
  });

  it('token and config check name dev_issuer.key_file for a key whose tokens would be refused (2), and leave it alone', async () => {
    const { keyFile, config } = await devIssuerWithKey();
    const jwk = JSON.parse(readFileSync(keyFile, 'utf8')) as Record<string, unknown>;
    // Another key's private half, pasted over this one's.
    const other = (await crypto.subtle.exportKey('jwk', (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign'])).privateKey)).d;
    const broken = JSON.stringify({ ...jwk, d: other });
    writeFileSync(keyFile, broken);
    for (const args of [['token', '--config', config, '--sub', 'x'], ['config', 'check', config]]) {
      const refused = await cli(...args);
      expect(refused, args[0]).toMatchObject({ code: 2, stdout: '' });
      expect(refused.stderr, args[0]).toContain(`dev_issuer.key_file: ${keyFile}: it cannot sign ES256 tokens`);
      expect(refused.stderr, args[0]).not.toContain('    at ');
    }
    expect(readFileSync(keyFile, 'utf8')).toBe(broken);
  });

  it('token and config check refuse a development key file that is not JSON without quoting it (part of its private key)', async () => {
    const { keyFile, config } = await devIssuerWithKey();
    const text = readFileSync(keyFile, 'utf8');
    const { d } = JSON.parse(text) as { d: string };
    // An edit that lost the quote before d: V8's SyntaxError quotes the text that follows the fault.
    writeFileSync(keyFile, text.replace(`"d": "${d}"`, `"d": x${d}"`));
    for (const args of [['token', '--config', config, '--sub', 'x'], ['config', 'check', config]]) {
      const refused = await cli(...args);
      expect(refused, args[0]).toMatchObject({ code: 2, stdout: '' });
      expect(refused.stderr, args[0]).toContain(`dev_issuer.key_file: ${keyFile}: not JSON`);
      expect(refused.stderr, args[0]).not.toContain(d.slice(0, 8));
    }
  });

  it('health probes the port and protocol the configuration gives: 0 when it answers, 1 when not', async () => {
    const dir = tempDir();
    const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'server.key', '-out', 'server.pem', '-subj', '/CN=arbiter.example', '-days', '1');
    const tls = { cert_file: join(dir, 'server.pem'), key_file: join(dir, 'server.key') };
    const plain = await startTestArbiter({ server: { host: '0.0.0.0', port: 0 }, gateway: { authentication: 'api_key', api_keys: [{ id: 'gw', sha256: 'a'.repeat(64) }] } });
    const secure = await startTestArbiter({ server: { tls } });
    const diagnostic = await startTestArbiter({ server: { diagnostic: { port: 0 } } });
    try {
      const health = (env: Record<string, string>) =>
        run(process.execPath, ['src/cli/main.ts', 'health'], { env: { ...process.env, ARBITER_CONFIG: '', ...env } }).then(
          () => ({ code: 0, stderr: '' }),
          (error: { code: number; stderr: string }) => ({ code: error.code, stderr: error.stderr }),
        );
      // A wildcard listen address is probed over loopback; PORT and ARBITER_* overrides are followed.
      const gateway = { ARBITER_GATEWAY__AUTHENTICATION: 'api_key', ARBITER_GATEWAY__API_KEYS: `[{id: gw, sha256: ${'a'.repeat(64)}}]` };
      expect(await health({ PORT: String(plain.port), ARBITER_SERVER__HOST: '0.0.0.0', ...gateway })).toEqual({ code: 0, stderr: '' });
      expect(await health({ ARBITER_SERVER__PORT: String(secure.port), ARBITER_SERVER__TLS: JSON.stringify(tls) })).toEqual({ code: 0, stderr: '' });
      // Plain HTTP against the TLS port: no answer it can read.
      const wrongProtocol = await health({ ARBITER_SERVER__PORT: String(secure.port) });
      expect(wrongProtocol.code).toBe(1);
      expect(wrongProtocol.stderr).toContain(`http://127.0.0.1:${secure.port}/healthz`);
      // With a diagnostic listener, that one: the probe is not refused when the decision port is full
      // (nothing listens on port 9 here, as on a decision port whose every connection slot is taken).
      const diagnosticPort = new URL(diagnostic.diagnosticUrl!).port;
      expect(await health({ ARBITER_SERVER__PORT: '9', ARBITER_SERVER__DIAGNOSTIC: `{port: ${diagnosticPort}}` })).toEqual({ code: 0, stderr: '' });
    } finally {
      await Promise.all([plain.close(), secure.close(), diagnostic.close()]);
    }
  });

  it('health exits 1, not 2, when the configuration it would probe is invalid (2 is reserved by Docker HEALTHCHECK)', async () => {
    const dir = tempDir();
    const config = join(dir, 'bad.yaml');
    writeFileSync(config, 'server: {port: -1}\n');
    for (const env of [{ ARBITER_CONFIG: config }, { ARBITER_CONFIG: join(dir, 'missing.yaml') }, { ARBITER_CONFIG: '', ARBITER_SERVER__PORT: 'x' }]) {
      const result = await run(process.execPath, ['src/cli/main.ts', 'health'], { env: { ...process.env, ...env } }).then(
        () => ({ code: 0, stderr: '' }),
        (error: { code: number; stderr: string }) => ({ code: error.code, stderr: error.stderr }),
      );
      expect(result.code, JSON.stringify(env)).toBe(1);
      expect(result.stderr, JSON.stringify(env)).toMatch(/is invalid:/);
    }
    // A wrong option of the health command itself stays a usage error.
    expect((await cli('health', '--timeout-ms', 'x')).code).toBe(2);
  });

  it('health says there is nothing to probe when the port it would ask is 0 (any free port), instead of probing port 0', async () => {
    for (const [env, key] of [
      [{ ARBITER_SERVER__PORT: '0' }, 'server.port'],
      [{ PORT: '0' }, 'server.port'],
      [{ ARBITER_SERVER__DIAGNOSTIC: '{port: 0}' }, 'server.diagnostic.port'],
    ] as const) {
      const result = await run(process.execPath, ['src/cli/main.ts', 'health'], { env: { ...process.env, ARBITER_CONFIG: '', ...env } }).then(
        () => ({ code: 0, stderr: '' }),
        (error: { code: number; stderr: string }) => ({ code: error.code, stderr: error.stderr }),
      );
      expect(result.code, JSON.stringify(env)).toBe(1);
      expect(result.stderr, JSON.stringify(env)).toContain(`${key} is 0 (any free port)`);
      expect(result.stderr, JSON.stringify(env)).not.toContain(':0/healthz');
    }
  });

  it('health refuses a --timeout-ms past what a timer holds (2), rather than warn and cut it short', async () => {
    for (const value of ['2147483648', '1e10', String(Number.MAX_SAFE_INTEGER + 2)]) {
      const result = await cli('health', '--timeout-ms', value);
      expect(result.code, value).toBe(2);
      expect(result.stderr, value).toContain('--timeout-ms must be a whole number of milliseconds from 1 to 2147483647');
      expect(result.stderr, value).not.toContain('TimeoutOverflowWarning');
    }
  });

  it('bundle build shows why opa refused the policy: file, line and error', async () => {
    const dir = tempDir();
    cpSync('test/fixtures/rego/simple', join(dir, 'simple'), { recursive: true });
    writeFileSync(join(dir, 'simple', 'broken.rego'), 'package simple\n\nbroken := input.x +\n');
    const result = await cli('bundle', 'build', join(dir, 'simple'), '--out', join(dir, 'simple.tar.gz'));
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('rego_parse_error');
    expect(result.stderr).toMatch(/broken\.rego:\d+/);
  });

  it('bundle build gives the same sources the same revision when its archive is written into the bundle directory', async () => {
    // `cd rego/authz && arbiter bundle build .` writes authz.tar.gz beside the sources (the
    // default --out): hashed as a source, it gave each build, and each push, a new revision.
    const dir = join(tempDir(), 'simple');
    cpSync('test/fixtures/rego/simple', dir, { recursive: true });
    const revisions: unknown[] = [];
    for (let build = 0; build < 2; build += 1) {
      await run(process.execPath, [join(process.cwd(), 'src/cli/main.ts'), 'bundle', 'build', '.'], { cwd: dir });
      const files = await readBundleArchive(new Uint8Array(readFileSync(join(dir, 'simple.tar.gz'))));
      revisions.push((JSON.parse(Buffer.from(files.get('.manifest')!).toString()) as { revision: string }).revision);
    }
    expect(revisions[1]).toBe(revisions[0]);
  });

  it('bundle build without opa says how to install it, not spawnSync ENOENT', async () => {
    const dir = tempDir();
    const missing = join(dir, 'no-such-opa');
    const result = await run(process.execPath, ['src/cli/main.ts', 'bundle', 'build', 'test/fixtures/rego/simple', '--out', join(dir, 'simple.tar.gz')], {
      env: { ...process.env, ARBITER_OPA: missing },
    }).catch((error: { code: number; stderr: string }) => error);
    expect(result).toMatchObject({ code: 1 });
    const { stderr } = result as { stderr: string };
    expect(stderr).toContain(`${missing} not found`);
    expect(stderr).toContain('scripts/toolchain.sh opa');
    expect(stderr).not.toContain('spawnSync');
  });

  it('bundle build of a directory that is not there says so (2), not that opa is missing', async () => {
    const dir = tempDir();
    const missing = join(dir, 'no-such-policy');
    const result = await cli('bundle', 'build', missing, '--out', join(dir, 'out.tar.gz'));
    expect(result).toMatchObject({ code: 2, stdout: '' });
    expect(result.stderr).toContain(`${missing} does not exist`);
    expect(result.stderr).not.toContain('not found');
    // A file is not a bundle directory either.
    writeFileSync(join(dir, 'policy.rego'), 'package x\n');
    const file = await cli('bundle', 'build', join(dir, 'policy.rego'), '--out', join(dir, 'out.tar.gz'));
    expect(file).toMatchObject({ code: 2, stdout: '' });
    expect(file.stderr).toContain('is not a directory');
  });

  it('bundle push of an archive refuses --revision (2), which only a build of a directory can set', async () => {
    // Ignored, the operator would believe the revision pushed is the one given.
    const result = await run(process.execPath, ['src/cli/main.ts', 'bundle', 'push', 'bundles/authz.tar.gz', '--revision', 'r9'], {
      env: { ...process.env, ARBITER_URL: 'http://127.0.0.1:9', ARBITER_TOKEN: 'a.b.c' },
    }).catch((error: { code: number; stdout: string; stderr: string }) => error);
    expect(result).toMatchObject({ code: 2, stdout: '' });
    expect((result as { stderr: string }).stderr).toContain('--revision');
    expect((result as { stderr: string }).stderr).not.toContain('unreachable');
  });

  it('bundle refuses (2) an option its subcommand does not read, before building or asking the server', async () => {
    // Ignored, each would answer as if it had done what was asked: `list --name` listing every
    // bundle as if filtered, `push --out` keeping no archive, `activate --revision` activating the positional one.
    const dir = tempDir();
    const env = { ...process.env, ARBITER_URL: 'http://127.0.0.1:9', ARBITER_TOKEN: 'a.b.c' };
    for (const [args, option] of [
      [['bundle', 'list', '--name', 'authz'], '--name'],
      [['bundle', 'push', 'test/fixtures/rego/simple', '--out', join(dir, 'simple.tar.gz')], '--out'],
      [['bundle', 'activate', 'authz', 'r1', '--revision', 'r2'], '--revision'],
      [['bundle', 'build', 'test/fixtures/rego/simple', '--out', join(dir, 'simple.tar.gz'), '--name', 'other'], '--name'],
    ] as const) {
      const refused = await run(process.execPath, ['src/cli/main.ts', ...args], { env }).catch((error: { code: number; stdout: string; stderr: string }) => error);
      expect(refused, args.join(' ')).toMatchObject({ code: 2, stdout: '' });
      expect((refused as { stderr: string }).stderr, args.join(' ')).toContain(`bundle ${args[1]} does not take ${option}`);
      expect((refused as { stderr: string }).stderr, args.join(' ')).not.toContain('is unreachable');
    }
    expect(existsSync(join(dir, 'simple.tar.gz'))).toBe(false);
  });

  it('check:bundles fails on a stale bundle and on one that no rego/ directory builds', async () => {
    const dir = tempDir();
    const rego = join(dir, 'rego');
    const out = join(dir, 'bundles');
    cpSync('test/fixtures/rego/simple', join(rego, 'simple'), { recursive: true });
    mkdirSync(out);
    const script = (...args: string[]) =>
      run(process.execPath, ['scripts/build-bundles.ts', '--rego', rego, '--out', out, ...args]).then(
        ({ stdout }) => ({ code: 0, output: stdout }),
        (error: { code: number; stderr: string }) => ({ code: error.code, output: error.stderr }),
      );
    expect(await script('--check')).toMatchObject({ code: 1, output: expect.stringContaining('stale bundles: simple') });
    expect((await script()).code).toBe(0);
    expect(await script('--check')).toMatchObject({ code: 0, output: expect.stringContaining('bundles match rego/: simple') });
    // The server would serve it: a bundle whose source was deleted must not ship unnoticed.
    copyFileSync(join(out, 'simple.tar.gz'), join(out, 'legacy.tar.gz'));
    expect(await script('--check')).toMatchObject({ code: 1, output: expect.stringContaining('legacy.tar.gz') });
  });

  it('generates a gateway key whose hash is the configuration entry', async () => {
    const result = await cli('gateway-key', '--id', 'kong-eu', '--json');
    expect(result.code).toBe(0);
    const { key, api_key } = JSON.parse(result.stdout) as { key: string; api_key: { id: string; sha256: string } };
    expect(api_key).toEqual({ id: 'kong-eu', sha256: createHash('sha256').update(key).digest('hex') });
  });

  it('binds the key to the tenants given with --tenant, or refuses them as the configuration would', async () => {
    const result = await cli('gateway-key', '--id', 'acme-gw', '--tenant', 'acme', '--tenant', 'acme-eu');
    expect(result.code).toBe(0);
    const entry = parseYaml(result.stdout.slice(result.stdout.indexOf('gateway:'))) as { gateway: object };
    const config = parseConfig({ ...entry, authzen: { tenants: { acme: 'acme_policy', 'acme-eu': 'acme_eu_policy' } } });
    expect(config.gateway.api_keys[0]).toMatchObject({ id: 'acme-gw', tenants: ['acme', 'acme-eu'] });
    const twice = await cli('gateway-key', '--id', 'acme-gw', '--tenant', 'acme', '--tenant', 'acme');
    expect(twice).toMatchObject({ code: 2, stderr: expect.stringContaining('--tenant: duplicate tenant "acme"') });
  });

  it('prints a configuration entry that configures the id it was given, or refuses the id', async () => {
    // '#' starts a YAML comment: printed bare, the entry would configure the id "edge".
    const result = await cli('gateway-key', '--id', 'edge #1');
    expect(result.code).toBe(0);
    const entry = parseYaml(result.stdout.slice(result.stdout.indexOf('gateway:'))) as Record<string, unknown>;
    expect(parseConfig(entry).gateway.api_keys[0]!.id).toBe('edge #1');
    // An id the configuration would refuse is refused here, before the key is handed out.
    const long = await cli('gateway-key', '--id', 'x'.repeat(129));
    expect(long.code).toBe(2);
    expect(long.stderr).toContain('--id');
  });
});

/**
 * An opa that has begun writing its -o file and is still at it: a build the CLI is interrupted in.
 * The signal goes to the CLI's process group, as Ctrl-C or a service manager's stop sends it.
 */
describe('a bundle build or push interrupted while opa writes', () => {
  const slowOpa = (dir: string) => {
    const opa = join(dir, 'opa');
    writeFileSync(opa, '#!/bin/sh\nwhile [ $# -gt 1 ]; do [ "$1" = -o ] && out=$2; shift; done\nprintf partial > "$out"\nexec sleep 30\n');
    chmodSync(opa, 0o755);
    return opa;
  };
  const interrupted = async (args: string[], env: NodeJS.ProcessEnv, written: () => boolean, signal: NodeJS.Signals) => {
    const child = spawn(process.execPath, ['src/cli/main.ts', ...args], { env: { ...process.env, ...env }, stdio: 'ignore', detached: true });
    for (let waited = 0; waited < 10_000 && !written(); waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(written(), 'opa began writing').toBe(true);
    process.kill(-child.pid!, signal);
    const [code, killedBy] = (await once(child, 'exit')) as [number | null, string | null];
    return { code, killedBy };
  };

  it.each(['SIGINT', 'SIGTERM'] as const)('push of a directory leaves no /tmp/arbiter-push-* behind on %s, and ends by it', async (signal) => {
    const tmp = tempDir();
    const opa = slowOpa(tempDir());
    const written = () => readdirSync(tmp).some((name) => existsSync(join(tmp, name, 'bundle.tar.gz')));
    const ended = await interrupted(['bundle', 'push', 'test/fixtures/rego/simple', '--url', 'http://127.0.0.1:9'], { TMPDIR: tmp, ARBITER_OPA: opa, ARBITER_TOKEN: 'a.b.c' }, written, signal);
    expect(ended).toEqual({ code: null, killedBy: signal });
    expect(readdirSync(tmp)).toEqual([]);
  });

  it.each(['SIGINT', 'SIGTERM'] as const)('build leaves no partial --out on %s, and ends by it; a complete build leaves only --out', async (signal) => {
    const dir = tempDir();
    const out = join(dir, 'simple.tar.gz');
    const opa = slowOpa(tempDir());
    const ended = await interrupted(['bundle', 'build', 'test/fixtures/rego/simple', '--out', out], { ARBITER_OPA: opa }, () => readdirSync(dir).length > 0, signal);
    expect(ended).toEqual({ code: null, killedBy: signal });
    expect(readdirSync(dir)).toEqual([]);
    expect(await cli('bundle', 'build', 'test/fixtures/rego/simple', '--out', out)).toMatchObject({ code: 0 });
    expect(readdirSync(dir)).toEqual(['simple.tar.gz']);
    expect((await readBundleArchive(new Uint8Array(readFileSync(out)))).has('.manifest')).toBe(true);
  });
});

/**
 * `npm start` (and `npm run arbiter -- serve`) as the README runs it, with its state moved to a
 * temporary directory. npm runs a script through `sh -c`; when npm alone is told to stop
 * (`timeout 60 npm start`, a supervisor or an editor stopping the process it started), it passes
 * the signal to its child only, and a shell in between dies of it without passing it on: the
 * server would be left running, holding the port and the state locks, so the next `npm start` fails.
 */
describe('npm start', () => {
  it.each([
    ['npm start', ['start']],
    ['npm run arbiter -- serve', ['run', 'arbiter', '--', 'serve', '--config', 'config/development.yaml']],
  ])('%s: stops the server when npm itself is sent SIGTERM, rather than leaving it running', async (_, args) => {
    const dir = tempDir();
    const { PORT: _port, ...env } = process.env;
    const npm = spawn('npm', args, {
      env: {
        ...env,
        // npm's own shebang and the script's `node` both resolve through PATH: the Node running the tests.
        PATH: `${dirname(process.execPath)}:${process.env.PATH}`,
        ARBITER_SERVER__PORT: '0',
        ARBITER_DEV_ISSUER__KEY_FILE: join(dir, 'dev-issuer.jwk.json'),
        ARBITER_DATA__PATH: join(dir, 'data.db'),
        ARBITER_DECISION_LOG__PATH: join(dir, 'decisions.db'),
        ARBITER_BUNDLES__STORE: join(dir, 'bundles'),
      },
      stdio: ['ignore', 'pipe', 'ignore'],
      detached: true,
    });
    const logged: Record<string, any>[] = [];
    let serverPid: number | undefined;
    try {
      serverPid = await new Promise<number>((resolve, reject) => {
        npm.once('exit', (code) => reject(new Error(`npm ${args.join(' ')} exited ${code} before the server listened`)));
        createInterface({ input: npm.stdout! }).on('line', (line) => {
          if (!line.startsWith('{')) return;
          const entry = JSON.parse(line) as Record<string, any>;
          logged.push(entry);
          if (entry.msg === 'arbiter listening') resolve(entry.pid as number);
        });
      });
      const npmExited = once(npm, 'exit');
      process.kill(npm.pid!, 'SIGTERM');
      await npmExited;
      await waitFor(() => !isRunning(serverPid!), `the server (pid ${serverPid}) to exit after npm was stopped`);
      expect(logged.some((line) => line.msg === 'shutting down' && line.signal === 'SIGTERM')).toBe(true);
    } finally {
      for (const pid of [-npm.pid!, serverPid]) {
        if (pid !== undefined && isRunning(pid)) process.kill(pid, 'SIGKILL');
      }
    }
  });
});

/**
 * The first command of the README's quick start on a machine whose Node.js is older than 24 (a
 * distribution's): npm only warns about `engines` unless told to be strict, so the install went
 * through and `npm start` then died on a stack trace about the `.ts` extension.
 */
describe('npm ci', () => {
  it('refuses a Node.js older than engines.node, naming the version needed, and installs nothing', async () => {
    const dir = tempDir();
    for (const file of ['package.json', 'package-lock.json', '.npmrc']) if (existsSync(file)) copyFileSync(file, join(dir, file));
    // npm checks engines against the version of the Node running it: that one, made to say 22.
    const olderNode = join(dir, 'node-22.cjs');
    writeFileSync(olderNode, "Object.defineProperty(process, 'version', { value: 'v22.12.0' });\n");
    const install = await run('npm', ['ci', '--prefer-offline', '--ignore-scripts', '--no-audit', '--no-fund'], {
      cwd: dir,
      env: { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH}`, NODE_OPTIONS: `--require ${olderNode}` },
    }).then(
      () => ({ code: 0, stderr: '' }),
      (error: { code: number; stderr: string }) => ({ code: error.code, stderr: error.stderr }),
    );
    expect(install.stderr).toContain('Required: {"node":">=24');
    expect(install.code).not.toBe(0);
    expect(existsSync(join(dir, 'node_modules'))).toBe(false);
  }, 60_000);
});

/** A development-issuer config whose key file `arbiter token` has just generated (and signed with). */
async function devIssuerWithKey(): Promise<{ keyFile: string; config: string }> {
  const dir = tempDir();
  const keyFile = join(dir, 'key.jwk.json');
  const config = join(dir, 'dev.yaml');
  writeFileSync(config, `dev_issuer: {enabled: true, key_file: ${JSON.stringify(keyFile)}}\n`);
  expect((await cli('token', '--config', config, '--sub', 'x')).code).toBe(0);
  return { keyFile, config };
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
