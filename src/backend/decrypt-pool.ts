import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import { HeError } from '../he';
import type { Decrypted, Decryptor } from './decrypt';
import type { DecryptReply, DecryptTask, DecryptWorkerData } from './decrypt-protocol';

const WORKER = new URL('./decrypt-worker.mjs', import.meta.url).href;

/** The most decryption threads a pool may have. */
export const MAX_DECRYPT_WORKERS = 256;

/** One thread per core but one (the event loop's), at least one. */
export function defaultDecryptWorkers(): number {
  return Math.max(1, availableParallelism() - 1);
}

/**
 * Decryption in worker threads (piscina): `threads` workers, started at once and kept for
 * the pool's life, each with its own DecryptionAgent, so each unwraps a secret key once
 * and keeps it. The workers read key pairs from the store at `storeLocation` (a SQLite
 * file or a PostgreSQL URL; not ':memory:', which another thread cannot see).
 */
export class DecryptionPool implements Decryptor {
  private readonly pool: Piscina<DecryptTask, DecryptReply>;

  constructor(options: { storeLocation: string; kek: Uint8Array; threads: number }) {
    const { storeLocation, kek, threads } = options;
    if (!Number.isInteger(threads) || threads < 1 || threads > MAX_DECRYPT_WORKERS) {
      throw new RangeError(`a decryption pool needs 1 to ${MAX_DECRYPT_WORKERS} threads, got ${String(threads)}`);
    }
    if (typeof storeLocation !== 'string' || storeLocation === '' || storeLocation === ':memory:') {
      throw new RangeError(`decryption workers open the store themselves: give a database file or URL, not ${JSON.stringify(storeLocation)}`);
    }
    if (!(kek instanceof Uint8Array) || kek.byteLength !== 32) throw new RangeError('the key-encryption key must be 32 bytes');
    const workerData: DecryptWorkerData = { storeLocation, kek: new Uint8Array(kek) };
    this.pool = new Piscina<DecryptTask, DecryptReply>({ filename: WORKER, minThreads: threads, maxThreads: threads, idleTimeout: Number.MAX_SAFE_INTEGER, workerData });
  }

  get threads(): number {
    return this.pool.maxThreads;
  }

  /**
   * Eight tasks per thread: the decryption loop claims and writes results in batches of at
   * least half that, and each thread has the next batch queued while it decrypts one.
   */
  get concurrency(): number {
    return 8 * this.pool.maxThreads;
  }

  /**
   * Sends the ciphertext to a thread by moving its memory rather than copying it: a
   * ciphertext that spans its own ArrayBuffer is moved as it is (it is empty here
   * afterwards); one that is a view into a larger buffer is copied once, and the copy moved.
   */
  async decrypt(keyId: string, result: Uint8Array): Promise<Decrypted> {
    const own = result.buffer instanceof ArrayBuffer && result.byteOffset === 0 && result.byteLength === result.buffer.byteLength;
    const bytes = own ? result : new Uint8Array(result);
    const reply = await this.pool.run({ keyId, result: bytes }, { transferList: [bytes.buffer as ArrayBuffer] });
    if (!reply.ok) throw new HeError(reply.code, reply.message);
    return { scheme: reply.scheme, scores: reply.scores, noiseBudgetBits: reply.noiseBudgetBits };
  }

  /** Stops the threads; tasks still queued are rejected. */
  async dispose(): Promise<void> {
    await this.pool.destroy();
  }
}
