/**
 * Child process of the crash test: appends in strict mode as fast as it can and prints
 * each decision_id once its append has resolved, until it is killed.
 */
import { DecisionStore } from '../../src/decisions/store.ts';
import { decision } from './decisions.ts';

const path = process.argv[2];
if (!path) throw new Error('usage: decision-log-child.ts <database path>');
const store = await DecisionStore.open({ path });
process.stdout.write('ready\n');

// Several concurrent writers, so the kill can land mid-group-commit.
await Promise.all(
  Array.from({ length: 50 }, async () => {
    for (;;) {
      const record = decision();
      await store.append(record);
      process.stdout.write(`${record.decision_id}\n`);
    }
  }),
);
