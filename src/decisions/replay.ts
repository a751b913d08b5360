import type { z } from 'zod';
import { ArbiterError } from '../errors.ts';
import type { PolicyBundle } from '../policy/bundle.ts';
import { extraOutputProblem, issuanceResultFor } from '../policy/contract.ts';
import { checkContract, lenientDecision, singleResult } from '../policy/engine.ts';
import type { PolicyEvaluation } from '../policy/evaluation/evaluator.ts';
import { isObject } from '../is-object.ts';
import { canonicalJson } from './canonical-json.ts';
import type { StoredDecision } from './record.ts';

/**
 * Replay: the recorded input, exactly as stored (so with its recorded `context.now`, and
 * with masked fields still masked), evaluated again by the same evaluator against the
 * active revision of the recorded bundle or a stored revision of it.
 *
 * Error codes (ArbiterError.code):
 *   decision_not_found         no decision with this id (or it was pruned)
 *   decision_not_replayable    no policy ran for it (no bundle, or its token was refused first)
 *   bundle_not_found           no revision given and the recorded bundle is not active
 *   bundle_revision_not_found  the revision given is neither active nor stored (from the lifecycle)
 *   bundle_revision_pruned     the revision given was stored, but retention has deleted its archive
 */

export interface ReplayDeps {
  get(decisionId: string): StoredDecision | undefined | Promise<StoredDecision | undefined>;
  activeBundle(name: string): PolicyBundle | undefined;
  /** Lends a revision without activating it: BundleLifecycle.withRevision. */
  withRevision<T>(name: string, revision: string, use: (bundle: PolicyBundle) => Promise<T>): Promise<T>;
  evaluate(bundle: PolicyBundle, entrypoint: string, input: string): Promise<PolicyEvaluation>;
}

export interface ReplayedResult {
  revision: string | null;
  allow: boolean;
  reasons: unknown[];
  obligations: unknown[];
  /** The OPA data API's answer, or an issuance's whole result, as recorded or replayed (absent: undefined). */
  value?: unknown;
}

export interface ReplayReport {
  decision_id: string;
  bundle: string;
  entrypoint: string;
  /** `data_version`: the live data that decided, when the record says (absent in older records). */
  recorded: ReplayedResult & { data_version?: number | null };
  replayed: ReplayedResult & { data_version: number };
  /** allow, reasons, obligations and (OPA data API, issuance) the answered value are equal (canonically: key order does not count). */
  same: boolean;
}

/**
 * The OPA data API records raw entrypoint values read leniently (pipeline evaluateInput),
 * not under the decision contract: its decisions are replayed the same way.
 */
const RAW_INPUT_ENDPOINT = '/v1/data';

/**
 * Output an endpoint asks of its entrypoint beyond the decision contract, checked on replay as
 * when it decided: for /v1/issuance against the scopes the recorded request asked for (none
 * when a mask erased them, as the policy then sees none either).
 */
const EXTRA_OUTPUT: Readonly<Record<string, (input: Record<string, unknown>) => z.ZodType>> = {
  '/v1/issuance': (input) => issuanceResultFor(requestedScopes(input)),
};

function requestedScopes(input: Record<string, unknown>): string[] {
  const scopes = isObject(input.issuance) ? input.issuance.scopes : undefined;
  return Array.isArray(scopes) ? scopes.filter((scope): scope is string => typeof scope === 'string') : [];
}

export async function replayDecision(deps: ReplayDeps, decisionId: string, revision?: string): Promise<ReplayReport> {
  const record = await deps.get(decisionId);
  if (record === undefined) throw new ArbiterError('decision_not_found', `no decision ${decisionId} in the decision log`);
  const { bundle: name, rule } = record;
  if (name === null || rule === undefined) {
    throw new ArbiterError('decision_not_replayable', `decision ${decisionId} names no bundle entrypoint: no policy answered it`);
  }
  // Only Arbiter writes rejected_token, when it refuses a token before the policy runs; the OPA
  // data API verifies no token, and its input (subject included) is the caller's, as given.
  const subject = record.input.subject;
  if (record.endpoint !== RAW_INPUT_ENDPOINT && isObject(subject) && subject.rejected_token !== undefined) {
    throw new ArbiterError('decision_not_replayable', `decision ${decisionId} refused its token before any policy ran: there is nothing to re-evaluate`);
  }

  const replay = async (bundle: PolicyBundle): Promise<ReplayReport> => {
    const entrypoint = `${bundle.name}/${rule}`;
    const replayed = await evaluate(deps, bundle, entrypoint, record);
    const recorded = { revision: record.revision, ...(record.data_version !== undefined && { data_version: record.data_version }), ...record.result };
    return { decision_id: record.decision_id, bundle: name, entrypoint, recorded, replayed, same: sameResult(recorded, replayed) };
  };
  if (revision !== undefined) return deps.withRevision(name, revision, replay);
  const active = deps.activeBundle(name);
  if (active === undefined) throw new ArbiterError('bundle_not_found', `bundle ${name} is not active: name a stored revision to replay against`);
  return replay(active);
}

async function evaluate(deps: ReplayDeps, bundle: PolicyBundle, entrypoint: string, record: StoredDecision): Promise<ReplayReport['replayed']> {
  const revision = bundle.revision;
  if (!bundle.entrypoints.has(entrypoint)) {
    return { revision, allow: false, reasons: [{ code: 'entrypoint_missing', message: `bundle ${bundle.name} has no entrypoint ${entrypoint}` }], obligations: [], data_version: 0 };
  }
  const run = await deps.evaluate(bundle, entrypoint, JSON.stringify(record.input));
  const data_version = run.dataVersion;
  if (record.endpoint === RAW_INPUT_ENDPOINT) {
    return { revision, ...lenientDecision(run), ...(run.ok && { value: singleResult(run.resultSet) ?? null }), data_version };
  }
  const evaluation = run.ok ? checkContract(run.resultSet) : run;
  if (!evaluation.ok) return { revision, allow: false, reasons: [{ code: evaluation.code, message: evaluation.message }], obligations: [], data_version };
  const extra = EXTRA_OUTPUT[record.endpoint]?.(record.input);
  const problem = extra && extraOutputProblem(extra, evaluation.result, entrypoint);
  if (problem !== undefined) return { revision, allow: false, reasons: [{ code: 'policy_contract_violation', message: problem }], obligations: [], data_version };
  const { allow, reasons, obligations = [] } = evaluation.result;
  // Recorded as the record's value (pipeline #evaluate): compared like the OPA data API's answer.
  return { revision, allow, reasons, obligations, ...(extra && { value: evaluation.result }), data_version };
}

function sameResult(a: ReplayedResult, b: ReplayedResult): boolean {
  return (
    a.allow === b.allow &&
    canonicalJson(a.reasons) === canonicalJson(b.reasons) &&
    canonicalJson(a.obligations) === canonicalJson(b.obligations) &&
    // The OPA data API's answer itself (null when undefined), or an issuance's whole result, when
    // the record has one: records from before they were recorded have none, and allow, reasons
    // and obligations still count.
    (!('value' in a) || canonicalJson(a.value) === canonicalJson(b.value ?? null))
  );
}
