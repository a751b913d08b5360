import { ArbiterError } from '../errors.ts';
import { reachesThisMachine } from '../net/this-machine.ts';
import { isObject } from '../is-object.ts';
import { printable } from './printable.ts';

/** How CLI commands reach a running Arbiter's admin API: --url / $ARBITER_URL, --token / $ARBITER_TOKEN. */
export interface AdminClientOptions {
  url?: string | undefined;
  token?: string | undefined;
  /** Print answers (and problems) as JSON on stdout, for scripts. */
  json?: boolean | undefined;
  /**
   * How long to wait for an answer to begin (adminRequest: for the whole of it, read at once);
   * 0 waits as long as it takes (a verify of a large log). Default 30 s.
   */
  answerTimeoutMs?: number | undefined;
}

const DEFAULT_URL = 'http://127.0.0.1:8181';

/** What to do next, for the failures an operator can fix, by problem code. */
const NEXT_STEP: Record<string, string> = {
  unauthorized: 'pass a valid admin token (--token or $ARBITER_TOKEN) from an admin.issuers issuer',
  forbidden: 'the token lacks the scope this endpoint needs (see the problem detail)',
  admin_keys_unavailable: 'the server cannot fetch the key set of your token\'s issuer (see the problem detail): retry once the identity provider answers; the token may be fine',
  decision_log_disabled: 'set decision_log.enabled: true in the server configuration',
  decision_not_found: 'check the id; records older than decision_log.retention are pruned',
  decision_query_invalid: 'see arbiter decisions --help for the filter formats',
  decision_cursor_invalid: 'start again without --cursor',
  decision_export_incomplete: 'retention deleted records while they were exported: run the export again (what retention deleted is gone); with retention by age alone, an export --from a time younger than max_age_days is not affected',
  decision_query_incomplete: 'retention deleted records since the first page: run the query again without --cursor (what retention deleted is gone); with retention by age alone, a query --from a time younger than max_age_days is not affected',
  decision_log_corrupt: 'keep the database file as evidence and restore that record from a backup or shipped copy (arbiter decisions verify checks the chain)',
  bundle_not_found: 'arbiter bundle list shows the bundles and their stored revisions',
  bundle_revision_not_found: 'arbiter bundle list shows the stored revisions',
  bundle_revision_pruned: 'arbiter bundle list shows the revisions still stored (bundles.retention.max_revisions); push the pruned one again to serve it',
  signature_missing: 'sign the bundle (opa build --signing-key ... or opa sign) or set bundles.require_signatures: false',
  bundle_replayed: 'push a newer revision, or activate an older one explicitly with arbiter bundle activate',
  wasm_check_interrupted: 'the evaluation worker crashed while checking the module, which says nothing against it: push again (the server log says why the worker stopped)',
};

/** What to do about a problem `code`, when there is advice for it. */
export function nextStep(code: string): string | undefined {
  return Object.hasOwn(NEXT_STEP, code) ? NEXT_STEP[code] : undefined;
}

export function adminBaseUrl(options: AdminClientOptions): string {
  return options.url ?? process.env.ARBITER_URL ?? DEFAULT_URL;
}

/** Node's codes for a server certificate that does not verify (OpenSSL's, and the name check's). */
const TLS_CERTIFICATE_ERRORS: ReadonlySet<string> = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** How long a request waits for its answer to begin. */
const ANSWER_TIMEOUT_MS = 30_000;

function answerTimeoutMs(options: AdminClientOptions): number {
  return options.answerTimeoutMs ?? ANSWER_TIMEOUT_MS;
}

/**
 * `path` below the base URL, path included (an Arbiter behind a proxy at /arbiter gets
 * /arbiter/v1/...: the admin token must not go to another backend at the root). A base that is
 * not an http(s) URL without credentials is a usage error, and is never echoed whole.
 */
export function adminUrl(base: string, path: string): URL {
  const parsed = URL.parse(base);
  if (parsed === null) throw new ArbiterError('usage', 'the server URL (--url or $ARBITER_URL) is not a URL');
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new ArbiterError('usage', `the server URL (--url or $ARBITER_URL) must be an http(s) URL, not ${parsed.protocol}`);
  }
  if (parsed.username !== '' || parsed.password !== '') {
    throw new ArbiterError('usage', 'the server URL (--url or $ARBITER_URL) must not carry user:password@: the admin token authenticates');
  }
  // Set piece by piece: a joined string starting with // (a base path of //arbiter) would be
  // read as another host.
  const query = path.indexOf('?');
  const url = new URL(parsed.origin);
  url.pathname = `${parsed.pathname.replace(/\/+$/, '')}${query === -1 ? path : path.slice(0, query)}`;
  url.search = query === -1 ? '' : path.slice(query);
  if (url.origin !== parsed.origin) throw new ArbiterError('usage', 'the server URL (--url or $ARBITER_URL) has a path that would change its host');
  return url;
}

let warnedOfPlainHttp = false;

/**
 * Says (once a process) that the admin token is about to cross the network in clear: plain http
 * to a host that is not this machine. Not refused: http to a server on a private network, or to a
 * proxy on that host that forwards it, may be what the operator means; but whoever can watch
 * that path can read the token and use it until it expires, and nothing else would say so.
 * Loopback is judged by how the URL spells its host (a name is not resolved for this).
 */
function warnOfPlainHttp(url: URL): void {
  if (warnedOfPlainHttp || url.protocol !== 'http:' || reachesThisMachine(url.hostname)) return;
  warnedOfPlainHttp = true;
  console.error(
    `arbiter: warning: the admin token goes to ${url.host} over plain http, which is not this machine: anyone on the way can read and reuse it; use an https:// URL (--url or $ARBITER_URL), or http:// to a loopback address`,
  );
}

/** The response, or undefined (reported on stderr) when the server cannot be reached. */
export async function adminSend(
  options: AdminClientOptions,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: Uint8Array,
  whole?: AbortSignal,
): Promise<Response | undefined> {
  const base = adminBaseUrl(options);
  const token = options.token ?? process.env.ARBITER_TOKEN;
  if (!token) throw new ArbiterError('usage', 'an admin token is required: --token or $ARBITER_TOKEN');
  // Checked here, never echoed: fetch's own error for a bad header value quotes the whole token.
  if (!/^[\x21-\x7e]+$/.test(token)) {
    throw new ArbiterError('usage', 'the admin token (--token or $ARBITER_TOKEN) holds spaces, line breaks or non-ASCII characters: pass the token alone, on one line');
  }
  const url = adminUrl(base, path);
  warnOfPlainHttp(url);
  // Until the answer starts, not while it streams (an export runs as long as the log is long):
  // a server that accepts and never answers must not hang the CLI.
  const answering = new AbortController();
  const limitMs = answerTimeoutMs(options);
  const timer = limitMs > 0 ? setTimeout(() => answering.abort(), limitMs) : undefined;
  // `whole` (adminRequest's) goes on limiting the body once this returns.
  const signal = whole === undefined ? answering.signal : AbortSignal.any([answering.signal, whole]);
  try {
    // Not followed: Arbiter never redirects, and fetch would drop the token for another host
    // and then trust whoever answers there (a verify "intact", an export, a push's archive sent on).
    const response = await fetch(url, {
      method,
      headers: { authorization: `Bearer ${token}`, ...headers },
      ...(body && { body: new Uint8Array(body) }),
      signal,
      redirect: 'manual',
    });
    if (response.status >= 300 && response.status < 400) {
      await response.body?.cancel();
      const location = URL.parse(response.headers.get('location') ?? '', url)?.href ?? 'nowhere it says';
      console.error(`arbiter: ${method} ${path} answered a redirect (${response.status}) to ${location}: Arbiter does not redirect, so that is not its answer; point --url (or $ARBITER_URL) at the server itself`);
      return undefined;
    }
    return response;
  } catch (error) {
    if (signal.aborted) {
      console.error(`arbiter: ${base} did not answer ${method} ${path} within ${limitMs / 1000} s`);
      return undefined;
    }
    const cause = (error as Error).cause instanceof Error ? ((error as Error).cause as NodeJS.ErrnoException) : (error as NodeJS.ErrnoException);
    if (cause.code !== undefined && TLS_CERTIFICATE_ERRORS.has(cause.code)) {
      // It answered: "is the server running?" would send the operator looking in the wrong place.
      console.error(`arbiter: ${base}: the server's TLS certificate is not trusted: ${cause.message}\n  for a certificate from a private CA, set NODE_EXTRA_CA_CERTS to the CA's PEM file`);
      return undefined;
    }
    console.error(`arbiter: ${base} is unreachable: ${cause.message}; is the server running? (--url or $ARBITER_URL)`);
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

/** Sends one admin request; prints the JSON answer with --json, the problem on failure. Undefined means failure. */
export async function adminRequest(
  options: AdminClientOptions,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: Uint8Array,
  expected?: AnswerShape,
): Promise<unknown> {
  // The answer is read whole, and is small: a body that stalls after its headers (a proxy in
  // trouble) must not hang the CLI past the limit either.
  const limitMs = answerTimeoutMs(options);
  const whole = new AbortController();
  const timer = limitMs > 0 ? setTimeout(() => whole.abort(), limitMs) : undefined;
  try {
    const response = await adminSend(options, method, path, headers, body, whole.signal);
    if (response === undefined) return undefined;
    let text: string;
    try {
      text = await response.text();
    } catch (error) {
      if (whole.signal.aborted) {
        console.error(`arbiter: ${adminBaseUrl(options)} did not send its whole answer to ${method} ${path} within ${limitMs / 1000} s`);
        return undefined;
      }
      const cause = (error as Error).cause instanceof Error ? ((error as Error).cause as Error).message : (error as Error).message;
      console.error(`arbiter: ${method} ${path}: the connection closed before the whole answer arrived (${cause})`);
      return undefined;
    }
    return readAnswer(options, method, path, response, text, expected);
  } finally {
    clearTimeout(timer);
  }
}

/** The answer, when it is a success in JSON of the expected shape; else says why not (undefined). */
function readAnswer(options: AdminClientOptions, method: string, path: string, response: Response, text: string, expected: AnswerShape | undefined): unknown {
  if (!response.ok) {
    reportFailure(options, method, path, response, text);
    return undefined;
  }
  let answer: unknown;
  try {
    answer = JSON.parse(text) as unknown;
  } catch {
    // A proxy's page, not Arbiter: say so instead of a parser's stack trace.
    console.error(`arbiter: ${method} ${path} answered ${response.status} with something that is not JSON; is ${adminBaseUrl(options)} an Arbiter server?`);
    return undefined;
  }
  if (expected && !expected.check(answer)) {
    // Another service's JSON ({"status": "ok"}): say so instead of a TypeError further on.
    console.error(`arbiter: ${method} ${path} answered JSON that is not ${expected.shape}; is ${adminBaseUrl(options)} an Arbiter server?`);
    return undefined;
  }
  if (options.json) console.log(text);
  return answer;
}

/** What a command needs of an answer before it reads it: a check and how to name it. */
export interface AnswerShape {
  shape: string;
  check(answer: unknown): boolean;
}

/** An answer that is an object whose named members pass their checks. */
export function objectWith(shape: string, members: Record<string, (value: unknown) => boolean>): AnswerShape {
  return {
    shape,
    check: (answer) => isObject(answer) && Object.entries(members).every(([name, check]) => check(answer[name])),
  };
}

/** Says on stderr what failed and what to do next; echoes the problem on stdout with --json. Returns exit code 1. */
export function reportFailure(options: AdminClientOptions, method: string, path: string, response: Response, text: string): number {
  let problem: { code?: unknown; detail?: string } | undefined;
  try {
    problem = JSON.parse(text) as { code?: unknown; detail?: string };
  } catch {
    problem = undefined;
  }
  if (options.json && problem !== undefined) console.log(text);
  // A proxy's page or an empty 404 (a URL missing the path Arbiter is served under): no code to
  // report, and "error" would send the operator nowhere.
  if (!isObject(problem)) {
    console.error(`arbiter: ${method} ${path} failed with ${response.status}, and the answer is not a problem document: is ${adminBaseUrl(options)} an Arbiter server (its host, port and path)?`);
    return 1;
  }
  // Another server's JSON may hold any `code`: only a string is one, and only Arbiter's codes have advice.
  const code = typeof problem?.code === 'string' ? problem.code : 'error';
  const next = nextStep(code);
  // Escaped as listings are: a detail quotes what others wrote (a revision, a subject), and the
  // server answering may not be Arbiter at all.
  const detail = typeof problem?.detail === 'string' && problem.detail !== '' ? `: ${printable(problem.detail)}` : '';
  console.error(`arbiter: ${method} ${path} failed with ${response.status}: ${printable(code)}${detail}${next ? `\n  ${next}` : ''}`);
  return 1;
}
