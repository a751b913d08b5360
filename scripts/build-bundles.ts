/**
 * `npm run build:bundles`: compiles each bundle directory under rego/ into bundles/<name>.tar.gz.
 * `--check` rebuilds into a temporary directory and fails when a committed bundle differs.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArbiterError } from '../src/errors.ts';
import { buildBundle, bundleDirs, sourceRevision } from '../src/toolchain/build.ts';
import { scriptArgs } from '../src/toolchain/script-args.ts';

const { values } = scriptArgs(import.meta.url, { check: { type: 'boolean' }, rego: { type: 'string', default: 'rego' }, out: { type: 'string', default: 'bundles' } });

function check(names: string[]): number {
  const tmp = mkdtempSync(join(tmpdir(), 'arbiter-bundles-'));
  try {
    const stale = names.filter((name) => {
      const built = join(tmp, `${name}.tar.gz`);
      buildBundle(join(values.rego, name), built);
      const committed = join(values.out, `${name}.tar.gz`);
      return !existsSync(committed) || !readFileSync(committed).equals(readFileSync(built));
    });
    if (stale.length > 0) {
      console.error(`stale bundles: ${stale.join(', ')}: run \`npm run build:bundles\` and commit bundles/`);
      return 1;
    }
    // The server serves every archive in bundles/: one no rego/ directory builds would ship unchecked.
    const orphans = readdirSync(values.out).filter((file) => file.endsWith('.tar.gz') && !names.includes(file.slice(0, -'.tar.gz'.length)));
    if (orphans.length > 0) {
      console.error(`bundles no rego/ directory builds: ${orphans.join(', ')}: delete them, or add their source under rego/`);
      return 1;
    }
    console.log(`bundles match rego/: ${names.join(', ')}`);
    return 0;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

const names = bundleDirs(values.rego);
try {
  if (values.check) {
    process.exitCode = check(names);
  } else {
    for (const name of names) {
      buildBundle(join(values.rego, name), join(values.out, `${name}.tar.gz`));
      console.log(`built ${values.out}/${name}.tar.gz (revision ${sourceRevision(join(values.rego, name))})`);
    }
  }
} catch (error) {
  // opa's own words (file, line, error), without a stack trace.
  if (!(error instanceof ArbiterError)) throw error;
  console.error(error.message);
  process.exitCode = 1;
}
