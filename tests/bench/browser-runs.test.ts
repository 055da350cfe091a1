// The browser benchmark's runs without running it: its default runs (quiet and loaded, 1
// and 2 HE workers, each pool mode), its refusals before anything is built, and the busy
// loop the loaded runs start beside the browser (bench/machine.ts).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { benchBrowser, browserTable, DEFAULT_BROWSER_RUNS } from '../../bench/browser';
import { busyLoop } from '../../bench/machine';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** CPU time (user + system, in clock ticks) a Linux process has used. */
const cpuTicks = (pid: number) => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(fields[11]) + Number(fields[12]);
};

describe('browser benchmark runs', () => {
  it('by default: 1 worker, and 2 workers auto, shared and per-worker, each quiet and beside a busy loop', () => {
    expect(DEFAULT_BROWSER_RUNS.map((r) => `${r.workers}/${r.mode}/${r.loaded ? 'loaded' : 'quiet'}`)).toEqual([
      '1/single/quiet',
      '2/auto/quiet',
      '2/shared/quiet',
      '2/per-worker/quiet',
      '1/single/loaded',
      '2/auto/loaded',
      '2/shared/loaded',
      '2/per-worker/loaded',
    ]);
  });

  it('refuses runs it cannot make before building anything', async () => {
    await expect(benchBrowser({ runs: [{ workers: 2, mode: 'fast' as never, loaded: true }] })).rejects.toThrow(
      "mode must be auto, shared, per-worker or single, got 'fast'",
    );
    await expect(benchBrowser({ runs: [] })).rejects.toThrow('workers must be whole numbers from 1 to 16, got []');
    await expect(benchBrowser({ workers: [0] })).rejects.toThrow('workers must be whole numbers from 1 to 16, got [0]');
  });

  it('the table shows each run’s mode, load and ms per frame', () => {
    const run = {
      workers: 2,
      mode: 'auto',
      loaded: true,
      frames: 50,
      frameMs: { median: 820, p95: 900, min: 700, max: 950 },
      msPerFrame: 410,
      modes: { 'per-worker': 47, single: 3 },
      stagesMs: { extract: 1, encrypt: 8, evaluate: 800, serialize: 1, send: 15 },
      storeMs: 8,
      framesPerSecond: 2.44,
      wasmHeapMB: 224.8,
    };
    const text = browserTable({
      runs: [run],
      model: { modelId: 'mnist', version: 1, scheme: 'ckks', polyModulusDegree: 8192, security: 128, bundleBytes: 62_747_844 },
      browser: { version: '156', extractorThreads: 2 },
      bundleLoadMs: 800,
      bundleCacheLoadMs: 430,
      loadAverage: { start: 1, end: 2 },
    });
    expect(text).toMatch(/\n2 +auto +yes +50 +410 +820 +900 .* 2\.44 +224\.8 +per-worker 47, single 3\n/);
  });

  it('the loaded runs’ busy loop burns CPU until stopped, then is gone', async () => {
    const busy = busyLoop();
    try {
      expect(alive(busy.pid)).toBe(true);
      const start = cpuTicks(busy.pid);
      await new Promise((resolve) => setTimeout(resolve, 300));
      // At least a tenth of a core over 300 ms (clock ticks are 10 ms), even on a busy machine.
      expect(cpuTicks(busy.pid) - start).toBeGreaterThanOrEqual(3);
    } finally {
      await busy.stop();
    }
    expect(alive(busy.pid)).toBe(false);
    await busy.stop();
  });
});
