import type { Worker } from 'node:worker_threads';

/**
 * The V8 heap of one worker thread (evaluation workers, the decision log writer), for
 * arbiter_thread_heap_bytes. Its own module: the writer thread loads its neighbour
 * writer-thread.ts, and should not load the metrics registry with it.
 */
export interface ThreadHeap {
  thread: string;
  usedBytes: number;
  totalBytes: number;
}

/**
 * How long a scrape waits for one thread to tell what /metrics reports of it. A thread can be
 * busy for long outside JavaScript's reach: an evaluation worker running a module's own code
 * while it loads, takes live data or is checked (up to engine.load_deadline_ms, two minutes by
 * default), the decision log writer waiting on a lock or a slow disk. Waiting for it would
 * time the whole scrape out at Prometheus just when it matters; the thread is left out of
 * that scrape instead.
 */
export const THREAD_READ_TIMEOUT_MS = 1000;

/** `answer`, or undefined when it has not settled (or has failed) within THREAD_READ_TIMEOUT_MS. */
export async function answeredInTime<T>(answer: Promise<T>): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), THREAD_READ_TIMEOUT_MS).unref();
  });
  try {
    return await Promise.race([answer.catch(() => undefined), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Reads a worker thread's heap under the name /metrics labels it with. */
export async function workerHeap(thread: string, worker: Worker): Promise<ThreadHeap> {
  const heap = await worker.getHeapStatistics();
  return { thread, usedBytes: heap.used_heap_size, totalBytes: heap.total_heap_size };
}
