import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { lookup } from 'node:dns/promises';
import { once } from 'node:events';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Worker } from 'node:worker_threads';
import { getRequestListener, RequestError, type ServerType } from '@hono/node-server';
import type { FetchImplementation } from 'jose';
import pino, { type Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import { routedBundles } from '../config/routed-bundles.ts';
import { LiveData, type DocumentStatus } from '../data/documents.ts';
import { liveDataChecks } from '../data/entitlements-schema.ts';
import { openDataDatabase } from '../data/persistence.ts';
import { Revocations } from '../data/revocations.ts';
import { DecisionPipeline } from '../decisions/pipeline.ts';
import { DecisionStore, unsignedTailWarning } from '../decisions/store.ts';
import { ArbiterError, atConfigKey, ConfigError } from '../errors.ts';
import { ArbiterMetrics, type JwksUse } from '../metrics/registry.ts';
import { answeredInTime, type ThreadHeap } from '../metrics/thread-heap.ts';
import { archiveLimitsOf } from '../policy/archive.ts';
import { BundleLifecycle, checkEmbeddedDirectory, type BundleObserver } from '../policy/lifecycle.ts';
import { BundlePuller } from '../policy/pull.ts';
import type { HostResolver } from '../net/connection.ts';
import { sourceCredentials } from '../policy/pull-credentials.ts';
import type { PolicyEvaluator } from '../policy/evaluation/evaluator.ts';
import { InProcessEvaluator } from '../policy/evaluation/in-process.ts';
import { EvaluationPool } from '../policy/evaluation/pool.ts';
import { BundleRegistry } from '../policy/registry.ts';
import { bundleVerificationOptions } from '../policy/signing-keys.ts';
import { BundleStore } from '../policy/store.ts';
import { devTrustedIssuer, loadOrCreateDevIssuerKey } from '../tokens/dev-issuer.ts';
import { loggingFailures } from '../tokens/key-set.ts';
import { IssuerRegistry, type TrustedIssuer } from '../tokens/trusted-issuers.ts';
import { VerificationCache } from '../tokens/verification-cache.ts';
import { createApp, createDiagnosticApp } from './app.ts';
import { readTlsMaterial, type TlsMaterial } from './tls.ts';
import { drainServer } from './shutdown.ts';
import { readSeedFile, seedSource } from '../data/seed.ts';
import { lockStateFiles, statePaths } from '../state-lock.ts';
import { adapterErrorResponse, answerClientError, answerConnect } from './client-errors.ts';
import { capConnections, MAIN_CONNECTION_CAP, type ConnectionCapSetting } from './connection-cap.ts';
import { ThrottledWarnings } from './throttled-log.ts';
import { allowedHostsOf } from './middleware/host-check.ts';
import { urlHost } from '../net/host-literal.ts';

export interface Arbiter {
  readonly url: string;
  readonly port: number;
  /** The diagnostic listener's base URL (server.diagnostic); undefined without one. */
  readonly diagnosticUrl: string | undefined;
  readonly bundles: BundleRegistry;
  readonly bundleLifecycle: BundleLifecycle;
  readonly pipeline: DecisionPipeline;
  readonly liveData: LiveData;
  readonly revocations: Revocations;
  /** The durable decision log; undefined when decision_log.enabled is false. */
  readonly decisionLog: DecisionStore | undefined;
  readonly logger: Logger;
  /** The HTTP application (its routes are what /openapi.json must describe). */
  readonly app: ReturnType<typeof createApp>;
  /** Counters and gauges other components update (decision log, bundle lifecycle). */
  readonly metrics: ArbiterMetrics;
  close(): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  /**
   * Aborting it stops a start-up under way (a signal before the server serves): what waits on
   * another party stops waiting, the port is never opened, and everything opened is closed.
   */
  signal?: AbortSignal;
  /** How bundle pulls and plain-http JWKS fetches resolve host names (dns.lookup): tests map names of theirs to addresses of their choosing. */
  resolveHost?: HostResolver;
}

/** Admin tokens are few (operators, deploy pipelines): their verification cache needs no more room. */
const MAX_ADMIN_VERIFICATION_CACHE = 1000;

/** The process log as `logging` configures it. */
export function processLogger(config: Config): Logger {
  return pino({ level: config.logging.level, timestamp: pino.stdTimeFunctions.isoTime });
}

/** Builds every part from a validated config and starts listening. */
export async function startArbiter(config: Config, options: StartOptions = {}): Promise<Arbiter> {
  const opened: (() => unknown)[] = [];
  try {
    return await assemble(config, options, opened);
  } catch (error) {
    // A failed start (the port taken, a bad key file) leaves no worker thread, database or timer behind.
    for (const close of opened.reverse()) await Promise.resolve().then(close).catch(() => undefined);
    throw error;
  }
}

/** Builds and starts every part; `opened` collects how to close what exists so far. */
async function assemble(config: Config, options: StartOptions, opened: (() => unknown)[]): Promise<Arbiter> {
  const logger = options.logger ?? processLogger(config);
  // Read first: a bad certificate stops start-up before anything is opened.
  const tlsMaterial = config.server.tls && readTlsMaterial(config.server.tls);
  checkEmbeddedDirectory(config.bundles.dir);
  // Environment variables a source's credentials name: one unset stops start-up, naming its key.
  const pullCredentials = sourceCredentials(config.bundles.sources);
  // Before anything is opened: a second server on the same files must not touch them at all.
  const releaseStateFiles = lockStateFiles(statePaths(config));
  opened.push(releaseStateFiles);

  const devIssuers: TrustedIssuer[] = [];
  if (config.dev_issuer.enabled) {
    const key = await loadOrCreateDevIssuerKey(config.dev_issuer.key_file);
    devIssuers.push(devTrustedIssuer(key));
    logger.warn({ key_file: config.dev_issuer.key_file }, 'development issuer enabled: never use it in production');
  }
  const evaluator = createEvaluator(config.engine, logger);
  opened.push(() => evaluator.close());
  const bundles = new BundleRegistry({ onRetire: (bundle) => evaluator.release(bundle.digest), onActivate: (bundle) => evaluator.retain(bundle.digest) });
  // The decision log opens further down; the scrape reads its threads and queue once it exists.
  const decisionLogReads: { writerHeap?: () => Promise<ThreadHeap>; readerHeap?: () => Promise<ThreadHeap> | undefined; pending?: () => number } = {};
  // Live data opens further down too: its documents' freshness is read at each scrape once it exists.
  const liveDataReads: { status?: (nowMs: number) => Record<string, DocumentStatus> } = {};
  const metrics = new ArbiterMetrics({
    activeBundles: () => bundles.list(),
    threadHeaps: async () => {
      // In time or not at all: a writer waiting on a lock or a slow disk, or a reader in a long
      // read, must not hold the scrape. Asked together, so a scrape waits for the slowest once.
      const reader = decisionLogReads.readerHeap?.();
      const [evaluators, writer, read] = await Promise.all([
        evaluator.heapStatistics?.(),
        decisionLogReads.writerHeap && answeredInTime(decisionLogReads.writerHeap()),
        reader && answeredInTime(reader),
      ]);
      return [...(evaluators ?? []), ...(writer ? [writer] : []), ...(read ? [read] : [])];
    },
    policyInstances: () => evaluator.policyInstances({ inTime: true }),
    decisionLogPending: () => decisionLogReads.pending?.() ?? 0,
    pulledBundles: config.bundles.sources.map((source) => source.name),
    gateways: configuredGateways(config.gateway),
    remoteIssuers: [
      ...config.issuers.filter((issuer) => issuer.jwks_uri !== undefined).map((issuer) => ({ issuer: issuer.issuer, use: 'decision' as const })),
      ...config.admin.issuers.filter((issuer) => issuer.jwks_uri !== undefined).map((issuer) => ({ issuer: issuer.issuer, use: 'admin' as const })),
    ],
    liveDataStatus: () => liveDataReads.status?.(Date.now()) ?? {},
  });
  const jwksFetch = (use: JwksUse) => (issuer: string, load: FetchImplementation) => metrics.jwksFetch(issuer, use, loggingFailures(load, issuer, logger));
  const resolveHost = options.resolveHost && { resolveHost: options.resolveHost };
  const issuers = await IssuerRegistry.fromConfig(config.issuers, devIssuers, { jwksFetch: jwksFetch('decision'), ...resolveHost });
  const adminIssuers = await IssuerRegistry.fromConfig(config.admin.issuers, config.admin.allow_dev_issuer ? devIssuers : [], { jwksFetch: jwksFetch('admin'), configPath: 'admin.issuers', ...resolveHost });
  if (issuers.all().length === 0) {
    // Legitimate for AuthZEN-only or OPA-API deployments, a forgotten setting otherwise: say so.
    logger.warn('no issuers configured: every token sent for a decision is refused (token_untrusted_issuer)');
  }

  const bundleLifecycle = createBundleLifecycle(config, bundles, evaluator, metrics, logger);
  const pulled = new Set(config.bundles.sources.map((source) => source.name));
  const restoring = bundleLifecycle.restore(config.bundles.dir, pulled, options.signal).catch((error: unknown) => {
    // The store directory itself cannot be listed (a file in its place, no permission): the key to fix.
    if (error instanceof ArbiterError && error.code === 'bundle_store_unreadable') throw new ConfigError([{ path: 'bundles.store', message: error.message }]);
    throw error;
  });
  // A bundle's check may run until engine.load_deadline_ms: a signal meanwhile stops start-up now.
  // Closing what is open (the evaluator's workers among it) ends the check under way, and the
  // restore, seeing the signal, stops there and refuses nothing.
  await untilAborted(restoring, options.signal, () => bundleLifecycle.stopSignatureChecks());
  reportUnservedBundles(config, (name) => bundles.get(name) !== undefined || pulled.has(name), logger);

  const db = openDataDatabase(config.data.path);
  opened.push(() => db.close());
  const liveData = openLiveData(config.data.path, () => new LiveData(db, {
    ownerOf: (path) => bundles.ownerOf(path)?.name,
    claimantOf: (path) => bundleLifecycle.claimantOf(path),
    limits: { maxDepth: config.data.max_depth, maxTotalBytes: config.data.max_size_bytes },
    defaultMaxAgeS: config.data.default_max_age_s,
    onListenerError: (error) => logger.error({ err: error }, 'live data listener failed'),
    checks: liveDataChecks(config.data.check_entitlements),
  }));
  liveDataReads.status = (nowMs) => liveData.status(nowMs);
  // Revoked tokens must stay revoked for as long as any issuer would still accept them.
  const clockToleranceS = Math.max(0, ...[...issuers.all(), ...adminIssuers.all()].map((issuer) => issuer.config.clock_tolerance_s));
  const revocationIssuers = [...new Set([...issuers.all(), ...adminIssuers.all()].map((issuer) => issuer.config.issuer))];
  const revocations = new Revocations(db, { clockToleranceS, issuers: revocationIssuers });
  // Entries of an issuer removed from the configuration are kept (they apply again if it comes
  // back) and do not stop start-up: said here, since they no longer revoke anything.
  try {
    for (const { iss, kinds } of revocations.ofOtherIssuers()) {
      logger.warn({ iss, kinds }, 'revocations of an issuer that is not configured: they apply to no token until it is');
    }
  } catch (error) {
    logger.warn({ err: error }, 'revocations of issuers that are not configured not listed');
  }
  seedLiveData(liveData, config.data.seed ?? {}, logger);
  bundleLifecycle.protectLiveData(() => Object.keys(liveData.snapshot().documents));
  evaluator.setLiveData(liveData.snapshot().data, liveData.snapshot().version);
  liveData.onChange((snapshot) => evaluator.setLiveData(snapshot.data, snapshot.version));
  const pruneTimer = setInterval(() => {
    try {
      revocations.prune(Math.floor(Date.now() / 1000));
    } catch (error) {
      // A lock held past busy_timeout or a full disk: thrown from a timer, it would end the
      // process. Expired entries already no longer match; their rows go at a later run.
      logger.error({ err: error }, 'pruning expired revocations failed');
    }
  }, config.data.revocation_prune_interval_s * 1000);
  pruneTimer.unref();
  opened.push(() => clearInterval(pruneTimer));

  const decisionLog = config.decision_log.enabled ? await openDecisionLog(config.decision_log, logger, options.signal) : undefined;
  if (!decisionLog) logger.warn('decision_log.enabled is false: decisions are not recorded durably');
  if (decisionLog) {
    decisionLogReads.writerHeap = () => decisionLog.writerHeap();
    decisionLogReads.readerHeap = () => decisionLog.readerHeap();
    decisionLogReads.pending = () => decisionLog.stats.pending;
    decisionLog.onCommitTime((seconds) => metrics.decisionLogCommitSeconds.observe(seconds));
    opened.push(() => decisionLog.close());
  }

  const verificationCache = new VerificationCache(config.tokens.verification_cache_size);
  // Admin tokens have a cache of their own, as large but at most MAX_ADMIN_VERIFICATION_CACHE,
  // and none when verification_cache_size is 0: an operator who turns caching off means it everywhere.
  const adminVerificationCache = new VerificationCache(Math.min(config.tokens.verification_cache_size, MAX_ADMIN_VERIFICATION_CACHE));
  const pipeline = new DecisionPipeline({
    issuers,
    bundles,
    evaluator,
    defaultBundle: config.bundles.default,
    maxTokenBytes: config.tokens.max_token_bytes,
    logger,
    verificationCache,
    revocations,
    dataStatus: (nowMs) => liveData.status(nowMs),
    recorder: decisionLog,
    observer: metrics,
    logMask: config.decision_log.mask,
  });
  // Set when shutdown starts, so /readyz tells load balancers to stop sending traffic.
  const draining = { value: false };
  // One throttle for every warning clients can cause at will (bad keys and tokens, tenant refusals, refused connections).
  const warnings = new ThrottledWarnings(logger);
  const app = createApp({
    bundleLifecycle: { lifecycle: bundleLifecycle, maxBundleBytes: config.bundles.limits.max_compressed_bytes },
    draining,
    pipeline,
    bundles,
    issuers,
    liveData,
    revocations,
    admin: { issuers: adminIssuers, maxTokenBytes: config.tokens.max_token_bytes, logger, warnings, cache: adminVerificationCache, revocations, observer: metrics },
    defaultBundle: config.bundles.default,
    bodyLimitBytes: config.server.body_limit_bytes,
    authzen: config.authzen,
    dataBodyLimitBytes: config.data.max_body_bytes,
    logger,
    warnings,
    opaCompat: config.opa_compat.enabled,
    metrics: config.metrics.enabled ? metrics : undefined,
    gateway: config.gateway,
    allowedHosts: allowedHostsOf(config),
    decisionLog: decisionLog && { store: decisionLog, masked: config.decision_log.mask.length > 0 },
    evaluator,
  });

  options.signal?.throwIfAborted();
  const mainAddress: ListenAddress = {
    host: config.server.host,
    port: config.server.port,
    maxConnections: config.server.max_connections,
    keys: { host: 'server.host', port: 'server.port', portAlso: 'PORT', cap: MAIN_CONNECTION_CAP },
  };
  const server = await listen(app.fetch, mainAddress, config.server, tlsMaterial, logger, { warnings, dropped: () => metrics.connectionsDropped.inc() });
  opened.push(() => new Promise((resolve) => server.close(resolve)));
  // Health and metrics on a listener of their own, with its own cap: a flood that fills
  // server.max_connections does not fail liveness probes and get a busy replica restarted.
  const diagnosticServer = config.server.diagnostic && (await listenDiagnostic(config.server.diagnostic));
  // Checked again once open: a signal may come while the port opens (a server.host that is a
  // name is looked up first), and the caller serves whatever start resolves, signal or not.
  options.signal?.throwIfAborted();
  const { port } = server.address() as AddressInfo;
  const url = baseUrl(config.server.host, port, config.server.tls !== undefined);
  const diagnosticUrl = diagnosticServer && baseUrl(diagnosticServer.host, (diagnosticServer.server.address() as AddressInfo).port, config.server.tls !== undefined);
  logger.info({ url, ...(diagnosticUrl !== undefined && { diagnostic_url: diagnosticUrl }), bundles: bundles.list().map((b) => `${b.name}@${b.revision}`) }, 'arbiter listening');
  const pullers = config.bundles.sources.map(
    (source, index) =>
      new BundlePuller(source, { lifecycle: bundleLifecycle, credentials: pullCredentials[index], logger, maxBytes: config.bundles.limits.max_compressed_bytes, observer: metrics, ...resolveHost }),
  );
  for (const puller of pullers) puller.start();

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    diagnosticUrl,
    bundles,
    bundleLifecycle,
    pipeline,
    liveData,
    revocations,
    decisionLog,
    logger,
    app,
    metrics,
    close() {
      // Once: a later call waits for the first instead of closing the databases under it
      // (only the first reports a failure).
      if (closing) return closing.catch(() => undefined);
      return (closing = closeAll());
    },
  };

  /** Where the main listener opened: the address server.host resolved to, and the port (server.port, or the system's choice for 0). */
  function mainBound(): { address: string; port: number } {
    const { address, port } = server.address() as AddressInfo;
    return { address, port };
  }

  /** Opens the diagnostic listener (server.diagnostic): health and metrics only, with its own connection cap. */
  async function listenDiagnostic(diagnostic: NonNullable<Config['server']['diagnostic']>): Promise<{ server: ServerType; host: string }> {
    const address: ListenAddress = {
      host: diagnostic.host ?? config.server.host,
      port: diagnostic.port,
      maxConnections: diagnostic.max_connections,
      keys: { host: 'server.diagnostic.host', port: 'server.diagnostic.port', cap: { key: 'server.diagnostic.max_connections', reason: 'diagnostic_max_connections' } },
      heldBy: { ...mainBound(), what: `server.port's listener (server.host ${config.server.host}, on ${urlHost(mainBound().address)}:${mainBound().port})` },
    };
    const diagnosticApp = createDiagnosticApp({
      bundles,
      issuers,
      defaultBundle: config.bundles.default,
      authzen: config.authzen,
      draining,
      decisionLog: decisionLog && { store: decisionLog, masked: config.decision_log.mask.length > 0 },
      evaluator,
      metrics: config.metrics.enabled ? metrics : undefined,
      logger,
    });
    // server.tls's certificate, without asking for client certificates: probes and scrapers carry none.
    const material = tlsMaterial && { cert: tlsMaterial.cert, key: tlsMaterial.key };
    const listening = await listen(diagnosticApp.fetch, address, config.server, material, logger, { warnings, dropped: () => metrics.diagnosticConnectionsDropped.inc() });
    opened.push(() => new Promise((resolve) => listening.close(resolve)));
    return { server: listening, host: address.host };
  }

  async function closeAll(): Promise<void> {
    draining.value = true;
    clearInterval(pruneTimer);
    const deadlineMs = config.server.shutdown_timeout_s * 1000;
    const deadline = performance.now() + deadlineMs;
    // Polls stop beside the drain, not before it: a poll whose archive is being checked ends
    // with the check, which may run until engine.load_deadline_ms, and the server would go on
    // listening meanwhile, past the grace period of whatever stops it.
    const pulling = Promise.all(pullers.map((puller) => puller.stop()));
    // Awaited only after the drain: handled now, so a rejection meanwhile is not an unhandled one.
    pulling.catch(() => undefined);
    await closeInOrder([
      async () => {
        const { forced } = await drainServer(server as Server, deadlineMs);
        if (forced) logger.warn({ deadline_s: config.server.shutdown_timeout_s }, 'shutdown deadline reached: open connections were cut');
      },
      // After the main listener: probes are answered while it drains (/readyz 503, /healthz 200),
      // so a slow drain is not taken for a dead process.
      () => diagnosticServer && drainServer(diagnosticServer.server as Server, Math.max(0, deadline - performance.now())),
      // A check still running at the deadline is cut short by closing the evaluator below.
      () => settledWithin(pulling, deadline - performance.now()),
      () => revocations.flush(),
      () => db.close(),
      () => decisionLog?.close(),
      () => evaluator.close(),
      // A pull's signature check may be hashing a large file on a thread of its own: cut short too.
      () => bundleLifecycle.stopSignatureChecks(),
      // Last, once nothing writes the files any more (a cut-short check has settled).
      () => pulling,
      releaseStateFiles,
    ]);
  }
}

/** The gateways the configuration names, as /metrics labels them (caller), and those bound to tenants. */
function configuredGateways(gateway: Config['gateway']): { callers: string[]; bound: string[] } {
  if (gateway.authentication === 'none') return { callers: ['anonymous'], bound: [] };
  if (gateway.authentication === 'mtls') {
    const listed = gateway.client_certificates.map((entry) => entry.identity);
    return { callers: listed, bound: listed };
  }
  return { callers: gateway.api_keys.map((key) => key.id), bound: gateway.api_keys.filter((key) => key.tenants !== undefined).map((key) => key.id) };
}

/** Waits for `promise` to settle, at most `ms` (and not at all when `ms` is not positive). */
async function settledWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise.catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, Math.max(0, ms))))]);
  clearTimeout(timer);
}

/**
 * Runs every step in order, each after the one before has settled, then throws the first
 * failure: a decision log that cannot sign its last checkpoint must not leave the evaluation
 * workers running or the state files locked.
 */
async function closeInOrder(steps: readonly (() => unknown)[]): Promise<void> {
  let failure: { error: unknown } | undefined;
  for (const step of steps) {
    try {
      await step();
    } catch (error) {
      failure ??= { error };
    }
  }
  if (failure !== undefined) throw failure.error;
}

/** The base URL of a listener. */
function baseUrl(host: string, port: number, tls: boolean): string {
  return `${tls ? 'https' : 'http'}://${urlHost(host)}:${port}`;
}

/** Where one listener listens, and the keys that set it, which its listen errors name. */
interface ListenAddress {
  host: string;
  port: number;
  maxConnections: number;
  keys: { host: string; port: string; /** Another way to set the port, named beside its key. */ portAlso?: string; cap: ConnectionCapSetting };
  /**
   * A listener of this server already open on a port, which the configuration check cannot tell
   * is this address (localhost beside 127.0.0.1): the port taken there is not another process's.
   */
  heldBy?: { address: string; port: number; what: string };
}

/** Opens a listener at `address` with server's timeouts; `options` gives the timeouts only. */
function listen(
  fetch: Parameters<typeof getRequestListener>[0],
  address: ListenAddress,
  options: Config['server'],
  material: TlsMaterial | undefined,
  logger: Logger,
  refused: Omit<Parameters<typeof capConnections>[2], 'setting'>,
): Promise<ServerType> {
  // Node's default lets a request trickle in for 5 minutes while it holds a decision slot;
  // timeouts are checked every second instead of every 30.
  // Whole milliseconds, as Node's server requires (16.1 s is 16100.000000000002 ms), and at
  // least 1: a value that rounds to 0 would turn the timeout off.
  const timeoutMs = Math.max(1, Math.round(options.request_timeout_s * 1000));
  const timeouts = { requestTimeout: timeoutMs, headersTimeout: Math.min(timeoutMs, 60_000), connectionsCheckingInterval: 1000 };
  // The adapter's own refusals (a request target it cannot make a URL of) are problems too.
  const listener = getRequestListener(fetch, {
    // The host of the request URL when a request carries no Host (HTTP/1.0), put in the URL as
    // it stands: unbracketed, an IPv6 address (::1) makes no URL and every such request a 400.
    hostname: urlHost(address.host),
    errorHandler: (error) => {
      if (!(error instanceof RequestError)) logger.error({ err: error }, 'unhandled error before the app answered');
      return adapterErrorResponse(error);
    },
  });
  const server = material
    ? createHttpsServer(
        {
          ...timeouts,
          // TLS's own default is 120 s: a client silent before its handshake is done is closed
          // as one silent before its first request.
          handshakeTimeout: timeouts.headersTimeout,
          cert: material.cert,
          key: material.key,
          // Client certificates are requested, and checked by the gateway middleware so a
          // missing one gets a problem response instead of a failed handshake.
          ...(material.ca !== undefined && { ca: material.ca, requestCert: true, rejectUnauthorized: false }),
        },
        listener,
      )
    : createHttpServer(timeouts, listener);
  // Node's headersTimeout starts at a request's first byte: a connection that sends nothing
  // would be held for as long as the client likes, each one a file descriptor, and enough of
  // them leave none for gateways, JWKS fetches or the databases. Until its first request
  // arrives, a connection is closed after headersTimeout of silence; from then on the request
  // timeouts and keepAliveTimeout (between requests) govern it, so a request the server takes
  // long to answer is not cut.
  server.on(material ? 'secureConnection' : 'connection', (socket: Socket) => socket.setTimeout(timeouts.headersTimeout));
  // No TLS 1.2 renegotiation: in one, a client presents another certificate (even one no CA
  // signed), and Node keeps `authorized` from the first handshake while getPeerCertificate()
  // returns the new one, so the gateway check would take whatever identity it names. An
  // attempt is an error on the socket, which closes it.
  if (material) server.on('secureConnection', (socket: TLSSocket) => socket.disableRenegotiation());
  server.on('request', (request: IncomingMessage) => request.socket.setTimeout(0));
  capConnections(server, address.maxConnections, { ...refused, setting: address.keys.cap });
  return new Promise((resolve, reject) => {
    server.on('clientError', answerClientError);
    server.on('connect', answerConnect);
    server.once('error', async (error: NodeJS.ErrnoException) => {
      const where = `cannot listen on ${address.host}:${address.port}`;
      const wrong = LISTEN_CONFIG_ERRORS[error.code ?? ''];
      // A value no start can listen with: the key to change, as for any other bad value.
      if (wrong !== undefined) {
        reject(new ConfigError([{ path: address.keys[wrong.key], message: `${where}: ${wrong.why(address)} (${error.code})` }]));
        return;
      }
      if (error.code === 'EADDRINUSE' && address.heldBy?.port === address.port && (await resolvesTo(address.host, address.heldBy.address))) {
        reject(new ConfigError([{ path: address.keys.port, message: `${where}: ${address.heldBy.what} holds it: give this listener a port of its own (${error.code})` }]));
        return;
      }
      const hint = error.code === 'EADDRINUSE' ? `: another process uses it; stop it or set ${address.keys.port}${address.keys.portAlso === undefined ? '' : ` (or ${address.keys.portAlso})`}` : '';
      reject(new ArbiterError('listen_failed', `${where}${hint} (${error.code ?? error.message})`, { cause: error }));
    });
    server.listen(address.port, address.host, () => resolve(server));
  });
}

/** Whether `host` (a name or an address) is, or resolves to, `address`. */
async function resolvesTo(host: string, address: string): Promise<boolean> {
  const resolved = await lookup(host, { all: true }).catch(() => []);
  return resolved.some((entry) => entry.address === address);
}

/** Listen errors that say the host or port key is wrong, rather than that the port is busy now. */
const LISTEN_CONFIG_ERRORS: Record<string, { key: 'host' | 'port'; why: (address: ListenAddress) => string }> = {
  EADDRNOTAVAIL: { key: 'host', why: (address) => `no network interface of this machine has the address ${address.host}` },
  ENOTFOUND: { key: 'host', why: (address) => `${address.host} resolves to no address` },
  EAI_AGAIN: { key: 'host', why: (address) => `${address.host} could not be resolved (the name server did not answer)` },
  EACCES: { key: 'port', why: (address) => `this process may not listen on port ${address.port} (ports below 1024 need privileges): use a higher one` },
};

/**
 * Loads the live data from the store at data.path. A document changed outside Arbiter stops
 * start-up naming the key, the file and the document, as any other state file that cannot be
 * used: serving without it would decide on data that is not what was written.
 */
function openLiveData(path: string, open: () => LiveData): LiveData {
  try {
    return open();
  } catch (error) {
    if (!(error instanceof ArbiterError && error.code === 'data_store_damaged')) throw error;
    throw new ConfigError([
      {
        path: 'data.path',
        message: `cannot load the live data in ${path}: ${error.message} (restore the file from a backup, or delete that document's row from live_documents and write the document again)`,
      },
    ]);
  }
}

/** Opens the decision log and, when configured, ships every committed record to a pino transport. */
async function openDecisionLog(config: Config['decision_log'], logger: Logger, signal: AbortSignal | undefined): Promise<DecisionStore> {
  const { enabled: _enabled, transport, ...storeConfig } = config;
  const store = await DecisionStore.open(storeConfig);
  store.onError((error) => logger.error({ err: error }, 'decision log commit failed'));
  if (transport) {
    // A logger of its own: shipped decision records never mix with process logs.
    let destination: ReturnType<typeof pino.transport>;
    try {
      destination = atConfigKey('decision_log.transport.target', () => pino.transport({ target: transport.target, options: transport.options }));
    } catch (error) {
      // Not yet among what a failed start closes: close it here, or its writer thread lingers.
      await store.close();
      throw error;
    }
    try {
      // The module loads in the transport's own thread: a target that cannot be loaded (an
      // absolute path or file: URL, taken as it is) fails there, later, as an 'error' event.
      await transportReady(destination, transport.ready_timeout_s, signal);
    } catch (error) {
      await store.close();
      throw error;
    }
    const shipper = pino({ base: null, timestamp: false }, destination);
    const stopShipping = store.onCommitted((decisions) => {
      for (const decision of decisions) shipper.info(decision);
    });
    // Unhandled, an 'error' of the transport (its module throws, its thread exits) would end the
    // process: the decision point would stop over a copy of records that are committed already.
    let failed = false;
    destination.on('error', (error: Error) => {
      if (failed) return;
      failed = true;
      stopShipping();
      logger.error({ err: error, target: transport.target }, 'decision log transport failed: committed records are no longer shipped');
    });
  }
  logger.info({ path: config.path, durability: config.durability }, 'decision log open');
  const unsigned = store.unsignedAtOpen;
  if (unsigned) logger.warn({ path: config.path, from_seq: unsigned.from, to_seq: unsigned.to, checkpoint_seq: unsigned.checkpoint }, unsignedTailWarning(unsigned));
  return store;
}

/**
 * `work`, or a rejection with the signal's reason as soon as `signal` aborts (`onAbort` run
 * first), whichever comes first. The work left running is the caller's to stop; a failure of it
 * after the abort is not an unhandled rejection.
 */
async function untilAborted<T>(work: Promise<T>, signal: AbortSignal | undefined, onAbort: () => void): Promise<T> {
  if (signal === undefined) return work;
  work.catch(() => undefined);
  let stopListening: (() => void) | undefined;
  const aborted = new Promise<never>((_resolve, reject) => {
    const abort = () => {
      onAbort();
      reject(signal.reason as Error);
    };
    if (signal.aborted) return abort();
    signal.addEventListener('abort', abort, { once: true });
    stopListening = () => signal.removeEventListener('abort', abort);
  });
  try {
    return await Promise.race([work, aborted]);
  } finally {
    stopListening?.();
  }
}

/**
 * Resolves once the transport's thread has loaded its module; rejects with what kept it from
 * doing so (naming decision_log.transport.target), when it has not within `timeoutS`, or when
 * start-up is aborted. A module that never finishes loading (a shipper waiting for a collector
 * that is down) would otherwise hold start-up forever, the port never open to say why.
 */
async function transportReady(destination: ReturnType<typeof pino.transport>, timeoutS: number, signal: AbortSignal | undefined): Promise<void> {
  // AbortSignal.timeout takes whole milliseconds only: 0.2505 s would throw a RangeError naming no key.
  const gaveUp = AbortSignal.any([AbortSignal.timeout(Math.max(1, Math.round(timeoutS * 1000))), ...(signal ? [signal] : [])]);
  try {
    // Rejects with the 'error' that comes before 'ready': the module failing to load.
    await once(destination, 'ready', { signal: gaveUp });
  } catch (error) {
    if (!gaveUp.aborted) throw new ConfigError([{ path: 'decision_log.transport.target', message: (error as Error).message }]);
    // Stop the thread: it would keep the process alive, and pino's exit hook would wait 10 s for
    // it to end. Its exit surfaces as an 'error' (handled here) and then a 'close'.
    destination.on('error', () => undefined);
    const thread = destination as unknown as { worker: Worker; closed: boolean };
    if (!thread.closed) {
      const closed = new Promise((resolve) => destination.once('close', resolve));
      void thread.worker.terminate();
      await closed;
    }
    signal?.throwIfAborted();
    throw new ConfigError([
      { path: 'decision_log.transport.target', message: `the transport did not become ready within ${timeoutS} s (decision_log.transport.ready_timeout_s)` },
    ]);
  }
}

/** Worker threads for policy evaluation (deadline, memory ceiling), or the main thread when engine.workers is 0. */
function createEvaluator(engine: Config['engine'], logger: Logger): PolicyEvaluator {
  const maxMemoryPages = (engine.max_memory_mb * 1024 * 1024) / WASM_PAGE_BYTES;
  if (engine.workers === 0) {
    logger.warn('engine.workers is 0: policies run on the main thread without a deadline');
    return new InProcessEvaluator({ maxMemoryPages, logger });
  }
  return new EvaluationPool({ workers: engine.workers, deadlineMs: engine.deadline_ms, loadDeadlineMs: engine.load_deadline_ms, maxMemoryPages, logger });
}

const WASM_PAGE_BYTES = 64 * 1024;

/** The lifecycle of bundles as configured in `bundles`, protecting the bundles other sections target. */
function createBundleLifecycle(config: Config, registry: BundleRegistry, evaluator: PolicyEvaluator, observer: BundleObserver, logger: Logger): BundleLifecycle {
  const { limits } = config.bundles;
  const requireSignatures = config.bundles.require_signatures ?? config.mode !== 'development';
  if (requireSignatures) {
    logger.info('bundle signatures required: unsigned bundles are refused on push and pull');
  } else {
    // The default outside production mode: an operator who left `mode` out must hear of it.
    const why = config.bundles.require_signatures === false ? 'bundles.require_signatures is false' : 'mode is development';
    logger.warn(`bundle signatures not required (${why}): any admin token with arbiter.bundles.write can activate an unsigned policy, and a source can serve one`);
  }
  return new BundleLifecycle({
    registry,
    evaluator,
    observer,
    store: new BundleStore(config.bundles.store),
    logger,
    requireSignatures,
    verification: bundleVerificationOptions(config.bundles.signing),
    archiveLimits: archiveLimitsOf(limits),
    dataLimits: { maxDepth: limits.max_data_depth, maxBytes: limits.max_data_bytes },
    protectedBundles: new Set(routedBundles(config).map(([, bundle]) => bundle)),
    maxRevisions: config.bundles.retention.max_revisions,
  });
}

/**
 * Names each bundle the configuration routes decisions to that nothing serves after restore:
 * not stored, not in bundles.dir, not pulled. A typo otherwise showed only as a /readyz 503 (or
 * an AuthZEN tenant's 503s) that never clears. Not fatal: a push can still provide it.
 */
function reportUnservedBundles(config: Config, served: (name: string) => boolean, logger: Logger): void {
  for (const [key, bundle] of routedBundles(config)) {
    if (served(bundle)) continue;
    logger.error(
      { key, bundle, dir: config.bundles.dir, store: config.bundles.store },
      `configured bundle not served: ${key} names ${bundle}, which is neither stored, in bundles.dir, nor pulled (bundles.sources); its decisions answer 503 until a revision is pushed`,
    );
  }
}

/**
 * Seeds documents the store has never had (development); acknowledged live data always wins,
 * a deletion included: a document seeded once is not seeded again.
 */
function seedLiveData(liveData: LiveData, seeds: Record<string, string>, logger: Logger): void {
  for (const [document, file] of Object.entries(seeds)) {
    if (liveData.wasSeeded(document)) continue;
    if (liveData.get([document]) !== undefined) {
      liveData.markSeeded(document);
      continue;
    }
    const value = readSeedFile(document, file);
    try {
      liveData.put([document], value, { source: seedSource(file) });
    } catch (error) {
      // e.g. a document under a bundle's roots (read-only), or over the data limits.
      throw new ConfigError([{ path: `data.seed.${document}`, message: `cannot seed from ${file}: ${(error as Error).message}` }]);
    }
    liveData.markSeeded(document);
    logger.info({ document, file }, 'live data seeded');
  }
}
