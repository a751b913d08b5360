import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { opaCanonicalJson } from './canonical-json.ts';

/** A structured file at most this large is hashed on the calling thread: starting a thread costs more. */
const INLINE_BYTES = 256 * 1024;

export interface CanonicalDigestRequest {
  bytes: Uint8Array;
  /** A node:crypto hash name (sha256, ...). */
  algorithm: string;
  /** Whether a file that is not JSON is read as YAML (see opaCanonicalJson). */
  yaml: boolean;
}

/** The hex digest of a structured file's canonical form; throws a SyntaxError when it cannot be parsed. */
export function canonicalDigestOf({ bytes, algorithm, yaml }: CanonicalDigestRequest): string {
  let canonical: string;
  try {
    canonical = opaCanonicalJson(new TextDecoder().decode(bytes), { yaml });
  } catch (error) {
    // The YAML parser throws its own errors: one kind for every file that cannot be read.
    throw error instanceof SyntaxError ? error : new SyntaxError((error as Error).message, { cause: error });
  }
  return createHash(algorithm).update(canonical).digest('hex');
}

/**
 * canonicalDigestOf, on a thread of its own for a file past INLINE_BYTES. The canonical form is
 * read value by value (a reviver keeps each number's literal): a 32 MiB data.json of small
 * numbers took ~25 s and 2 GB of heap here, and it runs before the digest is compared, so a file
 * swapped in beside a signature replayed from any published bundle would otherwise hold every
 * decision that long. Rejects with a SyntaxError when the file cannot be parsed, with another
 * error when the thread stops without an answer (out of memory, say, or `signal` aborted), which
 * says nothing of the file.
 */
export function canonicalDigest(request: CanonicalDigestRequest, signal?: AbortSignal): Promise<string> {
  if (request.bytes.byteLength <= INLINE_BYTES) {
    try {
      return Promise.resolve(canonicalDigestOf(request));
    } catch (error) {
      return Promise.reject(error as Error);
    }
  }
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new Error('stopped before it started'));
      return;
    }
    const worker = new Worker(new URL('./canonical-digest-worker.ts', import.meta.url), { workerData: request });
    // A shutdown waits for a pull being checked: this thread may run for many seconds past it.
    const stop = () => void worker.terminate();
    signal?.addEventListener('abort', stop, { once: true });
    let answer: { digest: string } | { error: string } | undefined;
    worker.once('message', (message: { digest: string } | { error: string }) => {
      answer = message;
    });
    // Whatever the thread failed with (a SyntaxError loading it, even) says nothing of the file.
    worker.once('error', (error) => reject(new Error(`the thread computing the digest failed: ${error.message}`, { cause: error })));
    worker.once('exit', (code) => {
      signal?.removeEventListener('abort', stop);
      if (answer === undefined) reject(new Error(`the thread computing the digest stopped (exit code ${code}) without an answer`));
      else if ('digest' in answer) resolve(answer.digest);
      else reject(new SyntaxError(answer.error));
    });
  });
}
