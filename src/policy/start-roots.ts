import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BundlesConfig } from '../config/schema.ts';
import { ArbiterError, ConfigError } from '../errors.ts';
import { archiveLimitsOf, readBundleArchive } from './archive.ts';
import { isBundleName } from './bundle-name.ts';
import { parseManifest } from './manifest.ts';
import { BundleStore } from './store.ts';

/** The manifest roots of a bundle start-up would activate, and where its archive comes from. */
export interface RootsAtStart {
  name: string;
  roots: readonly string[];
  from: 'bundles.store' | 'bundles.dir';
}

/**
 * The roots of the bundles start-up activates before it seeds live data, read from the same
 * archives it would activate: each name's active revision in the store, else `<name>.tar.gz`
 * in the embedded directory, unless the name is pulled (bundles.sources: never served from
 * dir). An archive whose manifest cannot be read is left out: start-up refuses that bundle,
 * so it owns nothing. `pulled` lists the source names, whose roots nothing tells until their
 * source serves them (a stored revision of one is in `known`: start-up activates it first).
 * For `config check`: reads, never writes; a store that cannot be listed names bundles.store,
 * as start-up does.
 */
export async function rootsAtStart(bundles: BundlesConfig): Promise<{ known: RootsAtStart[]; pulled: { name: string; index: number }[] }> {
  const limits = archiveLimitsOf(bundles.limits);
  const rootsOf = async (archive: Uint8Array) => parseManifest(await readBundleArchive(archive, limits)).roots;
  const known: RootsAtStart[] = [];
  const claimed = new Set<string>();
  const store = new BundleStore(bundles.store);
  let stored: string[];
  try {
    stored = await store.names();
  } catch (error) {
    throw new ConfigError([{ path: 'bundles.store', message: (error as Error).message }]);
  }
  for (const name of stored) {
    try {
      const active = (await store.readIndex(name))?.active;
      if (!active) continue;
      // Claimed even when unreadable: start-up then serves nothing under that name, dir's archive neither.
      claimed.add(name);
      known.push({ name, roots: await rootsOf(await store.readArchive(name, active.digest)), from: 'bundles.store' });
    } catch (error) {
      if (!(error instanceof ArbiterError)) throw error;
      claimed.add(name);
    }
  }
  const pulled = bundles.sources.map((source, index) => ({ name: source.name, index }));
  const pulledNames = new Set(pulled.map((source) => source.name));
  const files = (await readdir(bundles.dir).catch(() => [])).filter((file) => file.endsWith('.tar.gz')).sort();
  for (const file of files) {
    const name = file.slice(0, -'.tar.gz'.length);
    if (claimed.has(name) || pulledNames.has(name) || !isBundleName(name)) continue;
    try {
      known.push({ name, roots: await rootsOf(new Uint8Array(await readFile(join(bundles.dir, file)))), from: 'bundles.dir' });
    } catch {
      // Unreadable or refused: start-up logs it and does not serve it.
    }
  }
  return { known, pulled };
}
