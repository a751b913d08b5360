import type { Worker } from 'node:worker_threads';

/**
 * Once armed, stops the real evaluation worker that is sent a module check (as a crash would stop
 * it), then its replacement as soon as it is created: the check is never answered, and the pool
 * gives up on it (wasm_check_interrupted). Does so for the next `times` checks. Watches every
 * worker the process creates from now on; `dispose` stops watching.
 */
export function stopWorkersAtNextCheck(times = 1): { arm(): void; readonly stops: number; dispose(): void } {
  let armed = false;
  let stops = 0;
  let replacementToStop = false;
  const onWorker = (worker: Worker) => {
    if (replacementToStop) {
      replacementToStop = false;
      stops += 1;
      void worker.terminate();
    }
    const post = worker.postMessage.bind(worker);
    worker.postMessage = (message: { type?: string }, ...rest: never[]) => {
      // Stopped first, so it cannot answer the check before it stops.
      if (message?.type === 'check' && armed && stops < 2 * times && !replacementToStop) {
        stops += 1;
        replacementToStop = true;
        void worker.terminate();
      }
      post(message, ...rest);
    };
  };
  process.on('worker', onWorker);
  return {
    arm: () => void (armed = true),
    get stops() {
      return stops;
    },
    dispose: () => void process.off('worker', onWorker),
  };
}
