import type { z } from 'zod';
import { configSchema } from './schema.ts';

/**
 * Renders the configuration reference (docs/configuration.md) from the config schema itself,
 * so every key, type, default and description in the docs is the one the loader enforces.
 */

interface Row {
  key: string;
  type: string;
  default: string;
  description: string;
}

type Def = { type: string; [key: string]: unknown };
type Schema = z.ZodType & { _zod: { def: Def }; description?: string };

export function configReference(): string {
  const rows: Row[] = [];
  walk(configSchema as unknown as Schema, '', rows, undefined);
  const sections = new Map<string, Row[]>();
  for (const row of rows) {
    const section = row.key.split(/[.[]/)[0]!;
    sections.set(section, [...(sections.get(section) ?? []), row]);
  }
  const out = [
    '# Configuration reference',
    '',
    'Generated from `src/config/schema.ts` by `npm run docs:config`; a test fails when this file is stale.',
    'Set keys in the YAML file given by `--config` or `ARBITER_CONFIG`, or override one with',
    '`ARBITER_<SECTION>__<KEY>=<yaml value>` (double underscore between levels, e.g. `ARBITER_SERVER__PORT=9000`);',
    '`PORT` sets `server.port`. Relative paths are relative to the working directory.',
    '',
  ];
  for (const [section, sectionRows] of sections) {
    out.push(`## \`${section}\``, '', '| key | type | default | description |', '| --- | --- | --- | --- |');
    for (const row of sectionRows) out.push(`| \`${row.key}\` | ${row.type} | ${row.default} | ${row.description} |`);
    out.push('');
  }
  return out.join('\n');
}

function walk(schema: Schema, key: string, rows: Row[], inheritedDescription: string | undefined): void {
  const { inner, defaultValue, description } = unwrap(schema);
  const def = inner._zod.def;
  const text = description ?? inheritedDescription ?? '';
  if (def.type === 'object' && key !== '' && !hasShape(def)) return;
  if (def.type === 'object') {
    if (key !== '' && text) rows.push({ key, type: 'object', default: '', description: escape(text) });
    for (const [name, child] of Object.entries(def.shape as Record<string, Schema>)) walk(child, key ? `${key}.${name}` : name, rows, undefined);
    return;
  }
  if (def.type === 'array' && unwrap(def.element as Schema).inner._zod.def.type === 'object') {
    rows.push({ key, type: 'list of objects', default: formatDefault(defaultValue), description: escape(text) });
    walk(def.element as Schema, `${key}[]`, rows, undefined);
    return;
  }
  if (def.type === 'record' && unwrap(def.valueType as Schema).inner._zod.def.type === 'object') {
    rows.push({ key, type: 'map of objects', default: formatDefault(defaultValue), description: escape(text) });
    walk(def.valueType as Schema, `${key}.<name>`, rows, undefined);
    return;
  }
  rows.push({ key, type: typeName(inner), default: formatDefault(defaultValue), description: escape(text) });
}

function hasShape(def: Def): boolean {
  return typeof def.shape === 'object' && def.shape !== null;
}

/** Peels defaults, optionals and refinements off a schema, keeping the outermost description and default. */
function unwrap(schema: Schema): { inner: Schema; defaultValue: unknown; description: string | undefined } {
  let current = schema;
  let defaultValue: unknown;
  let description = schema.description;
  for (;;) {
    const def = current._zod.def;
    if ((def.type === 'default' || def.type === 'prefault') && defaultValue === undefined) {
      const value = def.defaultValue;
      defaultValue = typeof value === 'function' ? (value as () => unknown)() : value;
    }
    if (['default', 'prefault', 'optional', 'nullable', 'readonly'].includes(def.type)) {
      current = def.innerType as Schema;
    } else if (def.type === 'pipe') {
      current = def.in as Schema;
    } else {
      break;
    }
    description ??= current.description;
  }
  return { inner: current, defaultValue, description };
}

function typeName(schema: Schema): string {
  const def = schema._zod.def;
  switch (def.type) {
    case 'enum':
      return Object.values(def.entries as Record<string, string>).map((v) => `\`${v}\``).join(' \\| ');
    case 'array':
      return `list of ${typeName(unwrap(def.element as Schema).inner)}`;
    case 'record':
      return `map of ${typeName(unwrap(def.valueType as Schema).inner)}`;
    case 'number':
      return (def.checks as { _zod: { def: { check: string; format?: string } } }[] | undefined)?.some((c) => c._zod.def.format === 'safeint') ? 'integer' : 'number';
    default:
      return def.type;
  }
}

function formatDefault(value: unknown): string {
  if (value === undefined) return '';
  if (typeof value === 'object' && value !== null && Object.keys(value).length === 0 && !Array.isArray(value)) return '';
  return `\`${JSON.stringify(value)}\``;
}

function escape(text: string): string {
  return text.replaceAll('|', '\\|').replaceAll('\n', ' ');
}
