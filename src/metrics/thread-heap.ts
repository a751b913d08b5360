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

/** Reads a worker thread's heap under the name /metrics labels it with. */
export async function workerHeap(thread: string, worker: Worker): Promise<ThreadHeap> {
  const heap = await worker.getHeapStatistics();
  return { thread, usedBytes: heap.used_heap_size, totalBytes: heap.total_heap_size };
}
