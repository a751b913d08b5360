import { z } from 'zod';
import { MAX_TOKEN_BYTES } from '../config/schema.ts';
import { EPOCH_MILLISECONDS_MESSAGE, MAX_EPOCH_S } from './epoch-seconds.ts';

/** Kinds that revoke tokens carrying one claim value, optionally only from one issuer. */
export const VALUE_REVOCATION_KINDS = ['jti', 'sid', 'sub', 'client_id'] as const;
export type ValueRevocationKind = (typeof VALUE_REVOCATION_KINDS)[number];

export const REVOCATION_KINDS = [...VALUE_REVOCATION_KINDS, 'issued_before'] as const;
export type RevocationKind = (typeof REVOCATION_KINDS)[number];

const text = z.string().min(1).max(1024);
/**
 * A claim value a revocation names (a jti, sub, sid, client_id, iss): bounded by the token that
 * carries it (tokens.max_token_bytes), not by `text`, or a token with a longer one could not be revoked.
 */
const claimValue = z.string().min(1).max(MAX_TOKEN_BYTES);
// Bounded: a time in milliseconds would keep an entry for millennia (an `issued_before` cut-off
// refusing every token its issuer will ever mint) while its author believed it would lapse.
const epochSeconds = z.number().int().nonnegative().max(MAX_EPOCH_S, EPOCH_MILLISECONDS_MESSAGE);

const common = {
  /** Why, for the audit trail and the decision's reasons. */
  reason: text,
  /**
   * Epoch seconds after which the entry no longer applies and is pruned, extended by the
   * largest issuer `clock_tolerance_s` because a token still verifies until `exp` plus that
   * tolerance. Omitted: the entry stays until removed, which is always safe. For `jti`,
   * the token's `exp` is enough: Arbiter adds the tolerance. A time already past (tolerance
   * included) is refused: the entry would never apply.
   */
  expires_at: epochSeconds.optional(),
};

/**
 * Who added the entry: set by Arbiter from the authenticated admin (`iss#sub`), never taken from a
 * request. Not bounded like a request's fields: a verified token's iss and sub are bounded by
 * tokens.max_token_bytes, and an admin whose sub is long must still be able to revoke.
 */
const author = { created_by: z.string().min(1).optional() };

const valueRevocation = <K extends ValueRevocationKind>(kind: K) =>
  z.strictObject({
    kind: z.literal(kind),
    value: claimValue,
    /**
     * Limits the revocation to tokens from this issuer (for a sub or client_id naming an actor of a
     * delegation chain: to actors this issuer identifies, by the actor's own iss, else the token's);
     * omitted, the value is revoked whoever issued it.
     */
    iss: claimValue.optional(),
    ...common,
  });

const issuedBeforeRevocation = z.strictObject({
  kind: z.literal('issued_before'),
  /** Every token from this issuer with `iat` strictly below `before` is revoked (e.g. after a key compromise). */
  iss: claimValue,
  before: epochSeconds,
  ...common,
});

/** A revocation as an administrator submits it over HTTP: without `created_by`, which Arbiter sets. */
export const RevocationRequestSchema = z.discriminatedUnion('kind', [
  valueRevocation('jti'),
  valueRevocation('sid'),
  valueRevocation('sub'),
  valueRevocation('client_id'),
  issuedBeforeRevocation,
]);

/** A revocation as the store takes it: the request plus who made it. */
export const RevocationInputSchema = z.discriminatedUnion('kind', [
  valueRevocation('jti').extend(author),
  valueRevocation('sid').extend(author),
  valueRevocation('sub').extend(author),
  valueRevocation('client_id').extend(author),
  issuedBeforeRevocation.extend(author),
]);
export type RevocationInput = z.infer<typeof RevocationInputSchema>;

const stored = { id: z.string(), created_at: epochSeconds };

/** A committed revocation: the input plus its UUIDv7 id and creation time (epoch seconds). */
export const RevocationSchema = z.discriminatedUnion('kind', [
  valueRevocation('jti').extend(author).extend(stored),
  valueRevocation('sid').extend(author).extend(stored),
  valueRevocation('sub').extend(author).extend(stored),
  valueRevocation('client_id').extend(author).extend(stored),
  issuedBeforeRevocation.extend(author).extend(stored),
]);
export type Revocation = z.infer<typeof RevocationSchema>;

/** The verified claims a revocation check looks at. */
export interface RevokedTokenClaims {
  iss: string;
  sub?: string;
  jti?: string;
  sid?: string;
  client_id?: string;
  iat?: number;
}
