import type { HttpBindings } from '@hono/node-server';
import type { Context, MiddlewareHandler } from 'hono';
import type { z } from 'zod';
import { problem, type FieldError } from '../problem.ts';

const JSON_MEDIA_TYPE = /^application\/([\w.-]+\+)?json$/i;

export type JsonBodyVariables<T> = { body: T };

export interface JsonBodyOptions {
  limitBytes: number;
  /** Status for a body that is not JSON: 415 by default; AuthZEN answers every malformed request with 400. */
  unsupportedMediaTypeStatus?: 400 | 415;
}

/**
 * Reads a JSON request body within a size limit and validates it with a zod schema.
 * Each failure is a problem response naming what is wrong: 415 (or the configured status) for another media type,
 * 413 over the limit, 400 for malformed JSON or a field that does not fit the schema.
 */
export function jsonBody<S extends z.ZodType>(schema: S, options: JsonBodyOptions): MiddlewareHandler<{ Variables: JsonBodyVariables<z.infer<S>> }> {
  return async (c, next) => {
    const mediaType = (c.req.header('content-type') ?? '').split(';')[0]!.trim();
    if (!JSON_MEDIA_TYPE.test(mediaType)) {
      return problem(c, options.unsupportedMediaTypeStatus ?? 415, {
        code: 'unsupported_media_type',
        title: 'Unsupported media type',
        detail: `send the body as application/json (got ${mediaType ? JSON.stringify(mediaType) : 'no Content-Type'})`,
      });
    }
    const bytes = await readLimited(c, options.limitBytes);
    if (bytes === undefined) {
      return problem(c, 413, {
        code: 'body_too_large',
        title: 'Request body too large',
        detail: `the body exceeds ${options.limitBytes} bytes`,
      });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
    } catch (error) {
      return problem(c, 400, {
        code: 'malformed_json',
        title: 'Malformed JSON',
        detail: bytes.byteLength === 0 ? 'the request body is empty' : `the body is not valid JSON: ${(error as Error).message}`,
      });
    }
    const result = schema.safeParse(parsed);
    if (!result.success) {
      const errors = fieldErrors(result.error);
      return problem(c, 400, {
        code: 'invalid_request',
        title: 'Invalid request',
        detail: errors.map((e) => `${e.pointer || '/'}: ${e.detail}`).join('; '),
        errors,
      });
    }
    c.set('body', result.data);
    await next();
  };
}

export function fieldErrors(error: z.ZodError): FieldError[] {
  return error.issues.flatMap((issue) => issueErrors(issue, []));
}

function issueErrors(issue: z.core.$ZodIssue, prefix: PropertyKey[]): FieldError[] {
  const path = [...prefix, ...issue.path];
  if (issue.code === 'invalid_union' && issue.errors.length > 0) {
    // Report against the alternative the body came closest to, not "invalid input" at the root.
    const closest = issue.errors.reduce((best, branch) => (branch.length < best.length ? branch : best));
    return closest.flatMap((inner) => issueErrors(inner, path));
  }
  const base = path.map((segment) => `/${pointerToken(segment)}`).join('');
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({ pointer: `${base}/${pointerToken(key)}`, detail: 'unknown field' }));
  }
  return [{ pointer: base, detail: issue.message }];
}

/** One RFC 6901 reference token: `~` and `/` escaped, so a key holding them still points at itself. */
function pointerToken(segment: PropertyKey): string {
  return String(segment).replaceAll('~', '~0').replaceAll('/', '~1');
}

/**
 * The body, or undefined once it passes the limit (checked while reading, not after). On
 * Node the request stream is read directly: the web-stream adapter costs more than the
 * parse on small bodies.
 */
async function readLimited(c: Context, limit: number): Promise<Uint8Array | undefined> {
  const declared = Number(c.req.header('content-length'));
  if (Number.isFinite(declared) && declared > limit) return undefined;
  const incoming = (c.env as Partial<HttpBindings> | undefined)?.incoming;
  const body: AsyncIterable<Uint8Array> | null = incoming && !incoming.readableDidRead ? incoming : c.req.raw.body;
  if (!body) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.byteLength;
    if (size > limit) return undefined;
    chunks.push(chunk);
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}
