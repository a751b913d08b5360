/**
 * Entry point of the thread that hashes one large structured bundle file in its canonical form
 * (canonical-digest.ts): seconds for a large one, which must not hold the event loop that
 * serves decisions.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { canonicalDigestOf, type CanonicalDigestRequest } from './canonical-digest.ts';

try {
  parentPort?.postMessage({ digest: canonicalDigestOf(workerData as CanonicalDigestRequest) });
} catch (error) {
  // A file that cannot be parsed is an answer; anything else is the thread failing (its error event).
  if (!(error instanceof SyntaxError)) throw error;
  parentPort?.postMessage({ error: error.message });
}
