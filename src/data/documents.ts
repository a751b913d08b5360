import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { z } from 'zod';
import { ArbiterError, FieldsInvalidError } from '../errors.ts';
import { formatDataPath } from './data-path.ts';
import type { DataPath } from './data-path.ts';
import { applyJsonPatch } from './json-patch.ts';
import { escapePointerToken, freezeJson, isJsonObject, ownMember, withMember, withoutMember } from './json-value.ts';
import type { JsonObject, JsonValue } from './json-value.ts';
import { transaction } from './persistence.ts';

/** The longest `source` of a document (Arbiter-Data-Source). */
export const MAX_SOURCE_LENGTH = 256;

/** Metadata a writer may attach to a top-level document, e.g. from `Arbiter-Data-*` headers. */
export const DocumentMetaInputSchema = z.strictObject({
  /** Who feeds this document (an HR sync, an approvals service), echoed to policy. */
  source: z.string().min(1).max(MAX_SOURCE_LENGTH).optional(),
  /** How old the document may get before policy sees it as stale. */
  max_age_s: z.number().int().positive().optional(),
});
export type DocumentMetaInput = z.infer<typeof DocumentMetaInputSchema>;

export const DocumentMetaSchema = DocumentMetaInputSchema.extend({
  /** Epoch milliseconds of the last committed write to any part of the document (a deletion inside it aside). */
  updated_at: z.number().int().nonnegative(),
});
export type DocumentMeta = z.infer<typeof DocumentMetaSchema>;

/** What policy sees as `input.data_status[name]`. */
export interface DocumentStatus {
  source: string | null;
  /** Epoch seconds. */
  updated_at: number;
  age_s: number;
  max_age_s?: number;
  /** True once the document is older than its `max_age_s` (or data.default_max_age_s); never true without either. */
  stale: boolean;
}

/** An immutable view of live data: a reader holding one never sees a later or partial update. */
export interface LiveDataSnapshot {
  readonly version: number;
  readonly data: JsonObject;
  readonly documents: Readonly<Record<string, DocumentMeta>>;
}

export interface LiveDataLimits {
  /** Keys from the data root to the deepest value (`data.a.b[0]` is 3). */
  maxDepth: number;
  /**
   * Sum of the serialized (UTF-8 JSON) sizes of all documents: a write that would grow it
   * past this is refused, and so is a JSON Patch adding more than this. Data already over
   * it (stored under a higher limit) is kept and can still shrink.
   */
  maxTotalBytes: number;
}

export const DEFAULT_LIVE_DATA_LIMITS: LiveDataLimits = { maxDepth: 32, maxTotalBytes: 64 * 1024 * 1024 };

export interface LiveDataOptions {
  /** The active bundle that owns the path (see `ownedByRoots`), if any; writes there fail with `data_path_owned_by_bundle`, naming it. */
  ownerOf?: (path: DataPath) => string | undefined;
  /**
   * The bundle being pushed, pulled or activated whose roots cover the path, if any: writes
   * there fail with `data_path_owned_by_bundle` too, as they will once it is active.
   */
  claimantOf?: (path: DataPath) => string | undefined;
  limits?: Partial<LiveDataLimits>;
  /** Epoch milliseconds; injectable so staleness can be tested without waiting. */
  now?: () => number;
  /**
   * Age in seconds past which a document written without its own max_age_s counts as stale
   * (data.default_max_age_s): a feed that stops writing then fails decisions closed instead of
   * serving its last state for ever. Undefined: such documents never go stale.
   */
  defaultMaxAgeS?: number | undefined;
  /** Receives an exception thrown by an `onChange` listener; the update itself is already committed. */
  onListenerError?: (error: unknown) => void;
  /**
   * Checks by document name, run on every put and patch of that document (a delete only
   * takes away, and must go through to remove someone's access).
   */
  checks?: ReadonlyMap<string, DocumentCheck>;
}

export type LiveDataListener = (snapshot: LiveDataSnapshot) => void;

/** One field of a live document that does not fit its schema, by JSON pointer into the document. */
export interface DocumentIssue {
  pointer: string;
  detail: string;
}

/** A check's findings in `document` as one line: each issue by pointer, then how many more there are. */
export function describeIssues(document: string, { issues, total }: { issues: readonly DocumentIssue[]; total: number }): string {
  const listed = issues.map(({ pointer, detail }) => `${document}${pointer}: ${detail}`).join('; ');
  return total > issues.length ? `${listed}; and ${total - issues.length} more` : listed;
}

/** A shape a live document must keep (the default policy's entitlements): writes that break it are refused. */
export interface DocumentCheck {
  /** The code of the error (a FieldsInvalidError) a refused write throws. */
  code: string;
  /**
   * What does not fit, by pointer into the document as it would be after the write; `total`
   * counts them all when `issues` lists only the first. `previous` is the document before it.
   */
  issues: (document: JsonValue, previous: JsonValue | undefined) => { issues: DocumentIssue[]; total: number };
}

interface StoredDocument {
  name: string;
  json: string;
  meta: string;
}

/**
 * Live data: the documents under `data` that no bundle owns (entitlements, approvals...).
 * Every write validates first, commits to SQLite, then swaps in a new snapshot with a
 * single assignment, so a failed write changes nothing and readers never see half of one.
 * Writes are synchronous and return only after the commit is durable.
 */
export class LiveData {
  readonly #db: DatabaseSync;
  readonly #ownerOf: (path: DataPath) => string | undefined;
  readonly #claimantOf: (path: DataPath) => string | undefined;
  readonly #limits: LiveDataLimits;
  readonly #defaultMaxAgeS: number | undefined;
  readonly #now: () => number;
  readonly #onListenerError: (error: unknown) => void;
  readonly #checks: ReadonlyMap<string, DocumentCheck>;
  readonly #listeners = new Set<LiveDataListener>();
  readonly #statements: { upsert: StatementSync; delete: StatementSync; setVersion: StatementSync };
  #snapshot: LiveDataSnapshot;
  /** Serialized bytes per document, so the total-size check costs one document, not all data. */
  readonly #sizes = new Map<string, number>();
  #totalBytes = 0;

  constructor(db: DatabaseSync, options: LiveDataOptions = {}) {
    this.#db = db;
    this.#ownerOf = options.ownerOf ?? (() => undefined);
    this.#claimantOf = options.claimantOf ?? (() => undefined);
    this.#limits = parseLimits(options.limits);
    this.#defaultMaxAgeS = options.defaultMaxAgeS;
    this.#now = options.now ?? Date.now;
    this.#onListenerError = options.onListenerError ?? rethrowLater;
    this.#checks = options.checks ?? new Map();
    this.#statements = {
      upsert: db.prepare(
        `INSERT INTO live_documents (name, json, meta, version) VALUES (?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET json = excluded.json, meta = excluded.meta, version = excluded.version`,
      ),
      delete: db.prepare('DELETE FROM live_documents WHERE name = ?'),
      setVersion: db.prepare(
        'INSERT INTO live_data_version (id, version) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET version = excluded.version',
      ),
    };
    this.#snapshot = this.#load();
  }

  /** The current snapshot; hold on to it for a consistent read across several lookups. */
  snapshot(): LiveDataSnapshot {
    return this.#snapshot;
  }

  /** Whether data.seed has loaded this document before (it may have been deleted since). */
  wasSeeded(name: string): boolean {
    return this.#db.prepare('SELECT 1 FROM seeded_documents WHERE name = ?').get(name) !== undefined;
  }

  /** Notes that data.seed has loaded this document (or found it written): it is never seeded again. */
  markSeeded(name: string): void {
    this.#db.prepare('INSERT OR IGNORE INTO seeded_documents (name) VALUES (?)').run(name);
  }

  /** The value at `path` (the empty path is all live data), or undefined when nothing is there. */
  get(path: DataPath): JsonValue | undefined {
    return getIn(this.#snapshot.data, path);
  }

  /** Creates or replaces the value at `path`, creating missing parent objects. */
  put(path: DataPath, value: unknown, meta?: DocumentMetaInput): LiveDataSnapshot {
    const [name, rest] = this.#writable(path);
    const frozen = freezeJson(value, { maxDepth: this.#limits.maxDepth, depthOffset: path.length, where: formatDataPath(path), bodyPointer: '' });
    const document = putIn(ownMember(this.#snapshot.data, name), rest, frozen, path);
    this.#check(name, rest, document);
    return this.#write(name, document, meta);
  }

  /** Applies an RFC 6902 patch to the existing value at `path`, all or nothing. */
  patch(path: DataPath, operations: unknown, meta?: DocumentMetaInput): LiveDataSnapshot {
    const [name, rest] = this.#writable(path);
    const target = getIn(this.#snapshot.data, path);
    if (target === undefined) throw new ArbiterError('data_not_found', `no live data at ${formatDataPath(path)}`);
    const patched = applyJsonPatch(target, operations, {
      maxDepth: this.#limits.maxDepth,
      depthOffset: path.length,
      maxAddedBytes: this.#limits.maxTotalBytes,
    });
    const document = putIn(ownMember(this.#snapshot.data, name), rest, patched, path);
    this.#check(name, rest, document);
    return this.#write(name, document, meta);
  }

  /**
   * Removes the value at `path`; removing a whole document also drops its metadata. Live data
   * in or above a bundle's roots goes too: policies read the bundle's data there, not it, and a
   * push told to delete such a document first must be able to (one written beside a nested root,
   * `shared/other` beside `shared/policy`, or one a bundle from bundles.dir covered at start).
   */
  delete(path: DataPath): LiveDataSnapshot {
    const [name, rest] = getIn(this.#snapshot.data, path) === undefined ? this.#writable(path) : this.#named(path);
    const document = ownMember(this.#snapshot.data, name);
    if (document === undefined) throw new ArbiterError('data_not_found', `no live data at ${formatDataPath(path)}`);
    // Not a refresh: a deletion inside a document that went stale (its feed stopped) says nothing
    // of what is left, and must not serve those grants as fresh for another max age.
    return this.#write(name, rest.length === 0 ? undefined : deleteIn(document, rest, path), undefined, { refresh: false });
  }

  /** Freshness of every document at `nowMs`, the shape of `input.data_status`. */
  status(nowMs: number): Record<string, DocumentStatus> {
    return Object.fromEntries(
      Object.entries(this.#snapshot.documents).map(([name, meta]) => {
        const ageMs = Math.max(0, nowMs - meta.updated_at);
        const maxAgeS = meta.max_age_s ?? this.#defaultMaxAgeS;
        const status: DocumentStatus = {
          source: meta.source ?? null,
          updated_at: Math.floor(meta.updated_at / 1000),
          age_s: Math.floor(ageMs / 1000),
          stale: maxAgeS !== undefined && ageMs > maxAgeS * 1000,
        };
        if (maxAgeS !== undefined) status.max_age_s = maxAgeS;
        return [name, status];
      }),
    );
  }

  /** Calls `listener` with each new snapshot after it is committed and visible. Returns an unsubscribe function. */
  onChange(listener: LiveDataListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The document a write names and the keys below it; refused at the root or with an empty key. */
  #named(path: DataPath): [name: string, rest: DataPath] {
    const [name, ...rest] = path;
    if (name === undefined) throw new ArbiterError('data_path_invalid', 'live data cannot be written at the root; name a document');
    if (path.some((key) => key === '')) throw new ArbiterError('data_path_invalid', `${formatDataPath(path)} has an empty key`);
    return [name, rest];
  }

  /** As #named, and refused in or above the roots of an active bundle or of one being activated. */
  #writable(path: DataPath): [name: string, rest: DataPath] {
    const named = this.#named(path);
    const owner = this.#ownerOf(path);
    if (owner !== undefined) {
      throw new ArbiterError('data_path_owned_by_bundle', `${formatDataPath(path)} belongs to active bundle ${owner} (inside or above one of its roots) and is read-only`);
    }
    const claimant = this.#claimantOf(path);
    if (claimant !== undefined) {
      throw new ArbiterError('data_path_owned_by_bundle', `${formatDataPath(path)} is inside or above the roots of bundle ${claimant}, which is being activated, and is read-only: retry once its push or activation has answered`);
    }
    return named;
  }

  /**
   * Refuses a write that leaves a checked document out of shape. Pointers are into the value
   * the request names (a PUT's body; for a PATCH, what its operations' paths address): an issue
   * above it, in a parent the write created, is the body's ("") and its detail says where.
   */
  #check(name: string, rest: DataPath, document: JsonValue): void {
    const check = this.#checks.get(name);
    if (check === undefined) return;
    const { issues, total } = check.issues(document, ownMember(this.#snapshot.data, name));
    if (total === 0) return;
    const base = rest.map((key) => `/${escapePointerToken(key)}`).join('');
    const errors = issues.map(({ pointer, detail }) =>
      pointer === base || pointer.startsWith(`${base}/`)
        ? { pointer: pointer.slice(base.length), detail }
        : { pointer: '', detail: `${name}${pointer}: ${detail}` },
    );
    throw new FieldsInvalidError(check.code, describeIssues(name, { issues, total }), errors, total - issues.length);
  }

  /**
   * Commits the new state of one document (undefined: deleted), then publishes the new snapshot.
   * `refresh` false keeps the document's updated_at (a deletion inside it).
   */
  #write(name: string, document: JsonValue | undefined, metaInput?: DocumentMetaInput, { refresh = true } = {}): LiveDataSnapshot {
    const previous = this.#snapshot;
    const meta = document === undefined ? undefined : this.#nextMeta(previous.documents[name], metaInput, refresh);
    const json = document === undefined ? undefined : this.#serialize(document);
    const bytes = json === undefined ? 0 : Buffer.byteLength(json);
    const totalBytes = this.#totalBytes - (this.#sizes.get(name) ?? 0) + bytes;
    // Only growth is refused: data stored under a higher limit stays (see #load), and a
    // write that shrinks it, such as removing someone's access, must still go through.
    if (totalBytes > this.#limits.maxTotalBytes && totalBytes > this.#totalBytes) {
      const reason = `live data would grow from ${this.#totalBytes} to ${totalBytes} bytes, over the limit of ${this.#limits.maxTotalBytes}`;
      // The write as a whole is at fault: the body ("") of a PUT or PATCH.
      throw new FieldsInvalidError('data_too_large', reason, [{ pointer: '', detail: reason }]);
    }
    const version = previous.version + 1;

    try {
      transaction(this.#db, () => {
        if (json === undefined) this.#statements.delete.run(name);
        else this.#statements.upsert.run(name, json, JSON.stringify(meta), version);
        this.#statements.setVersion.run(version);
      });
    } catch (error) {
      // Rolled back: the snapshot below is not published, so nothing changed anywhere.
      throw new ArbiterError('data_store_write_failed', `live data was not stored: ${(error as Error).message}`, { cause: error });
    }

    const next: LiveDataSnapshot = Object.freeze({
      version,
      data: document === undefined ? withoutMember(previous.data, name) : withMember(previous.data, name, document),
      documents: Object.freeze(
        meta === undefined ? omit(previous.documents, name) : { ...previous.documents, [name]: meta },
      ),
    });
    this.#snapshot = next;
    if (json === undefined) this.#sizes.delete(name);
    else this.#sizes.set(name, bytes);
    this.#totalBytes = totalBytes;
    this.#notify(next);
    return next;
  }

  #serialize(document: JsonValue): string {
    try {
      return JSON.stringify(document);
    } catch (error) {
      // V8 cannot build a string this long: a size problem of the request, not a server fault.
      if (!(error instanceof RangeError)) throw error;
      const reason = `live data is too large to serialize, over the limit of ${this.#limits.maxTotalBytes} bytes`;
      throw new FieldsInvalidError('data_too_large', reason, [{ pointer: '', detail: reason }]);
    }
  }

  #nextMeta(previous: DocumentMeta | undefined, input: DocumentMetaInput | undefined, refresh: boolean): DocumentMeta {
    const parsed = DocumentMetaInputSchema.safeParse(input ?? {});
    if (!parsed.success) {
      throw new ArbiterError('data_meta_invalid', parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
    }
    // Source and max age stick until a writer changes them, so a patch need not repeat them.
    const source = parsed.data.source ?? previous?.source;
    const maxAge = parsed.data.max_age_s ?? previous?.max_age_s;
    return Object.freeze({
      ...(source === undefined ? {} : { source }),
      ...(maxAge === undefined ? {} : { max_age_s: maxAge }),
      updated_at: refresh || previous === undefined ? this.#now() : previous.updated_at,
    });
  }

  #notify(snapshot: LiveDataSnapshot): void {
    for (const listener of this.#listeners) {
      try {
        listener(snapshot);
      } catch (error) {
        this.#onListenerError(error);
      }
    }
  }

  #load(): LiveDataSnapshot {
    const rows = this.#db.prepare('SELECT name, json, meta FROM live_documents ORDER BY name').all() as unknown as StoredDocument[];
    const data: Record<string, JsonValue> = {};
    const documents: Record<string, DocumentMeta> = {};
    for (const row of rows) {
      // Stored data was valid when written; limits lowered since must not drop it on restart.
      const value = readStored(row.name, 'document', () => freezeJson(JSON.parse(row.json), { maxDepth: Infinity, depthOffset: 1, where: row.name }));
      Object.defineProperty(data, row.name, { value, enumerable: true, writable: true, configurable: true });
      const meta = readStored(row.name, 'metadata', () => Object.freeze(DocumentMetaSchema.parse(JSON.parse(row.meta))));
      Object.defineProperty(documents, row.name, { value: meta, enumerable: true, writable: true, configurable: true });
      const bytes = Buffer.byteLength(row.json);
      this.#sizes.set(row.name, bytes);
      this.#totalBytes += bytes;
    }
    const stored = this.#db.prepare('SELECT version FROM live_data_version WHERE id = 1').get() as { version: number } | undefined;
    return Object.freeze({ version: stored?.version ?? 0, data: Object.freeze(data), documents: Object.freeze(documents) });
  }
}

/**
 * Reads one column of a stored document. Arbiter stores only what it validated, so a value
 * that no longer reads was changed outside it (edited by hand, a damaged copy): thrown as
 * `data_store_damaged` naming the document and what is wrong, for start-up to report against
 * data.path, rather than a bare SyntaxError or ZodError that names neither.
 */
function readStored<T>(document: string, column: 'document' | 'metadata', read: () => T): T {
  try {
    return read();
  } catch (error) {
    const why =
      error instanceof SyntaxError
        ? `does not parse as JSON (${error.message})`
        : error instanceof z.ZodError
          ? `is not document metadata (${error.issues.map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`).join('; ')})`
          : `is not live data (${(error as Error).message})`;
    throw new ArbiterError('data_store_damaged', `live document ${JSON.stringify(document)} was changed outside Arbiter: its stored ${column} ${why}`, { cause: error });
  }
}

function parseLimits(limits: Partial<LiveDataLimits> = {}): LiveDataLimits {
  const merged = { ...DEFAULT_LIVE_DATA_LIMITS, ...limits };
  for (const [key, value] of Object.entries(merged)) {
    if (!Number.isSafeInteger(value) || value <= 0) throw new TypeError(`live data limit ${key} must be a positive integer, got ${value}`);
  }
  return merged;
}

function getIn(root: JsonObject, path: DataPath): JsonValue | undefined {
  let current: JsonValue | undefined = root;
  for (const key of path) {
    if (!isJsonObject(current)) return undefined;
    current = ownMember(current, key);
  }
  return current;
}

/** Copy-on-write set: copies only the objects along `rest`, sharing every other subtree. */
function putIn(node: JsonValue | undefined, rest: DataPath, value: JsonValue, path: DataPath): JsonValue {
  const [key, ...deeper] = rest;
  if (key === undefined) return value;
  const parent = node ?? Object.freeze({});
  if (!isJsonObject(parent)) {
    throw new ArbiterError('data_path_conflict', `${formatDataPath(path)} goes through a value that is not an object`);
  }
  return withMember(parent, key, putIn(ownMember(parent, key), deeper, value, path));
}

function deleteIn(node: JsonValue, rest: DataPath, path: DataPath): JsonValue {
  const [key, ...deeper] = rest as [string, ...string[]];
  const child = isJsonObject(node) ? ownMember(node, key) : undefined;
  if (child === undefined) throw new ArbiterError('data_not_found', `no live data at ${formatDataPath(path)}`);
  const parent = node as JsonObject;
  return deeper.length === 0 ? withoutMember(parent, key) : withMember(parent, key, deleteIn(child, deeper, path));
}

function omit<T>(record: Readonly<Record<string, T>>, key: string): Record<string, T> {
  const copy = { ...record };
  delete copy[key];
  return copy;
}

function rethrowLater(error: unknown): void {
  // Surfaces as an uncaught exception instead of failing a write that already committed.
  queueMicrotask(() => {
    throw error;
  });
}
