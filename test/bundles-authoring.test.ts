/**
 * What a policy author meets when a bundle of their own is refused: the answer must name the
 * failed check and say what to change, and the active revision must keep serving.
 */
import { createPrivateKey } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CompactSign, decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readBundleArchive } from '../src/policy/archive.ts';
import type { Arbiter } from '../src/server/start.ts';
import { adminCall, postJson, startTestArbiter, tempDir } from './support/arbiter.ts';
import { build, signingArgs, signingKey, writeBundleSource, type SigningKey } from './support/bundle-sources.ts';
import { packFiles } from './support/hostile-archives.ts';
import { TestIssuer } from './support/issuer.ts';

let admins: TestIssuer;
let dir: string;
let key: SigningKey;
/** Development defaults: unsigned bundles accepted. */
let open: Arbiter;
/** Requires signatures (key `default`, scope `write`). */
let signed: Arbiter;
let token: string;

const put = (arbiter: Arbiter, name: string, archive: Uint8Array) => adminCall(arbiter.url, token, 'PUT', `/v1/bundles/${name}`, archive);

async function decide(arbiter: Arbiter, policy: string) {
  return (await postJson(`${arbiter.url}/v1/decide`, { policy, action: 'read', resource: { type: 'doc' } })).body!;
}

/** A bundle directory holding `rego` as its one module, with roots `roots`. */
function source(name: string, rego: string, roots: string[]): string {
  const src = join(dir, `src-${name}-${Math.random().toString(36).slice(2)}`);
  mkdirSync(src, { recursive: true });
  writeFileSync(join(src, 'policy.rego'), rego);
  writeFileSync(join(src, '.manifest'), JSON.stringify({ roots }));
  return src;
}

beforeAll(async () => {
  admins = await TestIssuer.create('https://admins.test.example');
  await admins.serve();
  dir = tempDir('arbiter-authoring-');
  key = signingKey(dir);
  const admin = { admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] } };
  open = await startTestArbiter(admin);
  signed = await startTestArbiter({
    ...admin,
    bundles: { require_signatures: true, signing: { keys: { default: { key: key.publicPem, algorithm: 'RS256' } }, scope: 'write' } },
  });
  token = await admins.sign({ sub: 'author@example', aud: 'arbiter-admin', scope: 'arbiter.bundles.read arbiter.bundles.write' });
  expect(await put(open, 'au', build(writeBundleSource(dir, 'au'), join(dir, 'au-good.tar.gz'), 'good'))).toMatchObject({ status: 201 });
}, 60_000);

afterAll(async () => {
  await open?.close();
  await signed?.close();
  await admins?.close();
});

describe('a decision that breaks the contract on the smoke request', () => {
  it.each([
    ['allow is not a boolean', '{"allow": "yes", "reasons": []}', 'allow'],
    ['reasons are missing', '{"allow": false}', 'reasons'],
    ['a reason is a string', '{"allow": false, "reasons": ["nope"]}', 'reasons.0'],
    ['obligations are an object', '{"allow": false, "reasons": [], "obligations": {"type": "x"}}', 'obligations'],
    ['an obligation has no type', '{"allow": false, "reasons": [], "obligations": [{"kind": "x"}]}', 'obligations.0.type'],
  ])('%s -> 422 smoke_evaluation naming the member, and the active revision keeps serving', async (_label, decision, member) => {
    const archive = build(writeBundleSource(dir, 'au', { decision }), join(dir, `au-${member}.tar.gz`), `bad-${member}`);
    const response = await put(open, 'au', archive);
    expect(response).toMatchObject({ status: 422, body: { code: 'smoke_evaluation', check: 'smoke_evaluation' } });
    expect(response.body!.detail).toContain(`${member}: `);
    expect((await decide(open, 'au')).policy.revision).toBe('good');
  });

  it('a decision undefined on it -> the detail says so and to give the rule a default', async () => {
    const rego = 'package au\n\n# METADATA\n# entrypoint: true\ndecision := {"allow": true, "reasons": []} if input.subject.authenticated\n';
    const response = await put(open, 'au', build(source('au', rego, ['au']), join(dir, 'au-undefined.tar.gz'), 'undefined'));
    expect(response).toMatchObject({ status: 422, body: { check: 'smoke_evaluation' } });
    expect(response.body!.detail).toContain('no result');
    expect(response.body!.detail).toContain('default');
  });
});

describe('the decision entrypoint', () => {
  it('declared under another name -> entrypoint_missing lists what the bundle declares', async () => {
    const rego = 'package au\n\n# METADATA\n# entrypoint: true\ndecide := {"allow": true, "reasons": []}\n';
    const response = await put(open, 'au', build(source('au', rego, ['au']), join(dir, 'au-decide.tar.gz'), 'decide'));
    expect(response).toMatchObject({ status: 422, body: { check: 'entrypoint_missing' } });
    expect(response.body!.detail).toContain('au/decide');
  });

  it('of a bundle whose name is no Rego package name -> entrypoint_missing says the name cannot declare it', async () => {
    const rego = 'package my_lib\n\n# METADATA\n# entrypoint: true\ndecision := {"allow": true, "reasons": []}\n';
    const response = await put(open, 'my-lib', build(source('my_lib', rego, ['my_lib']), join(dir, 'my-lib.tar.gz'), 'm1'));
    expect(response).toMatchObject({ status: 422, body: { check: 'entrypoint_missing' } });
    expect(response.body!.detail).toContain('my_lib/decision');
    expect(response.body!.detail).toMatch(/"my-lib".*package/);
  });
});

describe('a bundle directory without a .manifest', () => {
  it('-> bundle_roots_overlap saying opa build gave it the root "" (all of data), and to write a .manifest', async () => {
    const src = join(dir, 'src-nomanifest');
    mkdirSync(src, { recursive: true });
    writeFileSync(join(src, 'policy.rego'), 'package au\n\n# METADATA\n# entrypoint: true\ndecision := {"allow": true, "reasons": []}\n');
    const response = await put(open, 'au', build(src, join(dir, 'au-nomanifest.tar.gz'), 'nomanifest'));
    expect(response).toMatchObject({ status: 409, body: { check: 'bundle_roots_overlap' } });
    expect(response.body!.detail).toContain('.manifest');
    expect(response.body!.detail).toContain('{"roots": ["au"]}');
    expect((await decide(open, 'au')).policy.revision).toBe('good');
  });
});

describe('data.json files that conflict', () => {
  it('-> data_conflict naming the data path both define', async () => {
    const files = new Map(await readBundleArchive(build(writeBundleSource(dir, 'au'), join(dir, 'au-data.tar.gz'), 'data')));
    files.set('data.json', new Uint8Array(Buffer.from('{"au": {"members": {"alice": true}}}')));
    files.set('au/data.json', new Uint8Array(Buffer.from('{"members": {"alice": false}}')));
    const response = await put(open, 'au', packFiles(files));
    expect(response).toMatchObject({ status: 422, body: { check: 'data_conflict' } });
    expect(response.body!.detail).toContain('au/members/alice');
  });
});

describe('the signature\'s iat', () => {
  const now = () => Math.floor(Date.now() / 1000);

  it('in milliseconds (in the future) -> 422 naming iat, and a revision signed in seconds is accepted after it', async () => {
    const src = writeBundleSource(dir, 'si');
    const millis = build(src, join(dir, 'si-ms.tar.gz'), 'ms', signingArgs(dir, key, Date.now()));
    const response = await put(signed, 'si', millis);
    expect(response).toMatchObject({ status: 422, body: { code: 'signature_iat_future', check: 'signature_iat_future' } });
    expect(response.body!.detail).toContain('milliseconds');
    expect(await put(signed, 'si', build(src, join(dir, 'si-s.tar.gz'), 'seconds', signingArgs(dir, key, now())))).toMatchObject({ status: 201 });
  });

  it('that is not a number -> 422 (OPA refuses it too), rather than a bundle the replay rule cannot order', async () => {
    // opa build writes iat as a number whatever the claims file says: another signer can write a string.
    const files = new Map(await readBundleArchive(build(writeBundleSource(dir, 'st'), join(dir, 'st.tar.gz'), 'st1', signingArgs(dir, key, now()))));
    const { signatures } = JSON.parse(Buffer.from(files.get('.signatures.json')!).toString()) as { signatures: [string] };
    const payload = { ...decodeJwt(signatures[0]), iat: String(now()) };
    const jws = await new CompactSign(Buffer.from(JSON.stringify(payload))).setProtectedHeader({ alg: 'RS256' }).sign(createPrivateKey(readFileSync(key.privatePath)));
    files.set('.signatures.json', new Uint8Array(Buffer.from(JSON.stringify({ signatures: [jws] }))));
    const response = await put(signed, 'st', packFiles(files));
    expect(response).toMatchObject({ status: 422, body: { code: 'signature_iat_invalid', check: 'signature_iat_invalid' } });
    expect(response.body!.detail).toContain('iat');
  });

  it('a few seconds ahead of this server\'s clock (another machine signed it) is accepted', async () => {
    const archive = build(writeBundleSource(dir, 'ah'), join(dir, 'ah.tar.gz'), 'ah1', signingArgs(dir, key, now() + 30));
    expect(await put(signed, 'ah', archive)).toMatchObject({ status: 201 });
  });
});

describe('roots that cover a live data document', () => {
  it('-> bundle_roots_overlap naming the document, on push and on activate, until the document is deleted', async () => {
    const dataToken = await admins.sign({ sub: 'feed@example', aud: 'arbiter-admin', scope: 'arbiter.data.write' });
    const rego = 'package lg\n\n# METADATA\n# entrypoint: true\ndecision := {"allow": false, "reasons": []}\n';
    // Revision a owns lg_data; b gives it up, so the feed can write it.
    expect(await put(open, 'lg', build(source('lg', rego, ['lg', 'lg_data']), join(dir, 'lg-a.tar.gz'), 'a'))).toMatchObject({ status: 201 });
    expect(await put(open, 'lg', build(source('lg', rego, ['lg']), join(dir, 'lg-b.tar.gz'), 'b'))).toMatchObject({ status: 201 });
    expect((await adminCall(open.url, dataToken, 'PUT', '/v1/data/lg_data', { grants: ['x'] })).status).toBeLessThan(300);
    // Taken over, the document would be frozen: the feed's writes refused, decisions reading the bundle's copy.
    const activate = await adminCall(open.url, token, 'POST', '/v1/bundles/lg/activate', { revision: 'a' });
    expect(activate).toMatchObject({ status: 409, body: { check: 'bundle_roots_overlap' } });
    expect(activate.body!.detail).toContain('live data document lg_data');
    const below = await put(open, 'lg', build(source('lg', rego, ['lg', 'lg_data/x']), join(dir, 'lg-c.tar.gz'), 'c'));
    expect(below).toMatchObject({ status: 409, body: { check: 'bundle_roots_overlap' } });
    expect((await decide(open, 'lg')).policy.revision).toBe('b');
    // Deleted first, the bundle may own it.
    expect((await adminCall(open.url, dataToken, 'DELETE', '/v1/data/lg_data')).status).toBeLessThan(300);
    expect(await adminCall(open.url, token, 'POST', '/v1/bundles/lg/activate', { revision: 'a' })).toMatchObject({ status: 200 });
  });

  it('not for roots the active revision owns already: a feed writing beside a nested root does not block the next revision', async () => {
    const dataToken = await admins.sign({ sub: 'feed@example', aud: 'arbiter-admin', scope: 'arbiter.data.write' });
    const rego = 'package lh\n\n# METADATA\n# entrypoint: true\ndecision := {"allow": false, "reasons": []}\n';
    const roots = ['lh', 'lh_shared/policy'];
    expect(await put(open, 'lh', build(source('lh', rego, roots), join(dir, 'lh-a.tar.gz'), 'a'))).toMatchObject({ status: 201 });
    // Beside the bundle's root, not in or above it: the feed may write it, and so creates the document lh_shared.
    expect((await adminCall(open.url, dataToken, 'PUT', '/v1/data/lh_shared/other', { x: 1 })).status).toBe(200);
    // The same roots freeze nothing more of it: a new revision, and a rollback, go through.
    expect(await put(open, 'lh', build(source('lh', rego, roots), join(dir, 'lh-b.tar.gz'), 'b'))).toMatchObject({ status: 201 });
    expect(await adminCall(open.url, token, 'POST', '/v1/bundles/lh/activate', { revision: 'a' })).toMatchObject({ status: 200 });
    // Taking the whole document would freeze what the feed writes: still refused.
    const wider = await put(open, 'lh', build(source('lh', rego, ['lh', 'lh_shared']), join(dir, 'lh-c.tar.gz'), 'c'));
    expect(wider).toMatchObject({ status: 409, body: { check: 'bundle_roots_overlap' } });
    expect(wider.body!.detail).toContain('live data document lh_shared');
    expect((await adminCall(open.url, dataToken, 'PUT', '/v1/data/lh_shared/other', { x: 2 })).status).toBe(200);
    expect((await decide(open, 'lh')).policy.revision).toBe('a');
  });

  it('can always be deleted first, also where an active bundle owns the path', async () => {
    const dataToken = await admins.sign({ sub: 'feed@example', aud: 'arbiter-admin', scope: 'arbiter.data.write' });
    const rego = (name: string) => `package ${name}\n\n# METADATA\n# entrypoint: true\ndecision := {"allow": false, "reasons": []}\n`;
    expect(await put(open, 'li', build(source('li', rego('li'), ['li', 'li_shared/policy']), join(dir, 'li-a.tar.gz'), 'a'))).toMatchObject({ status: 201 });
    expect((await adminCall(open.url, dataToken, 'PUT', '/v1/data/li_shared/other', { x: 1 })).status).toBe(200);
    // Another bundle taking a root below the document is told to delete it first: it can.
    const refused = await put(open, 'lj', build(source('lj', rego('lj'), ['lj', 'li_shared/x']), join(dir, 'lj-a.tar.gz'), 'a'));
    expect(refused).toMatchObject({ status: 409, body: { check: 'bundle_roots_overlap' } });
    expect(refused.body!.detail).toContain('Delete the document first');
    expect((await adminCall(open.url, dataToken, 'DELETE', '/v1/data/li_shared')).status).toBe(204);
    expect(await put(open, 'lj', build(source('lj', rego('lj'), ['lj', 'li_shared/x']), join(dir, 'lj-b.tar.gz'), 'b'))).toMatchObject({ status: 201 });
    // Only live data goes: where there is none, the path is the bundles' and stays read-only.
    expect(await adminCall(open.url, dataToken, 'DELETE', '/v1/data/li_shared')).toMatchObject({ status: 409, body: { code: 'data_path_owned_by_bundle' } });
    expect(await adminCall(open.url, dataToken, 'PUT', '/v1/data/li_shared', {})).toMatchObject({ status: 409, body: { code: 'data_path_owned_by_bundle' } });
  });
});
