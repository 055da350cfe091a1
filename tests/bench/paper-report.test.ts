import { describe, expect, it } from 'vitest';
import { paperSizeMB, PEERS } from '../../bench/paper-figures';
import { describeLayers, polynomialText } from '../../src/he';
import {
  formatMs,
  formatRatio,
  mdTable,
  paperCells,
  paperCharts,
  paperMarkdown,
  type PaperReport,
  type PaperRow,
  ratio,
  rowRatios,
} from '../../bench/paper-report';

const summary = (median: number) => ({ median, min: median * 0.9, max: median * 1.1 });

function row(input: 'plain' | 'encrypted'): PaperRow {
  const encryption = { keygenMs: 300, encryptMs: 1200, totalMs: 1500, weightsBytes: 51e6, keysBytes: 11.5e6, bundleBytes: 66e6, peakRssMB: 411, wasmHeapMB: 100 };
  const processing = { latencyMs: summary(input === 'plain' ? 262 : 513), stagesMs: { encrypt: 5, evaluate: 507, serialize: 1 }, loadMs: 550, resultBytes: 115_733, wasmHeapMB: 225, peakRssMB: 396 };
  const decryption = { ms: summary(1.5), openMs: 381, wasmHeapMB: 16, peakRssMB: 149, remainingLevels: 0, noiseBudgetBits: null, maxAbsError: 1.7e-6, precisionBits: 19.1, argmaxAgreement: 1 };
  const paper = paperCells('x2+2x', 128, input);
  return {
    scheme: 'ckks',
    head: 'mnist',
    model: 'x2+2x',
    security: 128,
    input,
    weights: 'models/paper-cnn-x2+2x.onnx',
    layers: '1600→512→x²+2x→10',
    polyModulusDegree: 8192,
    coeffModulusBits: [49, 35, 35, 35, 60],
    bgv: null,
    encryption,
    processing,
    decryption,
    paper,
    ratios: rowRatios(paper, { encryption, processing, decryption }),
  };
}

/** The same head under BGV with encrypted input: two 27-bit CRT moduli, a noise budget instead of levels. */
function bgvRow(): PaperRow {
  const encryption = { keygenMs: 980, encryptMs: 2490, totalMs: 3470, weightsBytes: 143.1e6, keysBytes: 61e6, bundleBytes: 204.3e6, peakRssMB: 1038, wasmHeapMB: 618 };
  const processing = { latencyMs: summary(1380), stagesMs: { encrypt: 40, evaluate: 1330, serialize: 10 }, loadMs: 2100, resultBytes: 400_000, wasmHeapMB: 618, peakRssMB: 900 };
  const decryption = { ms: summary(5), openMs: 3100, wasmHeapMB: 80, peakRssMB: 300, remainingLevels: null, noiseBudgetBits: 17, maxAbsError: 0.02, precisionBits: 5.6, argmaxAgreement: 1 };
  const paper = paperCells('x2+2x', 128, 'encrypted');
  return {
    ...row('encrypted'),
    scheme: 'bgv',
    polyModulusDegree: 16384,
    coeffModulusBits: [60, 50, 54, 50, 60],
    bgv: { plainModulusBits: [27, 27], calibrateMs: 190, planMs: 1440, verifyMs: 3170, predictedNoiseBudgetBits: 16, verifiedNoiseBudgetBits: 18 },
    encryption,
    processing,
    decryption,
    paper,
    ratios: rowRatios(paper, { encryption, processing, decryption }),
  };
}

const report: PaperReport = {
  machine: { cpu: 'Test CPU', cores: 2, memoryGB: 8, os: 'linux', node: 'v20', nodeSeal: '6.0.3', date: '2025-01-02T03:04:05.000Z' },
  baseline: { peakRssMB: 104, wasmHeapMB: 16 },
  schemes: ['ckks', 'bgv'],
  securityLevels: [128],
  runs: 5,
  results: [bgvRow(), row('encrypted'), row('plain')],
  testSet: {
    model: 'models/paper-cnn-x2+2x.onnx',
    scheme: 'ckks',
    security: 128,
    images: 200,
    ofImages: 10_000,
    rows: [
      {
        label: 'encrypted weights',
        mode: { weights: 'encrypted', input: 'encrypted' },
        images: 200,
        accuracy: 0.995,
        floatAccuracy: 0.995,
        agreement: 1,
        perImageMs: summary(520),
        stageMsPerImage: { extract: 0.4, he: 518, decrypt: 1.5 },
        perHourPerCore: 6923,
        workers: 2,
        perHourWorkers: 13_500,
        wallS: 53.3,
        weightsBytes: 51e6,
        keysBytes: 11.5e6,
      },
    ],
    peers: PEERS,
  },
  browser: [
    {
      scheme: 'ckks',
      security: 128,
      browser: 'Chromium 156.0.8078.79, headless',
      bundleLoadMs: 1120,
      wasmHeapMB: 224.8,
      runs: [
        { workers: 1, frames: 20, frameMs: { median: 555, p95: 585, min: 532, max: 601 }, evaluateMs: 523 },
        { workers: 2, frames: 20, frameMs: { median: 376, p95: 410, min: 350, max: 452 }, evaluateMs: 340 },
      ],
    },
  ],
};

describe('the papers’ figures', () => {
  it('reads the printed sizes in MB', () => {
    expect(['11G', '6.4G', '79Mb', '158Mb'].map(paperSizeMB)).toEqual([11_000, 6400, 79, 158]);
    expect(() => paperSizeMB('11 GB')).toThrow(/unrecognized size/);
  });

  it('picks Table 2 or 3 by input, and Tables 1 and 4 by model and level', () => {
    expect(paperCells('x2+2x', 128, 'encrypted')).toEqual({
      encryptS: 256.7,
      sizePrinted: '11G',
      sizeMB: 11_000,
      encryptMemoryMB: 2257.9,
      processS: 2902.6,
      processMemoryMB: 5047.8,
      noiseBudgetBits: 206,
      decryptS: 2.9,
      decryptMemoryMB: 963.8,
    });
    expect(paperCells('last-layer', 256, 'plain')).toMatchObject({ processS: 4.5, processMemoryMB: 117.7, noiseBudgetBits: 60.2, sizePrinted: '158Mb', decryptS: 0.2 });
    expect(paperCells('no-activation', 192, 'encrypted')).toMatchObject({ encryptS: 78, processS: 272.2, noiseBudgetBits: 11 });
  });
});

describe('ratios and formatting', () => {
  it('divides the paper by ours and prints it compactly', () => {
    expect(ratio(2_902_600, 530.6)).toBe(5470);
    expect([5470.4, 12.345, 1.96, 0.5234].map(formatRatio)).toEqual(['5,470×', '12.3×', '2×', '0.52×']);
    expect([11.06, 999, 2345].map(formatMs)).toEqual(['11.1 ms', '999 ms', '2.35 s']);
    const r = row('encrypted').ratios;
    expect(r).toMatchObject({ encryptTime: ratio(256_700, 1500), size: ratio(11_000, 62.5), processTime: ratio(2_902_600, 513), decryptTime: ratio(2900, 1.5) });
  });

  it('writes heads as they are written by hand', () => {
    const dense = (inputs: number, outputs: number) => ({ kind: 'dense' as const, inputs, outputs, weights: new Float64Array(inputs * outputs) });
    expect(describeLayers([dense(1600, 512), { kind: 'poly', coeffs: [0, 2, 1] }, dense(512, 10)])).toBe('1600→512→x²+2x→10');
    expect(describeLayers([dense(512, 10)])).toBe('512→10');
    expect(polynomialText([0.5, -1, 0.0625])).toBe('0.0625x²−x+0.5');
    expect(polynomialText([0, 0, 0, -2])).toBe('−2x³');
  });

  it('writes Markdown tables', () => {
    expect(mdTable(['a', 'b'], [[1, 'x']])).toBe('| a | b |\n| --- | --- |\n| 1 | x |');
  });
});

describe('the report', () => {
  const charts = paperCharts(report);

  it('charts only the rows that ran, beside the paper', () => {
    expect(charts.map((c) => c.file)).toEqual([
      'paper-encryption-time.svg',
      'paper-model-size.svg',
      'paper-processing-plain.svg',
      'paper-processing-encrypted.svg',
      'paper-decryption-time.svg',
      'paper-throughput.svg',
    ]);
    const encrypted = charts[3]!.svg;
    expect(encrypted).toContain('paper (BGV, native SEAL), x²+2x 128-bit: 2,903 s');
    expect(encrypted).toContain('sealed-edge MNIST (CKKS), x²+2x 128-bit: 0.513 s');
    expect(encrypted).toContain('sealed-edge MNIST (BGV), x²+2x 128-bit: 1.38 s');
    expect(encrypted).not.toContain('192-bit');
    expect(charts[5]!.svg).toContain('CryptoDL: 163,840 predictions/h');
    expect(charts[5]!.svg).toContain('LoLa: 1,636 predictions/h');
  });

  it('says what ran, puts each figure beside the paper’s, and says how to rerun', () => {
    const md = paperMarkdown(report, charts, true);
    expect(md).toContain('**Quick run**: 128-bit rows only, and 200 of the 10,000 MNIST test images');
    expect(md).toContain('Schemes: CKKS, BGV. Security levels: 128 bits.');
    expect(md).toContain('Test CPU, 2 cores');
    expect(md).toContain('peaks at 104 MB resident');
    expect(md).toContain('![Processing per image, encrypted input (Table 3)](paper-processing-encrypted.svg)');
    // Tables 2 and 3: CKKS gives levels left, BGV the noise budget left, beside the paper's budget.
    expect(md).toContain('| CKKS | x²+2x | 128 | MNIST | 8192 | 513 ms [462–564 ms] | 2902.6 s | 5,660× | 396 | 225 | 5047.8 | 12.7× | 0 | 19.1 | — | 206 |');
    expect(md).toContain('| CKKS | x²+2x | 128 | MNIST | 8192 | 262 ms [236–288 ms] | 287.2 s | 1,100× |');
    expect(md).toContain('| BGV | x²+2x | 128 | MNIST | 16384 | 1.38 s [1,242–1,518 ms] | 2902.6 s | 2,100× | 900 | 618 | 5047.8 | 5.6× | — | 5.6 | 17 | 206 |');
    // Table 1 lists CKKS before BGV, and plaintext input before encrypted, as the paper's Tables 2 and 3 come.
    expect(md.indexOf('| CKKS | x²+2x | 128 | MNIST | plain |')).toBeLessThan(md.indexOf('| CKKS | x²+2x | 128 | MNIST | encrypted |'));
    expect(md.indexOf('| CKKS | x²+2x | 128 | MNIST | encrypted |')).toBeLessThan(md.indexOf('| BGV | x²+2x | 128 | MNIST | encrypted |'));
    // What the BGV planner chose, and the budget predicted, verified at protect time and left after the runs.
    expect(md).toContain('| x²+2x | 128 | MNIST | encrypted | 16384 | 27 + 27 | [60, 50, 54, 50, 60] | 190 ms | 1.44 s | 3.17 s | 16 | 18 | 17 | 206 |');
    expect(md).toContain('BGV always encrypts the weights: it has no plaintext-weights mode');
    expect(md).toContain('No BGV run in Chromium in this report.');
    expect(md).toContain('| sealed-edge, encrypted weights, 1 core | **encrypted** | 99.50% | 100.00% | 6,923 |');
    expect(md).toContain('| CryptoDL | plaintext | 99.52% | — | 163,840 |');
    expect(md).toContain('| CKKS | 128 | 2 | 20 | 376 ms | 410 ms | 350 ms–452 ms | 340 ms | 2,903 s | 7,720× | 1.12 s | 224.8 MB |');
    expect(md).toContain('Browser: Chromium 156.0.8078.79, headless.');
    expect(paperMarkdown({ ...report, browser: [] }, charts, true)).toContain('No Chromium run in this report.');
    expect(md).toContain('npm run bench -- paper --quick');
    expect(paperMarkdown(report, charts, false)).not.toContain('Quick run');
  });
});
