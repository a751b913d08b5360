/**
 * Accepted bundle revisions on disk, so a restart serves what was last activated:
 *
 *   <dir>/<name>/<sha256>.tar.gz   each accepted archive not pruned, named by its digest
 *   <dir>/<name>/index.json        the revisions stored and the active one (BundleIndex); for a
 *                                  deleted bundle that had a signed revision, its replay mark
 *
 * Every file is written to a temporary file, fsynced and renamed over its target, then
 * the directory is fsynced: a crash leaves the old file or the new one, never half of one.
 * An archive is verified against its digest each time it is read back. Archives are deleted
 * only after an index that no longer needs them is durable (`deleteUnlisted`), so a crash
 * never leaves the index naming an archive that is gone, only archives nothing names.
 *
 * Error codes (ArbiterError.code):
 *   bundle_store_digest_mismatch   a stored archive no longer hashes to the digest it is stored under
 *   bundle_store_unreadable        an archive or index cannot be read, or the index is not a BundleIndex
 *   bundle_store_write_failed      writing or removing a file failed
 */
import { createHash, randomUUID } from 'node:crypto';
import { open, readdir, readFile, rename, rm, rmdir } from 'node:fs/promises';
import { makePrivateDir } from '../private-files.ts';
import { join } from 'node:path';
import { z } from 'zod';
import { ArbiterError } from '../errors.ts';
import { isBundleName } from './bundle-name.ts';

export const storedRevisionSchema = z.object({
  revision: z.string(),
  /** sha256 of the archive, hex. */
  digest: z.string().regex(/^[0-9a-f]{64}$/),
  stored_at: z.string(),
  stored_by: z.string(),
  /** Key id and JWS `iat` of a signed revision; what the replay rule compares. */
  signature: z.object({ keyid: z.string(), iat: z.number().optional() }).optional(),
  /** When it last became active (absent in indexes written before retention: stored_at stands in). */
  activated_at: z.string().optional(),
  /**
   * Which activation of the bundle that was, counting up: what retention orders by, as a clock
   * stepped back between two activations would misorder their times (absent in indexes written
   * before it: such revisions were activated before any that has one, and order by time).
   */
  activation_seq: z.number().int().positive().optional(),
  /**
   * When retention deleted its archive. The record stays, so the replay rule and the one
   * archive per revision rule still know the revision; it can no longer be activated.
   */
  pruned_at: z.string().optional(),
});

export const bundleIndexSchema = z.object({
  name: z.string(),
  revisions: z.array(storedRevisionSchema),
  active: z
    .object({ revision: z.string(), digest: z.string(), activated_at: z.string(), activated_by: z.string() })
    .nullable(),
  /**
   * Set when the bundle was deleted (DELETE /v1/bundles/{name}) with a signed revision stored:
   * the revision then active, and its signature's `iat`, the replay rule's mark until another
   * is activated. The index is kept, its revisions all pruned, so deleting a bundle does not
   * reset the replay rule and let an older signed archive be pushed again.
   */
  removed: z
    .object({ removed_at: z.string(), removed_by: z.string(), revision: z.string(), digest: z.string(), iat: z.number().optional() })
    .optional(),
});

export type StoredRevision = z.infer<typeof storedRevisionSchema>;
export type BundleIndex = z.infer<typeof bundleIndexSchema>;

/**
 * Records of pruned revisions an index keeps, the oldest forgotten first: the replay rule's
 * memory of them, bounded (a few hundred bytes each). A signed archive older than that is
 * still refused when the active revision's signature carries an `iat`.
 */
export const MAX_PRUNED_RECORDS = 1000;

const INDEX_FILE = 'index.json';
const ARCHIVE_FILE = /^([0-9a-f]{64})\.tar\.gz$/;
/** What #writeAtomically names its temporary files. */
const TEMP_FILE = /^\..+\.tmp$/;
/** A bundle directory `remove` renamed away: never a bundle name (those start with a letter or digit). */
const REMOVED_DIR = /^\..+\.removed$/;

/**
 * A bundle archive's digest (`digest` in the index, the status and the push answer): lowercase
 * hex SHA-256 of the .tar.gz bytes as received. One function, so a pushed, a pulled and a loaded
 * archive are compared by the same digest.
 */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export class BundleStore {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  /** Names of the bundles that have a directory in the store. */
  async names(): Promise<string[]> {
    try {
      const entries = await readdir(this.dir, { withFileTypes: true });
      return entries.filter((e) => e.isDirectory() && isBundleName(e.name)).map((e) => e.name).sort();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new ArbiterError('bundle_store_unreadable', `bundle store ${this.dir} cannot be read: ${(error as Error).message}`, { cause: error });
    }
  }

  async readIndex(name: string): Promise<BundleIndex | undefined> {
    let text: string;
    try {
      text = await readFile(join(this.dir, name, INDEX_FILE), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new ArbiterError('bundle_store_unreadable', `index of bundle ${name} cannot be read: ${(error as Error).message}`, { cause: error });
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw new ArbiterError('bundle_store_unreadable', `index of bundle ${name} is not JSON`, { cause: error });
    }
    const parsed = bundleIndexSchema.safeParse(json);
    if (!parsed.success || parsed.data.name !== name) {
      throw new ArbiterError('bundle_store_unreadable', `index of bundle ${name} is not a bundle index`);
    }
    return parsed.data;
  }

  async writeIndex(index: BundleIndex): Promise<void> {
    await this.#writeAtomically(index.name, INDEX_FILE, Buffer.from(`${JSON.stringify(index, null, 2)}\n`));
  }

  /** Stores an archive under its digest (a no-op when that digest is already stored). */
  async writeArchive(name: string, archive: Uint8Array): Promise<string> {
    const digest = sha256Hex(archive);
    await this.#writeAtomically(name, `${digest}.tar.gz`, archive);
    return digest;
  }

  /** Reads an archive back, refusing it unless it still hashes to `digest`. */
  async readArchive(name: string, digest: string): Promise<Uint8Array> {
    const file = join(this.dir, name, `${digest}.tar.gz`);
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(await readFile(file));
    } catch (error) {
      throw new ArbiterError('bundle_store_unreadable', `stored archive ${file} cannot be read: ${(error as Error).message}`, { cause: error });
    }
    const actual = sha256Hex(bytes);
    if (actual !== digest) {
      throw new ArbiterError('bundle_store_digest_mismatch', `stored archive ${file} has digest ${actual}, not ${digest}: it was modified outside Arbiter`);
    }
    return bytes;
  }

  /**
   * Forgets a bundle in one durable step: its directory is renamed out of the bundle names
   * (`.<name>.<uuid>.removed`) and the store's directory fsynced before anything is deleted,
   * so a crash leaves the bundle whole or gone, never an index naming archives already deleted
   * (a bundle refused at every start). Once renamed the bundle is gone, whatever happens next:
   * a sync or deletion that then fails is returned (for the log), not thrown, and
   * `deleteRemoved` deletes what it left at the next start.
   */
  async remove(name: string): Promise<{ leftover?: string }> {
    const removed = join(this.dir, `.${name}.${randomUUID()}.removed`);
    try {
      await rename(join(this.dir, name), removed);
    } catch (error) {
      // A store never written to, or a bundle only served from bundles.dir: nothing stored.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw new ArbiterError('bundle_store_write_failed', `bundle ${name} cannot be removed from the store: ${(error as Error).message}`, { cause: error });
    }
    try {
      await syncDirectory(this.dir);
    } catch (error) {
      // Renamed all the same: the next start finds it gone, unless a power loss takes the rename back.
      // Nothing is deleted meanwhile: deletions that reached the disk before the rename would
      // bring the bundle back as an index naming archives already gone.
      return { leftover: `${removed}: the store directory could not be synced, so a power loss may bring ${name} back: ${(error as Error).message}` };
    }
    try {
      await rm(removed, { recursive: true, force: true });
      return {};
    } catch (error) {
      return { leftover: `${removed} could not be deleted (it is deleted at the next start): ${(error as Error).message}` };
    }
  }

  /** Deletes the directories of removed bundles a crash left behind (see `remove`). At start, before anything else writes. */
  async deleteRemoved(): Promise<void> {
    let entries: string[];
    try {
      entries = await readdir(this.dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw new ArbiterError('bundle_store_unreadable', `bundle store ${this.dir} cannot be read: ${(error as Error).message}`, { cause: error });
    }
    for (const entry of entries.filter((e) => REMOVED_DIR.test(e))) {
      await rm(join(this.dir, entry), { recursive: true, force: true });
    }
  }

  /**
   * Deletes the bundle's directory if nothing is left in it (a first push cut short, once
   * `deleteUnlisted` has deleted what it wrote). One that holds anything else is left alone:
   * the store may share its directory with files that are not Arbiter's. Never throws.
   */
  async removeIfEmpty(name: string): Promise<void> {
    try {
      await rmdir(join(this.dir, name));
      await syncDirectory(this.dir);
    } catch {
      // Not empty, gone already, or not removable now: listed as a bundle with nothing stored.
    }
  }

  /**
   * Deletes from the bundle's directory every archive whose digest is not in `keep`, and the
   * temporary files of writes a crash cut short, then makes the deletions durable. Returns
   * the digests of the archives deleted. Only for a store this server owns (bundles.store is
   * locked), with no write of this bundle in progress: the lifecycle serializes them.
   */
  async deleteUnlisted(name: string, keep: ReadonlySet<string>): Promise<string[]> {
    const dir = join(this.dir, name);
    const deleted: string[] = [];
    try {
      let files: string[];
      try {
        files = await readdir(dir);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw error;
      }
      let removed = false;
      for (const file of files) {
        const archive = ARCHIVE_FILE.exec(file);
        if (archive !== null && !keep.has(archive[1]!)) deleted.push(archive[1]!);
        else if (!TEMP_FILE.test(file)) continue;
        await rm(join(dir, file), { force: true });
        removed = true;
      }
      if (removed) await syncDirectory(dir);
      return deleted;
    } catch (error) {
      throw new ArbiterError('bundle_store_write_failed', `cannot delete the unlisted archives of bundle ${name}: ${(error as Error).message}`, { cause: error });
    }
  }

  async #writeAtomically(name: string, file: string, bytes: Uint8Array): Promise<void> {
    const dir = join(this.dir, name);
    const temp = join(dir, `.${file}.${randomUUID()}.tmp`);
    try {
      await makePrivateDir(dir);
      const handle = await open(temp, 'wx', 0o600);
      try {
        await handle.writeFile(bytes);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, join(dir, file));
      // The rename is durable only once the directory entry is, and the bundle's directory
      // only once the store's entry for it is (it may have just been created).
      await syncDirectory(dir);
      await syncDirectory(this.dir);
    } catch (error) {
      await rm(temp, { force: true });
      throw new ArbiterError('bundle_store_write_failed', `cannot write ${join(dir, file)}: ${(error as Error).message}`, { cause: error });
    }
  }
}

async function syncDirectory(dir: string): Promise<void> {
  const directory = await open(dir, 'r');
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}
