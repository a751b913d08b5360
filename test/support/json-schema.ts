/**
 * A JSON Schema 2020-12 validator for the keywords the OpenAPI document uses, as a generated
 * client reads them. The document is checked against what the server answers (test/http-contract),
 * so it is validated as JSON Schema, not through the zod schemas it was generated from: a
 * conversion that loses or changes a constraint must show. A keyword it does not know fails the
 * validation rather than be ignored, so a schema it cannot judge never passes unseen.
 */

// The document and the values are plain JSON read by path; typing each level would only repeat the spec.
type Json = Record<string, any>;

/** Keywords that constrain nothing (annotations), or that OpenAPI tools read as such. */
const ANNOTATIONS = new Set(['description', 'title', 'default', 'examples', 'format', 'deprecated', 'readOnly', 'writeOnly', '$comment', 'id']);

/** Where the value breaks the schema, as `<pointer>: <what>`; empty when it fits. */
export function validate(schema: unknown, value: unknown, root: Json, pointer = ''): string[] {
  if (schema === true || (typeof schema === 'object' && schema !== null && Object.keys(schema).length === 0)) return [];
  if (schema === false) return [`${pointer || '/'}: no value is allowed here`];
  const s = schema as Json;
  const errors: string[] = [];
  const at = pointer || '/';
  for (const keyword of Object.keys(s)) {
    if (!KNOWN.has(keyword) && !ANNOTATIONS.has(keyword)) errors.push(`${at}: the validator does not know the keyword ${keyword}`);
  }
  if (typeof s.$ref === 'string') errors.push(...validate(resolve(root, s.$ref), value, root, pointer));
  if (s.type !== undefined) {
    const types: string[] = Array.isArray(s.type) ? s.type : [s.type];
    if (!types.some((type) => hasType(value, type))) return [...errors, `${at}: expected ${types.join(' or ')}, got ${typeName(value)}`];
  }
  if (s.const !== undefined && !deepEqual(value, s.const)) errors.push(`${at}: expected ${JSON.stringify(s.const)}`);
  if (s.enum !== undefined && !(s.enum as unknown[]).some((option) => deepEqual(value, option))) errors.push(`${at}: ${JSON.stringify(value)} is not one of ${JSON.stringify(s.enum)}`);
  if (typeof value === 'string') {
    const length = [...value].length;
    if (s.minLength !== undefined && length < s.minLength) errors.push(`${at}: shorter than ${s.minLength}`);
    if (s.maxLength !== undefined && length > s.maxLength) errors.push(`${at}: longer than ${s.maxLength}`);
    if (s.pattern !== undefined && !new RegExp(s.pattern, 'u').test(value)) errors.push(`${at}: does not match ${s.pattern}`);
  }
  if (typeof value === 'number') {
    if (s.minimum !== undefined && value < s.minimum) errors.push(`${at}: below ${s.minimum}`);
    if (s.maximum !== undefined && value > s.maximum) errors.push(`${at}: above ${s.maximum}`);
    if (s.exclusiveMinimum !== undefined && value <= s.exclusiveMinimum) errors.push(`${at}: not above ${s.exclusiveMinimum}`);
    if (s.exclusiveMaximum !== undefined && value >= s.exclusiveMaximum) errors.push(`${at}: not below ${s.exclusiveMaximum}`);
  }
  if (Array.isArray(value)) {
    if (s.minItems !== undefined && value.length < s.minItems) errors.push(`${at}: fewer than ${s.minItems} items`);
    if (s.maxItems !== undefined && value.length > s.maxItems) errors.push(`${at}: more than ${s.maxItems} items`);
    if (s.items !== undefined) value.forEach((item, i) => errors.push(...validate(s.items, item, root, `${pointer}/${i}`)));
  }
  if (isObject(value)) {
    const properties: Json = s.properties ?? {};
    for (const name of s.required ?? []) if (!Object.hasOwn(value, name)) errors.push(`${pointer}/${name}: required`);
    for (const [name, member] of Object.entries(value)) {
      const where = `${pointer}/${name.replaceAll('~', '~0').replaceAll('/', '~1')}`;
      if (s.propertyNames !== undefined) errors.push(...validate(s.propertyNames, name, root, where));
      if (Object.hasOwn(properties, name)) errors.push(...validate(properties[name], member, root, where));
      else if (s.additionalProperties !== undefined) errors.push(...validate(s.additionalProperties, member, root, where));
    }
  }
  for (const part of s.allOf ?? []) errors.push(...validate(part, value, root, pointer));
  if (s.anyOf !== undefined) {
    const branches = (s.anyOf as unknown[]).map((branch) => validate(branch, value, root, pointer));
    if (!branches.some((branch) => branch.length === 0)) errors.push(`${at}: fits no anyOf branch (${branches.map((b) => b[0]).join(' | ')})`);
  }
  if (s.oneOf !== undefined) {
    const branches = (s.oneOf as unknown[]).map((branch) => validate(branch, value, root, pointer));
    const fitting = branches.filter((branch) => branch.length === 0).length;
    if (fitting !== 1) errors.push(`${at}: fits ${fitting} oneOf branches, not exactly one (${branches.map((b) => b[0]).join(' | ')})`);
  }
  return errors;
}

const KNOWN = new Set([
  '$ref', 'type', 'const', 'enum', 'minLength', 'maxLength', 'pattern', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum',
  'minItems', 'maxItems', 'items', 'properties', 'required', 'additionalProperties', 'propertyNames', 'allOf', 'anyOf', 'oneOf',
]);

/** A local `#/...` reference of the document. */
export function resolve(root: Json, ref: string): unknown {
  if (!ref.startsWith('#/')) throw new Error(`not a local reference: ${ref}`);
  return ref
    .slice(2)
    .split('/')
    .reduce<unknown>((node, key) => (node as Json | undefined)?.[key.replaceAll('~1', '/').replaceAll('~0', '~')], root);
}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function hasType(value: unknown, type: string): boolean {
  switch (type) {
    case 'object':
      return isObject(value);
    case 'array':
      return Array.isArray(value);
    case 'string':
      return typeof value === 'string';
    case 'number':
      return typeof value === 'number' && Number.isFinite(value);
    case 'integer':
      return typeof value === 'number' && Number.isInteger(value);
    case 'boolean':
      return typeof value === 'boolean';
    case 'null':
      return value === null;
    default:
      throw new Error(`unknown JSON Schema type ${type}`);
  }
}

function typeName(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null || Array.isArray(a) !== Array.isArray(b)) return false;
  const [ka, kb] = [Object.keys(a), Object.keys(b)];
  return ka.length === kb.length && ka.every((key) => Object.hasOwn(b, key) && deepEqual((a as Json)[key], (b as Json)[key]));
}
