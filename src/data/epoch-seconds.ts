/**
 * The last second a date can show (9999-12-31T23:59:59Z). A time in epoch seconds past it is
 * a time in milliseconds (Date.now() where seconds belong, any date since 1978): taken as
 * seconds it would lie tens of millennia ahead, so an expiry would never come.
 */
export const MAX_EPOCH_S = 253_402_300_799;

/** Why a number past MAX_EPOCH_S is refused, for a field error. */
export const EPOCH_MILLISECONDS_MESSAGE = `must be epoch seconds, at most ${MAX_EPOCH_S} (9999-12-31T23:59:59Z): a larger number is a time in milliseconds`;
