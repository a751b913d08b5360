import type { Logger } from 'pino';
import type { z } from 'zod';
import type { DocumentStatus } from '../data/documents.ts';
import type { PolicyBundle } from '../policy/bundle.ts';
import { extraOutputProblem, type Obligation, type PolicyResult, type Reason } from '../policy/contract.ts';
import { checkContract, EVALUATION_FAILURE_CODES, lenientDecision, singleResult, type EvaluationFailureCode } from '../policy/engine.ts';
import type { PolicyEvaluation, PolicyEvaluator } from '../policy/evaluation/evaluator.ts';
import { isObject } from '../is-object.ts';
import type { BundleRegistry } from '../policy/registry.ts';
import { subjectFromToken, subjectRevocation, unauthenticatedSubject, type PolicySubject, type RevocationLookup } from '../tokens/subject.ts';
import type { IssuerRegistry } from '../tokens/trusted-issuers.ts';
import type { VerificationCache } from '../tokens/verification-cache.ts';
import { TOKEN_FAILURE_CODES, verifyAccessToken, type TokenFailure, type TokenFailureCode } from '../tokens/verify.ts';
import { applyMask, type MaskRule } from './mask.ts';
import { newDecisionId, type DecisionRecord } from './record.ts';

export interface DecisionRequest {
  /** Route that asked, e.g. "/v1/decide"; recorded with the decision. */
  endpoint: string;
  requestId: string;
  /** The authenticated gateway that asked (null when gateway authentication is off). */
  caller?: string | null | undefined;
  /** Bundle name; the configured default when absent. */
  bundle?: string | undefined;
  /** Entrypoint below the bundle, e.g. "decision" or "issuance". */
  rule: string;
  token?: string | undefined;
  /** Subject fields asserted by the caller (e.g. an AuthZEN PEP), merged under verified ones. */
  assertedSubject?: Record<string, unknown> | undefined;
  action: { name: string; properties?: Record<string, unknown> | undefined };
  resource: { type: string; id?: string | undefined; properties?: Record<string, unknown> | undefined };
  context?: Record<string, unknown> | undefined;
  /** Further top-level input documents (e.g. `issuance`). */
  extraInput?: Record<string, unknown> | undefined;
  /** Output the entrypoint owes beyond the decision contract; a result without it is a contract violation. */
  outputSchema?: z.ZodType | undefined;
  /**
   * Parties the request names rather than presents a token for (issuance: the client and the
   * subject to mint for), by the extraInput document that describes them: their sub and
   * client_id revocations under any issuer become `input.<document>.revoked.<party>`, read when
   * the decision starts and again once the policy has answered, like the token's own.
   */
  namedParties?: { document: string; parties: Record<string, NamedParty> } | undefined;
}

/** A party known by name: a revocation of either identifier applies to it. */
export interface NamedParty {
  sub?: string | undefined;
  client_id?: string | undefined;
}

export interface Decision {
  decision_id: string;
  allow: boolean;
  reasons: Reason[];
  obligations: Obligation[];
  policy: { bundle: string; revision: string } | null;
  /** Version of the live data the policy evaluated against; null when no policy ran. */
  data_version: number | null;
  /** The whole entrypoint result, for endpoints with more output than the decision contract. */
  result: PolicyResult | null;
  /**
   * Recorded with the decision as `result.value`: the OPA data API's answer as the entrypoint
   * gave it (null: undefined), or the whole result of an entrypoint with more output than the
   * decision contract (issuance: the scopes and lifetime granted, what the caller acts on).
   */
  answer?: { value: unknown };
  /** false when no bundle could answer: the HTTP layer turns that into 503. */
  answered: boolean;
  /**
   * Set when the decision log refused the record: the decision is then the audit_unavailable
   * deny. A flag rather than the first reason's code, which a policy may give too.
   */
  unrecorded?: true;
  latency_us: number;
}

type Outcome = Omit<Decision, 'decision_id' | 'latency_us'>;

export interface InputEvaluationRequest {
  endpoint: string;
  requestId: string;
  caller?: string | null | undefined;
  bundle: string;
  /** Entrypoint below the bundle, e.g. "decision". */
  rule: string;
  input: Record<string, unknown>;
}

export type InputEvaluation =
  | { decision_id: string; outcome: 'evaluated'; result: unknown }
  | { decision_id: string; outcome: 'not_found'; message: string }
  | { decision_id: string; outcome: 'error'; code: EvaluationFailureCode | 'audit_unavailable'; message: string };

/** Where decisions are recorded; in strict durability `append` resolves once the record is durable. */
export interface DecisionRecorder {
  append(record: DecisionRecord): Promise<void>;
}

export interface PipelineDeps {
  issuers: IssuerRegistry;
  bundles: BundleRegistry;
  evaluator: PolicyEvaluator;
  defaultBundle: string;
  maxTokenBytes: number;
  logger: Logger;
  verificationCache?: VerificationCache;
  /** Checked on every decision, cached verification or not. */
  revocations?: RevocationLookup;
  /** Freshness of live data documents: `input.data_status`. */
  dataStatus?: (nowMs: number) => Record<string, DocumentStatus>;
  /** The decision log; a decision that cannot be recorded is a deny (audit_unavailable). */
  recorder?: DecisionRecorder;
  /** Sees every finished decision and token failure (metrics). */
  observer?: DecisionObserver;
  /** decision_log.mask: what must not be written in clear applies to the process log line too. */
  logMask?: readonly MaskRule[];
}

/** Called on the decision path: implementations must be cheap and must not throw. */
export interface DecisionObserver {
  decided(decision: Decision, endpoint: string): void;
  tokenRejected(reason: TokenFailureCode): void;
}

/** What one decision saw and did, before it is recorded and logged. */
interface Trace {
  decisionId: string;
  nowMs: number;
  started: bigint;
  endpoint: string;
  rule: string;
  requestId: string;
  caller: string | null;
  input: Record<string, unknown>;
  claimNames: string[];
}

/**
 * The decision path: verify the token, build the policy input, evaluate, record, log.
 * Every failure on the way is a deny with a reason code; nothing here throws to the caller.
 */
export class DecisionPipeline {
  readonly #deps: PipelineDeps;

  constructor(deps: PipelineDeps) {
    this.#deps = deps;
  }

  async decide(request: DecisionRequest): Promise<Decision> {
    const nowMs = Date.now();
    const now = Math.floor(nowMs / 1000);
    const input: Record<string, unknown> = {
      ...request.extraInput,
      subject: null,
      action: request.action,
      resource: request.resource,
      // Server-set fields win over the caller's: a decision is replayable at its own time.
      context: { ...request.context, now, request_id: request.requestId },
    };
    const trace = this.#trace(request, input, nowMs);
    const bundleName = request.bundle ?? this.#deps.defaultBundle;
    const bundle = this.#deps.bundles.get(bundleName);

    let outcome: Outcome;
    try {
      if (!bundle) {
        // Nothing can allow without a policy: the deny is settled. The token is still looked at,
        // for the record only, so an audit can tell whose requests an outage denied (the verified
        // subject, or the refused token's fingerprint and claimed issuer, as on the path below).
        const subject = await this.#subject(request, now);
        if ('code' in subject) {
          input.subject = rejectedSubject(subject, request.assertedSubject);
        } else {
          input.subject = subject;
          trace.claimNames = Object.keys(subject.claims);
        }
        outcome = denial(null, 'no_active_bundle', `no active bundle named ${bundleName}`, false);
      } else {
        const subject = await this.#subject(request, now);
        if ('code' in subject) {
          input.subject = rejectedSubject(subject, request.assertedSubject);
          outcome = denial(bundle, subject.code, subject.message);
        } else {
          input.subject = subject;
          trace.claimNames = Object.keys(subject.claims);
          this.#markNamedParties(request, input, now);
          outcome = await this.#evaluate(bundle, request, input, nowMs);
          // A revocation committed while the policy ran must not be answered with an allow
          // made before it: look again, and decide again on what is now revoked (rare, cheap).
          if (this.#newlyRevoked(subject, request, input, now)) outcome = await this.#evaluate(bundle, request, input, nowMs);
        }
      }
    } catch (error) {
      // Defence in depth: the steps above do not throw by contract, but if one does, deny.
      this.#deps.logger.error({ err: error, ...traceFields(trace), bundle: bundleName }, 'decision path failed');
      outcome = denial(bundle ?? null, 'internal_error', 'the decision could not be computed', bundle !== undefined);
    }
    return this.#finish(trace, outcome);
  }

  /**
   * Evaluates an entrypoint on caller-supplied input exactly as given (the OPA data API):
   * no token is verified and nothing is added, so only trusted callers may reach it.
   * Returns the raw entrypoint value (undefined when the rule is undefined); recorded and
   * logged like any decision.
   */
  async evaluateInput(request: InputEvaluationRequest): Promise<InputEvaluation> {
    const bundle = this.#deps.bundles.get(request.bundle);
    const entrypoint = `${request.bundle}/${request.rule}`;
    const input = request.input;
    const trace = this.#trace(request, input, Date.now());
    if (!bundle || !bundle.entrypoints.has(entrypoint)) {
      // Recorded like /v1/decide's: a gateway denied because its policy is not active shows in the log.
      const missing = bundle
        ? denial(bundle, 'entrypoint_missing', `bundle ${bundle.name} has no entrypoint ${entrypoint}`)
        : denial(null, 'no_active_bundle', `no active bundle named ${request.bundle}`, false);
      const decision = await this.#finish(trace, missing);
      const reason = decision.reasons[0]!;
      if (decision.unrecorded) return { decision_id: trace.decisionId, outcome: 'error', code: 'audit_unavailable', message: reason.message ?? '' };
      return { decision_id: trace.decisionId, outcome: 'not_found', message: reason.message ?? '' };
    }
    const subject = isObject(input.subject) ? input.subject : {};
    trace.claimNames = isObject(subject.claims) ? Object.keys(subject.claims) : [];

    const run = await this.#deps.evaluator.evaluate(bundle, entrypoint, JSON.stringify(input));
    const decision = await this.#finish(trace, {
      ...lenientDecision(run),
      policy: { bundle: bundle.name, revision: bundle.revision },
      data_version: run.dataVersion,
      result: null,
      // An undefined answer is recorded as null: a record without value predates recording it.
      ...(run.ok && { answer: { value: singleResult(run.resultSet) ?? null } }),
      answered: run.ok,
    });
    if (decision.unrecorded) {
      return { decision_id: trace.decisionId, outcome: 'error', code: 'audit_unavailable', message: decision.reasons[0]?.message ?? '' };
    }
    if (!run.ok) return { decision_id: trace.decisionId, outcome: 'error', code: run.code, message: run.message };
    return { decision_id: trace.decisionId, outcome: 'evaluated', result: singleResult(run.resultSet) };
  }

  /** Runs an entrypoint without the decision contract, a record or a log line (e.g. AuthZEN search candidates). */
  evaluateRaw(bundle: PolicyBundle, entrypoint: string, input: string): Promise<PolicyEvaluation> {
    return this.#deps.evaluator.evaluate(bundle, entrypoint, input);
  }

  #trace(request: { endpoint: string; rule: string; requestId: string; caller?: string | null | undefined }, input: Record<string, unknown>, nowMs: number): Trace {
    return {
      decisionId: newDecisionId(),
      nowMs,
      started: process.hrtime.bigint(),
      endpoint: request.endpoint,
      rule: request.rule,
      requestId: request.requestId,
      caller: request.caller ?? null,
      input,
      claimNames: [],
    };
  }

  async #subject(request: DecisionRequest, now: number): Promise<PolicySubject | TokenFailure> {
    const asserted = request.assertedSubject ?? {};
    if (request.token === undefined) {
      const subject: PolicySubject = { ...unauthenticatedSubject(), ...asserted };
      subject.revoked = this.#revocationOf(subject, now);
      return subject;
    }
    const verification = await verifyAccessToken(request.token, this.#deps.issuers, {
      maxTokenBytes: this.#deps.maxTokenBytes,
      cache: this.#deps.verificationCache,
      now,
    });
    if (!verification.ok) {
      this.#deps.observer?.tokenRejected(verification.code);
      return verification;
    }
    const subject = { ...asserted, ...subjectFromToken(verification, now) };
    subject.revoked = this.#revocationOf(subject, now);
    return subject;
  }

  /**
   * Whether a party known by name only (not by a token it holds) is revoked by sub or
   * client_id under any issuer, as policy input: e.g. the subject and client a token service
   * asks to mint a token for (/v1/issuance).
   */
  partyRevocation(party: NamedParty, nowS: number): PolicySubject['revoked'] {
    const match = this.#deps.revocations?.checkPartyAnyIssuer(party, nowS);
    return match?.revoked ? { revoked: true, reason: match.reason, revocation_id: match.revocation_id } : { revoked: false };
  }

  /** Sets `input.<document>.revoked` for the request's named parties; true when one of them is revoked. */
  #markNamedParties(request: DecisionRequest, input: Record<string, unknown>, now: number): boolean {
    if (!request.namedParties) return false;
    const { document, parties } = request.namedParties;
    const revoked = Object.fromEntries(Object.entries(parties).map(([role, party]) => [role, this.partyRevocation(party, now)]));
    input[document] = { ...(input[document] as Record<string, unknown>), revoked };
    return Object.values(revoked).some((revocation) => revocation.revoked);
  }

  /** Whether the subject or a named party was revoked since the input was built; updates the input if so. */
  #newlyRevoked(subject: PolicySubject, request: DecisionRequest, input: Record<string, unknown>, now: number): boolean {
    let changed = false;
    if (!subject.revoked.revoked) {
      const revoked = this.#revocationOf(subject, now);
      if (revoked.revoked) {
        subject.revoked = revoked;
        changed = true;
      }
    }
    if (request.namedParties) {
      const before = (input[request.namedParties.document] as { revoked: Record<string, { revoked: boolean }> }).revoked;
      const wasRevoked = Object.values(before).some((revocation) => revocation.revoked);
      if (!wasRevoked && this.#markNamedParties(request, input, now)) changed = true;
    }
    return changed;
  }

  /**
   * The revocation state of a verified subject (its token, session, client, actors) and of a
   * subject a PEP asserted (AuthZEN), with or without a token: a `sub` revocation naming its id
   * under any issuer. Revoking a user must reach the PEPs that vouch for them too, and a policy
   * that decides on the asserted id must not lose that because a token of another sub came along.
   */
  #revocationOf(subject: PolicySubject, now: number): PolicySubject['revoked'] {
    if (!this.#deps.revocations) return { revoked: false };
    if (subject.authenticated) {
      const revoked = subjectRevocation(this.#deps.revocations, subject, now);
      return revoked.revoked ? revoked : this.#assertedRevocation(subject, now);
    }
    return this.#assertedRevocation(subject, now);
  }

  /** A `sub` revocation (any issuer) of the id a PEP asserted; not revoked when nothing was asserted. */
  #assertedRevocation(subject: PolicySubject, now: number): PolicySubject['revoked'] {
    const { asserted, id } = subject as PolicySubject & { asserted?: unknown; id?: unknown };
    return asserted === true && typeof id === 'string' ? this.partyRevocation({ sub: id }, now) : { revoked: false };
  }

  async #evaluate(bundle: PolicyBundle, request: DecisionRequest, input: Record<string, unknown>, nowMs: number): Promise<Outcome> {
    const entrypoint = `${bundle.name}/${request.rule}`;
    // data_status is read when the evaluation starts on its live data version (a write may land
    // while it waits for a worker), so the input, and the record, describe that version.
    const describeLiveData = () => {
      input.data_status = this.#deps.dataStatus?.(nowMs) ?? {};
    };
    if (!bundle.entrypoints.has(entrypoint)) {
      describeLiveData(); // for the record: what the policy would have seen
      return denial(bundle, 'entrypoint_missing', `bundle ${bundle.name} has no entrypoint ${entrypoint}`);
    }
    const run = await this.#deps.evaluator.evaluate(bundle, entrypoint, () => {
      describeLiveData();
      return JSON.stringify(input);
    });
    const evaluation = run.ok ? checkContract(run.resultSet) : run;
    if (!evaluation.ok) return { ...denial(bundle, evaluation.code, evaluation.message), data_version: run.dataVersion };
    const { result } = evaluation;
    const problem = request.outputSchema && extraOutputProblem(request.outputSchema, result, entrypoint);
    if (problem !== undefined) return { ...denial(bundle, 'policy_contract_violation', problem), data_version: run.dataVersion };
    return {
      allow: result.allow,
      reasons: result.reasons,
      obligations: result.obligations ?? [],
      policy: { bundle: bundle.name, revision: bundle.revision },
      data_version: run.dataVersion,
      result,
      // The extra output is what the endpoint answers from (granted scopes, lifetime): without
      // it in the record, an audit could not tell what was granted, nor replay see it change.
      ...(request.outputSchema && { answer: { value: result } }),
      answered: true,
    };
  }

  /** Records the decision (strict: durably, before anyone acts on it), then observes and logs it. */
  async #finish(trace: Trace, outcome: Outcome): Promise<Decision> {
    let decision: Decision = {
      decision_id: trace.decisionId,
      ...outcome,
      latency_us: Number(process.hrtime.bigint() - trace.started) / 1000,
    };
    if (this.#deps.recorder) {
      try {
        await this.#deps.recorder.append(this.#record(trace, decision));
      } catch (error) {
        this.#deps.logger.error({ err: error, ...traceFields(trace), bundle: decision.policy?.bundle }, 'decision could not be recorded: denied');
        // Still unanswered when no bundle answered: the 503 says the server cannot decide at all.
        const policy = outcome.policy && { name: outcome.policy.bundle, revision: outcome.policy.revision };
        decision = {
          ...decision,
          ...denial(policy, 'audit_unavailable', 'the decision could not be recorded in the decision log', decision.answered),
          data_version: decision.data_version,
          unrecorded: true,
        };
      }
    }
    this.#deps.observer?.decided(decision, trace.endpoint);
    this.#logDecision(trace, decision);
    return decision;
  }

  #record(trace: Trace, decision: Decision): DecisionRecord {
    return {
      decision_id: trace.decisionId,
      timestamp: trace.nowMs,
      caller: trace.caller,
      endpoint: trace.endpoint,
      rule: trace.rule,
      bundle: decision.policy?.bundle ?? null,
      revision: decision.policy?.revision ?? null,
      data_version: decision.data_version,
      input: trace.input,
      claim_names: trace.claimNames,
      result: {
        allow: decision.allow,
        reasons: decision.reasons,
        obligations: decision.obligations,
        ...(decision.answer !== undefined && { value: decision.answer.value }),
      },
      latency_us: decision.latency_us,
    };
  }

  /** One process log line per decision; the decision log, not this line, is the audit record. */
  #logDecision(trace: Trace, decision: Decision): void {
    const { subject, action, resource } = this.#loggedInput(trace.input);
    this.#deps.logger.info(
      {
        decision_id: decision.decision_id,
        decided_at: new Date(trace.nowMs).toISOString(),
        endpoint: trace.endpoint,
        request_id: trace.requestId,
        caller: trace.caller,
        bundle: decision.policy?.bundle,
        revision: decision.policy?.revision,
        subject,
        claims_present: trace.claimNames,
        action: action?.name,
        resource,
        allow: decision.allow,
        reasons: decision.reasons.map((r) => r.code),
        latency_us: Math.round(decision.latency_us),
      },
      'decision',
    );
  }

  /**
   * The few input fields the log line shows, masked by the decision log's rules: a pointer
   * such as /input/subject/sub or /input/resource masks them here as in the record.
   */
  #loggedInput(input: Record<string, unknown>): LoggedInput {
    const subject = isObject(input.subject) ? input.subject : {};
    const action = isObject(input.action) ? input.action : {};
    const resource = isObject(input.resource) ? input.resource : {};
    const shown = {
      // type and id: the subject an AuthZEN PEP asks about (absent from a token's subject).
      subject: { iss: subject.iss, sub: subject.sub, client_id: subject.client_id, type: subject.type, id: subject.id },
      action: { name: action.name },
      resource: { type: resource.type, id: resource.id },
    };
    const rules = this.#deps.logMask ?? [];
    // Unmasked, absent members drop out of the JSON line by themselves. Masked, only the members
    // the input has: a hash rule would otherwise log the hash of an absent one.
    if (rules.length === 0) return clipped(shown);
    const present = { subject: definedMembers(shown.subject), action: definedMembers(shown.action), resource: definedMembers(shown.resource) };
    // Clipped once masked: a hash is of the whole value, as in the record.
    return clipped(applyMask({ input: present }, rules).input as LoggedInput);
  }
}

/**
 * Longest string the decision line shows of an input field. /v1/decide bounds its fields, but
 * AuthZEN's ids, types and names are as long as a body allows, and a batch writes one line per
 * item: the record keeps the whole value, the line a prefix and how much it left out.
 */
const MAX_LOGGED_FIELD_CHARS = 256;

const tooLong = (value: unknown) => typeof value === 'string' && value.length > MAX_LOGGED_FIELD_CHARS;

/** `input` itself, on every decision whose fields all fit (nearly all): only a long one is copied. */
function clipped(input: LoggedInput): LoggedInput {
  const { subject, action, resource } = input;
  const anyTooLong =
    tooLong(subject?.iss) ||
    tooLong(subject?.sub) ||
    tooLong(subject?.client_id) ||
    tooLong(subject?.type) ||
    tooLong(subject?.id) ||
    tooLong(action?.name) ||
    tooLong(resource?.type) ||
    tooLong(resource?.id);
  if (!anyTooLong) return input;
  const clip = (value: unknown) => (tooLong(value) ? `${(value as string).slice(0, MAX_LOGGED_FIELD_CHARS)}…(${(value as string).length - MAX_LOGGED_FIELD_CHARS} more)` : value);
  return {
    ...(subject && { subject: { iss: clip(subject.iss), sub: clip(subject.sub), client_id: clip(subject.client_id), type: clip(subject.type), id: clip(subject.id) } }),
    ...(action && { action: { name: clip(action.name) } }),
    ...(resource && { resource: { type: clip(resource.type), id: clip(resource.id) } }),
  };
}

interface LoggedInput {
  subject?: { iss?: unknown; sub?: unknown; client_id?: unknown; type?: unknown; id?: unknown };
  action?: { name?: unknown };
  resource?: { type?: unknown; id?: unknown };
}

function definedMembers<T extends Record<string, unknown>>(members: T): Partial<T> {
  return Object.fromEntries(Object.entries(members).filter(([, value]) => value !== undefined)) as Partial<T>;
}

/**
 * What finds the request an error line is about: below logging.level info (a common choice in
 * production) the decision line that names them is not written, and the gateway knows its
 * X-Request-ID, not the decision id.
 */
function traceFields(trace: Trace): { decision_id: string; request_id: string; endpoint: string; caller: string | null } {
  return { decision_id: trace.decisionId, request_id: trace.requestId, endpoint: trace.endpoint, caller: trace.caller };
}

/**
 * What the record keeps of a token that failed verification: never the token, only its
 * fingerprint. A subject a PEP asserted beside it (AuthZEN) stays, as it does without a token:
 * a bad token must not hide whom the request was about.
 */
function rejectedSubject(failure: TokenFailure, asserted: Record<string, unknown> | undefined): Record<string, unknown> {
  return {
    ...asserted,
    authenticated: false,
    rejected_token: { code: failure.code, fingerprint: failure.fingerprint, claimed_iss: failure.claimedIssuer ?? null },
  };
}

/**
 * Every code Arbiter denies with itself rather than a policy: a token refused, an evaluation
 * failed, and the pipeline's own. /metrics always gives these a label of their own.
 */
export const ARBITER_DENIAL_CODES = [...TOKEN_FAILURE_CODES, ...EVALUATION_FAILURE_CODES, 'no_active_bundle', 'entrypoint_missing', 'internal_error', 'audit_unavailable'] as const;
type ArbiterDenialCode = (typeof ARBITER_DENIAL_CODES)[number];

function denial(bundle: Pick<PolicyBundle, 'name' | 'revision'> | null, code: ArbiterDenialCode, message: string, answered = true): Outcome {
  return {
    allow: false,
    reasons: [{ code, message }],
    obligations: [],
    policy: bundle ? { bundle: bundle.name, revision: bundle.revision } : null,
    data_version: null,
    result: null,
    answered,
  };
}
