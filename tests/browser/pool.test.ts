// Runs in Node (no browser needed): the kiosk's HE service and worker pool with real SEAL,
// workers simulated in-process.
import { describe, expect, it } from 'vitest';
import { floatEvaluate, type HeParameters } from '../../src/he';
import { HeService } from '../../src/edge/he-service';
import { defaultPoolSize, HePool, type WorkerHandle } from '../../src/edge/pool';
import { nodeSeal } from '../../src/node/seal';
import { bgvReferenceModel } from '../../src/he';
import { protectBgv } from '../he/bgv-helpers';
import { argmax, makeHead, makeInputs, maxAbsDiff, protect } from '../he/helpers';

const head = makeHead([64, 16, 10], 'realistic', 77);

type Behaviour = { failNext?: 'throw' | 'die' | 'hang'; failFinish?: boolean; failLoad?: boolean };

/** An in-process "worker": a real HeService, plus ways to make it fail like a worker does. */
function fakeWorker(behaviour: Behaviour) {
  const service = new HeService(nodeSeal);
  let death: ((reason: Error) => void) | undefined;
  let terminated = false;
  /** Runs `work` unless this call is to fail as a worker does. */
  const unlessFailing = async <T>(work: () => Promise<T>): Promise<T> => {
    if (terminated) return new Promise(() => undefined);
    const fail = behaviour.failNext;
    behaviour.failNext = undefined;
    if (fail === 'throw') throw new Error('std::bad_alloc');
    if (fail === 'die') {
      setTimeout(() => death?.(new Error('crashed')), 5);
      return new Promise(() => undefined);
    }
    if (fail === 'hang') return new Promise(() => undefined);
    // A real worker answers in a later task, never within the caller's microtasks.
    await new Promise((resolve) => setTimeout(resolve, 0));
    return work();
  };
  const handle: WorkerHandle & { terminated: () => boolean } = {
    async load(p, k, w) {
      if (behaviour.failLoad) throw new Error('out of memory while loading');
      return service.load(p, k, w);
    },
    evaluate: (features) => unlessFailing(() => service.evaluate(features)),
    evaluateShare: (features, index, count) => unlessFailing(() => service.evaluateShare(features, index, count)),
    async finish(partials) {
      if (behaviour.failFinish) {
        behaviour.failFinish = false;
        throw new Error('std::bad_alloc while finishing');
      }
      return unlessFailing(() => service.finish(partials));
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

  it('HeService keeps weights within the worker heap budget: past it they stay serialized and frames decrypt alike', async () => {
    const resident = new HeService(nodeSeal);
    expect((await resident.load(params, ab(keys), ab(weights))).streamed).toBe(false);
    const streamed = new HeService(nodeSeal, 1);
    const info = await streamed.load(params, ab(keys), ab(weights));
    expect(info.streamed).toBe(true);
    for (const [i, x] of inputs.entries()) {
      const [a, b] = await Promise.all([resident.evaluate(Float32Array.from(x)), streamed.evaluate(Float32Array.from(x))]);
      expect(argmax(p.decrypt(b.result))).toBe(expected[i]);
      expect(maxAbsDiff(p.decrypt(b.result), p.decrypt(a.result))).toBeLessThan(1e-3);
    }
    await Promise.all([resident.dispose(), streamed.dispose()]);
    for (const bad of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) expect(() => new HeService(nodeSeal, bad)).toThrow(/heap budget must be a positive number of bytes/);
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

  it('two workers share every frame (?mode=shared); a worker killed mid-frame does not lose its frame', async () => {
    const pool = new HePool(() => fakeWorker({}), { size: 2, mode: 'shared' });
    await pool.load(params, ab(keys), ab(weights));
    const pending = inputs.map((x) => pool.evaluate(Float32Array.from(x)));
    while (pool.busy < 2) await new Promise((resolve) => setTimeout(resolve, 1));
    pool.kill(0);
    const frames = await Promise.all(pending);
    expect(frames.map((f) => argmax(p.decrypt(f.result)))).toEqual(expected);
    expect(frames.map((f) => f.workers)).toEqual(inputs.map(() => 2));
    expect(frames[0]!.attempts).toBe(2);
    expect(pool.replacements).toBe(1);
    pool.dispose();
  });

  it('one frame per worker (?mode=per-worker): two frames in flight, one per worker, each decrypts to the float argmax; a worker killed mid-frame does not lose its frame', async () => {
    const pool = new HePool(() => fakeWorker({}), { size: 2, mode: 'per-worker' });
    await pool.load(params, ab(keys), ab(weights));
    expect(pool.concurrency).toBe(2);
    const pending = inputs.map((x) => pool.evaluate(Float32Array.from(x)));
    while (pool.busy < 2) await new Promise((resolve) => setTimeout(resolve, 1));
    pool.kill(1);
    const frames = await Promise.all(pending);
    expect(frames.map((f) => argmax(p.decrypt(f.result)))).toEqual(expected);
    expect(frames.map((f) => `${f.mode}/${f.workers}`)).toEqual(inputs.map(() => 'per-worker/1'));
    expect(new Set(frames.map((f) => f.worker))).toEqual(new Set([0, 1]));
    expect(frames.filter((f) => f.attempts === 2)).toHaveLength(1);
    expect(pool.replacements).toBe(1);
    pool.dispose();
  });

  it('auto: the warm-up runs frames in each mode, every one decrypts to the float argmax', async () => {
    const pool = new HePool(() => fakeWorker({}), { size: 2 });
    await pool.load(params, ab(keys), ab(weights));
    const frames = [];
    for (const x of [...inputs, ...inputs]) frames.push(await pool.evaluate(Float32Array.from(x)));
    expect(frames.map((f) => argmax(p.decrypt(f.result)))).toEqual([...expected, ...expected]);
    // Warm-up: single (1 cold + 3 frames), shared (1 cold + 3), one per worker (3), then the choice.
    expect(frames.slice(0, 11).map((f) => f.mode)).toEqual([...Array(4).fill('single'), ...Array(4).fill('shared'), ...Array(3).fill('per-worker')]);
    expect(frames.map((f) => f.workers)).toEqual(frames.map((f) => (f.mode === 'shared' ? 2 : 1)));
    expect(pool.choice.phase).toBe('steady');
    expect(pool.choice.estimates.single!.msPerFrame).toBeGreaterThan(0);
    pool.dispose();
  });

  it('a share or the finishing step that throws, dies or hangs is retried on fresh workers', async () => {
    const behaviours: Behaviour[] = [];
    const pool = new HePool(
      (index) => {
        const b = {};
        behaviours[index] = b;
        return fakeWorker(b);
      },
      { size: 2, frameTimeoutMs: 3000, mode: 'shared' },
    );
    await pool.load(params, ab(keys), ab(weights));
    // Worker 1 fails on its share three ways, then worker 0 (the finisher) while finishing.
    const plans: Behaviour[] = [{ failNext: 'throw' }, { failNext: 'die' }, { failNext: 'hang' }];
    for (const [i, x] of inputs.entries()) {
      const planned = plans[i];
      if (planned !== undefined) Object.assign(behaviours[1]!, planned);
      if (i === plans.length) behaviours[0]!.failFinish = true;
      const frame = await pool.evaluate(Float32Array.from(x));
      expect(argmax(p.decrypt(frame.result))).toBe(expected[i]);
      expect(frame.attempts).toBe(i <= plans.length ? 2 : 1);
    }
    expect(pool.replacements).toBe(4);
    pool.dispose();
  });

  it('a replacement that cannot load is retried with backoff, then given up; frames use the workers left', async () => {
    const events: string[] = [];
    let made = 0;
    const pool = new HePool(() => fakeWorker({ failLoad: made++ >= 2 }), {
      size: 2,
      mode: 'shared',
      maxReloads: 2,
      onEvent: (e) => events.push(`${e.kind}:${e.index}:${e.generation}`),
    });
    await pool.load(params, ab(keys), ab(weights));
    const started = performance.now();
    pool.kill(1);
    const frame = await pool.evaluate(Float32Array.from(inputs[0]!));
    expect(argmax(p.decrypt(frame.result))).toBe(expected[0]);
    expect(frame.workers).toBe(1);
    // Reloads after 0, 250 and 500 ms all failed, then worker 1 was given up.
    expect(performance.now() - started).toBeGreaterThanOrEqual(750);
    expect(events.filter((e) => e.endsWith(':1:3') || e.startsWith('worker-lost'))).toEqual(['worker-replaced:1:3', 'worker-lost:1:3']);
    pool.kill(0);
    await expect(pool.evaluate(Float32Array.from(inputs[1]!))).rejects.toThrow(/no HE worker is left: every worker failed to load 3 times in a row/);
    pool.dispose();
  });

  it('a bundle that no worker can load fails the pool at once, and frames are refused', async () => {
    const pool = new HePool(() => fakeWorker({ failLoad: true }), { size: 2 });
    await expect(pool.load(params, ab(keys), ab(weights))).rejects.toThrow(/out of memory while loading/);
    await expect(pool.evaluate(Float32Array.from(inputs[0]!))).rejects.toThrow(/no HE worker is left/);
    pool.dispose();
  });

  it('a BGV bundle: each of 2 workers evaluates its CRT components, the joined result equals the integer reference', async () => {
    const bgv = await protectBgv(head, { security: 128, calibration: makeInputs(64, 200, 'realistic', 79), maxModuli: 4, precision: 0.001 });
    try {
      const components = bgv.ctx.components.length;
      const reference = bgvReferenceModel(bgv.plan, head);
      expect(components).toBeGreaterThanOrEqual(2);
      const pool = new HePool(() => fakeWorker({}), { size: 2, mode: 'shared' });
      await pool.load(bgv.ctx.params, ab(bgv.owner.deviceKeyBytes()), ab(bgv.classifierBytes));
      for (const [i, x] of inputs.slice(0, 3).entries()) {
        const frame = await pool.evaluate(Float32Array.from(x));
        expect(frame.workers).toBe(2);
        const scores = bgv.decrypt(frame.result);
        expect(scores.integers).toEqual(reference(Float32Array.from(x)));
        expect(argmax(scores.scores)).toBe(expected[i]);
      }
      // A share that lost its components is refused when the frame is finished.
      const service = new HeService(nodeSeal);
      await service.load(bgv.ctx.params, ab(bgv.owner.deviceKeyBytes()), ab(bgv.classifierBytes));
      const half = await service.evaluateShare(Float32Array.from(inputs[0]!), 0, 2);
      await expect(service.finish([half.partial])).rejects.toThrow(new RegExp(`the partial results hold components \\[0\\] of ${components}`));
      await expect(service.evaluateShare(Float32Array.from(inputs[0]!), 2, 2)).rejects.toThrow(/share 2 of 2 does not exist/);
      await service.dispose();
      pool.dispose();
    } finally {
      bgv.dispose();
    }
  });

  it('refuses options that are not integers in range', () => {
    const make = (options: Partial<ConstructorParameters<typeof HePool>[1]>) => () => new HePool(() => fakeWorker({}), { size: 2, ...options });
    expect(make({ size: 0 })).toThrow('pool size must be an integer of at least 1, got 0');
    expect(make({ size: 1.5 })).toThrow('pool size must be an integer of at least 1, got 1.5');
    expect(make({ retries: -1 })).toThrow('retries must be an integer of at least 0, got -1');
    expect(make({ maxReloads: Number.NaN })).toThrow('maxReloads must be an integer of at least 0, got NaN');
    expect(make({ frameTimeoutMs: 0 })).toThrow('frameTimeoutMs must be an integer of at least 1, got 0');
    expect(make({ loadTimeoutMs: Infinity })).toThrow('loadTimeoutMs must be an integer of at least 1, got Infinity');
    expect(make({ retries: 0, maxReloads: 0 })).not.toThrow();
  });

  it('sizes the pool from hardwareConcurrency', () => {
    expect(defaultPoolSize(undefined)).toBe(1);
    expect(defaultPoolSize(2)).toBe(2);
    expect(defaultPoolSize(16)).toBe(4);
    expect(defaultPoolSize(16, 8)).toBe(8);
  });
});
