import type { MiddlewareHandler } from 'hono';
import { randomUUID } from 'node:crypto';

export type RequestIdVariables = { requestId: string };

/** A caller-chosen id is echoed only if it is short, printable text; anything else is replaced. */
const ACCEPTABLE_REQUEST_ID = /^[\x21-\x7e]{1,128}$/;

/** Echoes X-Request-ID (or mints one) so gateways can correlate their logs with decisions. */
export function requestId(): MiddlewareHandler<{ Variables: RequestIdVariables }> {
  return async (c, next) => {
    const offered = c.req.header('x-request-id');
    const id = offered !== undefined && ACCEPTABLE_REQUEST_ID.test(offered) ? offered : randomUUID();
    c.set('requestId', id);
    c.header('X-Request-ID', id);
    await next();
  };
}
