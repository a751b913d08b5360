import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { CompactSign } from 'jose';
import tarStream from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { BundleRejectedError, ConfigError } from '../src/errors.ts';
import { readBundleArchive, type BundleFiles } from '../src/policy/archive.ts';
import { isSignedBundle, verifyBundleSignatures, type VerificationOptions } from '../src/policy/signatures.ts';
import { bundleVerificationOptions } from '../src/policy/signing-keys.ts';
import { opaPath } from '../src/toolchain/opa.ts';

interface PemPair {
  privatePem: string;
  publicPem: string;
  privateKey: KeyObject;
}

function pemPair(type: 'rsa' | 'ec'): PemPair {
  const { privateKey, publicKey } =
    type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    privateKey,
  };
}

const HMAC_SECRET = 'correct horse battery staple, but longer than 32 bytes';

let dir: string;
let rsa: PemPair;
let ec: PemPair;
let otherRsa: PemPair;
/** Built by `opa build -t wasm --signing-alg RS256` with `scope: write` and `keyid: default` claims. */
let rsBundle: BundleFiles;
/** Built by `opa build -t wasm --signing-alg ES256`, no scope, `kid: default` header. */
let esBundle: BundleFiles;
/** Built by `opa build -t wasm --signing-alg HS256`. */
let hsBundle: BundleFiles;
/** A directory signed by `opa sign` (keyid claim `k1`, no kid header), packed here with leading slashes. */
let signedDir: BundleFiles;
/** Signed by `opa sign` like signedDir, its data.json over a MiB: hashed on a thread of its own. */
let largeDir: BundleFiles;

const rsKeys = (): VerificationOptions => ({ keys: { default: { key: rsa.publicPem, algorithm: 'RS256' } }, scope: 'write' });

function opa(cwd: string, ...args: string[]): void {
  execFileSync(opaPath(), args, { cwd, stdio: 'pipe' });
}

async function packTarGz(root: string, names: string[]): Promise<Buffer> {
  const pack = tarStream.pack();
  for (const name of names) pack.entry({ name: `/${name}` }, readFileSync(join(root, name)));
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return gzipSync(Buffer.concat(chunks));
}

function withFile(files: BundleFiles, path: string, content: string | Uint8Array): Map<string, Uint8Array<ArrayBuffer>> {
  return new Map(files).set(path, typeof content === 'string' ? new Uint8Array(Buffer.from(content)) : new Uint8Array(content));
}

function without(files: BundleFiles, path: string): Map<string, Uint8Array<ArrayBuffer>> {
  const copy = new Map(files);
  copy.delete(path);
  return copy;
}

function token(files: BundleFiles): string {
  return (JSON.parse(Buffer.from(files.get('.signatures.json')!).toString()) as { signatures: string[] }).signatures[0]!;
}

function payloadOf(files: BundleFiles): Record<string, unknown> {
  return JSON.parse(Buffer.from(token(files).split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
}

function withToken(files: BundleFiles, jws: string): Map<string, Uint8Array<ArrayBuffer>> {
  return withFile(files, '.signatures.json', JSON.stringify({ signatures: [jws] }));
}

/** Signs `payload` as OPA would, with our own key, to reach checks past the JWS verification. */
async function resign(payload: Record<string, unknown>, header: Record<string, unknown> = { alg: 'RS256', kid: 'default' }): Promise<string> {
  return new CompactSign(Buffer.from(JSON.stringify(payload))).setProtectedHeader(header as { alg: string }).sign(rsa.privateKey);
}

async function rejection(files: BundleFiles, options: VerificationOptions): Promise<BundleRejectedError> {
  const error = await verifyBundleSignatures(files, options).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(BundleRejectedError);
  return error as BundleRejectedError;
}

async function expectCheck(files: BundleFiles, options: VerificationOptions, check: string): Promise<void> {
  expect((await rejection(files, options)).check).toBe(check);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'arbiter-signatures-'));
  rsa = pemPair('rsa');
  ec = pemPair('ec');
  otherRsa = pemPair('rsa');
  writeFileSync(join(dir, 'rsa.pem'), rsa.privatePem);
  writeFileSync(join(dir, 'ec.pem'), ec.privatePem);
  // With a claims file opa sets no kid header: the key is named by the (deprecated) keyid claim.
  writeFileSync(join(dir, 'scope-write.json'), '{"scope": "write", "keyid": "default"}');
  writeFileSync(join(dir, 'keyid-k1.json'), '{"keyid": "k1"}');

  const src = join(dir, 'src');
  mkdirSync(join(src, 'authz'), { recursive: true });
  writeFileSync(join(src, 'authz/policy.rego'), 'package authz\n\ndefault allow := false\n\nallow if input.user in data.authz.admins\n');
  writeFileSync(join(src, 'data.json'), '{"authz": {"admins": ["alice"], "ratio": 1.0}}');
  writeFileSync(join(src, '.manifest'), '{"roots": ["authz"], "revision": "r1"}');
  const build = (out: string, ...signing: string[]) => opa(src, 'build', '-t', 'wasm', '-e', 'authz/allow', '-b', '.', '-o', join(dir, out), ...signing);
  build('rs.tar.gz', '--signing-key', join(dir, 'rsa.pem'), '--signing-alg', 'RS256', '--claims-file', join(dir, 'scope-write.json'));
  build('es.tar.gz', '--signing-key', join(dir, 'ec.pem'), '--signing-alg', 'ES256');
  build('hs.tar.gz', '--signing-key', HMAC_SECRET, '--signing-alg', 'HS256');
  // opa reads a key file's bytes as they are: the secret plus the newline `echo` wrote.
  writeFileSync(join(dir, 'hs.key'), `${HMAC_SECRET}\n`);
  build('hs-file.tar.gz', '--signing-key', join(dir, 'hs.key'), '--signing-alg', 'HS256');
  // A random binary secret, as `head -c 32 /dev/urandom` makes: bytes that are not UTF-8.
  writeFileSync(join(dir, 'hs-binary.key'), Buffer.concat([Buffer.from([0xff, 0xfe, 0x80]), randomBytes(32)]));
  build('hs-binary.tar.gz', '--signing-key', join(dir, 'hs-binary.key'), '--signing-alg', 'HS256');
  rsBundle = await readBundleArchive(readFileSync(join(dir, 'rs.tar.gz')));
  esBundle = await readBundleArchive(readFileSync(join(dir, 'es.tar.gz')));
  hsBundle = await readBundleArchive(readFileSync(join(dir, 'hs.tar.gz')));

  // Structured files written the way people write them: whitespace, unsorted keys, number
  // literals, non-ASCII keys whose UTF-8 and UTF-16 orders differ, YAML. OPA hashes a canonical form.
  const signed = join(dir, 'signed');
  mkdirSync(join(signed, 'authz'), { recursive: true });
  mkdirSync(join(signed, 'extra'), { recursive: true });
  writeFileSync(join(signed, 'authz/policy.rego'), 'package authz\n\nallow if input.user == "alice"\n');
  writeFileSync(
    join(signed, 'data.json'),
    '{ "z": 1.0,   "a": [1e2, "\\u2028", "<&>"],\n  "ü": true, "é": null, "😀": "emoji", "\uffff": 1, "A": {"b": -0, "a": 1E+2} }\n',
  );
  writeFileSync(join(signed, 'extra/data.yaml'), 'k: 1.50\nlist: [a, yes, 0x10, 1e3]\nnested:\n  b: ~\n  a: "\\u2028"\n');
  writeFileSync(join(signed, '.manifest'), '{\n  "roots": ["authz", "z", "a", "ü", "é", "😀", "\uffff", "A", "extra"],\n  "revision": "r1"\n}\n');
  opa(signed, 'sign', '--bundle', '.', '--signing-key', join(dir, 'rsa.pem'), '--claims-file', join(dir, 'keyid-k1.json'));
  const names = ['.manifest', '.signatures.json', 'authz/policy.rego', 'data.json', 'extra/data.yaml'];
  signedDir = await readBundleArchive(await packTarGz(signed, names));

  // The same, with a data.json large enough to be hashed off the main thread.
  const large = join(dir, 'large');
  mkdirSync(join(large, 'authz'), { recursive: true });
  writeFileSync(join(large, 'authz/policy.rego'), 'package authz\n\nallow if input.user == "alice"\n');
  const entries = Array.from({ length: 20_000 }, (_, i) => `"k${i}": {"ratio": 1.0, "big": 1E+2, "ü": "<&>\\u2028", "😀": [-0, true, null]}`);
  writeFileSync(join(large, 'data.json'), `{"authz": {${entries.join(',\n')}}, "é": 1.50}`);
  writeFileSync(join(large, '.manifest'), '{"roots": ["authz", "é"], "revision": "r1"}');
  opa(large, 'sign', '--bundle', '.', '--signing-key', join(dir, 'rsa.pem'), '--claims-file', join(dir, 'keyid-k1.json'));
  largeDir = await readBundleArchive(await packTarGz(large, ['.manifest', '.signatures.json', 'authz/policy.rego', 'data.json']));
}, 60_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('verifyBundleSignatures accepts bundles signed by opa', () => {
  it('opa build, RS256, scoped', async () => {
    expect(await verifyBundleSignatures(rsBundle, rsKeys())).toEqual({ keyid: 'default', files: 4 });
  });

  it('opa build, ES256', async () => {
    expect(await verifyBundleSignatures(esBundle, { keys: { default: { key: ec.publicPem, algorithm: 'ES256' } } })).toEqual({ keyid: 'default', files: 4 });
  });

  it.each([
    ['newline included', 'hs-file.tar.gz', 'hs.key'],
    ['binary, not UTF-8', 'hs-binary.tar.gz', 'hs-binary.key'],
  ])('opa build, HS256 with the same key file on both sides: its bytes as they are (%s)', async (_label, archive, keyFile) => {
    const files = await readBundleArchive(readFileSync(join(dir, archive)));
    const options = bundleVerificationOptions({ keys: { default: { key_file: join(dir, keyFile), algorithm: 'HS256' } }, exclude: [], bundles: {} })('any')!;
    expect(await verifyBundleSignatures(files, options)).toMatchObject({ keyid: 'default' });
  });

  it('opa build, HS256 with a shared secret', async () => {
    expect(await verifyBundleSignatures(hsBundle, { keys: { default: { key: HMAC_SECRET, algorithm: 'HS256' } } })).toEqual({ keyid: 'default', files: 4 });
  });

  it('opa sign, key chosen by the keyid claim, structured files hashed canonically', async () => {
    expect(await verifyBundleSignatures(signedDir, { keys: { k1: { key: rsa.publicPem, algorithm: 'RS256' } } })).toEqual({ keyid: 'k1', files: 4 });
  });

  it('opa sign, a data.json large enough to be hashed on a thread of its own', async () => {
    expect(largeDir.get('data.json')!.byteLength).toBeGreaterThan(1024 * 1024);
    expect(await verifyBundleSignatures(largeDir, { keys: { k1: { key: rsa.publicPem, algorithm: 'RS256' } } })).toEqual({ keyid: 'k1', files: 3 });
    const changed = Buffer.from(largeDir.get('data.json')!).toString().replace('"k19999": {"ratio": 1.0', '"k19999": {"ratio": 1');
    await expectCheck(withFile(largeDir, 'data.json', changed), { keys: { k1: { key: rsa.publicPem, algorithm: 'RS256' } } }, 'signature_mismatch');
  });

  it('a thread that stops while it hashes a large file says so, not that the bundle is bad', async () => {
    // Refused as signature_mismatch, a pull would hold the archive refused until its source changes.
    const stop = (worker: Worker) => void worker.terminate();
    process.on('worker', stop);
    try {
      const error = await verifyBundleSignatures(largeDir, { keys: { k1: { key: rsa.publicPem, algorithm: 'RS256' } } }).catch((e: unknown) => e);
      expect(error).not.toBeInstanceOf(BundleRejectedError);
      expect(error).toMatchObject({ code: 'signature_digest_unavailable', message: expect.stringContaining('data.json') });
    } finally {
      process.off('worker', stop);
    }
    expect(await verifyBundleSignatures(largeDir, { keys: { k1: { key: rsa.publicPem, algorithm: 'RS256' } } })).toMatchObject({ keyid: 'k1' });
  });

  it('structured files may be re-serialized without changing their meaning', async () => {
    const reformatted = withFile(rsBundle, 'data.json', '{\n  "authz": {\n    "ratio": 1.0,\n    "admins": [ "alice" ]\n  }\n}\n');
    await expect(verifyBundleSignatures(reformatted, rsKeys())).resolves.toEqual({ keyid: 'default', files: 4 });
  });

  it('excluded files need no signature', async () => {
    const extra = withFile(rsBundle, 'extra/notes.txt', 'unsigned');
    await expect(verifyBundleSignatures(extra, { ...rsKeys(), exclude: ['extra/*.txt'] })).resolves.toEqual({ keyid: 'default', files: 4 });
    // `*` does not cross a slash, as in Go's filepath.Match.
    await expectCheck(extra, { ...rsKeys(), exclude: ['*.txt'] }, 'signature_file_unsigned');
  });

  it('isSignedBundle tells signed from unsigned bundles', () => {
    expect(isSignedBundle(rsBundle)).toBe(true);
    expect(isSignedBundle(without(rsBundle, '.signatures.json'))).toBe(false);
  });
});

describe('verifyBundleSignatures rejects', () => {
  it('a bundle without .signatures.json', async () => {
    await expectCheck(without(rsBundle, '.signatures.json'), rsKeys(), 'signature_missing');
  });

  it('a modified policy.wasm', async () => {
    const wasm = new Uint8Array(rsBundle.get('policy.wasm')!);
    wasm[wasm.length - 1] = wasm.at(-1)! ^ 1;
    const error = await rejection(withFile(rsBundle, 'policy.wasm', wasm), rsKeys());
    expect(error.check).toBe('signature_mismatch');
    expect(error.message).toContain('policy.wasm');
  });

  it('data.json with a changed value, even one JSON.parse would call equal', async () => {
    await expectCheck(withFile(rsBundle, 'data.json', '{"authz": {"admins": ["mallory"], "ratio": 1.0}}'), rsKeys(), 'signature_mismatch');
    await expectCheck(withFile(rsBundle, 'data.json', '{"authz": {"admins": ["alice"], "ratio": 1}}'), rsKeys(), 'signature_mismatch');
  });

  it('a large data.json swapped in beside a replayed signature, without holding the event loop while it is hashed', async () => {
    // Its canonical form (as OPA hashes it) is read value by value: these 4 MiB of small numbers
    // held the event loop (and every decision) for seconds before the digest differed; a data.json
    // may be 32 MiB (bundles.limits.max_file_bytes), which took half a minute and 2 GB.
    const swapped = withFile(rsBundle, 'data.json', `{"authz": {"admins": [${'1,'.repeat(2 * 1024 * 1024)}1]}}`);
    let last = performance.now();
    let longestGap = 0;
    const ticks = setInterval(() => {
      longestGap = Math.max(longestGap, performance.now() - last);
      last = performance.now();
    }, 10);
    const error = await rejection(swapped, rsKeys());
    await new Promise((resolve) => setTimeout(resolve, 50));
    clearInterval(ticks);
    expect(error.check).toBe('signature_mismatch');
    expect(longestGap).toBeLessThan(1000);
  }, 120_000);

  it('a data.json or .manifest that is not JSON, at once: not read as YAML, which costs seconds per MiB before the digest is compared', async () => {
    // A signature replayed from any published bundle passes the JWS check; the file it lists is
    // then the attacker's. Read as YAML, these 2 MiB held the main thread (and every decision)
    // for seconds, and a file may be 32 MiB (bundles.limits.max_file_bytes).
    const yaml = `authz: {admins: [${'1,'.repeat(1_000_000)}1]}`;
    for (const file of ['data.json', '.manifest']) {
      const started = performance.now();
      const error = await rejection(withFile(rsBundle, file, yaml), rsKeys());
      expect(performance.now() - started, file).toBeLessThan(2000);
      expect(error.check).toBe('signature_mismatch');
      expect(error.message).toContain(`${file} is not JSON`);
    }
  }, 120_000);

  it('a YAML file swapped in with a tag YAML cannot resolve, without a Node warning on stderr quoting it', async () => {
    // yaml's parse() reports the tag through process.emitWarning: Node printed a multi-line block,
    // the file's text in it, beside the JSON process log, for anyone who can push or serve a bundle.
    const emitted = vi.spyOn(process, 'emitWarning');
    try {
      const error = await rejection(withFile(signedDir, 'extra/data.yaml', 'k: !secret not-the-signed-value\n'), { keys: { k1: { key: rsa.publicPem, algorithm: 'RS256' } } });
      expect(error.check).toBe('signature_mismatch');
      expect(emitted).not.toHaveBeenCalled();
    } finally {
      emitted.mockRestore();
    }
  });

  it('a modified .manifest', async () => {
    const manifest = JSON.parse(Buffer.from(rsBundle.get('.manifest')!).toString()) as { roots: string[] };
    manifest.roots = [''];
    await expectCheck(withFile(rsBundle, '.manifest', JSON.stringify(manifest)), rsKeys(), 'signature_mismatch');
  });

  it('a signed file that is missing', async () => {
    const error = await rejection(without(rsBundle, 'data.json'), rsKeys());
    expect(error.check).toBe('signature_file_missing');
    expect(error.message).toContain('data.json');
  });

  it('an extra file the signature does not cover', async () => {
    await expectCheck(withFile(rsBundle, 'authz/backdoor.rego', 'package authz\nallow := true'), rsKeys(), 'signature_file_unsigned');
  });

  it('a second signature, or none', async () => {
    const jws = token(rsBundle);
    await expectCheck(withFile(rsBundle, '.signatures.json', JSON.stringify({ signatures: [jws, jws] })), rsKeys(), 'signature_count');
    await expectCheck(withFile(rsBundle, '.signatures.json', JSON.stringify({ signatures: [] })), rsKeys(), 'signature_count');
  });

  it('a .signatures.json that is not the OPA format', async () => {
    await expectCheck(withFile(rsBundle, '.signatures.json', 'not json'), rsKeys(), 'signature_file_invalid');
    const custom = JSON.stringify({ signatures: [token(rsBundle)], plugin: 'my-kms' });
    await expectCheck(withFile(rsBundle, '.signatures.json', custom), rsKeys(), 'signature_file_invalid');
  });

  it('a .signatures.json larger than a signature listing every file of the bundle could be, before it is parsed', async () => {
    // Read before any signature is checked: 24 MiB of empty arrays (a few KB gzipped) held the
    // main thread for seconds, and anyone who can put an archive in front of Arbiter may send it.
    const padded = `{"signatures": [${JSON.stringify(token(rsBundle))}], "x": [${'[],'.repeat(8 * 1024 * 1024)}[]]}`;
    const started = performance.now();
    const error = await rejection(withFile(rsBundle, '.signatures.json', padded), rsKeys());
    expect(performance.now() - started).toBeLessThan(1000);
    expect(error.check).toBe('signature_file_invalid');
    expect(error.message).toMatch(/\.signatures\.json is \d+ bytes, more than/);
    // What opa writes, pretty-printed and with long claims, is far from it.
    const pretty = JSON.stringify({ signatures: [token(rsBundle)], plugin: '_default' }, null, 8);
    await expect(verifyBundleSignatures(withFile(rsBundle, '.signatures.json', pretty), rsKeys())).resolves.toMatchObject({ keyid: 'default' });
  });

  it('a scope other than the configured one, including none when one is configured and the reverse', async () => {
    await expectCheck(rsBundle, { ...rsKeys(), scope: 'read' }, 'signature_scope_mismatch');
    await expectCheck(rsBundle, { keys: rsKeys().keys }, 'signature_scope_mismatch');
    await expectCheck(esBundle, { keys: { default: { key: ec.publicPem, algorithm: 'ES256' } }, scope: 'write' }, 'signature_scope_mismatch');
  });

  it('a key id with no configured key', async () => {
    await expectCheck(rsBundle, { keys: { other: { key: rsa.publicPem, algorithm: 'RS256' } }, scope: 'write' }, 'signature_keyid_unknown');
  });

  it('the right key id with the wrong key', async () => {
    await expectCheck(rsBundle, { keys: { default: { key: otherRsa.publicPem, algorithm: 'RS256' } }, scope: 'write' }, 'signature_invalid');
  });

  it('an algorithm other than the one configured for the key', async () => {
    await expectCheck(rsBundle, { keys: { default: { key: rsa.publicPem, algorithm: 'PS256' } }, scope: 'write' }, 'signature_algorithm');
    await expectCheck(rsBundle, { keys: { default: { key: rsa.publicPem, algorithm: 'RS512' } }, scope: 'write' }, 'signature_algorithm');
    // HMAC keyed with the public key's text: the classic algorithm-confusion forgery.
    await expectCheck(hsBundle, { keys: { default: { key: rsa.publicPem, algorithm: 'RS256' } } }, 'signature_algorithm');
  });

  it('a tampered JWS payload or signature', async () => {
    const [header, payload, signature] = token(rsBundle).split('.') as [string, string, string];
    const claims = payloadOf(rsBundle) as { files: { name: string; hash: string }[] };
    claims.files[0]!.hash = '00'.repeat(32);
    const forgedPayload = Buffer.from(JSON.stringify(claims)).toString('base64url');
    await expectCheck(withToken(rsBundle, `${header}.${forgedPayload}.${signature}`), rsKeys(), 'signature_invalid');
    const flipped = `${signature.slice(0, 10)}${signature[10] === 'A' ? 'B' : 'A'}${signature.slice(11)}`;
    await expectCheck(withToken(rsBundle, `${header}.${payload}.${flipped}`), rsKeys(), 'signature_invalid');
    await expectCheck(withToken(rsBundle, 'not-a-jws'), rsKeys(), 'signature_invalid');
  });

  it('an unsigned JWS (alg none)', async () => {
    const header = Buffer.from(JSON.stringify({ alg: 'none', kid: 'default' })).toString('base64url');
    const payload = token(rsBundle).split('.')[1]!;
    await expectCheck(withToken(rsBundle, `${header}.${payload}.`), rsKeys(), 'signature_algorithm');
  });

  it('a kid header that disagrees with the keyid claim', async () => {
    const jws = await resign({ ...payloadOf(rsBundle), keyid: 'someone-else' });
    await expectCheck(withToken(rsBundle, jws), rsKeys(), 'signature_keyid_mismatch');
  });

  it('a token naming no key is verified with the key "default", as OPA does, and refused without one', async () => {
    const claims = payloadOf(rsBundle);
    delete claims.keyid;
    const jws = await resign(claims, { alg: 'RS256' });
    expect(await verifyBundleSignatures(withToken(rsBundle, jws), rsKeys())).toEqual({ keyid: 'default', files: 4 });
    const otherName: VerificationOptions = { keys: { k1: { key: rsa.publicPem, algorithm: 'RS256' } }, scope: 'write' };
    await expectCheck(withToken(rsBundle, jws), otherName, 'signature_keyid_unknown');
  });

  it('a key id naming a member of Object.prototype', async () => {
    for (const kid of ['constructor', 'toString', '__proto__']) {
      const jws = await resign({ ...payloadOf(rsBundle), keyid: kid }, { alg: 'RS256', kid });
      await expectCheck(withToken(rsBundle, jws), rsKeys(), 'signature_keyid_unknown');
    }
  });

  it('digests other than SHA-256/384/512', async () => {
    const claims = payloadOf(rsBundle) as { files: { algorithm: string }[] };
    claims.files[0]!.algorithm = 'SHA-1';
    await expectCheck(withToken(rsBundle, await resign(claims)), rsKeys(), 'signature_hash_algorithm');
  });

  it('a file listed twice, with and without a leading slash', async () => {
    const claims = payloadOf(rsBundle) as { files: { name: string }[] };
    const dataJson = claims.files.find((file) => file.name === 'data.json')!;
    claims.files.push({ ...dataJson, name: '/data.json' });
    await expectCheck(withToken(rsBundle, await resign(claims)), rsKeys(), 'signature_file_duplicate');
  });

  it('a payload listing .signatures.json itself', async () => {
    const claims = payloadOf(rsBundle) as { files: { name: string; hash: string; algorithm: string }[] };
    claims.files.push({ name: '.signatures.json', hash: '00'.repeat(32), algorithm: 'SHA-256' });
    await expectCheck(withToken(rsBundle, await resign(claims)), rsKeys(), 'signature_file_missing');
  });

  it('accepts names written with a leading slash (once each)', async () => {
    const claims = payloadOf(rsBundle) as { files: { name: string }[] };
    for (const file of claims.files) file.name = `/${file.name}`;
    await expect(verifyBundleSignatures(withToken(rsBundle, await resign(claims)), rsKeys())).resolves.toEqual({ keyid: 'default', files: 4 });
  });
});

describe('verifyBundleSignatures validates its options', () => {
  it('refuses unknown algorithms, alg none included', async () => {
    await expect(verifyBundleSignatures(rsBundle, { keys: { default: { key: rsa.publicPem, algorithm: 'none' as 'RS256' } } })).rejects.toBeInstanceOf(ConfigError);
  });

  it('refuses a key of another type or curve than its algorithm, and a PEM as an HMAC secret', async () => {
    const ecPem = (namedCurve: string) => generateKeyPairSync('ec', { namedCurve }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const pem = (key: KeyObject) => key.export({ type: 'spki', format: 'pem' }).toString();
    const mismatched: [string, VerificationOptions['keys'][string]['algorithm'], RegExp][] = [
      [ecPem('P-256'), 'RS256', /RS256 needs an RSA key, this is an ec prime256v1 key/],
      [ecPem('P-384'), 'ES256', /ES256 needs an EC P-256 key/],
      [pem(generateKeyPairSync('ed448').publicKey), 'EdDSA', /EdDSA needs an Ed25519 key, this is an ed448 key/],
      [pem(generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey), 'RS256', /at least 2048 bits/],
      [rsa.publicPem, 'HS256', /shared secret, not a PEM key/],
      // RFC 7518 §3.2: at least the hash's size.
      ['s'.repeat(47), 'HS384', /at least 48 bytes for HS384 \(got 47\)/],
      ['s'.repeat(63), 'HS512', /at least 64 bytes for HS512 \(got 63\)/],
    ];
    for (const [key, algorithm, message] of mismatched) {
      const error = await verifyBundleSignatures(rsBundle, { keys: { default: { key, algorithm } }, scope: 'write' }).catch((caught: unknown) => caught);
      expect(error, algorithm).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).message, algorithm).toMatch(message);
    }
  });

  it('refuses a key that is not PEM', async () => {
    await expect(verifyBundleSignatures(rsBundle, { keys: { default: { key: 'not a key', algorithm: 'RS256' } }, scope: 'write' })).rejects.toBeInstanceOf(ConfigError);
  });

  it('refuses exclude patterns with classes or escapes it does not implement', async () => {
    await expect(verifyBundleSignatures(rsBundle, { ...rsKeys(), exclude: ['[a-z].txt'] })).rejects.toBeInstanceOf(ConfigError);
  });
});
