import { Hono, type Context } from 'hono';
import { z } from 'zod';
import type { DecisionPipeline } from '../../decisions/pipeline.ts';
import { MAX_PAGE_SIZE } from '../../decisions/query.ts';
import { replayDecision, type ReplayDeps } from '../../decisions/replay.ts';
import type { DecisionStore } from '../../decisions/store.ts';
import { ArbiterError, DecisionLogCorruptError } from '../../errors.ts';
import type { BundleLifecycle } from '../../policy/lifecycle.ts';
import type { BundleRegistry } from '../../policy/registry.ts';
import { adminProblem, adminProblemText } from '../admin-errors.ts';
import { requireScope, type AdminAuthDeps, type AdminVariables } from '../middleware/admin-auth.ts';
import { jsonBody } from '../middleware/json-body.ts';
import { problem } from '../problem.ts';
import { noQueryParameters, parseQuery, queryInteger } from '../query-parameters.ts';

export interface DecisionRouteDeps {
  /** Undefined when decision_log.enabled is false: every route answers 503 decision_log_disabled. */
  log: { store: DecisionStore; masked: boolean } | undefined;
  /** Replay evaluates through the decision path's evaluator, on active or stored revisions. */
  bundles: BundleRegistry;
  lifecycle: BundleLifecycle;
  pipeline: DecisionPipeline;
  admin: AdminAuthDeps;
  bodyLimitBytes: number;
}

const EPOCH_MS = /^(0|[1-9][0-9]{0,15})$/;
const RFC_3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

/** Date.parse rolls 2025-02-30 over to March 2nd; an auditor's typo must be an error, not another day. */
function isCalendarDate(text: string): boolean {
  const [year, month, day] = [Number(text.slice(0, 4)), Number(text.slice(5, 7)), Number(text.slice(8, 10))];
  const [hour, minute, second] = [Number(text.slice(11, 13)), Number(text.slice(14, 16)), Number(text.slice(17, 19))];
  // 24:00 would roll over to the next day too; a leap second (60) Date.parse refuses anyway.
  return month >= 1 && month <= 12 && day >= 1 && day <= new Date(Date.UTC(year, month, 0)).getUTCDate() && hour <= 23 && minute <= 59 && second <= 59;
}

/**
 * 1 when an RFC 3339 time has non-zero digits past the millisecond, which Date.parse drops.
 * Records are stamped in whole milliseconds, so both bounds round up: a decision at .999 is
 * before `to=...00.9991Z` and not at or after `from=...00.9991Z`.
 */
function finerThanMs(text: string): number {
  const fraction = /\.(\d+)/.exec(text)?.[1] ?? '';
  return /[1-9]/.test(fraction.slice(3)) ? 1 : 0;
}

/** A point in time as a query parameter: RFC 3339 with an offset, or milliseconds since the epoch. */
const instant = z
  .string()
  .describe('RFC 3339 date-time with offset (2025-01-31T12:00:00Z) or milliseconds since the epoch')
  .transform((text, ctx) => {
    const ms = EPOCH_MS.test(text) ? Number(text) : RFC_3339.test(text) && isCalendarDate(text) ? Date.parse(text) + finerThanMs(text) : Number.NaN;
    if (Number.isSafeInteger(ms) && ms >= 0) return ms;
    // curl -G 'from=...T00:00:00+05:30' sends the + as it is, and a URL query reads it as a space.
    const plusAsSpace = RFC_3339.test(text.replace(/ (\d{2}:\d{2})$/, '+$1'));
    ctx.addIssue({ code: 'custom', message: `must be an RFC 3339 date-time with offset or epoch milliseconds${plusAsSpace ? ' (a + in a URL query is a space: write it %2B)' : ''}` });
    return z.NEVER;
  });

/** The filters of GET /v1/decisions and /v1/decisions/export, as query parameters; given filters are ANDed. */
const decisionFilterParameters = z.strictObject({
  from: instant.optional().describe('Decisions at or after this time'),
  to: instant.optional().describe('Decisions before this time'),
  caller: z.string().optional().describe('Gateway that asked, as recorded: its API key id or client certificate identity (exact match; not indexed, best with from/to)'),
  endpoint: z
    .string()
    .optional()
    .describe('Endpoint that answered, as recorded: /v1/decide, /v1/issuance, /v1/data (the OPA data API), /access/v1/evaluation, ... (exact match; not indexed, best with from/to)'),
  iss: z.string().optional().describe('Token issuer'),
  sub: z.string().optional().describe('Subject (a hashed value when decision_log.mask hashes it: sha256:<hex>)'),
  client_id: z.string().optional(),
  action: z.string().optional().describe('Action name'),
  resource_type: z.string().optional(),
  resource_id: z.string().optional(),
  allow: z.enum(['true', 'false']).transform((value) => value === 'true').optional(),
  reason: z.string().optional().describe('A reason code the decision carries'),
  bundle: z.string().optional(),
  revision: z.string().optional().describe('Bundle revision that decided'),
});

/**
 * A window given backwards (from after to) matches nothing, and an export of it is an empty file
 * that exits 0: a typo (the bounds swapped, a month mistyped) must be an error, not that answer.
 * An empty window (from = to, to being exclusive) is a question, and answered.
 */
function windowInOrder(query: { from?: number | undefined; to?: number | undefined }, ctx: z.RefinementCtx): void {
  if (query.from !== undefined && query.to !== undefined && query.from > query.to) {
    ctx.addIssue({ code: 'custom', path: ['from'], message: 'must not be after to' });
  }
}

export const decisionFiltersQuerySchema = decisionFilterParameters.superRefine(windowInOrder);

export const decisionsQuerySchema = decisionFilterParameters
  .extend({
    limit: queryInteger(1, MAX_PAGE_SIZE).optional().describe(`Page size, 1-${MAX_PAGE_SIZE} (default 50)`),
    cursor: z.string().optional().describe('`next_cursor` of the previous page'),
  })
  .superRefine(windowInOrder);

export const replayRequestSchema = z.strictObject({
  revision: z.string().min(1).optional().describe('Stored revision of the recorded bundle to replay against; the active revision when absent.'),
});

/** Records per chunk of an export: what the reader thread reads and encodes per request. */
const EXPORT_CHUNK_RECORDS = 500;

/**
 * The auditor API (scope arbiter.decisions.read): read, query, export and verify the
 * decision log, and replay a recorded decision against the active or a stored revision.
 */
export function decisionRoutes(deps: DecisionRouteDeps) {
  const read = requireScope(deps.admin, 'arbiter.decisions.read');
  const log = deps.log;
  const app = new Hono<{ Variables: AdminVariables }>();
  if (log === undefined) {
    return app
      .get('/v1/decisions/verify', read, disabled)
      .get('/v1/decisions/export', read, disabled)
      .get('/v1/decisions', read, disabled)
      .get('/v1/decisions/:id', read, disabled)
      .post('/v1/decisions/:id/replay', read, disabled);
  }
  const replayDeps: ReplayDeps = {
    get: (id) => log.store.reader.get(id),
    activeBundle: (name) => deps.bundles.get(name),
    withRevision: (name, revision, use) => deps.lifecycle.withRevision(name, revision, use),
    evaluate: (bundle, entrypoint, input) => deps.pipeline.evaluateRaw(bundle, entrypoint, input),
  };

  // Static paths first: /v1/decisions/:id would otherwise take "verify" and "export" for ids.
  return app
    .get('/v1/decisions/verify', read, noQueryParameters, async (c) => c.json(await log.store.reader.verify()))
    .get('/v1/decisions/export', read, (c) => {
      const query = parseQuery(c, decisionFiltersQuerySchema, 'decision_query_invalid');
      if (!query.ok) return adminProblem(c, query.error);
      try {
        // The answer's status (200) went out with its first line: a record that stops the export
        // midway is a server fault the 5xx log line of admin requests never sees.
        // An export retention pruned under is a race to run again, not a fault: a warning.
        const stopped = (error: unknown) =>
          deps.admin.logger[error instanceof ArbiterError && error.code === 'decision_export_incomplete' ? 'warn' : 'error'](
            { err: error, request_id: c.get('requestId'), path: c.req.path, admin: c.get('admin'), ...(error instanceof DecisionLogCorruptError && { seq: error.seq }) },
            'decision export stopped before its end',
          );
        const chunks = log.store.reader.export(query.data, EXPORT_CHUNK_RECORDS);
        return c.body(ndjson(chunks, c.req.path, stopped), 200, { 'Content-Type': 'application/x-ndjson' });
      } catch (error) {
        return adminProblem(c, error);
      }
    })
    .get('/v1/decisions', read, async (c) => {
      const query = parseQuery(c, decisionsQuerySchema, 'decision_query_invalid');
      if (!query.ok) return adminProblem(c, query.error);
      const { limit, cursor, ...filters } = query.data;
      try {
        return c.json(await log.store.reader.query(filters, { ...(limit !== undefined && { limit }), ...(cursor !== undefined && { cursor }) }));
      } catch (error) {
        return adminProblem(c, error);
      }
    })
    .get('/v1/decisions/:id', read, noQueryParameters, async (c) => {
      try {
        const decision = await log.store.reader.get(c.req.param('id'));
        return decision ? c.json(decision) : adminProblem(c, notFound(c.req.param('id'), log.store));
      } catch (error) {
        return adminProblem(c, error);
      }
    })
    .post('/v1/decisions/:id/replay', read, noQueryParameters, jsonBody(replayRequestSchema, { limitBytes: deps.bodyLimitBytes }), async (c) => {
      try {
        const report = await replayDecision(replayDeps, c.req.param('id'), c.get('body').revision);
        // Masked input is replayed as stored: a policy reading a masked field sees the mask.
        return c.json({ ...report, masked: log.masked });
      } catch (error) {
        if (error instanceof ArbiterError && error.code === 'decision_not_found') return adminProblem(c, notFound(c.req.param('id'), log.store));
        return adminProblem(c, error);
      }
    });
}

function disabled(c: Context): Response {
  return problem(c, 503, {
    code: 'decision_log_disabled',
    title: 'Decision log disabled',
    detail: 'decision_log.enabled is false on this server: decisions are not recorded',
  });
}

/**
 * A decision the log does not hold. On a relaxed log that includes one answered a moment ago
 * whose record is still queued: said so, or an auditor checking a decision just made would take
 * it for unknown (or pruned) rather than ask again.
 */
function notFound(id: string, store: Pick<DecisionStore, 'answeredBeforeCommit'>): ArbiterError {
  const relaxed = store.answeredBeforeCommit;
  const why = relaxed
    ? `unknown, pruned by retention, or not committed yet: decision_log.durability is relaxed, so a decision is answered before its record commits, within ${relaxed.flushIntervalMs} ms (flush_interval_ms) or, while commits fail, once they go through again; ask again in a moment`
    : 'unknown, or pruned by retention';
  return new ArbiterError('decision_not_found', `no decision ${id} in the decision log (${why})`);
}

/**
 * One JSON line per record, produced as the client reads: each pull asks the reader thread for
 * the next chunk, so a long export neither buffers nor holds the event loop. The status went
 * out with the first line: an ArbiterError met on the way (a damaged record, retention pruning
 * under the export) ends the export with its problem document as the last line, so the file
 * says why it stops where it does. Any other error still breaks the response off, as a failed read.
 */
function ndjson(chunks: AsyncGenerator<string, void, undefined>, instance: string, stopped: (error: unknown) => void): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        let next: IteratorResult<string, void>;
        try {
          next = await chunks.next();
        } catch (error) {
          stopped(error);
          if (!(error instanceof ArbiterError)) throw error;
          controller.enqueue(encoder.encode(`${adminProblemText(error, instance)}\n`));
          controller.close();
          return;
        }
        if (next.done) controller.close();
        else controller.enqueue(encoder.encode(next.value));
      },
      async cancel() {
        // The client went away: the reader thread drops the export.
        await chunks.return();
      },
    },
    { highWaterMark: 1 },
  );
}
