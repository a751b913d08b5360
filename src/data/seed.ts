import { readFileSync } from 'node:fs';
import { describeIssues, MAX_SOURCE_LENGTH, type DocumentCheck } from './documents.ts';
import { ArbiterError, ConfigError } from '../errors.ts';
import { freezeJson, jsonDefect } from './json-value.ts';
import type { JsonValue } from './json-value.ts';
import { formatDataPath, ownedByRoots } from './data-path.ts';

/** A data.seed file's document, or a ConfigError naming `data.seed.<document>`: start-up and `config check` read it alike. */
export function readSeedFile(document: string, file: string): unknown {
  let value: unknown;
  try {
    // Fatal, as a write's body is read: read leniently, bytes that are not UTF-8 (a Latin-1
    // export) would be seeded as U+FFFD, a subject id or tenant no token names.
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(readFileSync(file)));
  } catch (error) {
    throw new ConfigError([{ path: `data.seed.${document}`, message: `cannot read ${file}: ${(error as Error).message}` }]);
  }
  // What a write's body is refused for, the seed bypasses: a lone surrogate escape would make
  // every policy fail to take live data, denying every decision (policy_error) until deleted.
  // Depth is the store's to judge (data_too_deep), as for a PUT.
  const defect = jsonDefect(value, { maxDepth: Number.POSITIVE_INFINITY, checkText: true });
  if (defect !== undefined) {
    throw new ConfigError([{ path: `data.seed.${document}`, message: `cannot seed from ${file}: ${document}${defect.pointer}: ${defect.detail}` }]);
  }
  return value;
}

/**
 * The source a seeded document reports (input.data_status): `seed:<file>`, or for a path longer
 * than a source may be, `seed:…` and the path's end, which names the file. Refused for its length,
 * a valid seed would stop start-up.
 */
export function seedSource(file: string): string {
  if (`seed:${file}`.length <= MAX_SOURCE_LENGTH) return `seed:${file}`;
  // Not from inside a surrogate pair: half of one would stop the policy parsing its input.
  const end = file.slice(file.length - (MAX_SOURCE_LENGTH - 'seed:…'.length)).replace(/^[\uDC00-\uDFFF]/, '');
  return `seed:…${end}`;
}

/**
 * For `config check`: the ConfigError start-up would stop with when the live data store refuses
 * a seed for its document's check (data.check_entitlements), naming `data.seed.<document>`.
 */
export function checkSeed(document: string, file: string, value: unknown, check: DocumentCheck | undefined): void {
  if (check === undefined) return;
  const found = check.issues(value as JsonValue, undefined);
  if (found.total === 0) return;
  throw new ConfigError([{ path: `data.seed.${document}`, message: `cannot seed from ${file}: ${describeIssues(document, found)}` }]);
}

/**
 * For `config check`: what the live data store refuses a seed for, as start-up stores it (a PUT
 * of the whole document): nesting past data.max_depth, or growing live data past
 * data.max_size_bytes from `totalBytes` (what is stored, and the seeds before it). Returns the
 * total once the seed is stored; throws the ConfigError start-up would stop with.
 */
export function checkSeedLimits(document: string, file: string, value: unknown, limits: { maxDepth: number; maxTotalBytes: number }, totalBytes: number): number {
  const refuse = (message: string) => new ConfigError([{ path: `data.seed.${document}`, message: `cannot seed from ${file}: ${message}` }]);
  let frozen: JsonValue;
  try {
    frozen = freezeJson(value, { maxDepth: limits.maxDepth, depthOffset: 1, where: formatDataPath([document]), bodyPointer: '' });
  } catch (error) {
    if (error instanceof ArbiterError) throw refuse(error.message);
    throw error;
  }
  const grown = totalBytes + Buffer.byteLength(JSON.stringify(frozen));
  if (grown > limits.maxTotalBytes) throw refuse(`live data would grow from ${totalBytes} to ${grown} bytes, over the limit of ${limits.maxTotalBytes}`);
  return grown;
}

/**
 * The seeds a bundle owns (a root inside the document, or the document inside a root): live
 * data there is read-only while the bundle is active and never read by policies (the
 * bundle's data is), so start-up refuses to seed it. One issue per seed, naming the root.
 */
export function seedsUnderRoots(
  seeds: Readonly<Record<string, string>>,
  bundles: readonly { name: string; roots: readonly string[]; from: string }[],
): { path: string; message: string }[] {
  const issues: { path: string; message: string }[] = [];
  for (const document of Object.keys(seeds)) {
    for (const bundle of bundles) {
      const root = bundle.roots.find((candidate) => ownedByRoots([candidate])([document]));
      if (root === undefined) continue;
      issues.push({
        path: `data.seed.${document}`,
        message: `document ${JSON.stringify(document)} is owned by bundle ${bundle.name} (root ${JSON.stringify(root)}, ${bundle.from}): live data there is read-only and hidden by the bundle's own data, so start-up refuses to seed it`,
      });
      break;
    }
  }
  return issues;
}
