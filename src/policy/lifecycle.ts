/**
 * The life of a bundle from upload to retirement: every way a bundle becomes active (admin
 * PUT, pull, explicit activation of a stored revision, restart) goes through `#validate`,
 * then the store, then one registry assignment. Changes are serialized, so the roots
 * overlap check and the index always see the outcome of the change before.
 *
 * Replay rule for signed bundles: a signed bundle is refused (`bundle_replayed`) when its
 * archive is stored already, before the active revision was (an older one), or when the
 * active revision's signature carries an `iat` and its own `iat` is absent or not greater.
 * The active revision itself, or one stored after it, is no replay: what a pull source
 * serves again after a restart when the active one was rolled back by hand or could not be
 * restored. A deleted bundle with a signed revision stored keeps its records and the revision
 * then active as the mark the rule compares with (see `remove`), so a DELETE does not reset
 * it; only its configured source (bundles.sources) starts the name afresh. Rolling back to an
 * older stored revision is still possible, explicitly, with `activate(name, revision)`. A
 * revision names one archive: another archive under a stored revision is refused
 * (`bundle_revision_conflict`).
 *
 * Retention: after each activation, and at start, the archives of the revisions past the
 * `maxRevisions` active most recently are deleted (the active revision is the most recent, the
 * one it replaced the next: from 2 on, a rollback to what served before is always there).
 * Their records stay in the index, marked `pruned_at`, in their place: the replay and conflict
 * rules above compare positions and revisions, and must not forget a revision because its
 * archive is gone. Only the oldest records past MAX_PRUNED_RECORDS are forgotten, so the index
 * is bounded too. The index that marks them is written before any archive is deleted: a crash
 * in between leaves archives nothing names, deleted at the next start, never an index naming
 * an archive that is gone.
 *
 * Error codes besides the BundleRejectedError checks of the checks it runs:
 *   bundle_name_invalid         the name is not a BUNDLE_NAME_PATTERN
 *   bundle_not_found            no such bundle, active or stored
 *   bundle_revision_not_found   no such stored revision
 *   bundle_revision_pruned      the revision was stored, but retention has deleted its archive
 *   bundle_in_use               removing a bundle decisions target by configuration
 * Checks (BundleRejectedError.check) added here:
 *   signature_keys_missing      a bundle must be verified but no key is configured for it
 *   manifest_revision_missing   the manifest has no revision to store it under
 *   bundle_roots_overlap        its roots overlap another active bundle's, or (pushed, pulled or activated) a live data document written
 *   bundle_data_too_deep        its data nests deeper than the limit
 *   bundle_data_too_large       its data serializes larger than the limit
 *   bundle_replayed             see the replay rule above
 *   bundle_revision_conflict    see the replay rule above
 *   signature_iat_invalid       an archive pushed or pulled whose signature's `iat` is not a whole
 *                               number of seconds (OPA refuses it too)
 *   signature_iat_future        an archive pushed or pulled whose signature's `iat` is ahead of this
 *                               server's clock by more than ISSUED_AT_LEEWAY_S (300 s): an iat
 *                               written in milliseconds, say
 */
import { readdirSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import type { Logger } from 'pino';
import { ownedByRoots, type DataPath } from '../data/data-path.ts';
import { ArbiterError, atConfigKey, BundleRejectedError } from '../errors.ts';
import { readBundleArchive, type ArchiveLimits, type BundleFiles } from './archive.ts';
import { loadBundle, type PolicyBundle } from './bundle.ts';
import { isBundleName } from './bundle-name.ts';
import type { PolicyEvaluator } from './evaluation/evaluator.ts';
import { parseManifest, rootsOverlap, withinRoot } from './manifest.ts';
import type { BundleRegistry } from './registry.ts';
import { isSignedBundle, SIGNATURES_FILE, verifyBundleSignatures, type VerificationOptions } from './signatures.ts';
import { MAX_PRUNED_RECORDS, sha256Hex, type BundleIndex, type BundleStore, type StoredRevision } from './store.ts';

export interface DataLimits {
  maxDepth: number;
  maxBytes: number;
}

export interface BundleLifecycleOptions {
  registry: BundleRegistry;
  store: BundleStore;
  logger: Logger;
  /** Refuse unsigned bundles from PUT, pull and the store (not from the embedded directory). */
  requireSignatures: boolean;
  /** Keys and scope a bundle's signature is verified with; undefined when none are configured. */
  verification: (name: string) => VerificationOptions | undefined;
  archiveLimits: ArchiveLimits;
  dataLimits: DataLimits;
  /** Runs each candidate's smoke evaluation under the decision deadline and memory ceiling. */
  evaluator: PolicyEvaluator;
  /** Bundles decisions target by configuration: they cannot be removed. */
  protectedBundles: ReadonlySet<string>;
  /** Stored revisions kept per bundle (bundles.retention.max_revisions), the active one included; at least 1. */
  maxRevisions: number;
  /** Hears of every activation and rejection (metrics). */
  observer?: BundleObserver;
}

export interface BundleObserver {
  bundleActivated(bundle: string): void;
  bundleRejected(bundle: string, check: string): void;
}

/** When and by whom the active revision was activated, and where it came from. */
export interface Activation {
  revision: string;
  digest: string;
  activated_at: string;
  activated_by: string;
  /** `store`: accepted through the API or a pull; `embedded`: the default from bundles.dir. */
  source: 'store' | 'embedded';
}

export interface BundleStatus {
  name: string;
  active: Activation | null;
  revisions: StoredRevision[];
}

/**
 * For a change an admin asked for: `stillAuthorized` is asked at the point of no return, after
 * the wait for changes ahead of it and the candidate's checks (seconds, up to
 * engine.load_deadline_ms), so that an admin token revoked meanwhile changes nothing once the
 * revocation has been answered. False refuses the change: nothing is changed, and the caller,
 * which said no, answers with its own refusal (the error thrown, admin_token_revoked, is never a response).
 */
export interface ChangeOptions {
  stillAuthorized?: () => boolean;
}

export interface AcceptResult {
  /** `unchanged` when the archive is the active one already. */
  outcome: 'activated' | 'unchanged';
  revision: string;
  digest: string;
  bundle: BundleStatus;
}

/** The actor recorded for bundles activated from `bundles.dir` at start. */
const EMBEDDED_ACTOR = 'arbiter:bundles.dir';

interface ValidateOptions {
  /** Skip the signature: the embedded directory is part of the deployment, like the config file. */
  trusted: boolean;
  /** A check of the revision and signature that must pass before the module is loaded (the replay rule). */
  beforeLoad?: (manifest: { revision: string; roots: readonly string[] }, signature: Validated['signature'], files: BundleFiles) => void;
}

interface Validated {
  bundle: PolicyBundle;
  signature?: { keyid: string; iat?: number };
}

export class BundleLifecycle {
  readonly #options: BundleLifecycleOptions;
  /** Owned here: the activation record of every bundle the registry serves. */
  readonly #activations = new Map<string, Activation>();
  #queue: Promise<unknown> = Promise.resolve();
  /** The live data documents written now (see protectLiveData); none until then. */
  #liveDocuments: () => readonly string[] = () => [];
  /**
   * The candidate whose roots passed the live data check, until its change settles: the check
   * runs before the module check and smoke evaluation, and a document written in between would
   * be frozen as one written before (see claimantOf).
   */
  #claim: { name: string; owned: (path: DataPath) => boolean } | undefined;
  /** Aborted at shutdown: stops the threads hashing large files for a signature check. */
  readonly #stopping = new AbortController();

  constructor(options: BundleLifecycleOptions) {
    this.#options = options;
  }

  /**
   * For shutdown, which waits for a pull being checked: a signature check hashing a large file
   * on a thread of its own stops (a push or pull then fails as signature_digest_unavailable),
   * rather than running for seconds past server.shutdown_timeout_s. Later checks fail the same way.
   */
  stopSignatureChecks(): void {
    this.#stopping.abort();
  }

  /**
   * From now on, a push, pull or activation whose roots cover one of `documents()` (the live
   * data documents written) is refused. Given after restore: live data is opened once bundles
   * are restored, since its read-only rule asks the registry. A revision restored at start is
   * not refused for it: it was accepted, and the document was then read-only under it.
   */
  protectLiveData(documents: () => readonly string[]): void {
    this.#liveDocuments = documents;
  }

  /**
   * A bundle owning a live document would freeze it: the feed's writes refused
   * (data_path_owned_by_bundle) and decisions reading the bundle's copy, a removed grant
   * still granting. The document must be deleted first if the bundle is to own it. A root at
   * or inside one of the active revision's own roots freezes nothing more: what it covers is
   * read-only already, and a document a feed wrote beside a nested root (`shared/other` beside
   * `shared/policy`) lies above it, so checking it would refuse every later revision and rollback.
   */
  #checkLiveDataRoots(name: string, roots: readonly string[]): void {
    const held = this.#options.registry.get(name)?.roots ?? [];
    const owned = ownedByRoots(roots.filter((root) => !held.some((own) => withinRoot(root === '' ? [] : root.split('/'), own))));
    const document = this.#liveDocuments().find((doc) => owned([doc]));
    if (document !== undefined) {
      throw new BundleRejectedError(
        'bundle_roots_overlap',
        `roots ${JSON.stringify(roots)} cover the live data document ${document} (/v1/data/${document}): the bundle would freeze it, refusing the feed's writes while decisions read the bundle's copy. Delete the document first if the bundle is to own it`,
      );
    }
    this.#claim = { name, owned: ownedByRoots(roots) };
  }

  /**
   * The bundle being pushed, pulled or activated whose roots cover `path` (inside or above one),
   * if any: live data there is read-only until the change settles, as it will be under the
   * bundle once active. Otherwise a feed's write landing while the candidate is checked would
   * pass both checks and be frozen by the bundle, its later writes refused.
   */
  claimantOf(path: DataPath): string | undefined {
    const claim = this.#claim;
    return claim?.owned(path) ? claim.name : undefined;
  }

  /**
   * Validates, stores and activates an archive. Throws BundleRejectedError (the active revision
   * keeps serving). `pulled`: delivered by the name's configured source (bundles.sources), the
   * desired state a DELETE by hand returns the name to, so a deleted bundle's replay mark does
   * not hold it (it holds a push).
   */
  accept(name: string, archive: Uint8Array, actor: string, { pulled = false, stillAuthorized }: { pulled?: boolean } & ChangeOptions = {}): Promise<AcceptResult> {
    return this.#serialized(async () => {
      checkName(name);
      const digest = sha256Hex(archive);
      const current = this.#options.registry.get(name);
      const stored = await this.#options.store.readIndex(name);
      const index = stored !== undefined && !(pulled && isDeleted(stored)) ? stored : { name, revisions: [], active: null };
      // The revision served from bundles.dir is not in the store: stored now, it stays something
      // to roll back (and replay decisions) to once this push replaces it.
      const activation = this.#activations.get(name);
      const embedded = current !== undefined && activation?.source === 'embedded' && !index.revisions.some((r) => r.digest === current.digest) ? { bundle: current, activation } : undefined;
      if (current?.digest === digest) {
        // The same archive pushed: the store now holds it as the desired state, over the image's.
        if (embedded !== undefined) {
          checkStillAuthorized(stillAuthorized);
          await this.#pinEmbedded(index, embedded.bundle, actor);
        }
        return { outcome: 'unchanged', revision: current.revision, digest, bundle: await this.#status(name) };
      }
      const { bundle, signature } = await this.#validateLogged(name, archive, actor, {
        trusted: false,
        beforeLoad: ({ revision, roots }, signature, files) => {
          // Only here, for an archive coming in: a stored revision is not refused at start for an
          // iat it was accepted with.
          if (signature !== undefined) checkIssuedAt(files, Date.now() / 1000);
          // Another archive under the embedded revision's name could not be stored beside it, and
          // replays, which find a revision by name, would take the one for the other.
          if (embedded !== undefined && embedded.bundle.revision === revision) {
            throw new BundleRejectedError('bundle_revision_conflict', `revision ${JSON.stringify(revision)} of bundle ${name} is served from bundles.dir with another digest: give the new build a new revision`);
          }
          checkReplay(index, revision, digest, signature);
          this.#checkLiveDataRoots(name, roots);
        },
      });
      await this.#releasedOnFailure(bundle, async () => {
        checkStillAuthorized(stillAuthorized);
        const now = new Date().toISOString();
        if (embedded !== undefined) {
          // Its signature, when it verifies, is recorded as a push's is: rolled back to, the
          // replay rule then compares with its iat. One that does not is stored unsigned (bundles.dir
          // was trusted at start), and refused at activate as an unsigned push would be.
          const embeddedSignature = await this.#signatureOf(name, embedded.bundle.archive).catch(() => undefined);
          await this.#store(index, embedded.bundle, { stored_at: now, stored_by: EMBEDDED_ACTOR, activated_at: embedded.activation.activated_at }, embeddedSignature);
        }
        const record = index.revisions.find((r) => r.digest === digest);
        if (record === undefined) {
          await this.#store(index, bundle, { stored_at: now, stored_by: actor }, signature);
        } else {
          // Stored already (a pruned revision pushed or pulled again, the replay rule letting it
          // through): its archive is back, in its place in the stored order.
          await this.#options.store.writeArchive(name, archive);
          delete record.pruned_at;
        }
        await this.#commit(index, bundle, actor, now);
      });
      return { outcome: 'activated', revision: bundle.revision, digest, bundle: await this.#status(name) };
    });
  }

  /**
   * Stores the embedded revision as the active one, as if pushed by `actor` now: it stays active,
   * from the store. Its signature is checked as a push's is (bundles.dir is trusted at start, a
   * push is not), and so is the replay rule: a deleted bundle's embedded revision serves beside
   * the mark the deletion kept, and stored as active it would take the mark's place, older or
   * not. Refused, nothing is stored, and it keeps serving from bundles.dir.
   */
  async #pinEmbedded(index: BundleIndex, embedded: PolicyBundle, actor: string): Promise<void> {
    let signature: Validated['signature'];
    try {
      signature = await this.#signatureOf(index.name, embedded.archive);
      checkReplay(index, embedded.revision, embedded.digest, signature);
    } catch (error) {
      // Counted and logged as any refused push is: a push refused here is one too.
      this.#logRejection(index.name, actor, error);
      throw error;
    }
    const now = new Date().toISOString();
    await this.#store(index, embedded, { stored_at: now, stored_by: actor }, signature);
    // Serving already: only where it is served from changes, so it is not activated again.
    const pruned = await this.#writeActive(index, embedded, actor, now);
    this.#activations.set(index.name, { ...index.active!, source: 'store' });
    await this.#deleteArchives(index, pruned);
  }

  /** Writes the archive of a revision that was never stored, and records it in `index` (not yet written). */
  async #store(index: BundleIndex, bundle: PolicyBundle, record: Pick<StoredRevision, 'stored_at' | 'stored_by' | 'activated_at'>, signature: Validated['signature']): Promise<void> {
    await this.#options.store.writeArchive(index.name, bundle.archive);
    const activated = record.activated_at !== undefined && { activation_seq: nextActivationSeq(index) };
    index.revisions.push({ revision: bundle.revision, digest: bundle.digest, ...record, ...activated, ...(signature && { signature }) });
  }

  /** An archive's signature verified as a push's is (undefined when unsigned and none is required). */
  async #signatureOf(name: string, archive: Uint8Array): Promise<Validated['signature']> {
    return this.#verifySignature(name, await readBundleArchive(archive, this.#options.archiveLimits));
  }

  /** Activates a stored revision: how an admin rolls back or forward, replay rule aside. */
  activate(name: string, revision: string, actor: string, { stillAuthorized }: ChangeOptions = {}): Promise<BundleStatus> {
    return this.#serialized(async () => {
      checkName(name);
      const index = await this.#options.store.readIndex(name);
      if (index === undefined || isDeleted(index)) throw new ArbiterError('bundle_not_found', `no stored revisions of bundle ${name}`);
      const entry = this.#storedRevision(index, name, revision);
      if (this.#options.registry.get(name)?.digest !== entry.digest) {
        const archive = await this.#options.store.readArchive(name, entry.digest);
        const { bundle } = await this.#validateLogged(name, archive, actor, { trusted: false, beforeLoad: ({ roots }) => this.#checkLiveDataRoots(name, roots) });
        await this.#releasedOnFailure(bundle, () => {
          checkStillAuthorized(stillAuthorized);
          return this.#commit(index, bundle, actor, new Date().toISOString());
        });
      }
      return this.#status(name);
    });
  }

  /**
   * Lends `use` a revision without activating it (decision replay): the active bundle when
   * it is that revision, else the stored archive, put through every check activation runs
   * and released from the evaluator afterwards unless it has become active meanwhile.
   */
  async withRevision<T>(name: string, revision: string, use: (bundle: PolicyBundle) => Promise<T>): Promise<T> {
    const active = this.#options.registry.get(name);
    if (active?.revision === revision) return use(active);
    const bundle = await this.#serialized(async () => {
      checkName(name);
      const entry = this.#storedRevision(await this.#options.store.readIndex(name), name, revision);
      const archive = await this.#options.store.readArchive(name, entry.digest);
      return (await this.#validate(name, archive, { trusted: false })).bundle;
    });
    try {
      return await use(bundle);
    } finally {
      this.#releaseUnlessActive(bundle);
    }
  }

  /** The index's record of `revision`, refused unless its archive is still stored. */
  #storedRevision(index: BundleIndex | undefined, name: string, revision: string): StoredRevision {
    // A deleted bundle's records are its replay mark, not revisions to serve (nor pruned by retention).
    const entry = index !== undefined && !isDeleted(index) ? index.revisions.find((r) => r.revision === revision) : undefined;
    if (entry === undefined) throw new ArbiterError('bundle_revision_not_found', `bundle ${name} has no stored revision ${JSON.stringify(revision)}`);
    if (entry.pruned_at !== undefined) {
      throw new ArbiterError(
        'bundle_revision_pruned',
        `revision ${JSON.stringify(revision)} of bundle ${name} was pruned at ${entry.pruned_at}: bundles.retention.max_revisions (${this.#options.maxRevisions}) keeps the revisions active most recently, and its archive is deleted. Push it again to serve it (a signed one older than the active revision rebuilt under a new revision)`,
      );
    }
    return entry;
  }

  /** Runs the steps that activate a validated candidate; if one fails, its loaded instances are freed. */
  async #releasedOnFailure(bundle: PolicyBundle, activate: () => Promise<void>): Promise<void> {
    try {
      await activate();
    } catch (error) {
      this.#releaseUnlessActive(bundle);
      throw error;
    }
  }

  #releaseUnlessActive(bundle: PolicyBundle): void {
    if (!this.#options.registry.list().some((b) => b.digest === bundle.digest)) this.#options.evaluator.release(bundle.digest);
  }

  /**
   * Deactivates a bundle and deletes its stored revisions. An embedded bundle comes back at the
   * next start. One with a signed revision stored keeps its index, every revision pruned and the
   * revision active now as the replay mark (`removed`): otherwise a DELETE would reset the replay
   * rule, and an older signed archive, perhaps one with a known flaw, could be pushed back. An
   * unsigned bundle has no replay rule to keep, and is forgotten.
   */
  remove(name: string, actor: string, { stillAuthorized }: ChangeOptions = {}): Promise<void> {
    return this.#serialized(async () => {
      checkName(name);
      if (this.#options.protectedBundles.has(name)) {
        throw new ArbiterError('bundle_in_use', `bundle ${name} is targeted by the configuration (bundles.default or authzen) and cannot be removed`);
      }
      const index = await this.#options.store.readIndex(name);
      const active = this.#options.registry.get(name);
      if ((index === undefined || isDeleted(index)) && active === undefined) throw new ArbiterError('bundle_not_found', `no bundle named ${name}`);
      checkStillAuthorized(stillAuthorized);
      const mark = index?.active ?? index?.removed;
      let leftover: string | undefined;
      if (index !== undefined && mark !== undefined && index.revisions.some((r) => r.signature !== undefined)) {
        await this.#keepReplayMark(index, mark, actor);
      } else {
        ({ leftover } = await this.#options.store.remove(name));
      }
      this.#options.registry.deactivate(name);
      this.#activations.delete(name);
      this.#options.logger.info({ bundle: name, revision: active?.revision, actor }, 'bundle removed');
      if (leftover !== undefined) this.#options.logger.warn({ bundle: name, leftover }, 'removed bundle files left behind');
    });
  }

  /**
   * Writes the index of a deleted bundle: nothing active, every revision pruned, `mark` (the
   * revision active until now) recorded with its signature's iat. Durable before any archive
   * is deleted, as retention's index is: a crash in between leaves archives nothing names,
   * deleted at the next start.
   */
  async #keepReplayMark(index: BundleIndex, mark: { revision: string; digest: string }, actor: string): Promise<void> {
    const now = new Date().toISOString();
    const iat = index.revisions.find((r) => r.digest === mark.digest)?.signature?.iat ?? index.removed?.iat;
    for (const revision of index.revisions) revision.pruned_at ??= now;
    // Bounded as retention's records are: the oldest forgotten first.
    index.revisions = index.revisions.slice(-MAX_PRUNED_RECORDS);
    index.active = null;
    index.removed = { removed_at: now, removed_by: actor, revision: mark.revision, digest: mark.digest, ...(iat !== undefined && { iat }) };
    await this.#options.store.writeIndex(index);
    try {
      await this.#options.store.deleteUnlisted(index.name, new Set());
    } catch (error) {
      this.#options.logger.error({ bundle: index.name, err: error }, 'archives of a removed bundle not deleted: the next start deletes them');
    }
  }

  status(name: string): Promise<BundleStatus | undefined> {
    return this.#serialized(async () => {
      const status = isBundleName(name) ? await this.#status(name) : undefined;
      return status && (status.active !== null || status.revisions.length > 0) ? status : undefined;
    });
  }

  list(): Promise<BundleStatus[]> {
    return this.#serialized(async () => {
      const names = new Set([...(await this.#options.store.names()), ...this.#options.registry.list().map((b) => b.name)]);
      // A deleted bundle's index (its replay mark) is no bundle.
      const statuses = await Promise.all([...names].sort().map((name) => this.#status(name)));
      return statuses.filter((status) => status.active !== null || status.revisions.length > 0);
    });
  }

  /**
   * At start: the active revision of each stored bundle, then `<name>.tar.gz` from the
   * embedded directory for names the store has nothing active for. A stored bundle that
   * fails (digest, signature, any check) is logged and not served, and its embedded
   * default does not stand in for it: serving an older policy silently is worse than none.
   * Nor does it for a name in `pulled` (bundles.sources): the source is its desired state, so
   * until it delivers, that name is not active rather than served from the image.
   */
  restore(embeddedDir: string, pulled: ReadonlySet<string> = new Set(), signal?: AbortSignal): Promise<void> {
    return this.#serialized(async () => {
      const claimed = new Set<string>();
      const indexes: BundleIndex[] = [];
      await this.#options.store.deleteRemoved();
      for (const name of await this.#options.store.names()) {
        signal?.throwIfAborted();
        try {
          const index = await this.#options.store.readIndex(name);
          if (index === undefined) {
            // What a crash during the first push of this name leaves: its archive written, its
            // index never. Nothing names it, so it goes, and the name with it.
            await this.#deleteArchives({ name, revisions: [], active: null }, []);
            await this.#options.store.removeIfEmpty(name);
            continue;
          }
          indexes.push(index);
          if (!index.active) continue;
          claimed.add(name);
          const { revision, digest, activated_at, activated_by } = index.active;
          const archive = await this.#options.store.readArchive(name, digest);
          const { bundle } = await this.#validate(name, archive, { trusted: false });
          this.#activateInRegistry(bundle, { revision, digest, activated_at, activated_by, source: 'store' });
        } catch (error) {
          // A check cut short because start-up stopped (the evaluator closed under it) refuses nothing.
          signal?.throwIfAborted();
          claimed.add(name);
          this.#options.observer?.bundleRejected(name, (error as ArbiterError).code ?? 'bundle_unreadable');
          this.#options.logger.error(
            { bundle: name, check: (error as ArbiterError).code ?? 'bundle_unreadable', err: error },
            'stored bundle refused: it is not served until a revision is activated or pushed',
          );
        }
      }
      // A lowered max_revisions takes effect now, and what a crash left behind goes.
      signal?.throwIfAborted();
      const now = new Date().toISOString();
      for (const index of indexes) await this.#prune(index, now);
      for (const [name, archive] of await readEmbedded(embeddedDir, this.#options.logger)) {
        signal?.throwIfAborted();
        if (claimed.has(name)) continue;
        if (pulled.has(name)) {
          this.#options.logger.info({ bundle: name, dir: embeddedDir }, 'embedded bundle not served: this name is pulled from its source (bundles.sources)');
          continue;
        }
        try {
          checkName(name);
          const { bundle } = await this.#validate(name, archive, { trusted: true });
          const activation = { revision: bundle.revision, digest: bundle.digest, activated_at: new Date().toISOString(), activated_by: EMBEDDED_ACTOR };
          this.#activateInRegistry(bundle, { ...activation, source: 'embedded' });
        } catch (error) {
          signal?.throwIfAborted();
          this.#options.observer?.bundleRejected(name, (error as ArbiterError).code ?? 'bundle_unreadable');
          this.#options.logger.error({ bundle: name, dir: embeddedDir, check: (error as ArbiterError).code ?? 'bundle_unreadable', err: error }, 'embedded bundle rejected');
        }
      }
    });
  }

  #serialized<T>(task: () => Promise<T>): Promise<T> {
    // A claim lasts as long as the change that made it: changes run one at a time.
    const run = this.#queue.then(task, task).finally(() => (this.#claim = undefined));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Makes `bundle` (stored in `index` already) the active revision, durably, then deletes the
   * archives retention no longer keeps. The index that activates it also marks them pruned: one
   * write, made before any archive is deleted.
   */
  async #commit(index: BundleIndex, bundle: PolicyBundle, actor: string, now: string): Promise<void> {
    const pruned = await this.#writeActive(index, bundle, actor, now);
    this.#activateInRegistry(bundle, { ...index.active!, source: 'store' });
    await this.#deleteArchives(index, pruned);
  }

  /** Makes `bundle` the index's active revision, marks what retention no longer keeps, and writes it. Returns the revisions marked. */
  async #writeActive(index: BundleIndex, bundle: PolicyBundle, actor: string, now: string): Promise<StoredRevision[]> {
    index.active = { revision: bundle.revision, digest: bundle.digest, activated_at: now, activated_by: actor };
    // The active revision is the replay mark from now on.
    delete index.removed;
    const entry = index.revisions.find((r) => r.digest === bundle.digest);
    if (entry !== undefined) {
      entry.activated_at = now;
      entry.activation_seq = nextActivationSeq(index);
    }
    const pruned = markPruned(index, this.#options.maxRevisions, now);
    await this.#options.store.writeIndex(index);
    return pruned;
  }

  /** Retention outside an activation (at start): marks, writes the index, then deletes. */
  async #prune(index: BundleIndex, now: string): Promise<void> {
    const pruned = markPruned(index, this.#options.maxRevisions, now);
    if (pruned.length > 0) {
      try {
        await this.#options.store.writeIndex(index);
      } catch (error) {
        // The index on disk still lists them as stored: their archives must stay.
        this.#options.logger.error({ bundle: index.name, err: error }, 'bundle revisions not pruned: the index cannot be written');
        return;
      }
    }
    await this.#deleteArchives(index, pruned);
  }

  /**
   * Deletes every archive of the bundle the index (durable by now) does not keep: those of
   * `pruned`, and any a crash left behind. Never throws: the activation it follows succeeded,
   * and an archive left here is deleted by the next prune.
   */
  async #deleteArchives(index: BundleIndex, pruned: StoredRevision[]): Promise<void> {
    const keep = new Set(index.revisions.filter((r) => r.pruned_at === undefined).map((r) => r.digest));
    if (index.active) keep.add(index.active.digest);
    let deleted: string[];
    try {
      deleted = await this.#options.store.deleteUnlisted(index.name, keep);
    } catch (error) {
      this.#options.logger.error({ bundle: index.name, err: error }, 'pruned bundle archives not deleted: the next activation or start tries again');
      return;
    }
    if (pruned.length > 0) {
      this.#options.logger.info(
        { bundle: index.name, max_revisions: this.#options.maxRevisions, pruned: pruned.map(({ revision, digest }) => ({ revision, digest })) },
        'bundle revisions pruned',
      );
    }
    const unlisted = deleted.filter((digest) => !pruned.some((r) => r.digest === digest));
    if (unlisted.length > 0) {
      this.#options.logger.warn({ bundle: index.name, digests: unlisted }, 'deleted bundle archives no stored revision names (left by an interrupted write or prune)');
    }
  }

  #activateInRegistry(bundle: PolicyBundle, activation: Activation): void {
    const previous = this.#options.registry.activate(bundle);
    this.#activations.set(bundle.name, activation);
    this.#options.observer?.bundleActivated(bundle.name);
    this.#options.logger.info(
      { bundle: bundle.name, revision: bundle.revision, digest: bundle.digest, previous_revision: previous?.revision, actor: activation.activated_by, source: activation.source },
      'bundle activated',
    );
  }

  async #status(name: string): Promise<BundleStatus> {
    const index = await this.#options.store.readIndex(name);
    const active = this.#options.registry.get(name) ? (this.#activations.get(name) ?? null) : null;
    // Pruned records serve the replay rule only: what can be activated is listed.
    return { name, active, revisions: (index?.revisions ?? []).filter((r) => r.pruned_at === undefined) };
  }

  async #validateLogged(name: string, archive: Uint8Array, actor: string, options: ValidateOptions): Promise<Validated> {
    try {
      return await this.#validate(name, archive, options);
    } catch (error) {
      this.#logRejection(name, actor, error);
      throw error;
    }
  }

  #logRejection(name: string, actor: string, error: unknown): void {
    if (error instanceof BundleRejectedError) {
      this.#options.observer?.bundleRejected(name, error.check);
      this.#options.logger.warn({ bundle: name, actor, check: error.check, reason: error.message }, 'bundle rejected');
    }
  }

  /**
   * Every check before a bundle may serve. The signature is verified before anything
   * instantiates the module; `trusted` (the embedded directory, part of the deployment
   * like the config file) skips only the signature. Checks that need no instance run before
   * the module is loaded, so a refused candidate never occupies an evaluator.
   */
  async #validate(name: string, archive: Uint8Array, { trusted, beforeLoad }: ValidateOptions): Promise<Validated> {
    const files = await readBundleArchive(archive, this.#options.archiveLimits);
    const signature = trusted ? undefined : await this.#verifySignature(name, files);
    const manifest = parseManifest(files);
    if (manifest.revision === '') {
      throw new BundleRejectedError('manifest_revision_missing', 'the bundle has no revision (opa build --revision): Arbiter stores and activates bundles by revision');
    }
    for (const other of this.#options.registry.list()) {
      if (other.name !== name && rootsOverlap(manifest.roots, other.manifest.roots)) {
        // The root "" is what opa build writes for a directory without a .manifest: the author never chose it.
        const whole = manifest.roots.includes('')
          ? `. The root "" is all of data, what opa build gives a bundle directory without a .manifest: write one, e.g. {"roots": [${JSON.stringify(name)}]}`
          : '';
        throw new BundleRejectedError('bundle_roots_overlap', `roots ${JSON.stringify(manifest.roots)} overlap the roots ${JSON.stringify(other.manifest.roots)} of active bundle ${other.name}${whole}`);
      }
    }
    beforeLoad?.(manifest, signature, files);
    const bundle = await loadBundle(name, archive, {
      evaluator: this.#options.evaluator,
      files,
      checkData: (data) => checkDataLimits(data, this.#options.dataLimits),
    });
    return { bundle, ...(signature && { signature }) };
  }

  async #verifySignature(name: string, files: BundleFiles): Promise<Validated['signature']> {
    const signed = isSignedBundle(files);
    if (!signed && !this.#options.requireSignatures) return undefined;
    if (!signed) throw new BundleRejectedError('signature_missing', `bundle has no ${SIGNATURES_FILE} and bundles.require_signatures is on`);
    const options = this.#options.verification(name);
    if (options === undefined) {
      throw new BundleRejectedError('signature_keys_missing', `bundle ${name} is signed but no verification key is configured for it (bundles.signing)`);
    }
    const { keyid } = await verifyBundleSignatures(files, options, { signal: this.#stopping.signal });
    const iat = signedIssuedAt(files);
    return { keyid, ...(typeof iat === 'number' && { iat }) };
  }
}

function checkStillAuthorized(stillAuthorized: (() => boolean) | undefined): void {
  if (stillAuthorized !== undefined && !stillAuthorized()) {
    throw new ArbiterError('admin_token_revoked', 'the admin token of this request was revoked before the change took effect: nothing was changed');
  }
}

function checkName(name: string): void {
  if (!isBundleName(name)) throw new ArbiterError('bundle_name_invalid', `${JSON.stringify(name)} is not a bundle name: 1-64 lowercase letters, digits, _ or -`);
}

/** An index kept only as a deleted bundle's replay mark (see BundleLifecycle.remove). */
function isDeleted(index: BundleIndex): boolean {
  return index.active === null && index.removed !== undefined;
}

function checkReplay(index: BundleIndex, revision: string, digest: string, signature: Validated['signature']): void {
  const sameRevision = index.revisions.find((r) => r.revision === revision);
  if (sameRevision !== undefined && sameRevision.digest !== digest) {
    throw new BundleRejectedError('bundle_revision_conflict', `revision ${JSON.stringify(revision)} of bundle ${index.name} is stored with another digest: give the new build a new revision`);
  }
  // What later revisions are held to: the active one, or the one active when the bundle was deleted.
  const mark = index.active ?? index.removed;
  const which = isDeleted(index) ? `the revision ${JSON.stringify(mark!.revision)} active when the bundle was deleted` : 'the active one';
  // The revision the store says is active (one that could not be restored, served again) is no step back.
  if (signature === undefined || digest === mark?.digest) return;
  const active = index.revisions.findIndex((r) => r.digest === mark?.digest);
  // Stored in the order first accepted: only a revision accepted before the active one is a step back.
  if (sameRevision !== undefined && !(active !== -1 && index.revisions.indexOf(sameRevision) >= active)) {
    // A pruned one cannot be activated either (410): say what does serve it.
    const next =
      sameRevision.pruned_at === undefined
        ? 'activate it explicitly by revision to roll back'
        : `its archive was pruned (bundles.retention.max_revisions, or the bundle was deleted), so it cannot be activated either: rebuild it under a new revision to serve it again`;
    throw new BundleRejectedError('bundle_replayed', `signed revision ${JSON.stringify(revision)} is stored already, older than ${which}: ${next}`);
  }
  const activeIat = index.revisions[active]?.signature?.iat ?? index.removed?.iat;
  if (activeIat !== undefined && !(signature.iat !== undefined && signature.iat > activeIat)) {
    throw new BundleRejectedError('bundle_replayed', `the signature's iat (${signature.iat ?? 'absent'}) is not newer than that of ${which} (${activeIat})`);
  }
}

/** The activation_seq of the bundle's next activation. */
function nextActivationSeq(index: BundleIndex): number {
  return index.revisions.reduce((last, r) => Math.max(last, r.activation_seq ?? 0), 0) + 1;
}

/**
 * Retention: marks `pruned_at` on every stored revision past the `max` active most recently
 * (the active one first whatever its time says, then by activation_seq, then, for revisions
 * activated before indexes had one, by last activation time, the later stored first on a tie),
 * and forgets the oldest pruned records past MAX_PRUNED_RECORDS. Returns the revisions it
 * marked, in stored order.
 */
export function markPruned(index: BundleIndex, max: number, now: string): StoredRevision[] {
  const lastActive = (r: StoredRevision) => r.activated_at ?? r.stored_at;
  const isActive = (r: StoredRevision) => r.digest === index.active?.digest;
  const stored = index.revisions.filter((r) => r.pruned_at === undefined);
  const kept = new Set(
    stored
      .map((revision, order) => ({ revision, order }))
      .sort(
        (a, b) =>
          Number(isActive(b.revision)) - Number(isActive(a.revision)) ||
          (b.revision.activation_seq ?? 0) - (a.revision.activation_seq ?? 0) ||
          compareText(lastActive(b.revision), lastActive(a.revision)) ||
          b.order - a.order,
      )
      .slice(0, max)
      .map(({ revision }) => revision),
  );
  const pruned = stored.filter((r) => !kept.has(r));
  for (const revision of pruned) revision.pruned_at = now;
  let forget = index.revisions.length - stored.length + pruned.length - MAX_PRUNED_RECORDS;
  if (forget > 0) index.revisions = index.revisions.filter((r) => r.pruned_at === undefined || forget-- <= 0);
  return pruned;
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The JWS `iat` of a signature that verified already, so its payload can be trusted; as signed, whatever its type. */
function signedIssuedAt(files: BundleFiles): unknown {
  const { signatures } = JSON.parse(Buffer.from(files.get(SIGNATURES_FILE)!).toString('utf8')) as { signatures: [string] };
  return (decodeJwt(signatures[0]) as { iat?: unknown }).iat;
}

/** How far ahead of this server's clock a signature's iat may be: the build machine's clock may run ahead. */
const ISSUED_AT_LEEWAY_S = 300;

/**
 * The replay rule orders signed revisions by `iat`, so an incoming one must be an iat it can
 * order by. One in milliseconds (`Date.now()` where `date +%s` was meant) would be accepted and
 * then make every later revision signed in seconds look older (bundle_replayed) for millennia;
 * one that is not a number (a quoted "1767225600") would turn the rule off for that revision
 * without a word. OPA refuses a bundle whose iat is not an integer as well.
 */
function checkIssuedAt(files: BundleFiles, now: number): void {
  const iat = signedIssuedAt(files);
  if (iat === undefined) return;
  if (typeof iat !== 'number' || !Number.isSafeInteger(iat) || iat < 0) {
    throw new BundleRejectedError('signature_iat_invalid', `the signature's iat ${JSON.stringify(iat)} is not a whole number of seconds since the epoch (opa build --claims-file with "iat": $(date +%s))`);
  }
  if (iat > now + ISSUED_AT_LEEWAY_S) {
    throw new BundleRejectedError(
      'signature_iat_future',
      `the signature's iat (${iat}) is ${Math.round(iat - now)} s ahead of this server's clock (at most ${ISSUED_AT_LEEWAY_S} s allowed): iat is in seconds since the epoch, not milliseconds`,
    );
  }
}

function checkDataLimits(data: Record<string, unknown>, limits: DataLimits): void {
  if (depthExceeds(data, limits.maxDepth)) {
    throw new BundleRejectedError('bundle_data_too_deep', `the bundle's data nests deeper than ${limits.maxDepth} levels`);
  }
  const bytes = Buffer.byteLength(JSON.stringify(data));
  if (bytes > limits.maxBytes) {
    throw new BundleRejectedError('bundle_data_too_large', `the bundle's data is ${bytes} bytes serialized, the limit is ${limits.maxBytes}`);
  }
}

/** Stops descending at the limit, so hostile nesting costs no more than `maxDepth` frames. */
function depthExceeds(value: unknown, maxDepth: number): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (maxDepth === 0) return true;
  return Object.values(value).some((child) => depthExceeds(child, maxDepth - 1));
}

/**
 * Stops start-up (ConfigError at bundles.dir) when the embedded directory cannot be listed: a
 * mistyped path would otherwise start a server with no bundle that is never ready. A bundle
 * in it that fails is only logged: the store's revisions may still serve.
 */
export function checkEmbeddedDirectory(dir: string): void {
  atConfigKey('bundles.dir', () => readdirSync(dir));
}

async function readEmbedded(dir: string, logger: Logger): Promise<[string, Uint8Array][]> {
  let files: string[];
  try {
    files = (await readdir(dir)).filter((file) => file.endsWith('.tar.gz')).sort();
  } catch (error) {
    logger.error({ dir, err: error }, 'bundle directory cannot be read');
    return [];
  }
  const bundles: [string, Uint8Array][] = [];
  for (const file of files) {
    try {
      bundles.push([file.slice(0, -'.tar.gz'.length), new Uint8Array(await readFile(join(dir, file)))]);
    } catch (error) {
      logger.error({ dir, file, err: error }, 'embedded bundle cannot be read');
    }
  }
  return bundles;
}
