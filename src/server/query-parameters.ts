import type { Context } from 'hono';
import type { z } from 'zod';
import { ArbiterError } from '../errors.ts';

/**
 * The query string of a request as `schema` reads it, or an ArbiterError with `code` naming each
 * bad parameter (`from: must be ...; colour: unknown parameter`). A parameter given more than
 * once (`kind=sub&kind=jti`) is refused: c.req.query() keeps the first value of each, so the
 * other would be dropped without a word and the answer be to another question than the one asked.
 */
export function parseQuery<S extends z.ZodType>(c: Context, schema: S, code: string): { ok: true; data: z.output<S> } | { ok: false; error: ArbiterError } {
  const repeated = Object.entries(c.req.queries()).filter(([, values]) => values.length > 1);
  if (repeated.length > 0) return { ok: false, error: new ArbiterError(code, repeated.map(([key]) => `${key}: given more than once`).join('; ')) };
  const query = schema.safeParse(c.req.query());
  if (query.success) return { ok: true, data: query.data };
  const detail = query.error.issues
    .flatMap((issue) => (issue.code === 'unrecognized_keys' ? issue.keys.map((key) => `${key}: unknown parameter`) : [`${issue.path.join('.')}: ${issue.message}`]))
    .join('; ');
  return { ok: false, error: new ArbiterError(code, detail) };
}
