import { describe, expect, it } from 'vitest';
import { jsonDefect, MAY_OVERFLOW } from '../src/data/json-value.ts';

/** Whether JSON.parse reads a non-finite number out of the text: what the pre-check must never miss. */
const overflows = (text: string) => jsonDefect(JSON.parse(text), { maxDepth: Infinity, checkText: false }) !== undefined;

describe('MAY_OVERFLOW, the pre-check before walking a parsed body for numbers past a double', () => {
  it.each([
    '1e400',
    '-1E+999',
    '{"amount": 1e400}',
    '{"amount":-2.5e309}',
    '[1,\n  7e999]',
    `{"ids": [${'9'.repeat(400)}]}`,
    `[-${'2'.repeat(309)}.5]`,
    // A two-digit exponent overflows too, on a long enough integer part (210 + 99 digits > 308).
    `{"amount": 1${'0'.repeat(250)}e99}`,
    `[${'9'.repeat(210)}.5E+99]`,
    `{"amount": -${'1'.repeat(301)}e9}`,
  ])('flags %s, which overflows', (text) => {
    expect(overflows(text)).toBe(true);
    expect(MAY_OVERFLOW.test(text)).toBe(true);
  });

  it.each([
    '{"jti": "e22154be-a9d3-415a-8a4b-0ce2a492a752"}',
    '{"fingerprint": "3Q2K4ge123Lri4BSmbZxkHb9jPek9tL", "kid": "key-e12345"}',
    `{"token": "${'9'.repeat(400)}"}`,
    '{"iat": 1795363353, "small": 1e-5, "big": 1e99}',
  ])('lets %s skip the walk: its only e123 or digit run is inside a string, or small', (text) => {
    expect(overflows(text)).toBe(false);
    expect(MAY_OVERFLOW.test(text)).toBe(false);
  });
});
