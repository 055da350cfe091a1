/**
 * The messages between the backend and its decryption worker threads (decrypt-pool.ts,
 * decrypt-worker.ts). Only bytes and numbers cross: SEAL objects and unwrapped keys stay
 * in the worker that made them.
 */
import type { HeErrorCode } from '../he';

/** What every worker thread starts with: where the key pairs are, and the key that unwraps them. */
export interface DecryptWorkerData {
  storeLocation: string;
  kek: Uint8Array;
}

export interface DecryptTask {
  keyId: string;
  result: Uint8Array;
}

/** A worker's answer: the scores, or why the ciphertext was refused (an HeError, which does not survive the thread boundary as one). */
export type DecryptReply =
  | { ok: true; scheme: 'ckks' | 'bgv'; scores: Float64Array; noiseBudgetBits: number | null }
  | { ok: false; code: HeErrorCode; message: string };
