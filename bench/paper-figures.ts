/**
 * The published figures our benchmark is set beside, as data: numbers only, each with
 * the table or passage it comes from. Full texts: ../shared/papers/ (see its README.md).
 */

/** The seed paper's three encrypted variants of its CNN's classifier, in its tables' order. */
export const PAPER_MODELS = ['x2+2x', 'no-activation', 'last-layer'] as const;
export type PaperModel = (typeof PAPER_MODELS)[number];

export const PAPER_MODEL_TITLES: Record<PaperModel, string> = {
  'x2+2x': 'full classifier, x²+2x',
  'no-activation': 'full classifier, no activation',
  'last-layer': 'last FC layer',
};

/** One figure per security level: 128, 192 and 256 bits, as the tables' columns. */
export type PerLevel = readonly [number, number, number];
type PerModel<T> = Readonly<Record<PaperModel, T>>;

export const SEED_PAPER = {
  citation: 'Gomez, Wilhelm, Márquez, Duverger 2019, arXiv 1907.04246',
  file: '../shared/papers/000_e510278693c278c8.txt',
  scheme: 'BGV (SEAL, integer encoding with SIMD, fixed-point weights)',
  library: 'Microsoft SEAL (native C++, through Cython)',
  /** Section 4.4.1: each experiment ran 5 times; the tables give averages. */
  runs: 5,
  /** Section 4.1: the backend (model encryption, decryption) and the device (processing). */
  backendMachine: 'NVIDIA DGX-1 (its CPU)',
  deviceMachine: 'NVIDIA Jetson TX2 (CPU: 2 Denver + 4 ARM Cortex-A57 cores, 8 GB)',
  /** Section 4.2: the plaintext model and one unencrypted classification on the TX2. */
  plaintextModelMB: 9.6,
  plaintextImageMs: 89.1,
  /** Table 1, model encryption on the DGX-1's CPU. Sizes as printed ("11G", "79Mb"). */
  table1: {
    timeS: { 'x2+2x': [256.7, 191.5, 212.6], 'no-activation': [86.9, 78.0, 96.0], 'last-layer': [3.4, 3.4, 7.3] } as PerModel<PerLevel>,
    size: {
      'x2+2x': ['11G', '6.4G', '11G'],
      'no-activation': ['2.5G', '4.4G', '2.5G'],
      'last-layer': ['79Mb', '79Mb', '158Mb'],
    } as PerModel<readonly [string, string, string]>,
    memoryMB: { 'x2+2x': [2257.9, 1112.4, 2389.5], 'no-activation': [557.9, 459.2, 566.1], 'last-layer': [300.6, 301.4, 324.2] } as PerModel<PerLevel>,
  },
  /** Table 2, processing on the TX2 with plaintext input (the extractor's output in the clear). */
  table2: {
    timeS: { 'x2+2x': [287.2, 174.6, 1221.3], 'no-activation': [43.7, 32.9, 90.2], 'last-layer': [2.1, 2.1, 4.5] } as PerModel<PerLevel>,
    memoryMB: { 'x2+2x': [4683.1, 2924.3, 4899.2], 'no-activation': [1162.5, 869.2, 2342.3], 'last-layer': [53.9, 54.0, 117.7] } as PerModel<PerLevel>,
    noiseBudgetBits: { 'x2+2x': [221.6, 80.2, 88.8], 'no-activation': [91.4, 23.8, 16.2], 'last-layer': [58.8, 20.2, 60.2] } as PerModel<PerLevel>,
  },
  /** Table 3, processing on the TX2 with encrypted input. */
  table3: {
    timeS: { 'x2+2x': [2902.6, 1048.6, 5627], 'no-activation': [367.1, 272.2, 835.9], 'last-layer': [19.2, 19.2, 40.2] } as PerModel<PerLevel>,
    memoryMB: { 'x2+2x': [5047.8, 5809, 4906], 'no-activation': [2314.8, 1733.7, 4644.5], 'last-layer': [119.5, 118.5, 253] } as PerModel<PerLevel>,
    noiseBudgetBits: { 'x2+2x': [206.0, 65.0, 76.0], 'no-activation': [79.0, 11.0, 3.0], 'last-layer': [45.0, 10.0, 52.0] } as PerModel<PerLevel>,
  },
  /** Table 4, decryption on the DGX-1's CPU. */
  table4: {
    timeS: { 'x2+2x': [2.9, 1.7, 3.2], 'no-activation': [0.6, 0.6, 1.0], 'last-layer': [0.2, 0.1, 0.2] } as PerModel<PerLevel>,
    memoryMB: { 'x2+2x': [963.8, 397.4, 2062.5], 'no-activation': [123.4, 73.4, 267.1], 'last-layer': [17.8, 17.8, 38.7] } as PerModel<PerLevel>,
  },
} as const;

/** A published result for encrypted MNIST inference; all of these keep the weights in plaintext. */
export interface PeerFigure {
  readonly system: string;
  readonly accuracy?: number;
  readonly predictionsPerHour?: number;
  readonly secondsPerImage?: number;
  /** How many images one evaluation classifies at once (SIMD batch). */
  readonly batch?: number;
  readonly weights: 'plain';
  readonly machine: string;
  readonly source: string;
  readonly note?: string;
}

export const PEERS: readonly PeerFigure[] = [
  {
    system: 'CryptoDL',
    accuracy: 0.9952,
    predictionsPerHour: 163_840,
    batch: 8192,
    weights: 'plain',
    machine: 'Intel Xeon E5-2640 2.4 GHz, 16 GB RAM, HElib',
    source: 'Hesamifard, Takabi, Ghasemi 2017 (../shared/papers/002_19c30e0cc576de8d.txt): Table 2 (accuracy), Table 5 (# p/h, run time 320 s per batch), section 4 (batch of 8,192)',
    note: 'the same CNN with ReLU: 99.56% (Table 2)',
  },
  {
    system: 'CryptoNets',
    accuracy: 0.9895,
    predictionsPerHour: 59_000,
    batch: 8192,
    weights: 'plain',
    machine: 'Intel Xeon E5-1620 3.5 GHz, 16 GB RAM (per CryptoDL, section 4.1)',
    source: 'Dowlin et al. 2016, headline figures as quoted in issue 7 (the paper is not in ../shared/papers/); accuracy also in CryptoDL Table 5',
    note: 'CryptoDL Table 5 lists CryptoNets at 51,739 predictions per hour and 697 s per batch',
  },
  {
    system: 'LoLa',
    secondsPerImage: 2.2,
    batch: 1,
    weights: 'plain',
    machine: 'not stated here',
    source: 'Brutzkus, Oren, Gilad-Bachrach 2019, as quoted in issue 7 and DESIGN.md (the paper is not in ../shared/papers/)',
  },
];

/**
 * The paper's sizes as printed ("11G", "6.4G", "79Mb") in MB (10^6 bytes). "Mb" is read
 * as megabytes: the paper's own 79Mb ÷ 9.6Mb = 8.22 matches the factor it states.
 */
export function paperSizeMB(printed: string): number {
  const match = /^(\d+(?:\.\d+)?)(G|Mb)$/.exec(printed);
  if (match === null) throw new Error(`unrecognized size '${printed}'`);
  return Number(match[1]) * (match[2] === 'G' ? 1000 : 1);
}
