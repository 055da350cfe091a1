import {
  type ConvLayer,
  type ConvPlan,
  type ConvShape,
  convGeometry,
  convInputs,
  convPartInputs,
  freeGrid,
  type GridLayout,
  gridColumns,
  gridParts,
  packConvInput,
  pairPlanes,
  planConv,
  planRotatedConv,
  type RotatedConvPlan,
} from './conv';
import { fail } from './errors';
import { type DensePlan, inputColumns, packInput, planDense, weightCount } from './packing';

/** A dense layer of the float model: z = W·x + b, W row-major (outputs × inputs). */
export interface DenseLayer {
  readonly kind: 'dense';
  readonly inputs: number;
  readonly outputs: number;
  readonly weights: ArrayLike<number>;
  readonly bias?: ArrayLike<number>;
}

/** A polynomial activation a0 + a1·x + … + ad·x^d (coefficient i multiplies x^i). */
export interface PolyLayer {
  readonly kind: 'poly';
  readonly coeffs: readonly number[];
}

/**
 * A residual connection: adds the output of the earlier layer `from` to the output of the
 * convolution right before it (same shape, same slots). It costs no level: the skip value
 * joins the convolution's sum before its rescale.
 */
export interface AddLayer {
  readonly kind: 'add';
  readonly from: number;
}

export type Layer = ConvLayer | DenseLayer | PolyLayer | AddLayer;

/**
 * How a polynomial activation p(x) = Σ a_i·x^i is evaluated. With x = σ·u, the device
 * computes Σ_{i≥1} monic[i]·u^i (monic[d] = 1), and p(x) = lead·that + constant.
 * σ (`inputScale`) is folded into the dense layer before (W/σ, b/σ), chosen so that
 * |lead| = 1: tiny leading coefficients, common in high-degree approximations, would
 * otherwise turn into tiny folded weights or huge monic coefficients, both of which lose
 * CKKS precision. When a dense layer follows, `lead` and `constant` are folded into it too
 * (`folded`), saving a level; a convolution after it takes them alike.
 */
export interface PolyPlan {
  readonly kind: 'poly';
  readonly monic: readonly number[];
  readonly lead: number;
  readonly constant: number;
  readonly inputScale: number;
  readonly folded: boolean;
}

export type LayerPlan = ConvPlan | RotatedConvPlan | DensePlan | PolyPlan | AddLayer;

/** Multiplicative depth of the monic evaluation: ⌈log2 d⌉, as many levels as x^d needs. */
export function monicDepth(degree: number): number {
  return degree <= 1 ? 0 : Math.ceil(Math.log2(degree));
}

export function layerDepth(plan: LayerPlan): number {
  if (plan.kind === 'add') return 0;
  if (plan.kind !== 'poly') return 1;
  return monicDepth(plan.monic.length - 1) + (!plan.folded && Math.abs(plan.lead) !== 1 ? 1 : 0);
}

function trimmedCoeffs(layer: PolyLayer, index: number): number[] {
  const coeffs = [...layer.coeffs];
  if (!coeffs.every(Number.isFinite)) fail('E_SHAPE', `layer ${index}: activation coefficients must be finite numbers`);
  while (coeffs.length > 0 && coeffs[coeffs.length - 1] === 0) coeffs.pop();
  if (coeffs.length < 2) {
    fail('E_SHAPE', `layer ${index}: an activation must have degree ≥ 1, got coefficients [${layer.coeffs.join(', ')}]`);
  }
  if (coeffs.length > 33) fail('E_UNSUPPORTED', `layer ${index}: activation degree ${coeffs.length - 1} is above 32`);
  return coeffs;
}

/** What planning needs of a model: its shapes and its activations, not its weights. */
export type LayerShape = ConvShape | { readonly kind: 'dense'; readonly inputs: number; readonly outputs: number } | PolyLayer | AddLayer;

/** A layer that multiplies by weights: a convolution or a dense layer. */
const isLinear = (layer: LayerShape | undefined): boolean => layer?.kind === 'dense' || layer?.kind === 'conv';

/**
 * Checks a model's shapes and plans each activation. An activation followed by a dense
 * layer has its leading coefficient and constant folded into that layer (see foldModel),
 * which saves one level per activation.
 */
export function planActivations(layers: readonly LayerShape[]): PolyPlan[] {
  if (layers.length === 0) fail('E_SHAPE', 'a classifier needs at least one layer');
  const first = layers[0]!;
  if (!isLinear(first)) fail('E_SHAPE', 'the first layer of a classifier must be a convolution or a dense layer');
  if (!layers.some((l) => l.kind === 'dense')) fail('E_SHAPE', 'a classifier needs a dense layer after its convolution');
  const polys: PolyPlan[] = [];
  let width = first.kind === 'conv' ? convGeometry(first, 'layer 0').inputs : (first as DenseLayer).inputs;
  /** outputs[k]: how many values layer k produces. */
  const outputs: number[] = [];
  const skipped = new Set(layers.flatMap((l) => (l.kind === 'add' ? [l.from] : [])));
  layers.forEach((layer, i) => {
    if (i > 0) outputs[i - 1] = width;
    if (layer.kind === 'add') {
      const { from } = layer;
      if (!Number.isInteger(from) || from < 0 || from >= i - 1) fail('E_SHAPE', `layer ${i}: a residual add takes an earlier layer's output, from 0 to ${i - 2}, got ${String(from)}`);
      if (layers[i - 1]!.kind !== 'conv' || i - 1 === 0) fail('E_UNSUPPORTED', `layer ${i}: a residual add must follow a convolution after the first layer (it joins that convolution's sum)`);
      if (layers[from + 1]?.kind === 'add') fail('E_UNSUPPORTED', `layer ${i}: layer ${from} is followed by an add, so its own output is not kept: add layer ${from + 1}'s instead`);
      if (outputs[from] !== width) fail('E_SHAPE', `layer ${i}: adds layer ${from}'s ${outputs[from]} values to ${width}`);
      return;
    }
    if (layer.kind === 'conv') {
      const g = convGeometry(layer, `layer ${i}`);
      if (i > 0 && g.inputs !== width) {
        fail('E_SHAPE', `layer ${i}: the convolution reads ${layer.inChannels}×${layer.inHeight}×${layer.inWidth} = ${g.inputs} values but the previous layer produces ${width}`);
      }
      width = g.outputs;
      return;
    }
    if (layer.kind === 'dense') {
      if (!Number.isInteger(layer.inputs) || !Number.isInteger(layer.outputs) || layer.inputs < 1 || layer.outputs < 1) {
        fail('E_SHAPE', `layer ${i}: dense sizes must be positive integers, got ${layer.outputs}×${layer.inputs}`);
      }
      if (layer.inputs !== width) {
        fail('E_SHAPE', `layer ${i}: expects ${layer.inputs} inputs but the previous layer produces ${width}`);
      }
      width = layer.outputs;
      return;
    }
    const coeffs = trimmedCoeffs(layer, i);
    const d = coeffs.length - 1;
    const ad = coeffs[d]!;
    // σ = |a_d|^(−1/d) makes the leading coefficient ±1: the folded weights keep their
    // magnitude (CKKS encodes with absolute precision, so tiny weights lose digits) and the
    // monic polynomial's values stay those of the activation.
    // A linear layer whose output a residual add reads keeps its scale.
    const scaled = isLinear(layers[i - 1]) && !skipped.has(i - 1);
    const sigma = scaled ? Math.abs(ad) ** (-1 / d) : 1;
    const lead = scaled ? Math.sign(ad) : ad;
    const monic = coeffs.map((c, k) => (k === 0 ? 0 : (c * sigma ** k) / lead));
    monic[d] = 1;
    // An output a residual add reads must be the activation's own value: not folded.
    polys.push({ kind: 'poly', monic, lead, constant: coeffs[0]!, inputScale: sigma, folded: isLinear(layers[i + 1]) && !skipped.has(i) });
  });
  return polys;
}

/**
 * Checks the weights and folds each activation's scalings into its neighbours, which the
 * owner can do for free since it knows the weights: the layer before an activation
 * gets W/σ, b/σ; a dense layer after it gets W' = lead·W, b' = b + constant·W·1, a
 * convolution W' = lead·W and the constant as its input offset.
 * Returns the layers as they will be packed.
 */
export function foldModel<L extends Layer>(layers: readonly L[]): L[] {
  const polys = planActivations(layers);
  const planOf = new Map<number, PolyPlan>();
  let next = 0;
  layers.forEach((layer, i) => layer.kind === 'poly' && planOf.set(i, polys[next++]!));
  return layers.map((layer: Layer, i): Layer => {
    const before = planOf.get(i - 1);
    const lead = before?.folded ? before.lead : 1;
    const constant = before?.folded ? before.constant : 0;
    const sigma = planOf.get(i + 1)?.inputScale ?? 1;
    if (layer.kind === 'conv') return foldConv(layer, i, lead, constant, sigma);
    if (layer.kind !== 'dense') return layer;
    if (layer.weights.length !== layer.inputs * layer.outputs) {
      fail('E_SHAPE', `layer ${i}: weights have ${layer.weights.length} values, ${layer.outputs}×${layer.inputs} needs ${layer.inputs * layer.outputs}`);
    }
    if (layer.bias !== undefined && layer.bias.length !== layer.outputs) {
      fail('E_SHAPE', `layer ${i}: bias has ${layer.bias.length} values, the layer has ${layer.outputs} outputs`);
    }
    for (let k = 0; k < layer.weights.length; k++) {
      if (!Number.isFinite(layer.weights[k]!)) fail('E_SHAPE', `layer ${i}: weight ${k} is not a finite number`);
    }
    for (let k = 0; k < (layer.bias?.length ?? 0); k++) {
      if (!Number.isFinite(layer.bias![k]!)) fail('E_SHAPE', `layer ${i}: bias ${k} is not a finite number`);
    }
    const weights = Float64Array.from(layer.weights, (v) => (v * lead) / sigma);
    const bias = Float64Array.from({ length: layer.outputs }, (_, r) => {
      let rowSum = 0;
      if (constant !== 0) for (let c = 0; c < layer.inputs; c++) rowSum += layer.weights[r * layer.inputs + c]!;
      return ((layer.bias?.[r] ?? 0) + constant * rowSum) / sigma;
    });
    return { ...layer, weights, bias };
  }) as L[];
}

/** A convolution with its neighbours' scalings folded in: W·lead/σ, b/σ, the constant as input offset (÷σ with the rest). */
function foldConv(layer: ConvLayer, index: number, lead: number, constant: number, sigma: number): ConvLayer {
  const where = `layer ${index}`;
  const g = convGeometry(layer, where);
  if (layer.weights.length !== layer.outChannels * g.planes) {
    fail('E_SHAPE', `${where}: conv weights have ${layer.weights.length} values, ${layer.outChannels}×${layer.inChannels}×${layer.kernel[0]}×${layer.kernel[1]} needs ${layer.outChannels * g.planes}`);
  }
  if (layer.bias !== undefined && layer.bias.length !== layer.outChannels) {
    fail('E_SHAPE', `${where}: conv bias has ${layer.bias.length} values, the layer has ${layer.outChannels} output channels`);
  }
  const finite = (values: ArrayLike<number>, what: string) => {
    for (let k = 0; k < values.length; k++) if (!Number.isFinite(values[k]!)) fail('E_SHAPE', `${where}: conv ${what} ${k} is not a finite number`);
  };
  finite(layer.weights, 'weight');
  if (layer.bias !== undefined) finite(layer.bias, 'bias');
  return {
    ...layer,
    weights: Float64Array.from(layer.weights, (v) => (v * lead) / sigma),
    bias: Float64Array.from({ length: layer.outChannels }, (_, o) => (layer.bias?.[o] ?? 0) / sigma),
    inputOffset: constant / lead,
  };
}

/** Multiplicative depth of a whole classifier: what planParameters needs. */
export function classifierDepth(layers: readonly LayerShape[]): number {
  const polys = planActivations(layers);
  let poly = 0;
  return layers.reduce((depth, layer) => depth + (layer.kind === 'add' ? 0 : layer.kind !== 'poly' ? 1 : layerDepth(polys[poly++]!)), 0);
}

/**
 * Plans every layer for `slots` slots. The first layer reads what the device packs: a dense
 * layer its shifted layout (or, if cheaper, a replicated one), a convolution its im2col
 * planes laid out directly in the next linear layer's input layout. Later layers read what
 * the layer before leaves: a dense layer's replicated output, a rotated convolution's grid
 * (scattered features for a dense layer after it).
 */
export function planLayers(layers: readonly LayerShape[], polyPlans: readonly PolyPlan[], slots: number, options: PlanningOptions = {}): LayerPlan[] {
  const plans: (LayerPlan | undefined)[] = [];
  let previous: DensePlan | RotatedConvPlan | undefined;
  let poly = 0;
  const lastDense = layers.map((l) => l.kind).lastIndexOf('dense');
  const spanning = options.spanCiphertexts === true;
  layers.forEach((layer, i) => {
    if (layer.kind === 'poly' || layer.kind === 'add') {
      plans.push(layer.kind === 'poly' ? polyPlans[poly++]! : layer);
      return;
    }
    const afterFirst = i > 0 && previous === undefined;
    let plan: DensePlan | RotatedConvPlan | undefined;
    if (layer.kind === 'conv' && i > 0) {
      const where = `layer ${i}`;
      const input = afterFirst ? freeGrid(layer, slots, spanning) : gridAfter(previous!, layer, where);
      if (input === undefined) {
        const what = spanning
          ? `one map of ${layer.inHeight}×${layer.inWidth} does not fit one ciphertext of ${slots} slots`
          : `${layer.inChannels} input and ${layer.outChannels} output maps of ${layer.inHeight}×${layer.inWidth} do not fit one ciphertext of ${slots} slots (spanning several is CKKS only)`;
        fail('E_UNSUPPORTED', `${where}: ${what}: choose a larger ring degree or split after this layer`);
      }
      plan = planRotatedConv(layer, input, slots, where, spanning);
    } else if (layer.kind === 'dense') {
      plan = planDense(layer.inputs, layer.outputs, slots, {
        inputLayout: previous?.kind === 'conv-rot' ? 'scattered' : previous === undefined ? 'shifted' : 'replicated',
        inputPeriod: previous?.kind === 'dense' ? previous.outPeriod : undefined,
        inputColumns: previous?.kind === 'conv-rot' ? previous.columns : undefined,
        finalLayer: i === lastDense,
        rows: options.rowsLast,
        complex: options.complex === true && i === 0,
        spanning,
      });
    }
    plans.push(plan);
    if (plan !== undefined) previous = plan;
  });
  const first = layers[0]!;
  if (first.kind === 'conv') {
    const nextIndex = plans.findIndex((p, i) => i > 0 && p !== undefined && p.kind !== 'poly');
    const next = plans[nextIndex] as DensePlan | RotatedConvPlan | undefined;
    if (next === undefined) fail('E_SHAPE', 'a classifier needs a dense layer after its convolution');
    const produced = convGeometry(first).outputs;
    const reads = next.kind === 'dense' ? next.inputs : next.geometry.inputs;
    if (reads !== produced) fail('E_SHAPE', `layer ${nextIndex}: expects ${reads} inputs but the convolution produces ${produced}`);
    plans[0] = planConv(first, slots, next.kind === 'dense' ? inputColumns(next) : gridColumns(next.input, slots), 'layer 0', options.complex === true && convGeometry(first).planes > 1);
  }
  layers.forEach((layer, i) => {
    if (layer.kind !== 'add') return;
    const main = outputColumns(plans as LayerPlan[], i - 1);
    const skip = outputColumns(plans as LayerPlan[], layer.from);
    if (main.some((f, s) => f >= 0 && skip[s] !== f)) {
      fail('E_UNSUPPORTED', `layer ${i}: layer ${layer.from}'s values sit in other slots than the convolution's before the add (a branch with a stride, or a dense layer on one side): the two branches of a residual add must keep their layout`);
    }
  });
  return plans as LayerPlan[];
}

/** The feature each slot holds after layer k (−1: none): the layout of the last linear layer up to k. */
function outputColumns(plans: readonly LayerPlan[], k: number): Int32Array {
  for (let i = k; i >= 0; i--) {
    const plan = plans[i]!;
    if (plan.kind === 'conv' || plan.kind === 'conv-rot') return plan.columns;
    if (plan.kind === 'dense') {
      return Int32Array.from({ length: plan.slots }, (_, s) => (s % plan.outStride === 0 && Math.floor(s / plan.outStride) % plan.outPeriod < plan.outputs ? Math.floor(s / plan.outStride) % plan.outPeriod : -1));
    }
  }
  fail('E_SHAPE', `layer ${k} has no linear layer before it`);
}

/** The grid a convolution reads from the layer before it: a rotated convolution's output, or a dense layer's replicated output. */
function gridAfter(previous: DensePlan | RotatedConvPlan, layer: ConvShape, where: string): GridLayout {
  if (previous.kind === 'conv-rot') return previous.output;
  if (previous.layout === 'rows') fail('E_UNSUPPORTED', `${where}: a convolution cannot read a last layer's strided scores`);
  const { inChannels: c, inHeight: h, inWidth: w } = layer;
  return { channels: c, height: h, width: w, block: h * w, rowStep: w, colStep: 1, period: previous.outPeriod, perPart: c };
}

export interface PlanningOptions {
  /** A small last layer may take the 'rows' layout (its scores strided). */
  readonly rowsLast?: boolean;
  /** The first layer may pack two values per slot (CKKS with encrypted weights and input): a convolution its planes two per ciphertext, a dense layer half the diagonals. */
  readonly complex?: boolean;
  /**
   * Activations that do not fit one ciphertext span several: an im2col convolution's
   * output, a rotated convolution's input and output maps, a dense layer's input. Without
   * it such a layer is refused (a larger ring degree is the remedy).
   */
  readonly spanCiphertexts?: boolean;
}

/** How CKKS plans its layers (complex packing depends on the mode: see planClassifier). */
export const CKKS_PLANNING: PlanningOptions = { rowsLast: true, spanCiphertexts: true };

/** The ciphertexts a linear layer's output spans (activations and adds keep their input's). */
export function outputParts(plan: ConvPlan | RotatedConvPlan | DensePlan): number {
  return plan.kind === 'conv' ? plan.parts : plan.kind === 'conv-rot' ? gridParts(plan.output) : 1;
}

/** The ciphertexts each layer's output spans, layer by layer. */
export function layerParts(plans: readonly LayerPlan[]): number[] {
  let parts = 1;
  return plans.map((plan) => (parts = plan.kind === 'poly' || plan.kind === 'add' ? parts : outputParts(plan)));
}

/** The scores of a plan's result: `count` outputs, output r in slot r·stride. */
export function outputSlots(plans: readonly LayerPlan[]): { count: number; stride: number } {
  const last = plans.filter((p): p is DensePlan => p.kind === 'dense').pop();
  if (last === undefined) fail('E_SHAPE', 'a classifier needs a dense layer');
  return { count: last.outputs, stride: last.outStride };
}

/** Reads the scores out of a result's slots. */
export function readOutputs(slots: ArrayLike<number>, output: { count: number; stride: number }): Float64Array {
  return Float64Array.from({ length: output.count }, (_, r) => slots[r * output.stride]!);
}

/**
 * The device's packed inputs: all at hand, or made one by one as the first layer reads
 * them — a convolution then frees each plane after its product, so the encrypted planes of
 * a large first layer are never all in memory at once.
 */
export type InputSource<V> = readonly V[] | ((index: number) => V);

function inputAt<V>(inputs: InputSource<V>, index: number): V | undefined {
  return typeof inputs === 'function' ? inputs(index) : inputs[index];
}

/** One layer's weights in the backend's representation. */
export interface LayerWeights<W> {
  /** A dense layer's diagonals, or a convolution's weight planes; null: structurally zero. */
  readonly diagonals: readonly (W | null)[];
  /** One bias per ciphertext of the output (see outputParts). */
  readonly biases: readonly (W | null)[];
}

/**
 * The operations the packed plan is written in. Three implementations run the very same
 * plan: SEAL (encrypted), plain vectors (the reference) and a tracer (levels, scales,
 * operation counts). Values returned by a method are fresh and owned by the caller.
 */
export interface Backend<V, W> {
  rotate(x: V, step: number): V;
  /** acc + w⊙x without relinearization; null stays null when the product is zero. */
  mulAdd(acc: V | null, w: W, x: V): V | null;
  /** a·b without relinearization, at the lower of the two levels. */
  mul(a: V, b: V): V;
  /** c·x with the level and scale of `like` (so it can be added to it before rescaling). */
  mulConstLike(x: V, c: number, like: V): V;
  /** x ← c·x, consuming one level and keeping the scale. */
  scaleBy(x: V, c: number): void;
  negate(x: V): void;
  addConst(x: V, c: number): void;
  /** acc ← acc + x (x may sit at a higher level). */
  add(acc: V, x: V): void;
  addWeight(acc: V, w: W): void;
  /**
   * Always before the rescale of a product: rescaling a three-part ciphertext rounds its
   * s² part, and relinearizing afterwards carries that rounding into the value (measured:
   * x² at scale 2^26, error 0.023 against 1.7e-4).
   */
  relinearize(x: V): void;
  rescale(x: V): void;
  /** x + x̄ = 2·Re(x) of a complex-packed value, fresh (one key switch: the conjugation); CKKS only. */
  realPart?(x: V): V;
  /** The value a dense layer returns when all its products vanish: its bias or zero. */
  constant(w: W | null): V;
  clone(x: V): V;
  free(x: V): void;
}

/** Every input part rotated by each baby step, each reached from the one before (step 0 is the part itself). */
function babySteps<V, W>(be: Backend<V, W>, xs: readonly V[], babies: readonly number[]): V[][] {
  return xs.map((x) => {
    const rotated: V[] = [];
    babies.forEach((step, b) => rotated.push(b === 0 ? (step === 0 ? x : be.rotate(x, step)) : be.rotate(rotated[b - 1]!, step - babies[b - 1]!)));
    return rotated;
  });
}

function freeBabySteps<V, W>(be: Backend<V, W>, xs: readonly V[], rotated: readonly V[][]): void {
  rotated.forEach((steps, t) => steps.forEach((r) => r !== xs[t] && be.free(r)));
}

/**
 * The diagonal method's sum, baby-step/giant-step: group i holds, for every input part t,
 * the diagonals (i·parts + t)·babies + b (b < `perGroup(i)`), each multiplying part t
 * rotated by babies[b]; group i is rotated by i·giantStep, Horner-style down to group 0.
 * Groups [lo, hi) only; relinearized, not yet rescaled; null when the groups hold no
 * products. Below `lo` only the rotations by `giantStep` remain, so shares computed by
 * different workers add up to the whole sum with no extra Galois key.
 */
function giantSum<V, W>(
  be: Backend<V, W>,
  diagonals: readonly (W | null)[],
  rotated: readonly V[][],
  giantStep: number,
  range: { lo: number; hi: number; perGroup: (i: number) => number },
): V | null {
  const parts = rotated.length;
  const babies = rotated[0]!.length;
  let acc: V | null = null;
  for (let i = range.hi - 1; i >= 0; i--) {
    let part: V | null = null;
    for (let t = 0; i >= range.lo && t < parts; t++) {
      for (let b = 0; b < range.perGroup(i); b++) {
        const w = diagonals[(i * parts + t) * babies + b];
        if (w != null) part = be.mulAdd(part, w, rotated[t]![b]!);
      }
    }
    if (part !== null) be.relinearize(part);
    if (acc !== null) {
      const turned = be.rotate(acc, giantStep);
      be.free(acc);
      acc = turned;
      if (part !== null) {
        be.add(acc, part);
        be.free(part);
      }
    } else {
      acc = part;
    }
  }
  return acc;
}

/** A dense layer's share: its giant-step groups [lo, hi) (see diagonalSum). */
export function denseShare<V, W>(be: Backend<V, W>, plan: DensePlan, weights: LayerWeights<W>, xs: readonly V[], lo = 0, hi = plan.giant): V | null {
  const { baby, diagonals } = plan;
  if (weights.diagonals.length !== weightCount(plan)) {
    fail('E_SHAPE', `layer has ${weights.diagonals.length} diagonals, its plan needs ${weightCount(plan)}`);
  }
  if (xs.length !== plan.parts) fail('E_SHAPE', `the layer reads ${plan.parts} ciphertexts, got ${xs.length}`);
  if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo < 0 || hi > plan.giant || lo >= hi) {
    fail('E_SHAPE', `giant-step groups [${lo}, ${hi}) are not a range within [0, ${plan.giant})`);
  }
  const rotated = babySteps(be, xs, Array.from({ length: Math.min(baby, diagonals) }, (_, b) => b));
  const sum = giantSum(be, weights.diagonals, rotated, baby, { lo, hi, perGroup: (i) => Math.min(baby, diagonals - i * baby) });
  freeBabySteps(be, xs, rotated);
  return sum;
}

/**
 * A convolution on encrypted activations (see RotatedConvPlan): per output part, its
 * diagonal sum over every input part, rescale, bias. A residual add's `skip` value joins
 * the sum before the rescale (brought to its level and scale by a product with 1), so the
 * add costs no level.
 */
export function evaluateRotatedConv<V, W>(be: Backend<V, W>, plan: RotatedConvPlan, weights: LayerWeights<W>, xs: readonly V[], skip?: readonly V[]): V[] {
  if (weights.diagonals.length !== plan.used.length) {
    fail('E_SHAPE', `the convolution has ${weights.diagonals.length} diagonals, its plan needs ${plan.used.length}`);
  }
  const outParts = gridParts(plan.output);
  if (xs.length !== gridParts(plan.input)) fail('E_SHAPE', `the convolution reads ${gridParts(plan.input)} ciphertexts, got ${xs.length}`);
  if (skip !== undefined && skip.length !== outParts) fail('E_SHAPE', `a residual add of ${skip.length} ciphertexts to a convolution producing ${outParts}`);
  const rotated = babySteps(be, xs, plan.babies);
  const perOutput = plan.used.length / outParts;
  const outs = Array.from({ length: outParts }, (_, u) => {
    const sum = giantSum(be, weights.diagonals.slice(u * perOutput, (u + 1) * perOutput), rotated, plan.input.block, { lo: 0, hi: plan.giant, perGroup: () => plan.babies.length });
    if (sum !== null && skip !== undefined) {
      const aligned = be.mulConstLike(skip[u]!, 1, sum);
      be.add(sum, aligned);
      be.free(aligned);
    }
    return convFinish(be, weights.biases[u] ?? null, sum);
  });
  freeBabySteps(be, xs, rotated);
  return outs;
}

/**
 * Completes a dense layer from the sum of its shares: rescale, the real part of a
 * complex-packed sum (its conjugation one level lower: a cheaper key switch),
 * rotate-and-sum, bias.
 */
export function denseFinish<V, W>(be: Backend<V, W>, plan: DensePlan, weights: LayerWeights<W>, acc: V | null): V {
  const bias = weights.biases[0] ?? null;
  if (acc === null) return be.constant(bias);
  be.rescale(acc);
  if (plan.complex) acc = realPart(be, acc);
  for (const step of plan.sumSteps) {
    const turned = be.rotate(acc, step);
    be.add(acc, turned);
    be.free(turned);
  }
  if (bias !== null) be.addWeight(acc, bias);
  return acc;
}

export function evaluateDense<V, W>(be: Backend<V, W>, plan: DensePlan, weights: LayerWeights<W>, xs: readonly V[]): V {
  return denseFinish(be, plan, weights, denseShare(be, plan, weights, xs));
}

/**
 * A convolution's share: per output part, Σ W_p ⊙ X_p over its im2col planes p in
 * [lo, hi) (numbered part after part), relinearized, not yet rescaled; null for a part no
 * plane contributes to. `planes` gives plane p's packed input (only those in the range
 * are read, in order; made one by one, each is freed after its product).
 */
export function convShare<V, W>(be: Backend<V, W>, plan: ConvPlan, weights: LayerWeights<W>, planes: InputSource<V>, lo = 0, hi = convInputs(plan)): (V | null)[] {
  const count = convInputs(plan);
  if (weights.diagonals.length !== count) fail('E_SHAPE', `the convolution has ${weights.diagonals.length} weight planes, its plan needs ${count}`);
  if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo < 0 || hi > count || lo >= hi) {
    fail('E_SHAPE', `planes [${lo}, ${hi}) are not a range within [0, ${count})`);
  }
  const sums: (V | null)[] = Array<V | null>(plan.parts).fill(null);
  for (let p = lo; p < hi; p++) {
    const w = weights.diagonals[p];
    if (w == null) continue;
    const x = inputAt(planes, p);
    if (x === undefined) fail('E_SHAPE', `input plane ${p} is missing`);
    const t = Math.floor(p / convPartInputs(plan));
    sums[t] = be.mulAdd(sums[t]!, w, x);
    if (typeof planes === 'function') be.free(x);
  }
  for (const sum of sums) if (sum !== null) be.relinearize(sum);
  return sums;
}

/** 2·Re(acc) of a complex-packed sum (acc is consumed). */
function realPart<V, W>(be: Backend<V, W>, acc: V): V {
  if (be.realPart === undefined) fail('E_UNSUPPORTED', 'complex packing needs a scheme with complex slots (CKKS)');
  const real = be.realPart(acc);
  be.free(acc);
  return real;
}

/** Completes one part of a convolution from the sum of its shares: rescale, the real part of complex-packed planes (see denseFinish), bias. */
export function convFinish<V, W>(be: Backend<V, W>, bias: W | null, acc: V | null, complex = false): V {
  if (acc === null) return be.constant(bias);
  be.rescale(acc);
  if (complex) acc = realPart(be, acc);
  if (bias !== null) be.addWeight(acc, bias);
  return acc;
}

/** How many independent groups the first layer's products split into: giant steps or planes. */
export function shareGroups(plan: ConvPlan | DensePlan): number {
  return plan.kind === 'conv' ? convInputs(plan) : plan.giant;
}

/** How many slot vectors the device packs for the first layer: im2col planes (or their pairs) of every part, or one per part. */
export function inputCount(plan: ConvPlan | DensePlan): number {
  return plan.kind === 'conv' ? convInputs(plan) : plan.parts;
}

/** Packs the device's input for the first layer: its im2col planes (complex pairs of them), or one slot vector per part. */
export function packInputs(plan: ConvPlan | DensePlan, features: ArrayLike<number>): Float64Array[] {
  if (plan.kind === 'dense') {
    const packed = packInput(plan, features);
    const size = packed.length / plan.parts;
    return Array.from({ length: plan.parts }, (_, t) => packed.subarray(t * size, (t + 1) * size));
  }
  const planes = packConvInput(plan, features);
  return plan.complex ? pairPlanes(planes, 'input', plan.geometry.planes) : planes;
}

/**
 * Relative cost of the operations of a share, from the median op costs measured on this
 * kind of machine (DESIGN.md §5, N=8192): ct×ct multiply-add 1.2 ms, plaintext
 * multiply-add 0.5, relinearization 5.5, rotation 5.5.
 */
const SHARE_COST = { ctMulAdd: 1.2, plainMulAdd: 0.5, relin: 5.5, rotate: 5.5 };

/**
 * Splits the first layer's giant-step groups into at most `count` contiguous ranges
 * [lo, hi) that finish at about the same time on `count` workers. A range costs its
 * groups' products and relinearizations plus hi − 1 rotations by `baby` (every share
 * turns its sum down to group 0), so lower ranges get more groups. Minimizes the largest
 * cost exactly (dynamic programming over the split points).
 */
export function shareRanges(plan: ConvPlan | DensePlan, count: number, bothEncrypted: boolean): [number, number][] {
  if (!Number.isInteger(count) || count < 1) fail('E_SHAPE', `shares must be a positive integer, got ${count}`);
  if (plan.kind === 'conv') {
    // Every plane (or pair) costs the same (its encryption and one product): split them evenly.
    const planes = convInputs(plan);
    const parts = Math.min(count, planes);
    return Array.from({ length: parts }, (_, k): [number, number] => [Math.floor((k * planes) / parts), Math.floor(((k + 1) * planes) / parts)]);
  }
  const { giant, baby } = plan;
  const group = baby * (bothEncrypted ? SHARE_COST.ctMulAdd : SHARE_COST.plainMulAdd) + (bothEncrypted ? SHARE_COST.relin : 0);
  const cost = (lo: number, hi: number) => (hi - lo) * group + (hi - 1) * SHARE_COST.rotate;
  const parts = Math.min(count, giant);
  // best[k][h]: the smallest largest cost of splitting groups [0, h) into k ranges.
  const best = Array.from({ length: parts + 1 }, () => new Float64Array(giant + 1).fill(Infinity));
  const cut = Array.from({ length: parts + 1 }, () => new Int32Array(giant + 1));
  best[0]![0] = 0;
  for (let k = 1; k <= parts; k++) {
    for (let h = k; h <= giant; h++) {
      for (let lo = k - 1; lo < h; lo++) {
        const c = Math.max(best[k - 1]![lo]!, cost(lo, h));
        if (c < best[k]![h]!) {
          best[k]![h] = c;
          cut[k]![h] = lo;
        }
      }
    }
  }
  const ranges: [number, number][] = [];
  for (let k = parts, h = giant; k > 0; k--) {
    const lo = cut[k]![h]!;
    ranges.unshift([lo, h]);
    h = lo;
  }
  return ranges;
}

/**
 * Σ_{i≥1} monic[i]·x^i in ⌈log2 d⌉ levels: with h = 2^(⌈log2 d⌉−1),
 * p(x) = x^h·q(x) + Σ_{i≤h} monic[i]·x^i where q (degree d−h, monic) is evaluated the same
 * way one level lower, and each scalar term is multiplied in just before the last rescale.
 */
function evaluateMonic<V, W>(be: Backend<V, W>, monic: readonly number[], power: (k: number) => V): V {
  const d = monic.length - 1;
  if (d === 1) return be.clone(power(1));
  const h = 2 ** (monicDepth(d) - 1);
  const q = [0, ...monic.slice(h + 1)];
  const inner = d - h === 1 ? power(1) : evaluateMonic(be, q, power);
  const sum = be.mul(power(h), inner);
  if (d - h !== 1) be.free(inner);
  for (let i = 1; i <= h; i++) {
    if (monic[i] === 0) continue;
    const term = be.mulConstLike(power(i), monic[i]!, sum);
    be.add(sum, term);
    be.free(term);
  }
  be.relinearize(sum);
  be.rescale(sum);
  return sum;
}

export function evaluatePoly<V, W>(be: Backend<V, W>, plan: PolyPlan, x: V): V {
  const powers = new Map<number, V>([[1, x]]);
  const power = (k: number): V => {
    const known = powers.get(k);
    if (known !== undefined) return known;
    const h = 2 ** Math.floor(Math.log2(k - 1));
    const value = be.mul(power(h), power(k - h));
    be.relinearize(value);
    be.rescale(value);
    powers.set(k, value);
    return value;
  };
  const out = evaluateMonic(be, plan.monic, power);
  for (const [k, value] of powers) if (k !== 1) be.free(value);
  if (!plan.folded && plan.lead === -1) be.negate(out);
  else if (!plan.folded && plan.lead !== 1) be.scaleBy(out, plan.lead);
  if (!plan.folded && plan.constant !== 0) be.addConst(out, plan.constant);
  return out;
}

/**
 * Runs the packed plan. `inputs` are the packed input vectors (one for a dense first
 * layer, one per im2col plane for a convolution) and stay the caller's; the result is
 * fresh. `onLayer` hears each layer's index before it runs (the tracer attributes
 * rotations to layers with it).
 */
export function evaluateLayers<V, W>(
  be: Backend<V, W>,
  plans: readonly LayerPlan[],
  weights: readonly (LayerWeights<W> | null)[],
  inputs: InputSource<V>,
  onLayer?: (index: number) => void,
): V {
  onLayer?.(0);
  return finishLayers(be, plans, weights, evaluateShare(be, plans, weights, inputs), onLayer);
}

/** Whether a layer packs two values per slot (complex packing: only a first layer, when the planner finds it cheaper). */
export function isComplex(plan: LayerPlan): boolean {
  return (plan.kind === 'conv' || plan.kind === 'dense') && plan.complex;
}

/** The first layer: it packs the device's input and is the layer shares split. */
export function firstPlan(plans: readonly LayerPlan[]): ConvPlan | DensePlan {
  const first = plans[0];
  if (first === undefined || (first.kind !== 'conv' && first.kind !== 'dense')) fail('E_SHAPE', 'the first layer must be a convolution or a dense layer');
  return first;
}

function firstLayer<W>(plans: readonly LayerPlan[], weights: readonly (LayerWeights<W> | null)[]): [ConvPlan | DensePlan, LayerWeights<W>] {
  const plan = firstPlan(plans);
  const w = weights[0];
  if (w == null) fail('E_SHAPE', 'layer 0 has no weights');
  return [plan, w];
}

/**
 * The first layer's share over groups `range` (all by default), one sum per ciphertext of
 * its output (null where no product landed): see denseShare and convShare.
 */
export function evaluateShare<V, W>(
  be: Backend<V, W>,
  plans: readonly LayerPlan[],
  weights: readonly (LayerWeights<W> | null)[],
  inputs: InputSource<V>,
  range?: readonly [number, number],
): (V | null)[] {
  const [plan, w] = firstLayer(plans, weights);
  if (plan.kind === 'conv') return convShare(be, plan, w, inputs, range?.[0], range?.[1]);
  const xs = Array.from({ length: plan.parts }, (_, t) => inputAt(inputs, t));
  if (xs.some((x) => x === undefined) || (typeof inputs !== 'function' && inputs.length !== plan.parts)) fail('E_SHAPE', `the dense first layer needs its ${plan.parts} packed input vectors`);
  return [denseShare(be, plan, w, xs as V[], range?.[0], range?.[1])];
}

/** Runs the rest of the plan from the sums of the first layer's shares (consumed), one per ciphertext of its output. */
export function finishLayers<V, W>(
  be: Backend<V, W>,
  plans: readonly LayerPlan[],
  weights: readonly (LayerWeights<W> | null)[],
  shares: readonly (V | null)[],
  onLayer?: (index: number) => void,
): V {
  const [plan, w] = firstLayer(plans, weights);
  if (shares.length !== outputParts(plan)) fail('E_SHAPE', `the first layer produces ${outputParts(plan)} ciphertexts, got ${shares.length} sums`);
  let current: V[] = plan.kind === 'conv' ? shares.map((acc, t) => convFinish(be, w.biases[t] ?? null, acc, plan.complex)) : [denseFinish(be, plan, w, shares[0]!)];
  // Outputs a residual add reads later, kept until then.
  const kept = new Map<number, V[]>();
  const keep = (i: number, value: readonly V[]) => plans.some((p) => p.kind === 'add' && p.from === i) && kept.set(i, value.map((v) => be.clone(v)));
  keep(0, current);
  plans.forEach((layer, i) => {
    if (i === 0 || layer.kind === 'add') return;
    onLayer?.(i);
    let next: V[];
    if (layer.kind === 'conv') fail('E_SHAPE', `layer ${i}: an im2col convolution can only be the first layer`);
    if (layer.kind === 'conv-rot' || layer.kind === 'dense') {
      const lw = weights[i];
      if (lw == null) fail('E_SHAPE', `layer ${i} has no weights`);
      const add = plans[i + 1];
      const skip = add?.kind === 'add' ? kept.get(add.from) : undefined;
      if (add?.kind === 'add' && skip === undefined) fail('E_SHAPE', `layer ${i + 1}: layer ${add.from}'s output was not kept`);
      next = layer.kind === 'dense' ? [evaluateDense(be, layer, lw, current)] : evaluateRotatedConv(be, layer, lw, current, skip);
    } else {
      next = current.map((x) => evaluatePoly(be, layer, x));
    }
    for (const v of current) be.free(v);
    current = next;
    keep(i, current);
    if (plans[i + 1]?.kind === 'add') keep(i + 1, current);
  });
  for (const value of kept.values()) for (const v of value) be.free(v);
  if (current.length !== 1) fail('E_SHAPE', `the last layer leaves ${current.length} ciphertexts, the scores must fit one`);
  return current[0]!;
}
