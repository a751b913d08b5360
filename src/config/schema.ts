import { resolve } from 'node:path';
import { z } from 'zod';
import { decisionLogConfigSchema } from '../decisions/config.ts';
import { allowedHostSchema } from './allowed-hosts.ts';
import { gatewaySchema, tlsSchema } from './gateway.ts';
import { MIN_TIMER_DELAY_S, timerDelayMs, timerDelaySeconds, timerIntervalSeconds } from './timer-delay.ts';
import { bundleNameSchema } from '../policy/bundle-name.ts';
import { MAX_PRUNED_RECORDS } from '../policy/store.ts';
import { BUNDLE_SIGNING_ALGORITHMS, excludePatternSchema } from '../policy/signatures.ts';
import { DEV_AUDIENCES, DEV_ISSUER } from '../tokens/dev-issuer.ts';

/**
 * The one schema for Arbiter's configuration (YAML file + ARBITER_* overrides).
 * Keys are snake_case like OPA's config; every default lives here and nowhere else.
 */

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

/**
 * Whether a configured host (a URL's hostname, or server.host as written, IPv6 with or without
 * brackets) spells this machine's loopback: `localhost`, 127.0.0.0/8 or ::1. By spelling only,
 * before any name is resolved; net/this-machine.ts judges resolved addresses, and
 * server/middleware/host-check.ts the Host names a browser cannot be pointed elsewhere for.
 */
function isLoopbackHost(hostname: string): boolean {
  return LOOPBACK_HOSTS.has(hostname) || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

/**
 * Whether Arbiter may fetch from `url` by its scheme: https, or plain http to a loopback host,
 * so nothing it fetches (key sets, bundles, the credentials sent for them) crosses the network
 * in clear text. The rule of jwks_uri, bundle source URLs and every redirect a poll follows.
 */
export function isHttpsOrLoopbackHttp(url: URL): boolean {
  return url.protocol === 'https:' || (url.protocol === 'http:' && isLoopbackHost(url.hostname));
}

/**
 * An absolute URL Arbiter fetches from: https unless loopback (isHttpsOrLoopbackHttp), and no
 * user:password@, which fetch refuses with the whole URL in its error (and so in every reason,
 * log line and /readyz entry that repeats it). `userinfoAdvice` ends the refusal of
 * user:password@: where the credential goes instead for this key.
 */
function fetchedUrl(userinfoAdvice: string) {
  return z
    .url({ message: 'must be an absolute URL' })
    // URL.parse: zod runs refinements even after z.url() failed, and new URL() would throw.
    .refine((value) => {
      const url = URL.parse(value);
      return url === null || isHttpsOrLoopbackHttp(url);
    }, 'must use https (plain http is allowed only for loopback hosts)')
    .refine((value) => {
      const url = URL.parse(value);
      return url === null || (url.username === '' && url.password === '');
    }, `must not carry user:password@ (${userinfoAdvice})`);
}

const nonEmpty = z.string().trim().min(1, 'must not be empty');

/**
 * A map keyed by names (signing key ids, tenants, documents), trimmed as nonEmpty trims values.
 * Two names that differ only by surrounding whitespace would become one, the last silently
 * replacing the first (another key, another tenant's bundle): refused, naming the second.
 */
function nameMap<V extends z.ZodType>(value: V) {
  return z
    .record(z.string().refine((name) => name.trim() !== '', 'must not be empty'), value)
    .superRefine((map, ctx) => {
      const seen = new Map<string, string>();
      for (const name of Object.keys(map)) {
        const other = seen.get(name.trim());
        if (other !== undefined) ctx.addIssue({ code: 'custom', path: [name], message: `is the same name as ${JSON.stringify(other)} once surrounding whitespace is trimmed` });
        seen.set(name.trim(), name);
      }
    })
    .transform((map) => Object.fromEntries(Object.entries(map).map(([name, entry]) => [name.trim(), entry])) as Record<string, z.output<V>>);
}

/**
 * The largest clock_tolerance_s an issuer may have. Revocation rows are kept this long past
 * their expires_at, whatever the tolerance now: a restart with a larger one must find them.
 */
export const MAX_CLOCK_TOLERANCE_S = 300;

/** The largest tokens.max_token_bytes: no claim of a token Arbiter accepts is longer. */
export const MAX_TOKEN_BYTES = 64 * 1024;

/** JWS algorithms Arbiter accepts at all; "none" and unknown names are refused up front. */
const SUPPORTED_ALGORITHMS = [
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512',
  'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519',
  'HS256', 'HS384', 'HS512',
] as const;

// A refused jwks_uri would reach every token of the issuer: its gateway (the deny's reason),
// the decision log and /readyz.
const jwksUri = fetchedUrl('fetch refuses such URLs; a token in the query string is kept out of logs and answers');

export const issuerSchema = z
  .strictObject({
    issuer: nonEmpty.describe('Exact `iss` value of tokens from this issuer.'),
    jwks_uri: jwksUri.optional().describe('Remote JWKS; https unless loopback, no user:password@ (a credential in the query string is shown as `?…` in errors). Plain http is judged by address: the host is resolved once, every address must be this machine (a localhost that /etc/hosts or DNS answers otherwise is refused, token_keys_unavailable) and the connection goes to those addresses, directly; https goes wherever its name resolves, its certificate checked against the name. A redirect is never followed (the fetch fails saying so, token_keys_unavailable): name the key set itself. A key set holding private key material, or a body over 1 MiB (read no further), is refused whole (token_keys_unavailable). After a failed fetch it is not fetched again for 1 s: tokens that need it deny token_keys_unavailable at once meanwhile.'),
    jwks_file: nonEmpty.optional().describe('Local JWKS file (JSON): public keys only, at least one usable with `algorithms`; checked at start-up.'),
    secret_file: nonEmpty
      .optional()
      .describe('File holding the shared secret for HS* algorithms: no shorter than the hash (RFC 7518 §3.2), so 32 bytes for HS256, 48 with HS384 allowed, 64 with HS512.'),
    audiences: z.array(nonEmpty).min(1, 'at least one audience is required').describe('Accepted `aud` values; a token must carry one of them, and only these of its audiences reach the policy as `input.subject.aud`.'),
    algorithms: z.array(z.enum(SUPPORTED_ALGORITHMS)).min(1, 'at least one algorithm is required').describe('JWS algorithms accepted from this issuer (`none` never is).'),
    typ: nonEmpty.optional().describe('Required JWT `typ` header, e.g. at+jwt (RFC 9068). Unset, a `typ` that is not a string is still refused (token_malformed).'),
    required_claims: z.array(nonEmpty).default([]).describe('Claims required besides exp, iat and sub.'),
    clock_tolerance_s: z.number().int().min(0).max(MAX_CLOCK_TOLERANCE_S).default(30).describe('Leeway for exp, nbf and iat.'),
    max_token_age_s: z.number().int().positive('must be greater than 0').default(3600).describe('Oldest `iat` accepted: token_too_old beyond it.'),
    max_lifetime_s: z.number().int().positive('must be greater than 0').default(86_400).describe('Longest exp - iat accepted: token_lifetime_too_long beyond it.'),
    jwks_cache_max_age_s: z.number().int().positive().default(600).describe('Remote JWKS is fetched again after this long, and at once when an issued_before revocation of this issuer is committed (the revocation is answered after that fetch, which waits out the 1 s back-off of a fetch that failed just before).'),
    jwks_cooldown_s: z
      .number()
      .int()
      .min(1, 'must be at least 1 (with 0, every token naming a kid the key set lacks would fetch it again)')
      .default(30)
      .describe('Least time between refetches triggered by an unknown kid; at least 1, or every such token would fetch again.'),
    jwks_timeout_ms: timerDelayMs().default(5000).describe('Timeout of one JWKS fetch, its body included.'),
  })
  .superRefine((issuer, ctx) => {
    const sources = [issuer.jwks_uri, issuer.jwks_file, issuer.secret_file].filter((s) => s !== undefined);
    if (sources.length !== 1) {
      ctx.addIssue({ code: 'custom', message: 'exactly one of jwks_uri, jwks_file, secret_file is required' });
    }
    const hmac = issuer.algorithms.filter((alg) => alg.startsWith('HS'));
    if (issuer.secret_file !== undefined && hmac.length !== issuer.algorithms.length) {
      ctx.addIssue({ code: 'custom', path: ['algorithms'], message: 'secret_file issuers allow only HS256/HS384/HS512' });
    }
    if (issuer.secret_file === undefined && hmac.length > 0) {
      ctx.addIssue({ code: 'custom', path: ['algorithms'], message: 'HS* algorithms need secret_file (a JWKS never carries shared secrets)' });
    }
  });

export type IssuerConfig = z.infer<typeof issuerSchema>;


const signingKeySchema = z
  .strictObject({
    key: nonEmpty.optional().describe('PEM public key or certificate (a private key is refused: only its public half belongs here); for HS* the shared secret.'),
    key_file: nonEmpty.optional().describe('File holding the key; for HS* its bytes exactly, as opa build --signing-key uses them (a trailing newline is part of the secret, unlike issuers[].secret_file), no shorter than the hash: 32 bytes for HS256, 48 for HS384, 64 for HS512.'),
    algorithm: z.enum(BUNDLE_SIGNING_ALGORITHMS).describe('The only algorithm accepted for this key.'),
  })
  .refine((k) => (k.key === undefined) !== (k.key_file === undefined), 'exactly one of key, key_file is required');

const signatureVerificationSchema = z.strictObject({
  keys: nameMap(signingKeySchema).default({}).describe('Verification keys by key id (`kid`).'),
  scope: nonEmpty.optional().describe('The `scope` claim signed bundles must carry; none means they must carry none.'),
  // Checked here, not only when a signed bundle arrives: a pattern verification refuses would refuse every push.
  exclude: z.array(nonEmpty.pipe(excludePatternSchema)).default([]).describe('Files exempt from signing (`*` and `?` wildcards).'),
});

/** An environment variable's name, as POSIX shells spell them. */
const envVarName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name (letters, digits and _, not starting with a digit)');

/** RFC 9110 token: what a header name and an authentication scheme are made of. */
const HTTP_TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * Characters a header value may hold (RFC 9110 field-value, less obs-text beyond Latin-1, which
 * fetch refuses): no line break, so a value cannot add a header of its own. fetch refuses other
 * values with the value itself in its error, which would carry a secret to the logs.
 */
export const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * Headers a source may not set: those Arbiter sets (If-None-Match carries the ETag), those of the
 * connection fetch manages, and those whose values are credentials when written into the file.
 */
const RESERVED_SOURCE_HEADERS: ReadonlySet<string> = new Set(['if-none-match', 'accept', 'host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'te', 'trailer', 'expect']);
const CREDENTIAL_HEADERS: ReadonlySet<string> = new Set(['authorization', 'proxy-authorization', 'cookie']);

const secretSourceSchema = z.union([
  z.strictObject({ env: envVarName.describe('Environment variable holding the value, read at start-up (unset or empty stops it).') }),
  z.strictObject({ file: nonEmpty.describe('File holding the value, read at each poll (a rotated secret is used at the next one).') }),
]);

const bundleSourceCredentialsSchema = z.strictObject({
  bearer: z
    .strictObject({
      token_file: nonEmpty.optional().describe('File holding the token, read at each poll so a rotated token is used at the next one; surrounding whitespace (the trailing newline) is not part of it. Missing, empty, not a regular file, over 16 KiB or holding a line break, the poll fails (bundle_credentials_unavailable, nothing is sent) and the active revision keeps serving.'),
      token_env: envVarName.optional().describe('Environment variable holding the token, read at start-up: unset or empty, start-up stops naming this key.'),
      scheme: z.string().regex(HTTP_TOKEN, 'must be one word (an HTTP authentication scheme)').default('Bearer').describe('Authorization scheme: the header sent is `<scheme> <token>`.'),
      // OPA's key for a literal token: refused by name, so the operator learns where the token goes instead.
      token: z.unknown().optional().describe('Not accepted (OPA\'s literal token): a token written into the configuration goes wherever the file goes (a repository, a ConfigMap, backups). Use token_file or token_env.'),
    })
    .superRefine((bearer, ctx) => {
      if (bearer.token !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['token'], message: 'a literal token is not accepted (it would go wherever the configuration file goes): use token_file or token_env' });
      } else if ((bearer.token_file === undefined) === (bearer.token_env === undefined)) {
        ctx.addIssue({ code: 'custom', message: 'exactly one of token_file, token_env is required' });
      }
    })
    .transform(({ token: _token, ...bearer }) => bearer)
    .optional()
    .describe('OPA\'s services[].credentials.bearer: each poll sends `Authorization: <scheme> <token>` to the source\'s origin (not to another origin a redirect leads to).'),
});

const bundleSourceSchema = z.strictObject({
  name: bundleNameSchema.describe('Bundle this source provides.'),
  url: fetchedUrl('put the credential in credentials or headers; a token in the query string is kept out of logs')
    .describe('GET returns the bundle .tar.gz (OPA bundle service protocol, ETag / If-None-Match). No user:password@: a credential goes in credentials or headers (or the query string, which logs and records show as `?…`); https unless loopback, so none travels in clear text beyond the machine. Redirects are followed (at most 10), each held to the same rule (https unless loopback, no user:password@); credentials and headers go to this URL\'s origin only, not to another one a redirect leads to (a storage service\'s presigned URL). Checked on the addresses each hop connects to, resolved once for the check and the connection: plain http only to this machine; a source on another host may not lead, on another origin, to this machine (loopback, 0.0.0.0, ::), whatever name resolves there; this URL\'s own origin goes wherever its name resolves (the operator\'s DNS).'),
  poll_interval_s: timerDelaySeconds(0.01, 'a shorter interval would poll the source in a tight loop').default(60).describe('Time between polls (jittered; backs off after errors); at least 0.01 s, which is for tests: a remote source wants seconds.'),
  timeout_ms: timerDelayMs().default(10_000).describe('Timeout of one download.'),
  credentials: bundleSourceCredentialsSchema.optional().describe('How polls authenticate to the source (OPA\'s services[].credentials), never shown in logs or answers.'),
  headers: z
    .record(z.string(), z.union([z.string(), secretSourceSchema]))
    .default({})
    .describe('Headers sent with each poll to the source\'s origin only, not to another origin a redirect leads to (OPA\'s services[].headers): name -> value, or for a secret {env: NAME} (read at start-up: unset or empty, start-up stops) or {file: PATH} (read at each poll, as token_file). A literal value stays in the configuration file, and goes wherever it goes: not for secrets (refused for Authorization, Proxy-Authorization and Cookie). Headers Arbiter or the connection sets (If-None-Match, Accept, Host, ...) are refused.'),
}).superRefine((source, ctx) => {
  const seen = new Map<string, string>();
  for (const [name, value] of Object.entries(source.headers)) {
    const lower = name.toLowerCase();
    const path = ['headers', name];
    if (!HTTP_TOKEN.test(name)) ctx.addIssue({ code: 'custom', path, message: 'is not a header name (RFC 9110 token characters only)' });
    else if (RESERVED_SOURCE_HEADERS.has(lower)) ctx.addIssue({ code: 'custom', path, message: 'is set by Arbiter or the connection, not here' });
    else if (seen.has(lower)) ctx.addIssue({ code: 'custom', path, message: `names the same header as ${seen.get(lower)} (header names are case-insensitive)` });
    else if (lower === 'authorization' && source.credentials?.bearer !== undefined) ctx.addIssue({ code: 'custom', path, message: 'is what credentials.bearer sends: give one of them' });
    else if (typeof value === 'string' && CREDENTIAL_HEADERS.has(lower)) {
      ctx.addIssue({ code: 'custom', path, message: 'carries credentials: give it as {env: NAME} or {file: PATH}, not as a literal that goes wherever the configuration file goes' });
    } else if (typeof value === 'string' && !HEADER_VALUE.test(value)) ctx.addIssue({ code: 'custom', path, message: 'holds a character a header value cannot (a line break, a control character)' });
    seen.set(lower, name);
  }
});

const MiB = 1024 * 1024;

const bundlesSchema = z
  .strictObject({
    dir: nonEmpty.default('bundles').describe('Embedded default bundles (<name>.tar.gz), used when the store has no active revision of that name, unless a bundles.sources entry provides that name (it is then not active until its source delivers). Must be a readable directory (may be empty): start-up stops otherwise.'),
    default: bundleNameSchema.default('authz').describe('Bundle that answers when a request names none.'),
    store: nonEmpty.default('.arbiter/bundles').describe('Accepted bundle revisions and which one is active; wins over dir after a restart. One server at a time, as data.path (it holds <path>.lock while it runs).'),
    retention: z
      .strictObject({
        max_revisions: z
          .number().int().min(1).default(10)
          .describe(`Stored revisions kept per bundle name: the ones active most recently (the active one, then the one it replaced, ...). The archives of the others are deleted after each activation and at start-up; their records stay (the last ${MAX_PRUNED_RECORDS} per bundle) so the replay rule still knows them. A pruned revision cannot be activated (410 bundle_revision_pruned).`),
      })
      .prefault({}),
    require_signatures: z
      .boolean()
      .optional()
      .describe('Refuse unsigned bundles on PUT and pull; unset means true unless mode is development.'),
    signing: signatureVerificationSchema
      .extend({
        bundles: z
          .record(bundleNameSchema, signatureVerificationSchema)
          .default({})
          .describe('Per-bundle keys, scope and exclude: replace the shared ones for that bundle.'),
      })
      .prefault({}),
    sources: z.array(bundleSourceSchema).default([]).describe('Bundles pulled from a bundle server, one source per bundle name. A pulled name is served from the store or its source only, never from dir: until the first pull succeeds (or after a restart on an empty store) it is not active, and /readyz says so when it is a default bundle (bundles.default, authzen.default_bundle).'),
    limits: z
      .strictObject({
        max_compressed_bytes: z.number().int().positive().default(16 * MiB).describe('Largest archive accepted (also the PUT body limit).'),
        max_decompressed_bytes: z.number().int().positive().default(64 * MiB).describe('Largest total inflated size; inflation stops there.'),
        max_file_bytes: z.number().int().positive().default(32 * MiB).describe('Largest single file in the archive.'),
        max_entries: z.number().int().positive().default(1000).describe('Most entries in the archive.'),
        max_path_length: z.number().int().positive().default(512).describe('Longest path of an entry.'),
        max_data_depth: z.number().int().min(2).max(256).default(32).describe('Nesting depth of the data the bundle carries.'),
        max_data_bytes: z.number().int().positive().default(16 * MiB).describe('Serialized size of the data the bundle carries.'),
      })
      .prefault({}),
  })
  .superRefine((bundles, ctx) => {
    const seen = new Set<string>();
    for (const [i, source] of bundles.sources.entries()) {
      if (seen.has(source.name)) ctx.addIssue({ code: 'custom', path: ['sources', i, 'name'], message: `${source.name} has more than one source` });
      seen.add(source.name);
    }
  })
  .prefault({});

export type BundlesConfig = z.infer<typeof bundlesSchema>;

/** A listen address as Node's listen() takes it. */
const listenHost = nonEmpty
  // [::1] is how a URL writes the address; Node's listen() looks it up as a host name and fails.
  .refine((host) => !host.startsWith('['), 'an IPv6 address is written without brackets here, e.g. ::1');

/**
 * Listen addresses that name every interface rather than one: such a listener takes the port on
 * every address another listener could have, and it is never a name a request is sent to.
 */
export const WILDCARD_HOSTS: ReadonlySet<string> = new Set(['0.0.0.0', '::']);

const configShape = z.strictObject({
  mode: z
    .enum(['development', 'production'])
    .default(process.env.NODE_ENV === 'production' ? 'production' : 'development')
    .describe('development allows the local development issuer (dev_issuer.enabled); production refuses it, and requires bundle signatures unless bundles.require_signatures says otherwise. Unset: production when NODE_ENV=production (as in the container image), else development.'),
  server: z
    .strictObject({
      host: listenHost
        .default('127.0.0.1')
        .describe('Listen address; anything but loopback needs gateway authentication.'),
      port: z.number().int().min(0).max(65_535).default(8181).describe('Listen port (0: any free port); PORT overrides.'),
      body_limit_bytes: z.number().int().positive().max(16 * 1024 * 1024).default(64 * 1024).describe('Largest request body on the decision, issuance, AuthZEN, OPA data API, replay and activate routes: 413 beyond it.'),
      shutdown_timeout_s: z.number().min(MIN_TIMER_DELAY_S, 'must be at least 0.001 s (1 ms, the shortest a timer waits)').max(600).default(25).describe('Grace period for in-flight requests on SIGTERM, SIGINT or SIGHUP.'),
      request_timeout_s: z
        .number().min(MIN_TIMER_DELAY_S, 'must be at least 0.001 s (1 ms, the shortest a timer waits)').max(600).default(30)
        .describe('Longest a client may take to send a whole request (headers and body); the connection is closed after it, so a stalled upload cannot hold a decision slot (gateway.max_concurrent) for long. A new connection that sends nothing is closed after as long (at most 60 s), so idle connections cannot use up file descriptors; between requests on a kept-alive connection, 5 s of silence closes it.'),
      max_connections: z
        .number().int().positive().max(1_000_000).default(10_000)
        .describe('Open client connections at once; a connection beyond it is closed as soon as it is accepted, counted in arbiter_connections_dropped_total and logged (at most one line a second). Keep it well below the process\'s file-descriptor limit (ulimit -n): the decision log, JWKS and bundle fetches need descriptors too.'),
      allowed_hosts: z
        .array(allowedHostSchema)
        .optional()
        .describe('Host names the main listener answers besides loopback ones (localhost, *.localhost, 127.0.0.0/8, [::1]), on any port: arbiter.test, .arbiter.test for it and its subdomains, 192.0.2.10, [fd00::1]. A request whose Host names another is refused before anything runs (421 host_not_allowed, counted in arbiter_host_refusals_total), so a web page whose name is made to resolve to this machine (DNS rebinding) cannot ask it for decisions. Unset: checked with gateway.authentication none only; set, even to [], checked whatever the authentication, server.host answered too. The diagnostic listener is never checked (probes name the pod address).'),
      tls: tlsSchema.optional().describe('Serve HTTPS; needed for gateway mTLS.'),
      diagnostic: z
        .strictObject({
          host: listenHost.optional().describe('Listen address of the diagnostic listener; unset: server.host.'),
          port: z.number().int().min(0).max(65_535).describe('Listen port of the diagnostic listener (0: any free port); not server.port.'),
          max_connections: z
            .number().int().positive().max(10_000).default(64)
            .describe('Open connections to the diagnostic listener at once, apart from server.max_connections; one beyond it is closed on arrival and counted in arbiter_diagnostic_connections_dropped_total. Probes and scrapes need few.'),
        })
        .optional()
        .describe('A second listener serving only GET /healthz, /readyz and (with metrics.enabled) /metrics, as OPA\'s --diagnostic-addr: a connection flood on the decision port (server.max_connections reached) then does not fail liveness probes and get healthy replicas restarted. HTTPS with server.tls\'s certificate when that is set, never asking for client certificates (probes carry none). Unset: none; the probes are served on the main port either way.'),
    })
    .prefault({}),
  gateway: gatewaySchema.prefault({}),
  engine: z
    .strictObject({
      workers: z
        .number().int().min(0).max(64).default(1)
        .describe('Worker threads evaluating policies; 0 evaluates on the main thread (no deadline: for benchmarks and debugging only).'),
      deadline_ms: z.number().int().positive().max(60_000).default(100).describe('An evaluation still running after this much of its own running time is stopped: deny policy_timeout. Time spent queued behind other evaluations on the same worker (up to 16 in flight) does not count, so a decision can take longer in total.'),
      load_deadline_ms: z
        .number().int().min(100).max(3_600_000).default(120_000)
        .describe('Loading a policy module into a worker, or setting live data in one, still running after this long is stopped: the worker is replaced and that bundle revision denies policy_timeout until the live data changes (a pushed bundle is refused: smoke_evaluation; one whose entrypoints()/builtins() do not return while it is checked: wasm_timeout). Generous by default: setting 50 MB of live data takes about 12 s on a 2-core VM.'),
      max_memory_mb: z.number().int().min(2).max(4096).default(256).describe('WebAssembly memory ceiling per policy instance: beyond it, deny policy_resource_limit.'),
    })
    .prefault({}),
  logging: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('Process log level (pino, JSON on stdout); `info` includes one line per decision.'),
    })
    .prefault({}),
  tokens: z
    .strictObject({
      max_token_bytes: z.number().int().positive().max(MAX_TOKEN_BYTES).default(8192).describe('Tokens larger than this are refused before parsing: token_too_large.'),
      verification_cache_size: z
        .number().int().min(0).default(10_000)
        .describe('Verified tokens remembered until they expire (0 disables); revocation is still checked every decision. A key removed from an issuer verifies no token, remembered or not, once its key set is fetched again (after jwks_cache_max_age_s, or a kid it lacks); an issued_before revocation of that issuer fetches it at once. Admin API tokens are remembered apart, up to this many or 1000, whichever is fewer (0 disables that too).'),
    })
    .prefault({}),
  issuers: z.array(issuerSchema).default([]).describe('Trusted issuers of the access tokens sent to decision endpoints; each token is verified with its own issuer\'s keys only.'),
  admin: z
    .strictObject({
      issuers: z.array(issuerSchema).default([]).describe('Issuers of admin bearer tokens (same shape as issuers). One that is also under issuers must accept none of the audiences it accepts there: a decision token would be an admin token.'),
      allow_dev_issuer: z.boolean().default(false).describe('Accept development issuer tokens on admin endpoints (development only).'),
    })
    .prefault({}),
  dev_issuer: z
    .strictObject({
      enabled: z.boolean().default(false).describe(`Local development issuer (\`arbiter token\`; fixed: ES256, ${DEV_ISSUER}, audiences ${DEV_AUDIENCES.join(' and ')}, tokens accepted up to 86400 s old and 86400 s long, 30 s clock tolerance); refused in production mode or NODE_ENV=production.`),
      key_file: nonEmpty.default('.arbiter/dev-issuer.jwk.json').describe('Private key, generated on first start (git-ignored). Never generated over: one that group or others can read, or that does not sign ES256 tokens the server accepts (edited, another key\'s half), stops start-up naming this key.'),
    })
    .prefault({}),
  bundles: bundlesSchema,
  authzen: z
    .strictObject({
      // Bundle names, so a typo that no bundle could ever carry stops start-up rather than answer 503 forever.
      default_bundle: bundleNameSchema
        .optional()
        .describe('Bundle that answers AuthZEN requests naming no tenant; without it such requests get 503. Like bundles.default, /readyz is 503 while it is not active; active but declaring no AuthZEN support (no authzen manifest metadata), it is listed under degraded (its requests get 503).'),
      tenants: nameMap(bundleNameSchema)
        .default({})
        .describe('Tenant name -> bundle, the tenant read from the X-Tenant header or else context.tenant. A tenant whose bundle is not active, or declares no AuthZEN support (no authzen manifest metadata), is listed under degraded in /readyz (its requests get 503).'),
      public_url: z
        .url({ message: 'must be an absolute URL' })
        .refine((value) => {
          const url = URL.parse(value);
          return url === null || ((url.protocol === 'https:' || url.protocol === 'http:') && url.search === '' && url.hash === '');
        }, 'must be an http(s) URL without query or fragment')
        .optional()
        .describe('Base URL advertised as policy_decision_point; the origin the request was sent to when absent. With a path (https://pdp.example.com/authz) the metadata is also served where AuthZEN places it for that identifier, /.well-known/authzen-configuration/authz.'),
    })
    .prefault({}),
  data: z
    .strictObject({
      path: nonEmpty.default('.arbiter/data.db').describe('SQLite file for live data and revocations; one server at a time (it holds <path>.lock while it runs: another one started on it stops).'),
      max_body_bytes: z.number().int().positive().max(256 * 1024 * 1024).default(8 * 1024 * 1024).describe('Largest PUT/PATCH body on /v1/data and POST body on /v1/revocations (batches): 413 beyond it.'),
      max_depth: z.number().int().min(2).max(256).default(32).describe('Deepest nesting of live data: data_too_deep beyond it.'),
      max_size_bytes: z.number().int().positive().default(64 * 1024 * 1024).describe('Total serialized size of all live data: a write growing it past this, or a JSON Patch adding more than this, is refused (data_too_large). Data stored under a higher limit stays and can still shrink.'),
      revocation_prune_interval_s: timerIntervalSeconds('delete expired revocations').int().default(60).describe('How often expired revocations are deleted.'),
      default_max_age_s: z
        .number()
        .int()
        .positive()
        .optional()
        .describe('A document whose writes never sent Arbiter-Data-Max-Age (the last one sent sticks until the document is deleted) counts as stale (input.data_status) after this many seconds, so a feed that stops fails decisions closed; unset, such documents never go stale.'),
      check_entitlements: z
        .boolean()
        .default(true)
        .describe('Refuse a PUT or PATCH (or a seed) that leaves the live document entitlements in a shape the default policy cannot read (400 entitlements_invalid, errors naming each field by JSON pointer): the grants of each subject a list of objects with a non-empty string id, actions and tenants lists of strings, and expires_at (when present) a number of epoch seconds, at most 253402300799 (a larger one is in milliseconds and would never lapse) (rego/README.md, Live data). false for a bundle of your own that reads data.entitlements in another shape.'),
      seed: nameMap(nonEmpty)
        .optional()
        .describe('Documents loaded from JSON files at start when the store has never had them (once: a seeded document deleted later stays deleted), e.g. {entitlements: examples/entitlements.json}. A document an active bundle owns (inside or above one of its roots) is refused: start-up stops, and config check reports it.'),
    })
    .prefault({}),
  decision_log: decisionLogConfigSchema
    .extend({
      enabled: z
        .boolean()
        .default(true)
        .describe('Record every decision durably (the audit record). false leaves only the process log line: for benchmarks against systems that log to the console.'),
      path: nonEmpty.default('.arbiter/decisions.db').describe('SQLite file of the decision log (not :memory:); WAL and the checkpoint key live next to it. One server at a time, as data.path.'),
      transport: z
        .strictObject({
          target: nonEmpty.describe('pino transport module, e.g. pino/file or a log shipper.'),
          options: z
            .record(z.string(), z.unknown())
            .default({})
            .describe('Passed to the transport module as they are, e.g. {destination: /var/log/arbiter/decisions.ndjson} for pino/file; a secret a shipper needs is better read from its own environment or file than written here.'),
          ready_timeout_s: z
            .number()
            .min(MIN_TIMER_DELAY_S, 'must be at least 0.001 s (1 ms, the shortest a timer waits)')
            .max(600)
            .default(30)
            .describe('How long start-up waits for the transport to load its module (and connect, for shippers that do so first); past it, start-up stops naming decision_log.transport.target.'),
        })
        .optional()
        .describe('Also stream every committed record to this pino transport (separate from the process log). A target that cannot be loaded stops start-up; a transport that fails later is logged and gets no more records until a restart, while decisions go on.'),
    })
    .prefault({}),
  opa_compat: z
    .strictObject({
      enabled: z
        .boolean()
        .default(false)
        .describe('POST /v1/data/{bundle}/{rule}: OPA data API on caller-supplied input, claims unverified. Only behind a trusted caller.'),
    })
    .prefault({}),
  metrics: z
    .strictObject({
      enabled: z.boolean().default(true).describe('GET /metrics: Prometheus metrics, unauthenticated; turn off or keep the port internal.'),
    })
    .prefault({}),
});

export const configSchema = configShape.superRefine(crossFieldChecks);

/** The top-level keys, which `ARBITER_<KEY>` overrides (e.g. ARBITER_MODE=production). */
export const CONFIG_TOP_LEVEL_KEYS: ReadonlySet<string> = new Set(Object.keys(configShape.shape));

/** The keys of each top-level section (server: host, port, ...), to recognise a misspelt override. */
export const CONFIG_SECTION_KEYS: ReadonlyMap<string, ReadonlySet<string>> = new Map(
  Object.entries(configShape.shape).flatMap(([section, schema]) => {
    const keys = objectKeys(schema);
    return keys === undefined ? [] : [[section, new Set(keys)] as const];
  }),
);

/** The keys of an object schema under its default, prefault and optional wrappers. */
function objectKeys(schema: z.core.$ZodType): string[] | undefined {
  let def = schema._zod.def as { type: string; innerType?: z.core.$ZodType; shape?: Record<string, unknown> };
  while (def.innerType !== undefined) def = def.innerType._zod.def as typeof def;
  return def.type === 'object' && def.shape !== undefined ? Object.keys(def.shape) : undefined;
}

export type Config = z.infer<typeof configSchema>;
export type AuthzenConfig = Config['authzen'];

/** Rules that span sections; each issue names the key to change. */
function crossFieldChecks(config: z.output<typeof configShape>, ctx: z.RefinementCtx): void {
  const production = config.mode === 'production' || process.env.NODE_ENV === 'production';
  if (production && config.dev_issuer.enabled) {
    ctx.addIssue({ code: 'custom', path: ['dev_issuer', 'enabled'], message: 'the development issuer is refused in production (mode: production or NODE_ENV=production)' });
  }
  if (production && config.admin.allow_dev_issuer) {
    ctx.addIssue({ code: 'custom', path: ['admin', 'allow_dev_issuer'], message: 'the development issuer is refused in production (mode: production or NODE_ENV=production)' });
  }
  if (config.admin.allow_dev_issuer && !config.dev_issuer.enabled) {
    ctx.addIssue({ code: 'custom', path: ['admin', 'allow_dev_issuer'], message: 'needs dev_issuer.enabled' });
  }
  // The development issuer's tokens carry its iss: a listed issuer with the same iss would be a
  // second issuer of them, which start-up refuses. Checked here so config check refuses it too.
  for (const [section, listed, shared] of [['issuers', config.issuers, config.dev_issuer.enabled], ['admin.issuers', config.admin.issuers, config.admin.allow_dev_issuer]] as const) {
    if (!shared) continue;
    for (const [index, issuer] of listed.entries()) {
      if (issuer.issuer !== DEV_ISSUER) continue;
      ctx.addIssue({ code: 'custom', path: [...section.split('.'), index, 'issuer'], message: `${DEV_ISSUER} is the development issuer's iss (dev_issuer.enabled)` });
    }
  }
  // Gateways forward every decision token, and resource servers see them: one that an admin
  // issuer would accept too is an admin token for whoever holds it (a confused deputy), given
  // only a scope. Admin tokens need an audience of their own. (admin.allow_dev_issuer shares the
  // development issuer on purpose, in development only.)
  for (const [index, admin] of config.admin.issuers.entries()) {
    for (const [decisionIndex, decision] of config.issuers.entries()) {
      if (decision.issuer !== admin.issuer) continue;
      const shared = admin.audiences.filter((audience) => decision.audiences.includes(audience));
      if (shared.length === 0) continue;
      ctx.addIssue({
        code: 'custom',
        path: ['admin', 'issuers', index, 'audiences'],
        message: `${shared.map((audience) => JSON.stringify(audience)).join(', ')} is also accepted from ${admin.issuer} under issuers.${decisionIndex}: a decision token gateways forward would be an admin token; give admin tokens an audience of their own`,
      });
    }
  }
  // data.path may be :memory:, the decision log may not: its writer and reader threads would each
  // open a database of their own, and start-up would crash on the reader's empty one.
  if (config.decision_log.enabled && config.decision_log.path === ':memory:') {
    ctx.addIssue({ code: 'custom', path: ['decision_log', 'path'], message: 'cannot be :memory: (the decision log is read from threads of its own, which need the file): to record no decisions, set decision_log.enabled: false' });
  }
  // The data store and the decision log each take a whole SQLite file. Start-up also catches one
  // file reached through two spellings (a symlink); this catches the plain case in config check.
  if (config.decision_log.enabled && config.data.path !== ':memory:' && resolve(config.data.path) === resolve(config.decision_log.path)) {
    ctx.addIssue({ code: 'custom', path: ['decision_log', 'path'], message: `${config.decision_log.path} is also data.path: each state file belongs to one key, give decision_log.path a file of its own` });
  }
  // A bound tenant no authzen.tenants entry serves would answer 503 for ever: a typo, caught here.
  const bindings = [
    ...config.gateway.api_keys.map((key, index) => ({ path: ['api_keys', index], tenants: key.tenants, who: 'key' })),
    ...config.gateway.client_certificates.map((entry, index) => ({ path: ['client_certificates', index], tenants: entry.tenants, who: 'gateway' })),
  ];
  for (const { path, tenants, who } of bindings) {
    for (const [tenantIndex, tenant] of (tenants ?? []).entries()) {
      // An empty name, refused for its own shape, gets no second issue (a blank one is refused here:
      // authzen.tenants names are trimmed, so it can name none).
      if (typeof tenant !== 'string' || tenant === '' || Object.hasOwn(config.authzen.tenants, tenant)) continue;
      ctx.addIssue({ code: 'custom', path: ['gateway', ...path, 'tenants', tenantIndex], message: `${JSON.stringify(tenant)} is not a tenant of authzen.tenants, so no request of this ${who} could ever be answered for it` });
    }
  }
  if (config.gateway.authentication === 'none' && !isLoopbackHost(config.server.host)) {
    ctx.addIssue({
      code: 'custom',
      path: ['gateway', 'authentication'],
      message: `none is only allowed on a loopback host (server.host is ${config.server.host}): use api_key or mtls`,
    });
  }
  // Two listeners on one address and port: start-up would stop on EADDRINUSE; config check says so first.
  const { diagnostic } = config.server;
  if (diagnostic !== undefined && diagnostic.port !== 0 && diagnostic.port === config.server.port) {
    const host = diagnostic.host ?? config.server.host;
    if (host === config.server.host || WILDCARD_HOSTS.has(host) || WILDCARD_HOSTS.has(config.server.host)) {
      ctx.addIssue({ code: 'custom', path: ['server', 'diagnostic', 'port'], message: `${diagnostic.port} is also server.port: the diagnostic listener needs a port of its own` });
    }
  }
  if (config.gateway.authentication === 'mtls' && config.server.tls?.ca_file === undefined) {
    ctx.addIssue({ code: 'custom', path: ['server', 'tls', 'ca_file'], message: 'gateway mtls needs server.tls with a ca_file for client certificates' });
  }
}
