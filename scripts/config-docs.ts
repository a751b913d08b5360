/** `npm run docs:config`: rewrites the README's configuration reference from the config schema. */
import { readFileSync, writeFileSync } from 'node:fs';
import { withReference } from '../src/config/reference.ts';
import { scriptArgs } from '../src/toolchain/script-args.ts';

scriptArgs(import.meta.url, {});
const before = readFileSync('README.md', 'utf8');
const after = withReference(before);
if (after === before) {
  console.log('the configuration reference in README.md is up to date');
} else {
  writeFileSync('README.md', after);
  console.log('updated the configuration reference in README.md');
}
