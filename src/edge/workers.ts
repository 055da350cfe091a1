/** Web Workers for the HE pool: comlink-wrapped module workers (workers/he.worker.ts). */
import * as Comlink from 'comlink';
import type { HeServiceApi } from './he-service';
import type { WorkerHandle } from './pool';

export function createHeWorker(index: number): WorkerHandle {
  const worker = new Worker(new URL('../../workers/he.worker.ts', import.meta.url), { type: 'module', name: `he-${index}` });
  const api = Comlink.wrap<HeServiceApi>(worker);
  let onDeath: ((reason: Error) => void) | undefined;
  worker.addEventListener('error', (event) => {
    event.preventDefault();
    onDeath?.(new Error(event.message || 'worker error'));
  });
  worker.addEventListener('messageerror', () => onDeath?.(new Error('worker message error')));
  return {
    load: (params, keys, weights) => api.load(params, Comlink.transfer(keys, [keys]), Comlink.transfer(weights, [weights])),
    evaluate: (features) => api.evaluate(Comlink.transfer(features, [features.buffer])),
    evaluateShare: (features, index, count) => api.evaluateShare(Comlink.transfer(features, [features.buffer]), index, count),
    finish: (partials) => api.finish(Comlink.transfer(partials, partials.map((p) => p.buffer))),
    heapBytes: () => api.heapBytes(),
    onDeath: (callback) => (onDeath = callback),
    // Idempotent; the comlink proxy is not released (that would message a dead worker).
    terminate: () => worker.terminate(),
  };
}
