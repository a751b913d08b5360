import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.ts';
import type { Config } from '../config/schema.ts';
import { MAX_TIMER_DELAY_MS } from '../config/timer-delay.ts';
import { ArbiterError, ConfigError } from '../errors.ts';
import { urlHost } from '../net/host-literal.ts';

const HELP = `Usage: arbiter health [--config <file>] [--timeout-ms <ms>]

Asks the server this configuration describes for GET /healthz, on the configured port and
protocol (PORT and ARBITER_* overrides included), and exits 0 when it answers 200, 1 otherwise
(a configuration that does not load included: Docker reserves 2; 2 only for a wrong option).
For container health checks: it follows server.port and server.tls wherever they are set, and
asks the diagnostic listener instead when server.diagnostic is set (it answers while the
decision port is full). A port of 0 (any free port) leaves nothing to probe: exit 1, saying so.
  -c, --config <file>   YAML configuration (default: $ARBITER_CONFIG; without either, built-in defaults)
  --timeout-ms <ms>     give up after this long (default 2000, at most 2147483647)`;

export async function healthCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { config: { type: 'string', short: 'c' }, 'timeout-ms': { type: 'string', default: '2000' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const timeoutMs = Number(values['timeout-ms']);
  // Past what a timer holds, Node warns and cuts it short (TimeoutOverflowWarning): refused instead.
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0 || timeoutMs > MAX_TIMER_DELAY_MS) {
    throw new ArbiterError('usage', `--timeout-ms must be a whole number of milliseconds from 1 to ${MAX_TIMER_DELAY_MS}\n\n${HELP}`);
  }
  let url: ReturnType<typeof healthUrl>;
  try {
    url = healthUrl(loadConfig({ file: values.config ?? (process.env.ARBITER_CONFIG || undefined) }).server);
  } catch (error) {
    // Not a usage error here: Docker reserves a health check's exit code 2, and a configuration
    // that does not load (a file or ARBITER_* variable of the container) leaves nothing healthy to probe.
    if (!(error instanceof ConfigError)) throw error;
    console.error(`arbiter: ${error.message}`);
    return 1;
  }
  if (url.unprobeable !== undefined) {
    console.error(`arbiter: ${url.unprobeable}`);
    return 1;
  }
  const status = await probe(url.href, timeoutMs).catch((error: unknown) => (error as Error).message);
  if (status === 200) return 0;
  console.error(`arbiter: ${url.href} ${typeof status === 'number' ? `answered ${status}` : `failed: ${status}`}`);
  return 1;
}

const WILDCARD_TO_LOOPBACK = new Map([['0.0.0.0', '127.0.0.1'], ['::', '::1']]);

/**
 * Where the server answers on this machine: the diagnostic listener when there is one (its
 * connections are not those a flood of the decision port uses up); a wildcard listen address
 * is reached over loopback.
 */
function healthUrl(server: Config['server']): { href: string; unprobeable?: string } {
  const listener = server.diagnostic === undefined ? server : { host: server.diagnostic.host ?? server.host, port: server.diagnostic.port };
  const host = WILDCARD_TO_LOOPBACK.get(listener.host) ?? listener.host;
  const href = `${server.tls ? 'https' : 'http'}://${urlHost(host)}:${listener.port}/healthz`;
  // Port 0 asks the system for any free port: which one the server got is not in the
  // configuration, and a connection to port 0 says nothing about the server. Unhealthy (1), as a
  // configuration that does not load: the health check itself needs a fixed port.
  if (listener.port === 0) {
    const key = server.diagnostic === undefined ? 'server.port' : 'server.diagnostic.port';
    return { href, unprobeable: `${key} is 0 (any free port): the port the server listens on is not in the configuration, so there is nothing to probe; set ${key}${server.diagnostic === undefined ? ' (or PORT)' : ''} to a fixed port for health checks` };
  }
  return { href };
}

function probe(url: string, timeoutMs: number): Promise<number> {
  const secure = url.startsWith('https:');
  return new Promise((resolve, reject) => {
    // The server's own certificate is for the names clients use, not for this loopback probe
    // of liveness: it is not checked (no credential is sent, nothing is read but the status).
    const request = (secure ? httpsRequest : httpRequest)(url, { method: 'GET', timeout: timeoutMs, ...(secure && { rejectUnauthorized: false }) }, (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    });
    request.on('timeout', () => request.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    request.on('error', reject);
    request.end();
  });
}
