import type { Logger } from 'pino';
import { v7 as uuidv7 } from 'uuid';
import type { z } from 'zod';
import type { Obligation, PolicyResult, Reason } from '../policy/contract.ts';
import type { PolicyBundle } from '../policy/bundle.ts';
import { checkContract, singleResult } from '../policy/engine.ts';
import type { PolicyEvaluation, PolicyEvaluator } from '../policy/evaluation/evaluator.ts';
import { isObject as isRecord } from '../policy/overlay.ts';
import type { BundleRegistry } from '../policy/registry.ts';
import { subjectFromToken, unauthenticatedSubject, type PolicySubject } from '../tokens/subject.ts';
import type { DocumentStatus } from '../data/documents.ts';
import type { RevokedTokenClaims } from '../data/revocation-schema.ts';
import type { RevocationMatch } from '../data/revocations.ts';
import type { IssuerRegistry } from '../tokens/trusted-issuers.ts';
import type { VerificationCache } from '../tokens/verification-cache.ts';
import { verifyAccessToken, type TokenFailureCode } from '../tokens/verify.ts';

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
  /** false when no bundle could answer: the HTTP layer turns that into 503. */
  answered: boolean;
  latency_us: number;
}

export interface InputEvaluationRequest {
  endpoint: string;
  requestId: string;
  bundle: string;
  /** Entrypoint below the bundle, e.g. "decision". */
  rule: string;
  input: Record<string, unknown>;
}

export type InputEvaluation =
  | { decision_id: string; outcome: 'evaluated'; result: unknown }
  | { decision_id: string; outcome: 'not_found'; message: string }
  | { decision_id: string; outcome: 'error'; code: string; message: string };

export interface PipelineDeps {
  issuers: IssuerRegistry;
  bundles: BundleRegistry;
  evaluator: PolicyEvaluator;
  defaultBundle: string;
  maxTokenBytes: number;
  logger: Logger;
  verificationCache?: VerificationCache;
  /** Checked on every decision, cached verification or not. */
  revocations?: { check(token: RevokedTokenClaims, nowS: number): RevocationMatch };
  /** Freshness of live data documents: `input.data_status`. */
  dataStatus?: (nowMs: number) => Record<string, DocumentStatus>;
  /** Sees every finished decision and token failure (metrics). */
  observer?: DecisionObserver;
}

/** Called on the decision path: implementations must be cheap and must not throw. */
export interface DecisionObserver {
  decided(decision: Decision, endpoint: string): void;
  tokenRejected(reason: TokenFailureCode): void;
}

/**
 * The decision path: verify the token, build the policy input, evaluate, log.
 * Every failure on the way is a deny with a reason code; nothing here throws to the caller.
 */
export class DecisionPipeline {
  readonly #deps: PipelineDeps;

  constructor(deps: PipelineDeps) {
    this.#deps = deps;
  }

  async decide(request: DecisionRequest): Promise<Decision> {
    const started = process.hrtime.bigint();
    const decisionId = uuidv7();
    const nowMs = Date.now();
    const now = Math.floor(nowMs / 1000);
    const bundleName = request.bundle ?? this.#deps.defaultBundle;
    const bundle = this.#deps.bundles.get(bundleName);

    let subject: PolicySubject | undefined;
    let decision: Omit<Decision, 'decision_id' | 'latency_us'>;
    try {
      if (!bundle) {
        decision = denial(null, 'no_active_bundle', `no active bundle named ${bundleName}`, false);
      } else {
        const subjectOrDeny = await this.#subject(request, now);
        if ('code' in subjectOrDeny) {
          decision = denial(bundle, subjectOrDeny.code, subjectOrDeny.message);
        } else {
          subject = subjectOrDeny;
          decision = await this.#evaluate(bundle, request, subject, nowMs);
        }
      }
    } catch (error) {
      // Defence in depth: the steps above do not throw by contract, but if one does, deny.
      this.#deps.logger.error({ err: error, decision_id: decisionId }, 'decision path failed');
      decision = denial(bundle ?? null, 'internal_error', 'the decision could not be computed', bundle !== undefined);
    }

    const result: Decision = {
      decision_id: decisionId,
      ...decision,
      latency_us: Number(process.hrtime.bigint() - started) / 1000,
    };
    this.#deps.observer?.decided(result, request.endpoint);
    this.#logDecision(result, request, subject, nowMs);
    return result;
  }

  /**
   * Evaluates an entrypoint on caller-supplied input exactly as given (the OPA data API):
   * no token is verified and nothing is added, so only trusted callers may reach it.
   * Returns the raw entrypoint value (undefined when the rule is undefined) and logs it like any decision.
   */
  async evaluateInput(request: InputEvaluationRequest): Promise<InputEvaluation> {
    const started = process.hrtime.bigint();
    const decisionId = uuidv7();
    const nowMs = Date.now();
    const bundle = this.#deps.bundles.get(request.bundle);
    const entrypoint = `${request.bundle}/${request.rule}`;
    if (!bundle || !bundle.entrypoints.has(entrypoint)) {
      return { decision_id: decisionId, outcome: 'not_found', message: bundle ? `bundle ${bundle.name} has no entrypoint ${entrypoint}` : `no active bundle named ${request.bundle}` };
    }
    const run = await this.#deps.evaluator.evaluate(bundle, entrypoint, JSON.stringify(request.input));
    const result = run.ok ? singleResult(run.resultSet) : undefined;
    const outcome = isRecord(result) ? result : {};
    const denied = run.ok ? [] : [{ code: run.code, message: run.message }];
    const decision: Decision = {
      decision_id: decisionId,
      allow: outcome.allow === true,
      reasons: Array.isArray(outcome.reasons) ? (outcome.reasons as Reason[]) : denied,
      obligations: [],
      policy: { bundle: bundle.name, revision: bundle.revision },
      data_version: run.dataVersion,
      result: null,
      answered: run.ok,
      latency_us: Number(process.hrtime.bigint() - started) / 1000,
    };
    this.#deps.observer?.decided(decision, request.endpoint);
    const input = request.input;
    const subject = isRecord(input.subject) ? input.subject : {};
    this.#logDecision(
      decision,
      {
        endpoint: request.endpoint,
        requestId: request.requestId,
        rule: request.rule,
        action: { name: isRecord(input.action) && typeof input.action.name === 'string' ? input.action.name : '' },
        resource: isRecord(input.resource) ? (input.resource as DecisionRequest['resource']) : { type: '' },
      },
      { ...unauthenticatedSubject(), ...subject, claims: isRecord(subject.claims) ? subject.claims : {} } as PolicySubject,
      nowMs,
    );
    if (!run.ok) return { decision_id: decisionId, outcome: 'error', code: run.code, message: run.message };
    return { decision_id: decisionId, outcome: 'evaluated', result };
  }

  /** Runs an entrypoint without the decision contract or a log line (e.g. AuthZEN search candidates). */
  evaluateRaw(bundle: PolicyBundle, entrypoint: string, input: string): Promise<PolicyEvaluation> {
    return this.#deps.evaluator.evaluate(bundle, entrypoint, input);
  }

  async #subject(request: DecisionRequest, now: number): Promise<PolicySubject | { code: string; message: string }> {
    const asserted = request.assertedSubject ?? {};
    if (request.token === undefined) return { ...unauthenticatedSubject(), ...asserted };
    const verification = await verifyAccessToken(request.token, this.#deps.issuers, {
      maxTokenBytes: this.#deps.maxTokenBytes,
      cache: this.#deps.verificationCache,
      now,
    });
    if (!verification.ok) {
      this.#deps.observer?.tokenRejected(verification.code);
      return { code: verification.code, message: verification.message };
    }
    const subject = { ...asserted, ...subjectFromToken(verification, now) };
    subject.revoked = this.#revocationOf(subject, now);
    return subject;
  }

  #revocationOf(subject: PolicySubject, now: number): PolicySubject['revoked'] {
    const match = this.#deps.revocations?.check(revocationClaims(subject), now);
    if (!match?.revoked) return { revoked: false };
    return { revoked: true, reason: match.reason, revocation_id: match.revocation_id };
  }

  async #evaluate(bundle: PolicyBundle, request: DecisionRequest, subject: PolicySubject, nowMs: number): Promise<Omit<Decision, 'decision_id' | 'latency_us'>> {
    const input = {
      ...request.extraInput,
      subject,
      action: request.action,
      resource: request.resource,
      context: { ...request.context, now: Math.floor(nowMs / 1000), request_id: request.requestId },
      data_status: this.#deps.dataStatus?.(nowMs) ?? {},
    };
    const entrypoint = `${bundle.name}/${request.rule}`;
    if (!bundle.entrypoints.has(entrypoint)) {
      return denial(bundle, 'entrypoint_missing', `bundle ${bundle.name} has no entrypoint ${entrypoint}`);
    }
    const run = await this.#deps.evaluator.evaluate(bundle, entrypoint, JSON.stringify(input));
    const evaluation = run.ok ? checkContract(run.resultSet) : run;
    if (!evaluation.ok) return { ...denial(bundle, evaluation.code, evaluation.message), data_version: run.dataVersion };
    const { result } = evaluation;
    const extra = request.outputSchema?.safeParse(result);
    if (extra && !extra.success) {
      const first = extra.error.issues[0]!;
      return { ...denial(bundle, 'policy_contract_violation', `${entrypoint} result: ${first.path.join('.') || 'result'}: ${first.message}`), data_version: run.dataVersion };
    }
    return {
      allow: result.allow,
      reasons: result.reasons,
      obligations: result.obligations ?? [],
      policy: { bundle: bundle.name, revision: bundle.revision },
      data_version: run.dataVersion,
      result,
      answered: true,
    };
  }

  #logDecision(decision: Decision, request: DecisionRequest, subject: PolicySubject | undefined, nowMs: number): void {
    this.#deps.logger.info(
      {
        decision_id: decision.decision_id,
        decided_at: new Date(nowMs).toISOString(),
        endpoint: request.endpoint,
        request_id: request.requestId,
        caller: request.caller ?? null,
        bundle: decision.policy?.bundle,
        revision: decision.policy?.revision,
        subject: subject && { iss: subject.iss, sub: subject.sub, client_id: subject.client_id },
        claims_present: subject ? Object.keys(subject.claims) : [],
        action: request.action.name,
        resource: { type: request.resource.type, id: request.resource.id },
        allow: decision.allow,
        reasons: decision.reasons.map((r) => r.code),
        latency_us: Math.round(decision.latency_us),
      },
      'decision',
    );
  }
}

function revocationClaims(subject: PolicySubject): RevokedTokenClaims {
  const sid = subject.claims.sid;
  return {
    iss: subject.iss!,
    sub: subject.sub,
    jti: subject.token?.jti,
    sid: typeof sid === 'string' ? sid : undefined,
    client_id: subject.client_id,
    iat: subject.token?.iat,
  };
}

function denial(bundle: PolicyBundle | null, code: string, message: string, answered = true): Omit<Decision, 'decision_id' | 'latency_us'> {
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
