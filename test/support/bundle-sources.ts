import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildBundle } from '../../src/toolchain/build.ts';

/** Writes a bundle directory named `name` whose decision allows everything; `extraRoots` widen its manifest. */
export function writeBundleSource(dir: string, name: string, options: { extraRoots?: string[]; decision?: string } = {}): string {
  const src = join(dir, `src-${name}-${Math.random().toString(36).slice(2)}`);
  mkdirSync(src, { recursive: true });
  const decision = options.decision ?? '{"allow": true, "reasons": [{"code": "granted"}]}';
  writeFileSync(join(src, 'policy.rego'), `package ${name}\n\n# METADATA\n# entrypoint: true\ndecision := ${decision}\n`);
  writeFileSync(join(src, '.manifest'), JSON.stringify({ roots: [name, ...(options.extraRoots ?? [])] }));
  return src;
}

/** Builds `src` with the pinned opa under `revision` and returns the archive. */
export function build(src: string, out: string, revision: string, extraArgs: string[] = []): Buffer {
  buildBundle(src, out, { revision, extraArgs });
  return readFileSync(out);
}

export interface SigningKey {
  privatePath: string;
  publicPem: string;
}

/** An RSA key generated at test time, the private half written to `dir` for `opa build --signing-key`. */
export function signingKey(dir: string): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const privatePath = join(dir, `signing-${Math.random().toString(36).slice(2)}.pem`);
  writeFileSync(privatePath, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  return { privatePath, publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
}

/** `opa build` signing flags: RS256, scope `write`, key id `default`, and the given `iat`. */
export function signingArgs(dir: string, key: SigningKey, iat?: number): string[] {
  const claims = join(dir, `claims-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(claims, JSON.stringify({ scope: 'write', keyid: 'default', ...(iat !== undefined && { iat }) }));
  return ['--signing-key', key.privatePath, '--signing-alg', 'RS256', '--claims-file', claims];
}
