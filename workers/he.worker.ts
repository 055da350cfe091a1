/// <reference lib="webworker" />
// The HE worker: SEAL's WASM (node-seal's ES worker build) behind comlink. All logic is
// in src/edge/he-service.ts; results go back transferred, never copied.
import * as Comlink from 'comlink';
import SEAL from 'node-seal/throws_wasm_worker_es';
import { initSeal, type SealRuntime } from '../src/he';
import { HeService } from '../src/edge/he-service';

let runtime: Promise<SealRuntime> | undefined;
const service = new HeService(() => (runtime ??= initSeal(SEAL)));
Comlink.expose({
  load: service.load.bind(service),
  heapBytes: service.heapBytes.bind(service),
  dispose: service.dispose.bind(service),
  evaluate: async (features: Float32Array) => {
    const frame = await service.evaluate(features);
    return Comlink.transfer(frame, [frame.result.buffer]);
  },
  evaluateShare: async (features: Float32Array, index: number, count: number) => {
    const share = await service.evaluateShare(features, index, count);
    return Comlink.transfer(share, [share.partial.buffer]);
  },
  finish: async (partials: Uint8Array[]) => {
    const frame = await service.finish(partials);
    return Comlink.transfer(frame, [frame.result.buffer]);
  },
});
