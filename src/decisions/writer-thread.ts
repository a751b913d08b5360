import { Worker } from 'node:worker_threads';
import { ArbiterError } from '../errors.ts';
import type { CheckpointKey } from './chain.ts';
import type { RetentionPolicy } from './retention.ts';
import type { ChainLink, CheckpointPolicy, PreparedDecision } from './writer.ts';

/** What the writer thread is started with (cloned into it; KeyObjects clone). */
export interface WriterSetup {
  path: string;
  synchronous: 'FULL' | 'NORMAL';
  busyTimeoutMs: number;
  key: CheckpointKey;
  checkpoint: CheckpointPolicy;
}

export type WriterRequest =
  | { id: number; op: 'commit'; batch: PreparedDecision[] }
  | { id: number; op: 'checkpoint'; force: boolean }
  | { id: number; op: 'prune'; policy: RetentionPolicy; now: number; stepRecords: number }
  | { id: number; op: 'close' };

export type WriterReply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: { message: string } };

/** Per record of a batch: where it landed in the chain, or why it was not committed. */
export type CommitOutcome = { ok: true; link: ChainLink } | { ok: false; message: string };

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/**
 * The main-thread side of the writer thread: requests go in order, replies settle their
 * promise. If the thread dies, every pending and later request fails: the log is then
 * unavailable, which strict mode turns into denials rather than unlogged decisions.
 */
export class WriterThread {
  readonly #worker: Worker;
  readonly #pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  #nextId = 1;
  #failure: Error | undefined;
  #closing = false;

  static async start(setup: WriterSetup): Promise<WriterThread> {
    const worker = new Worker(new URL('./writer-worker.ts', import.meta.url), { workerData: setup });
    let onExit: (code: number) => void = () => undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        worker.once('message', () => resolve());
        worker.once('error', reject);
        onExit = (code) => reject(new ArbiterError('decision_log_unavailable', `decision log writer exited (${code}) while opening`));
        worker.once('exit', onExit);
      });
    } finally {
      worker.removeAllListeners('error');
      worker.removeListener('exit', onExit);
    }
    return new WriterThread(worker);
  }

  private constructor(worker: Worker) {
    this.#worker = worker;
    worker.unref();
    worker.on('message', (reply: WriterReply) => {
      const waiter = this.#pending.get(reply.id);
      if (!waiter) return;
      this.#pending.delete(reply.id);
      if (this.#pending.size === 0) worker.unref();
      if (reply.ok) waiter.resolve(reply.result);
      else waiter.reject(new ArbiterError('decision_log_write_failed', reply.error.message));
    });
    worker.on('error', (error) => this.#fail(error));
    worker.on('exit', (code) => this.#fail(new Error(`writer thread exited with code ${code}`)));
  }

  commit(batch: PreparedDecision[]): Promise<CommitOutcome[]> {
    return this.#request({ op: 'commit', batch }) as Promise<CommitOutcome[]>;
  }

  checkpoint(force: boolean): Promise<boolean> {
    return this.#request({ op: 'checkpoint', force }) as Promise<boolean>;
  }

  prune(policy: RetentionPolicy, now: number, stepRecords: number): Promise<number> {
    return this.#request({ op: 'prune', policy, now, stepRecords }) as Promise<number>;
  }

  /** Signs a final checkpoint, closes the database and ends the thread. */
  async close(): Promise<void> {
    this.#closing = true;
    await this.#request({ op: 'close' });
    await this.#worker.terminate();
  }

  #request(request: DistributiveOmit<WriterRequest, 'id'>): Promise<unknown> {
    if (this.#failure) return Promise.reject(this.#failure);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      // Keep the process alive while the thread holds work a caller is waiting for.
      this.#worker.ref();
      this.#worker.postMessage({ ...request, id });
    });
  }

  #fail(cause: Error): void {
    this.#failure ??= this.#closing
      ? new ArbiterError('decision_log_closed', 'the decision log is closed')
      : new ArbiterError('decision_log_unavailable', `decision log writer stopped: ${cause.message}`, { cause });
    for (const waiter of this.#pending.values()) waiter.reject(this.#failure);
    this.#pending.clear();
  }
}
