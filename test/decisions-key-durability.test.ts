import * as fs from 'node:fs';
import { dirname } from 'node:path';
import { afterEach, beforeEach, expect, it, vi } from 'vitest';
import { DecisionStore } from '../src/decisions/store.ts';
import { tempDir } from './support/decisions.ts';

/** Every file descriptor fsynced, as (device, inode) of what it was open on. */
const synced: string[] = [];

vi.mock('node:fs', async (importOriginal) => {
  const actual = await importOriginal<typeof fs>();
  return {
    ...actual,
    fsyncSync: (fd: number) => {
      const { dev, ino } = actual.fstatSync(fd);
      synced.push(`${dev}:${ino}`);
      actual.fsyncSync(fd);
    },
  };
});

const identity = (path: string) => {
  const { dev, ino } = fs.statSync(path);
  return `${dev}:${ino}`;
};

let temp: ReturnType<typeof tempDir>;

beforeEach(() => {
  temp = tempDir();
  synced.length = 0;
});

afterEach(() => temp.cleanup());

/**
 * The checkpoint key signs the log's anchor in the log's first (fsynced) commit: a key that a
 * power loss takes back (its bytes, or its directory entry, never written to disk) leaves a log
 * that no longer opens nor verifies. It must be on disk before anything it signs.
 */
it('writes a new checkpoint key to disk, file and directory entry, before the log it signs', async () => {
  const keyDir = `${temp.dir}/keys`;
  fs.mkdirSync(keyDir);
  const keyPath = `${keyDir}/checkpoint.jwk`;
  const store = await DecisionStore.open({ path: temp.path, checkpoint: { key_path: keyPath } });
  await store.close();
  expect(synced).toContain(identity(keyPath));
  expect(synced).toContain(identity(dirname(keyPath)));
});
