import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.ts';
import type { DocumentCheck } from './documents.ts';
import type { JsonValue } from './json-value.ts';

/** A data.seed file's document, or a ConfigError naming `data.seed.<document>`: start-up and `config check` read it alike. */
export function readSeedFile(document: string, file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new ConfigError([{ path: `data.seed.${document}`, message: `cannot read ${file}: ${(error as Error).message}` }]);
  }
}

/**
 * For `config check`: the ConfigError start-up would stop with when the live data store refuses
 * a seed for its document's check (data.check_entitlements), naming `data.seed.<document>`.
 */
export function checkSeed(document: string, file: string, value: unknown, check: DocumentCheck | undefined): void {
  if (check === undefined) return;
  const { issues, total } = check.issues(value as JsonValue, undefined);
  if (total === 0) return;
  const listed = issues.map(({ pointer, detail }) => `${document}${pointer}: ${detail}`).join('; ');
  throw new ConfigError([{ path: `data.seed.${document}`, message: `cannot seed from ${file}: ${listed}${total > issues.length ? `; and ${total - issues.length} more` : ''}` }]);
}
