/**
 * Generators of hostile bundle parts, shared by the unit tests of the checks and the HTTP
 * tests of the bundle API: raw tar entries written byte by byte (so nothing a tar library
 * refuses to write is out of reach), a tiny WebAssembly assembler, and a patcher that puts
 * code in front of a function of a real (OPA-built) module.
 */
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';

/** One raw ustar entry: a header block written byte by byte, then the body padded to 512. */
export function entry(name: string, options: { type?: string; body?: string | Uint8Array; linkname?: string; size?: number } = {}): Buffer {
  const body = typeof options.body === 'string' ? Buffer.from(options.body) : Buffer.from(options.body ?? []);
  const header = Buffer.alloc(512);
  header.write(name, 0, 100, 'utf8');
  header.write('0000644\0', 100);
  header.write('0000000\0', 108);
  header.write('0000000\0', 116);
  header.write(`${(options.size ?? body.byteLength).toString(8).padStart(11, '0')}\0`, 124);
  header.write('00000000000\0', 136);
  header.write(options.type ?? '0', 156);
  if (options.linkname) header.write(options.linkname, 157, 100);
  header.write('ustar\u000000', 257, 'latin1');
  header.fill(0x20, 148, 156);
  const checksum = header.reduce((sum, byte) => sum + byte, 0);
  header.write(`${checksum.toString(8).padStart(6, '0')}\0 `, 148);
  const padded = Buffer.alloc(Math.ceil(body.byteLength / 512) * 512);
  body.copy(padded);
  return Buffer.concat([header, padded]);
}

/** A pax extended header carrying `records` for the entry that follows it. */
export function pax(records: Record<string, string>): Buffer {
  const body = Object.entries(records)
    .map(([key, value]) => {
      const text = ` ${key}=${value}\n`;
      // The length counts its own digits.
      let length = Buffer.byteLength(text);
      while (String(length).length + Buffer.byteLength(text) !== length) length = String(length).length + Buffer.byteLength(text);
      return `${length}${text}`;
    })
    .join('');
  return entry('PaxHeaders/x', { type: 'x', body });
}

export function tarGz(...entries: Buffer[]): Buffer {
  return gzipSync(Buffer.concat([...entries, Buffer.alloc(1024)]));
}

// --- A tiny WebAssembly assembler: just enough sections to shape imports, exports and ABI globals.

export const REQUIRED_FUNCTIONS = [
  'opa_eval', 'opa_malloc', 'opa_heap_ptr_get', 'opa_heap_ptr_set', 'opa_json_parse', 'opa_json_dump', 'opa_value_dump',
  'entrypoints', 'builtins', 'eval', 'opa_eval_ctx_new', 'opa_eval_ctx_set_input', 'opa_eval_ctx_set_data',
  'opa_eval_ctx_set_entrypoint', 'opa_eval_ctx_get_result',
];

export interface ModuleShape {
  /** Function imports as [module, name]; all take one i32. */
  functionImports?: [string, string][];
  /** `env.memory` limits, or null to define the memory inside the module instead. */
  memory?: { min: number; max?: number } | null;
  functions?: string[];
  globals?: Record<string, number>;
  /** A start function that traps. */
  trappingStart?: boolean;
}

const u32 = (n: number): number[] => {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
};
const s32 = (n: number): number[] => {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) return [...out, byte];
    out.push(byte | 0x80);
  }
};
const name = (text: string): number[] => [...u32(Buffer.byteLength(text)), ...Buffer.from(text)];
const vector = (items: number[][]): number[] => [...u32(items.length), ...items.flat()];
const section = (id: number, body: number[]): number[] => [id, ...u32(body.length), ...body];
const limits = ({ min, max }: { min: number; max?: number }): number[] => (max === undefined ? [0x00, ...u32(min)] : [0x01, ...u32(min), ...u32(max)]);

export function assemble(shape: ModuleShape): Uint8Array<ArrayBuffer> {
  const { functionImports = [], memory = { min: 2 }, functions = REQUIRED_FUNCTIONS, globals = { opa_wasm_abi_version: 1, opa_wasm_abi_minor_version: 3 } } = shape;
  // Types: 0 = () -> i32 for exports, 1 = (i32) -> () for imports, 2 = () -> () for start.
  const types = vector([[0x60, 0, 1, 0x7f], [0x60, 1, 0x7f, 0], [0x60, 0, 0]]);
  const imports = [
    ...functionImports.map(([module, field]) => [...name(module), ...name(field), 0x00, 1]),
    ...(memory ? [[...name('env'), ...name('memory'), 0x02, ...limits(memory)]] : []),
  ];
  const defined = [...functions.map(() => 0), ...(shape.trappingStart ? [2] : [])];
  const bodies = [...functions.map(() => [0x00, 0x41, 0x00, 0x0b]), ...(shape.trappingStart ? [[0x00, 0x00, 0x0b]] : [])];
  const globalNames = Object.keys(globals);
  const exports = [
    ...functions.map((fn, i) => [...name(fn), 0x00, ...u32(functionImports.length + i)]),
    ...globalNames.map((g, i) => [...name(g), 0x03, ...u32(i)]),
  ];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, types),
    ...section(2, vector(imports)),
    ...section(3, vector(defined.map(u32))),
    ...(memory ? [] : section(5, vector([limits({ min: 2 })]))),
    ...section(6, vector(globalNames.map((g) => [0x7f, 0x00, 0x41, ...s32(globals[g]!), 0x0b]))),
    ...section(7, vector(exports)),
    ...(shape.trappingStart ? section(8, u32(functionImports.length + functions.length)) : []),
    ...section(10, vector(bodies.map((body) => [...u32(body.length), ...body]))),
  ]);
}


/** Packs bundle files (as readBundleArchive returns them) back into a .tar.gz, names with OPA's leading slash. */
export function packFiles(files: ReadonlyMap<string, Uint8Array>): Buffer {
  return tarGz(...[...files].map(([path, bytes]) => entry(`/${path}`, { body: bytes })));
}

// --- Patching a real module: code run before a function's own body.

/** Reads an unsigned LEB128 at `offset`: its value and the offset after it. */
function readU32(bytes: Uint8Array, offset: number): [value: number, next: number] {
  let value = 0;
  let shift = 0;
  for (;;) {
    const byte = bytes[offset++]!;
    value |= (byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return [value >>> 0, offset];
    shift += 7;
  }
}

function readName(bytes: Uint8Array, offset: number): [text: string, next: number] {
  const [length, start] = readU32(bytes, offset);
  return [Buffer.from(bytes.subarray(start, start + length)).toString('utf8'), start + length];
}

function skipLimits(bytes: Uint8Array, offset: number): number {
  const flags = bytes[offset]!;
  let next = readU32(bytes, offset + 1)[1];
  if (flags & 1) next = readU32(bytes, next)[1];
  return next;
}

/** An infinite loop: `loop br 0 end`. */
export const LOOP_FOREVER = [0x03, 0x40, 0x0c, 0x00, 0x0b];

/** Loops forever when the function's first i32 parameter exceeds `limit`: `if (p0 > limit) loop br 0 end end`. */
export const loopWhenFirstParamOver = (limit: number): number[] => [0x20, 0x00, 0x41, ...s32(limit), 0x4b, 0x04, 0x40, ...LOOP_FOREVER, 0x0b];

/**
 * Puts `instructions` (stack-neutral) in front of the body of the function exported as
 * `exportName`, e.g. an OPA-built module whose opa_json_parse never returns: what no
 * `opa build` produces, but a hand-made bundle can.
 */
export function prefixExportedFunction(wasm: Uint8Array, exportName: string, instructions: number[]): Uint8Array<ArrayBuffer> {
  const sections: { id: number; header: number; start: number; end: number }[] = [];
  for (let offset = 8; offset < wasm.length; ) {
    const id = wasm[offset]!;
    const [size, start] = readU32(wasm, offset + 1);
    sections.push({ id, header: offset, start, end: start + size });
    offset = start + size;
  }
  const body = (id: number) => sections.find((s) => s.id === id) ?? assert.fail(`no section ${id}`);

  let importedFunctions = 0;
  const imports = sections.find((s) => s.id === 2);
  if (imports) {
    let [count, offset] = readU32(wasm, imports.start);
    for (; count > 0; count--) {
      offset = readName(wasm, readName(wasm, offset)[1])[1];
      const kind = wasm[offset++]!;
      if (kind === 0) {
        importedFunctions += 1;
        offset = readU32(wasm, offset)[1];
      } else if (kind === 1) offset = skipLimits(wasm, offset + 1);
      else if (kind === 2) offset = skipLimits(wasm, offset);
      else offset += 2;
    }
  }

  let functionIndex: number | undefined;
  {
    let [count, offset] = readU32(wasm, body(7).start);
    for (; count > 0 && functionIndex === undefined; count--) {
      const [name, next] = readName(wasm, offset);
      const kind = wasm[next]!;
      const [index, after] = readU32(wasm, next + 1);
      if (name === exportName && kind === 0) functionIndex = index;
      offset = after;
    }
  }
  if (functionIndex === undefined) assert.fail(`no exported function ${exportName}`);

  const code = body(10);
  const [count, firstBody] = readU32(wasm, code.start);
  let offset = firstBody;
  const bodies: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const [size, start] = readU32(wasm, offset);
    let function_ = wasm.subarray(start, start + size);
    if (i === functionIndex - importedFunctions) {
      // Locals come first: count, then (n, type) pairs; the instructions go right after them.
      let [groups, at] = readU32(function_, 0);
      for (; groups > 0; groups--) at = readU32(function_, at)[1] + 1;
      function_ = new Uint8Array([...function_.subarray(0, at), ...instructions, ...function_.subarray(at)]);
    }
    bodies.push(new Uint8Array([...u32(function_.length), ...function_]));
    offset = start + size;
  }
  const codeBody = new Uint8Array([...u32(count), ...bodies.flatMap((b) => [...b])]);
  return new Uint8Array([...wasm.subarray(0, code.header), 10, ...u32(codeBody.length), ...codeBody, ...wasm.subarray(code.end)]);
}
