import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ArbiterError } from '../errors.ts';
import { OPA_VERSION, opaPath } from './opa.ts';

/**
 * The wasm optimisation level Arbiter's bundles are built with, chosen by measuring
 * (bench/eval-micro.ts; figures in the README under "Performance").
 */
export const OPTIMIZATION_LEVEL = 0;

/** Directories under `regoDir` that are bundles: they carry a .manifest. */
export function bundleDirs(regoDir: string): string[] {
  return readdirSync(regoDir)
    .filter((name) => existsSync(join(regoDir, name, '.manifest')))
    .sort();
}

/**
 * What the revision digests: the files opa build may read. Not tests and docs (ignored), nor
 * archives, which opa does not read from a bundle directory: `cd rego/authz && arbiter bundle
 * build .` writes authz.tar.gz there, and hashing it gave every build of the same sources a
 * new revision.
 */
function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((path) => statSync(join(dir, path)).isFile())
    .filter((path) => !path.endsWith('_test.rego') && !path.endsWith('.md') && !path.endsWith('.tar.gz'))
    .sort();
}

/** A digest of the bundle's sources and toolchain: the same rego/ always gives the same revision and bytes. */
export function sourceRevision(dir: string): string {
  const hash = createHash('sha256');
  for (const path of sourceFiles(dir)) hash.update(`${path}\0`).update(readFileSync(join(dir, path))).update('\0');
  hash.update(`opa ${OPA_VERSION} -O=${OPTIMIZATION_LEVEL}`);
  return hash.digest('hex').slice(0, 16);
}

export interface BuildOptions {
  revision?: string;
  /** Extra `opa build` arguments, e.g. signing flags. */
  extraArgs?: string[];
}

/**
 * Runs the pinned `opa build -t wasm` on one bundle directory; tests are not shipped. Throws
 * `opa_build_failed` with what opa said (it prints compile errors on stdout, not stderr).
 */
export function buildBundle(dir: string, out: string, options: BuildOptions = {}): void {
  // Outside the try: a source that cannot be read (ENOENT) is not opa missing.
  const revision = options.revision ?? sourceRevision(dir);
  try {
    execFileSync(
      opaPath(),
      [
        'build', '-t', 'wasm', `-O=${OPTIMIZATION_LEVEL}`,
        '--ignore', '*_test.rego', '--ignore', '*.md',
        '--revision', revision,
        ...(options.extraArgs ?? []),
        '-b', dir, '-o', out,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ArbiterError(
        'opa_build_failed',
        `${opaPath()} not found: install the pinned opa ${OPA_VERSION} with \`bash scripts/toolchain.sh opa\` (needs Go), or set ARBITER_OPA to one`,
        { cause: error },
      );
    }
    const { stdout, stderr } = error as { stdout?: Buffer; stderr?: Buffer };
    const said = [stdout, stderr].map((output) => output?.toString().trim() ?? '').filter(Boolean).join('\n');
    throw new ArbiterError('opa_build_failed', `opa build failed for ${dir}:\n${said || (error as Error).message}`, { cause: error });
  }
}
