import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import { DecisionStore } from '../src/decisions/store.ts';
import { tempDir } from './support/decisions.ts';

const temp = tempDir();
afterEach(() => temp.cleanup());

it('strict: every append that resolved survives kill -9', async () => {
  const child = spawn(process.execPath, [fileURLToPath(new URL('./support/decision-log-child.ts', import.meta.url)), temp.path], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let output = '';
  child.stdout.setEncoding('utf8');
  await new Promise<void>((resolve, reject) => {
    child.on('exit', (code) => reject(new Error(`child exited early (${code})`)));
    child.stdout.on('data', (chunk: string) => {
      output += chunk;
      // Kill once a good number of appends have been acknowledged, mid-stream.
      if (output.split('\n').length > 2_000 && child.kill('SIGKILL')) resolve();
    });
  });
  await new Promise((resolve) => child.once('close', resolve));

  // A line cut by the kill is not an acknowledged id.
  const acknowledged = output.split('\n').slice(1, -1);
  expect(acknowledged.length).toBeGreaterThan(1_000);
  const store = await DecisionStore.open({ path: temp.path });
  try {
    const missing = acknowledged.filter((id) => store.get(id) === undefined);
    expect(missing).toEqual([]);
    expect(await store.verify()).toMatchObject({ ok: true });
  } finally {
    await store.close();
  }
});
