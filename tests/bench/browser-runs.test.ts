// The browser benchmark's runs without running it: its default runs (quiet and loaded, 1
// and 2 HE workers, each pool mode), its --model (mnist or the trained colour model), its
// refusals before anything is built, and the busy loop the loaded runs start beside the
// browser (bench/machine.ts).
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { benchBrowser, browserModel, browserResultsFile, browserTable, DEFAULT_BROWSER_RUNS } from '../../bench/browser';
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
    await expect(benchBrowser({ named: 'cifar' })).rejects.toThrow("no browser benchmark for model 'cifar': choose one of mnist, colour");
    await expect(benchBrowser({ named: 'colour', demo: 'tests/fixtures/colour-shapes' })).rejects.toThrow(
      'a model by name (named) comes with its own demo stream: give named, or model and demo, not both',
    );
  });

  it('--model mnist|colour: the colour model writes its own results file; anything else is refused with exit 2 before running', () => {
    expect(browserModel('colour')).toBe('colour');
    expect(browserModel('mnist')).toBe('mnist');
    expect(browserResultsFile('mnist')).toBe('bench/results/browser.json');
    expect(browserResultsFile('colour')).toBe('bench/results/browser-colour.json');
    for (const bad of ['cifar', 'Colour', '']) expect(() => browserModel(bad), bad).toThrow(`no browser benchmark for model '${bad}': choose one of mnist, colour`);
    const run = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'bench/run.ts', ...args], { encoding: 'utf8', timeout: 60_000 });
    const bad = run(['browser', '--model', 'cifar', '--out', '/nonexistent/browser.json']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/^no browser benchmark for model 'cifar': choose one of mnist, colour\nusage:[\s\S]*--model mnist\|colour/);
    const elsewhere = run(['he', '--model', 'colour']);
    expect(elsewhere.status).toBe(2);
    expect(elsewhere.stderr).toMatch(/^--model is an option of the conv and browser suites only, not of 'he'\n/);
  }, 120_000);

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
      model: { modelId: 'colour', version: 1, scheme: 'ckks', polyModulusDegree: 8192, security: 128, bundleBytes: 15_200_000 },
      demo: '200 image files',
      browser: { version: '156', extractorThreads: 2 },
      bundleLoadMs: 800,
      bundleCacheLoadMs: 430,
      loadAverage: { start: 1, end: 2 },
    });
    expect(text).toMatch(/\n2 +auto +yes +50 +410 +820 +900 .* 2\.44 +224\.8 +per-worker 47, single 3\n/);
    expect(text.split('\n')[0]).toBe('colour v1: CKKS N=8192, 128-bit, bundle 15.2 MB, demo stream 200 image files; Chromium 156 headless, extractor on 2 thread(s)');
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
