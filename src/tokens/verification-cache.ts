import type { VerifiedToken } from './verify.ts';

/**
 * Remembers successful verifications by token fingerprint until the token would fail
 * verification by time (exp or max age), so a gateway resending the same token skips the
 * signature check. Only successes are cached. Revocation is not cached: it is checked on
 * every decision. Once a key set without one of the issuer's keys is installed (its
 * `keyGeneration` moved on), the issuer's remembered verifications are not reused: each token
 * is checked again against the keys that remain. Committing an `issued_before` revocation
 * after a key compromise fetches the issuer's key set at once and forgets the issuer's
 * entries (`forgetIssuer`).
 */
export class VerificationCache {
  readonly #entries = new Map<string, { verified: VerifiedToken; validUntil: number }>();
  readonly #maxEntries: number;
  /** Counts forgetIssuer calls: a verification begun before one is not remembered (see `set`). */
  #generation = 0;

  constructor(maxEntries: number) {
    this.#maxEntries = maxEntries;
  }

  get(fingerprint: string, now: number): VerifiedToken | undefined {
    const entry = this.#entries.get(fingerprint);
    if (entry === undefined) return undefined;
    if (now >= entry.validUntil || entry.verified.keyGeneration !== entry.verified.issuer.keyGeneration) {
      this.#entries.delete(fingerprint);
      return undefined;
    }
    return entry.verified;
  }

  /** To be passed to `set` with the verification begun now. */
  get generation(): number {
    return this.#generation;
  }

  /**
   * Remembers `verified`, checked at `now` by a verification begun at `generation`. One begun
   * before a `forgetIssuer` may have taken the key removed at the issuer from the key set held
   * before the reload and finished after it: remembered, it would outlive the key, so it is not.
   * A token dated after `now` (an `iat` ahead of this
   * clock, within clock_tolerance_s) is not remembered: an `issued_before` revocation made now
   * does not catch it, so after a key compromise only the removed key can stop it, and a
   * remembered verification would outlive the key.
   */
  set(verified: VerifiedToken, now: number, generation: number): void {
    if (this.#maxEntries === 0 || generation !== this.#generation) return;
    const { exp, iat } = verified.payload as { exp: number; iat: number };
    if (iat > now) return;
    const { clock_tolerance_s, max_token_age_s } = verified.issuer.config;
    const validUntil = Math.min(exp, iat + max_token_age_s) + clock_tolerance_s;
    if (this.#entries.size >= this.#maxEntries) {
      // Oldest insertion first: Map keeps insertion order.
      this.#entries.delete(this.#entries.keys().next().value!);
    }
    this.#entries.set(verified.fingerprint, { verified, validUntil });
  }

  /**
   * Forgets every verification of tokens from `iss`. A cut-off set at the time of a compromise
   * does not catch a token minted after it with the stolen key; only the key set, fetched again
   * without that key, stops such a token, and only if its verification is not remembered.
   */
  forgetIssuer(iss: string): void {
    this.#generation += 1;
    for (const [fingerprint, entry] of this.#entries) {
      if (entry.verified.issuer.config.issuer === iss) this.#entries.delete(fingerprint);
    }
  }

  get size(): number {
    return this.#entries.size;
  }
}
