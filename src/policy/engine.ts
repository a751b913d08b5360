import { loadPolicy, type LoadedPolicy } from '@open-policy-agent/opa-wasm';
import { errorMessage } from '../errors.ts';
import { isPolicyResult, policyResultSchema, type Obligation, type PolicyResult, type Reason } from './contract.ts';
import { isObject } from '../is-object.ts';
import { linkedMemoryLimits } from './wasm-check.ts';

/** Why an evaluation produced no usable result; each is a deny reason code (and a problem code where one is answered). */
export const EVALUATION_FAILURE_CODES = ['policy_error', 'policy_contract_violation', 'policy_resource_limit', 'policy_timeout'] as const;
export type EvaluationFailureCode = (typeof EVALUATION_FAILURE_CODES)[number];

export type Evaluation =
  | { ok: true; result: PolicyResult }
  | { ok: false; code: EvaluationFailureCode; message: string };

export interface EngineLimits {
  /** WebAssembly memory ceiling in 64 KiB pages; growth past it fails the evaluation, not the process. */
  maxMemoryPages: number;
}

const WASM_PAGE_BYTES = 64 * 1024;
const ENCODER = new TextEncoder();
const DECODER = new TextDecoder();

/** The parts of opa-wasm's LoadedPolicy the fast path uses (public fields, untyped in its declarations). */
interface OpaInternals {
  mem: WebAssembly.Memory;
  dataAddr: number;
  dataHeapPtr: number;
  entrypoints: Record<string, number>;
  wasmInstance: { exports: { opa_eval(reserved: number, entrypoint: number, data: number, input: number, inputLength: number, heap: number, format: number): number } };
}
/** WebAssembly memory a data document occupies once parsed, per byte of its JSON (bench/data-apply.ts). */
const PARSED_SIZE_FACTOR = 12;

const DEFAULT_ENGINE_LIMITS: EngineLimits = { maxMemoryPages: 16_384 /* 1 GiB */ };

/**
 * One WebAssembly instance of one bundle revision. Evaluation is synchronous, so a decision
 * that started on an instance finishes on it even if another revision is activated meanwhile.
 */
export class PolicyEngine {
  readonly #policy: LoadedPolicy;
  readonly entrypoints: ReadonlySet<string>;

  private constructor(policy: LoadedPolicy) {
    this.#policy = policy;
    this.entrypoints = new Set(Object.keys(policy.entrypoints as Record<string, number>));
  }

  static async load(wasm: Uint8Array, limits: EngineLimits = DEFAULT_ENGINE_LIMITS): Promise<PolicyEngine> {
    // opa-wasm wants a BufferSource backed by its own ArrayBuffer.
    const bytes = wasm.buffer.byteLength === wasm.byteLength ? wasm : wasm.slice();
    // The module's own memory limits, read from its import section, decide as much as ours:
    // linked with fewer pages than it declares, a policy with large static data cannot load.
    const memory = linkedMemoryLimits(bytes, limits.maxMemoryPages);
    const policy = await loadPolicy(bytes, { initial: memory.initial, maximum: memory.maximum ?? limits.maxMemoryPages });
    return new PolicyEngine(policy);
  }

  /**
   * Replaces the data document. Costs a copy of `data` into WASM memory: never per decision.
   * Memory is grown once up front to what the parsed document will need (measured at about
   * ten times its JSON size), instead of page by page from inside the parser.
   */
  setData(data: object): void {
    const json = new TextEncoder().encode(JSON.stringify(data));
    const memory = this.#policy.mem;
    const wantedPages = Math.ceil((json.byteLength * PARSED_SIZE_FACTOR) / WASM_PAGE_BYTES);
    const missing = wantedPages - memory.buffer.byteLength / WASM_PAGE_BYTES;
    if (missing > 0) {
      try {
        memory.grow(missing);
      } catch {
        // Past the memory ceiling: let the load itself fail (or fit) with the memory there is.
      }
    }
    this.#policy.setData(json.buffer);
  }

  /**
   * The ABI 1.2 single-call evaluation (opa_eval), as opa-wasm's evaluate does, minus its
   * per-call allocations: the input is encoded straight into WebAssembly memory, and the
   * result is found with a native scan and decoded by one reused decoder. Bundles must
   * speak ABI 1.2 or later (checked before activation), so opa_eval is always there.
   */
  #evaluateFast(entrypoint: string, inputJson: string): unknown {
    const policy = this.#policy as unknown as OpaInternals;
    const entrypointId = policy.entrypoints[entrypoint];
    if (entrypointId === undefined) throw new Error(`entrypoint ${entrypoint} is not valid in this instance`);
    const memory = policy.mem;
    const inputAddr = policy.dataHeapPtr;
    // UTF-8 needs at most 3 bytes per UTF-16 unit: make room once, then encode in place.
    const room = inputJson.length * 3;
    const missing = inputAddr + room - memory.buffer.byteLength;
    if (missing > 0) memory.grow(Math.ceil(missing / WASM_PAGE_BYTES));
    const { written } = ENCODER.encodeInto(inputJson, new Uint8Array(memory.buffer, inputAddr, room));
    const resultAddr = policy.wasmInstance.exports.opa_eval(0, entrypointId, policy.dataAddr, inputAddr, written, inputAddr + written, 0);
    const heap = new Uint8Array(memory.buffer);
    const end = heap.indexOf(0, resultAddr);
    return JSON.parse(DECODER.decode(heap.subarray(resultAddr, end)));
  }

  /** Evaluates a decision entrypoint on input given as JSON text and checks the output contract. Never throws. */
  evaluate(entrypoint: string, inputJson: string): Evaluation {
    const run = this.evaluateRaw(entrypoint, inputJson);
    return run.ok ? checkContract(run.resultSet) : run;
  }

  /** The raw result set, for entrypoints without the decision contract (e.g. search candidates). Never throws. */
  evaluateRaw(entrypoint: string, inputJson: string): RawEvaluation {
    try {
      return { ok: true, resultSet: this.#evaluateFast(entrypoint, inputJson) };
    } catch (error) {
      if (outOfMemory(error)) return { ok: false, code: 'policy_resource_limit', message: `policy exceeded its memory limit: ${errorMessage(error)}` };
      return { ok: false, code: 'policy_error', message: `policy evaluation failed: ${errorMessage(error)}` };
    }
  }
}

/**
 * Whether an error out of an instance (evaluating, or taking data) means its memory ceiling was
 * reached: WebAssembly memory growth past its maximum is a RangeError from the host, or the
 * policy's own allocator giving up.
 */
function outOfMemory(error: unknown): boolean {
  return error instanceof RangeError || /opa_malloc: failed/.test(errorMessage(error));
}

/** Why live data could not be set in an instance, as a deny reason: past the memory ceiling, policy_resource_limit. */
export function dataFailure(error: unknown, version: number): { code: EvaluationFailureCode; message: string } {
  return outOfMemory(error)
    ? { code: 'policy_resource_limit', message: `live data version ${version} does not fit within the policy memory limit: ${errorMessage(error)}` }
    : { code: 'policy_error', message: `live data version ${version} could not be applied: ${errorMessage(error)}` };
}

export type RawEvaluation =
  | { ok: true; resultSet: unknown }
  | { ok: false; code: EvaluationFailureCode; message: string };

/** The single value of a result set, or undefined when the rule was undefined. */
export function singleResult(resultSet: unknown): unknown {
  return Array.isArray(resultSet) && resultSet.length === 1 ? (resultSet[0] as { result?: unknown }).result : undefined;
}

/**
 * Reads allow, reasons and obligations out of any entrypoint value, without the contract:
 * the OPA data API records (and replays) whatever its rules return, read this way.
 */
export function lenientDecision(run: RawEvaluation): { allow: boolean; reasons: Reason[]; obligations: Obligation[] } {
  if (!run.ok) return { allow: false, reasons: [{ code: run.code, message: run.message }], obligations: [] };
  const value = singleResult(run.resultSet);
  const result = isObject(value) ? value : {};
  return {
    // `allow := true` answers the boolean itself; a decision document answers {allow, ...}.
    allow: value === true || result.allow === true,
    reasons: Array.isArray(result.reasons) ? result.reasons.map(asReason) : [],
    obligations: Array.isArray(result.obligations) ? (result.obligations as Obligation[]) : [],
  };
}

/**
 * A reason as the decision log indexes it ({code, ...}). OPA policies often give reasons
 * as plain strings: the string is the code. Anything else is kept whole under `value`, so
 * the record stays valid (an invalid one would deny with audit_unavailable) and loses nothing.
 */
function asReason(reason: unknown): Reason {
  if (typeof reason === 'string' && reason !== '') return { code: reason };
  if (isObject(reason) && typeof reason.code === 'string' && reason.code !== '') return reason as Reason;
  return { code: 'unrecognised_reason', value: reason };
}

/** Checks an entrypoint's result set against the decision contract. */
export function checkContract(resultSet: unknown): Evaluation {
  if (!Array.isArray(resultSet) || resultSet.length !== 1) {
    return {
      ok: false,
      code: 'policy_contract_violation',
      message: 'entrypoint produced no result (is the decision rule undefined for this input? give it a default)',
    };
  }
  const value = singleResult(resultSet);
  if (isPolicyResult(value)) return { ok: true, result: value };
  const parsed = policyResultSchema.safeParse(value);
  if (!parsed.success) {
    const first = parsed.error.issues[0]!;
    const at = first.path.length > 0 ? first.path.join('.') : 'result';
    return { ok: false, code: 'policy_contract_violation', message: `entrypoint result is not {allow, reasons, obligations?}: ${at}: ${first.message}` };
  }
  return { ok: true, result: parsed.data };
}

