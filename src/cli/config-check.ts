import { parseArgs } from 'node:util';
import { loadConfig, unreadVariables } from '../config/load.ts';
import type { Config } from '../config/schema.ts';
import { routedBundles } from '../config/routed-bundles.ts';
import { ArbiterError, atConfigKey, ConfigError } from '../errors.ts';
import { checkEmbeddedDirectory } from '../policy/lifecycle.ts';
import { sourceCredentials } from '../policy/pull-credentials.ts';
import { bundleVerificationOptions } from '../policy/signing-keys.ts';
import { readTlsMaterial } from '../server/tls.ts';
import { documentsNotToSeed, storedLiveDataBytes } from '../data/persistence.ts';
import { checkSeed, checkSeedLimits, readSeedFile, seedsUnderRoots } from '../data/seed.ts';
import { liveDataChecks } from '../data/entitlements-schema.ts';
import { rootsAtStart } from '../policy/start-roots.ts';
import { readDevIssuerKey } from '../tokens/dev-issuer.ts';
import { checkStatePath, statePaths } from '../state-lock.ts';
import { IssuerRegistry } from '../tokens/trusted-issuers.ts';

const HELP = `Usage: arbiter config check [<file>] [--json]

Validates a configuration file (default: $ARBITER_CONFIG, as serve reads it; with ARBITER_* overrides applied) and prints every problem with its key path:
the schema first, then the files it names (issuer key sets and secrets, the embedded bundles directory, bundle signing
keys, TLS files, the development issuer key, data seeds) as start-up reads them, that each state path (data.path,
decision_log.path and its checkpoint.key_path, bundles.store) is a file or a directory as it must be, or can be created (under a directory), and that no
data seed lies under the roots of a bundle start-up activates (its active revision in bundles.store, else bundles.dir);
a bundle decisions are routed to (bundles.default, authzen.default_bundle, authzen.tenants) that none of these serves
is noted. Not
checked: remote key sets (not fetched), the roots of pulled bundles (bundles.sources: unknown until their source serves them; a
note says so) and the files their credentials name (read at each poll; the environment variables they name are checked),
decision_log.transport (its module is loaded, in a thread of its own, only by start-up), whether this user may write the state
paths (it may not be the server's), and what the decision log's files hold (its database and checkpoint key, which start-up
checks against each other). Exit codes: 0 valid (notes, if any, on stderr), 2 invalid.`;

export async function configCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  // Said first, as bundle and decisions do: the usage alone leaves the operator to guess what was wrong.
  const [subcommand] = positionals;
  if (subcommand !== 'check') {
    throw new ArbiterError('usage', `${subcommand === undefined ? 'a subcommand is required' : `unknown subcommand ${JSON.stringify(subcommand)}`}\n\n${HELP}`);
  }
  const file = positionals[1] ?? (process.env.ARBITER_CONFIG || undefined);
  if (positionals.length > 2 || file === undefined) {
    throw new ArbiterError('usage', `config check takes one file (or $ARBITER_CONFIG), got ${positionals.length - 1}\n\n${HELP}`);
  }
  // What could not be checked: said, not guessed; not a problem (the exit code stays 0).
  const notes: Note[] = unreadVariables();
  let refused: ConfigError | undefined;
  try {
    const problems = await fileProblems(loadConfig({ file }), notes);
    if (problems.length > 0) refused = new ConfigError(problems, file);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    refused = error;
  }
  if (refused !== undefined) {
    if (values.json) console.log(JSON.stringify({ valid: false, file, problems: refused.issues, notes }));
    else console.error(refused.message);
    return 2;
  }
  if (!values.json) for (const note of notes) console.error(`note: ${note.path}: ${note.message}`);
  console.log(values.json ? JSON.stringify({ valid: true, file, problems: [], notes }) : `${file}: valid`);
  return 0;
}

interface Note {
  path: string;
  message: string;
}

type Issue = ConfigError['issues'][number];

/**
 * The files and state paths a valid schema names, read as start-up reads them. Each check runs
 * whatever the others found, so every problem is reported at once (start-up stops at the first):
 * fixing a configuration for a new host one missing file per run is slow.
 */
async function fileProblems(config: Config, notes: Note[]): Promise<Issue[]> {
  const problems: Issue[] = [];
  const check = async (step: () => unknown): Promise<void> => {
    try {
      await step();
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      for (const issue of error.issues) if (!problems.some((p) => p.path === issue.path && p.message === issue.message)) problems.push(issue);
    }
  };
  await check(() => IssuerRegistry.fromConfig(config.issuers));
  await check(() => IssuerRegistry.fromConfig(config.admin.issuers, [], { configPath: 'admin.issuers' }));
  await check(() => checkEmbeddedDirectory(config.bundles.dir));
  await check(() => sourceCredentials(config.bundles.sources));
  await check(() => bundleVerificationOptions(config.bundles.signing));
  if (config.server.tls) await check(() => readTlsMaterial(config.server.tls!));
  for (const state of statePaths(config)) await check(() => checkStatePath(state));
  // Created with a new log, as the state files are: a path start-up cannot create it at stops it.
  if (config.decision_log.enabled && !problems.some((problem) => problem.path === 'decision_log.path')) {
    const keyPath = config.decision_log.checkpoint.key_path ?? `${config.decision_log.path}.checkpoint-key.jwk`;
    await check(() => checkStatePath({ path: keyPath, key: 'decision_log.checkpoint.key_path', kind: 'file', file: 'a key file' }));
  }
  // Read, never created here: a missing development key is generated at the first start.
  if (config.dev_issuer.enabled) await check(() => readDevIssuerKey(config.dev_issuer.key_file));
  // The seeds: each file read and checked like a write, for a document the store does not hold
  // yet (so not when the store itself is refused: which ones it holds is unknown), and none
  // under the roots of a bundle start-up activates (not when the bundles are refused).
  const refused = (...keys: string[]) => problems.some((problem) => keys.includes(problem.path));
  const seeds = Object.entries(config.data.seed ?? {});
  if (seeds.length > 0 && !refused('data.path')) {
    let stored: Set<string> | undefined;
    let totalBytes = 0;
    await check(() => {
      stored = atConfigKey('data.path', () => documentsNotToSeed(config.data.path));
      totalBytes = atConfigKey('data.path', () => storedLiveDataBytes(config.data.path));
    });
    const checks = liveDataChecks(config.data.check_entitlements);
    const limits = { maxDepth: config.data.max_depth, maxTotalBytes: config.data.max_size_bytes };
    for (const [document, file] of seeds) {
      if (stored === undefined || stored.has(document)) continue;
      await check(() => {
        const value = readSeedFile(document, file);
        checkSeed(document, file, value, checks.get(document));
        // In order, as start-up seeds them: the one that would cross the limit is named.
        totalBytes = checkSeedLimits(document, file, value, limits, totalBytes);
      });
    }
  }
  if (seeds.length > 0 && !refused('bundles.dir', 'bundles.store')) await check(async () => notes.push(...(await checkSeedRoots(config))));
  if (!refused('bundles.dir', 'bundles.store')) await check(async () => notes.push(...(await unservedBundles(config))));
  return problems;
}

/**
 * A note for each bundle the configuration routes decisions to that start-up would find
 * nowhere: not active in bundles.store, not in bundles.dir, not pulled. Start-up logs it and
 * serves (a push can provide it), so it is no problem here either; but a typo otherwise shows
 * only once the first decision answers 503.
 */
async function unservedBundles(config: Config): Promise<Note[]> {
  const { known, pulled } = await rootsAtStart(config.bundles);
  const served = new Set([...known, ...pulled].map((bundle) => bundle.name));
  return routedBundles(config)
    .filter(([, bundle]) => !served.has(bundle))
    .map(([key, bundle]) => ({
      path: key,
      message: `${bundle} is neither stored (bundles.store), in bundles.dir (${config.bundles.dir}), nor pulled (bundles.sources): its decisions answer 503, and /readyz too for a default bundle, until a revision is pushed`,
    }));
}

/**
 * No data.seed document under the roots of a bundle start-up activates before seeding, stored
 * or not (on a new replica's empty volume it would be refused). Throws the ConfigError start-up
 * would stop with; returns what could not be checked.
 */
async function checkSeedRoots(config: Config): Promise<Note[]> {
  const { known, pulled } = await rootsAtStart(config.bundles);
  const conflicts = seedsUnderRoots(config.data.seed ?? {}, known);
  if (conflicts.length > 0) throw new ConfigError(conflicts);
  return pulled.map(({ name, index }) => ({
    path: 'data.seed',
    message: `bundles.sources.${index} (${name}) is pulled: the roots its source serves are known only once it serves them, so the seeds are not checked against them (a seed under them is hidden, and read-only, from then on)`,
  }));
}
