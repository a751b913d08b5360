import { describe, expect, it } from 'vitest';
import { JsonPatchError, applyJsonPatch } from '../src/data/json-patch.ts';
import { parseJsonPointer } from '../src/data/json-pointer.ts';
import { jsonByteSize } from '../src/data/json-value.ts';
import type { JsonValue } from '../src/data/json-value.ts';

const limits = { maxDepth: 32, depthOffset: 0 };

function apply(document: JsonValue, patch: unknown): JsonValue {
  return applyJsonPatch(document, patch, limits);
}

function failure(document: JsonValue, patch: unknown): JsonPatchError {
  try {
    apply(document, patch);
  } catch (error) {
    expect(error).toBeInstanceOf(JsonPatchError);
    return error as JsonPatchError;
  }
  throw new Error('the patch was expected to fail');
}

describe('RFC 6901 pointers', () => {
  it('decodes ~1 and ~0 in the right order', () => {
    expect(parseJsonPointer('')).toEqual([]);
    expect(parseJsonPointer('/')).toEqual(['']);
    expect(parseJsonPointer('/a~1b/m~0n/~01')).toEqual(['a/b', 'm~n', '~1']);
  });

  it('rejects pointers without a leading slash and bad escapes', () => {
    expect(() => parseJsonPointer('foo')).toThrow(TypeError);
    expect(() => parseJsonPointer('/a~2')).toThrow(TypeError);
    expect(() => parseJsonPointer('/a~')).toThrow(TypeError);
  });
});

describe('RFC 6902 appendix A examples', () => {
  it('A.1 adds an object member', () => {
    expect(apply({ foo: 'bar' }, [{ op: 'add', path: '/baz', value: 'qux' }])).toEqual({ baz: 'qux', foo: 'bar' });
  });

  it('A.2 adds an array element', () => {
    expect(apply({ foo: ['bar', 'baz'] }, [{ op: 'add', path: '/foo/1', value: 'qux' }])).toEqual({ foo: ['bar', 'qux', 'baz'] });
  });

  it('A.3 removes an object member', () => {
    expect(apply({ baz: 'qux', foo: 'bar' }, [{ op: 'remove', path: '/baz' }])).toEqual({ foo: 'bar' });
  });

  it('A.4 removes an array element', () => {
    expect(apply({ foo: ['bar', 'qux', 'baz'] }, [{ op: 'remove', path: '/foo/1' }])).toEqual({ foo: ['bar', 'baz'] });
  });

  it('A.5 replaces a value, keeping member order', () => {
    const result = apply({ baz: 'qux', foo: 'bar' }, [{ op: 'replace', path: '/baz', value: 'boo' }]);
    expect(result).toEqual({ baz: 'boo', foo: 'bar' });
    expect(Object.keys(result as object)).toEqual(['baz', 'foo']);
  });

  it('A.6 moves a value', () => {
    const document = { foo: { bar: 'baz', waldo: 'fred' }, qux: { corge: 'grault' } };
    expect(apply(document, [{ op: 'move', from: '/foo/waldo', path: '/qux/thud' }])).toEqual({
      foo: { bar: 'baz' },
      qux: { corge: 'grault', thud: 'fred' },
    });
  });

  it('A.7 moves an array element', () => {
    const document = { foo: ['all', 'grass', 'cows', 'eat'] };
    expect(apply(document, [{ op: 'move', from: '/foo/1', path: '/foo/3' }])).toEqual({ foo: ['all', 'cows', 'eat', 'grass'] });
  });

  it('A.8 passes a test', () => {
    const document = { baz: 'qux', foo: ['a', 2, 'c'] };
    const patch = [
      { op: 'test', path: '/baz', value: 'qux' },
      { op: 'test', path: '/foo/1', value: 2 },
    ];
    expect(apply(document, patch)).toBe(document);
  });

  it('A.9 fails a test', () => {
    const error = failure({ baz: 'qux' }, [{ op: 'test', path: '/baz', value: 'bar' }]);
    expect(error.code).toBe('json_patch_test_failed');
    expect(error.opIndex).toBe(0);
  });

  it('A.10 adds a nested member object', () => {
    expect(apply({ foo: 'bar' }, [{ op: 'add', path: '/child', value: { grandchild: {} } }])).toEqual({
      foo: 'bar',
      child: { grandchild: {} },
    });
  });

  it('A.11 ignores unrecognized members of an operation', () => {
    expect(apply({ foo: 'bar' }, [{ op: 'add', path: '/baz', value: 'qux', xyz: 123 }])).toEqual({ foo: 'bar', baz: 'qux' });
  });

  it('A.12 fails to add to a nonexistent target', () => {
    const error = failure({ foo: 'bar' }, [{ op: 'add', path: '/baz/bat', value: 'qux' }]);
    expect(error.code).toBe('json_patch_path_not_found');
    expect(error.message).toContain('op 0');
  });

  it('A.14 unescapes ~01 as ~1', () => {
    const document = { '/': 9, '~1': 10 };
    expect(apply(document, [{ op: 'test', path: '/~01', value: 10 }])).toBe(document);
  });

  it('A.15 does not equate a string and a number', () => {
    expect(failure({ '/': 9, '~1': 10 }, [{ op: 'test', path: '/~01', value: '10' }]).code).toBe('json_patch_test_failed');
  });

  it('A.16 adds an array value with -', () => {
    expect(apply({ foo: ['bar'] }, [{ op: 'add', path: '/foo/-', value: ['abc', 'def'] }])).toEqual({ foo: ['bar', ['abc', 'def']] });
  });
});

describe('applyJsonPatch', () => {
  it('refuses an empty object key, by add, copy or move, as every other live data write does', () => {
    for (const operation of [{ op: 'add', path: '/', value: 1 }, { op: 'copy', from: '/a', path: '/' }, { op: 'move', from: '/a', path: '/' }]) {
      expect(failure({ a: 1 }, [operation]).code, operation.op).toBe('json_patch_invalid');
    }
    // In an array, "" is not an index either.
    expect(failure({ list: [] }, [{ op: 'add', path: '/list/', value: 1 }]).code).toBe('json_patch_path_not_found');
  });

  it('copies a value', () => {
    expect(apply({ a: { b: [1] } }, [{ op: 'copy', from: '/a/b', path: '/c' }])).toEqual({ a: { b: [1] }, c: [1] });
  });

  it('replaces and adds at the whole-document pointer', () => {
    expect(apply({ a: 1 }, [{ op: 'replace', path: '', value: [1] }])).toEqual([1]);
    expect(apply({ a: 1 }, [{ op: 'add', path: '', value: 'x' }])).toBe('x');
  });

  it('compares objects regardless of member order and arrays by order', () => {
    const document = { o: { a: 1, b: [1, 2] } };
    expect(apply(document, [{ op: 'test', path: '/o', value: { b: [1, 2], a: 1 } }])).toBe(document);
    expect(failure(document, [{ op: 'test', path: '/o/b', value: [2, 1] }]).code).toBe('json_patch_test_failed');
  });

  it('never mutates the input and shares untouched subtrees', () => {
    const untouched = Object.freeze({ deep: Object.freeze([1, 2]) });
    const document = Object.freeze({ keep: untouched, change: Object.freeze({ x: 1 }) });
    const result = apply(document, [{ op: 'add', path: '/change/y', value: 2 }]) as Record<string, unknown>;
    expect(document).toEqual({ keep: { deep: [1, 2] }, change: { x: 1 } });
    expect(result.keep).toBe(untouched);
    expect(Object.isFrozen(result.change)).toBe(true);
  });

  it('applies a patch of many operations in time linear in its size, not in operations times the document', () => {
    // A feed adding each subject by its own operation: 10,000 of them are 400 kB, a fraction of
    // data.max_body_bytes. Copying the whole object or array once per operation took 17 s here
    // (40,000: over 8 minutes) of the main thread, every decision waiting.
    const count = 10_000;
    const started = performance.now();
    const members = apply({}, Array.from({ length: count }, (_, i) => ({ op: 'add', path: `/user:${i}`, value: { grants: [] } }))) as Record<string, unknown>;
    const items = apply({ list: [] }, Array.from({ length: count }, (_, i) => ({ op: 'add', path: '/list/-', value: i }))) as { list: number[] };
    expect(performance.now() - started).toBeLessThan(2000);
    expect(Object.keys(members)).toHaveLength(count);
    expect(members['user:9999']).toEqual({ grants: [] });
    expect(items.list).toHaveLength(count);
    expect(items.list[9999]).toBe(9999);
  });

  it('moves a large value back and forth in time linear in the patch, not in moves times the value', () => {
    // Each move checks the depth the value reaches at its new place: measured by walking the
    // whole value every time, 10,000 moves (a 380 kB body) of a list of 60,000 took 10 s.
    const document = Object.freeze({ a: Object.freeze(Array.from({ length: 60_000 }, (_, i) => i)) });
    const moves = Array.from({ length: 10_000 }, (_, i) => (i % 2 === 0 ? { op: 'move', from: '/a', path: '/b' } : { op: 'move', from: '/b', path: '/a' }));
    const started = performance.now();
    const result = apply(document, moves) as { a: unknown };
    expect(performance.now() - started).toBeLessThan(1500);
    expect(result.a).toBe(document.a);
    const deeper = apply(document, [...moves, { op: 'add', path: '/c', value: {} }, { op: 'move', from: '/a', path: '/c/d' }]) as { c: { d: unknown } };
    expect(deeper.c.d).toBe(document.a);
    // The depth limit still holds for a value moved deeper.
    const nested = { a: { b: { c: 1 } }, x: { y: {} } };
    expect(applyJsonPatch(nested, [{ op: 'move', from: '/a', path: '/x/y/z' }], { maxDepth: 5, depthOffset: 0 })).toEqual({ x: { y: { z: { b: { c: 1 } } } } });
    expect(() => applyJsonPatch(nested, [{ op: 'move', from: '/a', path: '/x/y/z' }], { maxDepth: 4, depthOffset: 0 })).toThrow(expect.objectContaining({ code: 'data_too_deep' }));
    // Also for one grown deeper by the patch after an earlier move measured it.
    const grown = [
      { op: 'move', from: '/a', path: '/b' },
      { op: 'move', from: '/b', path: '/a' },
      { op: 'add', path: '/a/b/d', value: { e: 1 } },
      { op: 'move', from: '/a', path: '/x/y/z' },
    ];
    expect(() => applyJsonPatch(nested, grown, { maxDepth: 5, depthOffset: 0 })).toThrow(expect.objectContaining({ code: 'data_too_deep', opIndex: 3 }));
  });

  it('keeps a value copied within a patch apart from its original, however either changes after', () => {
    const document = Object.freeze({ a: Object.freeze({ b: Object.freeze({ n: 1 }) }) });
    const result = apply(document, [
      { op: 'add', path: '/a/b/m', value: 1 },
      { op: 'copy', from: '/a', path: '/c' },
      { op: 'add', path: '/a/b/o', value: 1 },
      { op: 'remove', path: '/c/b/n' },
      { op: 'move', from: '/a/b', path: '/d' },
      { op: 'add', path: '/d/p', value: 1 },
    ]);
    expect(result).toEqual({ a: {}, c: { b: { m: 1 } }, d: { n: 1, m: 1, o: 1, p: 1 } });
    expect(document).toEqual({ a: { b: { n: 1 } } });
    const frozen = (value: unknown): boolean => value === null || typeof value !== 'object' || (Object.isFrozen(value) && Object.values(value).every(frozen));
    expect(frozen(result)).toBe(true);
  });

  it('is all or nothing: a failing later op yields no result', () => {
    const document = { a: 1 };
    const error = failure(document, [
      { op: 'add', path: '/b', value: 2 },
      { op: 'remove', path: '/missing' },
    ]);
    expect(error.code).toBe('json_patch_path_not_found');
    expect(error.opIndex).toBe(1);
    expect(document).toEqual({ a: 1 });
  });

  it('names the failing op and reason for malformed operations', () => {
    expect(failure({}, { op: 'add' }).code).toBe('json_patch_invalid');
    const unknownOp = failure({}, [{ op: 'add', path: '/a', value: 1 }, { op: 'frobnicate', path: '/a' }]);
    expect([unknownOp.code, unknownOp.opIndex]).toEqual(['json_patch_invalid', 1]);
    const missingValue = failure({}, [{ op: 'add', path: '/a' }]);
    expect(missingValue.code).toBe('json_patch_invalid');
    expect(missingValue.message).toMatch(/op 0: value/);
    const badPointer = failure({}, [{ op: 'add', path: 'a', value: 1 }]);
    expect(badPointer.code).toBe('json_patch_invalid');
    expect(badPointer.message).toMatch(/op 0: path: "a" is not a JSON pointer/);
    expect(failure({}, [{ op: 'copy', from: '/~x', path: '/a' }]).message).toMatch(/from:/);
  });

  it('rejects array indexes that are out of range, have leading zeros or are -', () => {
    const document = { list: ['a', 'b'] };
    expect(failure(document, [{ op: 'add', path: '/list/3', value: 'x' }]).code).toBe('json_patch_path_not_found');
    expect(failure(document, [{ op: 'replace', path: '/list/2', value: 'x' }]).code).toBe('json_patch_path_not_found');
    expect(failure(document, [{ op: 'remove', path: '/list/01' }]).code).toBe('json_patch_path_not_found');
    expect(failure(document, [{ op: 'remove', path: '/list/-' }]).code).toBe('json_patch_path_not_found');
    expect(apply(document, [{ op: 'add', path: '/list/2', value: 'c' }])).toEqual({ list: ['a', 'b', 'c'] });
  });

  it('fails replace, remove, move and test on a missing location', () => {
    expect(failure({}, [{ op: 'replace', path: '/a', value: 1 }]).code).toBe('json_patch_path_not_found');
    expect(failure({}, [{ op: 'move', from: '/a', path: '/b' }]).code).toBe('json_patch_path_not_found');
    expect(failure({}, [{ op: 'test', path: '/a', value: null }]).code).toBe('json_patch_path_not_found');
  });

  it('refuses to move a value into its own child and to remove the whole document', () => {
    expect(failure({ a: { b: 1 } }, [{ op: 'move', from: '/a', path: '/a/c' }]).code).toBe('json_patch_invalid');
    expect(failure({ a: 1 }, [{ op: 'remove', path: '' }]).code).toBe('json_patch_invalid');
  });

  it('does not resolve inherited members such as __proto__ or constructor', () => {
    expect(failure({}, [{ op: 'test', path: '/constructor', value: {} }]).code).toBe('json_patch_path_not_found');
    const result = apply({}, [{ op: 'add', path: '/__proto__', value: { polluted: true } }]) as Record<string, unknown>;
    expect(Object.getPrototypeOf(result)).toBe(Object.prototype);
    expect(Object.hasOwn(result, '__proto__')).toBe(true);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('rejects values that are not JSON and values that nest too deep', () => {
    expect(() => apply({}, [{ op: 'add', path: '/a', value: Number.NaN }])).toThrow(expect.objectContaining({ code: 'data_invalid' }));
    expect(() => apply({}, [{ op: 'add', path: '/a', value: { '': 1 } }])).toThrow(expect.objectContaining({ code: 'data_invalid' }));
    const shallow = { maxDepth: 2, depthOffset: 1 };
    expect(applyJsonPatch({}, [{ op: 'add', path: '/a', value: 1 }], shallow)).toEqual({ a: 1 });
    expect(() => applyJsonPatch({}, [{ op: 'add', path: '/a', value: { b: 1 } }], shallow)).toThrow(
      expect.objectContaining({ code: 'data_too_deep' }),
    );
    expect(() => applyJsonPatch({ a: { b: 1 } }, [{ op: 'copy', from: '/a', path: '/c' }], { maxDepth: 2, depthOffset: 0 })).not.toThrow();
    expect(() => applyJsonPatch({ a: { b: 1 }, c: {} }, [{ op: 'copy', from: '/a', path: '/c/d' }], { maxDepth: 2, depthOffset: 0 })).toThrow(
      expect.objectContaining({ code: 'data_too_deep' }),
    );
  });
});

describe('added bytes limit', () => {
  const budget = (maxAddedBytes: number) => ({ ...limits, maxAddedBytes });

  it('counts what add, replace and copy add, and not what test or move carry', () => {
    const document = { s: 'x'.repeat(10), n: 1 }; // "xxxxxxxxxx" is 12 bytes
    const copies = [{ op: 'copy', from: '/s', path: '/a' }, { op: 'copy', from: '/s', path: '/b' }];
    const free = [{ op: 'test', path: '/n', value: 1 }, { op: 'move', from: '/s', path: '/moved' }, { op: 'test', path: '/a', value: 'x'.repeat(10) }];
    expect(applyJsonPatch(document, [...copies, ...free], budget(24))).toMatchObject({ a: 'x'.repeat(10), moved: 'x'.repeat(10) });
    const over = [...copies, { op: 'add', path: '/c', value: 'y' }];
    expect(() => applyJsonPatch(document, over, budget(24))).toThrow(expect.objectContaining({ code: 'data_too_large', opIndex: 2 }));
    const replaced = [{ op: 'replace', path: '/n', value: 'x'.repeat(30) }];
    expect(() => applyJsonPatch(document, replaced, budget(24))).toThrow(expect.objectContaining({ code: 'data_too_large', opIndex: 0 }));
  });

  it('refuses copies that double a shared subtree long before its serialization is built', () => {
    // Each op copies the array into itself: 1 KB doubles 20 times, 1 GB once serialized.
    const doublings = Array.from({ length: 20 }, () => ({ op: 'copy', from: '/a', path: '/a/-' }));
    const started = performance.now();
    expect(() => applyJsonPatch({ a: ['x'.repeat(1000)] }, doublings, budget(1024 * 1024))).toThrow(
      expect.objectContaining({ code: 'data_too_large', opIndex: 10 }),
    );
    expect(performance.now() - started).toBeLessThan(500);
  });
});

describe('jsonByteSize', () => {
  it('is the UTF-8 size of JSON.stringify for values without escapes', () => {
    const values: JsonValue[] = [null, true, false, 0, -1.5, 1e21, '', 'héllo ✓ 😀', [], {}, [1, [2, {}]], { a: 1, 'ключ': ['x', null], b: { c: false } }];
    for (const value of values) expect(jsonByteSize(value), JSON.stringify(value)).toBe(Buffer.byteLength(JSON.stringify(value)));
  });

  it('never counts more than the real size, and stops once past the limit', () => {
    expect(jsonByteSize('a"b\\n')).toBeLessThanOrEqual(Buffer.byteLength(JSON.stringify('a"b\\n')));
    const leaf = ['x'.repeat(100)];
    let shared: JsonValue = leaf;
    for (let i = 0; i < 60; i++) shared = [shared, shared];
    const measured = jsonByteSize(shared, 10_000);
    expect(measured).toBeGreaterThan(10_000);
    expect(measured).toBeLessThan(20_000);
  });
});
