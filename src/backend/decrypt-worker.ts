/**
 * A decryption worker thread (run by DecryptionPool through decrypt-worker.mjs). Its
 * DecryptionAgent is made once, when the thread starts, and kept for the thread's life:
 * each secret key is unwrapped the first time a task needs it and stays in this thread's
 * memory, with its SEAL context.
 */
import { workerData } from 'node:worker_threads';
import { HeError } from '../he';
import { nodeSeal } from '../node/seal';
import { openStore } from '../store/open';
import { DecryptionAgent } from './decrypt';
import type { DecryptReply, DecryptTask, DecryptWorkerData } from './decrypt-protocol';

const { storeLocation, kek } = workerData as DecryptWorkerData;
const agent: Promise<DecryptionAgent> = (async () => new DecryptionAgent(await nodeSeal(), await openStore(storeLocation), Buffer.from(kek)))();

export default async function decrypt(task: DecryptTask): Promise<DecryptReply> {
  try {
    const { scheme, scores, noiseBudgetBits } = await (await agent).decrypt(task.keyId, task.result);
    return { ok: true, scheme, scores, noiseBudgetBits };
  } catch (error) {
    if (error instanceof HeError) return { ok: false, code: error.code, message: error.message };
    throw error;
  }
}
