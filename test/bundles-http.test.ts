import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readBundleArchive } from '../src/policy/archive.ts';
import type { Arbiter } from '../src/server/start.ts';
import { adminCall, postJson, startTestArbiter, tempDir } from './support/arbiter.ts';
import { build, signingArgs, signingKey, writeBundleSource, type SigningKey } from './support/bundle-sources.ts';
import { assemble, entry, LOOP_FOREVER, packFiles, prefixExportedFunction, tarGz } from './support/hostile-archives.ts';
import { TestIssuer } from './support/issuer.ts';
import { stopWorkersAtNextCheck } from './support/worker-crash.ts';

/** Response bodies are asserted field by field, so they stay loosely typed. */
 
type Json = Record<string, any>;

let admins: TestIssuer;
let dir: string;
let key: SigningKey;
/** Requires signatures (key `default`, scope `write`). */
let signed: Arbiter;
/** Development defaults: unsigned bundles accepted. */
let open: Arbiter;
let writeToken: string;
let readToken: string;
const archives: Record<string, Buffer> = {};

const adminConfig = () => ({ admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] } });

const call = (arbiter: Arbiter, method: string, path: string, body?: Uint8Array | object, token = writeToken) => adminCall(arbiter.url, token, method, path, body);

const put = (arbiter: Arbiter, name: string, archive: Uint8Array, token?: string) => call(arbiter, 'PUT', `/v1/bundles/${name}`, archive, token);

async function decide(arbiter: Arbiter, policy: string) {
  return (await postJson(`${arbiter.url}/v1/decide`, { policy, action: 'read', resource: { type: 'doc' } })).body!;
}

beforeAll(async () => {
  admins = await TestIssuer.create('https://admins.test.example');
  await admins.serve();
  dir = tempDir('arbiter-bundles-http-');
  key = signingKey(dir);
  const lc = writeBundleSource(dir, 'lc');
  archives.r1 = build(lc, join(dir, 'r1.tar.gz'), 'r1', signingArgs(dir, key, 1000));
  archives.r2 = build(lc, join(dir, 'r2.tar.gz'), 'r2', signingArgs(dir, key, 2000));
  archives.old = build(lc, join(dir, 'old.tar.gz'), 'r0', signingArgs(dir, key, 500));
  archives.unsigned = build(lc, join(dir, 'unsigned.tar.gz'), 'u1');
  archives.overlap = build(writeBundleSource(dir, 'ovl', { extraRoots: ['simple'] }), join(dir, 'ovl.tar.gz'), 'o1');
  archives.badSmoke = build(writeBundleSource(dir, 'bad', { decision: '{"allow": "yes"}' }), join(dir, 'bad.tar.gz'), 'b1');
  archives.junk = build('test/fixtures/rego/junk', join(dir, 'junk.tar.gz'), 'junk-2');

  signed = await startTestArbiter({
    ...adminConfig(),
    bundles: { require_signatures: true, signing: { keys: { default: { key: key.publicPem, algorithm: 'RS256' } }, scope: 'write' } },
  });
  open = await startTestArbiter(adminConfig());
  writeToken = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.read arbiter.bundles.write' });
  readToken = await admins.sign({ sub: 'viewer@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.read' });
}, 60_000);

afterAll(async () => {
  await signed?.close();
  await open?.close();
  await admins?.close();
});

describe('admin authorization', () => {
  it('401 without a token, 403 without the write scope, reads with the read scope', async () => {
    const none = await fetch(`${signed.url}/v1/bundles`);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toContain('scope="arbiter.bundles.read"');
    expect(await put(signed, 'lc', archives.r1!, readToken)).toMatchObject({ status: 403, body: { code: 'forbidden' } });
    expect((await call(signed, 'GET', '/v1/bundles', undefined, readToken)).status).toBe(200);
  });
});

describe('signed bundles', () => {
  it('accepts a bundle signed by opa, records who stored it, and serves it', async () => {
    const response = await put(signed, 'lc', archives.r1!);
    expect(response).toMatchObject({ status: 201, body: { outcome: 'activated', revision: 'r1' } });
    const status = (await call(signed, 'GET', '/v1/bundles/lc', undefined, readToken)).body!;
    expect(status.active).toMatchObject({ revision: 'r1', activated_by: 'https://admins.test.example#ops@example', source: 'store' });
    expect(status.revisions).toEqual([expect.objectContaining({ revision: 'r1', digest: response.body!.digest, stored_by: 'https://admins.test.example#ops@example', signature: { keyid: 'default', iat: 1000 } })]);
    expect((await decide(signed, 'lc')).policy).toEqual({ bundle: 'lc', revision: 'r1' });
  });

  it('answers the same archive again with 200 unchanged', async () => {
    expect(await put(signed, 'lc', archives.r1!)).toMatchObject({ status: 200, body: { outcome: 'unchanged', revision: 'r1' } });
  });

  it('refuses an unsigned bundle, a tampered wasm and an unsigned extra file, and keeps serving r1', async () => {
    expect(await put(signed, 'lc', archives.unsigned!)).toMatchObject({ status: 422, body: { check: 'signature_missing' } });

    const files = new Map(await readBundleArchive(archives.r2!));
    const wasm = new Uint8Array(files.get('policy.wasm')!);
    wasm[wasm.length - 1] = wasm.at(-1)! ^ 1;
    const tampered = packFiles(new Map(files).set('policy.wasm', wasm));
    expect(await put(signed, 'lc', tampered)).toMatchObject({ status: 422, body: { check: 'signature_mismatch' } });

    const extra = packFiles(new Map(files).set('lc/backdoor.rego', new Uint8Array(Buffer.from('package lc\n'))));
    const response = await put(signed, 'lc', extra);
    expect(response).toMatchObject({ status: 422, body: { code: 'signature_file_unsigned', check: 'signature_file_unsigned' } });
    expect(response.contentType).toBe('application/problem+json');
    expect((await decide(signed, 'lc')).policy.revision).toBe('r1');
  });

  it('refuses a replayed or older signed bundle, but rolls back on explicit activation', async () => {
    expect(await put(signed, 'lc', archives.r2!)).toMatchObject({ status: 201, body: { revision: 'r2' } });
    expect(await put(signed, 'lc', archives.r1!)).toMatchObject({ status: 409, body: { check: 'bundle_replayed' } });
    expect(await put(signed, 'lc', archives.old!)).toMatchObject({ status: 409, body: { check: 'bundle_replayed' } });
    expect((await decide(signed, 'lc')).policy.revision).toBe('r2');

    const rollback = await call(signed, 'POST', '/v1/bundles/lc/activate', { revision: 'r1' });
    expect(rollback).toMatchObject({ status: 200, body: { active: { revision: 'r1' } } });
    expect(rollback.body!.revisions.map((r: { revision: string }) => r.revision)).toEqual(['r1', 'r2']);
    expect((await decide(signed, 'lc')).policy.revision).toBe('r1');
    expect(await call(signed, 'POST', '/v1/bundles/lc/activate', { revision: 'r2' })).toMatchObject({ status: 200, body: { active: { revision: 'r2' } } });
    expect(await call(signed, 'POST', '/v1/bundles/lc/activate', { revision: 'nope' })).toMatchObject({ status: 404, body: { code: 'bundle_revision_not_found' } });
  });
});

describe('per-bundle signing keys', () => {
  it('a key trusted for one bundle, under the same key id, does not sign another; nor does another scope', async () => {
    const teamKey = signingKey(dir);
    const teamClaims = (scope: string) => {
      const claims = join(dir, `team-${scope}.json`);
      writeFileSync(claims, JSON.stringify({ keyid: 'default', scope }));
      return ['--signing-key', teamKey.privatePath, '--signing-alg', 'RS256', '--claims-file', claims];
    };
    const team = writeBundleSource(dir, 'team');
    const byShared = build(team, join(dir, 'team-shared.tar.gz'), 't1', signingArgs(dir, key));
    const byTeam = build(team, join(dir, 'team-own.tar.gz'), 't2', teamClaims('team'));
    const byTeamWrongScope = build(team, join(dir, 'team-scope.tar.gz'), 't3', teamClaims('write'));
    const lcByTeam = build(writeBundleSource(dir, 'lc'), join(dir, 'lc-team.tar.gz'), 'l9', teamClaims('write'));
    const perBundle = await startTestArbiter({
      ...adminConfig(),
      bundles: {
        require_signatures: true,
        signing: {
          keys: { default: { key: key.publicPem, algorithm: 'RS256' } },
          scope: 'write',
          bundles: { team: { keys: { default: { key: teamKey.publicPem, algorithm: 'RS256' } }, scope: 'team' } },
        },
      },
    });
    try {
      expect(await put(perBundle, 'team', byShared)).toMatchObject({ status: 422, body: { check: 'signature_invalid' } });
      expect(await put(perBundle, 'team', byTeamWrongScope)).toMatchObject({ status: 422, body: { check: 'signature_scope_mismatch' } });
      expect(await put(perBundle, 'lc', lcByTeam)).toMatchObject({ status: 422, body: { check: 'signature_invalid' } });
      expect(await put(perBundle, 'team', byTeam)).toMatchObject({ status: 201, body: { revision: 't2' } });
      expect(await put(perBundle, 'lc', archives.r2!)).toMatchObject({ status: 201, body: { revision: 'r2' } });
      // Signed for `team`, pushed under another name: that name's keys do not verify it.
      expect(await put(perBundle, 'other', byTeam)).toMatchObject({ status: 422, body: { check: 'signature_invalid' } });
    } finally {
      await perBundle.close();
    }
  });
});

describe('hostile archives through PUT', () => {
  const manifest = (name: string) => JSON.stringify({ revision: 'h1', roots: [name], wasm: [{ entrypoint: `${name}/decision`, module: '/policy.wasm' }] });

  it.each([
    ['path traversal', () => tarGz(entry('../evil.rego', { body: 'x' })), 'archive_path_traversal'],
    ['a symlink', () => tarGz(entry('policy.wasm', { type: '2', linkname: '/etc/passwd' })), 'archive_entry_type'],
    ['a duplicate entry', () => tarGz(entry('/a.rego', { body: '1' }), entry('./a.rego', { body: '2' })), 'archive_duplicate_entry'],
    ['not gzip', () => Buffer.from('plain text'), 'archive_not_gzip'],
    ['no manifest', () => tarGz(entry('/policy.rego', { body: 'package h' })), 'manifest_missing'],
    ['a wasm with a wrong ABI', () => tarGz(entry('/.manifest', { body: manifest('h') }), entry('/policy.wasm', { body: assemble({ globals: { opa_wasm_abi_version: 1, opa_wasm_abi_minor_version: 1 } }) })), 'wasm_abi'],
  ])('%s -> %s', async (_label, archive, check) => {
    const response = await put(open, 'h', archive());
    expect(response.status).toBe(422);
    expect(response.body).toMatchObject({ code: check, check });
    expect(response.contentType).toBe('application/problem+json');
  });

  it('data outside the manifest roots -> bundle_data_outside_roots (it would shadow live data)', async () => {
    const files = new Map(await readBundleArchive(archives.unsigned!));
    const shadow = packFiles(new Map(files).set('entitlements/data.json', new Uint8Array(Buffer.from('{"alice": {"grants": []}}'))));
    const response = await put(open, 'lc', shadow);
    expect(response).toMatchObject({ status: 422, body: { check: 'bundle_data_outside_roots' } });
    expect(response.body!.detail).toContain('entitlements');
  });

  it.each([
    ['a value', '{"lc": {"name": "\\ud800"}}', '/lc/name'],
    ['a key', '{"lc": {"\\udc00": 1}}', '/lc/\udc00'],
  ])('data.json whose %s holds a lone surrogate -> 422 bundle_data_invalid naming the place (the policy could not load it)', async (_label, json, pointer) => {
    const files = new Map(await readBundleArchive(archives.unsigned!));
    const response = await put(open, 'lc', packFiles(new Map(files).set('data.json', new Uint8Array(Buffer.from(json)))));
    expect(response).toMatchObject({ status: 422, body: { code: 'bundle_data_invalid', check: 'bundle_data_invalid' } });
    expect(response.body!.detail).toContain(`data.json${pointer}`);
  });

  it.each([
    ['an exponent', '{"lc": {"limits": {"max_amount": 1e400}}}', '/lc/limits/max_amount'],
    ['a long integer', `{"lc": {"ids": [1, ${'9'.repeat(400)}]}}`, '/lc/ids/1'],
  ])('data.json with a number past a double\'s range (%s) -> 422 naming the place (the policy would read null)', async (_label, json, pointer) => {
    const files = new Map(await readBundleArchive(archives.unsigned!));
    const response = await put(open, 'lc', packFiles(new Map(files).set('data.json', new Uint8Array(Buffer.from(json)))));
    expect(response).toMatchObject({ status: 422, body: { code: 'bundle_data_invalid', check: 'bundle_data_invalid' } });
    expect(response.body!.detail).toContain(`data.json${pointer}`);
  });

  it.each(['lc/data.yaml', 'data.yml'])('%s -> 422 bundle_data_unsupported (OPA would load it: its data must not be silently left out)', async (path) => {
    const files = new Map(await readBundleArchive(archives.unsigned!));
    const yaml = path === 'data.yml' ? 'lc:\n  blocked: true\n' : 'blocked: true\n';
    const response = await put(open, 'lc', packFiles(new Map(files).set(path, new Uint8Array(Buffer.from(yaml)))));
    expect(response).toMatchObject({ status: 422, body: { code: 'bundle_data_unsupported', check: 'bundle_data_unsupported' } });
    expect(response.body!.detail).toContain(path);
  });

  // Nested far past bundles.limits.max_data_depth (32): walking it recursively would exhaust the stack.
  const nested = (levels: number, leaf = '1') => `${'{"lc":'.repeat(levels)}${leaf}${'}'.repeat(levels)}`;

  it('two data.json files nested deep where they merge -> 422 bundle_data_too_deep, not a 500', async () => {
    const files = new Map(await readBundleArchive(archives.unsigned!));
    files.set('data.json', new Uint8Array(Buffer.from(`{"lc": ${nested(20_000, '{"a": 1}')}}`)));
    files.set('lc/data.json', new Uint8Array(Buffer.from(nested(20_000, '{"b": 1}'))));
    expect(await put(open, 'lc', packFiles(files))).toMatchObject({ status: 422, body: { code: 'bundle_data_too_deep', check: 'bundle_data_too_deep' } });
  });

  it('data nested deep along as deep a manifest root -> 422 bundle_data_too_deep, not a 500', async () => {
    const files = new Map(await readBundleArchive(archives.unsigned!));
    const manifest = JSON.parse(Buffer.from(files.get('.manifest')!).toString()) as Json;
    manifest.roots = ['lc', Array(20_000).fill('x').join('/')];
    files.set('.manifest', new Uint8Array(Buffer.from(JSON.stringify(manifest))));
    files.set('data.json', new Uint8Array(Buffer.from(nested(19_990).replaceAll('"lc"', '"x"'))));
    expect(await put(open, 'lc', packFiles(files))).toMatchObject({ status: 422, body: { code: 'bundle_data_too_deep', check: 'bundle_data_too_deep' } });
  });

  it('a .manifest nested deeper than 64 levels -> 422 manifest_invalid naming the place, not a 500', async () => {
    const files = new Map(await readBundleArchive(archives.unsigned!));
    const manifest = Buffer.from(files.get('.manifest')!).toString();
    files.set('.manifest', new Uint8Array(Buffer.from(`${manifest.slice(0, manifest.lastIndexOf('}'))}, "metadata": {"deep": ${nested(50_000)}}}`)));
    const response = await put(open, 'lc', packFiles(files));
    expect(response).toMatchObject({ status: 422, body: { code: 'manifest_invalid', check: 'manifest_invalid' } });
    expect(response.body!.detail).toContain('/metadata/deep/lc');
  });

  it('a Content-Encoding on the archive -> 415 naming it (the body is not decoded), and nothing changes', async () => {
    for (const [encoding, body] of [['gzip', gzipSync(archives.unsigned!)], ['gzip', archives.unsigned!]] as const) {
      const response = await fetch(`${open.url}/v1/bundles/enc`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${writeToken}`, 'content-type': 'application/gzip', 'content-encoding': encoding },
        body: new Uint8Array(body),
      });
      expect(response.status).toBe(415);
      expect(response.headers.get('accept-encoding')).toBe('identity');
      expect(await response.json()).toMatchObject({ code: 'unsupported_media_type', detail: expect.stringContaining('Content-Encoding "gzip"') });
    }
    expect((await call(open, 'GET', '/v1/bundles/enc')).status).toBe(404);
  });

  it('a gzip bomb stops at the decompressed limit', async () => {
    const size = 80 * 1024 * 1024;
    const bomb = gzipSync(Buffer.concat([entry('bomb.json', { size }), Buffer.alloc(size)]), { level: 1 });
    expect(await put(open, 'h', bomb)).toMatchObject({ status: 422, body: { check: 'archive_decompressed_too_large' } });
  });

  it('an archive over the compressed limit is refused while it streams in', async () => {
    const small = await startTestArbiter({ ...adminConfig(), bundles: { limits: { max_compressed_bytes: 1024 } } });
    try {
      expect(await put(small, 'lc', archives.unsigned!)).toMatchObject({ status: 413, body: { code: 'archive_compressed_too_large' } });
    } finally {
      await small.close();
    }
  });

  it('a bundle store whose index is corrupt answers 503 bundle_store_unreadable, as documented', async () => {
    const store = join(tempDir(), 'bundles');
    const damaged = await startTestArbiter({ ...adminConfig(), bundles: { store } });
    try {
      expect(await put(damaged, 'lc', archives.unsigned!)).toMatchObject({ status: 201 });
      writeFileSync(join(store, 'lc', 'index.json'), '{"not": ');
      for (const path of ['/v1/bundles', '/v1/bundles/lc']) {
        expect(await call(damaged, 'GET', path, undefined, readToken), path).toMatchObject({ status: 503, body: { code: 'bundle_store_unreadable' } });
      }
      const spec = (await (await fetch(`${damaged.url}/openapi.json`)).json()) as Json;
      const writes: [method: string, path: string, template: string, body?: object][] = [
        ['PUT', '/v1/bundles/lc', '/v1/bundles/{name}', archives.unsigned!],
        ['POST', '/v1/bundles/lc/activate', '/v1/bundles/{name}/activate', { revision: 'u1' }],
        ['DELETE', '/v1/bundles/lc', '/v1/bundles/{name}'],
      ];
      for (const [method, path, template, body] of writes) {
        expect(await call(damaged, method, path, body), `${method} ${path}`).toMatchObject({ status: 503, body: { code: 'bundle_store_unreadable' } });
        const documented = spec.paths[template][method.toLowerCase()].responses['503']?.content['application/problem+json'].schema.allOf[1].properties.code.enum;
        expect(documented, `${method} ${template}`).toContain('bundle_store_unreadable');
      }
    } finally {
      await damaged.close();
    }
  });

  it('roots overlapping an active bundle, a smoke test that breaks the contract, and a bad name', async () => {
    expect(await put(open, 'ovl', archives.overlap!)).toMatchObject({ status: 409, body: { check: 'bundle_roots_overlap' } });
    expect(await put(open, 'bad', archives.badSmoke!)).toMatchObject({ status: 422, body: { check: 'smoke_evaluation' } });
    expect(await put(open, 'Bad..name', archives.badSmoke!)).toMatchObject({ status: 400, body: { code: 'bundle_name_invalid' } });
    expect(await put(open, 'lc', archives.r1!.subarray(0, 100))).toMatchObject({ status: 422 });
  });

  it('a bad name on every bundle route is a 400 bundle_name_invalid its OpenAPI operation documents', async () => {
    const spec = (await (await fetch(`${open.url}/openapi.json`)).json()) as Json;
    const routes: [method: string, path: string, template: string, body?: object][] = [
      ['PUT', '/v1/bundles/Bad..name', '/v1/bundles/{name}', archives.r1!],
      ['DELETE', '/v1/bundles/Bad..name', '/v1/bundles/{name}'],
      ['POST', '/v1/bundles/Bad..name/activate', '/v1/bundles/{name}/activate', { revision: 'r1' }],
    ];
    for (const [method, path, template, body] of routes) {
      const answer = await call(open, method, path, body);
      expect(answer, `${method} ${path}`).toMatchObject({ status: 400, body: { code: 'bundle_name_invalid' } });
      const documented = spec.paths[template][method.toLowerCase()].responses['400']?.content['application/problem+json'].schema.allOf[1].properties.code.enum;
      expect(documented, `${method} ${template}`).toContain('bundle_name_invalid');
    }
  });

  it('an entrypoint returning junk passes the smoke test but every decision on it is a deny', async () => {
    expect(await put(open, 'junk', archives.junk!)).toMatchObject({ status: 201, body: { revision: 'junk-2' } });
    const decision = await decide(open, 'junk');
    expect(decision).toMatchObject({ allow: false, policy: { bundle: 'junk', revision: 'junk-2' } });
    expect(decision.reasons[0].code).toBe('policy_contract_violation');
  });
});

describe('a push whose check the evaluation worker never finished', () => {
  it('is 503 wasm_check_interrupted, not a 422 that calls the bundle bad, and the same push then succeeds', async () => {
    const crashes = stopWorkersAtNextCheck();
    const arbiter = await startTestArbiter({ ...adminConfig(), engine: { workers: 1 } });
    try {
      crashes.arm();
      const interrupted = await put(arbiter, 'lc', archives.unsigned!);
      expect(crashes.stops).toBe(2);
      expect(interrupted).toMatchObject({ status: 503, body: { code: 'wasm_check_interrupted', check: 'wasm_check_interrupted' } });
      expect(arbiter.bundles.get('lc')).toBeUndefined();
      // A deploy pipeline that retries on 503 gets it activated.
      expect(await put(arbiter, 'lc', archives.unsigned!)).toMatchObject({ status: 201, body: { revision: 'u1' } });
    } finally {
      crashes.dispose();
      await arbiter.close();
    }
  });
});

describe('an admin token revoked while its change waits behind a slow check', () => {
  it('changes nothing: a push, an activation and a DELETE queued then are refused 401 token_revoked', async () => {
    // Changes to bundles take turns, and a candidate's checks may run up to engine.load_deadline_ms:
    // a change asked for before its token's revocation must not take effect after the revocation's 2xx.
    const arbiter = await startTestArbiter({ ...adminConfig(), engine: { load_deadline_ms: 1500 } });
    try {
      const stolen = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', jti: 'stolen-bundles', scope: 'arbiter.bundles.read arbiter.bundles.write' });
      const security = await admins.sign({ sub: 'security@example', aud: 'arbiter-admin', scope: 'arbiter.revocations.write' });
      const lc = writeBundleSource(dir, 'lc');
      expect((await put(arbiter, 'lc', build(lc, join(dir, 'queued-u1.tar.gz'), 'u1'), stolen)).status).toBe(201);
      expect((await put(arbiter, 'lc', build(lc, join(dir, 'queued-u2.tar.gz'), 'u2'), stolen)).status).toBe(201);
      expect((await put(arbiter, 'kept', build(writeBundleSource(dir, 'kept'), join(dir, 'kept.tar.gz'), 'k1'), stolen)).status).toBe(201);
      const u3 = build(lc, join(dir, 'queued-u3.tar.gz'), 'u3');
      // A module whose entrypoint table never returns: its check holds the queue until load_deadline_ms.
      const files = await readBundleArchive(new Uint8Array(build(writeBundleSource(dir, 'slow'), join(dir, 'slow.tar.gz'), 's1')));
      const slow = put(arbiter, 'slow', packFiles(new Map(files).set('policy.wasm', prefixExportedFunction(files.get('policy.wasm')!, 'entrypoints', LOOP_FOREVER))));
      await new Promise((resolve) => setTimeout(resolve, 200));
      const push = put(arbiter, 'lc', u3, stolen);
      const activation = call(arbiter, 'POST', '/v1/bundles/lc/activate', { revision: 'u1' }, stolen);
      const removal = call(arbiter, 'DELETE', '/v1/bundles/kept', undefined, stolen);
      await new Promise((resolve) => setTimeout(resolve, 300)); // all three read, authorized and queued
      expect((await adminCall(arbiter.url, security, 'POST', '/v1/revocations', { kind: 'jti', value: 'stolen-bundles', iss: admins.issuer, reason: 'leaked' })).status).toBe(201);

      expect((await slow).status).toBe(422);
      for (const answer of await Promise.all([push, activation, removal])) {
        expect(answer).toMatchObject({ status: 401, body: { code: 'unauthorized', detail: 'token_revoked' } });
      }
      const status = (await call(arbiter, 'GET', '/v1/bundles/lc')).body as Json;
      expect(status.active).toMatchObject({ revision: 'u2' });
      expect((status.revisions as Json[]).map((r) => r.revision)).not.toContain('u3');
      expect(arbiter.bundles.get('kept')?.revision).toBe('k1');
    } finally {
      await arbiter.close();
    }
  });
});

describe('DELETE', () => {
  it('is refused for the default bundle and removes any other', async () => {
    expect(await call(open, 'DELETE', '/v1/bundles/simple')).toMatchObject({ status: 409, body: { code: 'bundle_in_use' } });
    expect((await decide(open, 'simple')).policy).toMatchObject({ bundle: 'simple' });
    expect((await put(open, 'lc', archives.unsigned!)).status).toBe(201);
    expect((await call(open, 'DELETE', '/v1/bundles/lc')).status).toBe(204);
    expect((await call(open, 'GET', '/v1/bundles/lc')).status).toBe(404);
    expect((await decide(open, 'lc')).reasons[0].code).toBe('no_active_bundle');
    expect((await call(open, 'DELETE', '/v1/bundles/lc')).status).toBe(404);
  });

  it('keeps the replay mark of a signed bundle, across a restart: an older signed archive is refused after it, a newer one accepted', async () => {
    const store = join(tempDir(), 'bundles');
    const start = () => startTestArbiter({ ...adminConfig(), bundles: { store, require_signatures: true, signing: { keys: { default: { key: key.publicPem, algorithm: 'RS256' } }, scope: 'write' } } });
    archives.r3 ??= build(writeBundleSource(dir, 'lc'), join(dir, 'r3.tar.gz'), 'r3', signingArgs(dir, key, 3000));
    let arbiter = await start();
    try {
      expect((await put(arbiter, 'lc', archives.r1!)).status).toBe(201);
      expect((await put(arbiter, 'lc', archives.r2!)).status).toBe(201);
      expect((await call(arbiter, 'DELETE', '/v1/bundles/lc')).status).toBe(204);
      expect((await call(arbiter, 'GET', '/v1/bundles/lc')).status).toBe(404);
      expect((await call(arbiter, 'GET', '/v1/bundles')).body!.bundles.map((b: { name: string }) => b.name)).not.toContain('lc');
      // Stored before the deleted revision, or signed before it: a replay, deleted or not.
      expect(await put(arbiter, 'lc', archives.r1!)).toMatchObject({ status: 409, body: { check: 'bundle_replayed' } });
      expect(await put(arbiter, 'lc', archives.old!)).toMatchObject({ status: 409, body: { check: 'bundle_replayed' } });
      expect((await decide(arbiter, 'lc')).reasons[0].code).toBe('no_active_bundle');
      expect((await call(arbiter, 'DELETE', '/v1/bundles/lc')).status).toBe(404);
      expect(await call(arbiter, 'POST', '/v1/bundles/lc/activate', { revision: 'r2' })).toMatchObject({ status: 404, body: { code: 'bundle_not_found' } });
      // Nor does a decision replay find its revisions: they are gone, not pruned by retention.
      await expect(arbiter.bundleLifecycle.withRevision('lc', 'r1', async () => undefined)).rejects.toMatchObject({ code: 'bundle_revision_not_found' });
    } finally {
      await arbiter.close();
    }
    arbiter = await start();
    try {
      expect(await put(arbiter, 'lc', archives.r1!)).toMatchObject({ status: 409, body: { check: 'bundle_replayed' } });
      expect(await put(arbiter, 'lc', archives.old!)).toMatchObject({ status: 409, body: { check: 'bundle_replayed' } });
      expect((await call(arbiter, 'DELETE', '/v1/bundles/lc')).status).toBe(404);
      // The revision it served when deleted is no step back, nor is a newer one.
      expect(await put(arbiter, 'lc', archives.r2!)).toMatchObject({ status: 201, body: { revision: 'r2' } });
      expect((await call(arbiter, 'DELETE', '/v1/bundles/lc')).status).toBe(204);
      expect(await put(arbiter, 'lc', archives.r3!)).toMatchObject({ status: 201, body: { revision: 'r3' } });
      expect((await decide(arbiter, 'lc')).policy.revision).toBe('r3');
      expect((await call(arbiter, 'GET', '/v1/bundles/lc')).body!.revisions.map((r: { revision: string }) => r.revision)).toEqual(['r3']);
      expect(await put(arbiter, 'lc', archives.r2!)).toMatchObject({ status: 409, body: { check: 'bundle_replayed' } });
    } finally {
      await arbiter.close();
    }
  }, 60_000);

  it('keeps nothing of a bundle that never had a signed revision: its name starts afresh', async () => {
    const store = join(tempDir(), 'bundles');
    const arbiter = await startTestArbiter({ ...adminConfig(), bundles: { store } });
    try {
      const rebuilt = build(writeBundleSource(dir, 'lc', { decision: '{"allow": false, "reasons": [{"code": "manual"}]}' }), join(dir, 'u1-rebuilt.tar.gz'), 'u1');
      expect((await put(arbiter, 'lc', archives.unsigned!)).status).toBe(201);
      expect((await call(arbiter, 'DELETE', '/v1/bundles/lc')).status).toBe(204);
      expect(readdirSync(store)).toEqual([]);
      // Another archive under its revision is no conflict once the bundle is gone.
      expect(await put(arbiter, 'lc', rebuilt)).toMatchObject({ status: 201, body: { revision: 'u1' } });
    } finally {
      await arbiter.close();
    }
  }, 60_000);
});

describe('arbiter bundle (CLI)', () => {
  const cli = promisify(execFile);
  const run = (...args: string[]) =>
    cli(process.execPath, ['src/cli/main.ts', 'bundle', ...args], { env: { ...process.env, ARBITER_TOKEN: writeToken, ARBITER_URL: open.url } }).then(
      ({ stdout }) => ({ code: 0, stdout, stderr: '' }),
      (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
    );

  it('builds, pushes a directory, lists and activates, with exit codes 0/1/2', async () => {
    const src = writeBundleSource(dir, 'cli');
    const out = join(dir, 'cli-built.tar.gz');
    expect(await run('build', src, '--out', out, '--revision', 'c1')).toMatchObject({ code: 0 });
    expect((await readBundleArchive(readFileSync(out))).has('policy.wasm')).toBe(true);

    const pushed = await run('push', out, '--name', 'cli', '--json');
    expect(pushed.code).toBe(0);
    expect(JSON.parse(pushed.stdout)).toMatchObject({ outcome: 'activated', revision: 'c1' });
    expect(await run('push', src, '--name', 'cli', '--revision', 'c2')).toMatchObject({ code: 0, stdout: expect.stringContaining('revision c2 activated') });

    const listed = await run('list', '--json');
    const cliStatus = (JSON.parse(listed.stdout) as { bundles: { name: string; active: { revision: string }; revisions: unknown[] }[] }).bundles.find((b) => b.name === 'cli')!;
    expect(cliStatus.active.revision).toBe('c2');
    expect(cliStatus.revisions).toHaveLength(2);

    expect(await run('activate', 'cli', 'c1')).toMatchObject({ code: 0, stdout: expect.stringContaining('active c1') });
    expect((await decide(open, 'cli')).policy.revision).toBe('c1');

    expect(await run('activate', 'cli', 'nope')).toMatchObject({ code: 1, stderr: expect.stringContaining('bundle_revision_not_found') });
    expect(await run('activate', 'cli')).toMatchObject({ code: 2 });
    expect(await run('frobnicate')).toMatchObject({ code: 2 });
    expect(await run('--help')).toMatchObject({ code: 0, stdout: expect.stringContaining('Usage: arbiter bundle') });
  });
});
