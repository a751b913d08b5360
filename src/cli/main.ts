#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { ArbiterError, ConfigError } from '../errors.ts';

/** Exit codes scripts can rely on. */
export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;

// Commands load their modules on demand: `arbiter token` need not import the server.
const COMMANDS: Record<string, { summary: string; run: (argv: string[]) => Promise<number> }> = {
  serve: { summary: 'run the decision server', run: async (argv) => (await import('./serve.ts')).serveCommand(argv) },
  token: { summary: 'mint a token from the local development issuer', run: async (argv) => (await import('./token.ts')).tokenCommand(argv) },
  bundle: {
    summary: 'bundle build|push|list|activate: build and manage policy bundles',
    run: async (argv) => (await import('./bundle.ts')).bundleCommand(argv),
  },
  decisions: {
    summary: 'decisions get|query|export|verify|replay: audit the decision log',
    run: async (argv) => (await import('./decisions.ts')).decisionsCommand(argv),
  },
  config: { summary: 'config check [<file>]: validate a configuration file (default $ARBITER_CONFIG)', run: async (argv) => (await import('./config-check.ts')).configCommand(argv) },
  health: { summary: 'probe the configured server\'s /healthz (container health checks)', run: async (argv) => (await import('./health.ts')).healthCommand(argv) },
  'gateway-key': {
    summary: 'generate a gateway API key and its configuration entry',
    run: async (argv) => (await import('./gateway-key.ts')).gatewayKeyCommand(argv),
  },
};

export function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, { summary }]) => `  ${name.padEnd(12)} ${summary}`);
  return `Usage: arbiter <command> [options]\n\nCommands:\n${lines.join('\n')}\n\nRun \`arbiter <command> --help\` for a command's options.`;
}

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({ args: argv.slice(0, 1), options: { help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: false });
  const name = positionals[0];
  if (!name || values.help) {
    // Asked for, usage is the answer (stdout, 0); without a command it is the error (stderr, 2).
    (values.help ? console.log : console.error)(usage());
    return values.help ? EXIT.ok : EXIT.usage;
  }
  const command = COMMANDS[name];
  if (!command) {
    console.error(`arbiter: unknown command ${JSON.stringify(name)}\n\n${usage()}`);
    return EXIT.usage;
  }
  return command.run(argv.slice(1)).catch((error: unknown) => {
    // parseArgs says what it refused but not of which command, nor where the options are listed.
    if (!isParseArgsError(error)) throw error;
    console.error(`arbiter ${name}: ${error.message}\n  arbiter ${name} --help lists its options`);
    return EXIT.usage;
  });
}

function isParseArgsError(error: unknown): error is TypeError {
  return error instanceof TypeError && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS');
}

// A reader that stops early (`arbiter decisions export | head`) closes the pipe: that ends the
// output, as for any Unix tool, rather than raising an unhandled EPIPE with a stack trace.
// Output that cannot be written otherwise (a full disk) is a failure, said in one line.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(process.exitCode ?? EXIT.ok);
  console.error(`arbiter: cannot write the output: ${error.message}`);
  process.exit(EXIT.failure);
});

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (error) {
  const usageError = error instanceof ConfigError || (error instanceof ArbiterError && error.code === 'usage') || isParseArgsError(error);
  if (usageError || error instanceof ArbiterError) {
    // Expected failures say what is wrong and what to do, without a stack trace.
    console.error(`arbiter: ${(error as Error).message}`);
    process.exitCode = usageError ? EXIT.usage : EXIT.failure;
  } else {
    console.error(error);
    process.exitCode = EXIT.failure;
  }
  // A command that failed half-way may leave worker threads or timers behind: do not wait for them.
  process.exit();
}
