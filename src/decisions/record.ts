import { z } from 'zod';
import { uuidv7 } from '../ids.ts';

/** One reason of a decision; `code` is stable and indexed, any other member is kept as given. */
export const decisionReasonSchema = z.looseObject({ code: z.string().min(1) });

export const decisionResultSchema = z.strictObject({
  allow: z.boolean(),
  reasons: z.array(decisionReasonSchema),
  obligations: z.array(z.unknown()),
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
  input: z.record(z.string(), z.unknown()),
  claim_names: z.array(z.string()),
  result: decisionResultSchema,
  latency_us: z.number().nonnegative(),
});

export type DecisionRecord = z.infer<typeof decisionRecordSchema>;

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
    reason_codes: [...new Set(record.result.reasons.map((reason) => reason.code))],
  };
}

function member(value: unknown, key: string): unknown {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
    ? (value as Record<string, unknown>)[key]
    : undefined;
}

function text(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return null;
}
