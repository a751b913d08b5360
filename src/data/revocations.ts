import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { MAX_CLOCK_TOLERANCE_S } from '../config/schema.ts';
import { mintAfter, uuidv7 } from '../ids.ts';
import { ArbiterError, FieldsInvalidError, listReasons } from '../errors.ts';
import { formatJsonPointer } from './json-pointer.ts';
import { RevocationIndex, isExpired, revocationIdentity } from './revocation-index.ts';
import type { RevocationMatch } from './revocation-index.ts';
import { REVOCATION_KINDS, RevocationInputSchema } from './revocation-schema.ts';
import type { Revocation, RevocationKind, RevokedTokenClaims } from './revocation-schema.ts';
import { transaction } from './persistence.ts';

export type { RevocationMatch } from './revocation-index.ts';

export interface RevocationsOptions {
  /** Epoch milliseconds; injectable so expiry can be tested without waiting. */
  now?: () => number;
  /**
   * The largest clock tolerance (seconds) of any issuer whose tokens are checked against
   * revocations, default 0. Such a token still verifies until `exp` plus that tolerance,
   * so every entry keeps applying, and is kept, that long past its `expires_at`.
   */
  clockToleranceS?: number;
  /**
   * The issuers whose tokens are checked against revocations (decision and admin issuers, the dev
   * issuer when trusted). Given, an add of an `issued_before`, `jti` or `sid` entry scoped to another
   * `iss` is refused: those match only a verified token's own iss, so it would never apply (a
   * trailing slash typed during an incident). `sub` and `client_id` are not checked: they also
   * name actors under the issuer that identifies them, which need not be configured (RFC 8693
   * §4.1). Stored entries are loaded whatever their iss: see `ofOtherIssuers`.
   */
  issuers?: readonly string[];
}

/** Kinds that match only a verified token's own `iss` (RevocationIndex.match). */
const TOKEN_ISSUER_KINDS: readonly RevocationKind[] = ['issued_before', 'jti', 'sid'];

export interface ListRevocationsOptions {
  kind?: RevocationKind;
  /** 1 to 1000, default 100. */
  limit?: number;
  /** `next_cursor` of the previous page. */
  cursor?: string;
}

export interface RevocationPage {
  items: Revocation[];
  /** Pass as `cursor` for the next page; null on the last page. */
  next_cursor: string | null;
}

/** What an add answers: each entry asked for (the one in force when it restates one), and how many are new. */
export interface AddedRevocations {
  entries: Revocation[];
  created: number;
}

interface PendingWrite {
  entries: Revocation[];
  promise: Promise<Revocation[]>;
  resolve: (entries: Revocation[]) => void;
  reject: (error: unknown) => void;
}

/** What is wrong with one field of an entry: `reason` for the message, `pointer` and `detail` for the problem's `errors`. */
interface EntryProblem {
  reason: string;
  pointer: string;
  detail: string;
}

interface RevocationRow {
  id: string;
  kind: RevocationKind;
  value: string | null;
  iss: string | null;
  before: number | null;
  reason: string;
  created_at: number;
  expires_at: number | null;
  created_by: string | null;
}

const MAX_PAGE = 1000;

/**
 * Revoked tokens, sessions, subjects and clients. A revocation takes effect when its
 * `add` resolves, which is after its row is durably committed, so a restart never
 * brings a revoked token back. Adds arriving in the same event-loop turn share one
 * transaction (group commit): one fsync for many revocations.
 */
export class Revocations {
  readonly #db: DatabaseSync;
  readonly #now: () => number;
  readonly #clockToleranceS: number;
  readonly #issuers: ReadonlySet<string> | undefined;
  readonly #index: RevocationIndex;
  readonly #statements: { insert: StatementSync; raiseLastId: StatementSync; delete: StatementSync; lapsed: StatementSync; prune: StatementSync; list: StatementSync };
  #pending: PendingWrite[] = [];
  /** The entries of #pending by revocationIdentity, so an identical add joins their write. */
  #pendingByIdentity = new Map<string, { entry: Revocation; write: PendingWrite }>();
  #flushScheduled = false;

  constructor(db: DatabaseSync, options: RevocationsOptions = {}) {
    this.#db = db;
    this.#now = options.now ?? Date.now;
    this.#clockToleranceS = options.clockToleranceS ?? 0;
    if (!Number.isSafeInteger(this.#clockToleranceS) || this.#clockToleranceS < 0) {
      throw new TypeError(`clockToleranceS must be a non-negative integer, got ${this.#clockToleranceS}`);
    }
    this.#issuers = options.issuers && new Set(options.issuers);
    this.#index = new RevocationIndex(this.#clockToleranceS);
    this.#statements = {
      insert: db.prepare(
        `INSERT INTO revocations (id, kind, value, iss, before, reason, created_at, expires_at, created_by)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      raiseLastId: db.prepare('INSERT INTO revocation_ids (id, last) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET last = max(last, excluded.last)'),
      delete: db.prepare('DELETE FROM revocations WHERE id = ?'),
      lapsed: db.prepare('SELECT id FROM revocations WHERE expires_at <= ?'),
      prune: db.prepare('DELETE FROM revocations WHERE expires_at <= ?'),
      list: db.prepare(
        `SELECT * FROM revocations
         WHERE id > ? AND (? IS NULL OR kind = ?) AND (expires_at IS NULL OR expires_at > ?)
         ORDER BY id LIMIT ?`,
      ),
    };
    // Lists page by id: a clock behind the previous run's must not mint ids before its ones.
    const { last } = db.prepare('SELECT max(last) AS last FROM (SELECT last FROM revocation_ids UNION ALL SELECT max(id) FROM revocations)').get() as { last: string | null };
    if (last !== null) mintAfter(last);
    const rows = db.prepare('SELECT * FROM revocations WHERE expires_at IS NULL OR expires_at > ?').all(this.#lapsedUpTo(this.#nowS()));
    for (const row of rows as unknown as RevocationRow[]) this.#index.add(fromRow(row));
  }

  /** Active revocations held in memory. */
  get size(): number {
    return this.#index.size;
  }

  /**
   * Validates, commits and activates one revocation. Throws `revocation_invalid` before anything
   * is written, a FieldsInvalidError naming each bad field by pointer into the request body, also
   * an `expires_at` already past (clock tolerance included). One identical to a revocation in
   * force or being committed (`sameRevocation`: its reason aside) resolves to that one, once it is
   * committed, and adds nothing: a feed replaying revocations leaves no twin under another id.
   */
  async add(input: unknown): Promise<Revocation> {
    return (await this.submit(input)).entries[0]!;
  }

  /**
   * All or nothing: invalid entries reject the whole batch, which commits in one transaction.
   * The FieldsInvalidError names every invalid entry, so a batch is fixed in one round. Entries
   * identical to one in force, being committed or earlier in the batch resolve to that one, as in `add`.
   */
  async addMany(inputs: readonly unknown[]): Promise<Revocation[]> {
    return (await this.submitMany(inputs)).entries;
  }

  /** `add`, also saying whether the entry is new (`created` 1) or restates one (0). */
  submit(input: unknown): Promise<AddedRevocations> {
    return this.#submit([input], () => ({ where: 'revocation', pointer: '' }));
  }

  /** `addMany`, also saying how many of the entries are new. */
  submitMany(inputs: readonly unknown[]): Promise<AddedRevocations> {
    if (!Array.isArray(inputs)) return Promise.reject(new ArbiterError('revocation_invalid', 'revocations must be an array'));
    return this.#submit(inputs, (i) => ({ where: `revocations[${i}]`, pointer: `/revocations/${i}` }));
  }

  /** Commits pending adds now instead of at the end of this event-loop turn (e.g. before closing the database). */
  flush(): void {
    const batch = this.#pending;
    this.#pending = [];
    this.#pendingByIdentity.clear();
    if (batch.length === 0) return;
    try {
      transaction(this.#db, () => {
        let last = '';
        for (const { entries } of batch) {
          for (const entry of entries) {
            this.#statements.insert.run(...toRow(entry));
            if (entry.id > last) last = entry.id;
          }
        }
        if (last !== '') this.#statements.raiseLastId.run(last);
      });
    } catch (error) {
      const failure = new ArbiterError('data_store_write_failed', `revocations were not stored: ${(error as Error).message}`, { cause: error });
      for (const write of batch) write.reject(failure);
      return;
    }
    for (const write of batch) {
      for (const entry of write.entries) this.#index.add(entry);
      write.resolve(write.entries);
    }
  }

  /** The active revocation with this id, if any. */
  get(id: string): Revocation | undefined {
    const entry = this.#index.get(id);
    return entry === undefined || isExpired(entry, this.#nowS(), this.#clockToleranceS) ? undefined : entry;
  }

  /** Active revocations in creation (UUIDv7) order, optionally of one kind. */
  list(options: ListRevocationsOptions = {}): RevocationPage {
    const { kind, limit = 100, cursor = '' } = options;
    if (kind !== undefined && !REVOCATION_KINDS.includes(kind)) {
      throw new ArbiterError('revocation_invalid', `kind must be one of ${REVOCATION_KINDS.join(', ')}`);
    }
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) {
      throw new ArbiterError('revocation_invalid', `limit must be an integer from 1 to ${MAX_PAGE}`);
    }
    const rows = this.#statements.list.all(cursor, kind ?? null, kind ?? null, this.#lapsedUpTo(this.#nowS()), limit + 1) as unknown as RevocationRow[];
    const items = rows.slice(0, limit).map(fromRow);
    return { items, next_cursor: rows.length > limit ? items.at(-1)!.id : null };
  }

  /**
   * Deletes a revocation (committed before returning); false when no active one has this id, as
   * `get` says (a row kept past its expiry for a restart's sake is deleted all the same).
   * Throws `data_store_write_failed` when the deletion cannot be stored: the entry then still applies.
   */
  remove(id: string): boolean {
    const active = this.get(id) !== undefined;
    try {
      this.#statements.delete.run(id);
    } catch (error) {
      throw new ArbiterError('data_store_write_failed', `the revocation was not deleted: ${(error as Error).message}`, { cause: error });
    }
    this.#index.remove(id);
    return active;
  }

  /** Whether any active revocation applies to the token: a few hash lookups, whatever the number of revocations. */
  check(token: RevokedTokenClaims, nowS: number): RevocationMatch {
    return this.#index.match(token, nowS);
  }

  /** Whether a `sub` or `client_id` revocation applies to a party other than the holder (an actor). */
  checkParty(party: { iss: string; sub?: string | undefined; client_id?: string | undefined }, nowS: number): RevocationMatch {
    return this.#index.matchParty(party, nowS);
  }

  /** Whether a `sub` or `client_id` revocation under any issuer applies to a party known by name only. */
  checkPartyAnyIssuer(party: { sub?: string | undefined; client_id?: string | undefined }, nowS: number): RevocationMatch {
    return this.#index.matchPartyAnyIssuer(party, nowS);
  }

  /**
   * Active entries that can never apply as the configuration stands: `issued_before`, `jti` and
   * `sid` entries scoped to an issuer not among `issuers` (removed from the configuration since, or
   * stored before issuers were checked), counted by issuer and kind. They are kept, not dropped:
   * they apply again if that issuer comes back.
   */
  ofOtherIssuers(): { iss: string; kinds: Partial<Record<RevocationKind, number>> }[] {
    if (this.#issuers === undefined) return [];
    const rows = this.#db
      .prepare(
        `SELECT iss, kind, count(*) AS count FROM revocations
         WHERE iss IS NOT NULL AND kind IN (${TOKEN_ISSUER_KINDS.map(() => '?').join(', ')}) AND (expires_at IS NULL OR expires_at > ?)
         GROUP BY iss, kind ORDER BY iss, kind`,
      )
      .all(...TOKEN_ISSUER_KINDS, this.#lapsedUpTo(this.#nowS())) as unknown as { iss: string; kind: RevocationKind; count: number }[];
    const byIssuer = new Map<string, Partial<Record<RevocationKind, number>>>();
    for (const { iss, kind, count } of rows) {
      if (this.#issuers.has(iss)) continue;
      let kinds = byIssuer.get(iss);
      if (kinds === undefined) byIssuer.set(iss, (kinds = {}));
      kinds[kind] = count;
    }
    return [...byIssuer].map(([iss, kinds]) => ({ iss, kinds }));
  }

  /**
   * Drops from memory every revocation expired at `nowS` (clock tolerance included); call
   * periodically. Their rows are deleted only once no configuration could accept the token any
   * more (MAX_CLOCK_TOLERANCE_S past expires_at): a restart with a larger clock_tolerance_s, or a
   * new issuer, would otherwise accept again, until exp plus that tolerance, a token whose
   * revocation is gone. Returns how many rows it deleted.
   */
  prune(nowS: number): number {
    for (const { id } of this.#statements.lapsed.all(this.#lapsedUpTo(nowS)) as unknown as { id: string }[]) this.#index.remove(id);
    const { changes } = this.#statements.prune.run(nowS - Math.max(MAX_CLOCK_TOLERANCE_S, this.#clockToleranceS));
    return Number(changes);
  }

  /**
   * Commits the new entries of `inputs` and resolves once every entry answered is committed (one
   * restating a pending write waits for that write, and fails with it). Rejects with a
   * `revocation_invalid` FieldsInvalidError naming what is wrong with every invalid entry, nothing
   * written: `name(i)` gives the entry's name in messages (`where`) and its JSON pointer in the body
   * of POST /v1/revocations (single or batch).
   */
  async #submit(inputs: readonly unknown[], name: (index: number) => { where: string; pointer: string }): Promise<AddedRevocations> {
    const nowS = this.#nowS();
    const entries: Revocation[] = [];
    const fresh = new Map<string, Revocation>();
    const joined = new Set<PendingWrite>();
    const problems: EntryProblem[] = [];
    for (const [index, input] of inputs.entries()) {
      const created = this.#create(input, name(index), nowS);
      if (Array.isArray(created)) {
        problems.push(...created);
        continue;
      }
      const identity = revocationIdentity(created);
      const pending = this.#pendingByIdentity.get(identity);
      if (pending !== undefined) joined.add(pending.write);
      const entry = this.#index.findSame(created, nowS) ?? pending?.entry ?? fresh.get(identity);
      if (entry === undefined) fresh.set(identity, created);
      entries.push(entry ?? created);
    }
    if (problems.length > 0) {
      throw new FieldsInvalidError('revocation_invalid', listReasons(problems.map((p) => p.reason)), problems.map(({ pointer, detail }) => ({ pointer, detail })));
    }
    const writes = [...joined].map((write) => write.promise);
    if (fresh.size > 0) writes.push(this.#enqueue([...fresh.values()], fresh));
    await Promise.all(writes);
    return { entries, created: fresh.size };
  }

  /** The entry, or what is wrong with it. */
  #create(input: unknown, { where, pointer }: { where: string; pointer: string }, nowS: number): Revocation | EntryProblem[] {
    const parsed = RevocationInputSchema.safeParse(input);
    if (!parsed.success) {
      return parsed.error.issues.flatMap((issue) => {
        const fields = issue.code === 'unrecognized_keys' ? issue.keys.map((key) => [...issue.path, key]) : [issue.path];
        return fields.map((path) => ({
          reason: `${[where, ...path].join('.')}: ${issue.message}`,
          pointer: pointer + formatJsonPointer(path),
          detail: issue.message,
        }));
      });
    }
    const entry = Object.freeze({ ...parsed.data, id: uuidv7(), created_at: nowS });
    // Accepting it would answer 201 for a revocation that never applies: a TTL written where a
    // time belongs would leave the token working while its administrator believes it revoked.
    if (isExpired(entry, nowS, this.#clockToleranceS)) {
      const detail = `${entry.expires_at} has passed (now ${nowS}, clock tolerance ${this.#clockToleranceS} s), so the revocation would never apply; give a later time in epoch seconds, or omit expires_at to revoke until removed`;
      return [{ reason: `${where}.expires_at: ${detail}`, pointer: `${pointer}/expires_at`, detail }];
    }
    if (this.#issuers !== undefined && entry.iss !== undefined && TOKEN_ISSUER_KINDS.includes(entry.kind) && !this.#issuers.has(entry.iss)) {
      const detail = `${JSON.stringify(entry.iss)} is not a configured issuer, so the revocation would never apply (iss is compared exactly); configured: ${
        this.#issuers.size === 0 ? 'none' : [...this.#issuers].map((iss) => JSON.stringify(iss)).join(', ')
      }`;
      return [{ reason: `${where}.iss: ${detail}`, pointer: `${pointer}/iss`, detail }];
    }
    return entry;
  }

  #enqueue(entries: Revocation[], byIdentity: ReadonlyMap<string, Revocation>): Promise<Revocation[]> {
    const { promise, resolve, reject } = Promise.withResolvers<Revocation[]>();
    const write = { entries, promise, resolve, reject };
    this.#pending.push(write);
    for (const [identity, entry] of byIdentity) this.#pendingByIdentity.set(identity, { entry, write });
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      // setImmediate, not a microtask: requests read in the same I/O phase join the batch.
      setImmediate(() => {
        this.#flushScheduled = false;
        this.flush();
      });
    }
    return promise;
  }

  /** Entries with `expires_at` at or below this no longer apply at `nowS` (the SQL side of `isExpired`). */
  #lapsedUpTo(nowS: number): number {
    return nowS - this.#clockToleranceS;
  }

  #nowS(): number {
    return Math.floor(this.#now() / 1000);
  }
}

function toRow(entry: Revocation): (string | number | null)[] {
  const byValue = entry.kind === 'issued_before' ? { value: null, before: entry.before } : { value: entry.value, before: null };
  return [
    entry.id,
    entry.kind,
    byValue.value,
    entry.iss ?? null,
    byValue.before,
    entry.reason,
    entry.created_at,
    entry.expires_at ?? null,
    entry.created_by ?? null,
  ];
}

function fromRow(row: RevocationRow): Revocation {
  // Rows were validated on the way in; only drop the NULLs standing for absent members.
  const entry = Object.fromEntries(Object.entries(row).filter(([, value]) => value !== null));
  return Object.freeze(entry) as Revocation;
}
