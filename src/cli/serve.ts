import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.ts';
import { startArbiter } from '../server/start.ts';

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
  const arbiter = await startArbiter(config);
  let stopping = false;
  const stop = (signal: string) => {
    // A second signal (Ctrl-C while draining) must not cut the drain short: records of
    // decisions already answered are still being written.
    if (stopping) {
      arbiter.logger.warn({ signal }, 'already shutting down: waiting for requests to finish and the decision log to flush');
      return;
    }
    stopping = true;
    arbiter.logger.info({ signal }, 'shutting down');
    arbiter.close().then(
      () => process.exit(0),
      (error: unknown) => {
        arbiter.logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  return new Promise<number>(() => {});
}
