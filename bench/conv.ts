/**
 * `npm run bench -- conv`: models encrypted from a split point down to the first layer.
 * For each case the owner protects the model (its own process), one device worker
 * measures the latency alone on one core, then two device workers (one per core) run the
 * test images for agreement and accuracy against the original float model.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { SecurityBits } from '../src/he';
import { benchBrowser, type BrowserRun } from './browser';
import type { ConvProtectOutcome, ConvStreamOutcome } from './conv-case';
import { machine, round, runCase, summary, table } from './machine';

interface ConvModel {
  /** Name in the report. */
  readonly name: string;
  readonly file: string;
  /** `input`: every layer encrypted; undefined: the automatic split before the dense head. */
  readonly split?: string;
}

const LOLA: ConvModel = { name: 'cryptonets-lola', file: 'models/small-poly-square.onnx', split: 'input' };
const LOLA_HEAD: ConvModel = { name: 'cryptonets-lola', file: 'models/small-poly-square.onnx' };
const DEEP: ConvModel = { name: 'deep-poly', file: 'models/deep-poly-square.onnx', split: 'input' };
const DEEP_HEAD: ConvModel = { name: 'deep-poly', file: 'models/deep-poly-square.onnx' };
/** The paper's CNN (HE-friendly) from its last conv block: its maps over two ciphertexts at N=16384, 1.0 GB of weights, partly streamed. */
const PAPER_BLOCK: ConvModel = { name: 'paper-cnn', file: 'models/paper-cnn-he.onnx', split: '/features/pool1/AveragePool' };

interface ConvCase {
  readonly model: ConvModel;
  readonly input: 'encrypted' | 'plain';
  /** Test images for agreement and accuracy (full run, quick run). */
  readonly images: readonly [number, number];
  /** Also runs the kiosk on the bundle in Chromium with 1 and 2 HE workers. */
  readonly browser?: boolean;
  /** Images the latency is the median of (full run, quick run; 0: not in that run), instead of RUNS. */
  readonly runs?: readonly [number, number];
}

/** All 10,000 test images go through both LoLa cases (`--input` runs one of them). */
const CASES: ConvCase[] = [
  { model: LOLA, input: 'encrypted', images: [10_000, 200], browser: true },
  { model: LOLA, input: 'plain', images: [10_000, 200] },
  { model: LOLA_HEAD, input: 'encrypted', images: [500, 0] },
  { model: DEEP, input: 'encrypted', images: [1_000, 100], browser: true },
  { model: DEEP, input: 'plain', images: [0, 0] },
  { model: DEEP_HEAD, input: 'encrypted', images: [500, 0] },
  { model: PAPER_BLOCK, input: 'encrypted', images: [0, 0], runs: [4, 0] },
];

const SECURITY: SecurityBits = 128;
/** Images the latency is the median of, after one warm-up (full run, quick run). */
const RUNS: readonly [number, number] = [21, 11];
/** Kiosk frames per worker count (full run, quick run). */
const FRAMES: readonly [number, number] = [50, 20];

/** Images a case's latency is the median of in this run (0: the case is not in it). */
function latencyRuns(spec: ConvCase, quick: boolean): number {
  return (spec.runs ?? RUNS)[quick ? 1 : 0];
}
const WORKERS = 2;

export interface ConvRow {
  model: string;
  split: string;
  encryptedLayers: string[];
  plaintextLayers: number;
  security: SecurityBits;
  scheme: 'ckks';
  input: 'encrypted' | 'plain';
  latencyMs: { median: number; min: number; max: number };
  ctMults: number;
  plainMults: number;
  rotations: number;
  lowerBoundMults: number;
  bundleBytes: number;
  weightsBytes: number;
  keysBytes: number;
  polyModulusDegree: number;
  coeffModulusBits: readonly number[];
  wasmHeapMB: number;
  precisionBits: number;
  images: number;
  agreement: number;
  accuracy: number;
  floatAccuracy: number;
  /** The kiosk in headless Chromium on this bundle, per HE worker count. */
  browser?: Pick<BrowserRun, 'workers' | 'mode' | 'frames' | 'frameMs' | 'msPerFrame' | 'stagesMs' | 'wasmHeapMB' | 'workersPerFrame'>[];
}

async function benchCase(spec: ConvCase, quick: boolean, root: string, env: NodeJS.ProcessEnv): Promise<ConvRow> {
  const { model, input } = spec;
  // A model id: the split's node name ("/features/pool1/AveragePool") made of allowed characters.
  const id = `${model.name}-${model.split ?? 'head'}-${input}`.toLowerCase().replace(/[^a-z0-9._-]+/g, '-').replace(/^-+/, '');
  const dataDir = join(root, 'data');
  const protectedModel = await runCase<ConvProtectOutcome>(
    'bench/conv-case.ts',
    { phase: 'protect', model: model.file, split: model.split, security: SECURITY, input, dataDir, outDir: join(root, 'public'), id },
    env,
  );
  const stream = (from: number, to: number) =>
    runCase<ConvStreamOutcome>('bench/conv-case.ts', { phase: 'stream', model: model.file, dataDir, bundleDir: protectedModel.bundleDir, from, to }, env, true);
  const runs = latencyRuns(spec, quick);
  const alone = await stream(0, runs + 1);
  const images = spec.images[quick ? 1 : 0];
  const slices = Array.from({ length: WORKERS }, (_, w) => [Math.floor((w * images) / WORKERS), Math.floor(((w + 1) * images) / WORKERS)] as const);
  const parts = images === 0 ? [] : await Promise.all(slices.map(([from, to]) => stream(from, to)));
  const counted = parts.length === 0 ? [alone] : parts;
  const total = (key: 'images' | 'correct' | 'floatCorrect' | 'agree') => counted.reduce((n, p) => n + p[key], 0);
  const row: ConvRow = {
    model: model.name,
    split: model.split ?? 'head (automatic)',
    encryptedLayers: protectedModel.encryptedLayers,
    plaintextLayers: protectedModel.plaintextLayers,
    security: SECURITY,
    scheme: 'ckks',
    input,
    latencyMs: summary(alone.heMs.slice(1)),
    ctMults: protectedModel.ctMults,
    plainMults: protectedModel.plainMults,
    rotations: protectedModel.rotations,
    lowerBoundMults: protectedModel.lowerBoundMults,
    bundleBytes: protectedModel.bundleBytes,
    weightsBytes: protectedModel.weightsBytes,
    keysBytes: protectedModel.keysBytes,
    polyModulusDegree: protectedModel.polyModulusDegree,
    coeffModulusBits: protectedModel.coeffModulusBits,
    wasmHeapMB: Math.max(alone.wasmHeapMB, ...parts.map((p) => p.wasmHeapMB)),
    precisionBits: Math.min(alone.precisionBits, ...parts.map((p) => p.precisionBits)),
    images: total('images'),
    agreement: round(total('agree') / total('images'), 4),
    accuracy: round(total('correct') / total('images'), 4),
    floatAccuracy: round(total('floatCorrect') / total('images'), 4),
  };
  process.stderr.write(`  ${id}: ${row.latencyMs.median} ms, agreement ${row.agreement} on ${row.images} images\n`);
  if (spec.browser === true) {
    // One worker; two sharing each frame (latency); two with a frame each (frames per second).
    const runs = [
      { workers: 1, mode: 'single' as const, loaded: false },
      { workers: 2, mode: 'shared' as const, loaded: false },
      { workers: 2, mode: 'per-worker' as const, loaded: false },
    ];
    const kiosk = await benchBrowser({ model: { dataDir, modelDir: dirname(protectedModel.bundleDir), env }, runs, frames: FRAMES[quick ? 1 : 0] });
    row.browser = kiosk.runs.map(({ workers, mode, frames, frameMs, msPerFrame, stagesMs, wasmHeapMB, workersPerFrame }) => ({ workers, mode, frames, frameMs, msPerFrame, stagesMs, wasmHeapMB, workersPerFrame }));
  }
  return row;
}

/** The models the conv benchmark has rows for (what `--model` chooses from). */
export const CONV_MODELS: readonly string[] = [...new Set(CASES.map((c) => c.model.name))];

export async function benchConv({ quick, model, input }: { quick: boolean; model?: string; input?: 'encrypted' | 'plain' }): Promise<{ machine: Record<string, unknown>; results: ConvRow[] }> {
  const root = mkdtempSync(join(tmpdir(), 'sealed-edge-bench-conv-'));
  const env = { ...process.env, SEALED_EDGE_KEK: 'cd'.repeat(32) };
  try {
    const results: ConvRow[] = [];
    const chosen = CASES.filter(
      (spec) => (model === undefined || spec.model.name === model) && (input === undefined || spec.input === input) && latencyRuns(spec, quick) > 0,
    );
    for (const spec of chosen) results.push(await benchCase(spec, quick, root, env));
    return { machine: machine(), results };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

export function convTable(report: { results: Record<string, unknown>[] }): string {
  const rows = (report.results as unknown as ConvRow[]).map((r) => [
    r.model,
    r.split,
    r.input,
    `${r.latencyMs.median} [${r.latencyMs.min}–${r.latencyMs.max}]`,
    `${r.ctMults}/${r.lowerBoundMults}`,
    r.rotations,
    `${(r.bundleBytes / 1e6).toFixed(1)}`,
    `N=${r.polyModulusDegree} [${r.coeffModulusBits.join(',')}]`,
    r.wasmHeapMB,
    r.precisionBits,
    r.images,
    `${(100 * r.agreement).toFixed(2)}%`,
    `${(100 * r.accuracy).toFixed(2)}% (float ${(100 * r.floatAccuracy).toFixed(2)}%)`,
    r.browser?.map((b) => `${b.workers}w ${b.mode ?? 'shared'} ${b.frameMs.median}${b.msPerFrame === undefined ? '' : ` (${b.msPerFrame}/frame)`}`).join(', ') ?? '—',
  ]);
  return table(
    ['model', 'split', 'input', 'ms median [min–max]', 'ct×ct/bound', 'rot', 'bundle MB', 'parameters', 'heap MB', 'prec bits', 'images', 'agreement', 'accuracy', 'Chromium median frame ms (wall ms per frame)'],
    rows,
  );
}
