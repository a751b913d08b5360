import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { buildBundle } from '../../src/toolchain/build.ts';
import { opaPath } from '../../src/toolchain/opa.ts';
import { freePort, startServer, type ServerProcess } from './processes.ts';
import { BENCH_AUDIENCE, BENCH_ISSUER, TOKEN_LIFETIME_S, type Workload } from './workload.ts';

/** Serves the benchmark JWKS on loopback, as an identity provider would. */
export async function serveJwks(jwks: object): Promise<{ url: string; close(): Promise<void> }> {
  const body = JSON.stringify(jwks);
  const server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(body));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
  return { url, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

export interface ArbiterOptions {
  jwksUri: string;
  /** Node flags for the server process, e.g. ["--cpu-prof", "--cpu-prof-dir=..."]. */
  nodeFlags?: string[];
  /** off: decision lines on stdout only, like OPA's console decision log; strict/relaxed: the durable audit log too. */
  decisionLog: 'off' | 'relaxed' | 'strict';
  /** engine.workers; the configured default when absent. */
  workers?: number;
}

/**
 * `arbiter serve` as a child process: the default policy built by the pinned opa, the workload's
 * entitlements seeded, the benchmark issuer trusted, the OPA data API on, decision lines at info.
 */
export async function startArbiterServer(workload: Workload, dir: string, options: ArbiterOptions): Promise<ServerProcess> {
  const bundles = join(dir, 'bundles');
  mkdirSync(bundles, { recursive: true });
  buildBundle('rego/authz', join(bundles, 'authz.tar.gz'));
  const entitlements = join(dir, 'entitlements.json');
  writeFileSync(entitlements, JSON.stringify(workload.entitlements));
  const port = await freePort();
  const config = {
    mode: 'development',
    server: { host: '127.0.0.1', port },
    logging: { level: 'info' },
    issuers: [
      {
        issuer: BENCH_ISSUER,
        jwks_uri: options.jwksUri,
        audiences: [BENCH_AUDIENCE],
        algorithms: ['ES256'],
        max_token_age_s: TOKEN_LIFETIME_S,
        max_lifetime_s: 86_400,
      },
    ],
    bundles: { dir: bundles, default: 'authz', store: join(dir, 'bundle-store') },
    data: { path: join(dir, 'data.db'), seed: { entitlements } },
    decision_log:
      options.decisionLog === 'off'
        ? { enabled: false }
        : { enabled: true, durability: options.decisionLog, path: join(dir, 'decisions.db') },
    ...(options.workers !== undefined && { engine: { workers: options.workers } }),
    opa_compat: { enabled: true },
  };
  const configFile = join(dir, 'arbiter.yaml');
  writeFileSync(configFile, toYaml(config));
  return startServer({
    name: 'arbiter',
    command: process.execPath,
    args: [...(options.nodeFlags ?? []), 'src/cli/main.ts', 'serve', '--config', configFile],
    port,
    readyPath: '/readyz',
    decisionLogStream: 'stdout',
  });
}

/**
 * `opa run --server` on the same Rego sources, the same entitlements and the same public keys
 * (a JWKS string for io.jwt.decode_verify), with console decision logging like Arbiter's.
 */
export async function startOpaServer(workload: Workload, dir: string): Promise<ServerProcess> {
  const dataFile = join(dir, 'opa-data.json');
  writeFileSync(dataFile, JSON.stringify({ entitlements: workload.entitlements, bench: { jwks: JSON.stringify(workload.jwks) } }));
  const port = await freePort();
  return startServer({
    name: 'opa',
    command: opaPath(),
    args: [
      'run', '--server', '--addr', `127.0.0.1:${port}`,
      '--log-level', 'error', '--set', 'decision_logs.console=true',
      '--ignore', '*_test.rego', '--ignore', '*.md',
      'rego/authz', 'bench/opa', dataFile,
    ],
    port,
    readyPath: '/health',
    decisionLogStream: 'stderr',
  });
}
