import type { VerifiedToken } from './verify.ts';

/**
 * Remembers successful verifications by the fingerprint of the token as sent (not the
 * VerifiedToken's, which both spellings of an ECDSA signature share) until the token would
 * fail verification by time (exp or max age), so a gateway resending the same token skips the
 * signature check. Only successes are cached. Revocation is not cached: it is checked on
 * every decision. Once a key set without one of the issuer's keys is installed (its
 * `keyGeneration` moved on), the issuer's remembered verifications are not reused: each token
 * is checked again against the keys that remain. Nor are they reused once the key set held
 * is stale (jwks_cache_max_age_s): the token is verified afresh, which fetches it again, so a
 * key the issuer removed stops its remembered tokens then, as it stops the others. Committing
 * an `issued_before` revocation after a key compromise fetches the issuer's key set at once,
 * so that happens then.
 */
export class VerificationCache {
  readonly #entries = new Map<string, { verified: VerifiedToken; validUntil: number }>();
  readonly #maxEntries: number;

  constructor(maxEntries: number) {
    this.#maxEntries = maxEntries;
  }

  get(fingerprint: string, now: number): VerifiedToken | undefined {
    const entry = this.#entries.get(fingerprint);
    if (entry === undefined) return undefined;
    const { issuer } = entry.verified;
    if (now >= entry.validUntil || entry.verified.keyGeneration !== issuer.keyGeneration || !issuer.keysFresh) {
      this.#entries.delete(fingerprint);
      return undefined;
    }
    return entry.verified;
  }

  /**
   * Remembers `verified`, of the token whose fingerprint as sent is `sentFingerprint`, checked
   * at `now` (one begun under an earlier key generation of its issuer is remembered, and not
   * reused: see `get`). A token dated after `now` (an `iat` ahead of this
   * clock, within clock_tolerance_s) is not remembered: an `issued_before` revocation made now
   * does not catch it, so after a key compromise only the removed key can stop it, and a
   * remembered verification would outlive the key.
   */
  set(sentFingerprint: string, verified: VerifiedToken, now: number): void {
    if (this.#maxEntries === 0) return;
    const { exp, iat } = verified.payload as { exp: number; iat: number };
    if (iat > now) return;
    const { clock_tolerance_s, max_token_age_s } = verified.issuer.config;
    const validUntil = Math.min(exp, iat + max_token_age_s) + clock_tolerance_s;
    if (this.#entries.size >= this.#maxEntries) {
      // Oldest insertion first: Map keeps insertion order.
      this.#entries.delete(this.#entries.keys().next().value!);
    }
    this.#entries.set(sentFingerprint, { verified, validUntil });
  }
}
