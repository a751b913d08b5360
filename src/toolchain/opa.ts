import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** The one OPA version Arbiter's bundles are built and tested with (installed by scripts/toolchain.sh). */
export const OPA_VERSION = 'v1.22.2';

/** Where scripts/toolchain.sh installs pinned tools unless ARBITER_TOOLS says otherwise. */
function toolsDir(): string {
  return process.env.ARBITER_TOOLS ?? join(homedir(), '.cache', 'arbiter-tools');
}

/** Path of the pinned opa binary: $ARBITER_OPA, then the toolchain directory, then `opa` on PATH. */
export function opaPath(): string {
  if (process.env.ARBITER_OPA) return process.env.ARBITER_OPA;
  const pinned = join(toolsDir(), 'bin', 'opa');
  return existsSync(pinned) ? pinned : 'opa';
}
