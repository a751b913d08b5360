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

/** A key in seconds that a timer waits for: positive, up to MAX_TIMER_DELAY_S. */
export function timerDelaySeconds(): z.ZodNumber {
  return z.number().positive().max(MAX_TIMER_DELAY_S, tooLong(MAX_TIMER_DELAY_S, 's'));
}

function tooLong(max: number, unit: string): string {
  return `must be at most ${max} ${unit} (about 24.8 days), the longest a timer can wait (a longer one would fire at once)`;
}
