import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { BundleRejectedError, errorMessage } from '../../errors.ts';
import { answeredInTime, workerHeap, type ThreadHeap } from '../../metrics/thread-heap.ts';
import type { EvaluationFailureCode } from '../engine.ts';
import type { Manifest } from '../manifest.ts';
import type { PolicyWasmInfo } from '../wasm-check.ts';
import { bundleFields, inputJson, type EvaluableBundle, type EvaluationInput, type PolicyEvaluation, type PolicyEvaluator, type PolicyInstances } from './evaluator.ts';
import type { FromWorker, ToWorker, WorkerSettings } from './protocol.ts';

/** Retired revisions remembered: far more than decisions can be holding at once. */
const MAX_RETIRED = 1024;

export interface EvaluationPoolOptions {
  workers: number;
  /** An evaluation still running after this long is stopped: deny with policy_timeout. */
  deadlineMs: number;
  /**
   * Loading a module, or setting live data in one, still running after this long is stopped:
   * the module's own code (its JSON parser, its allocator) runs then, outside any evaluation.
   */
  loadDeadlineMs?: number;
  maxMemoryPages: number;
  /** Evaluations sent to one worker before waiting for answers: hides the message round trip. */
  maxInFlightPerWorker?: number;
  logger: Logger;
}

interface Job {
  id: number;
  bundle: EvaluableBundle;
  entrypoint: string;
  input: EvaluationInput;
  resolve(evaluation: PolicyEvaluation): void;
  /** The deadline, running only while the worker executes this job. */
  timer?: NodeJS.Timeout | undefined;
  /**
   * Run again once already after its worker crashed: a second crash denies it (it may be the cause).
   * A worker stopped at another job's deadline does not count: that job was the cause.
   */
  requeued: boolean;
}

/** Why a module cannot serve on a worker: evaluations on it deny with this until the next live data version. */
interface ModuleFailure {
  code: EvaluationFailureCode;
  message: string;
}

type ModuleState = 'loading' | 'loaded' | ModuleFailure;

/** A module sent to a worker for checkPolicyWasm, and who waits for the answer. */
interface PendingCheck {
  wasm: Uint8Array<ArrayBuffer>;
  manifest: Pick<Manifest, 'wasm'>;
  resolve(info: PolicyWasmInfo): void;
  reject(error: Error): void;
  /** Sent again after its worker stopped: a second stop fails it (the check may be what stops it). */
  resent?: boolean;
}

/** What a worker runs outside evaluations, on the load deadline: a module's load or data update, or a check. */
type BusyWith = { digest: string } | { check: number };

interface Slot {
  worker: Worker;
  ready: boolean;
  /** Live data updates sent but not yet applied: evaluations wait, so the update does not eat their deadline. */
  dataPending: number;
  modules: Map<string, ModuleState>;
  /** Sent to the worker, in the order it runs them: the first is running, on its deadline; the others queue. */
  inFlight: Map<number, Job>;
  /**
   * Assigned to this worker, waiting until it has started, applied the live data, loaded
   * every module sent (not just the job's) and answered every check, so only evaluations are
   * ever queued ahead of one sent.
   */
  waiting: Job[];
  /** Callers of policyInstances waiting for this worker's answer; it answers in the order asked. */
  instanceQueries: ((digests: string[] | undefined) => void)[];
  /** Checks sent to this worker, unanswered. */
  checks: Map<number, PendingCheck>;
  /** The module code the worker runs outside an evaluation (loading, setting data, a check), on the load deadline. */
  busy?: { with: BusyWith; timer: NodeJS.Timeout } | undefined;
}

/**
 * Evaluates policies on worker threads. The main thread keeps serving HTTP and verifying
 * tokens; a policy that loops is stopped at its deadline by terminating its worker, which is
 * replaced at once, so one bad input costs one deny, not the server. The deadline covers
 * evaluation only: starting a worker, applying live data and compiling a module happen before
 * it begins, and so do the evaluations sent ahead of it (up to maxInFlightPerWorker, to hide
 * the message round trip): its clock starts when the one before it has answered.
 */
export class EvaluationPool implements PolicyEvaluator {
  readonly #options: Required<EvaluationPoolOptions>;
  readonly #slots: Slot[] = [];
  readonly #queue: Job[] = [];
  /** Revisions that no longer serve, oldest first: an instance of one lives only while its evaluations do. */
  readonly #retired = new Set<string>();
  /**
   * Modules that did not finish loading or taking live data within the load deadline: their
   * evaluations deny at once instead of hanging another worker, until the live data changes.
   */
  readonly #hung = new Map<string, ModuleFailure>();
  /**
   * Each revision sent to a worker, for the log lines naming it and to load it again when a worker
   * could not hold it: set when a module is sent to load (not per evaluation), forgotten when it
   * is unloaded everywhere. The registry holds a serving revision's bundle anyway.
   */
  readonly #bundles = new Map<string, EvaluableBundle>();
  #nextId = 1;
  #data = { json: '{}', version: 0 };
  /**
   * Why the current live data version could not be sent to the workers (too large to serialize):
   * they hold the version before, on which no evaluation may answer (a grant removed since would
   * still allow), so every evaluation denies with this until a version that can be sent arrives.
   */
  #dataFailure: ModuleFailure | undefined;
  #closed = false;

  constructor(options: EvaluationPoolOptions) {
    this.#options = { maxInFlightPerWorker: 16, loadDeadlineMs: 120_000, ...options };
    for (let i = 0; i < options.workers; i++) this.#slots.push(this.#spawn());
  }

  evaluate(bundle: EvaluableBundle, entrypoint: string, input: EvaluationInput): Promise<PolicyEvaluation> {
    if (this.#closed) return Promise.resolve(this.#failure('policy_error', 'the evaluation pool is closed'));
    return new Promise((resolve) => {
      this.#queue.push({ id: this.#nextId++, bundle, entrypoint, input, resolve, requeued: false });
      this.#dispatch();
    });
  }

  checkModule(wasm: Uint8Array<ArrayBuffer>, manifest: Pick<Manifest, 'wasm'>): Promise<PolicyWasmInfo> {
    if (this.#closed) return Promise.reject(new Error('the evaluation pool is closed'));
    return new Promise((resolve, reject) => {
      // On the least busy worker, past the in-flight cap if need be: a push waits behind evaluations, never in the queue.
      const slot = this.#slots.reduce((best, s) => (assigned(s) < assigned(best) ? s : best));
      this.#sendCheck(slot, this.#nextId++, { wasm, manifest, resolve, reject });
    });
  }

  #sendCheck(slot: Slot, id: number, check: PendingCheck): void {
    slot.checks.set(id, check);
    this.#post(slot, { type: 'check', id, wasm: check.wasm, manifest: check.manifest });
  }

  setLiveData(data: Record<string, unknown>, version: number): void {
    let json: string;
    try {
      json = JSON.stringify(data);
    } catch (error) {
      // data.max_size_bytes is unbounded; V8's longest string (about 512 MiB) is not.
      this.#data = { json: '{}', version };
      this.#dataFailure = { code: 'policy_resource_limit', message: `live data version ${version} cannot be given to the evaluation workers: ${(error as Error).message}` };
      this.#options.logger.error({ data_version: version, err: error }, 'live data could not be serialized for the evaluation workers; evaluations deny until the next data version');
      return;
    }
    this.#data = { json, version };
    this.#dataFailure = undefined;
    // As for modules that failed to load: other data may load, so they get another chance.
    this.#hung.clear();
    for (const slot of this.#slots) {
      this.#sendData(slot);
      // A module that failed to load, or to take the previous data, gets another chance with this version.
      for (const [digest, state] of slot.modules) if (typeof state === 'object') this.#reload(slot, digest);
    }
  }

  /**
   * Frees the revision's instances once no queued or running evaluation needs them. A decision
   * that picked the revision before its release may still ask for it: it is loaded for that
   * evaluation and freed again after, until the revision is retained again.
   */
  release(digest: string): void {
    this.#retired.delete(digest);
    this.#retired.add(digest);
    // Remembered long enough for any decision still holding the revision, not forever (pull mode retires one per change).
    if (this.#retired.size > MAX_RETIRED) this.#retired.delete(this.#retired.values().next().value!);
    this.#unloadIfUnused(digest);
  }

  /** The revision serves again (a rollback): its instances stay between evaluations. */
  retain(digest: string): void {
    this.#retired.delete(digest);
  }

  /**
   * What each worker itself holds (not what the pool believes it holds); a worker being replaced
   * is left out, and with `inTime` one that does not answer within THREAD_READ_TIMEOUT_MS: it
   * answers between jobs, and may be running a module's load or check until the load deadline.
   */
  async policyInstances(options: { inTime?: boolean } = {}): Promise<PolicyInstances[]> {
    if (this.#closed) return [];
    const answers = await Promise.all(
      this.#slots.map((slot, index) => {
        const answer = new Promise<PolicyInstances | undefined>((resolve) => {
          slot.instanceQueries.push((digests) => resolve(digests && { thread: `evaluator-${index}`, digests }));
          this.#post(slot, { type: 'instances' });
        });
        return options.inTime ? answeredInTime(answer) : answer;
      }),
    );
    return answers.filter((answer) => answer !== undefined);
  }

  liveDataFailure(): string | undefined {
    return this.#dataFailure?.message;
  }

  /** What a worker last reported of the revision with the current live data (hung, or unable to take it), if it cannot serve. */
  revisionFailure(digest: string): ModuleFailure | undefined {
    const hung = this.#hung.get(digest);
    if (hung) return hung;
    for (const slot of this.#slots) {
      const state = slot.modules.get(digest);
      if (typeof state === 'object') return state;
    }
    return undefined;
  }

  /** The V8 heap of each worker; a worker being replaced, or one that does not answer in time, is left out. */
  async heapStatistics(): Promise<ThreadHeap[]> {
    const heaps = await Promise.all(this.#slots.map((slot, index) => answeredInTime(workerHeap(`evaluator-${index}`, slot.worker))));
    return heaps.filter((heap) => heap !== undefined);
  }

  async close(): Promise<void> {
    this.#closed = true;
    const pending = [...this.#queue.splice(0), ...this.#slots.flatMap((slot) => [...slot.waiting.splice(0), ...slot.inFlight.values()])];
    for (const job of pending) {
      clearTimeout(job.timer);
      job.resolve(this.#failure('policy_error', 'the evaluation pool is closed'));
    }
    for (const slot of this.#slots) {
      slot.inFlight.clear();
      this.#forgetQueries(slot);
      this.#idle(slot);
      for (const check of slot.checks.values()) check.reject(new Error('the evaluation pool is closed'));
      slot.checks.clear();
    }
    await Promise.all(this.#slots.map((slot) => slot.worker.terminate()));
  }

  #spawn(): Slot {
    const settings: WorkerSettings = { maxMemoryPages: this.#options.maxMemoryPages };
    const worker = new Worker(new URL('./worker.ts', import.meta.url), { workerData: settings });
    const slot: Slot = { worker, ready: false, dataPending: 0, modules: new Map(), inFlight: new Map(), waiting: [], instanceQueries: [], checks: new Map() };
    worker.on('message', (message: FromWorker) => this.#onMessage(slot, message));
    worker.on('error', (error) => this.#onCrash(slot, error));
    worker.on('exit', (code) => {
      if (!this.#closed && this.#slots.includes(slot)) this.#onCrash(slot, new Error(`evaluation worker exited with code ${code}`));
    });
    this.#sendData(slot);
    return slot;
  }

  #sendData(slot: Slot): void {
    slot.dataPending += 1;
    this.#post(slot, { type: 'data', json: this.#data.json, version: this.#data.version });
  }

  #post(slot: Slot, message: ToWorker): void {
    slot.worker.postMessage(message);
  }

  #dispatch(): void {
    while (this.#queue.length > 0) {
      const slot = this.#leastBusy();
      if (!slot) return;
      this.#assign(slot, this.#queue.shift()!);
    }
  }

  #assign(slot: Slot, job: Job): void {
    if (this.#dataFailure) {
      this.#settle(job, this.#failure(this.#dataFailure.code, this.#dataFailure.message));
      return;
    }
    const { digest } = job.bundle;
    const hung = this.#hung.get(digest);
    if (hung) {
      this.#settle(job, this.#failure(hung.code, hung.message));
      return;
    }
    const state = slot.modules.get(digest);
    if (typeof state === 'object') {
      this.#settle(job, this.#failure(state.code, state.message));
      return;
    }
    if (state === undefined) this.#load(slot, job.bundle);
    // A check runs module code too: an evaluation sent behind one would start its deadline while the check runs.
    if (!slot.ready || slot.dataPending > 0 || slot.modules.get(digest) !== 'loaded' || loading(slot) || slot.checks.size > 0) {
      slot.waiting.push(job);
      return;
    }
    // Built now: the worker has every live data version sent so far and takes messages in order,
    // so the job runs on the data current at this moment, which the input then describes.
    let input: string;
    try {
      input = inputJson(job.input);
    } catch (error) {
      // Often called from a worker's message: a throw would be uncaught, and the job never answered.
      this.#settle(job, this.#failure('policy_error', `the policy input could not be built: ${errorMessage(error)}`));
      return;
    }
    slot.inFlight.set(job.id, job);
    this.#post(slot, { type: 'evaluate', id: job.id, digest, entrypoint: job.entrypoint, input });
    if (slot.inFlight.size === 1) this.#startDeadline(slot, job);
  }

  #load(slot: Slot, bundle: EvaluableBundle): void {
    if (!this.#bundles.has(bundle.digest)) this.#bundles.set(bundle.digest, bundle);
    this.#post(slot, { type: 'load', digest: bundle.digest, wasm: bundle.wasm, layer: { data: bundle.data, roots: bundle.roots } });
    slot.modules.set(bundle.digest, 'loading');
  }

  /**
   * A module the worker no longer holds, after a live data version it could not take: a serving
   * revision is loaded again at once with the data sent since, so what the worker reports of it
   * (/readyz) follows the live data without waiting for a decision (one out of rotation gets none).
   * A retired one is loaded only if an evaluation asks for it.
   */
  #reload(slot: Slot, digest: string): void {
    const bundle = this.#bundles.get(digest);
    if (bundle && !this.#retired.has(digest)) this.#load(slot, bundle);
    else slot.modules.delete(digest);
  }

  /** The worker runs one evaluation at a time, in order: only the one it is running is on the clock. */
  #startDeadline(slot: Slot, job: Job): void {
    job.timer = setTimeout(() => this.#onDeadline(slot, job), this.#options.deadlineMs);
  }

  #leastBusy(): Slot | undefined {
    let best: Slot | undefined;
    for (const slot of this.#slots) {
      if (assigned(slot) >= this.#options.maxInFlightPerWorker) continue;
      if (!best || assigned(slot) < assigned(best)) best = slot;
    }
    return best;
  }

  #onMessage(slot: Slot, message: FromWorker): void {
    // A replaced worker's messages still arrive after terminate(): its jobs and checks went to
    // its replacement, and a late busy would start a load deadline that marks its module hung.
    // So do a closed pool's: its jobs are answered, and a late busy's deadline would start a
    // replacement worker that nothing ever stops.
    if (this.#closed || !this.#slots.includes(slot)) return;
    switch (message.type) {
      case 'ready':
        slot.ready = true;
        return this.#resume(slot);
      case 'busy':
        return this.#onBusy(slot, { digest: message.digest });
      case 'checking':
        return this.#onBusy(slot, { check: message.id });
      case 'checked': {
        this.#idle(slot);
        const check = slot.checks.get(message.id);
        slot.checks.delete(message.id);
        if ('info' in message) check?.resolve(message.info);
        else check?.reject(new BundleRejectedError(message.rejected.check, message.rejected.message));
        return this.#resume(slot);
      }
      case 'loaded':
        this.#idle(slot);
        if (slot.modules.get(message.digest) === 'loading') slot.modules.set(message.digest, 'loaded');
        return this.#resume(slot);
      case 'data_applied':
        this.#idle(slot);
        slot.dataPending -= 1;
        return this.#resume(slot);
      case 'worker_error':
        this.#idle(slot);
        this.#options.logger.error({ err: message.message }, 'evaluation worker error');
        return;
      case 'load_failed':
        this.#idle(slot);
        this.#options.logger.error({ ...this.#named(message.digest), err: message.message }, 'policy module failed to load in an evaluation worker');
        if (slot.modules.get(message.digest) === 'loading') {
          this.#failed(slot, message.digest, { code: message.code, message: `policy module ${message.digest} cannot be loaded: ${message.message}` }, message.dataVersion);
        }
        return this.#resume(slot);
      case 'dropped':
        this.#options.logger.error({ ...this.#named(message.digest), err: message.message }, 'live data could not be set in a policy instance; its evaluations deny until the next data version');
        // Only the instance the worker had: one loading now was sent after that data, and takes what came since.
        if (slot.modules.get(message.digest) === 'loaded') this.#failed(slot, message.digest, { code: message.code, message: message.message }, message.dataVersion);
        return;
      case 'result': {
        const job = slot.inFlight.get(message.id);
        if (!job) return;
        slot.inFlight.delete(message.id);
        clearTimeout(job.timer);
        // The worker moves on to the next evaluation sent: its clock starts now.
        const next = slot.inFlight.values().next().value;
        if (next && next.timer === undefined) this.#startDeadline(slot, next);
        this.#settle(job, { ...message.evaluation, dataVersion: message.dataVersion });
        return this.#dispatch();
      }
      case 'instances':
        slot.instanceQueries.shift()?.(message.digests);
        return;
    }
  }

  /** Records why a module cannot serve, until the next data version: if one was sent since the failure, it is loaded afresh. */
  #failed(slot: Slot, digest: string, failure: ModuleFailure, dataVersion: number): void {
    // A version that could not be serialized was never sent: loaded again, the module would take
    // the same data, fail again and be loaded again, without end. The next version sent reloads it.
    if (dataVersion < this.#data.version && this.#dataFailure === undefined) this.#reload(slot, digest);
    else slot.modules.set(digest, failure);
  }

  /** A stopped worker answers no more queries: their callers get no answer from it rather than wait forever. */
  #forgetQueries(slot: Slot): void {
    for (const answer of slot.instanceQueries.splice(0)) answer(undefined);
  }

  /** Sends the jobs a worker was waiting to be able to run. */
  #resume(slot: Slot): void {
    const waiting = slot.waiting.splice(0);
    for (const job of waiting) this.#assign(slot, job);
    // Jobs denied on the spot (a module that failed) free room on the worker for queued ones.
    this.#dispatch();
  }

  /** Only the job the worker is running has a deadline: it is the one stuck. */
  #onDeadline(slot: Slot, job: Job): void {
    this.#options.logger.warn(
      { entrypoint: job.entrypoint, ...bundleFields(job.bundle.digest, job.bundle), deadline_ms: this.#options.deadlineMs },
      'policy evaluation exceeded its deadline; restarting its worker',
    );
    slot.inFlight.delete(job.id);
    this.#settle(job, this.#failure('policy_timeout', `evaluation did not finish within ${this.#options.deadlineMs} ms`));
    this.#replace(slot, { culpritKnown: true });
  }

  /** The worker runs a module's own code outside an evaluation: past the load deadline, it is stuck there. */
  #onBusy(slot: Slot, busyWith: BusyWith): void {
    this.#idle(slot);
    slot.busy = { with: busyWith, timer: setTimeout(() => this.#onLoadDeadline(slot, busyWith), this.#options.loadDeadlineMs) };
  }

  #idle(slot: Slot): void {
    clearTimeout(slot.busy?.timer);
    slot.busy = undefined;
  }

  /**
   * Only a hand-made module hangs here (opa build's runtime parses and allocates in bounded
   * time): its revision denies from now on, and the worker, with whatever waited on it, is replaced.
   */
  #onLoadDeadline(slot: Slot, busyWith: BusyWith): void {
    const ms = this.#options.loadDeadlineMs;
    if ('check' in busyWith) {
      this.#options.logger.error({ load_deadline_ms: ms }, 'checking a pushed policy module did not finish within the load deadline; restarting its worker');
      slot.checks.get(busyWith.check)?.reject(new BundleRejectedError('wasm_timeout', `policy.wasm's table functions (entrypoints(), builtins()) did not return within ${ms} ms`));
      slot.checks.delete(busyWith.check);
    } else {
      const { digest } = busyWith;
      this.#options.logger.error(
        { ...this.#named(digest), load_deadline_ms: ms, data_version: this.#data.version },
        'policy module did not finish loading or taking live data within the load deadline; restarting its worker',
      );
      this.#hung.set(digest, {
        code: 'policy_timeout',
        message: `policy module ${digest} did not finish loading or taking live data within ${ms} ms; it denies until the live data changes`,
      });
    }
    this.#replace(slot, { culpritKnown: true });
  }

  #onCrash(slot: Slot, error: Error): void {
    if (this.#closed || !this.#slots.includes(slot)) return;
    this.#options.logger.error({ err: error }, 'evaluation worker failed; replacing it');
    this.#replace(slot, { culpritKnown: false });
  }

  /**
   * `culpritKnown`: the worker was stopped for what one job, module or check did (a deadline),
   * and that one is answered already; the others it held run again as often as it takes (each
   * stop answers one culprit, so this ends). Otherwise (a crash) any of them may be the cause:
   * each runs again once.
   */
  #replace(slot: Slot, { culpritKnown }: { culpritKnown: boolean }): void {
    const index = this.#slots.indexOf(slot);
    if (index === -1) return;
    const replacement = this.#spawn();
    this.#slots[index] = replacement;
    // What the stopped worker found a module cannot do with this data version, the new one would find too.
    for (const [digest, state] of slot.modules) if (typeof state === 'object') replacement.modules.set(digest, state);
    this.#idle(slot);
    void slot.worker.terminate();
    this.#forgetQueries(slot);
    // Checks waiting behind whatever stopped the worker did nothing wrong either: the new one runs them.
    for (const [id, check] of slot.checks) {
      // Not wasm_instantiate: nothing was learnt about the module (a crash elsewhere may have stopped both workers), so a pull tries it again.
      if (check.resent) check.reject(new BundleRejectedError('wasm_check_interrupted', 'the evaluation worker stopped twice before it finished checking policy.wasm: try again'));
      else this.#sendCheck(replacement, id, { ...check, resent: true });
    }
    slot.checks.clear();
    // Jobs sent to or waiting for the stopped worker did nothing wrong: run them again, once.
    const survivors = [...slot.inFlight.values(), ...slot.waiting];
    slot.inFlight.clear();
    slot.waiting.length = 0;
    for (const job of survivors.reverse()) {
      clearTimeout(job.timer);
      job.timer = undefined;
      if (job.requeued && !culpritKnown) {
        this.#settle(job, this.#failure('policy_error', 'evaluation worker stopped twice while this evaluation waited'));
      } else {
        job.requeued ||= !culpritKnown;
        this.#queue.unshift(job);
      }
    }
    this.#dispatch();
  }

  /** Answers a job; a retired revision it was the last to need is unloaded. */
  #settle(job: Job, evaluation: PolicyEvaluation): void {
    job.resolve(evaluation);
    this.#unloadIfUnused(job.bundle.digest);
  }

  /** Unloads a retired revision from every worker once no job needs it; an active one stays. */
  #unloadIfUnused(digest: string): void {
    if (!this.#retired.has(digest)) return;
    const needed = (job: Job) => job.bundle.digest === digest;
    const busy = this.#queue.some(needed) || this.#slots.some((slot) => slot.waiting.some(needed) || [...slot.inFlight.values()].some(needed));
    if (busy) return;
    for (const slot of this.#slots) {
      if (slot.modules.delete(digest)) this.#post(slot, { type: 'unload', digest });
    }
    this.#bundles.delete(digest);
  }

  /** Log fields naming a module by digest, bundle and revision (on failure paths only). */
  #named(digest: string): ReturnType<typeof bundleFields> {
    return bundleFields(digest, this.#bundles.get(digest));
  }

  #failure(code: EvaluationFailureCode, message: string): PolicyEvaluation {
    return { ok: false, code, message, dataVersion: this.#data.version };
  }
}

/** Evaluations a worker has been given and not answered: sent to it, or waiting to be. */
function assigned(slot: Slot): number {
  return slot.inFlight.size + slot.waiting.length;
}

/** Whether a module load is under way: an evaluation sent now would wait behind it, on its deadline. */
function loading(slot: Slot): boolean {
  for (const state of slot.modules.values()) if (state === 'loading') return true;
  return false;
}
