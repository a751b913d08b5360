/**
 * Reads an OPA bundle (`.tar.gz`) into memory, never touching the disk.
 *
 * The tar reader is hand-written (ustar, GNU long names, pax) rather than a
 * streaming library so every entry type and every size is decided here, before
 * any byte of an entry is kept. Decompression is capped by zlib's
 * `maxOutputLength`, so a gzip bomb stops inflating at the limit.
 *
 * Check codes (BundleRejectedError.check):
 *   archive_compressed_too_large    the .tar.gz is larger than maxCompressedBytes
 *   archive_not_gzip                not a gzip stream, or a corrupt one
 *   archive_decompressed_too_large  the tar stream inflates past maxDecompressedBytes
 *   archive_not_tar                 bad header checksum, unknown format, truncated, malformed pax record
 *   archive_too_many_entries        more file and directory entries than maxEntries
 *   archive_metadata_too_large      a pax or GNU long-name header over 1 MiB (Go's limit), or more of them
 *                                   in all than METADATA_BYTES_PER_ENTRY per entry allowed (at least 1 MiB)
 *   archive_entry_too_large         a file larger than maxFileBytes
 *   archive_entry_type              anything but a regular file or directory (symlink, hardlink, device, fifo, ...)
 *   archive_path_too_long           an entry name longer than maxPathLength bytes
 *   archive_path_invalid            empty name, control characters, backslash, invalid UTF-8, empty or `.` segments
 *   archive_path_absolute           an absolute name other than OPA's single leading `/` (e.g. `//a`)
 *   archive_path_traversal          a `..` segment
 *   archive_duplicate_entry         two entries naming the same file once normalized (`/a`, `./a`, `a`)
 */
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';
import { z } from 'zod';
import type { BundlesConfig } from '../config/schema.ts';
import { BundleRejectedError, ConfigError } from '../errors.ts';

/** Bundle files keyed by normalized path without a leading slash (`policy.wasm`, `.manifest`, `authz/policy.rego`). */
export type BundleFiles = ReadonlyMap<string, Uint8Array<ArrayBuffer>>;

const MiB = 1024 * 1024;

/** Largest pax or GNU long-name header, as in Go's archive/tar (maxSpecialFileSize), which OPA reads bundles with. */
const MAX_METADATA_HEADER_BYTES = MiB;
/**
 * Metadata headers (pax, GNU long names) are not entries, so maxEntries does not bound them; their
 * header blocks and data in all are bounded by this much per entry allowed (MiB at least). A
 * pax header in front of each entry, as tar --format=posix writes, takes under a KiB; records
 * by the million (a few KB compressed) would hold the main thread for seconds as they are read.
 */
const METADATA_BYTES_PER_ENTRY = 1024;

const archiveLimitsSchema = z.object({
  /** Size of the .tar.gz as received. */
  maxCompressedBytes: z.int().positive(),
  /** Size of the inflated tar stream, headers and padding included. */
  maxDecompressedBytes: z.int().positive(),
  /** Size of any one file. */
  maxFileBytes: z.int().positive(),
  /** File and directory entries (pax and GNU metadata headers are not counted). */
  maxEntries: z.int().positive(),
  /** Length of an entry name in UTF-8 bytes. */
  maxPathLength: z.int().positive(),
});

export type ArchiveLimits = z.infer<typeof archiveLimitsSchema>;

/** The archive limits configured under bundles.limits, as the archive reader takes them. */
export function archiveLimitsOf(limits: BundlesConfig['limits']): ArchiveLimits {
  return {
    maxCompressedBytes: limits.max_compressed_bytes,
    maxDecompressedBytes: limits.max_decompressed_bytes,
    maxFileBytes: limits.max_file_bytes,
    maxEntries: limits.max_entries,
    maxPathLength: limits.max_path_length,
  };
}

export const DEFAULT_ARCHIVE_LIMITS: Readonly<ArchiveLimits> = Object.freeze({
  maxCompressedBytes: 16 * MiB,
  maxDecompressedBytes: 64 * MiB,
  maxFileBytes: 32 * MiB,
  maxEntries: 1000,
  maxPathLength: 512,
});

const inflate = promisify(gunzip);

/** Decompresses and unpacks a bundle, enforcing `limits` on the way. Throws BundleRejectedError. */
export async function readBundleArchive(gz: Uint8Array, limits: Partial<ArchiveLimits> = {}): Promise<BundleFiles> {
  const parsed = archiveLimitsSchema.safeParse({ ...DEFAULT_ARCHIVE_LIMITS, ...limits });
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })), 'archive limits');
  }
  const tar = await decompress(gz, parsed.data);
  return readTar(tar, parsed.data);
}

async function decompress(gz: Uint8Array, limits: ArchiveLimits): Promise<Uint8Array> {
  if (gz.byteLength > limits.maxCompressedBytes) {
    throw new BundleRejectedError('archive_compressed_too_large', `bundle is ${gz.byteLength} bytes compressed, the limit is ${limits.maxCompressedBytes}`);
  }
  if (gz.byteLength < 2 || gz[0] !== 0x1f || gz[1] !== 0x8b) {
    throw new BundleRejectedError('archive_not_gzip', 'bundle is not gzip-compressed');
  }
  try {
    return await inflate(gz, { maxOutputLength: limits.maxDecompressedBytes });
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new BundleRejectedError('archive_decompressed_too_large', `bundle inflates past the limit of ${limits.maxDecompressedBytes} bytes`, { cause: error });
    }
    throw new BundleRejectedError('archive_not_gzip', `bundle is not a valid gzip stream: ${(error as Error).message}`, { cause: error });
  }
}

const BLOCK = 512;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The metadata that pax (`x`) and GNU long-name (`L`) headers attach to the entry that follows them. */
interface PendingMetadata {
  path?: string;
  size?: number;
}

function readTar(tar: Uint8Array, limits: ArchiveLimits): BundleFiles {
  const files = new Map<string, Uint8Array<ArrayBuffer>>();
  let pending: PendingMetadata = {};
  let entries = 0;
  let offset = 0;
  const metadataBudget = Math.max(MiB, limits.maxEntries * METADATA_BYTES_PER_ENTRY);
  let metadataBytes = 0;

  // Reaching the end of the buffer on a block boundary is accepted like Go's archive/tar does;
  // a zero block is the regular end-of-archive marker.
  while (offset < tar.byteLength) {
    if (offset + BLOCK > tar.byteLength) throw notTar('truncated header');
    const header = tar.subarray(offset, offset + BLOCK);
    if (header.every((byte) => byte === 0)) break;
    checkHeader(header);

    const type = String.fromCharCode(header[156] ?? 0);
    const isMetadata = type === 'x' || type === 'L' || type === 'g';
    const size = (isMetadata ? undefined : pending.size) ?? parseOctal(header, 124, 12, 'size');
    if (isMetadata) {
      // Checked before the data is read: the size field alone may claim any length.
      if (size > MAX_METADATA_HEADER_BYTES) {
        throw new BundleRejectedError('archive_metadata_too_large', `a pax or GNU long-name header of ${size} bytes, the limit is ${MAX_METADATA_HEADER_BYTES} (as in Go's archive/tar)`);
      }
      metadataBytes += BLOCK + size;
      if (metadataBytes > metadataBudget) {
        throw new BundleRejectedError('archive_metadata_too_large', `pax and GNU long-name headers take more than ${metadataBudget} bytes in all`);
      }
    }
    const dataStart = offset + BLOCK;
    const dataEnd = dataStart + size;
    if (dataEnd > tar.byteLength) throw notTar('entry data is truncated');
    const data = tar.subarray(dataStart, dataEnd);
    offset = dataStart + Math.ceil(size / BLOCK) * BLOCK;

    if (type === 'x') {
      pending = { ...pending, ...parsePax(data) };
      continue;
    }
    if (type === 'L') {
      pending = { ...pending, path: decodeName(cString(data, 0, data.byteLength)) };
      continue;
    }
    if (type === 'g') {
      // Global pax headers carry archive-wide comments (git archive writes one); like Go, ignore them.
      continue;
    }

    const rawName = pending.path ?? headerName(header);
    pending = {};
    if (++entries > limits.maxEntries) {
      throw new BundleRejectedError('archive_too_many_entries', `bundle has more than ${limits.maxEntries} entries`);
    }
    if (type === '5') {
      // Directories hold nothing in memory; their names are still checked so no hostile name passes.
      if (!ROOT_DIRECTORY_NAMES.has(rawName)) normalizePath(rawName.endsWith('/') ? rawName.slice(0, -1) : rawName, limits);
      continue;
    }
    if (type !== '0' && type !== '\0') {
      throw new BundleRejectedError('archive_entry_type', `${JSON.stringify(rawName)} is a ${entryTypeName(type)}, only regular files are allowed`);
    }
    const path = normalizePath(rawName, limits);
    if (size > limits.maxFileBytes) {
      throw new BundleRejectedError('archive_entry_too_large', `${path} is ${size} bytes, the limit is ${limits.maxFileBytes}`);
    }
    if (files.has(path)) throw new BundleRejectedError('archive_duplicate_entry', `${path} appears more than once`);
    // Copy out (Buffer#slice would be a view), so the views do not keep the whole tar stream alive.
    files.set(path, new Uint8Array(data));
  }
  return files;
}

function notTar(reason: string): BundleRejectedError {
  return new BundleRejectedError('archive_not_tar', `bundle is not a valid tar archive: ${reason}`);
}

function checkHeader(header: Uint8Array): void {
  const magic = String.fromCharCode(...header.subarray(257, 265));
  // POSIX ustar ("ustar\0" + "00") and GNU ("ustar  \0"); pre-POSIX v7 archives are not accepted.
  if (magic !== 'ustar\x0000' && magic !== 'ustar  \x00') throw notTar('unknown header format');
  const recorded = parseOctal(header, 148, 8, 'checksum');
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const byte = i >= 148 && i < 156 ? 0x20 : (header[i] ?? 0);
    unsigned += byte;
    signed += byte > 127 ? byte - 256 : byte;
  }
  // Some historic writers summed signed bytes; Go's archive/tar accepts both.
  if (recorded !== unsigned && recorded !== signed) throw notTar('header checksum mismatch');
}

function parseOctal(header: Uint8Array, start: number, length: number, field: string): number {
  const text = String.fromCharCode(...header.subarray(start, start + length)).replace(/^[ \0]+|[ \0]+$/g, '');
  if (text === '') return 0;
  // Base-256 (GNU) numbers start with 0x80 and fail here: Arbiter's limits fit in octal.
  if (!/^[0-7]+$/.test(text)) throw notTar(`invalid ${field} field`);
  return Number.parseInt(text, 8);
}

function cString(bytes: Uint8Array, start: number, length: number): Uint8Array {
  const field = bytes.subarray(start, start + length);
  const end = field.indexOf(0);
  return end === -1 ? field : field.subarray(0, end);
}

function decodeName(bytes: Uint8Array): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new BundleRejectedError('archive_path_invalid', 'an entry name is not valid UTF-8');
  }
}

function headerName(header: Uint8Array): string {
  const name = decodeName(cString(header, 0, 100));
  // Only POSIX ustar has a name prefix at 345; GNU headers keep atime and ctime there.
  if (header[262] !== 0) return name;
  const prefix = decodeName(cString(header, 345, 155));
  return prefix === '' ? name : `${prefix}/${name}`;
}

/** Pax extended header records: `"<length> <key>=<value>\n"`, length counting the whole record. */
function parsePax(data: Uint8Array): PendingMetadata {
  const metadata: PendingMetadata = {};
  let offset = 0;
  while (offset < data.byteLength) {
    const space = data.indexOf(0x20, offset);
    // A record's length has at most 16 digits (9 PB): never spread a longer run into a call.
    const lengthText = space === -1 || space - offset > 16 ? '' : String.fromCharCode(...data.subarray(offset, space));
    if (!/^[1-9][0-9]*$/.test(lengthText)) throw notTar('malformed pax record');
    const end = offset + Number.parseInt(lengthText, 10);
    if (end > data.byteLength || data[end - 1] !== 0x0a) throw notTar('malformed pax record');
    const record = decodeName(data.subarray(space + 1, end - 1));
    const equals = record.indexOf('=');
    if (equals <= 0) throw notTar('malformed pax record');
    const key = record.slice(0, equals);
    const value = record.slice(equals + 1);
    if (key === 'path') metadata.path = value;
    if (key === 'size') {
      if (!/^[0-9]+$/.test(value)) throw notTar('malformed pax size');
      metadata.size = Number.parseInt(value, 10);
    }
    offset = end;
  }
  return metadata;
}

const ENTRY_TYPE_NAMES: Readonly<Record<string, string>> = {
  '1': 'hard link',
  '2': 'symbolic link',
  '3': 'character device',
  '4': 'block device',
  '6': 'fifo',
  '7': 'contiguous file',
  K: 'GNU long link name',
  S: 'GNU sparse file',
};

function entryTypeName(type: string): string {
  return ENTRY_TYPE_NAMES[type] ?? `entry of type ${JSON.stringify(type)}`;
}

const ROOT_DIRECTORY_NAMES = new Set(['/', './', '.']);

/**
 * Maps an entry name to its bundle path.
 * OPA writes `/policy.wasm`; `tar -C dir .` writes `./policy.wasm`: exactly one such
 * prefix is accepted, everything after it must be a plain relative path.
 */
function normalizePath(name: string, limits: ArchiveLimits): string {
  const shown = JSON.stringify(name);
  if (name === '') throw new BundleRejectedError('archive_path_invalid', 'an entry has an empty name');
  if (Buffer.byteLength(name) > limits.maxPathLength) {
    throw new BundleRejectedError('archive_path_too_long', `an entry name is longer than ${limits.maxPathLength} bytes`);
  }
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) throw new BundleRejectedError('archive_path_invalid', `${shown} contains control characters`);
  if (name.includes('\\')) throw new BundleRejectedError('archive_path_invalid', `${shown} contains a backslash`);

  const path = name.startsWith('/') ? name.slice(1) : name.startsWith('./') ? name.slice(2) : name;
  if (path.startsWith('/')) throw new BundleRejectedError('archive_path_absolute', `${shown} is an absolute path`);

  const segments = path.split('/');
  if (segments.includes('..')) throw new BundleRejectedError('archive_path_traversal', `${shown} escapes the bundle root`);
  if (segments.some((segment) => segment === '' || segment === '.')) {
    throw new BundleRejectedError('archive_path_invalid', `${shown} is not a normalized path`);
  }
  return path;
}
