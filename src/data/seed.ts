import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.ts';

/** A data.seed file's document, or a ConfigError naming `data.seed.<document>`: start-up and `config check` read it alike. */
export function readSeedFile(document: string, file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new ConfigError([{ path: `data.seed.${document}`, message: `cannot read ${file}: ${(error as Error).message}` }]);
  }
}
