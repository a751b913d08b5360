import { mkdtempSync, rmSync } from 'node:fs';
import type { DatabaseSync } from 'node:sqlite';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { openDataDatabase } from '../src/data/persistence.ts';
import { Revocations } from '../src/data/revocations.ts';
import type { RevokedTokenClaims } from '../src/data/revocation-schema.ts';

let dir: string;
let databases: DatabaseSync[];
const start = 1_800_000_000;
let clockS: number;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'arbiter-revocations-'));
  databases = [];
  clockS = start;
});

afterEach(() => {
  for (const db of databases) if (db.isOpen) db.close();
  rmSync(dir, { recursive: true, force: true });
});

function open(): Revocations {
  const db = openDataDatabase(join(dir, 'arbiter.db'));
  databases.push(db);
  return new Revocations(db, { now: () => clockS * 1000 });
}

function restart(): Revocations {
  databases.pop()!.close();
  return open();
}

const issuer = 'https://idp.acme.example';
const otherIssuer = 'https://idp.other.example';
const token: RevokedTokenClaims = {
  iss: issuer,
  sub: 'alice',
  jti: 'jti-1',
  sid: 'session-1',
  client_id: 'web-app',
  iat: start - 60,
};

function revoked(revocations: Revocations, claims: Partial<RevokedTokenClaims> = {}): boolean {
  return revocations.check({ ...token, ...claims }, clockS).revoked;
}

describe('Revocations.check', () => {
  it.each(['jti', 'sid', 'sub', 'client_id'] as const)('matches %s scoped to an issuer, and nothing else', async (kind) => {
    const revocations = open();
    const entry = await revocations.add({ kind, value: token[kind], iss: issuer, reason: 'compromised' });
    expect(revocations.check(token, clockS)).toEqual({ revoked: true, reason: 'compromised', revocation_id: entry.id, kind });
    expect(revoked(revocations, { iss: otherIssuer })).toBe(false);
    expect(revoked(revocations, { [kind]: `${token[kind]}-other` })).toBe(false);
    expect(revoked(revocations, { [kind]: undefined })).toBe(false);
  });

  it.each(['jti', 'sid', 'sub', 'client_id'] as const)('matches %s from any issuer when unscoped', async (kind) => {
    const revocations = open();
    await revocations.add({ kind, value: token[kind], reason: 'everywhere' });
    expect(revoked(revocations)).toBe(true);
    expect(revoked(revocations, { iss: otherIssuer })).toBe(true);
    expect(revoked(revocations, { [kind]: 'someone-else' })).toBe(false);
  });

  it('does not confuse one claim kind with another', async () => {
    const revocations = open();
    await revocations.add({ kind: 'sub', value: 'web-app', iss: issuer, reason: 'r' });
    expect(revoked(revocations)).toBe(false); // client_id is web-app, sub is alice
    expect(revoked(revocations, { sub: 'web-app' })).toBe(true);
  });

  it('does not let issuer and value run together', async () => {
    const revocations = open();
    await revocations.add({ kind: 'sub', value: 'b', iss: 'issuer-a', reason: 'r' });
    expect(revocations.check({ iss: 'issuer-ab', sub: '' }, clockS).revoked).toBe(false);
    expect(revocations.check({ iss: 'issuer-', sub: 'ab' }, clockS).revoked).toBe(false);
    expect(revocations.check({ iss: 'issuer-a', sub: 'b' }, clockS).revoked).toBe(true);
  });

  it('revokes tokens of one issuer issued strictly before the cut-off', async () => {
    const revocations = open();
    const cutOff = token.iat!;
    await revocations.add({ kind: 'issued_before', iss: issuer, before: cutOff, reason: 'key rotation' });
    expect(revoked(revocations, { iat: cutOff - 1 })).toBe(true);
    expect(revoked(revocations, { iat: cutOff })).toBe(false);
    expect(revoked(revocations, { iat: cutOff - 1, iss: otherIssuer })).toBe(false);
    // Without iat a token cannot show it was issued after the cut-off: fail closed.
    expect(revoked(revocations, { iat: undefined })).toBe(true);
  });

  it('uses the latest active issued_before cut-off of an issuer', async () => {
    const revocations = open();
    const early = await revocations.add({ kind: 'issued_before', iss: issuer, before: 100, reason: 'early' });
    const late = await revocations.add({ kind: 'issued_before', iss: issuer, before: 200, reason: 'late', expires_at: clockS + 10 });
    expect(revocations.check({ iss: issuer, iat: 150 }, clockS)).toMatchObject({ revoked: true, revocation_id: late.id });
    // Once the later one expires, the earlier one still holds.
    expect(revocations.check({ iss: issuer, iat: 150 }, clockS + 10).revoked).toBe(false);
    expect(revocations.check({ iss: issuer, iat: 50 }, clockS + 10)).toMatchObject({ revoked: true, revocation_id: early.id });
    expect(revocations.remove(early.id)).toBe(true);
    expect(revocations.check({ iss: issuer, iat: 50 }, clockS + 10).revoked).toBe(false);
  });

  it('stops matching at expires_at and prunes expired entries', async () => {
    const revocations = open();
    const entry = await revocations.add({ kind: 'jti', value: 'jti-1', reason: 'logout', expires_at: clockS + 60 });
    await revocations.add({ kind: 'sub', value: 'bob', reason: 'left', expires_at: clockS + 60 });
    await revocations.add({ kind: 'sub', value: 'carol', reason: 'left' });
    expect(revocations.check(token, clockS + 59).revoked).toBe(true);
    expect(revocations.check(token, clockS + 60).revoked).toBe(false);

    clockS += 60;
    expect(revocations.get(entry.id)).toBeUndefined();
    expect(revocations.list().items.map((item) => item.kind === 'sub' && item.value)).toEqual(['carol']);
    // Gone from memory at once; their rows stay until no clock tolerance could accept the token (300 s).
    expect(revocations.prune(clockS)).toBe(0);
    expect(revocations.size).toBe(1);
    expect(restart().size).toBe(1);
    expect(restart().prune(clockS + 300)).toBe(2);
    expect(restart().prune(clockS + 300)).toBe(0);
  });

  it('keeps matching past expires_at for the clock tolerance, while the token still verifies', async () => {
    const db = openDataDatabase(join(dir, 'arbiter.db'));
    databases.push(db);
    const withTolerance = () => new Revocations(db, { now: () => clockS * 1000, clockToleranceS: 30 });
    const revocations = withTolerance();
    // The advice for jti: expires_at = the token's exp. The token verifies until exp + 30 s.
    const exp = clockS + 60;
    const stolen = await revocations.add({ kind: 'jti', value: 'jti-1', reason: 'stolen', expires_at: exp });
    await revocations.add({ kind: 'issued_before', iss: issuer, before: token.iat! + 1, reason: 'key leak', expires_at: exp });
    expect(revocations.check(token, exp + 29)).toMatchObject({ revoked: true, revocation_id: stolen.id });
    expect(revocations.check({ iss: issuer, iat: token.iat! }, exp + 29)).toMatchObject({ revoked: true, kind: 'issued_before' });

    clockS = exp + 29;
    expect(revocations.prune(clockS)).toBe(0);
    expect(revocations.get(stolen.id)).toEqual(stolen);
    expect(revocations.list().items).toHaveLength(2);
    expect(withTolerance().check(token, clockS).revoked).toBe(true);

    clockS = exp + 30;
    expect(revocations.check(token, clockS).revoked).toBe(false);
    expect(revocations.get(stolen.id)).toBeUndefined();
    expect(revocations.prune(clockS)).toBe(0);
    expect(revocations.size).toBe(0);
    // No longer in force: DELETE answers as GET does (404), though the row is kept a while.
    expect(revocations.remove(stolen.id)).toBe(false);
    expect(revocations.prune(exp + 300)).toBe(1);
  });

  it('stays in force after a restart that raises the clock tolerance, though it was pruned before it', async () => {
    const first = openDataDatabase(join(dir, 'arbiter.db'));
    databases.push(first);
    const revocations = new Revocations(first, { now: () => clockS * 1000, clockToleranceS: 30 });
    const exp = clockS + 60;
    await revocations.add({ kind: 'jti', value: 'jti-1', reason: 'stolen', expires_at: exp });
    // Past exp + 30 s the token no longer verifies, and the periodic prune runs.
    clockS = exp + 60;
    revocations.prune(clockS);
    expect(revocations.check(token, clockS).revoked).toBe(false);
    first.close();
    // Restarted with clock_tolerance_s: 300 (or a new issuer that has it): the stolen token verifies
    // again until exp + 300 s, so its revocation must still be there.
    const again = openDataDatabase(join(dir, 'arbiter.db'));
    databases.push(again);
    const restarted = new Revocations(again, { now: () => clockS * 1000, clockToleranceS: 300 });
    expect(restarted.check(token, clockS)).toMatchObject({ revoked: true, reason: 'stolen' });
    expect(restarted.list().items).toHaveLength(1);
    clockS = exp + 300;
    expect(restarted.check(token, clockS).revoked).toBe(false);
    expect(restarted.prune(clockS)).toBe(1);
    expect((again.prepare('SELECT count(*) AS n FROM revocations').get() as { n: number }).n).toBe(0);
  });

  it('removes an entry so it no longer matches, also after a restart', async () => {
    const revocations = open();
    const entry = await revocations.add({ kind: 'sid', value: 'session-1', reason: 'mistake' });
    expect(revocations.get(entry.id)).toEqual(entry);
    expect(revocations.remove(entry.id)).toBe(true);
    expect(revocations.remove(entry.id)).toBe(false);
    expect(revoked(revocations)).toBe(false);
    expect(revoked(restart())).toBe(false);
  });
});

describe('Revocations.checkParty', () => {
  it('matches an actor by sub or client_id, scoped or not, and ignores token-level kinds', async () => {
    const revocations = open();
    await revocations.add({ kind: 'sub', value: 'agent:a', iss: issuer, reason: 'r' });
    await revocations.add({ kind: 'client_id', value: 'bot', reason: 'r' });
    // A cut-off or a jti names tokens, not parties: an actor (which has no iat or jti of its own) is not caught by them.
    await revocations.add({ kind: 'issued_before', iss: issuer, before: clockS + 100, reason: 'r' });
    await revocations.add({ kind: 'jti', value: 'agent:b', reason: 'r' });
    expect(revocations.checkParty({ iss: issuer, sub: 'agent:a' }, clockS).revoked).toBe(true);
    expect(revocations.checkParty({ iss: otherIssuer, sub: 'agent:a' }, clockS).revoked).toBe(false);
    expect(revocations.checkParty({ iss: otherIssuer, client_id: 'bot' }, clockS).revoked).toBe(true);
    expect(revocations.checkParty({ iss: issuer, sub: 'agent:b' }, clockS).revoked).toBe(false);
  });
});

describe('Revocations.checkPartyAnyIssuer', () => {
  it('matches a party by sub or client_id under any issuer, until removed or expired', async () => {
    const revocations = open();
    const scoped = await revocations.add({ kind: 'sub', value: 'user:alice', iss: issuer, reason: 'offboarded' });
    await revocations.add({ kind: 'client_id', value: 'bot', reason: 'r', expires_at: clockS + 10 });
    await revocations.add({ kind: 'jti', value: 'user:bob', reason: 'r' });
    expect(revocations.checkPartyAnyIssuer({ sub: 'user:alice' }, clockS)).toMatchObject({ revoked: true, revocation_id: scoped.id });
    expect(revocations.checkPartyAnyIssuer({ client_id: 'user:alice' }, clockS).revoked).toBe(false);
    expect(revocations.checkPartyAnyIssuer({ client_id: 'bot' }, clockS).revoked).toBe(true);
    expect(revocations.checkPartyAnyIssuer({ client_id: 'bot' }, clockS + 10).revoked).toBe(false);
    expect(revocations.checkPartyAnyIssuer({ sub: 'user:bob' }, clockS).revoked).toBe(false);
    revocations.remove(scoped.id);
    expect(revocations.checkPartyAnyIssuer({ sub: 'user:alice' }, clockS).revoked).toBe(false);
  });
});

describe('Revocations.add', () => {
  it('returns the stored entry with a UUIDv7 id and creation time', async () => {
    const revocations = open();
    const entry = await revocations.add({ kind: 'jti', value: 'j', iss: issuer, reason: 'r', expires_at: clockS + 5, created_by: 'admin' });
    expect(entry).toEqual({
      kind: 'jti',
      value: 'j',
      iss: issuer,
      reason: 'r',
      expires_at: clockS + 5,
      created_by: 'admin',
      id: expect.stringMatching(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/),
      created_at: clockS,
    });
  });

  it.each([
    [{ kind: 'jti', value: 'j' }, /reason/],
    [{ kind: 'jti', reason: 'r' }, /value/],
    [{ kind: 'issued_before', before: 1, reason: 'r' }, /iss/],
    [{ kind: 'issued_before', iss: issuer, reason: 'r' }, /before/],
    [{ kind: 'issued_before', iss: issuer, before: 1, value: 'x', reason: 'r' }, /value/],
    [{ kind: 'email', value: 'x', reason: 'r' }, /kind/],
    [{ kind: 'sub', value: '', reason: 'r' }, /value/],
    [{ kind: 'sub', value: 'x', reason: 'r', expires_at: 1.5 }, /expires_at/],
  ])('rejects %j with revocation_invalid', async (input, field) => {
    const revocations = open();
    await expect(revocations.add(input)).rejects.toMatchObject({ code: 'revocation_invalid', message: expect.stringMatching(field) });
    expect(revocations.list().items).toEqual([]);
  });

  it('refuses an expires_at that has already passed, clock tolerance included (it would never apply)', async () => {
    const db = openDataDatabase(join(dir, 'arbiter.db'));
    databases.push(db);
    const revocations = new Revocations(db, { now: () => clockS * 1000, clockToleranceS: 30 });
    // A TTL written where a time belongs: accepted, the token would still pass while the admin believes it revoked.
    await expect(revocations.add({ kind: 'jti', value: 'j', reason: 'r', expires_at: 3600 })).rejects.toMatchObject({
      code: 'revocation_invalid',
      message: expect.stringMatching(/^revocation\.expires_at: 3600 has passed .*never apply/),
    });
    await expect(revocations.add({ kind: 'jti', value: 'j', reason: 'r', expires_at: clockS - 30 })).rejects.toMatchObject({ code: 'revocation_invalid' });
    await expect(
      revocations.addMany([{ kind: 'sub', value: 'x', reason: 'r' }, { kind: 'sub', value: 'y', reason: 'r', expires_at: 1 }]),
    ).rejects.toMatchObject({ code: 'revocation_invalid', message: expect.stringContaining('revocations[1].expires_at') });
    expect(revocations.list().items).toEqual([]);
    // Still inside the tolerance: the token verifies, so the entry applies and is accepted.
    const late = await revocations.add({ kind: 'jti', value: 'j', reason: 'r', expires_at: clockS - 29 });
    expect(revocations.check({ ...token, jti: 'j' }, clockS)).toMatchObject({ revoked: true, revocation_id: late.id });
  });

  it('adds many in one all-or-nothing batch', async () => {
    const revocations = open();
    const batch = Array.from({ length: 50 }, (_, i) => ({ kind: 'jti', value: `j${i}`, reason: 'bulk' }));
    await expect(revocations.addMany([...batch, { kind: 'jti', reason: 'no value' }])).rejects.toMatchObject({
      code: 'revocation_invalid',
      message: expect.stringContaining('revocations[50].value'),
    });
    expect(revocations.size).toBe(0);
    const added = await revocations.addMany(batch);
    expect(added).toHaveLength(50);
    expect(revoked(restart(), { jti: 'j49' })).toBe(true);
  });

  it('commits concurrent adds together and resolves each one after the commit', async () => {
    const revocations = open();
    const adds = Array.from({ length: 20 }, (_, i) => revocations.add({ kind: 'sub', value: `user-${i}`, reason: 'r' }));
    // Not acknowledged yet, so not yet in force either.
    expect(revocations.size).toBe(0);
    const entries = await Promise.all(adds);
    expect(new Set(entries.map((entry) => entry.id)).size).toBe(20);
    expect(revoked(revocations, { sub: 'user-19' })).toBe(true);
  });

  it('answers an add identical to an entry in force, pending or earlier in the batch with that entry, reason aside', async () => {
    const revocations = open();
    const first = revocations.add({ kind: 'issued_before', iss: issuer, before: 500, reason: 'key leak' });
    const twin = revocations.add({ kind: 'issued_before', iss: issuer, before: 500, reason: 'replayed' });
    expect((await twin).id).toBe((await first).id);
    expect(await restart().submit({ kind: 'issued_before', iss: issuer, before: 500, reason: 'after a restart' })).toEqual({ entries: [await first], created: 0 });
    const reopened = restart();
    const batch = await reopened.submitMany([
      { kind: 'issued_before', iss: issuer, before: 500, reason: 'again' },
      { kind: 'issued_before', iss: issuer, before: 501, reason: 'another cut-off' },
      { kind: 'sub', value: 'bob', reason: 'r' },
      { kind: 'sub', value: 'bob', reason: 'r' },
      { kind: 'sub', value: 'bob', iss: issuer, reason: 'scoped is another' },
      { kind: 'client_id', value: 'bob', reason: 'another kind' },
    ]);
    expect(batch.created).toBe(4);
    expect(batch.entries[0]).toEqual(await first);
    expect(batch.entries[3]).toBe(batch.entries[2]);
    expect(new Set(batch.entries.map((entry) => entry.id)).size).toBe(5);
    expect(reopened.size).toBe(5);
  });

  it('fails an add that restates a pending one when that commit fails', async () => {
    const revocations = open();
    const pending = revocations.add({ kind: 'sub', value: 'alice', reason: 'r' });
    const twin = revocations.add({ kind: 'sub', value: 'alice', reason: 'r' });
    databases[0]!.close();
    await expect(pending).rejects.toMatchObject({ code: 'data_store_write_failed' });
    await expect(twin).rejects.toMatchObject({ code: 'data_store_write_failed' });
  });

  it('rejects pending adds when the commit fails, and does not activate them', async () => {
    const revocations = open();
    const pending = revocations.add({ kind: 'sub', value: 'alice', reason: 'r' });
    databases[0]!.close();
    await expect(pending).rejects.toMatchObject({ code: 'data_store_write_failed' });
    expect(revoked(revocations)).toBe(false);
  });
});

describe('Revocations issuers', () => {
  function openWith(issuers: readonly string[]): Revocations {
    const db = openDataDatabase(join(dir, 'arbiter.db'));
    databases.push(db);
    return new Revocations(db, { now: () => clockS * 1000, issuers });
  }

  it('refuses issued_before, jti and sid entries scoped to an issuer not configured, not sub or client_id ones', async () => {
    const revocations = openWith([issuer]);
    await expect(
      revocations.addMany([
        { kind: 'issued_before', iss: `${issuer}/`, before: 500, reason: 'r' },
        { kind: 'jti', value: 'j', iss: otherIssuer, reason: 'r' },
        { kind: 'sid', value: 's', iss: otherIssuer, reason: 'r' },
        { kind: 'jti', value: 'j', reason: 'unscoped' },
      ]),
    ).rejects.toMatchObject({
      code: 'revocation_invalid',
      errors: [
        { pointer: '/revocations/0/iss', detail: expect.stringContaining(`configured: "${issuer}"`) },
        { pointer: '/revocations/1/iss', detail: expect.stringContaining(otherIssuer) },
        { pointer: '/revocations/2/iss', detail: expect.stringContaining(otherIssuer) },
      ],
    });
    expect(revocations.size).toBe(0);
    // Actors are named under the issuer that identifies them, configured or not.
    await revocations.addMany([
      { kind: 'sub', value: 'agent', iss: otherIssuer, reason: 'r' },
      { kind: 'client_id', value: 'bot', iss: otherIssuer, reason: 'r' },
      { kind: 'issued_before', iss: issuer, before: 500, reason: 'r' },
    ]);
    expect(revocations.size).toBe(3);
  });

  it('loads entries of an issuer no longer configured, and names them', async () => {
    const before = openWith([issuer, otherIssuer]);
    await before.addMany([
      { kind: 'issued_before', iss: otherIssuer, before: 500, reason: 'r' },
      { kind: 'jti', value: 'j', iss: otherIssuer, reason: 'r' },
      { kind: 'jti', value: 'k', iss: otherIssuer, reason: 'r' },
      { kind: 'sub', value: 'agent', iss: otherIssuer, reason: 'r' },
      { kind: 'jti', value: 'j', iss: issuer, reason: 'r' },
    ]);
    databases.pop()!.close();
    const after = openWith([issuer]);
    expect(after.size).toBe(5);
    expect(after.ofOtherIssuers()).toEqual([{ iss: otherIssuer, kinds: { issued_before: 1, jti: 2 } }]);
  });
});

describe('Revocations persistence and listing', () => {
  it('reloads every kind after a restart', async () => {
    const revocations = open();
    await revocations.addMany([
      { kind: 'jti', value: 'jti-1', iss: issuer, reason: 'a', expires_at: clockS + 3600 },
      { kind: 'sid', value: 'session-2', reason: 'b' },
      { kind: 'sub', value: 'bob', iss: issuer, reason: 'c' },
      { kind: 'client_id', value: 'cli', reason: 'd' },
      { kind: 'issued_before', iss: otherIssuer, before: 500, reason: 'e' },
    ]);
    const before = revocations.list().items;
    const reloaded = restart();
    expect(reloaded.list().items).toEqual(before);
    expect(reloaded.check(token, clockS)).toMatchObject({ revoked: true, reason: 'a' });
    expect(revoked(reloaded, { jti: 'x', sid: 'session-2' })).toBe(true);
    expect(revoked(reloaded, { jti: 'x', sub: 'bob' })).toBe(true);
    expect(revoked(reloaded, { jti: 'x', client_id: 'cli' })).toBe(true);
    expect(reloaded.check({ iss: otherIssuer, iat: 499 }, clockS).revoked).toBe(true);
    expect(reloaded.check({ iss: otherIssuer, iat: 500 }, clockS).revoked).toBe(false);
  });

  it('mints ids after every id of an earlier run whose clock was ahead, a lifted one included', async () => {
    const realNow = Date.now();
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      // The earlier run: its clock an hour ahead. Its last revocation was lifted since.
      vi.setSystemTime(realNow + 3_600_000);
      const earlier = open();
      const [kept, lifted] = await earlier.addMany([
        { kind: 'jti', value: 'kept', reason: 'r' },
        { kind: 'jti', value: 'lifted', reason: 'r' },
      ]);
      expect(earlier.remove(lifted!.id)).toBe(true);
      databases.pop()!.close();
      // The next run: the clock stepped back, and a process of its own (ids minted afresh).
      vi.setSystemTime(realNow);
      vi.resetModules();
      const { Revocations: NextRun } = await import('../src/data/revocations.ts');
      const db = openDataDatabase(join(dir, 'arbiter.db'));
      databases.push(db);
      const next = new NextRun(db, { now: () => clockS * 1000 });
      const added = await next.add({ kind: 'jti', value: 'new', reason: 'r' });
      expect(added.id > lifted!.id).toBe(true);
      // A reader that paged up to the lifted one still sees the new one.
      expect(next.list({ cursor: lifted!.id }).items.map((item) => item.id)).toEqual([added.id]);
      expect(next.list().items.map((item) => item.id)).toEqual([kept!.id, added.id]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('pages through entries in creation order, optionally by kind', async () => {
    const revocations = open();
    const added = await revocations.addMany(
      Array.from({ length: 5 }, (_, i) => ({ kind: i % 2 === 0 ? 'jti' : 'sub', value: `v${i}`, reason: 'r' })),
    );
    const first = revocations.list({ limit: 2 });
    expect(first.items.map((item) => item.id)).toEqual(added.slice(0, 2).map((item) => item.id));
    const second = revocations.list({ limit: 2, cursor: first.next_cursor! });
    const third = revocations.list({ limit: 2, cursor: second.next_cursor! });
    expect([...first.items, ...second.items, ...third.items].map((item) => item.id)).toEqual(added.map((item) => item.id));
    expect(third.next_cursor).toBeNull();
    expect(revocations.list({ kind: 'sub' }).items.map((item) => item.id)).toEqual([added[1]!.id, added[3]!.id]);
    expect(() => revocations.list({ limit: 0 })).toThrow(expect.objectContaining({ code: 'revocation_invalid' }));
  });
});
