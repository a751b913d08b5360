import { parseArgs } from 'node:util';
import { loadConfig, unreadVariables } from '../config/load.ts';
import { processLogger, startArbiter, type Arbiter } from '../server/start.ts';

const HELP = `Usage: arbiter serve [--config <file>]

Runs the decision server.
  -c, --config <file>   YAML configuration (default: $ARBITER_CONFIG; without either, built-in defaults)
Environment: ARBITER_<SECTION>__<KEY>=value overrides a key (e.g. ARBITER_SERVER__PORT=9000); PORT sets server.port.`;

export async function serveCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const config = loadConfig({ file: values.config ?? (process.env.ARBITER_CONFIG || undefined) });
  const logger = processLogger(config);
  for (const { path, message } of unreadVariables()) logger.warn({ key: path }, message);
  let arbiter: Arbiter | undefined;
  // Handled from the start, not left to the default: as PID 1 in a container the kernel ignores
  // an unhandled SIGTERM, and a start-up waiting on another party (a log shipper) would then
  // hold `docker stop` until its SIGKILL.
  const startUp = new AbortController();
  let stopping = false;
  const stop = (signal: string) => {
    if (!arbiter) {
      // Nothing has been answered yet, so there is nothing to drain: stop starting.
      if (!startUp.signal.aborted) logger.warn({ signal }, 'signal during start-up: stopping before serving');
      startUp.abort();
      return;
    }
    // A second signal (Ctrl-C while draining) must not cut the drain short: records of
    // decisions already answered are still being written.
    if (stopping) {
      logger.warn({ signal }, 'already shutting down: waiting for requests to finish and the decision log to flush');
      return;
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    arbiter.close().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  // SIGHUP too (a closed terminal, an operator's kill -HUP): unhandled, it kills the process
  // on the spot, losing a relaxed log's unwritten records and the shutdown checkpoint. There
  // is nothing to reload on it: config is read at start-up, bundles and data through the API.
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, stop);
  try {
    arbiter = await startArbiter(config, { logger, signal: startUp.signal });
  } catch (error) {
    if (!startUp.signal.aborted) throw error;
    return 0;
  }
  return new Promise<number>(() => {});
}
