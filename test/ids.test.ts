import { describe, expect, it } from 'vitest';
import { uuidv7 } from '../src/ids.ts';

describe('uuidv7', () => {
  it('makes RFC 9562 version 7 ids that are unique and sort in creation order', () => {
    const ids = Array.from({ length: 50_000 }, () => uuidv7());
    for (const id of ids.slice(0, 100)) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(new Set(ids).size).toBe(ids.length);
    expect([...ids].sort()).toEqual(ids);
  });

  it('carries the creation time in its first 48 bits', () => {
    const before = Date.now();
    const id = uuidv7();
    const ms = parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
    // The counter may borrow a millisecond or two under bursts, never more than a few.
    expect(ms).toBeGreaterThanOrEqual(before);
    expect(ms).toBeLessThan(Date.now() + 50);
  });
});
