import { Hono, type Context } from 'hono';
import { z } from 'zod';
import { ArbiterError } from '../../errors.ts';
import type { BundleLifecycle } from '../../policy/lifecycle.ts';
import { adminProblem } from '../admin-errors.ts';
import { requireScope, stillUnrevoked, type AdminPrincipal, type AdminAuthDeps, type AdminVariables } from '../middleware/admin-auth.ts';
import { contentEncodingProblem, jsonBody, readRequestBody } from '../middleware/json-body.ts';
import { problem } from '../problem.ts';
import { noQueryParameters } from '../query-parameters.ts';

export interface BundleRouteDeps {
  lifecycle: BundleLifecycle;
  admin: AdminAuthDeps;
  /** Largest bundle archive a PUT may carry (bundles.limits.max_compressed_bytes). */
  maxBundleBytes: number;
  bodyLimitBytes: number;
}

export const activateRequestSchema = z.strictObject({ revision: z.string().min(1) });

/** What `opa build` writes and bundle servers send; anything else is not a bundle. */
export const BUNDLE_MEDIA_TYPES: ReadonlySet<string> = new Set(['application/gzip', 'application/x-gzip', 'application/octet-stream', 'application/vnd.openpolicyagent.bundle']);

/**
 * The bundle lifecycle over HTTP. A rejected bundle answers 4xx naming the failed check
 * (`check`), and the active revision keeps serving.
 */
export function bundleRoutes(deps: BundleRouteDeps) {
  const read = requireScope(deps.admin, 'arbiter.bundles.read');
  const write = requireScope(deps.admin, 'arbiter.bundles.write');

  return new Hono<{ Variables: AdminVariables }>()
    .get('/v1/bundles', read, noQueryParameters, async (c) => {
      try {
        return c.json({ bundles: await deps.lifecycle.list() });
      } catch (error) {
        return adminProblem(c, error);
      }
    })
    .get('/v1/bundles/:name', read, noQueryParameters, async (c) => {
      try {
        const status = await deps.lifecycle.status(c.req.param('name'));
        return status ? c.json(status) : adminProblem(c, new ArbiterError('bundle_not_found', `no bundle named ${c.req.param('name')}`));
      } catch (error) {
        return adminProblem(c, error);
      }
    })
    .put('/v1/bundles/:name', write, noQueryParameters, async (c) => {
      const mediaType = (c.req.header('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
      if (!BUNDLE_MEDIA_TYPES.has(mediaType)) {
        return problem(c, 415, {
          code: 'unsupported_media_type',
          title: 'Unsupported media type',
          detail: `send the bundle .tar.gz as application/gzip (got ${mediaType ? JSON.stringify(mediaType) : 'no Content-Type'})`,
        });
      }
      // The archive's own gzip is its media type; a Content-Encoding on top is not read.
      const encoded = contentEncodingProblem(c, 415);
      if (encoded !== undefined) return encoded;
      const archive = await readRequestBody(c, deps.maxBundleBytes);
      if (archive === undefined) {
        return problem(c, 413, { code: 'archive_compressed_too_large', check: 'archive_compressed_too_large', title: 'Bundle too large', detail: `the bundle exceeds ${deps.maxBundleBytes} bytes` });
      }
      // The upload may have taken a while: a token revoked meanwhile stores nothing (stillUnrevoked).
      const revoked = c.get('adminRevokedSince')();
      if (revoked) return revoked;
      const watch = revocationWatch(c);
      try {
        const result = await deps.lifecycle.accept(c.req.param('name'), archive, actor(c.get('admin')), watch);
        c.header('Location', `/v1/bundles/${c.req.param('name')}`);
        return c.json(result, result.outcome === 'activated' ? 201 : 200);
      } catch (error) {
        return watch.refusalOr(error);
      }
    })
    .post('/v1/bundles/:name/activate', write, noQueryParameters, jsonBody(activateRequestSchema, { limitBytes: deps.bodyLimitBytes }), stillUnrevoked, async (c) => {
      const watch = revocationWatch(c);
      try {
        return c.json(await deps.lifecycle.activate(c.req.param('name'), c.get('body').revision, actor(c.get('admin')), watch));
      } catch (error) {
        return watch.refusalOr(error);
      }
    })
    .delete('/v1/bundles/:name', write, noQueryParameters, async (c) => {
      const watch = revocationWatch(c);
      try {
        await deps.lifecycle.remove(c.req.param('name'), actor(c.get('admin')), watch);
        return c.body(null, 204);
      } catch (error) {
        return watch.refusalOr(error);
      }
    });
}

/**
 * The lifecycle's stillAuthorized for this request (see ChangeOptions): a change waits behind
 * others and is checked before it takes effect, and a revocation of its admin token answered
 * meanwhile must leave it undone. Refused, the answer is requireScope's own 401 token_revoked,
 * counted and logged as that is.
 */
function revocationWatch<E extends { Variables: AdminVariables }>(c: Context<E>) {
  let refusal: Response | undefined;
  return {
    stillAuthorized: () => (refusal = c.get('adminRevokedSince')()) === undefined,
    refusalOr: (error: unknown) => refusal ?? adminProblem(c, error),
  };
}

/** Recorded as stored_by / activated_by, the same form revocations record as created_by. */
function actor(admin: AdminPrincipal): string {
  return `${admin.iss}#${admin.sub}`;
}
