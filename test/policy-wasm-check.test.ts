import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BundleRejectedError } from '../src/errors.ts';
import { readBundleArchive } from '../src/policy/archive.ts';
import { PolicyEngine } from '../src/policy/engine.ts';
import { parseManifest, type Manifest } from '../src/policy/manifest.ts';
import { checkPolicyWasm, OPA_WASM_JS_BUILTINS } from '../src/policy/wasm-check.ts';
import { opaPath } from '../src/toolchain/opa.ts';
import { assemble, REQUIRED_FUNCTIONS } from './support/hostile-archives.ts';

const noEntrypoints: Pick<Manifest, 'wasm'> = { wasm: [] };

function rejection(run: () => unknown): BundleRejectedError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(BundleRejectedError);
    return error as BundleRejectedError;
  }
  throw new Error('expected a BundleRejectedError, nothing was thrown');
}

// --- Real bundles built by the pinned opa.

let dir: string;
let plain: { wasm: Uint8Array<ArrayBuffer>; manifest: Manifest };
let withSprintf: { wasm: Uint8Array<ArrayBuffer>; manifest: Manifest };
let withTime: { wasm: Uint8Array<ArrayBuffer>; manifest: Manifest };
let largeStatic: { wasm: Uint8Array<ArrayBuffer>; manifest: Manifest };
let pastFivePages: { wasm: Uint8Array<ArrayBuffer>; manifest: Manifest };

async function build(name: string, rego: string, entrypoints: string[]): Promise<{ wasm: Uint8Array<ArrayBuffer>; manifest: Manifest }> {
  const src = join(dir, name);
  mkdirSync(join(src, 'app'), { recursive: true });
  writeFileSync(join(src, 'app/policy.rego'), rego);
  writeFileSync(join(src, '.manifest'), '{"roots": ["app"]}');
  const out = join(dir, `${name}.tar.gz`);
  execFileSync(opaPath(), ['build', '-t', 'wasm', ...entrypoints.flatMap((e) => ['-e', e]), '-b', '.', '-o', out], { cwd: src, stdio: 'pipe' });
  const files = await readBundleArchive(readFileSync(out));
  return { wasm: files.get('policy.wasm')!, manifest: parseManifest(files) };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'arbiter-wasm-check-'));
  plain = await build('plain', 'package app\n\ndefault allow := false\n\nallow if input.user == "alice"\n\nroles := ["a", "b"]\n', ['app/allow', 'app/roles']);
  withSprintf = await build('sprintf', 'package app\n\nmsg := sprintf("hello %v", [input.user])\n', ['app/msg']);
  withTime = await build('time', 'package app\n\nnow := time.now_ns()\n\nok := json.is_valid(input.s)\n', ['app/now', 'app/ok']);
  // Static data (string constants, file names) that ends a few bytes past two pages: opa (the
  // pinned version) still declares a minimum of two for it, one page short.
  largeStatic = await build('large', `package app\n\nbanner := "${'x'.repeat(11_000)}"\n\nok := count(banner) > 0\n`, ['app/ok']);
  // Static data past the five pages the engine starts every module with: opa declares a larger minimum.
  pastFivePages = await build('past-five-pages', `package app\n\nbanner := "${'y'.repeat(400_000)}"\n\nok := count(banner) > 0\n`, ['app/ok']);
}, 60_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('checkPolicyWasm on wasm built by opa', () => {
  it('accepts it and reports the ABI, entrypoints and host builtins', () => {
    const info = checkPolicyWasm(plain.wasm, plain.manifest);
    expect(info.abiVersion).toBe(1);
    expect(info.abiMinorVersion).toBeGreaterThanOrEqual(2);
    expect(Object.keys(info.entrypoints).sort()).toEqual(['app/allow', 'app/roles']);
    expect(info.builtins).toEqual([]);
  });

  it('accepts builtins opa-wasm implements in JavaScript', () => {
    expect(checkPolicyWasm(withSprintf.wasm, withSprintf.manifest).builtins).toEqual(['sprintf']);
  });

  it('rejects builtins nobody implements, naming them', () => {
    const error = rejection(() => checkPolicyWasm(withTime.wasm, withTime.manifest));
    expect(error.check).toBe('wasm_unsupported_builtin');
    expect(error.message).toContain('time.now_ns');
    // json.is_valid is compiled into the module, so it never needs the host.
    expect(error.message).not.toContain('json.is_valid');
    expect(checkPolicyWasm(withTime.wasm, withTime.manifest, new Set([...OPA_WASM_JS_BUILTINS, 'time.now_ns'])).builtins).toEqual(['time.now_ns']);
  });

  it('accepts a module whose static data outgrows the memory it declares, as the engine that runs it does', async () => {
    // Just past a page boundary, opa's declared minimum is a page short of its data segments;
    // the engine gives every module five pages, so it runs. The default policy's static data
    // ends within a few hundred bytes of two pages (its file names count: built from a longer
    // path, it crossed), and the check refused it wasm_instantiate.
    expect(checkPolicyWasm(largeStatic.wasm, largeStatic.manifest).entrypoints).toHaveProperty('app/ok');
    const engine = await PolicyEngine.load(largeStatic.wasm);
    engine.setData({});
    expect(engine.evaluateRaw('app/ok', '{}')).toMatchObject({ ok: true, resultSet: [{ result: true }] });
  });

  it('loads and runs a module whose static data needs more memory than the engine starts others with', async () => {
    // Linked with five pages whatever the module declared, such a policy (a large constant, many
    // rules) passed the check and then failed every load: its decisions all denied policy_error.
    expect(checkPolicyWasm(pastFivePages.wasm, pastFivePages.manifest).entrypoints).toHaveProperty('app/ok');
    const engine = await PolicyEngine.load(pastFivePages.wasm);
    engine.setData({});
    expect(engine.evaluateRaw('app/ok', '{}')).toMatchObject({ ok: true, resultSet: [{ result: true }] });
  });

  it('rejects a manifest entrypoint the module does not have', () => {
    const manifest = { wasm: [...plain.manifest.wasm, { entrypoint: 'app/deny', module: '/policy.wasm' }] };
    const error = rejection(() => checkPolicyWasm(plain.wasm, manifest));
    expect(error.check).toBe('wasm_entrypoint_missing');
    expect(error.message).toContain('app/deny');
  });
});

describe('checkPolicyWasm on hand-assembled modules', () => {
  it('the assembler produces a module that passes every static check', () => {
    // Its ABI functions are stubs returning 0, so the first failure is reading the entrypoint table.
    expect(rejection(() => checkPolicyWasm(assemble({}), noEntrypoints)).check).toBe('wasm_abi');
    expect(rejection(() => checkPolicyWasm(assemble({}), noEntrypoints)).message).toContain('entrypoints()');
  });

  it.each([
    ['major version 2', { opa_wasm_abi_version: 2, opa_wasm_abi_minor_version: 3 }],
    ['major version 0', { opa_wasm_abi_version: 0, opa_wasm_abi_minor_version: 3 }],
    ['minor version 1', { opa_wasm_abi_version: 1, opa_wasm_abi_minor_version: 1 }],
  ])('rejects ABI %s', (_label, globals) => {
    const error = rejection(() => checkPolicyWasm(assemble({ globals }), noEntrypoints));
    expect(error.check).toBe('wasm_abi');
    expect(error.message).toContain('ABI');
  });

  it('rejects a module without the ABI version globals', () => {
    const error = rejection(() => checkPolicyWasm(assemble({ globals: { opa_wasm_abi_version: 1 } }), noEntrypoints));
    expect(error.check).toBe('wasm_export_missing');
    expect(error.message).toContain('opa_wasm_abi_minor_version');
  });

  it.each(['opa_eval', 'opa_malloc', 'entrypoints', 'builtins', 'opa_json_dump'])('rejects a module that does not export %s', (missing) => {
    const error = rejection(() => checkPolicyWasm(assemble({ functions: REQUIRED_FUNCTIONS.filter((f) => f !== missing) }), noEntrypoints));
    expect(error.check).toBe('wasm_export_missing');
    expect(error.message).toContain(missing);
  });

  it('rejects an ABI version exported as a function instead of a global', () => {
    const shape = { functions: [...REQUIRED_FUNCTIONS, 'opa_wasm_abi_version'], globals: { opa_wasm_abi_minor_version: 3 } };
    expect(rejection(() => checkPolicyWasm(assemble(shape), noEntrypoints)).check).toBe('wasm_export_missing');
  });

  it.each([
    ['env', 'fd_write'],
    ['wasi_snapshot_preview1', 'fd_write'],
    ['host', 'opa_abort'],
  ])('rejects an import of %s.%s', (module, field) => {
    const error = rejection(() => checkPolicyWasm(assemble({ functionImports: [['env', 'opa_abort'], [module, field]] }), noEntrypoints));
    expect(error.check).toBe('wasm_import');
    expect(error.message).toContain(`${module}.${field}`);
  });

  it('rejects a module that brings its own memory instead of importing env.memory', () => {
    expect(rejection(() => checkPolicyWasm(assemble({ memory: null }), noEntrypoints)).check).toBe('wasm_import');
  });

  it('links a memory import with larger limits than the default', () => {
    const shape = { functionImports: [['env', 'opa_abort'], ['env', 'opa_builtin0']] as [string, string][], memory: { min: 17, max: 20 } };
    // Past linking: the failure is the stub entrypoint table, not instantiation.
    expect(rejection(() => checkPolicyWasm(assemble(shape), noEntrypoints)).check).toBe('wasm_abi');
  });

  it('reports a start function that traps', () => {
    expect(rejection(() => checkPolicyWasm(assemble({ trappingStart: true }), noEntrypoints)).check).toBe('wasm_instantiate');
  });

  it.each([
    ['garbage', new Uint8Array(Buffer.from('this is not webassembly'))],
    ['empty', new Uint8Array(0)],
    ['a truncated module', assemble({}).slice(0, 40)],
  ])('rejects %s as wasm_invalid', (_label, bytes) => {
    expect(rejection(() => checkPolicyWasm(bytes, noEntrypoints)).check).toBe('wasm_invalid');
  });
});

describe('OPA_WASM_JS_BUILTINS', () => {
  it('is exactly what the installed @open-policy-agent/opa-wasm implements', () => {
    const require = createRequire(import.meta.url);
    const builtinsDir = join(require.resolve('@open-policy-agent/opa-wasm').replace(/index\.cjs$/, ''), 'builtins');
    expect(readdirSync(builtinsDir)).toContain('index.js');
    const implemented = Object.keys(require(join(builtinsDir, 'index.js')) as Record<string, unknown>).sort();
    expect([...OPA_WASM_JS_BUILTINS].sort()).toEqual(implemented);
  });
});
