import SEAL from 'node-seal/throws_wasm_node_umd.js';
import { initSeal, type SealRuntime } from '../he';

let runtime: Promise<SealRuntime> | undefined;

/** SEAL for Node processes (CLI, backend, tests, benchmarks): one WASM instance per process. */
export function nodeSeal(): Promise<SealRuntime> {
  runtime ??= initSeal(SEAL);
  return runtime;
}
