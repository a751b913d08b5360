/** `npm run docs:config`: writes docs/configuration.md from the config schema. */
import { writeFileSync } from 'node:fs';
import { configReference } from '../src/config/reference.ts';

writeFileSync('docs/configuration.md', `${configReference()}\n`);
console.log('wrote docs/configuration.md');
