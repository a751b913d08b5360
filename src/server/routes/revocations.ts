import { Hono } from 'hono';
import { z } from 'zod';
import { REVOCATION_KINDS, RevocationRequestSchema, type Revocation } from '../../data/revocation-schema.ts';
import type { AddedRevocations, Revocations } from '../../data/revocations.ts';
import { ArbiterError } from '../../errors.ts';
import { adminProblem } from '../admin-errors.ts';
import { requireScope, stillUnrevoked, type AdminAuthDeps, type AdminVariables } from '../middleware/admin-auth.ts';
import { jsonBody } from '../middleware/json-body.ts';
import { noQueryParameters, parseQuery, queryInteger } from '../query-parameters.ts';

export interface RevocationRouteDeps {
  revocations: Revocations;
  admin: AdminAuthDeps;
  bodyLimitBytes: number;
  /**
   * Fetches the key sets of the issuers with this `iss` again (never rejects). Called once an
   * `issued_before` revocation is committed, before answering: that revocation answers a key
   * compromise, and the key removed at the issuer must not keep verifying new tokens for as
   * long as the key set fetched before stays fresh (jwks_cache_max_age_s).
   */
  reloadIssuerKeys?: (iss: string) => Promise<void>;
}

/** One revocation, or many at once (committed in one transaction). */
export const revocationRequestSchema = z.union([
  RevocationRequestSchema,
  z.strictObject({ revocations: z.array(RevocationRequestSchema).min(1).max(10_000) }),
]);

export const listQuerySchema = z.strictObject({
  kind: z.enum(REVOCATION_KINDS).optional(),
  limit: queryInteger(1, 1000).optional(),
  // The id of the previous page's last entry (a lowercase UUIDv7, as ids are minted): the store
  // lists ids after it, so any other string would answer an empty or shifted page, not an error.
  cursor: z
    .string()
    .regex(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'must be the next_cursor of a previous page')
    .optional(),
});

/** Revocations take effect on the next decision after the 2xx, including for cached token verifications. */
export function revocationRoutes(deps: RevocationRouteDeps) {
  const read = requireScope(deps.admin, 'arbiter.revocations.read');
  const write = requireScope(deps.admin, 'arbiter.revocations.write');

  return new Hono<{ Variables: AdminVariables }>()
    .post('/v1/revocations', write, noQueryParameters, jsonBody(revocationRequestSchema, { limitBytes: deps.bodyLimitBytes }), stillUnrevoked, async (c) => {
      const body = c.get('body');
      const createdBy = `${c.get('admin').iss}#${c.get('admin').sub}`;
      let added: AddedRevocations;
      try {
        added = 'revocations' in body
          ? await deps.revocations.submitMany(body.revocations.map((r) => ({ ...r, created_by: createdBy })))
          : await deps.revocations.submit({ ...body, created_by: createdBy });
      } catch (error) {
        return adminProblem(c, error);
      }
      const entries: Revocation[] = added.entries;
      const compromised = new Set(entries.flatMap((entry) => (entry.kind === 'issued_before' ? [entry.iss] : [])));
      if (deps.reloadIssuerKeys) await Promise.all([...compromised].map((iss) => deps.reloadIssuerKeys!(iss)));
      // 200 when nothing was added: every entry restates one in force (a replay), answered as it stands.
      const status = added.created > 0 ? 201 : 200;
      return 'revocations' in body ? c.json({ revocations: entries }, status) : c.json(entries[0]!, status);
    })
    .get('/v1/revocations', read, (c) => {
      const query = parseQuery(c, listQuerySchema, 'revocation_invalid');
      if (!query.ok) return adminProblem(c, query.error);
      return c.json(deps.revocations.list(query.data));
    })
    .get('/v1/revocations/:id', read, noQueryParameters, (c) => {
      const entry = deps.revocations.get(c.req.param('id'));
      return entry ? c.json(entry) : adminProblem(c, new ArbiterError('revocation_not_found', `no revocation ${c.req.param('id')}`));
    })
    .delete('/v1/revocations/:id', write, noQueryParameters, (c) => {
      try {
        return deps.revocations.remove(c.req.param('id'))
          ? c.body(null, 204)
          : adminProblem(c, new ArbiterError('revocation_not_found', `no revocation ${c.req.param('id')}`));
      } catch (error) {
        return adminProblem(c, error);
      }
    });
}
