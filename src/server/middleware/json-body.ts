import type { HttpBindings } from '@hono/node-server';
import type { Context, MiddlewareHandler } from 'hono';
import { gunzip } from 'node:zlib';
import { promisify } from 'node:util';
import type { z } from 'zod';
import { fieldErrorMembers, problem, type FieldError } from '../problem.ts';
import { listReasons } from '../../errors.ts';
import { formatJsonPointer } from '../../data/json-pointer.ts';
import { jsonDefect, MAY_OVERFLOW } from '../../data/json-value.ts';

const JSON_MEDIA_TYPE = /^application\/([\w.-]+\+)?json$/i;

/** Default for JsonBodyOptions.maxDepth: request shapes nest a few levels, caller properties a few more. */
const DEFAULT_MAX_BODY_DEPTH = 64;

/**
 * After a fatal UTF-8 decode, the only way a string can hold a lone surrogate is the escape
 * \uD800-\uDFFF: bodies without one skip the walk for it.
 */
const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;

export type JsonBodyVariables<T> = { body: T };

export interface JsonBodyOptions {
  limitBytes: number;
  /**
   * Deepest nesting of objects and arrays accepted (the body itself is level 1), so that no
   * request can exhaust the stack of what walks it later (recording, masking, policy input).
   */
  maxDepth?: number;
  /** Status for a body that is not JSON: 415 by default; AuthZEN answers every malformed request with 400. */
  unsupportedMediaTypeStatus?: 400 | 415;
  /**
   * Accepts `Content-Encoding: gzip` (OPA's data API does, and OPA clients send it): the
   * decompressed body is held to `limitBytes` as well, so a small archive cannot inflate past it.
   */
  gzip?: boolean;
  /**
   * The only media types taken (lowercase, without parameters), when not every JSON one is: a
   * body of a JSON type that means something else (a merge patch sent to a JSON Patch endpoint)
   * is refused by its type, naming these, rather than fail the schema as if it were malformed.
   */
  mediaTypes?: readonly string[];
}

const gunzipAsync = promisify(gunzip);

/**
 * Reads a JSON request body within a size limit and validates it with a zod schema.
 * Each failure is a problem response naming what is wrong: 415 (or the configured status) for another media type
 * or a content coding,
 * 413 over the limit, 400 for malformed JSON or a field that does not fit the schema.
 */
export function jsonBody<S extends z.ZodType>(schema: S, options: JsonBodyOptions): MiddlewareHandler<{ Variables: JsonBodyVariables<z.infer<S>> }> {
  return async (c, next) => {
    const mediaType = (c.req.header('content-type') ?? '').split(';')[0]!.trim();
    const accepted = options.mediaTypes;
    if (accepted ? !accepted.includes(mediaType.toLowerCase()) : !JSON_MEDIA_TYPE.test(mediaType)) {
      return problem(c, options.unsupportedMediaTypeStatus ?? 415, {
        code: 'unsupported_media_type',
        title: 'Unsupported media type',
        detail: `send the body as ${accepted ? accepted.join(' or ') : 'application/json'} (got ${mediaType ? JSON.stringify(mediaType) : 'no Content-Type'})`,
      });
    }
    const encoded = contentEncodingProblem(c, options.unsupportedMediaTypeStatus ?? 415, options.gzip ? GZIP_CODINGS : NO_CODINGS);
    if (encoded !== undefined) return encoded;
    const gzipped = options.gzip === true && isGzip(c);
    let bytes = await readRequestBody(c, options.limitBytes);
    if (bytes !== undefined && gzipped) {
      try {
        bytes = await gunzipAsync(bytes, { maxOutputLength: options.limitBytes });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ERR_BUFFER_TOO_LARGE') {
          return problem(c, 400, { code: 'malformed_json', title: 'Malformed JSON', detail: `the body is not valid gzip (Content-Encoding: gzip): ${(error as Error).message}` });
        }
        bytes = undefined;
      }
    }
    if (bytes === undefined) {
      return problem(c, 413, {
        code: 'body_too_large',
        title: 'Request body too large',
        detail: `the body exceeds ${options.limitBytes} bytes${gzipped ? ' (decompressed)' : ''}`,
      });
    }
    let parsed: unknown;
    let text = '';
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
      parsed = JSON.parse(text);
    } catch (error) {
      return problem(c, 400, {
        code: 'malformed_json',
        title: 'Malformed JSON',
        detail: bytes.byteLength === 0 ? 'the request body is empty' : `the body is not valid JSON: ${(error as Error).message}`,
      });
    }
    const defect = bodyDefect(parsed, text, options.maxDepth ?? DEFAULT_MAX_BODY_DEPTH);
    if (defect !== undefined) {
      return problem(c, 400, { code: 'invalid_request', title: 'Invalid request', detail: `${defect.pointer || '/'}: ${defect.detail}`, errors: [defect] });
    }
    const result = schema.safeParse(parsed);
    if (!result.success) return invalidRequest(c, result.error);
    c.set('body', result.data);
    await next();
  };
}

/**
 * What JSON.parse accepts but nothing after it should get: nesting deeper than `maxDepth`,
 * strings (keys included) with a lone surrogate, which are not Unicode text: the policy's
 * WebAssembly JSON parser refuses them (a deny blaming the policy) and SQLite stores them
 * altered, and numbers past a double's range, which would reach the policy as null (where OPA
 * keeps them: `amount <= limit` would hold for an amount of 1e400). The first such place, as a
 * field error; undefined for a sound body.
 */
function bodyDefect(body: unknown, text: string, maxDepth: number): FieldError | undefined {
  const checkText = SURROGATE_ESCAPE.test(text);
  if (!checkText && !MAY_OVERFLOW.test(text) && !mayNestDeeperThan(text, maxDepth)) return undefined;
  return jsonDefect(body, { maxDepth, checkText });
}

/** False when the text has no more than `maxDepth` opening brackets at all, so it cannot nest deeper. */
function mayNestDeeperThan(text: string, maxDepth: number): boolean {
  let brackets = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if ((code === 0x7b || code === 0x5b) && ++brackets > maxDepth) return true;
  }
  return false;
}

/** The 400 invalid_request answer to a value its schema refuses: every field by pointer, in `detail` and `errors`. */
export function invalidRequest(c: Context, error: z.ZodError): Response {
  const errors = fieldErrors(error);
  return problem(c, 400, {
    code: 'invalid_request',
    title: 'Invalid request',
    detail: listReasons(errors.map(describeFieldError)),
    ...fieldErrorMembers(errors),
  });
}

/** A field error as one line of text: its pointer (`/` for the whole body), then what is wrong. */
export function describeFieldError(error: FieldError): string {
  return `${error.pointer || '/'}: ${error.detail}`;
}

export function fieldErrors(error: z.ZodError): FieldError[] {
  return error.issues.flatMap((issue) => issueErrors(issue, []));
}

function issueErrors(issue: z.core.$ZodIssue, prefix: PropertyKey[]): FieldError[] {
  const path = [...prefix, ...issue.path];
  if (issue.code === 'invalid_union' && issue.errors.length > 0) {
    // Report against the alternative the body came closest to, not "invalid input" at the root:
    // the one that misreads its shape least, then the one with fewest issues. A batch of
    // revocations with bad entries is not a single revocation without `kind`, nor is a single
    // one missing fields a batch without `revocations`.
    const closest = issue.errors.reduce((best, branch) => {
      const [misread, bestMisread] = [misreadings(branch), misreadings(best)];
      return misread < bestMisread || (misread === bestMisread && branch.length < best.length) ? branch : best;
    });
    return closest.flatMap((inner) => issueErrors(inner, path));
  }
  const base = formatJsonPointer(path);
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({ pointer: `${base}${formatJsonPointer([key])}`, detail: 'unknown field' }));
  }
  return [{ pointer: base, detail: issue.message }];
}

/**
 * How badly an alternative of a union misreads the value's shape at the union's own level: keys
 * of the value it does not know, and a discriminator (`kind`) it matches no option of. Issues
 * deeper down (a field of the right shape with a bad value) are not misreadings.
 */
function misreadings(branch: readonly z.core.$ZodIssue[]): number {
  let count = 0;
  for (const inner of branch) {
    if (inner.code === 'unrecognized_keys' && inner.path.length === 0) count += inner.keys.length;
    else if (inner.code === 'invalid_union' && inner.errors.length === 0 && inner.path.length === 1) count += 1;
  }
  return count;
}

/**
 * The request body, or undefined once it passes the limit (checked while reading, not after):
 * what was not read is never taken in. On Node the request stream is read directly: the
 * web-stream adapter costs more than the parse on small bodies. (src/read-limited.ts is the
 * same bound for response bodies Arbiter fetches.)
 */
export async function readRequestBody(c: Context, limit: number): Promise<Uint8Array | undefined> {
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

/** The spellings of gzip a Content-Encoding may use (RFC 9110 8.4.1.3: x-gzip is an alias). */
const GZIP_CODINGS: readonly string[] = ['gzip', 'x-gzip'];
const NO_CODINGS: readonly string[] = [];

function isGzip(c: Context): boolean {
  return GZIP_CODINGS.includes((c.req.header('content-encoding') ?? '').trim().toLowerCase());
}

/**
 * Bodies are read as sent unless the route decompresses a coding (`accepted`): a compressed one
 * would read as malformed (JSON, or a bundle archive gzipped twice), and one labelled compressed
 * that is not would be taken for what its label denies (RFC 9110 15.5.16). Any other
 * Content-Encoding but identity is refused, saying so.
 */
export function contentEncodingProblem(c: Context, status: 400 | 415, accepted: readonly string[] = NO_CODINGS): Response | undefined {
  const encoding = (c.req.header('content-encoding') ?? '').trim();
  const coding = encoding.toLowerCase();
  if (encoding === '' || coding === 'identity' || accepted.includes(coding)) return undefined;
  return problem(
    c,
    status,
    {
      code: 'unsupported_media_type',
      title: 'Unsupported media type',
      detail: `send the body ${accepted.length > 0 ? 'gzipped or ' : ''}uncompressed (got Content-Encoding ${JSON.stringify(encoding)})`,
    },
    { 'Accept-Encoding': accepted.length > 0 ? 'gzip, identity' : 'identity' },
  );
}
