import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { describe, expect, it } from 'vitest';
import { tempDir } from './support/arbiter.ts';

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

    const disabled = join(dir, 'prod.yaml');
    writeFileSync(disabled, 'mode: production\n');
    const refused = await cli('token', '--config', disabled, '--sub', 'x');
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('dev_issuer.enabled');
  });

  it('generates a gateway key whose hash is the configuration entry', async () => {
    const result = await cli('gateway-key', '--id', 'kong-eu', '--json');
    expect(result.code).toBe(0);
    const { key, api_key } = JSON.parse(result.stdout) as { key: string; api_key: { id: string; sha256: string } };
    expect(api_key).toEqual({ id: 'kong-eu', sha256: createHash('sha256').update(key).digest('hex') });
  });
});
