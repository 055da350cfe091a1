// Runs in Node (no browser needed): the kiosk's HE service and worker pool with real SEAL,
// workers simulated in-process.
import { describe, expect, it } from 'vitest';
import { floatEvaluate, type HeParameters } from '../../src/he';
import { HeService } from '../../src/edge/he-service';
import { defaultPoolSize, HePool, type WorkerHandle } from '../../src/edge/pool';
import { nodeSeal } from '../../src/node/seal';
import { argmax, makeHead, makeInputs, protect } from '../he/helpers';

const head = makeHead([64, 16, 10], 'realistic', 77);

/** An in-process "worker": a real HeService, plus ways to make it fail like a worker does. */
function fakeWorker(behaviour: { failNext?: 'throw' | 'die' | 'hang' }) {
  const service = new HeService(nodeSeal);
  let death: ((reason: Error) => void) | undefined;
  let terminated = false;
  const handle: WorkerHandle & { terminated: () => boolean } = {
    load: (p, k, w) => service.load(p, k, w),
    async evaluate(features) {
      if (terminated) return new Promise(() => undefined);
      const fail = behaviour.failNext;
      behaviour.failNext = undefined;
      if (fail === 'throw') throw new Error('std::bad_alloc');
      if (fail === 'die') {
        setTimeout(() => death?.(new Error('crashed')), 5);
        return new Promise(() => undefined);
      }
      if (fail === 'hang') return new Promise(() => undefined);
      return service.evaluate(features);
    },
    heapBytes: () => service.heapBytes(),
    onDeath: (cb) => (death = cb),
    terminate() {
      terminated = true;
      void service.dispose();
    },
    terminated: () => terminated,
  };
  return handle;
}

describe('kiosk HE service and worker pool (Node, in-process workers)', async () => {
  const p = await protect(head);
  const params: HeParameters = p.he.params;
  const keys = p.owner.deviceKeyBytes();
  const weights = p.classifierBytes;
  const ab = (u: Uint8Array) => u.slice().buffer;
  const inputs = makeInputs(64, 6, 'realistic', 78);
  const expected = inputs.map((x) => argmax(floatEvaluate(head, x)));

  it('HeService evaluates frames whose decrypted argmax equals the float model', async () => {
    const service = new HeService(nodeSeal);
    const info = await service.load(params, ab(keys), ab(weights));
    expect(info.keyId).toBe(p.owner.keyId);
    for (const [i, x] of inputs.entries()) {
      const frame = await service.evaluate(Float32Array.from(x));
      expect(frame.result).toBeInstanceOf(Uint8Array);
      expect(frame.encryptMs).toBeGreaterThan(0);
      expect(argmax(p.decrypt(frame.result))).toBe(expected[i]);
    }
    await service.dispose();
    await expect(service.evaluate(new Float32Array(64))).rejects.toThrow(/no classifier/);
  });

  it('HeService refuses a key set that does not belong to the weights', async () => {
    const other = await protect(head);
    const service = new HeService(nodeSeal);
    await expect(service.load(params, ab(other.owner.deviceKeyBytes()), ab(weights))).rejects.toThrow(/key/);
    other.dispose();
  });

  it('the pool replaces a worker that throws, dies or hangs, and every frame still completes correctly', async () => {
    const behaviours: { failNext?: 'throw' | 'die' | 'hang' }[] = [];
    const events: string[] = [];
    const pool = new HePool(
      (index) => {
        const b = {};
        behaviours[index] = b;
        return fakeWorker(b);
      },
      { size: 1, frameTimeoutMs: 3000, onEvent: (e) => events.push(`${e.kind}:${e.index}:${e.generation}`) },
    );
    await pool.load(params, ab(keys), ab(weights));
    const failures = ['throw', 'die', 'hang'] as const;
    for (const [i, x] of inputs.entries()) {
      if (i < failures.length) behaviours[0]!.failNext = failures[i];
      const frame = await pool.evaluate(Float32Array.from(x));
      expect(argmax(p.decrypt(frame.result))).toBe(expected[i]);
      if (i < failures.length) expect(frame.attempts).toBe(2);
    }
    expect(pool.replacements).toBe(3);
    expect(events.filter((e) => e.startsWith('worker-replaced'))).toHaveLength(3);
    pool.dispose();
  });

  it('frames run concurrently on the pool and a killed worker mid-frame does not lose its frame', async () => {
    const handles: ReturnType<typeof fakeWorker>[] = [];
    const pool = new HePool((index) => (handles[index] = fakeWorker({})), { size: 2 });
    await pool.load(params, ab(keys), ab(weights));
    const pending = inputs.map((x) => pool.evaluate(Float32Array.from(x)));
    pool.kill(0);
    const frames = await Promise.all(pending);
    expect(frames.map((f) => argmax(p.decrypt(f.result)))).toEqual(expected);
    expect(pool.replacements).toBeGreaterThanOrEqual(1);
    pool.dispose();
  });

  it('sizes the pool from hardwareConcurrency', () => {
    expect(defaultPoolSize(undefined)).toBe(1);
    expect(defaultPoolSize(2)).toBe(2);
    expect(defaultPoolSize(16)).toBe(4);
    expect(defaultPoolSize(16, 8)).toBe(8);
  });
});
