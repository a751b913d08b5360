import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import tarStream from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BundleRejectedError, ConfigError } from '../src/errors.ts';
import { DEFAULT_ARCHIVE_LIMITS, readBundleArchive, type ArchiveLimits } from '../src/policy/archive.ts';
import { opaPath } from '../src/toolchain/opa.ts';
import { entry, pax, tarGz } from './support/hostile-archives.ts';

async function rejection(archive: Uint8Array, limits?: Partial<ArchiveLimits>): Promise<BundleRejectedError> {
  const error = await readBundleArchive(archive, limits).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(BundleRejectedError);
  return error as BundleRejectedError;
}

async function expectCheck(archive: Uint8Array, check: string, limits?: Partial<ArchiveLimits>): Promise<void> {
  expect((await rejection(archive, limits)).check).toBe(check);
}

describe('readBundleArchive', () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'arbiter-archive-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads a bundle built by opa, keyed by path without the leading slash', async () => {
    mkdirSync(join(dir, 'src/authz'), { recursive: true });
    writeFileSync(join(dir, 'src/authz/policy.rego'), 'package authz\n\nallow if input.user == "alice"\n');
    writeFileSync(join(dir, 'src/data.json'), '{"authz": {"admins": ["alice"]}}');
    writeFileSync(join(dir, 'src/.manifest'), '{"roots": ["authz"], "revision": "r7"}');
    execFileSync(opaPath(), ['build', '-b', '.', '-o', join(dir, 'bundle.tar.gz')], { cwd: join(dir, 'src') });

    const files = await readBundleArchive(readFileSync(join(dir, 'bundle.tar.gz')));

    expect([...files.keys()].sort()).toEqual(['.manifest', 'authz/policy.rego', 'data.json']);
    expect(JSON.parse(Buffer.from(files.get('data.json')!).toString())).toEqual({ authz: { admins: ['alice'] } });
    expect(JSON.parse(Buffer.from(files.get('.manifest')!).toString())).toMatchObject({ revision: 'r7', roots: ['authz'] });
  });

  it('accepts the ./ form and directory entries that tar -C dir . writes', async () => {
    const files = await readBundleArchive(
      tarGz(entry('./', { type: '5' }), entry('./authz/', { type: '5' }), entry('./authz/policy.rego', { body: 'package authz' }), entry('.manifest', { body: '{}' })),
    );
    expect([...files.keys()].sort()).toEqual(['.manifest', 'authz/policy.rego']);
    expect(Buffer.from(files.get('authz/policy.rego')!).toString()).toBe('package authz');
  });

  it('reads long names from pax headers, ustar prefixes and GNU long-name entries', async () => {
    const long = `${'d'.repeat(120)}/${'f'.repeat(120)}.rego`;
    const pack = tarStream.pack();
    pack.entry({ name: `/${long}` }, 'from pax');
    pack.entry({ name: `/${'p'.repeat(90)}/${'q'.repeat(90)}.rego` }, 'from prefix');
    pack.finalize();
    const chunks: Buffer[] = [];
    for await (const chunk of pack) chunks.push(chunk as Buffer);
    const gnu = Buffer.concat([entry('././@LongLink', { type: 'L', body: `${'g'.repeat(150)}.rego\0` }), entry('truncated', { body: 'from gnu' })]);

    const files = await readBundleArchive(tarGz(Buffer.concat(chunks).subarray(0, -1024), gnu));

    expect(Buffer.from(files.get(long)!).toString()).toBe('from pax');
    expect(Buffer.from(files.get(`${'p'.repeat(90)}/${'q'.repeat(90)}.rego`)!).toString()).toBe('from prefix');
    expect(Buffer.from(files.get(`${'g'.repeat(150)}.rego`)!).toString()).toBe('from gnu');
    expect(files.size).toBe(3);
  });

  it('does not read the atime and ctime of a GNU header as a name prefix', async () => {
    const gnu = entry('policy.rego', { body: 'package gnu' });
    gnu.write('ustar  \0', 257, 'latin1');
    gnu.write('14712345670\0', 345, 'latin1'); // atime, where ustar keeps its prefix
    gnu.write('14712345671\0', 357, 'latin1'); // ctime
    gnu.fill(0x20, 148, 156);
    const checksum = gnu.subarray(0, 512).reduce((sum, byte) => sum + byte, 0);
    gnu.write(`${checksum.toString(8).padStart(6, '0')}\0 `, 148);
    const files = await readBundleArchive(tarGz(gnu));
    expect([...files.keys()]).toEqual(['policy.rego']);
  });

  it('applies a pax size override to the entry that follows', async () => {
    const files = await readBundleArchive(tarGz(pax({ size: '3' }), entry('a.rego', { body: 'abcdef', size: 6 })));
    expect(Buffer.from(files.get('a.rego')!).toString()).toBe('abc');
  });

  describe('rejects hostile names', () => {
    it.each([
      ['../evil.rego', 'archive_path_traversal'],
      ['authz/../../evil.rego', 'archive_path_traversal'],
      ['/../evil.rego', 'archive_path_traversal'],
      ['./../evil.rego', 'archive_path_traversal'],
      ['//etc/passwd', 'archive_path_absolute'],
      ['.//etc/passwd', 'archive_path_absolute'],
      ['a//b.rego', 'archive_path_invalid'],
      ['a/./b.rego', 'archive_path_invalid'],
      ['././a.rego', 'archive_path_invalid'],
      ['a/', 'archive_path_invalid'],
      ['a\\..\\b.rego', 'archive_path_invalid'],
      ['a\nb.rego', 'archive_path_invalid'],
      ['a\u0001b.rego', 'archive_path_invalid'],
      ['a\u007fb.rego', 'archive_path_invalid'],
      ['a\u0085b.rego', 'archive_path_invalid'],
    ])('%j -> %s', async (name, check) => {
      await expectCheck(tarGz(entry(name, { body: 'x' })), check);
    });

    it('checks directory names too', async () => {
      await expectCheck(tarGz(entry('../outside/', { type: '5' })), 'archive_path_traversal');
    });

    it('an empty name', async () => {
      await expectCheck(tarGz(pax({ path: '' }), entry('ignored', { body: 'x' })), 'archive_path_invalid');
    });

    it('a pax record whose length runs on for 200,000 digits', async () => {
      const body = `${'1'.repeat(200_000)} path=a\n`;
      await expectCheck(tarGz(entry('PaxHeaders/x', { type: 'x', body }), entry('a', { body: 'x' })), 'archive_not_tar');
    });

    it('a NUL byte smuggled in through a pax path', async () => {
      await expectCheck(tarGz(pax({ path: 'a\u0000b.rego' }), entry('ignored', { body: 'x' })), 'archive_path_invalid');
    });

    it('traversal smuggled in through a pax path', async () => {
      await expectCheck(tarGz(pax({ path: '/../../etc/passwd' }), entry('innocent.rego', { body: 'x' })), 'archive_path_traversal');
    });

    it('names that are not UTF-8', async () => {
      const header = entry('placeholder', { body: 'x' });
      const archive = Buffer.concat([header, Buffer.alloc(1024)]);
      archive[0] = 0xff;
      const sum = archive.subarray(0, 512).reduce((s, b, i) => s + (i >= 148 && i < 156 ? 0x20 : b), 0);
      archive.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
      await expectCheck(gzipSync(archive), 'archive_path_invalid');
    });

    it('names longer than maxPathLength', async () => {
      await expectCheck(tarGz(entry(`${'a'.repeat(40)}.rego`, { body: 'x' })), 'archive_path_too_long', { maxPathLength: 32 });
    });
  });

  describe('rejects entry types other than files and directories', () => {
    it.each([
      ['symlink', '2'],
      ['hard link', '1'],
      ['character device', '3'],
      ['block device', '4'],
      ['fifo', '6'],
      ['contiguous file', '7'],
      ['GNU sparse file', 'S'],
    ])('%s', async (_kind, type) => {
      const error = await rejection(tarGz(entry('policy.wasm', { type, linkname: '/etc/passwd' })));
      expect(error.check).toBe('archive_entry_type');
      expect(error.message).toContain('policy.wasm');
    });
  });

  describe('rejects duplicates after normalization', () => {
    it.each([
      ['a.rego', 'a.rego'],
      ['./a.rego', 'a.rego'],
      ['/a.rego', 'a.rego'],
      ['/a.rego', './a.rego'],
    ])('%j beside %j', async (first, second) => {
      await expectCheck(tarGz(entry(first, { body: '1' }), entry(second, { body: '2' })), 'archive_duplicate_entry');
    });
  });

  describe('enforces limits', () => {
    it('cuts off a gzip bomb at the default decompressed limit', async () => {
      const bombSize = DEFAULT_ARCHIVE_LIMITS.maxDecompressedBytes + 16 * 1024 * 1024;
      const bomb = gzipSync(Buffer.concat([entry('bomb.json', { size: bombSize }), Buffer.alloc(bombSize)]), { level: 1 });
      expect(bomb.byteLength).toBeLessThan(DEFAULT_ARCHIVE_LIMITS.maxCompressedBytes);
      await expectCheck(bomb, 'archive_decompressed_too_large');
    });

    it('rejects a compressed archive over the limit before inflating it', async () => {
      await expectCheck(tarGz(entry('a.rego', { body: 'x'.repeat(4096) })), 'archive_compressed_too_large', { maxCompressedBytes: 10 });
    });

    it('rejects a file over the per-file limit', async () => {
      await expectCheck(tarGz(entry('policy.wasm', { body: Buffer.alloc(2048) })), 'archive_entry_too_large', { maxFileBytes: 1024 });
    });

    it('accepts a file at the per-file limit', async () => {
      const files = await readBundleArchive(tarGz(entry('policy.wasm', { body: Buffer.alloc(1024, 7) })), { maxFileBytes: 1024 });
      expect(files.get('policy.wasm')?.byteLength).toBe(1024);
    });

    it('rejects too many entries, directories included', async () => {
      const entries = [entry('d/', { type: '5' }), ...Array.from({ length: 5 }, (_, i) => entry(`d/${i}.rego`, { body: 'x' }))];
      await expectCheck(tarGz(...entries), 'archive_too_many_entries', { maxEntries: 5 });
      expect((await readBundleArchive(tarGz(...entries), { maxEntries: 6 })).size).toBe(5);
    });

    it('bounds pax and GNU long-name headers, which maxEntries does not count: a flood of them is refused before it is read', async () => {
      // 60 MiB of pax records, 90 KB compressed: read one by one, they held the main thread
      // (and every decision) for seconds. Empty global headers by the hundred thousand too.
      const records = entry('PaxHeaders/x', { type: 'x', body: '6 a=b\n'.repeat(10 * 1024 * 1024) });
      const globals = Array.from({ length: 120_000 }, () => entry('pax_global_header', { type: 'g' }));
      for (const flood of [[records], globals]) {
        const started = performance.now();
        const error = await rejection(tarGz(...flood, entry('a.rego', { body: 'x' })));
        expect(error.check).toBe('archive_metadata_too_large');
        expect(performance.now() - started).toBeLessThan(2000);
      }
      // One header over Go's limit for one (what OPA reads bundles with) is refused too.
      await expectCheck(tarGz(entry('././@LongLink', { type: 'L', body: `${'a/'.repeat(600_000)}b` }), entry('x', { body: 'x' })), 'archive_metadata_too_large');
    });

    it('accepts a pax header in front of each of maxEntries entries, as tar --format=posix writes them', async () => {
      const times = { mtime: '1767225600.123456789', atime: '1767225600.123456789', ctime: '1767225600.123456789' };
      const entries = Array.from({ length: DEFAULT_ARCHIVE_LIMITS.maxEntries }, (_, i) => [
        pax({ path: `authz/${'long-directory-name/'.repeat(10)}${i}.rego`, ...times }),
        entry(`${i}.rego`, { body: 'x' }),
      ]).flat();
      expect((await readBundleArchive(tarGz(...entries))).size).toBe(DEFAULT_ARCHIVE_LIMITS.maxEntries);
    });

    it('refuses limits that are not positive integers', async () => {
      await expect(readBundleArchive(tarGz(), { maxEntries: 0 })).rejects.toBeInstanceOf(ConfigError);
    });
  });

  describe('rejects what is not a gzip-compressed tar', () => {
    it('an uncompressed tar', async () => {
      await expectCheck(Buffer.concat([entry('a.rego', { body: 'x' }), Buffer.alloc(1024)]), 'archive_not_gzip');
    });

    it('a truncated gzip stream', async () => {
      const archive = tarGz(entry('a.rego', { body: 'x'.repeat(10_000) }));
      await expectCheck(archive.subarray(0, archive.byteLength / 2), 'archive_not_gzip');
    });

    it('gzip of something that is not a tar', async () => {
      await expectCheck(gzipSync(Buffer.from('{"this": "is json, not a tar archive"}'.repeat(40))), 'archive_not_tar');
    });

    it('a header with a wrong checksum', async () => {
      const archive = Buffer.concat([entry('a.rego', { body: 'x' }), Buffer.alloc(1024)]);
      archive[0] = 'b'.charCodeAt(0);
      await expectCheck(gzipSync(archive), 'archive_not_tar');
    });

    it('an entry whose data is cut short', async () => {
      const whole = entry('a.rego', { body: 'x'.repeat(2000) });
      await expectCheck(gzipSync(whole.subarray(0, 1024)), 'archive_not_tar');
    });

    it('a malformed pax record', async () => {
      await expectCheck(tarGz(entry('PaxHeaders/x', { type: 'x', body: '99 path=a\n' }), entry('a.rego', { body: 'x' })), 'archive_not_tar');
    });
  });
});
