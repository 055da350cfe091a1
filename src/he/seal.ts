import type { SEALLibrary } from 'node-seal/implementation/seal';

export type { SEALLibrary };
export type { CipherText } from 'node-seal/implementation/cipher-text';
export type { PlainText } from 'node-seal/implementation/plain-text';
export type { Context } from 'node-seal/implementation/context';
export type { ParmsIdType } from 'node-seal/implementation/parms-id-type';
export type { GaloisKeys } from 'node-seal/implementation/galois-keys';
export type { RelinKeys } from 'node-seal/implementation/relin-keys';
export type { PublicKey } from 'node-seal/implementation/public-key';
export type { SecretKey } from 'node-seal/implementation/secret-key';
export type { Encryptor } from 'node-seal/implementation/encryptor';

/**
 * The one place that knows which node-seal build is in use. Callers pass the build's
 * default export (Node: `node-seal/throws_wasm_node_umd`, a module worker:
 * `node-seal/throws_wasm_worker_es`), so this layer stays free of platform imports.
 */
export interface SealRuntime {
  readonly seal: SEALLibrary;
  /** Current size of the module's WASM memory in bytes (it grows, never shrinks). */
  heapBytes(): number;
}

export type SealLoader = () => Promise<SEALLibrary>;

/**
 * Instantiates SEAL and keeps a handle on its WASM memory, which node-seal does not
 * expose: memories are found among the exports of what is instantiated while SEAL loads.
 * Another module may instantiate in that window (Node's HTTP parser, llhttp, when fetch is
 * first used: 128 KiB), so the heap is the largest of them: SEAL's starts at 16 MiB.
 */
export async function initSeal(load: SealLoader): Promise<SealRuntime> {
  const wasm = WebAssembly as unknown as { instantiate: (...args: unknown[]) => Promise<unknown> };
  const original = wasm.instantiate;
  const memories: WebAssembly.Memory[] = [];
  wasm.instantiate = async (...args: unknown[]) => {
    const result = (await original.apply(WebAssembly, args)) as
      | WebAssembly.Instance
      | WebAssembly.WebAssemblyInstantiatedSource;
    const instance = 'instance' in result ? result.instance : result;
    for (const value of Object.values(instance.exports)) {
      if (value instanceof WebAssembly.Memory) memories.push(value);
    }
    return result;
  };
  let seal: SEALLibrary;
  try {
    seal = await load();
  } finally {
    wasm.instantiate = original;
  }
  return {
    seal,
    heapBytes: () => Math.max(0, ...memories.map((m) => m.buffer.byteLength)),
  };
}
