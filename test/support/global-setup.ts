import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { buildBundle, bundleDirs } from '../../src/toolchain/build.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Bundles built by the pinned opa from rego/ and test/fixtures/rego/ for this run. */
    bundlesDir: string;
    /** The run's scratch directory: tempDir() creates under it, teardown removes it whole. */
    tempRoot: string;
  }
}

/**
 * Builds every bundle once per run with the real opa, so tests never rely on committed artefacts,
 * and gives the run one scratch directory, removed at the end, so test state never piles up in /tmp.
 */
export default function setup(project: TestProject) {
  const root = mkdtempSync(join(tmpdir(), 'arbiter-test-run-'));
  const bundlesDir = join(root, 'bundles');
  mkdirSync(bundlesDir);
  for (const dir of ['rego', 'test/fixtures/rego']) {
    for (const name of bundleDirs(dir)) buildBundle(join(dir, name), join(bundlesDir, `${name}.tar.gz`));
  }
  project.provide('bundlesDir', bundlesDir);
  project.provide('tempRoot', root);
  return () => rmSync(root, { recursive: true, force: true });
}
