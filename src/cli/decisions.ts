import { accessSync, chmodSync, constants, createWriteStream, existsSync, openSync, realpathSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { loadCheckpointPublicKey } from '../decisions/chain.ts';
import { verifyLogFile, type VerifyReport } from '../decisions/verify.ts';
import { loadConfig } from '../config/load.ts';
import { ArbiterError } from '../errors.ts';
import { isObject } from '../is-object.ts';
import { PROBLEM_TYPE_BASE } from '../server/problem.ts';
import { adminBaseUrl, adminRequest, adminSend, nextStep, objectWith, reportFailure, type AnswerShape } from './admin-client.ts';
import { cleanUpOnSignal, partialPath } from './interrupt.ts';
import { printable } from './printable.ts';

const HELP = `Usage: arbiter decisions <subcommand> [options]

Subcommands:
  get <decision_id>            one recorded decision, as JSON
  query [filters]              a page of decisions, newest first
  export [filters]             every matching decision as NDJSON (for a SIEM)
  verify                       walk the hash chain; exit 1 if a record does not match
  verify --db <file>           the same, offline: on a decision log file (a backup copy, or the live
                               file while the server writes to it), read-only, with no server
  replay <decision_id>         re-evaluate a recorded decision; shows recorded and new result

Filters (query, export):
  --from <time> --to <time>    RFC 3339 (2025-01-31T12:00:00Z) or epoch ms; from inclusive, to exclusive
  --iss --sub --client-id --action --resource-type --resource-id --reason --bundle --revision <value>
  --caller <id>                the gateway that asked: its API key id or client certificate identity
  --endpoint <path>            the endpoint that answered: /v1/decide, /v1/issuance, /v1/data (OPA
                               data API), /access/v1/evaluation, ... (caller and endpoint are not
                               indexed: give --from/--to too on a large log)
  --allow <true|false>
  --sub <value>                as recorded: sha256:<hex> when decision_log.mask hashes sub (the hex of
                               its JSON, quotes included: printf '%s' '"alice"' | sha256sum); the plain
                               value then matches nothing

Options:
  --limit <n>         query: page size, 1-1000 (default 50)
  --cursor <cursor>   query: the next page, as printed after the previous one
  --out <file>        export: write to a file instead of stdout (a new one is created mode 0600; it is
                      replaced only by a complete export: a failed or interrupted one leaves it as it was)
  --revision <rev>    replay: stored revision to replay against (default: the active one)
  --db <file>         verify: the SQLite decision log to verify offline (default with --config:
                      its decision_log.path)
  --key <file>        verify --db: the checkpoint key JWK (the server's key file, or a copy without
                      its private "d": the public key is enough); default with --config: its
                      decision_log.checkpoint.key_path, else <db>.checkpoint-key.jwk. Without one the
                      signatures cannot be checked: verify says so and exits 1
  -c, --config <file> verify: offline, on the decision log this server configuration names
  --url <url>         Arbiter base URL (default $ARBITER_URL or http://127.0.0.1:8181)
  --token <token>     admin token with arbiter.decisions.read (default $ARBITER_TOKEN)
  --json              print the server's JSON answer (verify --db: the same report)
  -h, --help

Online, verify waits for the server to walk the whole log before it answers, and Node's HTTP
client gives up after 300 s without an answer: for a log past a few million records use --db.

Exit codes: 0 ok, 1 failure (server unreachable or refused, verify found a mismatch or could not
check the signatures), 2 usage.`;

/** Export progress is reported on stderr after this many records. */
const PROGRESS_EVERY = 10_000;

/** CLI option -> query parameter of GET /v1/decisions. */
const FILTERS = {
  from: 'from',
  to: 'to',
  caller: 'caller',
  endpoint: 'endpoint',
  iss: 'iss',
  sub: 'sub',
  'client-id': 'client_id',
  action: 'action',
  'resource-type': 'resource_type',
  'resource-id': 'resource_id',
  allow: 'allow',
  reason: 'reason',
  bundle: 'bundle',
  revision: 'revision',
} as const;

/**
 * The options each subcommand reads, besides --url, --token and --json. Another one is refused:
 * ignored, `export --limit 10` would export everything and `query --out f` write no file,
 * each answering as if it had done what was asked.
 */
const SUBCOMMAND_OPTIONS: Readonly<Record<string, readonly string[]>> = {
  get: [],
  query: [...Object.keys(FILTERS), 'limit', 'cursor'],
  export: [...Object.keys(FILTERS), 'out'],
  verify: ['db', 'key', 'config'],
  replay: ['revision'],
};
const COMMON_OPTIONS = new Set(['url', 'token', 'json', 'help']);

type Values = Partial<Record<keyof typeof FILTERS | 'limit' | 'cursor' | 'out' | 'url' | 'token' | 'db' | 'key' | 'config', string>> & { json?: boolean };

interface Recorded {
  decision_id: string;
  timestamp: number;
  endpoint: string;
  bundle: string | null;
  revision: string | null;
  input: {
    /** AuthZEN requests add the subject the PEP asserted: `asserted`, `type`, `id`. */
    subject?: { sub?: string; iss?: string; asserted?: boolean; type?: string; id?: string };
    action?: { name?: string };
    resource?: { type?: string; id?: string };
  };
  result: { allow: boolean; reasons: { code: string }[] };
}

export async function decisionsCommand(argv: string[]): Promise<number> {
  const stringOptions = Object.fromEntries(
    [...Object.keys(FILTERS), 'limit', 'cursor', 'out', 'url', 'token', 'db', 'key'].map((name) => [name, { type: 'string' as const }]),
  );
  const { values, positionals } = parseArgs({
    args: argv,
    options: { ...stringOptions, config: { type: 'string', short: 'c' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const options = values as Values;
  const [subcommand, ...args] = positionals;
  const expect = (count: number) => {
    if (args.length !== count) throw new ArbiterError('usage', `decisions ${subcommand} takes ${count === 0 ? 'no' : count} argument${count === 1 ? '' : 's'}\n\n${HELP}`);
    const read = SUBCOMMAND_OPTIONS[subcommand!] ?? [];
    const unread = Object.keys(values).filter((name) => !COMMON_OPTIONS.has(name) && !read.includes(name));
    if (unread.length > 0) {
      throw new ArbiterError('usage', `decisions ${subcommand} does not take ${unread.map((name) => `--${name}`).join(', ')}\n\n${HELP}`);
    }
  };
  switch (subcommand) {
    case 'get':
      expect(1);
      return get(decisionId(args[0]!), options);
    case 'query':
      expect(0);
      return query(options);
    case 'export':
      expect(0);
      return exportDecisions(options);
    case 'verify':
      expect(0);
      return options.db !== undefined || options.config !== undefined || options.key !== undefined ? verifyOffline(options) : verify(options);
    case 'replay':
      expect(1);
      return replay(decisionId(args[0]!), options);
    default:
      throw new ArbiterError('usage', `${subcommand ? `unknown subcommand ${JSON.stringify(subcommand)}` : 'a subcommand is required'}\n\n${HELP}`);
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * A decision id as the decision endpoints answer it (a UUID), else a usage error: `get verify`
 * would otherwise fetch /v1/decisions/verify and print the chain report as if it were a record.
 */
function decisionId(text: string): string {
  if (!UUID.test(text)) throw new ArbiterError('usage', `${JSON.stringify(text)} is not a decision id (a UUID, as the decision endpoint answered it)`);
  return text;
}

async function get(id: string, options: Values): Promise<number> {
  const answer = await adminRequest(options, 'GET', `/v1/decisions/${encodeURIComponent(id)}`, {}, undefined, RECORD_ANSWER);
  if (answer === undefined) return 1;
  // A record is JSON either way; without --json it is indented for reading.
  if (!options.json) console.log(JSON.stringify(answer, null, 2));
  return 0;
}

// What the listings print must be there: a record without them would stop the CLI with a TypeError.
const REASONS = (value: unknown) => Array.isArray(value) && value.every((reason) => isObject(reason) && typeof reason.code === 'string');
const TIMESTAMP = (value: unknown) => typeof value === 'number' && !Number.isNaN(new Date(value).getTime());
const RECORD_ANSWER = objectWith('a decision record', { timestamp: TIMESTAMP, input: isObject, result: (result) => isObject(result) && REASONS(result.reasons) });
const PAGE_ANSWER = objectWith('a page of decisions', { decisions: (value) => Array.isArray(value) && value.every((record) => RECORD_ANSWER.check(record)) });
const VERIFY_ANSWER: AnswerShape = {
  shape: 'a verify report',
  check: (answer) => isObject(answer) && (answer.ok === true || (answer.ok === false && isObject(answer.first_mismatch))),
};
const SIDE = (side: unknown) => isObject(side) && REASONS(side.reasons) && Array.isArray(side.obligations);
const REPLAY_ANSWER = objectWith('a replay report', { recorded: SIDE, replayed: SIDE });

async function query(options: Values): Promise<number> {
  const params = filterParams(options);
  if (options.limit !== undefined) params.set('limit', options.limit);
  if (options.cursor !== undefined) params.set('cursor', options.cursor);
  const answer = (await adminRequest(options, 'GET', `/v1/decisions?${params}`, {}, undefined, PAGE_ANSWER)) as { decisions: Recorded[]; next_cursor: string | null } | undefined;
  if (answer === undefined) return 1;
  if (options.json) return 0;
  for (const decision of answer.decisions) console.log(describe(decision));
  if (answer.decisions.length === 0) console.log('no matching decisions');
  if (answer.next_cursor !== null) console.log(`more: add --cursor ${answer.next_cursor}`);
  return 0;
}

async function exportDecisions(options: Values): Promise<number> {
  // Checked before asking (without touching an existing file): a file that cannot be written
  // is that, not an export that stopped.
  const unwritable = options.out === undefined ? undefined : whyUnwritable(options.out);
  if (unwritable !== undefined) {
    console.error(`arbiter: cannot write ${options.out}: ${unwritable}`);
    return 1;
  }
  const path = `/v1/decisions/export?${filterParams(options)}`;
  const response = await adminSend(options, 'GET', path);
  if (response === undefined) return 1;
  if (!response.ok) return reportFailure(options, 'GET', path, response, await response.text());
  // An audit export bound for a SIEM: a proxy's login page is not one, whatever its status.
  const type = response.headers.get('content-type') ?? '';
  if (!type.startsWith('application/x-ndjson')) {
    await response.body?.cancel();
    console.error(`arbiter: GET ${path} answered ${type || 'no content type'}, not the NDJSON of a decision export; is ${adminBaseUrl(options)} an Arbiter server?`);
    return 1;
  }
  const file = options.out === undefined ? undefined : exportFile(options.out);
  const destination = file?.stream ?? stdout();
  // What a failed export leaves: said with every failure, as scripts and SIEMs will read that path.
  const left = file?.atomic ? `; ${options.out} was left as it was` : '';
  let records = 0;
  // The last line so far (with what follows it): an export the server had to stop ends with a problem document.
  let tail: Buffer = Buffer.alloc(0);
  const counted = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      for (const byte of chunk) if (byte === 0x0a && ++records % PROGRESS_EVERY === 0) process.stderr.write(`exported ${records} decisions...\n`);
      tail = lastLine(Buffer.concat([tail, chunk]));
      controller.enqueue(chunk);
    },
  });
  try {
    await pipeline(response.body!.pipeThrough(counted), destination);
  } catch (error) {
    file?.discard();
    console.error(`arbiter: the export stopped after ${records} decisions: ${(error as Error).message}${left}; run it again (narrow it with --from/--to to resume)`);
    return 1;
  }
  const stopped = problemLine(tail);
  if (stopped !== undefined) {
    file?.discard();
    const next = nextStep(stopped.code);
    console.error(
      `arbiter: the export stopped after ${records - 1} decisions: ${stopped.code}: ${stopped.detail ?? ''} (${left ? left.slice(2) : 'the last line of the output is this error'})${next ? `\n  ${next}` : ''}`,
    );
    return 1;
  }
  file?.commit();
  process.stderr.write(`exported ${records} decisions${options.out === undefined ? '' : ` to ${options.out}`}\n`);
  return 0;
}

async function verify(options: Values): Promise<number> {
  process.stderr.write(`verifying the decision log at ${adminBaseUrl(options)} (the server walks the whole chain)...\n`);
  // The server walks the whole chain before it answers: as long as the log is long. Node's
  // fetch still gives up after 300 s without response headers (undici's headersTimeout),
  // which --db does not depend on.
  const report = (await adminRequest({ ...options, answerTimeoutMs: 0 }, 'GET', '/v1/decisions/verify', {}, undefined, VERIFY_ANSWER)) as VerifyReport | undefined;
  if (report === undefined) return 1;
  return reportVerify(report, options);
}

/**
 * verify --db / --config: the server's verification (verifyLogFile) run here, on the file,
 * read-only and without a server, reported as the online verify reports the server's answer.
 */
async function verifyOffline(options: Values): Promise<number> {
  if (options.url !== undefined || options.token !== undefined) {
    throw new ArbiterError('usage', `decisions verify --db/--config reads the file itself: --url and --token are for the online verify\n\n${HELP}`);
  }
  let path = options.db;
  let keyPath = options.key;
  if (options.config !== undefined) {
    const log = loadConfig({ file: options.config }).decision_log;
    if (!log.enabled && path === undefined) throw new ArbiterError('usage', `decision_log.enabled is false in ${options.config}: there is no decision log to verify (give --db)`);
    path ??= log.path;
    keyPath ??= log.checkpoint.key_path;
  }
  if (path === undefined) throw new ArbiterError('usage', `decisions verify --key needs the decision log to verify: --db <file> or --config <file>\n\n${HELP}`);
  // A key named (--key, key_path) that is not there is a mistake to say; the default one
  // beside the log (where the server creates it) may just not have been copied with it.
  const keyNamed = keyPath !== undefined;
  keyPath ??= `${path}.checkpoint-key.jwk`;
  let kind: string;
  try {
    kind = statSync(path).isFile() ? 'file' : 'not a file';
  } catch (error) {
    kind = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (error as Error).message;
  }
  if (kind !== 'file') {
    console.error(`arbiter: cannot verify ${path}: ${kind}`);
    return 1;
  }
  const key = loadCheckpointPublicKey(keyPath);
  if (key === undefined && keyNamed) {
    console.error(`arbiter: checkpoint key ${keyPath} does not exist; without it the signatures cannot be checked (omit --key to check the rest anyway)`);
    return 1;
  }
  process.stderr.write(`verifying the decision log ${path} offline (read-only)...\n`);
  let report: VerifyReport;
  try {
    report = await verifyLogFile(path, key);
  } catch (error) {
    console.error(`arbiter: cannot verify ${path}: ${(error as Error).message}`);
    return 1;
  }
  if (options.json) console.log(JSON.stringify(report));
  if (key === undefined && report.first_mismatch === undefined) {
    if (!options.json) console.log(`decision log chain consistent: ${report.checked} records, but its checkpoint signatures were NOT checked`);
    console.error(`arbiter: no checkpoint key at ${keyPath}: nothing vouches for this log (a rewrite of all of it would pass); give the key that signs it with --key (its public part is enough)`);
    return 1;
  }
  return reportVerify(report, options);
}

/** What verify prints and returns for a report, the server's or one made here (--db). */
function reportVerify(report: VerifyReport, options: Values): number {
  if (report.ok) {
    if (!options.json) console.log(`decision log intact: ${report.checked} records, ${report.checkpoints_verified} signed checkpoints verified`);
    return 0;
  }
  const mismatch = report.first_mismatch!;
  if (!options.json) console.log(`decision log NOT intact: ${describeMismatch(mismatch)}, after ${report.checked} good records`);
  // Offline, the key is the auditor's to pick (the server's is the one that signs its log).
  const offline = options.db !== undefined || options.config !== undefined;
  if (offline && (mismatch.reason === 'anchor_signature_invalid' || mismatch.reason === 'checkpoint_signature_invalid')) {
    console.error('arbiter: a signature does not verify with the checkpoint key: if this is not the key that signs this log, verify again with that key; else the log was re-signed or forged');
  }
  console.error('arbiter: the chain does not match from that record on: keep the database file as evidence and compare it with your backups or shipped records');
  return 1;
}

/**
 * The first mismatch, said as what it is. Two reasons name a seq other than that of a record at
 * fault: record_missing names the record after the gap (it is there, the ones before it are not),
 * and records_missing_at_end the checkpoint that signs records the log no longer holds. "at seq N
 * (decision X)" would send the auditor looking for a missing X that is in the log. And an
 * index_corrupt finding may name no record at all (seq 0): "at seq 0" would name one.
 */
function describeMismatch(mismatch: NonNullable<VerifyReport['first_mismatch']>): string {
  const decision = mismatch.decision_id ? `decision ${printable(mismatch.decision_id)}` : undefined;
  switch (mismatch.reason) {
    case 'record_missing':
      return `record_missing: records before seq ${mismatch.seq}${decision ? ` (${decision}, the first record after the gap)` : ''} were deleted`;
    case 'records_missing_at_end':
      return `records_missing_at_end: the checkpoint at seq ${mismatch.seq} signs records the log no longer holds (its end was cut off)`;
    case 'index_corrupt':
      // seq 0 is no record: SQLite's check named none, or the reason codes' index is at fault.
      if (mismatch.seq === 0 && decision === undefined) return 'index_corrupt (an index no longer matches what it indexes; SQLite names no record)';
      return `index_corrupt at seq ${mismatch.seq}${decision ? ` (${decision})` : ''}`;
    default:
      return `${mismatch.reason} at seq ${mismatch.seq}${decision ? ` (${decision})` : ''}`;
  }
}

interface Side {
  revision: string | null;
  allow: boolean;
  reasons: { code: string }[];
  obligations: unknown[];
}

async function replay(id: string, options: Values): Promise<number> {
  const body = Buffer.from(JSON.stringify(options.revision === undefined ? {} : { revision: options.revision }));
  const answer = (await adminRequest(options, 'POST', `/v1/decisions/${encodeURIComponent(id)}/replay`, { 'content-type': 'application/json' }, body, REPLAY_ANSWER)) as
    | { entrypoint: string; recorded: Side; replayed: Side; same: boolean; masked: boolean }
    | undefined;
  if (answer === undefined) return 1;
  if (options.json) return 0;
  const side = (label: string, result: Side) =>
    `${label} ${printable(result.revision ?? '-')}: ${result.allow ? 'allow' : 'deny'} [${printable(result.reasons.map((r) => r.code).join(', '))}]${result.obligations.length ? ` +${result.obligations.length} obligations` : ''}`;
  console.log(printable(answer.entrypoint));
  console.log(side('recorded', answer.recorded));
  console.log(side('replayed', answer.replayed));
  console.log(answer.same ? 'same result' : 'DIFFERENT result');
  if (answer.masked) console.log('note: decision_log.mask is configured; masked input fields were replayed masked');
  return 0;
}

function describe(decision: Recorded): string {
  const { subject, action, resource } = decision.input;
  const target = `${resource?.type ?? '-'}${resource?.id === undefined ? '' : `/${resource.id}`}`;
  return [
    new Date(decision.timestamp).toISOString(),
    printable(decision.decision_id),
    decision.result.allow ? 'allow' : 'deny ',
    printable(who(decision.endpoint, subject)),
    printable(`${action?.name ?? '-'}`),
    printable(target),
    printable(`${decision.bundle ?? '-'}@${decision.revision ?? '-'}`),
    printable(`[${decision.result.reasons.map((r) => r.code).join(', ')}]`),
  ].join('  ');
}


/** The OPA data API's records hold the caller's input as given: no token was verified for it. */
const RAW_INPUT_ENDPOINT = '/v1/data';

/**
 * The verified `sub`; else, for an AuthZEN request without a token, the subject the PEP
 * asserted, marked as such (nobody verified it); else '-'. The sub of an OPA data API
 * record is the caller's word, marked too.
 */
function who(endpoint: string, subject: Recorded['input']['subject']): string {
  if (typeof subject?.sub === 'string') return endpoint === RAW_INPUT_ENDPOINT ? `${subject.sub}(unverified)` : subject.sub;
  if (subject?.asserted === true && typeof subject.id === 'string') return `${subject.type ?? '?'}:${subject.id}(asserted)`;
  return '-';
}

/** The last line of `bytes`, ignoring a final newline: copied, so the rest can be let go. */
function lastLine(bytes: Buffer): Buffer {
  const end = bytes.at(-1) === 0x0a ? bytes.length - 1 : bytes.length;
  const start = end === 0 ? 0 : bytes.lastIndexOf(0x0a, end - 1) + 1;
  return Buffer.from(bytes.subarray(start));
}

/** The problem document a line holds, when it is one rather than a decision record. */
function problemLine(line: Buffer): { code: string; detail?: string } | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line.toString('utf8'));
  } catch {
    return undefined;
  }
  if (!isObject(parsed) || Object.hasOwn(parsed, 'decision_id') || typeof parsed.code !== 'string') return undefined;
  if (typeof parsed.type !== 'string' || !parsed.type.startsWith(PROBLEM_TYPE_BASE)) return undefined;
  return { code: parsed.code, ...(typeof parsed.detail === 'string' && { detail: parsed.detail }) };
}

function filterParams(options: Values): URLSearchParams {
  const params = new URLSearchParams();
  for (const [option, parameter] of Object.entries(FILTERS)) {
    const value = options[option as keyof typeof FILTERS];
    if (value !== undefined) params.set(parameter, value);
  }
  return params;
}

function stdout(): Writable {
  // pipeline() would end process.stdout; this forwards the bytes and leaves it open.
  return new Writable({ write: (chunk, _encoding, callback) => void process.stdout.write(chunk, callback) });
}

interface ExportFile {
  stream: Writable;
  /** Whether the export goes to a file of its own until it is complete (else straight into a FIFO or device). */
  atomic: boolean;
  /** The complete export takes the path. */
  commit(): void;
  /** What was written goes, the path is left as it was. */
  discard(): void;
}

/**
 * Where `--out` is written: a new file beside it, renamed over it once the export is complete,
 * and removed when it fails or a signal ends the CLI. Written in place, a file at that path
 * would read as the export asked for while holding part of it (and yesterday's complete export
 * would be gone). Created for its owner alone, like the decision log it copies; an existing
 * file keeps its mode. A FIFO or device (`--out /dev/stdout`) is written as it is.
 */
function exportFile(out: string): ExportFile {
  const existing = existsSync(out) ? statSync(out) : undefined;
  if (existing !== undefined && !existing.isFile()) {
    return { stream: createWriteStream(out), atomic: false, commit: () => {}, discard: () => {} };
  }
  // A symbolic link keeps pointing where it did: its target is replaced.
  const target = existing === undefined ? out : realpathSync(out);
  const partial = partialPath(target);
  const fd = openSync(partial, 'wx', 0o600);
  const remove = () => rmSync(partial, { force: true });
  const unwatch = cleanUpOnSignal(remove);
  const settle = () => {
    unwatch();
    remove();
  };
  return {
    stream: createWriteStream(partial, { fd }),
    atomic: true,
    commit: () => {
      if (existing !== undefined) chmodSync(partial, existing.mode & 0o7777);
      renameSync(partial, target);
      unwatch();
    },
    discard: settle,
  };
}

/** Why `file` cannot be written (an existing file without write permission, a missing or unwritable directory, its own included), or undefined. */
function whyUnwritable(file: string): string | undefined {
  try {
    if (existsSync(file)) {
      if (statSync(file).isDirectory()) return 'it is a directory';
      accessSync(file, constants.W_OK);
      // A file is replaced by one written beside it (exportFile).
      if (statSync(file).isFile()) accessSync(dirname(realpathSync(file)), constants.W_OK);
    } else {
      const dir = dirname(file);
      if (!existsSync(dir) || !statSync(dir).isDirectory()) return `the directory ${dir} does not exist`;
      accessSync(dir, constants.W_OK);
    }
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}
