import { z } from 'zod';

/**
 * The longest delay Node.js timers (setTimeout, setInterval, AbortSignal.timeout) honour:
 * 2^31 - 1 ms, about 24.8 days. A longer one is not refused but cut to 1 ms, so an interval
 * meant as a month would run every millisecond: config keys that reach a timer stop there.
 */
export const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;

/** The same limit in whole seconds, for the keys given in seconds. */
export const MAX_TIMER_DELAY_S = Math.floor(MAX_TIMER_DELAY_MS / 1000);

/** A key in milliseconds that a timer waits for: a positive integer up to MAX_TIMER_DELAY_MS. */
export function timerDelayMs(): z.ZodNumber {
  return z.number().int().positive().max(MAX_TIMER_DELAY_MS, tooLong(MAX_TIMER_DELAY_MS, 'ms'));
}

/**
 * The shortest delay a timer honours, in seconds: Node.js waits at least 1 ms, so a shorter
 * timeout would silently be a longer one (and AbortSignal.timeout refuses a fraction of a ms).
 */
export const MIN_TIMER_DELAY_S = 0.001;

/**
 * A key in seconds that a timer waits for: at least `min` (1 ms unless a shorter one would do
 * harm, `why` saying which), up to MAX_TIMER_DELAY_S.
 */
export function timerDelaySeconds(min = MIN_TIMER_DELAY_S, why = 'the shortest a timer waits'): z.ZodNumber {
  return z.number().min(min, `must be at least ${min} s (${why})`).max(MAX_TIMER_DELAY_S, tooLong(MAX_TIMER_DELAY_S, 's'));
}

/**
 * A key in seconds between runs of periodic work: at least 1 s, so a typo (0.001) does not run
 * the work in a tight loop, hammering a disk or a remote server.
 */
export function timerIntervalSeconds(what: string): z.ZodNumber {
  return timerDelaySeconds(1, `a shorter interval would ${what} in a tight loop`);
}

function tooLong(max: number, unit: string): string {
  return `must be at most ${max} ${unit} (about 24.8 days), the longest a timer can wait (a longer one would fire at once)`;
}
