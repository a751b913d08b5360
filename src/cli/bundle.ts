import { chmodSync, existsSync, mkdtempSync, readFileSync, realpathSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ArbiterError } from '../errors.ts';
import { isObject } from '../is-object.ts';
import { buildBundle } from '../toolchain/build.ts';
import { opaPath } from '../toolchain/opa.ts';
import { adminBaseUrl, adminRequest, objectWith } from './admin-client.ts';
import { cleanUpOnSignal, endBy, interruptingSignal, partialPath } from './interrupt.ts';
import { printable } from './printable.ts';

const HELP = `Usage: arbiter bundle <subcommand> [options]

Subcommands:
  build <dir>                  compile a bundle directory with the pinned opa (opa build -t wasm)
  push <file|dir>              upload a bundle .tar.gz and activate it (a directory is built first)
  list                         each bundle's active revision and stored revisions
  activate <name> <revision>   activate a stored revision: roll back or forward

Options:
  --out <file>        build: output file (default <dir name>.tar.gz)
  --revision <rev>    build, push of a directory: bundle revision (default: digest of the sources)
  --name <name>       push: bundle name (default the file or directory name)
  --url <url>         push, list, activate: Arbiter base URL (default $ARBITER_URL or http://127.0.0.1:8181)
  --token <token>     push, list, activate: admin token with arbiter.bundles.write / .read (default $ARBITER_TOKEN)
  --json              print the server's JSON answer (build: {"out": <file>})
  -h, --help

An option the subcommand does not read is a usage error rather than ignored.

build and push do not sign: where signatures are required (bundles.require_signatures), build with
opa build -t wasm --signing-key <key> (README, "Policies and bundles") and push the .tar.gz.

Exit codes: 0 ok, 1 failure (build failed, server unreachable or refused), 2 usage.`;


type Options = { out?: string; revision?: string; name?: string; url?: string; token?: string; json?: boolean };

/**
 * The options each subcommand reads. Another one is refused, as decisions does: ignored,
 * `list --name x` would list every bundle as if filtered, `push --out f` keep no archive and
 * `activate --revision r` activate the revision given as its argument instead.
 */
const SUBCOMMAND_OPTIONS: Readonly<Record<string, readonly string[]>> = {
  build: ['out', 'revision', 'json'],
  push: ['revision', 'name', 'url', 'token', 'json'],
  list: ['url', 'token', 'json'],
  activate: ['url', 'token', 'json'],
};

export async function bundleCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      out: { type: 'string' },
      revision: { type: 'string' },
      name: { type: 'string' },
      url: { type: 'string' },
      token: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const [subcommand, ...args] = positionals;
  const expect = (count: number) => {
    if (args.length !== count) throw new ArbiterError('usage', `bundle ${subcommand} takes ${count} argument${count === 1 ? '' : 's'}\n\n${HELP}`);
    const read = SUBCOMMAND_OPTIONS[subcommand!] ?? [];
    const unread = Object.keys(values).filter((name) => name !== 'help' && !read.includes(name));
    if (unread.length > 0) throw new ArbiterError('usage', `bundle ${subcommand} does not take ${unread.map((name) => `--${name}`).join(', ')}\n\n${HELP}`);
  };
  switch (subcommand) {
    case 'build':
      expect(1);
      return build(args[0]!, values);
    case 'push':
      expect(1);
      return push(args[0]!, values);
    case 'list':
      expect(0);
      return list(values);
    case 'activate':
      expect(2);
      return activate(args[0]!, args[1]!, values);
    default:
      throw new ArbiterError('usage', `${subcommand ? `unknown subcommand ${JSON.stringify(subcommand)}` : 'a subcommand is required'}\n\n${HELP}`);
  }
}

function build(dir: string, options: Options): number {
  bundleDirectory(dir);
  const out = options.out ?? `${basename(resolve(dir))}.tar.gz`;
  // opa writes -o as it goes: stopped mid-write (a signal, a full disk), it left a partial archive
  // at the path, in place of the complete one there before. Built beside it and renamed over it
  // once complete, as the decision export is; a FIFO or device is written as it is.
  const existing = existsSync(out) ? statSync(out) : undefined;
  if (existing !== undefined && !existing.isFile()) {
    if (!runBuild(dir, out, options.revision, options)) return 1;
  } else {
    // A symbolic link keeps pointing where it did: its target is replaced.
    const target = existing === undefined ? out : realpathSync(out);
    const partial = partialPath(target);
    const remove = () => rmSync(partial, { force: true });
    const unwatch = cleanUpOnSignal(remove);
    try {
      if (!runBuild(dir, partial, options.revision, options)) return 1;
      if (existing !== undefined) chmodSync(partial, existing.mode & 0o7777);
      renameSync(partial, target);
    } finally {
      unwatch();
      remove();
    }
  }
  console.log(options.json ? JSON.stringify({ out }) : `built ${out}`);
  return 0;
}

function runBuild(dir: string, out: string, revision: string | undefined, options: Options): boolean {
  progress(options, `building ${dir} with ${opaPath()} (opa build -t wasm)...`);
  try {
    buildBundle(dir, out, revision === undefined ? {} : { revision });
    return true;
  } catch (error) {
    // opa ended by the Ctrl-C or stop that reached the CLI too: what the command leaves is removed
    // (cleanUpOnSignal) and it ends by that signal, rather than reporting a failed build.
    const signal = interruptingSignal((error as Error).cause);
    if (signal !== undefined) endBy(signal);
    console.error(`arbiter: ${(error as Error).message}`);
    return false;
  }
}

async function push(path: string, options: Options): Promise<number> {
  let isDir: boolean;
  try {
    isDir = statSync(path).isDirectory();
  } catch {
    throw new ArbiterError('usage', `${path} does not exist`);
  }
  // An archive's revision is the one it was built with: ignoring the option would leave the
  // operator believing another revision was pushed.
  if (!isDir && options.revision !== undefined) {
    throw new ArbiterError('usage', `--revision applies to a directory, built before the push: ${path} is an archive, whose revision is the one it was built with (its .manifest)`);
  }
  const name = options.name ?? basename(resolve(path)).replace(/\.tar\.gz$/, '');
  let unwatch = () => {};
  try {
    let archive: Buffer;
    if (isDir) {
      const temp = mkdtempSync(join(tmpdir(), 'arbiter-push-'));
      const remove = () => rmSync(temp, { recursive: true, force: true });
      // Watched until the push ends, not only the build: a signal sent to the CLI alone while opa
      // runs reaches its listener only once opa is done, and unwatched by then it would be lost.
      unwatch = cleanUpOnSignal(remove);
      try {
        if (!runBuild(path, join(temp, 'bundle.tar.gz'), options.revision, options)) return 1;
        archive = readFileSync(join(temp, 'bundle.tar.gz'));
      } finally {
        remove();
      }
    } else {
      archive = readFileSync(path);
    }
    return await upload(name, archive, options);
  } finally {
    unwatch();
  }
}

async function upload(name: string, archive: Buffer, options: Options): Promise<number> {
  progress(options, `pushing ${name} (${archive.byteLength} bytes) to ${adminBaseUrl(options)}: the server verifies, validates and smoke-tests it before activating...`);
  // The upload and the server's checks (signature, validation, smoke test) take as long as the archive is large.
  const answer = await adminRequest({ ...options, answerTimeoutMs: 0 }, 'PUT', `/v1/bundles/${encodeURIComponent(name)}`, { 'content-type': 'application/gzip' }, archive, PUSH_ANSWER);
  if (answer === undefined) return 1;
  if (!options.json) {
    const body = answer as { outcome: string; revision: string; digest: string };
    console.log(`${printable(name)}: revision ${printable(body.revision)} ${body.outcome === 'activated' ? 'activated' : 'already active'} (sha256 ${printable(body.digest)})`);
  }
  return 0;
}

/**
 * Refuses a path that is not a directory, before opa is run: the build would read its sources
 * first, and that failure (ENOENT) would be reported as opa itself missing.
 */
function bundleDirectory(dir: string): void {
  let isDir: boolean;
  try {
    isDir = statSync(dir).isDirectory();
  } catch {
    throw new ArbiterError('usage', `${dir} does not exist`);
  }
  if (!isDir) throw new ArbiterError('usage', `${dir} is not a directory: bundle build takes the directory of a bundle's .rego files`);
}

/** Progress goes to stderr, and not at all with --json, so stdout stays the answer. */
function progress(options: Options, message: string): void {
  if (!options.json) process.stderr.write(`${message}\n`);
}

interface Status {
  name: string;
  active: { revision: string; activated_at: string; activated_by: string; source: string } | null;
  revisions: { revision: string; digest: string; stored_at: string }[];
}

const isString = (value: unknown) => typeof value === 'string';
// describe() reads each stored revision's digest: a revision without one would stop the CLI with a TypeError.
const STATUS_ANSWER = objectWith('a bundle status', {
  name: isString,
  revisions: (value) => Array.isArray(value) && value.every((revision) => isObject(revision) && isString(revision.digest)),
});
const LIST_ANSWER = objectWith('a list of bundles', { bundles: (value) => Array.isArray(value) && value.every((status) => STATUS_ANSWER.check(status)) });
const PUSH_ANSWER = objectWith('a bundle push result', { outcome: isString, revision: isString, digest: isString });

async function list(options: Options): Promise<number> {
  const answer = (await adminRequest(options, 'GET', '/v1/bundles', {}, undefined, LIST_ANSWER)) as { bundles: Status[] } | undefined;
  if (answer === undefined) return 1;
  if (!options.json) {
    for (const status of answer.bundles) console.log(describe(status));
    if (answer.bundles.length === 0) console.log('no bundles');
  }
  return 0;
}

async function activate(name: string, revision: string, options: Options): Promise<number> {
  const body = Buffer.from(JSON.stringify({ revision }));
  const answer = (await adminRequest(options, 'POST', `/v1/bundles/${encodeURIComponent(name)}/activate`, { 'content-type': 'application/json' }, body, STATUS_ANSWER)) as Status | undefined;
  if (answer === undefined) return 1;
  if (!options.json) console.log(describe(answer));
  return 0;
}

/** A bundle's status, a line per stored revision; what the server answers is printed escaped (printable). */
function describe({ name, active, revisions }: Status): string {
  const activeText = active ? `active ${active.revision} (${active.source}, by ${active.activated_by} at ${active.activated_at})` : 'not active';
  const stored = revisions.map((r) => `\n  ${printable(`stored ${r.revision}  sha256:${r.digest.slice(0, 12)}  ${r.stored_at}`)}`).join('');
  return `${printable(`${name}: ${activeText}`)}${stored}`;
}

