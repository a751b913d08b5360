import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { MAX_FIELD_ERRORS } from '../errors.ts';

/** One offending field of a request, as a JSON pointer into the body, plus what is wrong with it. */
export interface FieldError {
  pointer: string;
  detail: string;
}

export interface Problem {
  /** Stable, machine-readable: also the last segment of `type`. */
  code: string;
  title: string;
  detail?: string;
  errors?: FieldError[];
  /** How many offending fields were found beyond the MAX_FIELD_ERRORS `errors` lists. */
  errors_omitted?: number;
  [extension: string]: unknown;
}

/**
 * The `errors` members of a problem: at most MAX_FIELD_ERRORS of them, and how many more were
 * found (`omitted` counts those a check found but did not list).
 */
export function fieldErrorMembers(errors: readonly FieldError[], omitted = 0): Pick<Problem, 'errors' | 'errors_omitted'> {
  const more = Math.max(0, errors.length - MAX_FIELD_ERRORS) + omitted;
  return { errors: errors.slice(0, MAX_FIELD_ERRORS), ...(more > 0 && { errors_omitted: more }) };
}

export const PROBLEM_TYPE_BASE = 'urn:arbiter:problem:';
export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

/** An RFC 9457 problem details response. */
export function problem(c: Context, status: ContentfulStatusCode, body: Problem, headers: Record<string, string> = {}): Response {
  return c.body(problemDocument(status, body, c.req.path), status, { 'Content-Type': PROBLEM_CONTENT_TYPE, ...headers });
}

/** The problem details document as JSON text; `instance` is the request path when there is one. */
export function problemDocument(status: number, body: Problem, instance?: string): string {
  const { code, ...rest } = body;
  return JSON.stringify({ type: `${PROBLEM_TYPE_BASE}${code}`, status, code, ...rest, ...(instance !== undefined && { instance }) });
}
