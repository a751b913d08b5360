/**
 * The canonical form OPA hashes structured bundle files in (`data.json`, `data.yaml`,
 * `.manifest`) when it signs or verifies a bundle, so a signature does not depend on
 * whitespace or key order. It mirrors OPA's `bundle.walk` (v1/bundle/hash.go) over a
 * value read by `util.Unmarshal`:
 *   - the file is read as JSON when it is valid JSON, else as YAML 1.2 (`yes` stays a string);
 *   - objects: `{`, keys sorted by UTF-8 bytes (Go's sort.Strings), `key:value`, `,` between, `}`;
 *   - arrays: `[`, values, `,` between, `]`;
 *   - JSON numbers keep their literal text (Go decodes with UseNumber: `1.0` stays `1.0`);
 *   - strings as Go's encoding/json writes them without HTML escaping: like JSON.stringify,
 *     except U+2028 and U+2029 are escaped and ill-formed UTF-16 becomes U+FFFD.
 */
import { parse as parseYaml } from 'yaml';

/** A JSON number kept as the literal the document spelled it with. */
class NumberLiteral {
  readonly text: string;

  constructor(text: string) {
    this.text = text;
  }
}

type Structured = null | boolean | string | NumberLiteral | Structured[] | { [key: string]: Structured };

/**
 * Canonical text of a structured file; throws SyntaxError when it is neither JSON nor YAML, or
 * when it is not JSON and `yaml` is false.
 */
export function opaCanonicalJson(text: string, { yaml = true }: { yaml?: boolean } = {}): string {
  return encode(parseStructured(text, yaml));
}

function parseStructured(text: string, yaml: boolean): Structured {
  try {
    // The reviver's third argument (JSON.parse source text access) exposes number literals.
    return JSON.parse(text, (_key: string, value: unknown, context?: { source?: string }) =>
      typeof value === 'number' ? new NumberLiteral(context?.source ?? JSON.stringify(value)) : value,
    ) as Structured;
  } catch (error) {
    if (!yaml) throw error;
    // logLevel 'error': errors still throw, but a warning (an unresolved tag) is not handed to
    // process.emitWarning, whose stderr block would quote a pushed file beside the JSON log.
    return fromYaml(parseYaml(text, { logLevel: 'error' }) as unknown);
  }
}

/** YAML values reach OPA through a JSON round trip, so numbers take Go's (ES-compatible) float formatting. */
function fromYaml(value: unknown): Structured {
  if (value === null || value === undefined) return null;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new SyntaxError('YAML value is not representable in JSON');
    return new NumberLiteral(JSON.stringify(value));
  }
  if (typeof value === 'boolean' || typeof value === 'string') return value;
  if (Array.isArray(value)) return value.map(fromYaml);
  if (typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, fromYaml(item)]));
  }
  throw new SyntaxError(`YAML value of type ${typeof value} is not representable in JSON`);
}

function encode(value: Structured): string {
  if (value === null || typeof value === 'boolean') return JSON.stringify(value);
  if (typeof value === 'string') return encodeString(value);
  if (value instanceof NumberLiteral) return value.text;
  if (Array.isArray(value)) return `[${value.map(encode).join(',')}]`;
  const keys = Object.keys(value).sort(compareUtf8);
  return `{${keys.map((key) => `${encodeString(key)}:${encode(value[key] ?? null)}`).join(',')}}`;
}

function encodeString(value: string): string {
  return JSON.stringify(value.toWellFormed()).replace(/[\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16)}`);
}

function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a.toWellFormed()), Buffer.from(b.toWellFormed()));
}
