const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/g;
const ESCAPES: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/**
 * `text` with its control characters escaped as in JSON (\n, \u001b). What a listing prints
 * comes from others (a decision's caller: an asserted subject, a resource id, an OPA-style deny
 * message as a reason code; a bundle's author or source: its revision; an admin token: its
 * subject): a newline in it would print a forged line, an escape sequence would drive the
 * operator's terminal.
 */
export function printable(text: string): string {
  return text.replace(CONTROL_CHARACTERS, (char) => ESCAPES[char] ?? `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
