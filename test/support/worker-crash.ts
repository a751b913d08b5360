import type { Worker } from 'node:worker_threads';

/**
 * Stops the real evaluation worker that is sent the next module check once armed (as a crash
 * would stop it), then its replacement as soon as it is created: the check is never answered,
 * and the pool gives up on it (wasm_check_interrupted). Watches every worker the process
 * creates from now on; `dispose` stops watching.
 */
export function stopWorkersAtNextCheck(): { arm(): void; readonly stops: number; dispose(): void } {
  let armed = false;
  let stops = 0;
  const onWorker = (worker: Worker) => {
    if (stops === 1) {
      stops = 2;
      void worker.terminate();
      return;
    }
    const post = worker.postMessage.bind(worker);
    worker.postMessage = (message: { type?: string }, ...rest: never[]) => {
      // Stopped first, so it cannot answer the check before it stops.
      if (message?.type === 'check' && stops === 0 && armed) {
        stops = 1;
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
