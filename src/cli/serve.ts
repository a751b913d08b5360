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
  const config = loadConfig({ file: values.config ?? process.env.ARBITER_CONFIG });
  const arbiter = await startArbiter(config);
  const stop = (signal: string) => {
    arbiter.logger.info({ signal }, 'shutting down');
    arbiter.close().then(
      () => process.exit(0),
      (error: unknown) => {
        arbiter.logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  return new Promise<number>(() => {});
}
