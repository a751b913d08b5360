import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';

/**
 * What a CLI command leaves behind while it runs (a partial --out, a temporary build directory),
 * removed when SIGINT or SIGTERM ends it. One pair of signal listeners for every command, so
 * each of them does not install (and forget to remove) its own.
 */
const cleanups = new Set<() => void>();

const SIGNALS = ['SIGINT', 'SIGTERM'] as const;

/**
 * Runs every pending cleanup, then ends the process by `signal`, as an interrupted command is
 * (a shell tells 130 from a failure's 1). With the listeners gone, the signal takes its default
 * action.
 */
export function endBy(signal: NodeJS.Signals): void {
  for (const cleanup of cleanups) cleanup();
  cleanups.clear();
  for (const name of SIGNALS) process.off(name, endBy);
  process.kill(process.pid, signal);
}

/** Runs `cleanup` if SIGINT or SIGTERM ends the CLI; returns what stops that, once the thing is kept or gone. */
export function cleanUpOnSignal(cleanup: () => void): () => void {
  if (cleanups.size === 0) for (const name of SIGNALS) process.on(name, endBy);
  cleanups.add(cleanup);
  return () => {
    if (!cleanups.delete(cleanup) || cleanups.size > 0) return;
    for (const name of SIGNALS) process.off(name, endBy);
  };
}

/**
 * The signal a child process was ended by when it is one that interrupts the CLI: a Ctrl-C or a
 * stop reaches the whole process group, and the CLI, blocked on a synchronous child, only sees it
 * once the child is gone (and would then exit before its own listener runs).
 */
export function interruptingSignal(error: unknown): NodeJS.Signals | undefined {
  const signal = (error as { signal?: unknown } | undefined)?.signal;
  return SIGNALS.find((name) => name === signal);
}

/** A new name beside `target` for what is written there until it is complete, then renamed over it. */
export function partialPath(target: string): string {
  return join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.partial`);
}
