/**
 * C0 and C1 controls, and the characters that reorder or break a line without being controls:
 * bidirectional marks, embeddings, overrides and isolates (U+061C, U+200E-U+200F, U+202A-U+202E,
 * U+2066-U+2069: "Trojan Source", a value that shows as another one) and the line and paragraph
 * separators U+2028-U+2029.
 */
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;
const ESCAPES: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/**
 * `text` with its control characters escaped as in JSON (\n, \u001b), bidirectional controls and
 * line separators too (\u202e, \u2028). What a listing prints comes from others (a decision's
 * caller: an asserted subject, a resource id, an OPA-style deny message as a reason code; a
 * bundle's author or source: its revision; an admin token: its subject): a newline in it would
 * print a forged line, an escape sequence would drive the operator's terminal, a right-to-left
 * override would show it as another value than it is.
 */
export function printable(text: string): string {
  return text.replace(CONTROL_CHARACTERS, (char) => ESCAPES[char] ?? `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
