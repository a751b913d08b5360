/** `npm run docs:config`: rewrites the README's configuration reference from the config schema. */
import { readFileSync, writeFileSync } from 'node:fs';
import { withReference } from '../src/config/reference.ts';

writeFileSync('README.md', withReference(readFileSync('README.md', 'utf8')));
console.log('updated the configuration reference in README.md');
