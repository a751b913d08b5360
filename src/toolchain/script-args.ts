import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';

/**
 * The flags of an npm script (bench, build): `--help` prints the script's usage, its opening
 * doc comment, and exits 0; an unknown or malformed flag prints the problem and the usage and
 * exits 2, instead of a stack trace. `scriptUrl` is the script's import.meta.url.
 */
export function scriptArgs<const O extends ParseArgsOptionsConfig>(
  scriptUrl: string,
  options: O,
  args = process.argv.slice(2),
  { positionals = false }: { positionals?: boolean } = {},
) {
  if (args.includes('--help') || args.includes('-h')) {
    console.log(usageOf(scriptUrl));
    process.exit(0);
  }
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: positionals });
  } catch (error) {
    return scriptUsageError(scriptUrl, (error as Error).message);
  }
}

/** Prints what is wrong with the script's arguments and its usage, and exits 2. */
export function scriptUsageError(scriptUrl: string, problem: string): never {
  console.error(`${problem}\n\n${usageOf(scriptUrl)}`);
  process.exit(2);
}

/** The script's opening `/** ... *\/` comment, without its stars. */
function usageOf(scriptUrl: string): string {
  const source = readFileSync(fileURLToPath(scriptUrl), 'utf8');
  const comment = /\/\*\*([\s\S]*?)\*\//.exec(source)?.[1] ?? '';
  return comment
    .split('\n')
    .map((line) => line.replace(/^\s*\* ?/, ''))
    .join('\n')
    .trim();
}
