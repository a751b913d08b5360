import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { RequestError } from '@hono/node-server';
import { PROBLEM_CONTENT_TYPE, problemDocument } from './problem.ts';

/** What Node's HTTP parser refuses before any route runs, as the problem the client gets. */
const CLIENT_ERRORS: Readonly<Record<string, { status: number; code: string; title: string; detail: string }>> = {
  HPE_HEADER_OVERFLOW: { status: 431, code: 'headers_too_large', title: 'Request headers too large', detail: 'the request headers exceed the server limit (an access token belongs in the body of a decision request)' },
  ERR_HTTP_REQUEST_TIMEOUT: { status: 408, code: 'request_timeout', title: 'Request timeout', detail: 'the whole request did not arrive within server.request_timeout_s' },
};
const MALFORMED = { status: 400, code: 'malformed_request', title: 'Malformed request', detail: 'the request is not valid HTTP (e.g. a raw non-ASCII byte in its target)' };

/**
 * Node answers a request it cannot parse (or that arrives too slowly) with a bare status line;
 * Arbiter's errors are problem+json everywhere, so these are too. The connection is closed.
 */
export function answerClientError(error: NodeJS.ErrnoException, socket: Duplex): void {
  // A client that went away, or one whose current response has begun, gets nothing more (as in
  // Node's own handler; a keep-alive connection that answered earlier requests still gets one).
  // Nor does a connection that never spoke HTTP: an HTTPS server passes its TLS failures here
  // (a handshake that timed out, plain HTTP sent to the TLS port), and what is written on a
  // TLS socket whose handshake failed waits for a handshake that never comes, the connection
  // held open meanwhile.
  const parserError = error.code !== undefined && (error.code.startsWith('HPE_') || error.code in CLIENT_ERRORS);
  if (!parserError || !socket.writable || (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent) {
    socket.destroy();
    return;
  }
  const { status, ...problem } = CLIENT_ERRORS[error.code ?? ''] ?? MALFORMED;
  endWithProblem(socket, status, problem);
}

/**
 * Node hands a CONNECT request to the server's `connect` listeners, never to the request
 * handler, and without one it drops the connection unanswered. Arbiter is an origin server,
 * not a proxy: no resource of it allows CONNECT, so 405 with an empty Allow (RFC 9110 10.2.1).
 */
export function answerConnect(_request: unknown, socket: Duplex): void {
  endWithProblem(
    socket,
    405,
    { code: 'method_not_allowed', title: 'Method not allowed', detail: 'CONNECT is not served: Arbiter is not a proxy' },
    'Allow: \r\n',
  );
}

function endWithProblem(socket: Duplex, status: number, problem: { code: string; title: string; detail: string }, extraHeaders = ''): void {
  const body = problemDocument(status, problem);
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: ${PROBLEM_CONTENT_TYPE}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extraHeaders}Connection: close\r\n\r\n${body}`,
  );
}

/**
 * What the HTTP adapter refuses before the app runs, once Node has parsed the request: a
 * backslash in the path, the asterisk form (`OPTIONS *`), a Host header that is not a host. It
 * would answer a bare 400 without a body. Anything else it catches was thrown by the app's own
 * fetch before it could answer (the app answers its errors itself): a 500, as the app's would be.
 */
export function adapterErrorResponse(error: unknown): Response {
  const { status, ...problem } =
    error instanceof RequestError
      ? { ...MALFORMED, detail: `the request target or Host header is not valid: ${error.message}` }
      : { status: 500, code: 'internal_error', title: 'Internal error', detail: 'see the server log' };
  return new Response(problemDocument(status, problem), { status, headers: { 'Content-Type': PROBLEM_CONTENT_TYPE } });
}
