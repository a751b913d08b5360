import { z } from 'zod';
import type { DatabaseSync, SQLInputValue, StatementSync } from 'node:sqlite';
import { ArbiterError, DecisionLogCorruptError } from '../errors.ts';
import { isDecisionRecord, type StoredDecision } from './record.ts';
import { withNumbers } from './big-integers.ts';

/** Every filter is optional; given filters are ANDed. Times are ms since the epoch. */
export const decisionFiltersSchema = z.strictObject({
  /** Inclusive lower bound on timestamp. */
  from: z.number().int().nonnegative().optional(),
  /** Exclusive upper bound on timestamp. */
  to: z.number().int().nonnegative().optional(),
  /** Identity of the gateway that asked (an API key id, a client certificate identity). */
  caller: z.string().optional(),
  /** The endpoint that answered, as recorded: /v1/decide, /v1/data, /access/v1/evaluation, ... */
  endpoint: z.string().optional(),
  iss: z.string().optional(),
  sub: z.string().optional(),
  client_id: z.string().optional(),
  action: z.string().optional(),
  resource_type: z.string().optional(),
  resource_id: z.string().optional(),
  allow: z.boolean().optional(),
  /** A reason code the decision carries. */
  reason: z.string().optional(),
  bundle: z.string().optional(),
  revision: z.string().optional(),
});

export type DecisionFilters = z.infer<typeof decisionFiltersSchema>;

export const MAX_PAGE_SIZE = 1_000;

export const pageRequestSchema = z.strictObject({
  limit: z.number().int().min(1).max(MAX_PAGE_SIZE).default(50),
  /** `next_cursor` of the previous page; absent for the first page. */
  cursor: z.string().optional(),
});

export type PageRequest = z.input<typeof pageRequestSchema>;

export interface DecisionPage {
  decisions: StoredDecision[];
  /** Pass back as `cursor` for the next (older) page; null on the last page. */
  next_cursor: string | null;
}

/**
 * Columns matched by equality: a filter name maps to the column of the same name. caller and
 * endpoint have no index of their own (each would cost every commit an index entry, and a log
 * holds few distinct values of either): SQLite walks the time index for them, newest first.
 */
const EQUALITY_FILTERS = ['caller', 'endpoint', 'iss', 'sub', 'client_id', 'action', 'resource_type', 'resource_id', 'bundle', 'revision'] as const;

/**
 * Newest first, by (timestamp, seq). The cursor is the position of the last row returned,
 * and the next page is everything strictly before it: rows committed meanwhile are newer
 * or land before the cursor's position in the order, they never shift the page boundaries.
 */
export function queryDecisions(db: DatabaseSync, filters: DecisionFilters, page: PageRequest, prunedBefore: () => number = () => Infinity): DecisionPage {
  // Read before the page, and carried by its cursor: the chain start every later page compares with.
  const start = chainStart(db);
  const { rows, next_cursor, since } = pageOfRows(db, filters, page, start);
  // A page past the first is a walk like an export's, one request at a time: retention deleting
  // the oldest records meanwhile, which the pages still to come would hold, must not leave them
  // short as if whole (see exportDecisions).
  if (since !== undefined) {
    const now = prunedSince(db, since, filters, prunedBefore);
    if (now !== undefined) {
      throw new ArbiterError(
        'decision_query_incomplete',
        `retention deleted the oldest records since the first page of this query (the log now starts after seq ${now}, it started after seq ${since}): records it matched may be missing from this page and the next; query again from the first page, without the cursor (the records retention deleted are gone)`,
      );
    }
  }
  return { decisions: rows.map(toStoredDecision), next_cursor };
}

/**
 * The seq the chain now starts after, when retention has pruned since it started after `start`
 * and what it deleted may have matched `filters`; undefined when nothing matching was deleted
 * (no prune, or one by age only, all of it made before a `from` the filters give).
 */
function prunedSince(db: DatabaseSync, start: bigint, filters: DecisionFilters, prunedBefore: () => number): bigint | undefined {
  const now = chainStart(db);
  if (now === start || (filters.from !== undefined && filters.from >= prunedBefore())) return undefined;
  return now;
}

/**
 * Every matching decision, newest first, read a page at a time so no read transaction stays open.
 * Retention deletes the oldest records, which such a walk reads last: once it has pruned since
 * the export began, the pages still to come may lack records that matched, and the export stops
 * (decision_export_incomplete) rather than end short as if it were whole. Unless none of what
 * it deleted can have matched: `prunedBefore` is a time every record retention has deleted was
 * made before (+Infinity when that is not known, as for a prune by count), and an export
 * `from` it or later lost nothing.
 */
export function* exportDecisions(db: DatabaseSync, filters: DecisionFilters, prunedBefore: () => number = () => Infinity): Generator<StoredDecision> {
  const start = chainStart(db);
  let cursor: string | undefined;
  do {
    const page = pageOfRows(db, filters, { limit: MAX_PAGE_SIZE, cursor });
    // Read after the page: a prune this page's read saw (or a later one, to be safe) is caught here.
    const now = prunedSince(db, start, filters, prunedBefore);
    if (now !== undefined) {
      throw new ArbiterError(
        'decision_export_incomplete',
        `retention deleted the oldest records while this export was read (the log now starts after seq ${now}, it started after seq ${start}): records it matched may be missing from what follows; export again (the records retention deleted are gone)`,
      );
    }
    // One record at a time: a damaged one stops the export there, after every record before it.
    for (const row of page.rows) yield toStoredDecision(row);
    cursor = page.next_cursor ?? undefined;
  } while (cursor !== undefined);
}

/**
 * The seq the chain starts after: the retention anchor's, which every prune replaces (0 while
 * nothing was pruned). Read as a BigInt, so an anchor edited past 2^53 still compares.
 */
function chainStart(db: DatabaseSync): bigint {
  const statement = db.prepare('SELECT coalesce(max(seq), 0) AS seq FROM anchors');
  statement.setReadBigInts(true);
  return (statement.get() as { seq: bigint }).seq;
}

/**
 * One page of rows and the cursor of the next. `start`, the chain start read before a first page,
 * goes into that cursor and every cursor after it; `since` is the one the given cursor carries
 * (undefined for a first page, an export's internal pages, and a cursor from before it was carried).
 */
function pageOfRows(db: DatabaseSync, filters: DecisionFilters, page: PageRequest, start?: bigint): { rows: StoredRow[]; next_cursor: string | null; since?: bigint } {
  const parsed = pageRequestSchema.safeParse(page);
  if (!parsed.success) throw new ArbiterError('decision_query_invalid', z.prettifyError(parsed.error));
  const { limit, cursor } = parsed.data;
  const after = cursor === undefined ? undefined : decodeCursor(cursor);
  const rows = matchingRows(db, filters, after, limit + 1);
  const last = rows.length > limit ? rows[limit - 1] : undefined;
  const since = after?.start;
  const carried = since ?? start;
  return {
    rows: rows.slice(0, limit),
    next_cursor: last ? encodeCursor({ timestamp: last.timestamp, seq: last.seq, ...(carried !== undefined && { start: carried }) }) : null,
    ...(since !== undefined && { since }),
  };
}

export interface StoredRow {
  seq: number;
  timestamp: number;
  body: string;
  prev_hash: string;
  hash: string;
  /** Set by readRows for a row holding an integer past 2^53: what reading it throws. */
  damage?: DecisionLogCorruptError;
}

/** Throws DecisionLogCorruptError naming the row when it is damaged or its body is not a JSON object. */
export function toStoredDecision(row: StoredRow): StoredDecision {
  if (row.damage) throw row.damage;
  let record: unknown;
  try {
    record = JSON.parse(row.body);
  } catch (error) {
    throw corrupt(row, `its body is not JSON: ${(error as Error).message}`, error);
  }
  if (typeof record !== 'object' || record === null || Array.isArray(record)) throw corrupt(row, 'its body is not a JSON object');
  // Readers (the CLI, replay, auditors' tools) rely on the record's shape: a body edited into
  // other JSON is as damaged as one that no longer parses.
  if (!isDecisionRecord(record)) throw corrupt(row, 'its body is JSON but not a decision record');
  return { ...record, seq: row.seq, prev_hash: row.prev_hash, hash: row.hash };
}

/**
 * The rows of a read of the decisions table (seq and other integer columns), read with
 * BigInts: node:sqlite throws a RangeError for an integer past 2^53, and a file edited outside
 * Arbiter can hold one in any integer column. Such a row keeps its place in the read, marked
 * with its `damage`: reading it (toStoredDecision) names it (decision_log_corrupt) instead of
 * failing the request as an internal error, and the rows before it read as usual (an export
 * stops at it, after them; a page that only looked one row further is served).
 */
function readRows<T extends { seq: number }>(statement: StatementSync, ...params: SQLInputValue[]): (T & { damage?: DecisionLogCorruptError })[] {
  statement.setReadBigInts(true);
  return statement.all(...params).map((row) => numbers(row) as T & { damage?: DecisionLogCorruptError });
}

/** The one row a read finds, or undefined; read as readRows does. */
export function readRow<T extends { seq: number }>(statement: StatementSync, ...params: SQLInputValue[]): (T & { damage?: DecisionLogCorruptError }) | undefined {
  statement.setReadBigInts(true);
  const row = statement.get(...params);
  return row && (numbers(row) as T & { damage?: DecisionLogCorruptError });
}

/** The row with its integers as numbers; one past 2^53 is NaN, and names the row in `damage`. */
function numbers(raw: Record<string, unknown>): Record<string, unknown> {
  const { row, outOfRange } = withNumbers(raw);
  if (outOfRange !== undefined) {
    const seq = typeof raw.seq === 'bigint' ? raw.seq : BigInt(raw.seq as number);
    row.damage = new DecisionLogCorruptError(Number(seq), `decision log record seq ${seq} was changed outside Arbiter: its ${outOfRange.column} is ${outOfRange.value}, past any integer Arbiter writes`);
  }
  return row;
}

function corrupt(row: StoredRow, why: string, cause?: unknown): DecisionLogCorruptError {
  return new DecisionLogCorruptError(row.seq, `decision log record seq ${row.seq} was changed outside Arbiter: ${why}`, { cause });
}

interface Position {
  timestamp: number;
  seq: number;
}

/**
 * Past this many reason sets holding one code, a reason filter is left to SQLite as one
 * query (which then sorts every match): codes are meant to be stable, so only a policy
 * that mints codes per request gets there.
 */
const MAX_MERGED_REASON_SETS = 64;

/**
 * The first `limit` matching rows in page order. A reason filter becomes one index range
 * scan per reason set containing the code (decisions repeat few combinations of codes),
 * each already in page order and cut at `limit`, merged here.
 */
function matchingRows(db: DatabaseSync, filters: DecisionFilters, after: Position | undefined, limit: number): StoredRow[] {
  if (filters.reason === undefined) {
    const { sql, params } = buildQuery(filters, undefined, after, limit);
    return readRows<StoredRow>(db.prepare(sql), ...params);
  }
  // Set ids as BigInts, bound back as they are: one edited past 2^53 then matches no record.
  const setsStatement = db.prepare('SELECT reason_set FROM reason_set_codes WHERE code = ? LIMIT ?');
  setsStatement.setReadBigInts(true);
  const sets = setsStatement.all(filters.reason, MAX_MERGED_REASON_SETS + 1) as { reason_set: bigint }[];
  if (sets.length === 0) return [];
  if (sets.length > MAX_MERGED_REASON_SETS) {
    const { sql, params } = buildQuery(filters, filters.reason, after, limit);
    return readRows<StoredRow>(db.prepare(sql), ...params);
  }
  if (sets.length === 1) {
    const { sql, params } = buildQuery(filters, sets[0]!.reason_set, after, limit);
    return readRows<StoredRow>(db.prepare(sql), ...params);
  }
  // Positions only from each set (up to `limit` each), then the bodies of the page alone:
  // a page never holds more than `limit` records in memory, however many sets it merges.
  // Merged as the integers SQLite holds (BigInts): one edited past 2^53 sorts where one read
  // would put it, and only reading its row names it, as on the other paths (an export stops at
  // it, after every record before it).
  const { sql, params } = buildQuery(filters, 0n, after, limit, 'positions');
  const statement = db.prepare(sql);
  statement.setReadBigInts(true);
  const positions: StoredPosition[] = [];
  for (const { reason_set } of sets) {
    params[0] = reason_set;
    positions.push(...(statement.all(...params) as unknown as StoredPosition[]));
  }
  const page = positions.sort(newestFirst).slice(0, limit);
  return readRows<StoredRow>(
    db.prepare(`SELECT ${ROW_COLUMNS} FROM decisions d WHERE d.seq IN (SELECT value FROM json_each(?)) ORDER BY d.timestamp DESC, d.seq DESC`),
    `[${page.map((position) => position.seq).join(',')}]`,
  );
}

/** A position as SQLite holds it, read with BigInts. */
interface StoredPosition {
  timestamp: bigint;
  seq: bigint;
}

/** Page order, by comparison (BigInts cannot be subtracted into a sort's number). */
function newestFirst(a: StoredPosition, b: StoredPosition): number {
  return descending(a.timestamp, b.timestamp) || descending(a.seq, b.seq);
}

function descending(a: bigint, b: bigint): number {
  return a > b ? -1 : a < b ? 1 : 0;
}

const ROW_COLUMNS = 'd.seq, d.timestamp, d.body, d.prev_hash, d.hash';

/**
 * The query of a page. `reason` narrows it to one reason set (a bigint: the first
 * parameter, which the caller may replace to run it for another set) or to every set
 * holding a code (a string).
 */
function buildQuery(
  filters: DecisionFilters,
  reason: bigint | string | undefined,
  after: Position | undefined,
  limit: number,
  columns: 'rows' | 'positions' = 'rows',
): { sql: string; params: SQLInputValue[] } {
  const conditions: string[] = [];
  const params: SQLInputValue[] = [];

  if (typeof reason === 'bigint') {
    conditions.push('d.reason_set = ?');
    params.push(reason);
  } else if (reason !== undefined) {
    conditions.push('d.reason_set IN (SELECT reason_set FROM reason_set_codes WHERE code = ?)');
    params.push(reason);
  }
  for (const name of EQUALITY_FILTERS) {
    const value = filters[name];
    if (value === undefined) continue;
    conditions.push(`d.${name} = ?`);
    params.push(value);
  }
  if (filters.allow !== undefined) {
    conditions.push('d.allow = ?');
    params.push(filters.allow ? 1 : 0);
  }
  if (filters.from !== undefined) {
    conditions.push('d.timestamp >= ?');
    params.push(filters.from);
  }
  if (filters.to !== undefined) {
    conditions.push('d.timestamp < ?');
    params.push(filters.to);
  }
  if (after !== undefined) {
    conditions.push('(d.timestamp, d.seq) < (?, ?)');
    params.push(after.timestamp, after.seq);
  }

  const where = conditions.length > 0 ? `WHERE ${conditions.join(' AND ')}` : '';
  params.push(limit);
  return {
    sql: `SELECT ${columns === 'rows' ? ROW_COLUMNS : 'd.seq, d.timestamp'} FROM decisions d ${where} ORDER BY d.timestamp DESC, d.seq DESC LIMIT ?`,
    params,
  };
}

/** [timestamp, seq] of the last row served, then the chain start of the first page (decimal: a seq is read as a BigInt). */
const cursorSchema = z.union([
  z.tuple([z.number().int().nonnegative(), z.number().int().positive(), z.string().regex(/^(0|[1-9][0-9]{0,19})$/)]),
  z.tuple([z.number().int().nonnegative(), z.number().int().positive()]),
]);

function encodeCursor(position: Position & { start?: bigint }): string {
  const tuple = position.start === undefined ? [position.timestamp, position.seq] : [position.timestamp, position.seq, position.start.toString()];
  return Buffer.from(JSON.stringify(tuple)).toString('base64url');
}

function decodeCursor(cursor: string): Position & { start?: bigint } {
  try {
    const [timestamp, seq, start] = cursorSchema.parse(JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')));
    return { timestamp, seq, ...(start !== undefined && { start: BigInt(start) }) };
  } catch (error) {
    throw new ArbiterError('decision_cursor_invalid', 'cursor is not one this server returned', { cause: error });
  }
}
