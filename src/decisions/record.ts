import { z } from 'zod';
import { isJsonObject } from '../data/json-value.ts';
import { uuidv7 } from '../ids.ts';
import { isObject } from '../is-object.ts';

/** One reason of a decision; `code` is stable and indexed, any other member is kept as given. */
const decisionReasonSchema = z.looseObject({ code: z.string().min(1) });

export const decisionResultSchema = z.strictObject({
  allow: z.boolean(),
  reasons: z.array(decisionReasonSchema),
  obligations: z.array(z.unknown()),
  /**
   * The value the entrypoint answered, as given, for endpoints that answer it rather than a
   * decision (the OPA data API: `true`, a set of deny messages, any document; null when the rule
   * was undefined; allow/reasons/obligations are then what Arbiter reads out of it), or that
   * answer more than the decision (/v1/issuance: the whole result, granted scopes included).
   */
  value: z.unknown().optional(),
});

/**
 * A decision as the decide path hands it to the log. `input` must already be free of the
 * raw token; masking (`decision_log.mask`) is applied by the store. Strict objects: a
 * member the schema does not know is refused rather than silently left out of an audit
 * record.
 */
export const decisionRecordSchema = z.strictObject({
  decision_id: z.uuid({ version: 'v7' }),
  /** When the decision was made, in ms since the epoch. */
  timestamp: z.number().int().nonnegative(),
  /** Identity of the gateway that asked, or null when the caller is not authenticated. */
  caller: z.string().nullable(),
  endpoint: z.string().min(1),
  /**
   * Entrypoint below the bundle that was (or would have been) evaluated, e.g. "decision":
   * what replay evaluates again. Optional so records written before it existed still parse.
   */
  rule: z.string().min(1).optional(),
  bundle: z.string().nullable(),
  revision: z.string().nullable(),
  /**
   * Version of the live data (entitlements, approvals, ...) the policy evaluated against; null
   * when no evaluation ran. With the revision it names everything that decided. Optional so
   * records written before it existed still parse.
   */
  data_version: z.number().int().nonnegative().nullable().optional(),
  input: z.record(z.string(), z.unknown()),
  claim_names: z.array(z.string()),
  result: decisionResultSchema,
  latency_us: z.number().nonnegative(),
});

export type DecisionRecord = z.infer<typeof decisionRecordSchema>;

const RECORD_KEYS = new Set(['decision_id', 'timestamp', 'caller', 'endpoint', 'rule', 'bundle', 'revision', 'data_version', 'input', 'claim_names', 'result', 'latency_us']);
const RESULT_KEYS = new Set(['allow', 'reasons', 'obligations', 'value']);
const UUID_V7 = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-7[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$/;

/**
 * True when `value` satisfies decisionRecordSchema. The store checks every record it is
 * given, on the thread that serves requests; a zod parse of a whole record cost 3-4 µs of
 * that, this a fraction. The schema stays the definition and explains a refusal; a test
 * holds the two to the same answers.
 */
export function isDecisionRecord(value: unknown): value is DecisionRecord {
  if (!isJsonObject(value) || !hasOnlyKeys(value, RECORD_KEYS)) return false;
  const { decision_id, timestamp, caller, endpoint, rule, bundle, revision, data_version, input, claim_names, result, latency_us } = value;
  return (
    typeof decision_id === 'string' && UUID_V7.test(decision_id) &&
    Number.isSafeInteger(timestamp) && (timestamp as number) >= 0 &&
    isStringOrNull(caller) && isNonEmptyString(endpoint) &&
    (rule === undefined || isNonEmptyString(rule)) &&
    isStringOrNull(bundle) && isStringOrNull(revision) &&
    (data_version === undefined || data_version === null || (Number.isSafeInteger(data_version) && (data_version as number) >= 0)) &&
    isJsonObject(input) &&
    Array.isArray(claim_names) && claim_names.every((name) => typeof name === 'string') &&
    isDecisionResult(result) &&
    typeof latency_us === 'number' && Number.isFinite(latency_us) && latency_us >= 0
  );
}

function isDecisionResult(value: unknown): boolean {
  if (!isJsonObject(value) || !hasOnlyKeys(value, RESULT_KEYS)) return false;
  const { allow, reasons, obligations } = value;
  return (
    typeof allow === 'boolean' &&
    Array.isArray(reasons) && reasons.every((reason) => isJsonObject(reason) && isNonEmptyString(reason.code)) &&
    Array.isArray(obligations)
  );
}

function hasOnlyKeys(value: Record<string, unknown>, allowed: ReadonlySet<string>): boolean {
  for (const key in value) if (!allowed.has(key)) return false;
  return true;
}

function isStringOrNull(value: unknown): boolean {
  return value === null || typeof value === 'string';
}

function isNonEmptyString(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0;
}

/** A record as stored: masked, numbered and chained. */
export type StoredDecision = DecisionRecord & {
  /** Position in the hash chain, 1-based, never reused (pruning leaves a gap at the start only). */
  seq: number;
  prev_hash: string;
  hash: string;
};

/** UUIDv7: time-ordered, so ids sort (and index) in roughly the order decisions are made. */
export function newDecisionId(): string {
  return uuidv7();
}

/**
 * Columns copied out of the stored (masked) record so queries can use indexes. They are
 * derived, never given: verify() derives them again from the stored record and reports a
 * row whose columns were edited to say something the record does not.
 */
export interface IndexColumns {
  iss: string | null;
  sub: string | null;
  client_id: string | null;
  action: string | null;
  resource_type: string | null;
  resource_id: string | null;
  allow: 0 | 1;
  reason_codes: string[];
}

export function deriveIndexColumns(record: DecisionRecord): IndexColumns {
  const subject = member(record.input, 'subject');
  const action = member(record.input, 'action');
  const resource = member(record.input, 'resource');
  return {
    iss: text(member(subject, 'iss')),
    sub: text(member(subject, 'sub')),
    client_id: text(member(subject, 'client_id')),
    action: text(member(action, 'name')),
    resource_type: text(member(resource, 'type')),
    resource_id: text(member(resource, 'id')),
    allow: record.result.allow ? 1 : 0,
    // A code given twice by a policy is one fact for filtering.
    reason_codes: [...new Set(record.result.reasons.map((reason) => reason.code.toWellFormed()))],
  };
}

function member(value: unknown, key: string): unknown {
  return isObject(value) ? value[key] : undefined;
}

/**
 * A column value as SQLite stores it: text is UTF-8 there, so a lone surrogate (valid in a
 * JSON string) is stored as U+FFFD; deriving it so keeps verify's comparison exact.
 */
function text(value: unknown): string | null {
  if (typeof value === 'string') return value.toWellFormed();
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return null;
}
