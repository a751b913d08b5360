import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { loadOrCreateDevIssuerKey, mintDevToken, type DevIssuerKey } from '../../src/tokens/dev-issuer.ts';
import { buildBundle } from '../../src/toolchain/build.ts';
import { freePort, startServer, type ServerProcess } from './processes.ts';

export interface LiveServerOptions {
  /** server.body_limit_bytes: decision and revocation request bodies. */
  bodyLimitBytes?: number;
  /** data.max_body_bytes and data.max_size_bytes: the largest live data document. */
  maxDataBytes?: number;
  /** A JSON file seeded as data.entitlements at start. */
  entitlementsFile?: string;
  /** engine.max_memory_mb: the WebAssembly memory ceiling per policy instance. */
  maxMemoryMb?: number;
}

export interface LiveServer extends ServerProcess {
  /** The development issuer's key: signs both admin tokens and the tokens decided on. */
  readonly issuerKey: DevIssuerKey;
}

/**
 * `arbiter serve` as a child process with the default policy (built by the pinned opa), the
 * development issuer trusted for decisions and admin calls, and the data file in `dir`.
 * Decision lines go to /dev/null, as in the other benchmarks.
 */
export async function startLiveServer(dir: string, options: LiveServerOptions = {}): Promise<LiveServer> {
  const bundles = join(dir, 'bundles');
  mkdirSync(bundles, { recursive: true });
  buildBundle('rego/authz', join(bundles, 'authz.tar.gz'));
  const keyFile = join(dir, 'dev-issuer.jwk.json');
  const issuerKey = await loadOrCreateDevIssuerKey(keyFile);
  const port = await freePort();
  const config = {
    mode: 'development',
    server: { host: '127.0.0.1', port, ...(options.bodyLimitBytes !== undefined && { body_limit_bytes: options.bodyLimitBytes }) },
    logging: { level: 'info' },
    dev_issuer: { enabled: true, key_file: keyFile },
    admin: { allow_dev_issuer: true },
    bundles: { dir: bundles, default: 'authz', store: join(dir, 'bundle-store') },
    decision_log: { path: join(dir, 'decisions.db') },
    ...(options.maxMemoryMb !== undefined && { engine: { max_memory_mb: options.maxMemoryMb } }),
    data: {
      path: join(dir, 'data.db'),
      ...(options.maxDataBytes !== undefined && { max_body_bytes: options.maxDataBytes, max_size_bytes: options.maxDataBytes }),
      ...(options.entitlementsFile !== undefined && { seed: { entitlements: options.entitlementsFile } }),
    },
  };
  const configFile = join(dir, 'arbiter.yaml');
  writeFileSync(configFile, toYaml(config));
  const server = await startServer({
    name: 'arbiter',
    command: process.execPath,
    args: ['src/cli/main.ts', 'serve', '--config', configFile],
    port,
    readyPath: '/readyz',
    decisionLogStream: 'stdout',
  });
  return { ...server, issuerKey };
}

/** An admin bearer token carrying the given arbiter.* scopes. */
export function adminToken(key: DevIssuerKey, scopes: string[]): Promise<string> {
  return mintDevToken(key, { sub: 'bench-admin@acme.example', scope: scopes.join(' '), ttlSeconds: 3 * 3600 });
}

/** A token of `sub` in tenant acme with the invoices.read scope: allowed exactly when `sub` is entitled. */
export function invoiceReaderToken(key: DevIssuerKey, sub: string): Promise<string> {
  return mintDevToken(key, { sub, scope: 'invoices.read', claims: { tenant: 'acme' }, ttlSeconds: 3 * 3600 });
}

/** The /v1/decide body asking to read an invoice of tenant acme. */
export function readInvoiceRequest(token: string): string {
  return JSON.stringify({
    token,
    action: 'invoices.read',
    resource: { type: 'invoice', id: 'inv-1', properties: { tenant: 'acme' } },
    context: { environment: 'production' },
  });
}

export interface DecisionAnswer {
  status: number;
  allow: boolean;
  codes: string[];
  dataVersion: number;
}

/** POSTs a prepared /v1/decide body. */
export async function decide(url: string, body: string): Promise<DecisionAnswer> {
  const response = await fetch(`${url}/v1/decide`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  const answer = (await response.json()) as { allow?: boolean; reasons?: { code: string }[]; data_version?: number };
  return {
    status: response.status,
    allow: answer.allow === true,
    codes: (answer.reasons ?? []).map((reason) => reason.code),
    dataVersion: answer.data_version ?? -1,
  };
}
