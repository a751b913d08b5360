import type { Logger } from 'pino';

/** At most one line per reason this often. */
const THROTTLE_INTERVAL_MS = 1000;

interface Window {
  /** When the last line of this reason was written (performance.now()). */
  lastMs: number;
  /** Occurrences since then that were not written. */
  suppressed: number;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Warn-level lines that clients can cause at will (a guessed gateway key costs one request), written
 * at most once per THROTTLE_INTERVAL_MS per reason: the first of a second is written whole, and
 * those that follow within it are counted into one summary line (`suppressed`) at its end. The
 * reasons are a fixed set chosen by the code, so the state is bounded; the counters in /metrics
 * count every occurrence.
 */
export class ThrottledWarnings {
  readonly #logger: Logger;
  readonly #windows = new Map<string, Window>();

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  warn(reason: string, fields: Record<string, unknown>, message: string): void {
    const nowMs = performance.now();
    let window = this.#windows.get(reason);
    if (window === undefined) {
      window = { lastMs: -Infinity, suppressed: 0, timer: undefined };
      this.#windows.set(reason, window);
    }
    if (window.timer === undefined && nowMs - window.lastMs >= THROTTLE_INTERVAL_MS) {
      window.lastMs = nowMs;
      this.#logger.warn({ ...fields, reason }, message);
      return;
    }
    window.suppressed += 1;
    if (window.timer !== undefined) return;
    const open = window;
    // unref: a pending summary does not keep a stopping process alive.
    open.timer = setTimeout(() => {
      open.timer = undefined;
      open.lastMs = performance.now();
      this.#logger.warn({ reason, suppressed: open.suppressed, interval_ms: THROTTLE_INTERVAL_MS }, `${message} (repeats within a second, counted not logged)`);
      open.suppressed = 0;
    }, Math.max(0, open.lastMs + THROTTLE_INTERVAL_MS - nowMs)).unref();
  }
}
