import { fail } from './errors';

/**
 * How a dense layer z = W·x + b (W is m×n) is laid out over the S slots of one ciphertext.
 *
 * Diagonal method, hybrid form: y = Σ_k d_k ⊙ rot(x', k) for k < diagonals, then
 * rotate-and-sum over `sumSteps` adds every slot j ≡ q (mod outPeriod) into output row q.
 * The output comes out replicated with period `outPeriod`, the layout the next layer reads.
 *
 * Input layouts:
 * - 'replicated': x' = x repeated with period `period` (what a previous layer produces).
 *   Needs min(outPeriod, period) diagonals; each (row, column) pair is used once and the
 *   other copies get zero weights.
 * - 'shifted': copy i of x (slots [i·period, (i+1)·period)) is x rotated by i·diagonals.
 *   Only the device can lay out its own input this way (it knows x before encrypting),
 *   and it reaches the lower bound: outPeriod·period/S diagonals, each slot useful.
 *
 * - 'scattered': feature `columns[s]` in slot s (−1: anything), as a rotated convolution
 *   leaves its output. outPeriod diagonals cover every (row, column) pair; the
 *   rotate-and-sum then runs over all S slots. The input may span several ciphertexts
 *   (`parts`, columns[t·S + s] for slot s of part t): each part has its own diagonals and
 *   baby rotations, and each giant-step group sums the products of every part.
 *
 * - 'rows' (a small last layer, m·period ≤ S): x replicated with period `period` against
 *   one ciphertext holding row r of W in slots [r·period, r·period + n); one product, then
 *   log2(period) rotate-and-sum steps leave output r in slot r·period (`outStride`).
 *
 * Baby-step/giant-step: diagonal k = g·i + b uses baby rotation b (repeated rotations by
 * one) and giant rotation g·i (Horner: rotate the running sum by g, add the next group),
 * so the whole layer needs Galois keys for 1, g and the rotate-and-sum steps only.
 *
 * Complex packing (a first layer with encrypted weights and input, DESIGN.md 2b): the
 * layout spans 2·S virtual slots, slot s carrying virtual slots s (real part) and S + s
 * (imaginary part); a rotation turns both halves alike. The owner packs each diagonal
 * d = a + i·b (a over the first half, b over the second) as (a − i·b)/2, so that the real
 * part of d·x is (a·x_re + b·x_im)/2 and one conjugation (z + z̄) completes the sum: half
 * the diagonals, for one key switch.
 */
export interface DensePlan {
  readonly kind: 'dense';
  readonly inputs: number;
  readonly outputs: number;
  readonly slots: number;
  readonly layout: 'replicated' | 'shifted' | 'rows' | 'scattered';
  /** Ciphertexts the input spans (more than one only in the scattered layout). */
  readonly parts: number;
  /** Two values per slot (see above): the layout spans 2·slots virtual slots. */
  readonly complex: boolean;
  /** The input's feature per slot (of each part), for the 'scattered' layout. */
  readonly columns?: Int32Array;
  /** Period of the input layout (power of two ≥ inputs). */
  readonly period: number;
  /** Period of the output (power of two ≥ outputs). */
  readonly outPeriod: number;
  readonly diagonals: number;
  readonly baby: number;
  readonly giant: number;
  /** Rotation steps of the final rotate-and-sum. */
  readonly sumSteps: readonly number[];
  /** Output r sits in slot r·outStride (1: the outputs are contiguous). */
  readonly outStride: number;
}

export function nextPowerOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** Lower bound on ct×ct multiplications for an m×n layer over S slots: ⌈m·n/S⌉. */
export function lowerBoundMults(outputs: number, inputs: number, slots: number): number {
  return Math.ceil((outputs * inputs) / slots);
}

/**
 * Where diagonal k of input part t sits in the layer's weight list: (i·parts + t)·baby + b
 * for k = i·baby + b (one part: at k), so that each giant-step group is contiguous.
 */
export function diagonalSlot(plan: DensePlan, k: number, t: number): number {
  return (Math.floor(k / plan.baby) * plan.parts + t) * plan.baby + (k % plan.baby);
}

/** Entries of the layer's weight list (see diagonalSlot; the last group holds only the diagonals that remain). */
export function weightCount(plan: DensePlan): number {
  return (plan.giant * plan.parts - 1) * plan.baby + plan.diagonals - (plan.giant - 1) * plan.baby;
}

/** Slots of the layout: 2·slots virtual slots when complex. */
export function virtualSlots(plan: DensePlan): number {
  return plan.complex ? 2 * plan.slots : plan.slots;
}

/** The column of x held by each (virtual) slot of the input layout (−1: a padding slot, always zero). */
export function inputColumns(plan: DensePlan): Int32Array {
  if (plan.layout === 'scattered') return plan.columns!;
  const cols = new Int32Array(virtualSlots(plan));
  for (let s = 0; s < cols.length; s++) {
    const r = s % plan.period;
    const c = plan.layout === 'shifted' ? (r + plan.diagonals * Math.floor(s / plan.period)) % plan.period : r;
    cols[s] = c < plan.inputs ? c : -1;
  }
  return cols;
}

function candidate(
  inputs: number,
  outputs: number,
  slots: number,
  layout: 'replicated' | 'shifted',
  finalLayer: boolean,
  inputPeriod = nextPowerOfTwo(inputs),
  complex = false,
): DensePlan {
  let period = inputPeriod;
  let outPeriod = nextPowerOfTwo(outputs);
  let diagonals: number;
  if (layout === 'shifted') {
    // The coverage argument needs outPeriod ≤ period and at least one diagonal.
    const virtual = complex ? 2 * slots : slots;
    period = Math.max(period, outPeriod);
    while (period * outPeriod < virtual) {
      if (outPeriod < period) outPeriod *= 2;
      else period *= 2;
    }
    diagonals = (outPeriod * period) / virtual;
  } else {
    diagonals = Math.min(outPeriod, period);
  }
  // Rows are spread over [0, period) only, so a final layer (whose output need not be
  // replicated) stops the rotate-and-sum there.
  const sumEnd = finalLayer && layout === 'replicated' ? Math.max(period, outPeriod) : slots;
  const sumSteps: number[] = [];
  for (let step = outPeriod; step < sumEnd; step *= 2) sumSteps.push(step);
  const { baby, giant } = splitBabyGiant(diagonals);
  return { kind: 'dense', inputs, outputs, slots, layout, parts: 1, complex, period, outPeriod, diagonals, baby, giant, sumSteps, outStride: 1 };
}

/** The 'rows' layout of a last layer, or undefined when its rows do not fit side by side. */
function rowsCandidate(inputs: number, outputs: number, slots: number, inputPeriod = nextPowerOfTwo(inputs)): DensePlan | undefined {
  if (outputs * inputPeriod > slots) return undefined;
  const sumSteps: number[] = [];
  for (let step = 1; step < inputPeriod; step *= 2) sumSteps.push(step);
  return {
    kind: 'dense',
    inputs,
    outputs,
    slots,
    layout: 'rows',
    parts: 1,
    complex: false,
    period: inputPeriod,
    outPeriod: slots,
    diagonals: 1,
    baby: 1,
    giant: 1,
    sumSteps,
    outStride: inputPeriod,
  };
}

/** A layer reading features scattered over the slots of one or more ciphertexts (see DensePlan). */
function scatteredCandidate(inputs: number, outputs: number, slots: number, columns: Int32Array): DensePlan {
  if (columns.length === 0 || columns.length % slots !== 0) fail('E_SHAPE', `an input layout of ${columns.length} slots is not a whole number of ${slots}-slot ciphertexts`);
  const seen = new Uint8Array(inputs);
  for (const c of columns) {
    if (c >= inputs) fail('E_SHAPE', `the input layout names feature ${c}, the layer reads ${inputs}`);
    if (c >= 0) seen[c] = 1;
  }
  if (!seen.every((v) => v === 1)) fail('E_SHAPE', `the input layout leaves some of the layer's ${inputs} inputs out`);
  const outPeriod = nextPowerOfTwo(outputs);
  const sumSteps: number[] = [];
  for (let step = outPeriod; step < slots; step *= 2) sumSteps.push(step);
  const { baby, giant } = splitBabyGiant(outPeriod);
  return { kind: 'dense', inputs, outputs, slots, layout: 'scattered', parts: columns.length / slots, complex: false, columns, period: slots, outPeriod, diagonals: outPeriod, baby, giant, sumSteps, outStride: 1 };
}

/** Features in order over as many ciphertexts as they need: feature f in slot f mod S of part ⌊f/S⌋. */
function sequentialColumns(inputs: number, slots: number): Int32Array {
  return Int32Array.from({ length: Math.ceil(inputs / slots) * slots }, (_, s) => (s < inputs ? s : -1));
}

/**
 * Baby/giant split: key switches cost baby−1 + giant−1 rotations + giant relinearizations,
 * so g ≈ √(2·diagonals) balances them.
 */
function splitBabyGiant(diagonals: number): { baby: number; giant: number } {
  let best = { baby: diagonals, giant: 1, cost: Infinity };
  for (let baby = 1; baby <= diagonals; baby *= 2) {
    const giant = Math.ceil(diagonals / baby);
    const cost = baby - 1 + 2 * giant - 1;
    if (cost < best.cost) best = { baby, giant, cost };
  }
  return { baby: best.baby, giant: best.giant };
}

/** Rough cost in ct×ct-multiplication units (a key switch costs about five). */
export function estimatedCost(plan: DensePlan): number {
  const keySwitches = plan.baby - 1 + 2 * plan.giant - 1 + plan.sumSteps.length + (plan.complex ? 1 : 0);
  return plan.diagonals + 5 * keySwitches;
}

export function planDense(
  inputs: number,
  outputs: number,
  slots: number,
  options: {
    inputLayout: 'replicated' | 'shifted' | 'scattered';
    inputPeriod?: number;
    inputColumns?: Int32Array;
    finalLayer: boolean;
    rows?: boolean;
    complex?: boolean;
    /** An input the device lays out that does not fit one ciphertext may span several (scattered, in order). */
    spanning?: boolean;
  },
): DensePlan {
  if (!Number.isInteger(inputs) || !Number.isInteger(outputs) || inputs < 1 || outputs < 1) {
    fail('E_SHAPE', `dense layer needs positive integer sizes, got ${outputs}×${inputs}`);
  }
  if (nextPowerOfTwo(outputs) > slots) fail('E_SHAPE', `a ${outputs}×${inputs} layer's outputs do not fit in ${slots} slots; choose a larger ring degree`);
  if (options.inputLayout === 'scattered') {
    if (options.inputColumns === undefined) fail('E_SHAPE', 'a scattered input layout needs its columns');
    return scatteredCandidate(inputs, outputs, slots, options.inputColumns);
  }
  if (nextPowerOfTwo(inputs) > slots) {
    if (options.inputLayout === 'shifted' && options.spanning === true) return scatteredCandidate(inputs, outputs, slots, sequentialColumns(inputs, slots));
    fail('E_SHAPE', `a ${outputs}×${inputs} layer does not fit in ${slots} slots; choose a larger ring degree`);
  }
  const { inputPeriod } = options;
  if (inputPeriod !== undefined && (inputPeriod < nextPowerOfTwo(inputs) || inputPeriod !== nextPowerOfTwo(inputPeriod))) {
    fail('E_SHAPE', `layer expects ${inputs} inputs but the previous layer produces period ${inputPeriod}`);
  }
  // A previous layer may pad its output beyond `inputs` rows; those slots hold zeros.
  const replicated = candidate(inputs, outputs, slots, 'replicated', options.finalLayer, inputPeriod);
  const rows = options.finalLayer && options.rows === true && options.inputLayout === 'replicated' ? rowsCandidate(inputs, outputs, slots, inputPeriod) : undefined;
  if (rows !== undefined && estimatedCost(rows) < estimatedCost(replicated)) return rows;
  if (options.inputLayout !== 'shifted') return replicated;
  const candidates = [replicated, candidate(inputs, outputs, slots, 'shifted', options.finalLayer)];
  const complex = options.complex === true ? candidate(inputs, outputs, slots, 'shifted', options.finalLayer, undefined, true) : undefined;
  // Each copy of the input must fit in one half of the virtual slots.
  if (complex !== undefined && complex.period <= slots && complex.diagonals >= 1) candidates.push(complex);
  return candidates.reduce((best, c) => (estimatedCost(c) <= estimatedCost(best) ? c : best));
}

/** Packs the input vector into the layer's input layout (what the device encrypts; complex: real parts, then imaginary parts; several parts: one after the other). */
export function packInput(plan: DensePlan, x: ArrayLike<number>): Float64Array {
  if (x.length !== plan.inputs) fail('E_SHAPE', `input has ${x.length} values, the classifier expects ${plan.inputs}`);
  const cols = inputColumns(plan);
  const out = new Float64Array(cols.length);
  for (let s = 0; s < cols.length; s++) {
    const c = cols[s]!;
    if (c >= 0) {
      const v = x[c]!;
      if (!Number.isFinite(v)) fail('E_SHAPE', `input value ${c} is not a finite number`);
      out[s] = v;
    }
  }
  return out;
}

/**
 * Which (weight-list entry, slot) pairs carry which weight: the same for every matrix of
 * this shape. `index[n·V + j]` is row·inputs + column, or −1 for a zero entry (n: see
 * diagonalSlot; V: the virtual slots of one part, 2·S when complex, where a rotation
 * turns each half on its own).
 */
export function diagonalIndex(plan: DensePlan): Int32Array {
  const { slots, diagonals, outPeriod, inputs, outputs, parts } = plan;
  const cols = inputColumns(plan);
  const virtual = cols.length / parts;
  const index = new Int32Array(weightCount(plan) * virtual).fill(-1);
  if (plan.layout === 'rows') {
    for (let j = 0; j < outputs * plan.period; j++) if (cols[j]! >= 0) index[j] = Math.floor(j / plan.period) * inputs + cols[j]!;
    return index;
  }
  const covered = new Uint8Array(outputs * inputs);
  let count = 0;
  for (let t = 0; t < parts; t++) {
    for (let k = 0; k < diagonals; k++) {
      const n = diagonalSlot(plan, k, t);
      for (let j = 0; j < virtual; j++) {
        const row = j % outPeriod;
        const col = cols[t * virtual + j - (j % slots) + (((j % slots) + k) % slots)]!;
        if (row >= outputs || col < 0) continue;
        const at = row * inputs + col;
        if (covered[at]) continue;
        covered[at] = 1;
        index[n * virtual + j] = at;
        count++;
      }
    }
  }
  if (count !== outputs * inputs) {
    fail('E_SHAPE', `packing covers ${count} of ${outputs * inputs} weights of a ${outputs}×${inputs} layer`);
  }
  return index;
}

/**
 * Rotates left by `step` (slot j receives slot j+step), as SEAL's rotate_vector does; a
 * complex vector of 2·`slots` values (real parts, then imaginary parts) turns each half.
 */
export function rotateLeft(v: Float64Array, step: number, slots = v.length): Float64Array {
  if (v.length === 2 * slots) {
    const out = new Float64Array(v.length);
    out.set(rotateLeft(v.subarray(0, slots), step));
    out.set(rotateLeft(v.subarray(slots), step), slots);
    return out;
  }
  const n = v.length;
  const s = ((step % n) + n) % n;
  const out = new Float64Array(n);
  out.set(v.subarray(s), 0);
  out.set(v.subarray(0, s), n - s);
  return out;
}

export interface PackedDense {
  /** Pre-rotated diagonals in evaluation order; null where the diagonal is structurally zero. */
  readonly diagonals: (Float64Array | null)[];
  /** Bias replicated with the output period (all slots). */
  readonly bias: Float64Array;
}

/**
 * Packs W (row-major, outputs×inputs) and b for the plan: diagonal g·i + b is pre-rotated
 * right by g·i, so the device's giant step rotates once per group.
 */
export function packDense(plan: DensePlan, weights: ArrayLike<number>, bias: ArrayLike<number> | undefined): PackedDense {
  const { slots, baby, inputs, outputs, outPeriod } = plan;
  if (weights.length !== inputs * outputs) {
    fail('E_SHAPE', `weights have ${weights.length} values, a ${outputs}×${inputs} layer needs ${inputs * outputs}`);
  }
  if (bias !== undefined && bias.length !== outputs) {
    fail('E_SHAPE', `bias has ${bias.length} values, the layer has ${outputs} outputs`);
  }
  const index = diagonalIndex(plan);
  const virtual = virtualSlots(plan);
  const packed: (Float64Array | null)[] = [];
  for (let n = 0; n < weightCount(plan); n++) {
    const d = new Float64Array(virtual);
    let used = false;
    for (let j = 0; j < virtual; j++) {
      const at = index[n * virtual + j]!;
      if (at >= 0) {
        // Complex: a + i·b packed as (a − i·b)/2 (see DensePlan).
        d[j] = !plan.complex ? weights[at]! : j < slots ? weights[at]! / 2 : -weights[at]! / 2;
        used = true;
      }
    }
    const giantShift = baby * Math.floor(n / (plan.parts * baby));
    packed.push(used ? rotateLeft(d, -giantShift, slots) : null);
  }
  const b = new Float64Array(slots);
  if (bias !== undefined && plan.layout === 'rows') for (let r = 0; r < outputs; r++) b[r * plan.outStride] = bias[r]!;
  else if (bias !== undefined) for (let j = 0; j < slots; j++) b[j] = j % outPeriod < outputs ? bias[j % outPeriod]! : 0;
  return { diagonals: packed, bias: b };
}
