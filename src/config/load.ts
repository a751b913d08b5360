import { readFileSync } from 'node:fs';
import { parseDocument, YAMLError } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../errors.ts';
import { CONFIG_SECTION_KEYS, CONFIG_TOP_LEVEL_KEYS, configSchema, type Config } from './schema.ts';

export interface LoadConfigOptions {
  /** YAML file; when absent only defaults and environment overrides apply. */
  file?: string | undefined;
  env?: NodeJS.ProcessEnv;
}

/**
 * Reads the YAML file, applies environment overrides and validates the result.
 * Throws ConfigError listing every bad key path, so start-up stops with all of them at once.
 */
export function loadConfig(options: LoadConfigOptions = {}): Config {
  const env = options.env ?? process.env;
  const raw = options.file ? readYamlFile(options.file) : {};
  const overrides = applyEnvOverrides(raw, env);
  takeAsText(raw, overrides);
  try {
    return parseConfig(raw, options.file ?? 'configuration');
  } catch (error) {
    if (!(error instanceof ConfigError) || overrides.length === 0) throw error;
    // The report names the file, but a value an ARBITER_* variable (or PORT) set is not in it:
    // say which variable set it, so the operator does not search the file for a value it lacks.
    throw new ConfigError(error.issues.map((issue) => {
      const variable = setBy(overrides, issue.path) ?? (issue.message === UNKNOWN_KEY ? madeBy(overrides, issue.path) : undefined);
      if (variable !== undefined) return { path: issue.path, message: `${issue.message} (set by ${variable})` };
      // A variable below the refused key made it an object: ARBITER_ISSUERS__0__AUDIENCES turns
      // the list issuers into {0: ...}. Its items (and keys with capitals) are set only whole.
      const below = issue.message === UNKNOWN_KEY ? undefined : overrides.findLast(({ path }) => issue.path !== '' && path.join('.').startsWith(`${issue.path}.`));
      if (below === undefined) return issue;
      const whole = `ARBITER_${issue.path.split('.').join('__').toUpperCase()}`;
      return { path: issue.path, message: `${issue.message} (set by ${below.variable}: a list item or a key with capitals cannot be set alone; give the whole ${issue.path} as YAML, ${whole}='...')` };
    }), options.file ?? 'configuration');
  }
}

/**
 * Sets back to its text each override that YAML read as a collection where the schema expects
 * a string: `::` (the IPv6 wildcard) reads as a mapping, `[::1]` as a list, and such a host was
 * refused as "expected string, received object". A collection meant as one is given where the
 * key takes one (a section, a list), which this leaves alone.
 */
function takeAsText(raw: Record<string, unknown>, overrides: readonly Override[]): void {
  const result = configSchema.safeParse(raw);
  if (result.success) return;
  for (const issue of result.error.issues) {
    if (issue.code !== 'invalid_type' || issue.expected !== 'string') continue;
    const at = issue.path.map(String).join('.');
    const override = overrides.findLast(({ path }) => path.join('.') === at);
    if (override !== undefined && typeof override.parsed === 'object' && override.parsed !== null) setPath(raw, override.path, override.value);
  }
}

/** The variable that set the value at `path` (dotted): the deepest override at or above it, applied last. */
function setBy(overrides: readonly { variable: string; path: string[] }[], path: string): string | undefined {
  let found: { variable: string; depth: number } | undefined;
  for (const { variable, path: keys } of overrides) {
    const at = keys.join('.');
    if ((path === at || path.startsWith(`${at}.`)) && keys.length >= (found?.depth ?? 0)) found = { variable, depth: keys.length };
  }
  return found?.variable;
}

/**
 * For an unknown key (`a.b`, or `a.b, a.c` for several in one object): the variable that set a
 * value at or below one of them. A misspelt variable (ARBITER_SERVR__PORT) makes the key it
 * names, so the key is not in the file either.
 */
function madeBy(overrides: readonly { variable: string; path: string[] }[], paths: string): string | undefined {
  const unknown = paths.split(', ');
  return overrides.findLast(({ path }) => unknown.some((key) => `${path.join('.')}.`.startsWith(`${key}.`)))?.variable;
}

const UNKNOWN_KEY = 'unknown key';

export function parseConfig(raw: unknown, source = 'configuration'): Config {
  const result = configSchema.safeParse(raw);
  const reserved = reservedNames(raw);
  const interpolated = interpolations(raw);
  if (result.success && reserved.length === 0 && interpolated.length === 0) return result.data;
  // What the schema says of such a value ("must be an absolute URL"), there or elsewhere
  // ("server.host is ${LISTEN_HOST}"), is beside the point.
  const consequence = (issue: { path: string; message: string }) => interpolated.some(({ path, reference }) => path === issue.path || issue.message.includes(reference));
  const issues = [
    ...(result.success ? [] : describeIssues(result.error)).filter((issue) => !consequence(issue)),
    ...interpolated.map(({ path, reference }) => ({ path, message: `${reference} is not substituted: the configuration is read as written; give the value itself, or ${setFromEnvironment(path)}` })),
  ];
  // zod reports __proto__ in a strict object as an unknown key, but drops it from a map (a
  // tenant, a signing key, a seed) without a word: that one would simply not be there.
  for (const path of reserved) {
    if (!issues.some((issue) => issue.path.split(', ').includes(path))) issues.push({ path, message: '"__proto__" cannot be a name here (JavaScript objects reserve it): choose another' });
  }
  throw new ConfigError(issues, source);
}

/**
 * `${NAME}` (or `${NAME:-default}`) in a string value: OPA substitutes environment variables in
 * its configuration file, Arbiter does not, and such a value was taken as written (an issuer
 * named "${IDP_ISSUER}", a key set fetched from the host "${idp_host}"). Not under
 * decision_log.transport.options, which go to the transport module as they are.
 */
function interpolations(value: unknown, at: readonly string[] = []): { path: string; reference: string }[] {
  if (at.join('.') === 'decision_log.transport.options') return [];
  if (typeof value === 'string') {
    const reference = /\$\{[A-Za-z_][A-Za-z0-9_]*(?:[:?+=-][^}]*)?\}/.exec(value)?.[0];
    return reference === undefined ? [] : [{ path: at.join('.'), reference }];
  }
  if (Array.isArray(value)) return value.flatMap((item, index) => interpolations(item, [...at, String(index)]));
  if (typeof value !== 'object' || value === null) return [];
  return Object.entries(value).flatMap(([key, item]) => interpolations(item, [...at, key]));
}

/** How the environment sets the key at `path`: its own variable, or its list's (or map's) whole value. */
function setFromEnvironment(path: string): string {
  const keys = path.split('.');
  const settable = keys.findIndex((key) => !/^[a-z][a-z0-9_]*$/.test(key));
  if (settable === -1) return `set it from the environment with ARBITER_${keys.join('__').toUpperCase()}`;
  const parent = keys.slice(0, settable);
  return `set the whole ${parent.join('.')} from the environment, as YAML, with ARBITER_${parent.join('__').toUpperCase()}`;
}

/** The dotted paths of every `__proto__` key the raw configuration holds (YAML and JSON make it an own key). */
function reservedNames(value: unknown, at: readonly string[] = []): string[] {
  if (Array.isArray(value)) return value.flatMap((item, index) => reservedNames(item, [...at, String(index)]));
  if (typeof value !== 'object' || value === null) return [];
  return Object.keys(value).flatMap((key) => (key === '__proto__' ? [[...at, key].join('.')] : reservedNames((value as Record<string, unknown>)[key], [...at, key])));
}

function describeIssues(error: z.ZodError): { path: string; message: string }[] {
  return error.issues.map((issue) => {
    const path = issue.path.map(String).join('.');
    if (issue.code === 'unrecognized_keys') {
      return { path: issue.keys.map((k) => (path ? `${path}.${k}` : k)).join(', '), message: UNKNOWN_KEY };
    }
    return { path, message: issue.message };
  });
}

function readYamlFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError([{ path: '', message: `cannot read ${file}: ${(error as Error).message}` }], file);
  }
  let parsed: unknown;
  try {
    parsed = parseConfigYaml(text);
  } catch (error) {
    const where = error instanceof YAMLError && error.linePos ? ` (line ${error.linePos[0].line})` : '';
    throw new ConfigError([{ path: '', message: `not valid YAML${where}: ${(error as Error).message.split('\n')[0]}` }], file);
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ConfigError([{ path: '', message: 'the top level must be a mapping' }], file);
  }
  return parsed as Record<string, unknown>;
}

/**
 * Configuration text as YAML, for the file and for ARBITER_* overrides alike. Merge keys
 * (`<<: *anchor`) are read, as YAML 1.1 and most configuration tools read them: under the YAML
 * 1.2 core schema `<<` is a plain key, refused as unknown in a section (the operator is told
 * `admin.issuers.0.<<` is unknown) and passed on as an option named "<<" in a free-form map.
 * Warnings refuse it too: a tag YAML cannot resolve (`!ENV IDP_ISSUER`, which some loaders
 * substitute) would leave its text as the value (the issuer "IDP_ISSUER"), and Node would print
 * the warning on stderr, its code frame quoting the value (a secret, perhaps) outside the JSON log.
 */
function parseConfigYaml(text: string): unknown {
  const document = parseDocument(text, { strict: true, uniqueKeys: true, merge: true });
  const problem = document.errors[0] ?? document.warnings[0];
  if (problem !== undefined) throw problem;
  return document.toJS();
}

/** An ARBITER_* (or PORT) variable applied: the key it sets, its text and what YAML read it as. */
interface Override {
  variable: string;
  path: string[];
  value: string;
  parsed?: unknown;
}

/**
 * `ARBITER_SERVER__PORT=9000` sets server.port: a double underscore separates levels, so
 * keys that contain single underscores (body_limit_bytes) stay addressable, and
 * `ARBITER_MODE=production` sets a top-level key. Other `ARBITER_*` names without a double
 * underscore (ARBITER_CONFIG, the CLI's ARBITER_URL and ARBITER_TOKEN) are not configuration.
 * Values are read as YAML so numbers and booleans keep their type. `PORT` is honoured for
 * platforms that inject it.
 */
function applyEnvOverrides(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): Override[] {
  const overrides: Override[] = [];
  if (env.PORT) overrides.push({ variable: 'PORT', path: ['server', 'port'], value: env.PORT });
  for (const [variable, value] of Object.entries(env)) {
    if (!variable.startsWith('ARBITER_') || value === undefined) continue;
    const path = variable.slice('ARBITER_'.length).toLowerCase().split('__');
    if (path.length === 1 && !CONFIG_TOP_LEVEL_KEYS.has(path[0]!)) continue;
    overrides.push({ variable, path, value });
  }
  // Shallowest first: ARBITER_DECISION_LOG (a whole section) must not wipe ARBITER_DECISION_LOG__MASK
  // or PORT because the environment happened to list it later. Equal depths keep their order,
  // so ARBITER_SERVER__PORT still wins over PORT.
  overrides.sort((a, b) => a.path.length - b.path.length);
  const problems: { path: string; message: string }[] = [];
  for (const override of overrides) {
    const { variable, path, value } = override;
    try {
      override.parsed = parseConfigYaml(value);
      setPath(raw, path, override.parsed);
    } catch (error) {
      problems.push({ path: path.join('.'), message: `${variable} is not valid YAML: ${(error as Error).message.split('\n')[0]}` });
    }
  }
  if (problems.length > 0) throw new ConfigError(problems, 'environment');
  return overrides;
}

/**
 * The CLI's and toolchain's own variables: not configuration, and never a misspelling of it
 * (ARBITER_TOKEN, which operators export for the admin commands, is one letter off `tokens`).
 */
const TOOL_VARIABLES: ReadonlySet<string> = new Set(['ARBITER_CONFIG', 'ARBITER_URL', 'ARBITER_TOKEN', 'ARBITER_OPA', 'ARBITER_TOOLS']);

/**
 * `ARBITER_*` variables that are not read but look meant as overrides: a section and one of its
 * keys joined by a single underscore (ARBITER_SERVER_PORT for ARBITER_SERVER__PORT), or a
 * top-level key one letter off (ARBITER_MOD). Not refused, only reported (config check's notes,
 * a warning at start-up): other ARBITER_* names are not configuration, among them those
 * Kubernetes derives from a Service named arbiter (ARBITER_PORT, ARBITER_SERVICE_HOST), and a
 * Service named arbiter-server would make ARBITER_SERVER_PORT itself.
 */
export function unreadVariables(env: NodeJS.ProcessEnv = process.env): { path: string; message: string }[] {
  const notes: { path: string; message: string }[] = [];
  for (const variable of Object.keys(env)) {
    if (!variable.startsWith('ARBITER_') || TOOL_VARIABLES.has(variable)) continue;
    const name = variable.slice('ARBITER_'.length).toLowerCase();
    if (name.includes('__') || CONFIG_TOP_LEVEL_KEYS.has(name)) continue;
    let meant: string[] | undefined;
    for (const [section, keys] of CONFIG_SECTION_KEYS) {
      const key = name.startsWith(`${section}_`) ? name.slice(section.length + 1) : undefined;
      if (key !== undefined && keys.has(key)) meant = [section, key];
    }
    meant ??= [...CONFIG_TOP_LEVEL_KEYS].filter((key) => key.length >= 4 && oneEditApart(name, key)).map((key) => [key])[0];
    if (meant === undefined) continue;
    const override = `ARBITER_${meant.join('__').toUpperCase()}`;
    notes.push({ path: meant.join('.'), message: `${variable} is not read: levels are separated by a double underscore and top-level keys are spelt whole; for ${meant.join('.')}, set ${override}` });
  }
  return notes;
}

/** Whether one insertion, deletion or substitution turns a into b. */
function oneEditApart(a: string, b: string): boolean {
  if (a === b || Math.abs(a.length - b.length) > 1) return false;
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i += 1;
  return a.slice(i + (a.length >= b.length ? 1 : 0)) === b.slice(i + (b.length >= a.length ? 1 : 0));
}

function setPath(target: Record<string, unknown>, path: string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = Object.hasOwn(node, key) ? node[key] : undefined;
    if (typeof next !== 'object' || next === null || Array.isArray(next)) {
      const created: Record<string, unknown> = {};
      Object.defineProperty(node, key, { value: created, enumerable: true, writable: true, configurable: true });
      node = created;
    } else {
      node = next as Record<string, unknown>;
    }
  }
  Object.defineProperty(node, path.at(-1)!, { value, enumerable: true, writable: true, configurable: true });
}
