/**
 * Evaluation worker: runs policy WebAssembly off the main thread so a runaway policy can be
 * stopped (the pool terminates this thread) without stopping the server.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { PolicyEngine, type RawEvaluation } from '../engine.ts';
import { overlay } from '../overlay.ts';
import type { FromWorker, ToWorker, WorkerSettings } from './protocol.ts';

const settings = workerData as WorkerSettings;
const port = parentPort!;
const engines = new Map<string, { engine: PolicyEngine; bundleData: Record<string, unknown> }>();
/** Why an instance is gone: evaluations on it deny with this reason until it is loaded again. */
const failed = new Map<string, string>();
let liveData: Record<string, unknown> = {};
let dataVersion = 0;
// Loads are asynchronous (WebAssembly compilation): one promise chain keeps every message,
// evaluations included, in arrival order behind the load they need.
let queue: Promise<void> = Promise.resolve();

function send(message: FromWorker): void {
  port.postMessage(message);
}

async function load(digest: string, wasm: Uint8Array, bundleData: Record<string, unknown>): Promise<void> {
  try {
    const engine = await PolicyEngine.load(wasm, { maxMemoryPages: settings.maxMemoryPages });
    engine.setData(overlay(liveData, bundleData));
    engines.set(digest, { engine, bundleData });
    failed.delete(digest);
    send({ type: 'loaded', digest });
  } catch (error) {
    send({ type: 'load_failed', digest, message: describe(error) });
  }
}

function evaluate(digest: string, entrypoint: string, input: string): RawEvaluation {
  const loaded = engines.get(digest);
  if (!loaded) return { ok: false, code: 'policy_error', message: failed.get(digest) ?? `bundle revision ${digest} could not be loaded` };
  return loaded.engine.evaluateRaw(entrypoint, input);
}

send({ type: 'ready' });

port.on('message', (message: ToWorker) => {
  // A failed message must not break the chain: every later message still runs, in order.
  queue = queue.then(() => handle(message)).catch((error: unknown) => {
    send({ type: 'worker_error', message: `${message.type} failed: ${describe(error)}` });
  });
});

async function handle(message: ToWorker): Promise<void> {
  switch (message.type) {
    case 'load':
      return load(message.digest, message.wasm, message.bundleData);
    case 'unload':
      engines.delete(message.digest);
      failed.delete(message.digest);
      return;
    case 'data':
      liveData = JSON.parse(message.json) as Record<string, unknown>;
      dataVersion = message.version;
      for (const [digest, { engine, bundleData }] of engines) {
        try {
          engine.setData(overlay(liveData, bundleData));
        } catch (error) {
          // An instance whose data could not be set must not answer on stale or half data.
          engines.delete(digest);
          const reason = `live data version ${message.version} could not be applied: ${describe(error)}`;
          failed.set(digest, reason);
          send({ type: 'worker_error', message: `${digest}: ${reason}` });
        }
      }
      send({ type: 'data_applied', version: message.version });
      return;
    case 'evaluate':
      send({ type: 'result', id: message.id, evaluation: evaluate(message.digest, message.entrypoint, message.input), dataVersion });
      return;
    case 'instances':
      send({ type: 'instances', digests: [...engines.keys()] });
      return;
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
