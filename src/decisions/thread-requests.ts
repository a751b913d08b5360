import type { Worker } from 'node:worker_threads';

/** A request as its sender writes it: ThreadRequests numbers it. */
export type Unnumbered<Request> = Request extends unknown ? Omit<Request, 'id'> : never;

/** A worker thread's answer to request `id`: its result, or the error it failed with (as `E` crosses threads). */
export type ThreadReply<E> = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: E };

/**
 * The requests the decision log's main-thread side (WriterThread, DecisionReader) has posted to
 * its worker thread and not yet had answered. Each is numbered, and settled by the reply with its
 * number. The worker is ref'd while a request waits, so the process stays alive for a caller
 * waiting on the thread, and unref'd once none does, so an idle thread never holds it open.
 */
export class ThreadRequests<Request extends { id: number }> {
  readonly #waiting = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  #nextId = 1;

  /** Posts `request` to `worker` under the next number; resolves with the reply's result. */
  post(worker: Worker, request: Unnumbered<Request>): Promise<unknown> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      worker.ref();
      worker.postMessage({ ...request, id });
    });
  }

  /** Settles the request `reply` answers (a failure as `toError` makes it); ignores a reply to none. */
  settle<E>(worker: Worker, reply: ThreadReply<E>, toError: (error: E) => Error): void {
    const waiter = this.#waiting.get(reply.id);
    if (!waiter) return;
    this.#waiting.delete(reply.id);
    if (this.#waiting.size === 0) worker.unref();
    if (reply.ok) waiter.resolve(reply.result);
    else waiter.reject(toError(reply.error));
  }

  /** Rejects every request still waiting with `error`: the thread that held them is gone. */
  rejectAll(error: Error): void {
    for (const waiter of this.#waiting.values()) waiter.reject(error);
    this.#waiting.clear();
  }
}
