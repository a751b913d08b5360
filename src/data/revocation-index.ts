import type { Revocation, RevokedTokenClaims, ValueRevocationKind } from './revocation-schema.ts';
import { VALUE_REVOCATION_KINDS } from './revocation-schema.ts';

export type RevocationMatch = { revoked: false } | { revoked: true; reason: string; revocation_id: string; kind: Revocation['kind'] };

const NOT_REVOKED: RevocationMatch = Object.freeze({ revoked: false });

/** The kinds that name a party (who), as opposed to one token or session. */
const PARTY_REVOCATION_KINDS = ['sub', 'client_id'] as const;

/**
 * In-memory lookup of active revocations, answering `match` with a constant number of
 * hash lookups whatever the number of revocations: one per claim and scope for the
 * value kinds, and a cached latest cut-off per issuer for `issued_before`.
 */
export class RevocationIndex {
  readonly #byId = new Map<string, Revocation>();
  readonly #byValue = new Map<ValueRevocationKind, Map<string, Set<Revocation>>>(
    VALUE_REVOCATION_KINDS.map((kind) => [kind, new Map()]),
  );
  readonly #issuedBefore = new Map<string, { entries: Set<Revocation>; latest: Revocation | undefined }>();
  /** sub and client_id revocations by value alone, whatever their issuer: see matchPartyAnyIssuer. */
  readonly #partyByValue = new Map<string, Set<Revocation>>();
  readonly #clockToleranceS: number;

  /** `clockToleranceS`: how long past `expires_at` an entry still applies (see `isExpired`). */
  constructor(clockToleranceS = 0) {
    this.#clockToleranceS = clockToleranceS;
  }

  get size(): number {
    return this.#byId.size;
  }

  get(id: string): Revocation | undefined {
    return this.#byId.get(id);
  }

  add(entry: Revocation): void {
    this.#byId.set(entry.id, entry);
    if (entry.kind === 'issued_before') {
      let group = this.#issuedBefore.get(entry.iss);
      if (group === undefined) this.#issuedBefore.set(entry.iss, (group = { entries: new Set(), latest: undefined }));
      group.entries.add(entry);
      if (group.latest === undefined || cutOff(entry) > cutOff(group.latest)) group.latest = entry;
      return;
    }
    const byKey = this.#byValue.get(entry.kind)!;
    const key = indexKey(entry.iss, entry.value);
    let entries = byKey.get(key);
    if (entries === undefined) byKey.set(key, (entries = new Set()));
    entries.add(entry);
    if (isPartyKind(entry.kind)) {
      const partyKey = `${entry.kind}:${entry.value}`;
      let parties = this.#partyByValue.get(partyKey);
      if (parties === undefined) this.#partyByValue.set(partyKey, (parties = new Set()));
      parties.add(entry);
    }
  }

  remove(id: string): Revocation | undefined {
    const entry = this.#byId.get(id);
    if (entry === undefined) return undefined;
    this.#byId.delete(id);
    if (entry.kind === 'issued_before') {
      const group = this.#issuedBefore.get(entry.iss)!;
      group.entries.delete(entry);
      if (group.entries.size === 0) this.#issuedBefore.delete(entry.iss);
      else if (group.latest === entry) group.latest = latestOf(group.entries);
      return entry;
    }
    const byKey = this.#byValue.get(entry.kind)!;
    const key = indexKey(entry.iss, entry.value);
    const entries = byKey.get(key)!;
    entries.delete(entry);
    if (entries.size === 0) byKey.delete(key);
    if (isPartyKind(entry.kind)) {
      const partyKey = `${entry.kind}:${entry.value}`;
      const parties = this.#partyByValue.get(partyKey)!;
      parties.delete(entry);
      if (parties.size === 0) this.#partyByValue.delete(partyKey);
    }
    return entry;
  }

  /** The entry in force that revokes what `entry` would (`sameRevocation`), if any: one hash lookup. */
  findSame(entry: Revocation, nowS: number): Revocation | undefined {
    const candidates = entry.kind === 'issued_before' ? this.#issuedBefore.get(entry.iss)?.entries : this.#byValue.get(entry.kind)!.get(indexKey(entry.iss, entry.value));
    for (const candidate of candidates ?? []) {
      if (sameRevocation(candidate, entry) && !isExpired(candidate, nowS, this.#clockToleranceS)) return candidate;
    }
    return undefined;
  }

  /**
   * The first active revocation that applies to the token. Expired entries met on the way
   * are dropped from memory (their rows go at the next `prune`). A token without `iat`
   * is caught by any `issued_before` of its issuer: it cannot show it was issued after.
   */
  match(token: RevokedTokenClaims, nowS: number): RevocationMatch {
    for (const kind of VALUE_REVOCATION_KINDS) {
      const value = token[kind];
      if (value === undefined) continue;
      const hit = this.#firstActive(kind, indexKey(token.iss, value), nowS) ?? this.#firstActive(kind, indexKey(undefined, value), nowS);
      if (hit !== undefined) return matched(hit);
    }
    const latest = this.#latestActiveCutOff(token.iss, nowS);
    if (latest !== undefined && (token.iat === undefined || token.iat < latest.before)) return matched(latest);
    return NOT_REVOKED;
  }

  /**
   * The first active `sub` or `client_id` revocation of a party that is not the token's
   * holder, such as an actor in its delegation chain: a revoked agent is stopped even when
   * it acts through someone else's token. Token-level kinds (jti, sid, issued_before) do
   * not apply to it.
   */
  matchParty(party: { iss: string; sub?: string | undefined; client_id?: string | undefined }, nowS: number): RevocationMatch {
    for (const kind of PARTY_REVOCATION_KINDS) {
      const value = party[kind];
      if (value === undefined) continue;
      const hit = this.#firstActive(kind, indexKey(party.iss, value), nowS) ?? this.#firstActive(kind, indexKey(undefined, value), nowS);
      if (hit !== undefined) return matched(hit);
    }
    return NOT_REVOKED;
  }

  /**
   * The first active `sub` or `client_id` revocation of a party under any issuer. For a
   * party known by name only, such as the subject and client a token service asks to mint a
   * token for: the issuer of that token is not known here, so a revocation under any issuer
   * stops it (fail closed).
   */
  matchPartyAnyIssuer(party: { sub?: string | undefined; client_id?: string | undefined }, nowS: number): RevocationMatch {
    for (const kind of PARTY_REVOCATION_KINDS) {
      const value = party[kind];
      if (value === undefined) continue;
      for (const entry of this.#partyByValue.get(`${kind}:${value}`) ?? []) {
        if (!isExpired(entry, nowS, this.#clockToleranceS)) return matched(entry);
      }
    }
    return NOT_REVOKED;
  }

  #firstActive(kind: ValueRevocationKind, key: string, nowS: number): Revocation | undefined {
    const entries = this.#byValue.get(kind)!.get(key);
    if (entries === undefined) return undefined;
    for (const entry of entries) {
      if (!isExpired(entry, nowS, this.#clockToleranceS)) return entry;
      this.remove(entry.id);
    }
    return undefined;
  }

  #latestActiveCutOff(iss: string, nowS: number): Extract<Revocation, { kind: 'issued_before' }> | undefined {
    for (;;) {
      const latest = this.#issuedBefore.get(iss)?.latest;
      if (latest === undefined || !isExpired(latest, nowS, this.#clockToleranceS)) return latest as Extract<Revocation, { kind: 'issued_before' }> | undefined;
      this.remove(latest.id);
    }
  }
}

/**
 * Whether two entries revoke the same tokens for the same time: same kind, value or cut-off, iss
 * and expires_at. Not `reason` (commentary for the audit trail) nor who made it or when: a feed
 * replaying a revocation, reworded or sent by another admin, restates the one in force.
 */
function sameRevocation(a: Revocation, b: Revocation): boolean {
  if (a.kind !== b.kind || a.iss !== b.iss || a.expires_at !== b.expires_at) return false;
  return a.kind === 'issued_before' ? a.before === (b as typeof a).before : a.value === (b as typeof a).value;
}

/** A string equal for two entries exactly when `sameRevocation` holds. */
export function revocationIdentity(entry: Revocation): string {
  return JSON.stringify([entry.kind, entry.iss ?? null, entry.kind === 'issued_before' ? entry.before : entry.value, entry.expires_at ?? null]);
}

function isPartyKind(kind: Revocation['kind']): kind is (typeof PARTY_REVOCATION_KINDS)[number] {
  return (PARTY_REVOCATION_KINDS as readonly string[]).includes(kind);
}

/**
 * Active while `now < expires_at + clockToleranceS`; no `expires_at` means until removed.
 * A token is accepted until `exp` plus its issuer's clock tolerance, so an entry whose
 * `expires_at` is the token's `exp` must outlive it by the largest tolerance: otherwise
 * the revoked token would pass again in that window.
 */
export function isExpired(entry: Revocation, nowS: number, clockToleranceS: number): boolean {
  return entry.expires_at !== undefined && entry.expires_at + clockToleranceS <= nowS;
}

function matched(entry: Revocation): RevocationMatch {
  return { revoked: true, reason: entry.reason, revocation_id: entry.id, kind: entry.kind };
}

/** Length-prefixed so no issuer/value pair can collide with another; `*` (not a digit) marks "any issuer". */
function indexKey(iss: string | undefined, value: string): string {
  return iss === undefined ? `*${value}` : `${iss.length}:${iss}${value}`;
}

function cutOff(entry: Revocation): number {
  return entry.kind === 'issued_before' ? entry.before : -Infinity;
}

function latestOf(entries: Set<Revocation>): Revocation | undefined {
  let latest: Revocation | undefined;
  for (const entry of entries) if (latest === undefined || cutOff(entry) > cutOff(latest)) latest = entry;
  return latest;
}
