import type { HttpBindings } from '@hono/node-server';
import { Hono, type Context } from 'hono';
import { z } from 'zod';
import { parseDataPath, refuseDotSegments, type DataPath } from '../../data/data-path.ts';
import { DocumentMetaInputSchema, MAX_SOURCE_LENGTH, type LiveData } from '../../data/documents.ts';
import { JsonPatchSchema } from '../../data/json-patch.ts';
import { ArbiterError } from '../../errors.ts';
import { withinRoot } from '../../policy/manifest.ts';
import { overlay, valueAt } from '../../policy/overlay.ts';
import type { BundleRegistry } from '../../policy/registry.ts';
import { adminProblem } from '../admin-errors.ts';
import { requireScope, stillUnrevoked, type AdminAuthDeps, type AdminVariables } from '../middleware/admin-auth.ts';
import { jsonBody } from '../middleware/json-body.ts';
import { noQueryParameters } from '../query-parameters.ts';

export interface DataRouteDeps {
  liveData: LiveData;
  bundles: BundleRegistry;
  admin: AdminAuthDeps;
  bodyLimitBytes: number;
}

const PREFIX = '/v1/data';
/** A PATCH body is a JSON Patch (RFC 6902), however labelled: another JSON type (a merge patch, RFC 7396) is another format. */
export const PATCH_MEDIA_TYPES = ['application/json-patch+json', 'application/json'] as const;

/**
 * Live data: GET/PUT/PATCH/DELETE /v1/data/{path}. Document metadata travels in the
 * `Arbiter-Data-Source` and `Arbiter-Data-Max-Age` headers. Paths under an active bundle's
 * roots are read from the bundle and cannot be written (409), but live data there can be deleted.
 * The entity tag of live data is its version (`"<version>"`): writes honour If-Match and
 * If-None-Match against it (412).
 */
export function dataRoutes(deps: DataRouteDeps) {
  const read = requireScope(deps.admin, 'arbiter.data.read');
  const write = requireScope(deps.admin, 'arbiter.data.write');
  // Depth is the live data store's to judge (data.max_depth, counted from the data root: data_too_deep).
  const limit = { limitBytes: deps.bodyLimitBytes, maxDepth: Number.POSITIVE_INFINITY };

  return new Hono<{ Variables: AdminVariables }>()
    .get(`${PREFIX}/*`, read, noQueryParameters, (c) => {
      try {
        const path = dataPathOf(c);
        // What policies read: live data with every active bundle's data over its roots, so a
        // path above several roots (the root itself) shows live documents and bundles alike.
        const active = deps.bundles.list();
        const snapshot = deps.liveData.snapshot();
        const view = active.reduce<Record<string, unknown>>((data, bundle) => overlay(data, bundle), snapshot.data);
        const value = valueAt(view, path);
        if (value === undefined) throw new ArbiterError('data_not_found', `no data at ${path.join('/') || '(root)'}`);
        // Attributed to a bundle only at or below one of its roots (an ancestor mixes several sources).
        const owner = active.find((bundle) => bundle.roots.some((root) => withinRoot(path, root)));
        // Only for live data alone: a bundle's data can change with no new live data version.
        if (deps.bundles.ownerOf(path) === undefined) c.header('ETag', entityTag(snapshot.version));
        return c.json({ result: value, version: snapshot.version, ...(owner && { bundle: owner.name }) });
      } catch (error) {
        return adminProblem(c, error);
      }
    })
    .put(`${PREFIX}/*`, write, noQueryParameters, jsonBody(z.unknown(), limit), stillUnrevoked, (c) => {
      try {
        const path = writablePathOf(c);
        checkPreconditions(c, deps.liveData, path);
        const snapshot = deps.liveData.put(path, c.get('body'), metaOf(c.req.header()));
        c.header('ETag', entityTag(snapshot.version));
        return c.json({ version: snapshot.version });
      } catch (error) {
        return adminProblem(c, error);
      }
    })
    .patch(`${PREFIX}/*`, write, noQueryParameters, jsonBody(JsonPatchSchema, { ...limit, mediaTypes: PATCH_MEDIA_TYPES }), stillUnrevoked, (c) => {
      try {
        const path = writablePathOf(c);
        checkPreconditions(c, deps.liveData, path);
        const snapshot = deps.liveData.patch(path, c.get('body'), metaOf(c.req.header()));
        c.header('ETag', entityTag(snapshot.version));
        return c.json({ version: snapshot.version });
      } catch (error) {
        return adminProblem(c, error);
      }
    })
    .delete(`${PREFIX}/*`, write, noQueryParameters, (c) => {
      try {
        const path = writablePathOf(c);
        checkPreconditions(c, deps.liveData, path);
        c.header('ETag', entityTag(deps.liveData.delete(path).version));
        return c.body(null, 204);
      } catch (error) {
        return adminProblem(c, error);
      }
    });
}

/**
 * Keys from the raw URL, so an encoded `%2F` stays inside its key. The URL the handler gets
 * has its dot segments resolved already: they are refused in the request target as sent.
 */
function dataPathOf(c: Context): DataPath {
  const sent = (c.env as Partial<HttpBindings> | undefined)?.incoming?.url;
  if (sent !== undefined) refuseDotSegments(sent.split('?')[0]!);
  return parseDataPath(keysOf(c));
}

/**
 * The raw path after its first two segments. The router decodes the path before matching, so
 * `/v1/dat%61/x` and `/v%31/data/x` are served here too: cutting PREFIX.length characters would
 * leave `61/x` or `ta/x`, another document than the one the URL names. The router's decoding
 * keeps `%2F`, so the two segments it matched as `v1` and `data` are the first two as sent.
 */
function keysOf(c: Context): string {
  const pathname = new URL(c.req.url).pathname;
  const afterSecond = pathname.indexOf('/', pathname.indexOf('/', 1) + 1);
  return afterSecond === -1 ? '' : pathname.slice(afterSecond);
}

/**
 * A write's keys. parseDataPath drops the slashes around the path (`/v1/data/` is the root),
 * but in a write an extra one is an empty key where a feed meant one (`users/${id}` with an
 * empty id): dropped, the write would replace or delete the parent, or `//alice` write the
 * document `alice`. Refused instead.
 */
function writablePathOf(c: Context): DataPath {
  const path = dataPathOf(c);
  const keys = keysOf(c);
  if (keys !== '' && keys !== '/' && keys.slice(1).split('/').includes('')) {
    throw new ArbiterError('data_path_invalid', `"${keys}" has an empty key: a write names each key, with no leading, trailing or doubled slash`);
  }
  return path;
}

function entityTag(version: number): string {
  return `"${version}"`;
}

/**
 * RFC 9110 preconditions of a write, against the live data version: it changes with every
 * write, so a feed's read-modify-write sent with If-Match cannot overwrite a write it has not
 * seen (ignoring the header would answer 200 and lose that update). Checked in the same
 * synchronous step as the write itself, so no other write can land in between. `*` asks
 * whether the path holds a value. Throws `precondition_failed` (412).
 */
function checkPreconditions(c: Context, liveData: LiveData, path: DataPath): void {
  const current = entityTag(liveData.snapshot().version);
  const exists = liveData.get(path) !== undefined;
  const ifMatch = c.req.header('if-match');
  // Strong comparison: a weak tag never matches If-Match.
  if (ifMatch !== undefined && !matchesAny(ifMatch, exists, (tag) => tag === current)) {
    throw new ArbiterError('precondition_failed', `If-Match ${ifMatch} does not match the live data version ${current}${exists ? '' : ', and nothing is at this path'}`);
  }
  const ifNoneMatch = c.req.header('if-none-match');
  // Weak comparison: W/"7" is "7".
  if (ifNoneMatch !== undefined && matchesAny(ifNoneMatch, exists, (tag) => tag.replace(/^W\//, '') === current)) {
    throw new ArbiterError('precondition_failed', `If-None-Match ${ifNoneMatch} matches: ${ifNoneMatch.trim() === '*' ? 'a value is at this path' : `the live data version is ${current}`}`);
  }
}

function matchesAny(header: string, exists: boolean, matches: (tag: string) => boolean): boolean {
  if (header.trim() === '*') return exists;
  return header.split(',').some((tag) => matches(tag.trim()));
}

function metaOf(headers: Record<string, string>) {
  const raw: Record<string, unknown> = {};
  if (headers['arbiter-data-source'] !== undefined) raw.source = headers['arbiter-data-source'];
  const maxAge = headers['arbiter-data-max-age'];
  // Digits only, as HTTP's own max-age: Number() would also take "1e3" or "0x10".
  if (maxAge !== undefined) raw.max_age_s = /^[0-9]+$/.test(maxAge.trim()) ? Number(maxAge.trim()) : Number.NaN;
  if (Object.keys(raw).length === 0) return undefined;
  const parsed = DocumentMetaInputSchema.safeParse(raw);
  if (!parsed.success) {
    // Only the header at fault: a feed told of both would look for a fault in the one that is right.
    const wrong = new Set(parsed.error.issues.map((issue) => issue.path[0]));
    const reasons = [
      ...(wrong.has('source') ? [`Arbiter-Data-Source must be 1-${MAX_SOURCE_LENGTH} characters`] : []),
      ...(wrong.has('max_age_s') ? ['Arbiter-Data-Max-Age must be a whole number of seconds > 0'] : []),
    ];
    throw new ArbiterError('data_meta_invalid', reasons.join('; '));
  }
  return parsed.data;
}
