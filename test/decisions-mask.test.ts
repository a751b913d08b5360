import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { canonicalJson } from '../src/decisions/canonical-json.ts';
import { applyMask, hashValue, maskRuleSchema } from '../src/decisions/mask.ts';
import { DecisionStore } from '../src/decisions/store.ts';
import { decision, tempDir } from './support/decisions.ts';

describe('canonicalJson', () => {
  it('sorts keys at every depth, drops undefined members and keeps array order', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: undefined, x: 'é' }], c: null } })).toBe(
      '{"a":{"c":null,"d":[3,{"x":"é","z":1}]},"b":1}',
    );
  });

  it('orders keys by UTF-16 code units, integer-like keys included, however often it sees them', () => {
    // Object.keys lists integer-like keys first, in numeric order: that order is not the canonical one.
    const value = { z: 1, é: 2, '10': 3, '9': 4, A: { '\u{1F600}': 5, '\uFFFF': 6 }, sorted: { a: 1, b: '\n"' } };
    const expected = '{"10":3,"9":4,"A":{"\u{1F600}":5,"\uFFFF":6},"sorted":{"a":1,"b":"\\n\\""},"z":1,"é":2}';
    expect(canonicalJson(value)).toBe(expected);
    expect(canonicalJson(value)).toBe(expected);
  });
});

describe('applyMask', () => {
  const record = {
    input: {
      context: { client_ip: '192.0.2.7', 'a/b': 'slash', 'm~n': 'tilde', hops: ['10.0.0.1', '10.0.0.2'] },
      subject: { sub: 'alice' },
    },
  };

  it('erases a member', () => {
    expect(applyMask(record, [{ pointer: '/input/context/client_ip', mode: 'erase' }]).input.context).not.toHaveProperty('client_ip');
  });

  it('replaces a value by sha256 of its canonical JSON', () => {
    const masked = applyMask(record, [
      { pointer: '/input/subject/sub', mode: 'hash' },
      { pointer: '/input/subject', mode: 'hash' },
    ]);
    const subHash = `sha256:${createHash('sha256').update('"alice"').digest('hex')}`;
    // Rules apply in order: the subject is hashed with its sub already hashed.
    expect(masked.input.subject).toBe(hashValue({ sub: subHash }));
    expect(hashValue('alice')).toBe(subHash);
  });

  it('follows RFC 6901 escapes and array indexes; an array element is nulled, not removed', () => {
    const masked = applyMask(record, [
      { pointer: '/input/context/a~1b', mode: 'erase' },
      { pointer: '/input/context/m~0n', mode: 'hash' },
      { pointer: '/input/context/hops/0', mode: 'erase' },
      { pointer: '/input/context/hops/1', mode: 'hash' },
    ]);
    expect(masked.input.context).toEqual({ client_ip: '192.0.2.7', 'm~n': hashValue('tilde'), hops: [null, hashValue('10.0.0.2')] });
  });

  it('leaves the argument untouched and ignores pointers that lead nowhere', () => {
    const before = structuredClone(record);
    const masked = applyMask(record, [
      { pointer: '/input/context/client_ip', mode: 'erase' },
      { pointer: '/input/nothing/here', mode: 'erase' },
      { pointer: '/input/context/hops/7', mode: 'hash' },
      { pointer: '/input/subject/sub/deeper', mode: 'hash' },
    ]);
    expect(record).toEqual(before);
    expect(masked.input.subject).toBe(record.input.subject);
    expect(masked.input.context.hops).toEqual(record.input.context.hops);
  });

  it('refuses malformed pointers', () => {
    for (const pointer of ['', 'input/x', '/input/~2']) {
      expect(maskRuleSchema.safeParse({ pointer, mode: 'erase' }).success).toBe(false);
    }
  });
});

describe('masking in the store', () => {
  const temp = tempDir();
  let store: DecisionStore | undefined;
  afterEach(async () => {
    await store?.close();
    temp.cleanup();
  });

  it('masks before storing, indexing and hashing', async () => {
    store = await DecisionStore.open({
      path: temp.path,
      mask: [
        { pointer: '/input/context/client_ip', mode: 'erase' },
        { pointer: '/input/subject/sub', mode: 'hash' },
      ],
    });
    const record = decision({ sub: 'alice', context: { client_ip: '192.0.2.7', user_agent: 'curl' } });
    await store.append(record);

    const stored = store.get(record.decision_id);
    expect(stored?.input).toEqual({
      ...record.input,
      subject: { ...(record.input.subject as object), sub: hashValue('alice') },
      context: { user_agent: 'curl' },
    });
    expect(store.query({ sub: 'alice' }).decisions).toEqual([]);
    expect(store.query({ sub: hashValue('alice') }).decisions).toHaveLength(1);
    expect(await store.verify()).toMatchObject({ ok: true, checked: 1 });
  });
});
