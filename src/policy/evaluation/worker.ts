/**
 * Evaluation worker: runs policy WebAssembly off the main thread so a runaway policy can be
 * stopped (the pool terminates this thread) without stopping the server.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { BundleRejectedError, errorMessage } from '../../errors.ts';
import { dataFailure, PolicyEngine, type EvaluationFailureCode, type RawEvaluation } from '../engine.ts';
import { overlay, type BundleLayer } from '../overlay.ts';
import { checkPolicyWasm } from '../wasm-check.ts';
import type { FromWorker, ToWorker, WorkerSettings } from './protocol.ts';

const settings = workerData as WorkerSettings;
const port = parentPort!;
const engines = new Map<string, { engine: PolicyEngine; layer: BundleLayer }>();
/** Why an instance is gone: evaluations on it deny with this reason until it is loaded again. */
const failed = new Map<string, { code: EvaluationFailureCode; message: string }>();
let liveData: Record<string, unknown> = {};
let dataVersion = 0;
// Loads are asynchronous (WebAssembly compilation): one promise chain keeps every message,
// evaluations included, in arrival order behind the load they need.
let queue: Promise<void> = Promise.resolve();

function send(message: FromWorker): void {
  port.postMessage(message);
}

async function load(digest: string, wasm: Uint8Array, layer: BundleLayer): Promise<void> {
  send({ type: 'busy', digest });
  let engine: PolicyEngine;
  try {
    engine = await PolicyEngine.load(wasm, { maxMemoryPages: settings.maxMemoryPages });
  } catch (error) {
    send({ type: 'load_failed', digest, code: 'policy_error', message: errorMessage(error), dataVersion });
    return;
  }
  // A module that compiles but cannot take today's live data (too big for its memory ceiling) may take the next version.
  const failure = setData(engine, layer);
  if (failure) {
    send({ type: 'load_failed', digest, ...failure, dataVersion });
    return;
  }
  engines.set(digest, { engine, layer });
  failed.delete(digest);
  send({ type: 'loaded', digest });
}

/** Sets the live data, overlaid with the bundle's own, in an instance; why it could not, if it could not. */
function setData(engine: PolicyEngine, layer: BundleLayer): { code: EvaluationFailureCode; message: string } | undefined {
  try {
    engine.setData(overlay(liveData, layer));
    return undefined;
  } catch (error) {
    return dataFailure(error, dataVersion);
  }
}

function evaluate(digest: string, entrypoint: string, input: string): RawEvaluation {
  const loaded = engines.get(digest);
  if (!loaded) return { ok: false, ...(failed.get(digest) ?? { code: 'policy_error', message: `bundle revision ${digest} could not be loaded` }) };
  return loaded.engine.evaluateRaw(entrypoint, input);
}

send({ type: 'ready' });

port.on('message', (message: ToWorker) => {
  // A failed message must not break the chain: every later message still runs, in order.
  queue = queue.then(() => handle(message)).catch((error: unknown) => {
    send({ type: 'worker_error', message: `${message.type} failed: ${errorMessage(error)}` });
  });
});

async function handle(message: ToWorker): Promise<void> {
  switch (message.type) {
    case 'load':
      return load(message.digest, message.wasm, message.layer);
    case 'unload':
      engines.delete(message.digest);
      failed.delete(message.digest);
      return;
    case 'data':
      liveData = JSON.parse(message.json) as Record<string, unknown>;
      dataVersion = message.version;
      for (const [digest, { engine, layer }] of engines) {
        send({ type: 'busy', digest });
        const failure = setData(engine, layer);
        if (!failure) continue;
        // An instance whose data could not be set must not answer on stale or half data. The
        // pool hears of it before data_applied, so it answers with the reason and loads the
        // revision afresh with the next data version.
        engines.delete(digest);
        failed.set(digest, failure);
        send({ type: 'dropped', digest, ...failure, dataVersion });
      }
      send({ type: 'data_applied', version: message.version });
      return;
    case 'evaluate':
      send({ type: 'result', id: message.id, evaluation: evaluate(message.digest, message.entrypoint, message.input), dataVersion });
      return;
    case 'instances':
      send({ type: 'instances', digests: [...engines.keys()] });
      return;
    case 'check':
      send({ type: 'checking', id: message.id });
      try {
        send({ type: 'checked', id: message.id, info: checkPolicyWasm(message.wasm, message.manifest) });
      } catch (error) {
        const check = error instanceof BundleRejectedError ? error.check : 'wasm_instantiate';
        send({ type: 'checked', id: message.id, rejected: { check, message: errorMessage(error) } });
      }
      return;
  }
}
