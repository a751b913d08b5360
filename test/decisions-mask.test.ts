import { createHash } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, describe, expect, it } from 'vitest';
import { canonicalJson } from '../src/decisions/canonical-json.ts';
import { applyMask, hashValue, maskRuleSchema } from '../src/decisions/mask.ts';
import { DecisionStore } from '../src/decisions/store.ts';
import { decision, tempDir } from './support/decisions.ts';

setFlagsFromString('--expose-gc');

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

  it('does not keep the long keys callers send after it has written them', () => {
    // An integer-like key takes the piecewise path, whose key cache once kept every key it met.
    const v8gc = runInNewContext('gc') as () => void;
    // Twice: one pass can leave freed large strings to the next.
    const gc = () => (v8gc(), v8gc());
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < 300; i++) canonicalJson({ context: { '0': true, [`${i}-`.padEnd(60_000, 'k')]: 1 } });
    gc();
    // 300 keys of 60 KB, kept with their encoded form, would hold about 35 MB.
    expect((process.memoryUsage().heapUsed - before) / 2 ** 20).toBeLessThan(10);
  });
});

/** The definition, written plainly: keys sorted by UTF-16 code units at every depth. */
function reference(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((item) => (item === undefined ? 'null' : reference(item))).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.keys(value)
      .sort()
      .filter((key) => (value as Record<string, unknown>)[key] !== undefined)
      .map((key) => `${JSON.stringify(key)}:${reference((value as Record<string, unknown>)[key])}`);
    return `{${entries.join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

describe('canonicalJson on any JSON-like value', () => {
  it('matches the plain definition on random documents, sorted or not', () => {
    let seed = 7;
    const random = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
    const KEYS = ['a', 'b', 'z', 'A', 'é', '10', '9', '0', '__proto__', 'toJSON', 'sub', 'x-y', '\u{1F600}', '-1', '01'];
    const make = (depth: number): unknown => {
      const kind = Math.floor(random() * (depth > 3 ? 5 : 7));
      if (kind === 0) return null;
      if (kind === 1) return random() < 0.5;
      if (kind === 2) return [0, -0, 1.5, 1e21, -7, NaN][Math.floor(random() * 6)];
      if (kind === 3) return ['', 'é', '\n"', '\u2028', '\uD800'][Math.floor(random() * 5)];
      if (kind === 4) return undefined;
      if (kind === 5) return Array.from({ length: Math.floor(random() * 4) }, () => make(depth + 1));
      const json: string[] = [];
      const object: Record<string, unknown> = {};
      for (let i = Math.floor(random() * 6); i > 0; i--) {
        const key = KEYS[Math.floor(random() * KEYS.length)]!;
        const member = make(depth + 1);
        if (key === '__proto__') json.push(`${JSON.stringify(key)}:${JSON.stringify(member) ?? 'null'}`);
        else object[key] = member;
      }
      // "__proto__" as an own member, as JSON.parse makes it.
      return json.length > 0 ? { ...object, ...(JSON.parse(`{${json.join(',')}}`) as object) } : object;
    };
    for (let i = 0; i < 2_000; i++) {
      const value = make(0);
      expect(canonicalJson(value)).toBe(reference(value));
    }
  });

  it('writes other objects as their own enumerable members, as it always did', () => {
    const nullProto = Object.assign(Object.create(null) as object, { b: 1, a: 2 });
    expect(canonicalJson({ when: new Date(0), map: new Map([[1, 2]]), nullProto })).toBe('{"map":{},"nullProto":{"a":2,"b":1},"when":{}}');
    expect(canonicalJson({ b: { toJSON: () => 'x', a: 1 } })).toBe('{"b":{"a":1,"toJSON":null}}');
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
