/**
 * Checks a bundle's policy.wasm against the OPA wasm ABI before Arbiter serves it:
 * it compiles, imports only what the host provides, exports what
 * @open-policy-agent/opa-wasm calls, speaks ABI 1.2 or later, has every entrypoint the
 * manifest declares, and needs no builtin the host cannot run.
 *
 * Reading the entrypoint and builtin tables means running the module (its start
 * function, `entrypoints()`, `builtins()`) in a throwaway instance with its own memory
 * and imports that refuse every call. A module that never returns from them would hang
 * the thread: Arbiter runs this check on an evaluation worker (PolicyEvaluator.checkModule),
 * which is replaced past engine.load_deadline_ms (wasm_timeout).
 *
 * Check codes (BundleRejectedError.check):
 *   wasm_invalid               not a WebAssembly module that compiles
 *   wasm_import                an import outside the ABI (`env.memory`, `env.opa_abort`,
 *                              `env.opa_println`, `env.opa_builtin0`..`4`), or no `env.memory` import
 *   wasm_export_missing        a required ABI function or global is not exported, or has the wrong kind
 *   wasm_abi                   ABI version is not 1.x with x >= 2, or the ABI tables are malformed
 *   wasm_instantiate           instantiating or calling into the module failed
 *   wasm_entrypoint_missing    an entrypoint of the manifest is not compiled into the module
 *   wasm_unsupported_builtin   the module needs a host builtin Arbiter does not implement
 *   wasm_timeout               running the module's table functions took past the load deadline
 *                              (set where the check runs: PolicyEvaluator.checkModule)
 *   wasm_check_interrupted     the thread running the check stopped twice before it answered
 *                              (set where the check runs): says nothing about the module
 */
import { z } from 'zod';
import { BundleRejectedError } from '../errors.ts';
import type { Manifest } from './manifest.ts';

/**
 * The builtins @open-policy-agent/opa-wasm implements in JavaScript
 * (src/builtins/*.js of the installed version). Everything else a policy calls is
 * either compiled into the module or unavailable.
 */
export const OPA_WASM_JS_BUILTINS: ReadonlySet<string> = new Set([
  'json.is_valid',
  'regex.split',
  'sprintf',
  'yaml.is_valid',
  'yaml.marshal',
  'yaml.unmarshal',
]);

const ALLOWED_IMPORTS: Readonly<Record<string, string>> = {
  memory: 'memory',
  opa_abort: 'function',
  opa_println: 'function',
  opa_builtin0: 'function',
  opa_builtin1: 'function',
  opa_builtin2: 'function',
  opa_builtin3: 'function',
  opa_builtin4: 'function',
};

const REQUIRED_FUNCTIONS = [
  'opa_eval',
  'opa_malloc',
  'opa_heap_ptr_get',
  'opa_heap_ptr_set',
  'opa_json_parse',
  'opa_json_dump',
  'opa_value_dump',
  'entrypoints',
  'builtins',
  'eval',
  'opa_eval_ctx_new',
  'opa_eval_ctx_set_input',
  'opa_eval_ctx_set_data',
  'opa_eval_ctx_set_entrypoint',
  'opa_eval_ctx_get_result',
] as const;

const ABI_GLOBALS = ['opa_wasm_abi_version', 'opa_wasm_abi_minor_version'] as const;

/** ABI 1.2 introduced the single-call `opa_eval` that opa-wasm's fast path relies on. */
const MIN_ABI_MINOR_VERSION = 2;

export interface PolicyWasmInfo {
  abiVersion: number;
  abiMinorVersion: number;
  /** Entrypoint name to the id `opa_eval` takes. */
  entrypoints: Record<string, number>;
  /** Host builtins the module calls (all of them supported). */
  builtins: string[];
}

/** Checks `bytes` as the wasm module of `manifest`. Throws BundleRejectedError. */
export function checkPolicyWasm(
  bytes: Uint8Array<ArrayBuffer>,
  manifest: Pick<Manifest, 'wasm'>,
  supportedBuiltins: ReadonlySet<string> = OPA_WASM_JS_BUILTINS,
): PolicyWasmInfo {
  const module = compile(bytes);
  checkImports(module);
  checkExports(module);
  const { exports, memory } = instantiate(module, linkedMemoryLimits(bytes));

  // Exported globals reach JS as WebAssembly.Global objects; the ABI numbers are their values.
  const abiVersion = (exports.opa_wasm_abi_version as { value: unknown }).value;
  const abiMinorVersion = (exports.opa_wasm_abi_minor_version as { value: unknown }).value;
  if (abiVersion !== 1 || typeof abiMinorVersion !== 'number' || abiMinorVersion < MIN_ABI_MINOR_VERSION) {
    throw new BundleRejectedError('wasm_abi', `policy.wasm speaks OPA wasm ABI ${String(abiVersion)}.${String(abiMinorVersion)}, Arbiter needs 1.${MIN_ABI_MINOR_VERSION} or later`);
  }

  const entrypoints = readTable(exports, memory, 'entrypoints');
  for (const { entrypoint } of manifest.wasm) {
    if (!Object.hasOwn(entrypoints, entrypoint)) {
      throw new BundleRejectedError('wasm_entrypoint_missing', `entrypoint ${JSON.stringify(entrypoint)} is declared in .manifest but not compiled into policy.wasm`);
    }
  }
  const builtins = Object.keys(readTable(exports, memory, 'builtins')).sort();
  const unsupported = builtins.filter((name) => !supportedBuiltins.has(name));
  if (unsupported.length > 0) {
    throw new BundleRejectedError('wasm_unsupported_builtin', `policy.wasm needs builtins Arbiter does not implement: ${unsupported.join(', ')}`);
  }
  return { abiVersion, abiMinorVersion, entrypoints, builtins };
}

function compile(bytes: Uint8Array<ArrayBuffer>): WebAssembly.Module {
  try {
    return new WebAssembly.Module(bytes);
  } catch (error) {
    throw new BundleRejectedError('wasm_invalid', `policy.wasm is not a valid WebAssembly module: ${(error as Error).message}`, { cause: error });
  }
}

function checkImports(module: WebAssembly.Module): void {
  const imports = WebAssembly.Module.imports(module);
  for (const { module: namespace, name, kind } of imports) {
    if (namespace !== 'env' || !Object.hasOwn(ALLOWED_IMPORTS, name) || ALLOWED_IMPORTS[name] !== kind) {
      throw new BundleRejectedError('wasm_import', `policy.wasm imports ${kind} ${namespace}.${name}, which the OPA wasm ABI does not provide`);
    }
  }
  if (!imports.some((i) => i.name === 'memory')) {
    throw new BundleRejectedError('wasm_import', 'policy.wasm does not import env.memory');
  }
}

function checkExports(module: WebAssembly.Module): void {
  const kinds = new Map(WebAssembly.Module.exports(module).map((e) => [e.name, e.kind]));
  const missing = [
    ...REQUIRED_FUNCTIONS.filter((name) => kinds.get(name) !== 'function'),
    ...ABI_GLOBALS.filter((name) => kinds.get(name) !== 'global'),
  ];
  if (missing.length > 0) {
    throw new BundleRejectedError('wasm_export_missing', `policy.wasm does not export ${missing.join(', ')}`);
  }
}

interface MemoryLimits {
  initial: number;
  maximum?: number;
}

/**
 * Limits of the `env.memory` import, read from the import section: the JS API does not
 * expose them, and the host memory must satisfy them to link. Only called on a module
 * that compiled, so the binary is well formed.
 */
function memoryImportLimits(bytes: Uint8Array): MemoryLimits {
  let offset = 8; // magic and version
  const byte = (): number => bytes[offset++] ?? 0;
  const u32 = (): number => {
    let result = 0;
    for (let shift = 0; ; shift += 7) {
      const b = byte();
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
    }
  };
  const skipName = (): string => {
    const length = u32();
    const name = Buffer.from(bytes.subarray(offset, offset + length)).toString('utf8');
    offset += length;
    return name;
  };
  const limits = (): MemoryLimits => {
    const flags = byte();
    if (flags !== 0 && flags !== 1) throw new BundleRejectedError('wasm_import', 'env.memory must be a non-shared 32-bit memory');
    const initial = u32();
    return flags === 1 ? { initial, maximum: u32() } : { initial };
  };

  while (offset < bytes.byteLength) {
    const id = byte();
    const size = u32();
    const end = offset + size;
    if (id === 2) {
      for (let count = u32(); count > 0; count--) {
        skipName();
        const name = skipName();
        const kind = byte();
        if (kind === 0x02 && name === 'memory') return limits();
        // Other import descriptors: function (type index), table (reftype, limits), global (valtype, mutability).
        if (kind === 0x00) u32();
        else if (kind === 0x01) {
          byte();
          limits();
        }
        else if (kind === 0x03) offset += 2;
        else limits();
      }
    }
    offset = end;
  }
  throw new BundleRejectedError('wasm_import', 'policy.wasm does not import env.memory');
}

/**
 * The fewest pages of memory PolicyEngine gives a module at load. opa's declared minimum can be
 * a page short of its data segments when they end just past a page boundary (opa 1.x): linked
 * with the minimum, such a module failed here although the engine runs it.
 */
const ENGINE_INITIAL_MEMORY_PAGES = 5;

/**
 * The memory the engine links a module with, and this check too, so that it accepts exactly
 * what the engine runs: at least the module's declared minimum (a policy with large static
 * data declares more than five pages) and at most its declared maximum and `maxPages`.
 */
export function linkedMemoryLimits(wasm: Uint8Array, maxPages = Infinity): { initial: number; maximum: number | undefined } {
  const declared = memoryImportLimits(wasm);
  const maximum = Math.min(declared.maximum ?? Infinity, maxPages);
  const initial = Math.min(Math.max(declared.initial, ENGINE_INITIAL_MEMORY_PAGES), maximum);
  return { initial, maximum: Number.isFinite(maximum) ? maximum : undefined };
}

function instantiate(module: WebAssembly.Module, limits: { initial: number; maximum: number | undefined }): { exports: WebAssembly.Exports; memory: WebAssembly.Memory } {
  const refuse = (): never => {
    throw new Error('host calls are refused while checking policy.wasm');
  };
  try {
    const memory = new WebAssembly.Memory(limits.maximum === undefined ? { initial: limits.initial } : { initial: limits.initial, maximum: limits.maximum });
    const env = { memory, opa_abort: refuse, opa_println: refuse, opa_builtin0: refuse, opa_builtin1: refuse, opa_builtin2: refuse, opa_builtin3: refuse, opa_builtin4: refuse };
    return { exports: new WebAssembly.Instance(module, { env }).exports, memory };
  } catch (error) {
    throw new BundleRejectedError('wasm_instantiate', `policy.wasm cannot be instantiated: ${(error as Error).message}`, { cause: error });
  }
}

const abiTableSchema = z.record(z.string(), z.int().nonnegative());

/** Reads the JSON object an ABI table function (`entrypoints`, `builtins`) returns: name to id. */
function readTable(exports: WebAssembly.Exports, memory: WebAssembly.Memory, table: 'entrypoints' | 'builtins'): Record<string, number> {
  let address: unknown;
  try {
    address = (exports.opa_json_dump as (value: unknown) => unknown)((exports[table] as () => unknown)());
  } catch (error) {
    throw new BundleRejectedError('wasm_instantiate', `calling ${table}() in policy.wasm failed: ${(error as Error).message}`, { cause: error });
  }
  const heap = new Uint8Array(memory.buffer);
  const end = typeof address === 'number' && address > 0 ? heap.indexOf(0, address) : -1;
  const malformed = () => new BundleRejectedError('wasm_abi', `${table}() of policy.wasm does not yield a JSON name-to-id map`);
  if (end === -1) throw malformed();
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(heap.subarray(address as number, end)));
  } catch {
    throw malformed();
  }
  const parsed = abiTableSchema.safeParse(json);
  if (!parsed.success) throw malformed();
  return parsed.data;
}
