import type { FetchImplementation } from 'jose';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { DocumentStatus } from '../data/documents.ts';
import { ARBITER_DENIAL_CODES, type Decision } from '../decisions/pipeline.ts';
import type { PolicyInstances } from '../policy/evaluation/evaluator.ts';
import { TOKEN_FAILURE_CODES, type TokenFailureCode } from '../tokens/verify.ts';
import { THROTTLE_REASONS, type ThrottleReason } from '../server/middleware/admission.ts';
import { GATEWAY_AUTH_FAILURES, type GatewayAuthFailure } from '../server/middleware/gateway-auth.ts';
import { ADMIN_AUTH_FAILURES, type AdminAuthFailure } from '../server/middleware/admin-auth.ts';
import type { ThreadHeap } from './thread-heap.ts';

/** Reason codes come from policies: only short, plain codes become label values, and only so many. */
const REASON_LABEL = /^[a-z0-9_.-]{1,64}$/;
const MAX_REASON_LABELS = 200;
/**
 * A bundle's name is whatever a push named (any holder of arbiter.bundles.write, refused or not,
 * and a removed bundle's series stays): only so many, for activations and rejections each.
 */
const MAX_BUNDLE_LABELS = 100;
/**
 * A caller is a configured key id or the identity of a certificate the gateway CA signed, listed
 * or not: bounded by whoever runs that CA, and held to so many here.
 */
const MAX_CALLER_LABELS = 100;
/**
 * Live documents are named by whoever holds arbiter.data.write, as many as data.max_size_bytes
 * leaves room for: only so many get series of their own, the rest are reported together.
 */
const MAX_DOCUMENT_LABELS = 100;
const OTHER = 'other';

/**
 * Which key-set fetcher a JWKS fetch is for: an issuer listed both under issuers and
 * admin.issuers has one of each (each its own cache and settings), counted apart.
 */
export const JWKS_USES = ['decision', 'admin'] as const;
export type JwksUse = (typeof JWKS_USES)[number];

/**
 * Label values from outside the code (policies, requests): each distinct value is a series kept
 * for the life of the process, so the first `max` plain ones are kept and the rest count as "other".
 */
class BoundedLabel {
  readonly #seen = new Set<string>();
  readonly #max: number;
  readonly #pattern: RegExp;
  /** Values from the code, not from outside: always their own label, and not counted against `max`. */
  readonly #reserved: ReadonlySet<string>;

  constructor(max: number, pattern: RegExp, reserved: readonly string[] = []) {
    this.#max = max;
    this.#pattern = pattern;
    this.#reserved = new Set(reserved);
  }

  of(value: string): string {
    if (this.#seen.has(value) || this.#reserved.has(value)) return value;
    if (this.#seen.size >= this.#max || !this.#pattern.test(value)) return OTHER;
    this.#seen.add(value);
    return value;
  }
}

/**
 * `value` of each document by its bounded label; the documents that share a label ("other") get
 * the largest of their values: the oldest age, stale when any of them is.
 */
function perDocument<S>(statuses: Readonly<Record<string, S>>, label: BoundedLabel, value: (status: S) => number): Map<string, number> {
  const values = new Map<string, number>();
  for (const [name, status] of Object.entries(statuses)) {
    const document = label.of(name);
    values.set(document, Math.max(values.get(document) ?? 0, value(status)));
  }
  return values;
}

/**
 * Decisions take microseconds to a few milliseconds; the top buckets catch JWKS fetches on a cold
 * cache, up to one that times out (jwks_timeout_ms, 5 s by default).
 */
const DECISION_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2, 5, 10];
/**
 * A group commit takes milliseconds; the top buckets catch one waiting on another process's lock,
 * up to busy_timeout_ms (2 s by default) and the 5 s after which /readyz counts a commit as hung.
 */
const COMMIT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5, 5, 10];


export interface ArbiterMetricsOptions {
  /** The active bundles, read at each scrape for arbiter_bundle_info. */
  activeBundles: () => readonly { name: string; revision: string }[];
  /** The heaps of Arbiter's worker threads, read at each scrape (the default metrics cover the main thread's). */
  threadHeaps?: () => Promise<readonly ThreadHeap[]>;
  /** The policy instances each evaluation thread holds, read at each scrape. */
  policyInstances?: () => Promise<readonly PolicyInstances[]>;
  /** Decision records accepted but not yet committed, read at each scrape (0 without a decision log). */
  decisionLogPending?: () => number;
  /** The names of bundles.sources, whose last successful pull is exposed from the start. */
  pulledBundles?: readonly string[];
  /**
   * The gateways the configuration names (`callers`: key ids, listed certificate identities, or
   * "anonymous" without authentication; `bound`: those bound to tenants), whose refusals and
   * 429s are exposed at 0 from the start.
   */
  gateways?: { callers: readonly string[]; bound: readonly string[] };
  /** The issuers whose key sets are fetched (jwks_uri), decision and admin ones: their fetches are exposed from the start. */
  remoteIssuers?: readonly { issuer: string; use: JwksUse }[];
  /** The freshness of each live document (LiveData.status, what policies see as input.data_status), read at each scrape. */
  liveDataStatus?: () => Readonly<Record<string, Pick<DocumentStatus, 'age_s' | 'stale'>>>;
}

/**
 * Prometheus metrics of one Arbiter instance, on its own registry (never prom-client's global
 * one, so several servers can run in one process). Components receive the handles they update;
 * the decision path calls `decided` and `tokenRejected` only.
 */
export class ArbiterMetrics {
  readonly registry = new Registry();

  readonly decisions = new Counter({
    name: 'arbiter_decisions_total',
    help: 'Decisions by endpoint, outcome and first reason code (policy codes outside [a-z0-9_.-]{1,64} or past the first 200 distinct count as "other"; Arbiter\'s own codes, token_* and policy_* among them, never do).',
    labelNames: ['endpoint', 'allow', 'reason'] as const,
    registers: [this.registry],
  });

  readonly decisionSeconds = new Histogram({
    name: 'arbiter_decision_duration_seconds',
    // Taken before the record is appended (it is in the record): a strict decision is answered
    // only after its commit too, which the commit histogram times per batch.
    help: 'Time to decide, as each decision record\'s latency_us: token verification, input building and policy evaluation, from the parsed request on; not the wait for the decision log to commit the record, which a strict decision_log answers after (arbiter_decision_log_commit_seconds).',
    labelNames: ['endpoint'] as const,
    buckets: DECISION_BUCKETS,
    registers: [this.registry],
  });

  readonly tokenFailures = new Counter({
    name: 'arbiter_token_verification_failures_total',
    help: 'Tokens sent with a decision request that failed verification, by reason code.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly gatewayAuthFailures = new Counter({
    name: 'arbiter_gateway_auth_failures_total',
    help: `Decision requests refused because the gateway did not authenticate, by reason: ${GATEWAY_AUTH_FAILURES.join(', ')}.`,
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly adminAuthFailures = new Counter({
    name: 'arbiter_admin_auth_failures_total',
    help: 'Admin API requests refused before they ran, by reason: missing_token, the token failure code (token_keys_unavailable is the 503 admin_keys_unavailable), token_revoked, insufficient_scope (403).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly gatewayTenantRefusals = new Counter({
    name: 'arbiter_gateway_tenant_refusals_total',
    help: 'Decision requests refused because the gateway is not bound to the tenant they name, or they name none (gateway.api_keys[].tenants, gateway.client_certificates[].tenants), by caller.',
    labelNames: ['caller'] as const,
    registers: [this.registry],
  });

  readonly gatewayThrottledRequests = new Counter({
    name: 'arbiter_gateway_throttled_total',
    help: `Decision requests refused 429 before any policy ran, by reason (rate_limited: over gateway.rate_limit; overloaded: over gateway.max_concurrent or max_concurrent_per_caller) and caller ("anonymous" without gateway authentication; callers past the first ${MAX_CALLER_LABELS} distinct count as "other").`,
    labelNames: ['reason', 'caller'] as const,
    registers: [this.registry],
  });

  readonly jwksFetches = new Counter({
    name: 'arbiter_jwks_fetches_total',
    help: 'HTTP fetches of a trusted issuer\'s JWKS, by issuer and use (decision: issuers; admin: admin.issuers; an issuer listed under both has a key set, and fetches, for each).',
    labelNames: ['issuer', 'use'] as const,
    registers: [this.registry],
  });

  readonly jwksFetchFailures = new Counter({
    name: 'arbiter_jwks_fetch_failures_total',
    help: 'JWKS fetches that failed (network error, timeout, a status other than 200, a body over 1 MiB or holding private keys), by issuer and use, as arbiter_jwks_fetches_total.',
    labelNames: ['issuer', 'use'] as const,
    registers: [this.registry],
  });

  readonly bundleActivations = new Counter({
    name: 'arbiter_bundle_activations_total',
    help: `Bundle revisions activated (bundle names past the first ${MAX_BUNDLE_LABELS} distinct count as "other").`,
    labelNames: ['bundle'] as const,
    registers: [this.registry],
  });

  readonly bundleRejections = new Counter({
    name: 'arbiter_bundle_rejections_total',
    help: `Bundles refused at activation, by the check that refused them (bundle names past the first ${MAX_BUNDLE_LABELS} distinct count as "other").`,
    labelNames: ['bundle', 'check'] as const,
    registers: [this.registry],
  });

  readonly bundlePulls = new Counter({
    name: 'arbiter_bundle_pulls_total',
    help: 'Polls of each bundles.sources entry, by result: ok, or the code of what failed (bundle_pull_failed for the transfer, bundle_credentials_unavailable for a credentials file that cannot be used, else the check that refused the archive).',
    labelNames: ['bundle', 'result'] as const,
    registers: [this.registry],
  });

  readonly bundlePullLastSuccess = new Gauge({
    name: 'arbiter_bundle_pull_last_success_timestamp_seconds',
    help: 'When each bundles.sources entry was last polled successfully (what it serves is active, changed or not), 0 before the first success: alert on its age.',
    labelNames: ['bundle'] as const,
    registers: [this.registry],
  });

  readonly hostRefusals = new Counter({
    name: 'arbiter_host_refusals_total',
    help: 'Requests to the main listener refused 421 host_not_allowed because their Host named neither a loopback name nor one of server.allowed_hosts (a DNS-rebinding page, or a name to list). Checked with gateway.authentication none, or whenever server.allowed_hosts is set.',
    registers: [this.registry],
  });

  readonly connectionsDropped = new Counter({
    name: 'arbiter_connections_dropped_total',
    help: 'Client connections closed on arrival because server.max_connections were open.',
    registers: [this.registry],
  });

  readonly diagnosticConnectionsDropped = new Counter({
    name: 'arbiter_diagnostic_connections_dropped_total',
    help: 'Connections to the diagnostic listener closed on arrival because server.diagnostic.max_connections were open.',
    registers: [this.registry],
  });

  readonly decisionLogCommitSeconds = new Histogram({
    name: 'arbiter_decision_log_commit_seconds',
    help: 'Time to commit one batch of decision records (one observation per group commit).',
    buckets: COMMIT_BUCKETS,
    registers: [this.registry],
  });

  // Arbiter's own denial codes are what operators alert on: counted against the policies' budget,
  // a policy whose codes carry request data would turn them into "other" for the life of the process.
  readonly #reasons = new BoundedLabel(MAX_REASON_LABELS, REASON_LABEL, ARBITER_DENIAL_CODES);
  readonly #activatedBundles = new BoundedLabel(MAX_BUNDLE_LABELS, /^[\w.-]{1,64}$/);
  readonly #rejectedBundles = new BoundedLabel(MAX_BUNDLE_LABELS, /^[\w.-]{1,64}$/);
  readonly #throttledCallers = new BoundedLabel(MAX_CALLER_LABELS, /^[\x20-\x7e]{1,256}$/);

  constructor(options: ArbiterMetricsOptions) {
    // Exposed at 0 from the start: an alert on increase() would miss the first failure of a series that appears with it.
    for (const reason of GATEWAY_AUTH_FAILURES) this.gatewayAuthFailures.inc({ reason }, 0);
    for (const reason of ADMIN_AUTH_FAILURES) this.adminAuthFailures.inc({ reason }, 0);
    for (const reason of TOKEN_FAILURE_CODES) this.tokenFailures.inc({ reason }, 0);
    for (const labels of options.remoteIssuers ?? []) {
      this.jwksFetches.inc(labels, 0);
      this.jwksFetchFailures.inc(labels, 0);
    }
    // 0 until a pull succeeds, as "never": absent, a source down since start-up (a replica serving
    // its stored revision for as long) would keep an alert on the age of the last success silent.
    for (const bundle of options.pulledBundles ?? []) this.bundlePullLastSuccess.set({ bundle }, 0);
    for (const caller of options.gateways?.bound ?? []) this.gatewayTenantRefusals.inc({ caller }, 0);
    for (const caller of options.gateways?.callers ?? []) {
      for (const reason of THROTTLE_REASONS) this.gatewayThrottledRequests.inc({ reason, caller: this.#throttledCallers.of(caller) }, 0);
    }
    const decisionLogPending = options.decisionLogPending;
    new Gauge({
      name: 'arbiter_decision_log_queue_depth',
      help: 'Decision records waiting to be committed.',
      registers: [this.registry],
      // Read at scrape time: sampled when a decision is recorded, it kept the last backlog
      // seen for as long as no decision came (in relaxed mode, never 0 again).
      collect() {
        this.set(decisionLogPending?.() ?? 0);
      },
    });
    new Gauge({
      name: 'arbiter_bundle_info',
      help: 'The active revision of each bundle (always 1).',
      labelNames: ['bundle', 'revision'] as const,
      registers: [this.registry],
      // Read from the registry at scrape time, so every activation path, and deactivation, shows without a call.
      collect() {
        this.reset();
        for (const bundle of options.activeBundles()) this.set({ bundle: bundle.name, revision: bundle.revision }, 1);
      },
    });
    const threadHeaps = options.threadHeaps;
    if (threadHeaps) {
      new Gauge({
        name: 'arbiter_thread_heap_bytes',
        help: 'V8 heap of each worker thread (used and total), beside the nodejs_heap_* metrics of the main thread.',
        labelNames: ['thread', 'kind'] as const,
        registers: [this.registry],
        async collect() {
          this.reset();
          for (const heap of await threadHeaps()) {
            this.set({ thread: heap.thread, kind: 'used' }, heap.usedBytes);
            this.set({ thread: heap.thread, kind: 'total' }, heap.totalBytes);
          }
        },
      });
    }
    const policyInstances = options.policyInstances;
    if (policyInstances) {
      new Gauge({
        name: 'arbiter_policy_instances',
        help: 'WebAssembly policy instances each evaluation thread holds: one per bundle revision in use, each with a copy of the live data.',
        labelNames: ['thread'] as const,
        registers: [this.registry],
        async collect() {
          this.reset();
          for (const { thread, digests } of await policyInstances()) this.set({ thread }, digests.length);
        },
      });
    }
    const liveDataStatus = options.liveDataStatus;
    if (liveDataStatus) {
      // One bound for both gauges, so a document has the same label in each.
      const documents = new BoundedLabel(MAX_DOCUMENT_LABELS, /^[\x20-\x7e]{1,256}$/);
      new Gauge({
        name: 'arbiter_live_data_age_seconds',
        help: `Seconds since each live document was last written (PUT or PATCH; a DELETE inside it does not count), at the scrape (input.data_status.*.age_s); documents past the first ${MAX_DOCUMENT_LABELS} distinct, or with names outside printable ASCII up to 256 characters, count as "other" (the oldest of them).`,
        labelNames: ['document'] as const,
        registers: [this.registry],
        // Read at scrape time: a feed that stopped writing shows as a growing age, with no timer.
        collect() {
          this.reset();
          for (const [document, age] of perDocument(liveDataStatus(), documents, (status) => status.age_s)) this.set({ document }, age);
        },
      });
      new Gauge({
        name: 'arbiter_live_data_stale',
        help: 'Whether each live document is stale at the scrape (1) or not (0), as input.data_status.*.stale tells policies: older than its Arbiter-Data-Max-Age or data.default_max_age_s. "other": 1 when any of those documents is.',
        labelNames: ['document'] as const,
        registers: [this.registry],
        collect() {
          this.reset();
          for (const [document, stale] of perDocument(liveDataStatus(), documents, (status) => (status.stale ? 1 : 0))) this.set({ document }, stale);
        },
      });
    }
    collectDefaultMetrics({ register: this.registry });
  }

  /** Counts a finished decision; on the decision path, so a label lookup and two increments. */
  decided(decision: Decision, endpoint: string): void {
    this.decisions.inc({ endpoint, allow: decision.allow ? 'true' : 'false', reason: this.#reasonLabel(decision.reasons[0]?.code) });
    this.decisionSeconds.observe({ endpoint }, decision.latency_us / 1e6);
  }

  bundleActivated(bundle: string): void {
    this.bundleActivations.inc({ bundle: this.#activatedBundles.of(bundle) });
  }

  bundleRejected(bundle: string, check: string): void {
    this.bundleRejections.inc({ bundle: this.#rejectedBundles.of(bundle), check });
  }

  /** Bundle names and results come from the configuration and the code: bounded as they are. */
  bundlePolled(bundle: string, result: string): void {
    this.bundlePulls.inc({ bundle, result });
    if (result === 'ok') this.bundlePullLastSuccess.set({ bundle }, Date.now() / 1000);
  }

  gatewayAuthFailed(reason: GatewayAuthFailure): void {
    this.gatewayAuthFailures.inc({ reason });
  }

  hostRefused(): void {
    this.hostRefusals.inc();
  }

  adminAuthFailed(reason: AdminAuthFailure): void {
    this.adminAuthFailures.inc({ reason });
  }

  /** `caller` is a configured key id (gateway.api_keys[].id): bounded by the configuration. */
  gatewayTenantRefused(caller: string): void {
    this.gatewayTenantRefusals.inc({ caller });
  }

  gatewayThrottled(reason: ThrottleReason, caller: string): void {
    this.gatewayThrottledRequests.inc({ reason, caller: this.#throttledCallers.of(caller) });
  }

  tokenRejected(reason: TokenFailureCode): void {
    this.tokenFailures.inc({ reason });
  }

  /**
   * Wraps `load`, the fetch jose's createRemoteJWKSet loads the JWKS of `issuer` with for `use`,
   * counting each fetch and its failures: what `load` throws (a key set refused for its size or
   * for private keys, as well as a network error or timeout) and any status but 200.
   */
  jwksFetch(issuer: string, use: JwksUse, load: FetchImplementation): FetchImplementation {
    const labels = { issuer, use };
    return async (url, options) => {
      this.jwksFetches.inc(labels);
      try {
        const response = await load(url, options);
        if (response.status !== 200) this.jwksFetchFailures.inc(labels);
        return response;
      } catch (error) {
        this.jwksFetchFailures.inc(labels);
        throw error;
      }
    };
  }

  /** The Prometheus text exposition of every metric. */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  #reasonLabel(code: string | undefined): string {
    return code === undefined ? 'none' : this.#reasons.of(code);
  }
}
