import type { HttpBindings } from '@hono/node-server';
import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { isMiddleware } from 'hono/utils/handler';
import type { Logger } from 'pino';
import { AUTHZEN_PATHS, identifierPath } from '../authzen/metadata.ts';
import type { LiveData } from '../data/documents.ts';
import type { Revocations } from '../data/revocations.ts';
import type { DecisionPipeline } from '../decisions/pipeline.ts';
import type { DecisionStore } from '../decisions/store.ts';
import type { ArbiterMetrics } from '../metrics/registry.ts';
import type { BundleLifecycle } from '../policy/lifecycle.ts';
import type { PolicyEvaluator } from '../policy/evaluation/evaluator.ts';
import type { BundleRegistry } from '../policy/registry.ts';
import type { IssuerRegistry } from '../tokens/trusted-issuers.ts';
import type { GatewayConfig } from '../config/gateway.ts';
import type { AdminAuthDeps } from './middleware/admin-auth.ts';
import { admission } from './middleware/admission.ts';
import { gatewayAuth } from './middleware/gateway-auth.ts';
import { hostCheck } from './middleware/host-check.ts';
import { requestId, type RequestIdVariables } from './middleware/request-id.ts';
import { TenantBinding } from './middleware/tenant-binding.ts';
import type { ThrottledWarnings } from './throttled-log.ts';
import { arbiterCatalogue } from './openapi/catalogue.ts';
import { buildOpenApiDocument } from './openapi/document.ts';
import { problem } from './problem.ts';
import { dataRoutes } from './routes/data.ts';
import { authzenRoutes, type AuthzenRouteDeps } from './routes/authzen.ts';
import { bundleRoutes } from './routes/bundles.ts';
import { decideRoutes } from './routes/decide.ts';
import { decisionRoutes } from './routes/decisions.ts';
import { healthRoutes } from './routes/health.ts';
import { issuanceRoutes } from './routes/issuance.ts';
import { metricsRoutes } from './routes/metrics.ts';
import { openApiRoutes } from './routes/openapi.ts';
import { revocationRoutes } from './routes/revocations.ts';
import { OPA_DATA_ROUTE, opaCompatRoutes } from './routes/opa-compat.ts';

export interface AppDeps {
  pipeline: DecisionPipeline;
  bundles: BundleRegistry;
  /** Bundle admin API: PUT/GET/activate/DELETE (config bundles). */
  bundleLifecycle: { lifecycle: BundleLifecycle; maxBundleBytes: number };
  issuers: IssuerRegistry;
  liveData: LiveData;
  revocations: Revocations;
  admin: AdminAuthDeps;
  defaultBundle: string;
  bodyLimitBytes: number;
  dataBodyLimitBytes: number;
  logger: Logger;
  /** Warnings clients can cause at will (gateway keys, tenant refusals), at most one a second per reason. */
  warnings: ThrottledWarnings;
  gateway: GatewayConfig;
  /**
   * The names besides loopback ones a request's Host may name (middleware/host-check.ts,
   * allowedHostsOf); undefined: Host is not checked, and nothing runs for it.
   */
  allowedHosts?: readonly string[] | undefined;
  /** True once shutdown began: /readyz answers 503 so traffic moves elsewhere. */
  draining: { readonly value: boolean };
  /** Serves the OPA data API on unverified input (config opa_compat.enabled). */
  opaCompat?: boolean;
  /** AuthZEN bundle selection and public URL (config authzen). */
  authzen: AuthzenRouteDeps['authzen'];
  /** The auditor API's decision log; undefined when decision_log.enabled is false. `masked`: decision_log.mask is not empty. */
  decisionLog?: { store: DecisionStore; masked: boolean } | undefined;
  /** The policy evaluator, which /readyz asks whether live data reaches the policies, and the default bundles' instances hold it. */
  evaluator?: Pick<PolicyEvaluator, 'liveDataFailure' | 'revisionFailure'> | undefined;
  /** Served at /metrics when set (config metrics.enabled). */
  metrics?: ArbiterMetrics | undefined;
}

/** Paths whose POST requests are decisions asked by gateways (admin endpoints authenticate separately). */
const DECISION_PATHS = ['/v1/decide', '/v1/issuance', ...Object.values(AUTHZEN_PATHS)];
/** Decision paths whose requests name no tenant (the OPA data API, when served, is one too). */
const TENANTLESS_PATHS = ['/v1/decide', '/v1/issuance'];

export function createApp(deps: AppDeps) {
  const app = new Hono<{ Variables: RequestIdVariables }>();
  app.use(requestId());
  app.use(async (c, next) => {
    await next();
    // While draining, answer and close: keep-alive clients reconnect to another replica.
    if (deps.draining.value) c.header('Connection', 'close');
  });
  // Before every route, admin and health ones included: a request for a name this server does not
  // answer for (a DNS-rebinding page's) gets nothing from this listener.
  const { warnings } = deps;
  if (deps.allowedHosts !== undefined) app.use(hostCheck(deps.allowedHosts, { warnings, observer: deps.metrics }));
  // Decision endpoints: the gateway is authenticated and admitted before any body is read. Only
  // for the method they are served with: another is 405 naming it, as on every path, not a 401
  // that sends the caller after a gateway key which would change nothing.
  const gateway = [gatewayAuth(deps.gateway, { warnings, observer: deps.metrics }), admission(deps.gateway, { warnings, observer: deps.metrics })] as const;
  for (const path of [...DECISION_PATHS, ...(deps.opaCompat ? [OPA_DATA_ROUTE] : [])]) app.on('POST', path, ...gateway);
  // A gateway bound to tenants asks AuthZEN requests naming one of them (routes/authzen.ts checks
  // what they name); these endpoints name no tenant, so such a gateway is refused there.
  const mtls = deps.gateway.authentication === 'mtls';
  const tenantBinding = new TenantBinding({ warnings, observer: deps.metrics, setting: mtls ? 'gateway.client_certificates[].tenants' : 'gateway.api_keys[].tenants' });
  if (mtls ? deps.gateway.client_certificates.length > 0 : deps.gateway.api_keys.some((key) => key.tenants !== undefined)) {
    app.on('POST', [...TENANTLESS_PATHS, ...(deps.opaCompat ? [OPA_DATA_ROUTE] : [])], tenantBinding.noTenant);
  }
  app.route('/', healthRoutes({ ...deps, decisionLog: deps.decisionLog?.store }));
  app.route('/', decideRoutes(deps.pipeline, deps.bodyLimitBytes));
  app.route('/', issuanceRoutes(deps.pipeline, deps.bodyLimitBytes));
  app.route('/', authzenRoutes({ ...deps, tenantBinding }));
  app.route('/', dataRoutes({ liveData: deps.liveData, bundles: deps.bundles, admin: deps.admin, bodyLimitBytes: deps.dataBodyLimitBytes }));
  // A batch of revocations is bulk data like a live data document, not a decision request.
  app.route('/', revocationRoutes({ revocations: deps.revocations, admin: deps.admin, bodyLimitBytes: deps.dataBodyLimitBytes, reloadIssuerKeys: (iss) => reloadIssuerKeys(deps, iss) }));
  app.route('/', bundleRoutes({ ...deps.bundleLifecycle, admin: deps.admin, bodyLimitBytes: deps.bodyLimitBytes }));
  app.route('/', decisionRoutes({ log: deps.decisionLog, bundles: deps.bundles, lifecycle: deps.bundleLifecycle.lifecycle, pipeline: deps.pipeline, admin: deps.admin, bodyLimitBytes: deps.bodyLimitBytes }));
  if (deps.opaCompat) app.route('/', opaCompatRoutes(deps.pipeline, deps.bodyLimitBytes));
  if (deps.metrics) app.route('/', metricsRoutes(deps.metrics));
  app.route('/', openApiRoutes(buildOpenApiDocument(arbiterCatalogue({ opaCompat: Boolean(deps.opaCompat), metrics: deps.metrics !== undefined, gatewayAuthentication: deps.gateway.authentication, hostCheck: deps.allowedHosts !== undefined, authzenIdentifierPath: identifierPath(deps.authzen.public_url) }))));
  answerUnrouted(app, deps.logger);
  return app;
}

/**
 * The diagnostic listener's application (server.diagnostic): /healthz, /readyz and, when metrics
 * are enabled, /metrics, answered as on the main listener. Nothing here reads a body or decides.
 */
export function createDiagnosticApp(deps: Pick<AppDeps, 'bundles' | 'issuers' | 'defaultBundle' | 'authzen' | 'draining' | 'decisionLog' | 'evaluator' | 'metrics' | 'logger'>) {
  const app = new Hono<{ Variables: RequestIdVariables }>();
  app.use(requestId());
  app.route('/', healthRoutes({ ...deps, decisionLog: deps.decisionLog?.store }));
  if (deps.metrics) app.route('/', metricsRoutes(deps.metrics));
  answerUnrouted(app, deps.logger);
  return app;
}

/** Problems for what no route answers (404, 405 naming the methods served) and for errors the routes throw. */
function answerUnrouted(app: Hono<{ Variables: RequestIdVariables }>, logger: Logger): void {
  app.notFound((c) => {
    // A path served with other methods: 405 naming them (RFC 9110), so a gateway that sends the
    // wrong method is not told that the endpoint does not exist.
    const allowed = allowedMethods(app, c.req.path);
    if (allowed.length > 0) {
      return problem(c, 405, { code: 'method_not_allowed', title: 'Method not allowed', detail: `${c.req.method} is not served at ${c.req.path}: use ${allowed.join(', ')}` }, { Allow: allowed.join(', ') });
    }
    return problem(c, 404, { code: 'not_found', title: 'Not found', detail: `no route for ${c.req.method} ${c.req.path}` });
  });
  app.onError((error, c) => {
    if (error instanceof HTTPException) {
      return problem(c, error.status, { code: 'http_error', title: error.message || 'Request failed' });
    }
    const incoming = (c.env as Partial<HttpBindings> | undefined)?.incoming;
    if (incoming && !incoming.complete && incoming.destroyed) {
      // The client hung up before its whole request arrived: nobody to answer, and no fault here.
      logger.info({ path: c.req.path, request_id: c.get('requestId') }, 'client closed the connection before its request was complete');
      return problem(c, 400, { code: 'request_incomplete', title: 'Request incomplete', detail: 'the connection closed before the whole request arrived' });
    }
    logger.error({ err: error, path: c.req.path, request_id: c.get('requestId') }, 'unhandled error');
    return problem(c, 500, { code: 'internal_error', title: 'Internal error', detail: 'see the server log for this request id' });
  });
}

const ROUTE_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

/**
 * The methods `app` has a route for at `path` (HEAD with GET, which Hono answers through it).
 * Middleware does not count: it may run for paths no route of that method serves.
 */
function allowedMethods(app: Hono<{ Variables: RequestIdVariables }>, path: string): string[] {
  const allowed: string[] = ROUTE_METHODS.filter((method) =>
    app.router.match(method, path)[0].some(([[handler, route]]) => route.method === method && !isMiddleware(handler)),
  );
  return allowed.includes('GET') ? [...allowed, 'HEAD'] : allowed;
}

/**
 * Fetches the key sets of `iss` again, as a decision issuer and as an admin issuer: a token the
 * removed key signed after the cut-off is stopped by verification alone, and a key set installed
 * without a key moves the issuer's key generation on, so no remembered verification of its
 * tokens is reused (VerificationCache.get). A failed fetch is logged, not answered: the
 * revocation is committed, and the keys held stay in use.
 */
async function reloadIssuerKeys(deps: Pick<AppDeps, 'issuers' | 'admin' | 'logger'>, iss: string): Promise<void> {
  const issuers = [deps.issuers.get(iss), deps.admin.issuers.get(iss)].filter((issuer) => issuer !== undefined);
  await Promise.all(
    issuers.map((issuer) =>
      issuer.reloadKeys().catch((error: unknown) => deps.logger.warn({ err: error, iss }, 'key set not fetched again after an issued_before revocation')),
    ),
  );
}
