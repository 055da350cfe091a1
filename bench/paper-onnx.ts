/**
 * onnxruntime-node for the paper benchmark, in a module of its own: the steps that
 * measure only the encrypted head do not load it, so its native library stays out of their memory.
 */
import * as ort from 'onnxruntime-node';
import { MNIST_INPUT_SHAPE } from '../src/model/idx';

/** An onnxruntime-node session on one thread: one core per worker process. */
export function onnxSession(model: Uint8Array): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(model, { intraOpNumThreads: 1, interOpNumThreads: 1 });
}

/** Runs a model on one preprocessed MNIST image; returns its single output. */
export async function runOnnx(session: ort.InferenceSession, x: Float32Array): Promise<Float32Array> {
  const out = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', x, [...MNIST_INPUT_SHAPE]) });
  return out[session.outputNames[0]!]!.data as Float32Array;
}
