import { readFileSync } from 'node:fs';
import type { BundlesConfig } from '../config/schema.ts';
import { ConfigError } from '../errors.ts';
import { verificationKeyError, type VerificationOptions } from './signatures.ts';

type SigningConfig = BundlesConfig['signing'];
type VerificationConfig = Omit<SigningConfig, 'bundles'>;

/**
 * Resolves `bundles.signing` into the verification options of each bundle: its entry under
 * `signing.bundles.<name>` when there is one, the shared keys otherwise. Key files are read
 * once, here, so a missing file stops start-up instead of the first push.
 * Returns undefined for a bundle that has no key at all.
 */
export function bundleVerificationOptions(signing: SigningConfig): (name: string) => VerificationOptions | undefined {
  const shared = resolve(signing, 'bundles.signing');
  const perBundle = new Map(Object.entries(signing.bundles).map(([name, config]) => [name, resolve(config, `bundles.signing.bundles.${name}`)]));
  return (name) => {
    const options = perBundle.get(name) ?? shared;
    return Object.keys(options.keys).length > 0 ? options : undefined;
  };
}

function resolve(config: VerificationConfig, path: string): VerificationOptions {
  const keys: VerificationOptions['keys'] = {};
  for (const [keyid, { key, key_file, algorithm }] of Object.entries(config.keys)) {
    const at = `${path}.keys.${keyid}.${key === undefined ? 'key_file' : 'key'}`;
    // An HMAC key file is used as opa build --signing-key uses it: its bytes, exactly.
    const material = key ?? readKeyFile(key_file!, at, algorithm.startsWith('HS'));
    // Parsed now, so a bad key stops start-up (and config check) instead of the first signed push.
    const problem = verificationKeyError(material, algorithm);
    if (problem !== undefined) throw new ConfigError([{ path: at, message: problem }]);
    keys[keyid] = { key: material, algorithm };
  }
  return { keys, ...(config.scope !== undefined && { scope: config.scope }), exclude: config.exclude };
}

function readKeyFile(file: string, path: string, asBytes: boolean): string | Uint8Array<ArrayBuffer> {
  try {
    // As they are, trailing newline (or any byte) included: `opa build --signing-key <file>`
    // signs with the file's bytes exactly, and the same file must verify what it signed.
    return asBytes ? new Uint8Array(readFileSync(file)) : readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError([{ path, message: `cannot read ${file}: ${(error as Error).message}` }]);
  }
}
