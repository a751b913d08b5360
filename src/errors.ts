/**
 * Every error Arbiter raises on purpose carries a stable, machine-readable `code`
 * (as jose does), so callers branch on codes and never on message text.
 */
export class ArbiterError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/**
 * The message of anything thrown. JavaScript throws values of any type, and some libraries
 * Arbiter calls do (opa-wasm throws strings): an Error gives its message, anything else its
 * String form, so a reason or log line always reads as text.
 */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * An ArbiterError about fields of a request body that fit its schema but cannot be used (an
 * `expires_at` already past): the problem answer names them by RFC 6901 JSON pointer in
 * `errors`, as it names the fields a schema refuses.
 */
export class FieldsInvalidError extends ArbiterError {
  readonly errors: readonly { pointer: string; detail: string }[];
  /** Offending fields found beyond `errors`, when the check listed only its first ones. */
  readonly omitted: number;

  constructor(code: string, message: string, errors: readonly { pointer: string; detail: string }[], omitted = 0) {
    super(code, message);
    this.errors = errors;
    this.omitted = omitted;
  }
}

/**
 * Most field errors a problem answer lists. A batch of thousands of bad entries is named by its
 * first ones (enough to see the pattern), the rest counted: the answer stays readable and small.
 */
export const MAX_FIELD_ERRORS = 100;

/** `reasons` as one line: the first MAX_FIELD_ERRORS, then how many more there are. */
export function listReasons(reasons: readonly string[]): string {
  const listed = reasons.slice(0, MAX_FIELD_ERRORS).join('; ');
  return reasons.length > MAX_FIELD_ERRORS ? `${listed}; and ${reasons.length - MAX_FIELD_ERRORS} more` : listed;
}

/** A configuration file or environment override that cannot be used. `issues` name each bad key path. */
export class ConfigError extends ArbiterError {
  readonly issues: readonly { path: string; message: string }[];

  constructor(issues: readonly { path: string; message: string }[], source = 'configuration') {
    super('config_invalid', `${source} is invalid:\n${issues.map((i) => `  ${i.path || '(root)'}: ${i.message}`).join('\n')}`);
    this.issues = issues;
  }
}

/**
 * Runs a start-up step on a file or directory the configuration names at `key`: its own
 * failure (a directory that cannot be created, a read-only volume, a file that is not a
 * database) becomes a ConfigError naming the key, so start-up stops with the key to fix and
 * no stack trace. Arbiter's own errors pass through as they are.
 */
export function atConfigKey<T>(key: string, step: () => T): T {
  const named = (error: unknown): never => {
    if (error instanceof ArbiterError) throw error;
    throw new ConfigError([{ path: key, message: errorMessage(error) }]);
  };
  try {
    const result = step();
    return (result instanceof Promise ? result.catch(named) : result) as T;
  } catch (error) {
    return named(error);
  }
}

/**
 * A bundle that failed one of the checks before activation. `check` names the check
 * (e.g. `archive_path_traversal`, `signature_mismatch`, `wasm_abi`) and is what the
 * admin API reports; the active bundle is untouched when this is thrown.
 */
export class BundleRejectedError extends ArbiterError {
  constructor(check: string, message: string, options?: ErrorOptions) {
    super(check, message, options);
  }

  get check(): string {
    return this.code;
  }
}

/**
 * A decision log record whose stored body no longer reads as a record (the database was
 * edited or damaged outside Arbiter): `seq` names it, so reading reports the record to
 * restore instead of failing without a word. Verify reports the same record as hash_mismatch.
 */
export class DecisionLogCorruptError extends ArbiterError {
  readonly seq: number;

  constructor(seq: number, message: string, options?: ErrorOptions) {
    super('decision_log_corrupt', message, options);
    this.seq = seq;
  }
}
