import type { Context, MiddlewareHandler } from 'hono';
import { z } from 'zod';
import { ArbiterError } from '../errors.ts';
import { problem } from './problem.ts';

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

/**
 * For admin operations that take no query parameters (the catalogue gives them no `query`):
 * one given is refused before anything is done. `DELETE /v1/bundles/x?revision=r1` would
 * otherwise remove every revision of x, not the one its caller meant.
 */
export const noQueryParameters: MiddlewareHandler = async (c, next) => {
  const url = c.req.url;
  const start = url.indexOf('?');
  const names = start === -1 ? [] : [...new Set(new URLSearchParams(url.slice(start + 1)).keys())];
  if (names.length === 0) return next();
  return problem(c, 400, {
    code: 'query_parameter_unknown',
    title: 'Unknown query parameter',
    detail: `${c.req.method} ${c.req.path} takes no query parameters: ${names.map((name) => `${name}: unknown parameter`).join('; ')}`,
  });
};

/**
 * A whole number given as a query parameter, written as a client writes an integer: decimal
 * digits. z.coerce.number() would read "0x10" as 16, "1e3" as 1000 and " 5" or "" as numbers,
 * answering another question than the one asked instead of refusing it. The document shows
 * it as an integer from `min` to `max`.
 */
export function queryInteger(min: number, max: number) {
  return z.preprocess(
    (value) => (typeof value === 'string' && /^[0-9]+$/.test(value) ? Number(value) : value),
    // Each check says what it wants: the type's message alone would tell a caller who sent
    // limit=5000 that 5000 is no whole number, leaving the bound to guess.
    z
      .number({ error: 'must be a whole number in decimal digits' })
      .int({ error: 'must be a whole number in decimal digits' })
      .min(min, { error: `must be at least ${min}` })
      .max(max, { error: `must be at most ${max}` }),
  );
}
