import { escapePointerToken } from './json-value.ts';

/**
 * RFC 6901 JSON Pointer: `""` is the whole document, otherwise `/`-prefixed tokens
 * where `~1` stands for `/` and `~0` for `~`. Returns the decoded tokens, or throws
 * `TypeError` with the reason (callers attach their own error code and context).
 */
export function parseJsonPointer(pointer: string): string[] {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) throw new TypeError(`"${pointer}" is not a JSON pointer: it must be empty or start with "/"`);
  return pointer
    .slice(1)
    .split('/')
    .map((token) => {
      if (/~(?![01])/.test(token)) throw new TypeError(`"${pointer}" is not a JSON pointer: "~" must be followed by 0 or 1`);
      // ~1 first: "~01" must decode to "~1", not "/".
      return token.replaceAll('~1', '/').replaceAll('~0', '~');
    });
}

/**
 * The RFC 6901 JSON pointer to `tokens` (`""` for none): each `/`-prefixed, `~` and `/` escaped,
 * so a key holding them still points at itself. Tokens may be a schema issue's path segments
 * (numbers for array indexes), hence PropertyKey.
 */
export function formatJsonPointer(tokens: readonly PropertyKey[]): string {
  return tokens.map((token) => `/${escapePointerToken(String(token))}`).join('');
}

/**
 * The array index a token names (RFC 6901 section 4: digits without leading zeros),
 * or undefined when the token is not an index.
 */
export function parseArrayIndex(token: string): number | undefined {
  return /^(0|[1-9][0-9]*)$/.test(token) ? Number(token) : undefined;
}
