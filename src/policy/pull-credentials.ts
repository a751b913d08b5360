/**
 * The headers a pull source authenticates with (bundles.sources[].credentials and headers), as
 * OPA's services[].credentials.bearer and services[].headers: a token or header value comes from
 * an environment variable, read once at start-up (a process's environment does not change), or
 * from a file, read at each poll so a rotated secret is used at the next one. None is ever put
 * into an error or a log line: errors name the key and the file, never what it holds.
 *
 * Error code:
 *   bundle_credentials_unavailable   a file cannot be read, is empty or too large, or holds
 *                                    what a header value cannot (the poll fails, nothing is sent)
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { HEADER_VALUE, type BundlesConfig } from '../config/schema.ts';
import { ArbiterError, ConfigError } from '../errors.ts';

type BundleSource = BundlesConfig['sources'][number];

/** A token or header file is a few kilobytes at most; a path mistyped onto a large file (or a device) is read no further. */
const MAX_SECRET_FILE_BYTES = 16 * 1024;

export interface SourceCredentials {
  /** The headers to send to the source's origin, files read now. Throws ArbiterError bundle_credentials_unavailable. */
  headers(): Promise<Record<string, string>>;
}

/** One header's value: known since start-up, or read from its file at each poll (after `prefix`, the scheme). */
type HeaderValue = { value: string } | { file: string; key: string; prefix: string };

/**
 * Resolves the credentials of every source: environment variables are read now, and one that is
 * unset, empty or unusable stops start-up (ConfigError naming each such key). Files are read at
 * each poll only: one missing now may be written by the time of the first (a secrets agent).
 */
export function sourceCredentials(sources: readonly BundleSource[], env: NodeJS.ProcessEnv = process.env): SourceCredentials[] {
  const problems: { path: string; message: string }[] = [];
  const resolved = sources.map((source, index) => {
    const at = `bundles.sources.${index}`;
    const values = new Map<string, HeaderValue>();
    const take = (name: string, key: string, from: { env: string } | { file: string }, prefix = '') => {
      if ('file' in from) return void values.set(name, { file: from.file, key: `${key} (${from.file})`, prefix });
      const value = trimmed(env[from.env] ?? '');
      if (value === '') problems.push({ path: key, message: `environment variable ${from.env} is unset or empty` });
      else if (!HEADER_VALUE.test(value)) problems.push({ path: key, message: `environment variable ${from.env} holds a character a header value cannot (a line break, a control character)` });
      else values.set(name, { value: `${prefix}${value}` });
    };
    for (const [name, value] of Object.entries(source.headers)) {
      if (typeof value === 'string') values.set(name, { value });
      else take(name, `${at}.headers.${name}`, value);
    }
    const bearer = source.credentials?.bearer;
    if (bearer?.token_file !== undefined) take('authorization', `${at}.credentials.bearer.token_file`, { file: bearer.token_file }, `${bearer.scheme} `);
    else if (bearer?.token_env !== undefined) take('authorization', `${at}.credentials.bearer.token_env`, { env: bearer.token_env }, `${bearer.scheme} `);
    return values;
  });
  if (problems.length > 0) throw new ConfigError(problems);
  return resolved.map((values) => ({
    async headers() {
      const headers: Record<string, string> = {};
      for (const [name, value] of values) headers[name] = 'value' in value ? value.value : `${value.prefix}${await readSecretFile(value.file, value.key)}`;
      return headers;
    },
  }));
}

/** Without surrounding ASCII whitespace (the trailing newline `echo` writes): a token or header value never has any. */
function trimmed(text: string): string {
  return text.replace(/^[\t\n\v\f\r ]+|[\t\n\v\f\r ]+$/g, '');
}

/** The value a file holds, trimmed; refused, with `key` and why, but never what it holds. */
async function readSecretFile(file: string, key: string): Promise<string> {
  const unavailable = (why: string) => new ArbiterError('bundle_credentials_unavailable', `${key} ${why}: the poll is not sent`);
  let text: string;
  try {
    // Non-blocking: a FIFO (or a device) named by mistake would otherwise hold the poll, which
    // reads its secrets before its timeout starts, until something writes to it.
    const handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      if (!(await handle.stat()).isFile()) throw unavailable('is not a regular file');
      const buffer = Buffer.alloc(MAX_SECRET_FILE_BYTES + 1);
      let length = 0;
      while (length < buffer.length) {
        const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
        if (bytesRead === 0) break;
        length += bytesRead;
      }
      if (length > MAX_SECRET_FILE_BYTES) throw unavailable(`is larger than ${MAX_SECRET_FILE_BYTES} bytes`);
      // Byte for byte: fetch sends a header value's characters (all under 256 here) as bytes.
      text = trimmed(buffer.subarray(0, length).toString('latin1'));
    } finally {
      await handle.close();
    }
  } catch (error) {
    if (error instanceof ArbiterError) throw error;
    // Node's message names the file and the reason (ENOENT, EACCES), never its content.
    throw unavailable(`cannot be read: ${(error as Error).message}`);
  }
  if (text === '') throw unavailable('is empty');
  if (!HEADER_VALUE.test(text)) throw unavailable('holds a character a header value cannot (a line break, a control character)');
  return text;
}
