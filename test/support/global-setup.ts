import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { buildBundle, bundleDirs } from '../../src/toolchain/build.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Bundles built by the pinned opa from rego/ and test/fixtures/rego/ for this run. */
    bundlesDir: string;
  }
}

/** Builds every bundle once per run with the real opa, so tests never rely on committed artefacts. */
export default function setup(project: TestProject) {
  const dir = mkdtempSync(join(tmpdir(), 'arbiter-test-bundles-'));
  for (const root of ['rego', 'test/fixtures/rego']) {
    for (const name of bundleDirs(root)) buildBundle(join(root, name), join(dir, `${name}.tar.gz`));
  }
  project.provide('bundlesDir', dir);
  return () => rmSync(dir, { recursive: true, force: true });
}
