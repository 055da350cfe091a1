/**
 * The encrypted part of the model (the head): the graph after the split, converted to the
 * engine's layer list: convolutions, dense layers and polynomial activations. Each tensor
 * of the head is tracked as an elementwise polynomial (VecPoly) of the current "base" — the
 * output of the last layer, or the features before the first one — read through a
 * permutation (a gather) where transposes reorder it. A layer op (Conv, Gemm, MatMul, an average pool) first turns the
 * expression it reads into layers — affine parts fold into a neighbouring layer, the rest
 * becomes one polynomial activation — and then starts a new base. So a bias Add, a batch
 * norm, x²+2x written as Mul/Add or Pow, scalings and transposes all reduce to conv, dense
 * and poly layers, whatever the exporter. Average pools are linear: one right after a
 * convolution merges into it (kernel and stride grow), one before a convolution merges
 * into that where exact, others fold into the next dense layer, or become a dense layer of
 * their own when an activation follows them. A convolution right after another (no
 * activation between) composes with it where exact; otherwise it is refused.
 *
 * A residual block — a tensor T that feeds both a branch of layers ending in a convolution
 * (a batch norm or bias after it folded in) and an Add with that branch's output — becomes
 * the branch's layers and an 'add' layer that reads the engine layer whose output T is.
 * Every layer remembers its output as a polynomial of a base, so the skip, an expression
 * of an earlier base, is matched to the layer that computes it.
 */
import { convGeometry, type Layer } from '../he';
import type { Activation } from './approx';
import { fail } from './errors';
import { describeNode, type Graph, type GraphNode } from './graph';
import { MAX_POLY_DEGREE, VecPoly, isUniform } from './polynomial';
import { floatAttribute, intAttribute, intsAttribute, stringAttribute, tensorDims, tensorValues } from './proto';
import type { ShapeInference } from './shapes';
import {
  broadcastConstant,
  imageDims,
  isIdentity,
  composeWindows,
  convWindow,
  type MutableConv,
  type Pads,
  poolMatrix,
  poolWindow,
  sampleSize,
  type SparseLinear,
  transposeGather,
  windowPads,
  type WindowOp,
} from './spatial';

/**
 * How the head reads its input tensor: 'nchw', its values in the order they are stored
 * (row-major, whatever the rank); 'nhwc', an image [N, H, W, C] that the head reads
 * channel-major (C×H×W), so the device transposes it before packing (tf2onnx's Keras input).
 */
export type InputLayout = 'nchw' | 'nhwc';

export interface HeadOptions {
  /** Polynomials (coeffs[i] multiplies x^i) that stand in for these activations; others are refused. */
  readonly approximations?: Partial<Record<Activation, readonly number[]>>;
}

export interface Head {
  readonly layers: Layer[];
  /** Nodes that are left out of the head on purpose (a trailing Softmax). */
  readonly dropped: GraphNode[];
  readonly layout: InputLayout;
}

/** Activations that are not polynomials, with the approximation name that could replace each. */
const NON_POLYNOMIAL: Record<string, Activation | undefined> = {
  Relu: 'relu',
  Sigmoid: 'sigmoid',
  Tanh: 'tanh',
  LeakyRelu: undefined,
  PRelu: undefined,
  Elu: undefined,
  Selu: undefined,
  Softplus: undefined,
  Softsign: undefined,
  HardSigmoid: undefined,
  HardSwish: undefined,
  Gelu: undefined,
  Mish: undefined,
  Clip: undefined,
  ThresholdedRelu: undefined,
};

/** Pooling by a maximum or a norm: no exact polynomial form. */
const NON_LINEAR_POOLS = new Set(['MaxPool', 'GlobalMaxPool', 'LpPool', 'GlobalLpPool', 'MaxRoiPool']);
/** Ops that only compute shapes (for a dynamic Reshape): skipped when their values are known. */
const SHAPE_OPS = new Set(['Shape', 'Gather', 'Concat', 'Unsqueeze', 'Squeeze', 'Slice', 'Cast', 'ConstantOfShape']);
/** Ops that keep the flattened order of one sample's values: identities on the head's vector. */
const RESHAPES = new Set(['Flatten', 'Reshape', 'Squeeze', 'Unsqueeze']);
/** Ops that compute a layer of their own (or fold into one): a residual branch holds at least one. */
const LAYER_OPS = new Set(['Conv', 'Gemm', 'MatMul', 'AveragePool', 'GlobalAveragePool']);
/** Elementwise ops: they need a layer before them to fold into. */
const ELEMENTWISE = new Set(['Add', 'Sub', 'Mul', 'Div', 'Sum', 'Neg', 'Pow', 'BatchNormalization']);

/**
 * An average pool that can fold into neither the convolution before it nor the dense layer
 * after it becomes a dense layer of its own; beyond this many weights, refuse instead.
 */
const MAX_POOL_WEIGHTS = 1 << 24;

/** A tensor of the head as the builder knows it. */
interface Value {
  /** Element j of the tensor (flattened) is poly_j of base element gather[j] (of element j without a gather). */
  readonly poly: VecPoly;
  readonly gather?: Int32Array;
}

interface Expr extends Value {
  /** The base `poly` refers to: a skip connection reads an expression of an earlier base. */
  readonly base: string;
}

/** An average pool's window, as its node describes it. */
interface PoolShape {
  readonly image: readonly [number, number, number];
  readonly kernel: [number, number];
  readonly stride: [number, number];
  readonly pads: Pads;
}

interface MutableDense {
  kind: 'dense';
  inputs: number;
  outputs: number;
  weights: Float64Array;
  bias: Float64Array;
}

type AddLayer = Extract<Layer, { kind: 'add' }>;

/** A layer the builder assembles: the last one may still change (folds, merges) or, if sparse, not join the list at all. */
type BuiltLayer = MutableDense | MutableConv | SparseLinear | AddLayer;

/** What a layer outputs: an elementwise polynomial of a base, in the base's order. */
interface LayerOutput {
  readonly base: string;
  readonly poly: VecPoly;
}

/**
 * An Add whose two inputs both come from the head, one through layers: a residual add.
 * `skip` is the input without layers, `branch` the other. `problem`: why the engine
 * cannot evaluate it, thrown when the builder reaches the add or a node of its branches.
 */
interface Join {
  readonly skip: string;
  readonly branch: string;
  /** The nodes on either side only (not before the fork). */
  readonly sides: ReadonlySet<GraphNode>;
  /** Those on the skip's side: elementwise ops there may read the skip after the branch has begun. */
  readonly skipSide: ReadonlySet<GraphNode>;
  readonly problem?: string;
}

const filled = (width: number, value: number) => new Float64Array(width).fill(value);

const samePoly = (a: VecPoly, b: VecPoly) => a.degree === b.degree && a.coeffs.every((c, i) => c.every((v, j) => v === b.coeffs[i]![j]));

const sameOrder = (a: Int32Array | undefined, b: Int32Array | undefined) =>
  (a === undefined || isIdentity(a)) && (b === undefined || isIdentity(b)) ? true : a !== undefined && b !== undefined && a.every((v, i) => v === b[i]);

/** A --split argument as the user would type it in a shell. */
function shellWord(name: string): string {
  return /^[\w./:@+-]+$/.test(name) ? name : `'${name.replace(/'/g, `'\\''`)}'`;
}

/** The remedy that moves a node into the plaintext extractor. */
function splitAfter(node: GraphNode): string {
  return `split after it (--split ${shellWord(node.proto.name || node.outputs[0]!)})`;
}

/**
 * The remedy that moves a residual block into the plaintext extractor: split where the
 * first layer after its add reads its input, before any reshape or transpose (after the
 * activation that usually follows the add, which cannot start the head).
 */
export function splitAfterBlock(graph: Graph, add: GraphNode): string {
  const next = graph.descendants(add.outputs[0]!).find((n) => LAYER_OPS.has(n.op));
  const input = next?.op === 'MatMul' ? next.inputs.find((i) => !graph.isConstant(i)) : next?.inputs[0];
  let at = (input !== undefined && graph.producer.get(input)) || add;
  for (let before = graph.producer.get(at.inputs[0]!); at !== add && before && (RESHAPES.has(at.op) || at.op === 'Transpose'); before = graph.producer.get(at.inputs[0]!)) at = before;
  return `split after the block (--split ${shellWord(at.proto.name || at.outputs[0]!)}) to keep it in the plaintext extractor`;
}

/** The coefficients of element j moved to base element gather[j]. */
function inBaseOrder(poly: VecPoly, gather: Int32Array | undefined): VecPoly {
  if (gather === undefined) return poly;
  return VecPoly.of(poly.width, poly.coeffs.map((c) => {
    const out = new Float64Array(c.length);
    gather.forEach((g, j) => (out[g] = c[j]!));
    return out;
  }));
}

/** layer(x) ← layer(x reordered): column j of the layer reads base element gather[j]. */
function permuteColumns(layer: MutableDense, gather: Int32Array): void {
  const weights = new Float64Array(layer.weights.length);
  for (let r = 0; r < layer.outputs; r++) {
    for (let j = 0; j < layer.inputs; j++) weights[r * layer.inputs + gather[j]!] = layer.weights[r * layer.inputs + j]!;
  }
  layer.weights = weights;
}

/** dense ∘ sparse as one dense layer: W·S, with bias W·s + b. */
function composeDense(dense: MutableDense, sparse: SparseLinear): MutableDense {
  const weights = new Float64Array(dense.outputs * sparse.inputs);
  const bias = Float64Array.from(dense.bias);
  for (let r = 0; r < dense.outputs; r++) {
    for (let q = 0; q < sparse.outputs; q++) {
      const w = dense.weights[r * dense.inputs + q]!;
      if (w === 0) continue;
      bias[r]! += w * sparse.bias[q]!;
      const [cols, values] = [sparse.cols[q]!, sparse.values[q]!];
      for (let k = 0; k < cols.length; k++) weights[r * sparse.inputs + cols[k]!]! += w * values[k]!;
    }
  }
  return { kind: 'dense', inputs: sparse.inputs, outputs: dense.outputs, weights, bias };
}

/** outer ∘ inner, both sparse. */
function composeSparse(outer: SparseLinear, inner: SparseLinear): SparseLinear {
  const cols: Int32Array[] = [];
  const values: Float64Array[] = [];
  const bias = Float64Array.from(outer.bias);
  for (let r = 0; r < outer.outputs; r++) {
    const row = new Map<number, number>();
    outer.cols[r]!.forEach((q, k) => {
      const w = outer.values[r]![k]!;
      bias[r]! += w * inner.bias[q]!;
      inner.cols[q]!.forEach((c, i) => row.set(c, (row.get(c) ?? 0) + w * inner.values[q]![i]!));
    });
    cols.push(Int32Array.from(row.keys()));
    values.push(Float64Array.from(row.values()));
  }
  return { kind: 'sparse', inputs: inner.inputs, outputs: outer.outputs, cols, values, bias };
}

class HeadBuilder {
  private readonly layers: Layer[] = [];
  private readonly exprs = new Map<string, Expr>();
  private readonly shapeTensors = new Set<string>();
  private readonly dropped: GraphNode[] = [];
  private readonly processed = new Set<GraphNode>();
  private readonly members: ReadonlySet<GraphNode>;
  private base: string;
  /**
   * The last layer, whose output `base` names. A sparse one (an average pool) is pending:
   * it joins `layers` only if it cannot fold into the dense layer after it.
   */
  private last: BuiltLayer | undefined;
  /** Each layer's output (pending or in `layers`), for the skips of residual adds to find. */
  private readonly outputOf = new Map<BuiltLayer | Layer, LayerOutput>();
  private readonly joins: ReadonlyMap<GraphNode, Join>;
  /**
   * The pool a pending sparse layer comes from (the last one, for messages), and its window
   * when the layer is that one pool alone.
   */
  private pendingPool: { node: GraphNode; shape?: PoolShape } | undefined;
  /** Values per sample of the base; undefined only for features of unknown shape. */
  private width: number | undefined;
  private layout: InputLayout = 'nchw';

  constructor(
    private readonly graph: Graph,
    private readonly shapes: ShapeInference,
    private readonly features: string,
    private readonly output: string,
    private readonly nodes: readonly GraphNode[],
    private readonly options: HeadOptions,
  ) {
    this.base = features;
    this.members = new Set(nodes);
    this.width = sampleSize(shapes.shapeOf(features));
    if (this.width !== undefined) this.exprs.set(features, { base: features, poly: VecPoly.identity(this.width) });
    this.joins = this.findJoins();
  }

  /**
   * The residual adds among the head's nodes: Adds of two computed tensors where at least
   * one side, from where the two part, holds a layer. The side with more layers is the
   * branch; a layer on the other side too is a projection shortcut, which the engine
   * cannot take, nor a branch that changes the size, nor tensors of two shapes.
   */
  private findJoins(): Map<GraphNode, Join> {
    const joins = new Map<GraphNode, Join>();
    for (const node of this.nodes) {
      const data = node.inputs.filter((name) => name !== '' && !this.graph.isConstant(name) && !this.shapes.values.has(name));
      if (node.op !== 'Add' || data.length !== 2 || data[0] === data[1]) continue;
      const ancestors = data.map((name) => new Set(this.graph.ancestors([name]).filter((n) => this.members.has(n))));
      const own = ancestors.map((side, i) => [...side].filter((n) => !ancestors[1 - i]!.has(n)));
      const layers = own.map((nodes) => nodes.filter((n) => LAYER_OPS.has(n.op)));
      if (layers.every((l) => l.length === 0)) continue;
      const b = layers[1]!.length > layers[0]!.length ? 1 : 0;
      const [branch, skip] = [data[b]!, data[1 - b]!];
      const problem = this.joinProblem(node, layers[1 - b]!, own[b]!, skip, branch);
      joins.set(node, { skip, branch, sides: new Set(own.flat()), skipSide: new Set(own[1 - b]), problem });
    }
    return joins;
  }

  private joinProblem(node: GraphNode, shortcut: readonly GraphNode[], branchNodes: readonly GraphNode[], skip: string, branch: string): string | undefined {
    const remedy = splitAfterBlock(this.graph, node);
    if (shortcut.length > 0) {
      return (
        `${describeNode(node)} adds two branches that both compute layers: ${describeNode(shortcut[0]!)} is on the skip side (a projection shortcut), ` +
        `but the engine's residual add takes the block's input itself as its skip; ${remedy}`
      );
    }
    for (const n of branchNodes) {
      if (n.op !== 'Conv' && n.op !== 'AveragePool') continue;
      const strides = intsAttribute(n.proto, 'strides') ?? [];
      const [before, after] = [imageDims(this.shapes.shapeOf(n.inputs[0]!)), imageDims(this.shapes.shapeOf(n.outputs[0]!))];
      const resized = before !== undefined && after !== undefined && (before[1] !== after[1] || before[2] !== after[2]);
      if (strides.some((s) => s !== 1) || resized) {
        return (
          `${describeNode(n)} in the branch of the residual add ${describeNode(node)} ` +
          `${strides.some((s) => s !== 1) ? `has strides [${strides.join(', ')}]` : `turns ${before![1]}×${before![2]} into ${after![1]}×${after![2]}`}: ` +
          `the engine adds the two branches slot by slot, so the branch's convolutions and pools must keep the skip's size (stride 1, 'same' padding); ${remedy}`
        );
      }
    }
    const [a, b] = [this.shapes.shapeOf(skip), this.shapes.shapeOf(branch)];
    if (a !== undefined && b !== undefined && (a.length !== b.length || a.some((d, i) => d !== b[i]))) return this.shapeMismatch(node, skip, branch);
    return undefined;
  }

  private shapeMismatch(node: GraphNode, skip: string, branch: string): string {
    const shape = (name: string) => {
      const s = this.shapes.shapeOf(name);
      return s === undefined ? 'unknown shape' : `shape [${s.join(', ')}]`;
    };
    return (
      `${describeNode(node)} adds '${skip}' of ${shape(skip)} and '${branch}' of ${shape(branch)}: a residual add needs two tensors of one shape, with no broadcast; ` +
      splitAfterBlock(this.graph, node)
    );
  }

  build(): Head {
    for (const node of this.nodes) {
      // Marked before the visit: a node's own reads do not keep its inputs live.
      this.processed.add(node);
      this.visit(node);
    }
    if (this.last === undefined) {
      fail('E_SPLIT', `the head after the split at '${this.features}' has no dense layer (Gemm or MatMul) or convolution: split before one`);
    }
    this.materialize(this.exprOf(this.output, undefined), undefined, undefined);
    this.flush();
    return { layers: this.layers, dropped: this.dropped, layout: this.layout };
  }

  private visit(node: GraphNode): void {
    const op = node.op;
    if (node.proto.domain && node.proto.domain !== 'ai.onnx') {
      fail('E_UNSUPPORTED', `${describeNode(node)} in the classifier head is from operator domain '${node.proto.domain}', which the head cannot contain`);
    }
    if (op === 'Constant') return;
    if (SHAPE_OPS.has(op) && node.outputs.every((o) => this.shapes.values.has(o))) {
      node.outputs.forEach((o) => this.shapeTensors.add(o));
      return;
    }
    const data = node.inputs.filter((name) => name !== '' && !this.graph.isConstant(name) && !this.shapeTensors.has(name));
    if (data.length === 0) fail('E_UNSUPPORTED', `${describeNode(node)} in the classifier head computes from constants only; fold constants before exporting`);
    if (ELEMENTWISE.has(op)) this.requireWidth(node);
    switch (op) {
      case 'Gemm':
      case 'MatMul':
        return this.dense(node, data);
      case 'Conv':
        return this.conv(node, data);
      case 'AveragePool':
      case 'GlobalAveragePool':
        return this.pool(node);
      case 'Add': {
        const join = this.joins.get(node);
        return join === undefined ? this.derive(node, this.binary(node)) : this.residual(node, join);
      }
      case 'Sub':
      case 'Mul':
      case 'Div':
        return this.derive(node, this.binary(node));
      case 'Sum': {
        const { polys, gather } = this.operands(node, node.inputs);
        return this.derive(node, { poly: polys.reduce((a, b) => a.add(b)), gather });
      }
      case 'Neg': {
        const { polys, gather } = this.operands(node, [node.inputs[0]!]);
        return this.derive(node, { poly: polys[0]!.scale(filled(polys[0]!.width, -1)), gather });
      }
      case 'Pow':
        return this.derive(node, this.pow(node));
      case 'BatchNormalization':
        return this.derive(node, this.batchNorm(node));
      case 'Transpose':
        return this.derive(node, this.transpose(node));
      case 'Softmax':
      case 'LogSoftmax':
        if (node.outputs[0] !== this.output) {
          fail('E_UNSUPPORTED', `${describeNode(node)} is inside the classifier head; only a Softmax at the very end can be left out (the backend takes the argmax of the scores)`);
        }
        this.dropped.push(node);
        return this.derive(node, this.exprOf(node.inputs[0]!, node));
    }
    if (RESHAPES.has(op)) return this.derive(node, this.reshape(node));
    if (Object.hasOwn(NON_POLYNOMIAL, op)) return this.derive(node, this.activation(node));
    if (NON_LINEAR_POOLS.has(op)) {
      fail('E_UNSUPPORTED', `${describeNode(node)} is a ${op} in the classifier head, which homomorphic encryption cannot evaluate exactly: retrain with average pooling (AveragePool), or ${splitAfter(node)} to keep it in the plaintext extractor`);
    }
    fail(
      'E_UNSUPPORTED',
      `${describeNode(node)}: ${op} is not supported in the classifier head (Conv, group 1 and undilated; dense layers: Gemm, MatMul [+ Add]; AveragePool; ` +
        `activations: polynomials of Add/Sub/Mul/Pow with constants; BatchNormalization after a layer). Split after it with --split to keep it in the plaintext extractor`,
    );
  }

  private exprOf(name: string, node: GraphNode | undefined): Expr {
    const expr = this.exprs.get(name);
    const where = node ? describeNode(node) : 'the graph output';
    if (expr === undefined) {
      if (name === this.features) fail('E_UNSUPPORTED', `${where} reads the features '${name}', whose shape is unknown: declare the model input's shape`);
      fail('E_UNSUPPORTED', `${where} reads '${name}', which the classifier head does not compute: the head must be a chain from the features to the output`);
    }
    if (expr.base !== this.base) {
      const join = node && [...this.joins.values()].find((j) => j.sides.has(node));
      if (join?.problem !== undefined) fail('E_UNSUPPORTED', join.problem);
      // Elementwise ops on a residual add's skip read it where it is: the add matches the result to a layer's output.
      if (!join?.skipSide.has(node!)) this.readsEarlier(name, node);
    }
    return expr;
  }

  private readsEarlier(name: string, node: GraphNode | undefined): never {
    return fail(
      'E_UNSUPPORTED',
      `${node ? describeNode(node) : 'the graph output'} reads '${name}' from before the last encrypted layer: skip connections (residual adds) in the classifier head are supported only as an Add ` +
        `of a convolution's output and an earlier layer's; ${node ? splitAfter(node) : 'split after the last layer'} to keep it in the plaintext extractor`,
    );
  }

  /** The inputs as polynomials of the base (constants as constant polynomials), in the one element order they share. */
  private operands(node: GraphNode, names: readonly string[]): { polys: VecPoly[]; gather: Int32Array | undefined } {
    const exprs = names.map((name) => (this.graph.isConstant(name) ? undefined : this.exprOf(name, node)));
    const data = exprs.flatMap((e) => (e === undefined ? [] : [e]));
    const mixed = exprs.findIndex((e) => e !== undefined && e.base !== data[0]!.base);
    if (mixed >= 0) this.readsEarlier(names[mixed]!, node);
    if (data.some((e) => !sameOrder(e.gather, data[0]!.gather))) {
      fail('E_UNSUPPORTED', `${describeNode(node)} combines the same values in two different orders (one transposed): ${splitAfter(node)} to keep it in the plaintext extractor`);
    }
    const width = data[0]!.poly.width;
    return { polys: names.map((name, i) => exprs[i]?.poly ?? VecPoly.constant(this.vectorConstant(node, name, width))), gather: data[0]!.gather };
  }

  private requireWidth(node: GraphNode): number {
    if (this.last === undefined) {
      fail('E_SPLIT', `${describeNode(node)} comes before the first layer of the head: split at the input of a dense layer (Gemm or MatMul) or of a convolution`);
    }
    return this.width!;
  }

  /**
   * A constant operand broadcast to one sample of the data tensor, in its flattened order:
   * a scalar, one value per feature, one per channel of an image, … Anything that would
   * enlarge the data or mix samples is refused.
   */
  private vectorConstant(node: GraphNode, name: string, width: number): Float64Array {
    const tensor = this.graph.constants.get(name)!;
    const values = tensorValues(tensor, describeNode(node));
    if (values.length === 1) return filled(width, values[0]!);
    const dims = tensorDims(tensor);
    const data = node.inputs.find((n) => this.exprs.has(n));
    const shape = data === undefined ? undefined : this.shapes.shapeOf(data);
    if (shape !== undefined) {
      const broadcast = broadcastConstant(values, dims, shape);
      if (broadcast?.length === width) return broadcast;
    } else if (values.length === width && dims.filter((d) => d !== 1).length === 1) {
      return Float64Array.from(values);
    }
    fail(
      'E_UNSUPPORTED',
      `${describeNode(node)} combines the head's ${width} features${shape ? ` (shape [${shape.join(', ')}])` : ''} with constant '${name}' of shape [${dims.join(', ')}]: ` +
        `only scalars and one value per feature or per channel are supported`,
    );
  }

  private derive(node: GraphNode, value: Value): void {
    if (value.poly.degree > MAX_POLY_DEGREE) {
      fail('E_UNSUPPORTED', `${describeNode(node)} raises the activation's degree to ${value.poly.degree}, above the engine's ${MAX_POLY_DEGREE}`);
    }
    const out = node.outputs[0]!;
    // The base of what the node reads: an earlier one on a residual add's skip.
    const input = node.inputs.find((name) => this.exprs.has(name) && !this.graph.isConstant(name));
    this.exprs.set(out, { base: input === undefined ? this.base : this.exprs.get(input)!.base, ...value });
    this.foldEagerly(out, node);
  }

  /**
   * A per-feature affine map of the last layer's output (its bias Add, a batch norm) folds
   * into that layer at once when nothing else still reads the layer's output, so the
   * polynomial that may follow is a plain scalar one of the folded output.
   */
  private foldEagerly(tensor: string, node: GraphNode): void {
    const { base, poly, gather } = this.exprs.get(tensor)!;
    const last = this.last;
    if (last === undefined || last.kind === 'add' || base !== this.base || poly.degree > 1 || poly.uniform() !== undefined) return;
    for (const [name, expr] of this.exprs) {
      if (name !== tensor && expr.base === this.base && this.isLive(name)) return;
    }
    this.foldBackward(last, inBaseOrder(poly, gather), node);
    this.rebase(tensor, gather);
  }

  private isLive(name: string): boolean {
    if (name === this.output) return true;
    return (this.graph.consumers.get(name) ?? []).some((c) => this.members.has(c) && !this.processed.has(c));
  }

  private rebase(tensor: string, gather?: Int32Array): void {
    this.base = tensor;
    this.exprs.set(tensor, { base: tensor, poly: VecPoly.identity(this.width!), gather });
    this.outputOf.set(this.last!, { base: tensor, poly: VecPoly.identity(this.width!) });
  }

  private binary(node: GraphNode): Value {
    const { polys, gather } = this.operands(node, [node.inputs[0]!, node.inputs[1]!]);
    const [pa, pb] = polys as [VecPoly, VecPoly];
    switch (node.op) {
      case 'Add':
        return { poly: pa.add(pb), gather };
      case 'Sub':
        return { poly: pa.add(pb.scale(filled(pb.width, -1))), gather };
      case 'Mul':
        return { poly: pa.mul(pb), gather };
      default: {
        if (!this.graph.isConstant(node.inputs[1]!)) {
          fail('E_UNSUPPORTED', `${describeNode(node)} divides by a computed tensor, which is not a polynomial: only division by constants is supported`);
        }
        const divisor = pb.coeff(0);
        if (divisor.some((d) => d === 0)) fail('E_UNSUPPORTED', `${describeNode(node)} divides by zero`);
        return { poly: pa.scale(divisor.map((d) => 1 / d)), gather };
      }
    }
  }

  /**
   * A residual add: the branch ends with a convolution (per-channel constants after it fold
   * into it) and the skip is an earlier layer's output as that layer computes it. Becomes
   * { kind: 'add', from } after the convolution; the sum is the new base.
   */
  private residual(node: GraphNode, join: Join): void {
    if (join.problem !== undefined) fail('E_UNSUPPORTED', join.problem);
    const remedy = splitAfterBlock(this.graph, node);
    const skip = this.exprs.get(join.skip) ?? this.exprOf(join.skip, node);
    if (skip.base === this.features) {
      const earlier = this.graph.producer.has(this.features)
        ? `split earlier, where an encrypted layer computes '${join.skip}' (sealed-edge inspect lists the split points), or ${remedy}`
        : remedy;
      fail(
        'E_UNSUPPORTED',
        `${describeNode(node)} takes its skip ${join.skip === this.features ? '' : `'${join.skip}' `}from the head's input '${this.features}', which the device packs for the first encrypted layer alone: ` +
          `a residual add reads the output of an encrypted layer; ${earlier}`,
      );
    }
    const branch = this.exprOf(join.branch, node);
    if (skip.poly.width !== branch.poly.width) fail('E_UNSUPPORTED', this.shapeMismatch(node, join.skip, join.branch));
    const last = this.last!;
    if (branch.poly.degree > 1 || last.kind !== 'conv') {
      const [what, fix] =
        branch.poly.degree > 1
          ? ['an activation', `add before the activation, so that the block ends with its convolution (or a batch norm after it), or ${remedy}`]
          : last.kind === 'sparse'
            ? [describeNode(this.pendingPool!.node), `pool after the add, or ${remedy}`]
            : [last.kind === 'dense' ? 'a dense layer' : 'another residual add', remedy];
      fail('E_UNSUPPORTED', `${describeNode(node)} adds its skip '${join.skip}' to '${join.branch}', the output of ${what}: the engine joins a skip to a convolution's output only; ${fix}`);
    }
    if (!sameOrder(skip.gather, branch.gather)) {
      fail('E_UNSUPPORTED', `${describeNode(node)} combines the same values in two different orders (one transposed): ${remedy}`);
    }
    const from = this.skipLayer(skip);
    if (from < 0) {
      fail(
        'E_UNSUPPORTED',
        `${describeNode(node)} takes its skip '${join.skip}', which no encrypted layer outputs as such (an average pool's output, or an activation scaled or shifted ` +
          `before a layer reads it): the engine's residual add reads an earlier layer's output unchanged; take the skip from an activation or a convolution, or ${remedy}`,
      );
    }
    this.foldBackward(last, inBaseOrder(branch.poly, branch.gather), node);
    const add: AddLayer = { kind: 'add', from };
    this.layers.push(add);
    this.outputOf.delete(last);
    this.last = add;
    this.rebase(node.outputs[0]!, branch.gather);
  }

  /** The layer whose output the skip `expr` is (the latest, if several), or −1. */
  private skipLayer(expr: Expr): number {
    const poly = inBaseOrder(expr.poly, expr.gather);
    for (let k = this.layers.length - 2; k >= 0; k--) {
      const output = this.outputOf.get(this.layers[k]!);
      if (output?.base === expr.base && samePoly(output.poly, poly)) return k;
    }
    return -1;
  }

  private pow(node: GraphNode): Value {
    const exponent = node.inputs[1]!;
    if (!this.graph.isConstant(exponent)) fail('E_UNSUPPORTED', `${describeNode(node)} has a computed exponent: only constant integer exponents are polynomials`);
    const values = tensorValues(this.graph.constants.get(exponent)!, describeNode(node));
    const k = values[0]!;
    if (values.length !== 1 || !Number.isInteger(k) || k < 1 || k > MAX_POLY_DEGREE) {
      fail('E_UNSUPPORTED', `${describeNode(node)} raises to the power [${Array.from(values).join(', ')}]: only a scalar integer exponent from 1 to ${MAX_POLY_DEGREE} is a polynomial`);
    }
    const { poly, gather } = this.exprOf(node.inputs[0]!, node);
    return { poly: poly.pow(k), gather };
  }

  /** Batch norm per channel (axis 1) of [batch, C] or [batch, C, H, W]: an affine map per element. */
  private batchNorm(node: GraphNode): Value {
    const { poly, gather } = this.exprOf(node.inputs[0]!, node);
    const width = poly.width;
    const shape = this.shapes.shapeOf(node.inputs[0]!);
    const spatial = shape?.slice(2).reduce<number | undefined>((p, d) => (p !== undefined && typeof d === 'number' ? p * d : undefined), 1);
    const channels = shape === undefined ? width : shape[1];
    if (shape !== undefined && (typeof channels !== 'number' || spatial === undefined || channels * spatial !== width)) {
      fail('E_UNSUPPORTED', `${describeNode(node)} normalizes a tensor of shape [${shape.join(', ')}]: in the head, batch norm must act on [batch, C] or [batch, C, H, W] of known sizes`);
    }
    const [scale, shift, mean, variance] = node.inputs.slice(1, 5).map((name) => {
      if (!this.graph.isConstant(name)) fail('E_UNSUPPORTED', `${describeNode(node)} has a computed parameter '${name}': batch norm folds only with constant statistics`);
      const values = tensorValues(this.graph.constants.get(name)!, describeNode(node));
      if (values.length !== channels) fail('E_UNSUPPORTED', `${describeNode(node)}: parameter '${name}' has ${values.length} values, the tensor has ${channels} channels`);
      return values;
    });
    if (intAttribute(node.proto, 'training_mode', 0) === 1) {
      fail('E_UNSUPPORTED', `${describeNode(node)} is exported in training mode: export the model in eval mode`);
    }
    const epsilon = floatAttribute(node.proto, 'epsilon', 1e-5);
    const per = width / (channels as number);
    const a = new Float64Array(width).map((_, j) => {
      const c = Math.floor(j / per);
      return scale![c]! / Math.sqrt(variance![c]! + epsilon);
    });
    const b = a.map((aj, j) => shift![Math.floor(j / per)]! - aj * mean![Math.floor(j / per)]!);
    return { poly: poly.scale(a).add(VecPoly.constant(b)), gather };
  }

  private reshape(node: GraphNode): Value {
    const expr = this.exprOf(node.inputs[0]!, node);
    const shape = this.shapes.shapeOf(node.outputs[0]!);
    if (shape !== undefined && shape.reduce<number>((p, d) => (typeof d === 'number' ? p * d : p), 1) !== expr.poly.width) {
      fail('E_UNSUPPORTED', `${describeNode(node)} turns the head's ${expr.poly.width} features into shape [${shape.join(', ')}]: only reshapes that keep each sample's values together are supported`);
    }
    return expr;
  }

  /**
   * A transpose permutes one sample's values: an identity when it keeps their flattened
   * order (it moves only axes of size 1), else a gather. Needs the input's dimensions; a
   * symbolic batch must stay the first axis.
   */
  private transpose(node: GraphNode): Value {
    const input = node.inputs[0]!;
    const expr = this.exprOf(input, node);
    const shape = this.shapes.shapeOf(input);
    const perm = intsAttribute(node.proto, 'perm') ?? shape?.map((_, i) => shape.length - 1 - i);
    if (perm !== undefined && perm.every((p, i) => p === i)) return expr;
    const known = shape?.every((d, i) => typeof d === 'number' || (i === 0 && perm![0] === 0 && d !== '?'));
    const dims = shape?.map((d) => (typeof d === 'number' ? d : 1));
    if (!known || dims!.reduce((a, b) => a * b, 1) !== expr.poly.width) {
      fail(
        'E_UNSUPPORTED',
        `${describeNode(node)} transposes '${input}' of ${shape ? `shape [${shape.join(', ')}]` : 'unknown shape'}: a transpose in the classifier head needs the sizes of ` +
          `one sample (a symbolic batch staying first); ${splitAfter(node)} to keep it in the plaintext extractor`,
      );
    }
    const order = transposeGather(dims!, perm!);
    if (isIdentity(order)) return expr;
    const poly = VecPoly.of(expr.poly.width, expr.poly.coeffs.map((c) => Float64Array.from(order, (k) => c[k]!)));
    const gather = expr.gather;
    return { poly, gather: gather === undefined ? order : order.map((k) => gather[k]!) };
  }

  private activation(node: GraphNode): Value {
    const fn = NON_POLYNOMIAL[node.op];
    const approximation = fn === undefined ? undefined : this.options.approximations?.[fn];
    if (approximation === undefined) {
      const hint = fn
        ? `replace it by a polynomial approximation (--activation cryptodl-${fn}-3, say, fitted on [-6, 6]: check that range against its inputs on calibration data), ` +
          `retrain with a polynomial activation (training/: --activation x2+2x), or ${splitAfter(node)} to keep it in the plaintext extractor`
        : `retrain with a polynomial activation (training/: --activation x2+2x), or ${splitAfter(node)} to keep it in the plaintext extractor`;
      fail('E_ACTIVATION', `${describeNode(node)} is a ${node.op} in the classifier head, which homomorphic encryption cannot evaluate: ${hint}`);
    }
    this.requireWidth(node);
    const { poly, gather } = this.exprOf(node.inputs[0]!, node);
    return { poly: poly.compose(approximation), gather };
  }

  private dense(node: GraphNode, data: string[]): void {
    if (data.length !== 1) fail('E_UNSUPPORTED', `${describeNode(node)} multiplies two computed tensors: a dense layer needs constant weights`);
    const [input] = data as [string];
    let layer = this.denseWeights(node, input);
    if (this.width !== undefined && layer.inputs !== this.width) {
      const before = this.last === undefined ? `the features '${this.features}' have shape [${this.shapes.shapeOf(this.features)!.join(', ')}]` : `the layer before it has ${this.width} outputs`;
      fail('E_GRAPH', `${describeNode(node)} has ${layer.inputs} inputs, but ${before}`);
    }
    if (this.last === undefined) {
      // The first layer: the features, reshaped or transposed at most (ops that change values need a layer before them).
      const gather = input === this.features && this.width === undefined ? undefined : this.exprOf(input, node).gather;
      if (gather !== undefined) permuteColumns(layer, gather);
    } else {
      this.materialize(this.exprOf(input, node), layer, node);
      // A pending average pool with nothing but affine maps since: it folds into this layer.
      if (this.last?.kind === 'sparse') layer = composeDense(layer, this.last);
    }
    this.layers.push(layer);
    this.last = layer;
    this.width = layer.outputs;
    this.rebase(node.outputs[0]!);
  }

  /**
   * A 2-D convolution, group 1, dilation 1: the first encrypted layer, reading the features,
   * or a later one, reading what the layers before it compute.
   */
  private conv(node: GraphNode, data: string[]): void {
    const [input, weightName, biasName] = node.inputs as [string, string | undefined, string | undefined];
    if (data.length !== 1 || data[0] !== input || weightName === undefined) {
      fail('E_UNSUPPORTED', `${describeNode(node)} reads computed weights: a convolution in the classifier head needs constant weights and bias`);
    }
    const group = intAttribute(node.proto, 'group', 1);
    if (group !== 1) fail('E_UNSUPPORTED', `${describeNode(node)} is a grouped convolution (group=${group}): only group 1 is supported in the classifier head; ${splitAfter(node)} to keep it in the plaintext extractor`);
    const dilations = intsAttribute(node.proto, 'dilations') ?? [];
    if (dilations.some((d) => d !== 1)) {
      fail('E_UNSUPPORTED', `${describeNode(node)} is dilated (dilations [${dilations.join(', ')}]): only dilation 1 is supported in the classifier head; ${splitAfter(node)} to keep it in the plaintext extractor`);
    }
    const shape = this.shapes.shapeOf(input);
    const image = imageDims(shape);
    if (image === undefined) {
      fail('E_UNSUPPORTED', `${describeNode(node)} reads '${input}' of ${shape ? `shape [${shape.join(', ')}]` : 'unknown shape'}: a convolution in the classifier head needs a 2-D input [N, C, H, W] of known sizes, one sample at a time`);
    }
    const [channels, height, width] = image;
    const weightTensor = this.graph.constants.get(weightName)!;
    const w = tensorDims(weightTensor);
    if (w.length !== 4 || w[1] !== channels) {
      fail('E_UNSUPPORTED', `${describeNode(node)}: weights of shape [${w.join(', ')}] do not fit ${channels} input channels: expected [O, ${channels}, kh, kw]`);
    }
    const [outChannels, , kh, kw] = w as [number, number, number, number];
    const declared = intsAttribute(node.proto, 'kernel_shape');
    if (declared !== undefined && (declared[0] !== kh || declared[1] !== kw || declared.length !== 2)) {
      fail('E_GRAPH', `${describeNode(node)} declares kernel_shape [${declared.join(', ')}] but its weights are ${kh}×${kw}`);
    }
    const strides = intsAttribute(node.proto, 'strides') ?? [1, 1];
    if (strides.length !== 2 || strides.some((s) => !Number.isInteger(s) || s < 1)) fail('E_UNSUPPORTED', `${describeNode(node)} has strides [${strides.join(', ')}]: two positive strides expected`);
    const stride: [number, number] = [strides[0]!, strides[1]!];
    const pads = windowPads(describeNode(node), stringAttribute(node.proto, 'auto_pad', 'NOTSET'), intsAttribute(node.proto, 'pads'), [height, width], [kh, kw], stride);
    if (pads[0] >= kh || pads[2] >= kh || pads[1] >= kw || pads[3] >= kw || kh > height + pads[0] + pads[2] || kw > width + pads[1] + pads[3]) {
      fail('E_UNSUPPORTED', `${describeNode(node)}: pads [${pads.join(', ')}] and a ${kh}×${kw} kernel on ${height}×${width}: outputs that see only padding, or a kernel larger than the padded input, are not supported`);
    }
    const bias = new Float64Array(outChannels);
    if (biasName) {
      if (!this.graph.isConstant(biasName)) fail('E_UNSUPPORTED', `${describeNode(node)} reads a computed bias: a convolution in the classifier head needs constant weights and bias`);
      const values = tensorValues(this.graph.constants.get(biasName)!, describeNode(node));
      if (values.length !== outChannels) fail('E_GRAPH', `${describeNode(node)}: bias of ${values.length} values for ${outChannels} output channels`);
      bias.set(values);
    }
    const layer: MutableConv = {
      kind: 'conv',
      inChannels: channels,
      inHeight: height,
      inWidth: width,
      outChannels,
      kernel: [kh, kw],
      stride,
      pads,
      weights: tensorValues(weightTensor, describeNode(node)),
      bias,
    };
    let added = layer;
    if (this.last === undefined) {
      this.layout = this.inputLayout(node, input, image);
      this.layers.push(layer);
    } else {
      added = this.laterConv(node, input, layer);
    }
    this.last = added;
    this.width = convGeometry(added, describeNode(node)).outputs;
    this.rebase(node.outputs[0]!);
  }

  /**
   * A convolution after the first encrypted layer reads that layer's output as C×H×W, in
   * the order the layers produce it. After an activation or a residual add it is a layer of
   * its own (a per-channel scale and shift in between fold into it). With only per-channel
   * affine maps since the layer before, it composes with that layer — a convolution, or
   * an average pool after an activation — into one convolution where that is exact, and is
   * refused otherwise.
   */
  private laterConv(node: GraphNode, input: string, layer: MutableConv): MutableConv {
    const expr = this.exprOf(input, node);
    const remedy = `${this.splitAtInput(input)} so that it is the first encrypted layer`;
    if (expr.gather !== undefined && !isIdentity(expr.gather)) {
      fail('E_UNSUPPORTED', `${describeNode(node)} reads '${input}' transposed from the order the layer before it produces (channels first, C×H×W): undo the transpose before the convolution, or ${remedy}`);
    }
    const reads = layer.inChannels * layer.inHeight * layer.inWidth;
    if (reads !== this.width) fail('E_GRAPH', `${describeNode(node)} reads ${layer.inChannels}×${layer.inHeight}×${layer.inWidth} values, but the layer before it has ${this.width} outputs`);
    const linear = expr.poly.degree <= 1;
    this.materialize(expr, layer, node);
    const last = this.last!;
    // A residual add's sum is no convolution's output to compose with: the convolution reads it as it is.
    if (!linear || last.kind === 'add') {
      this.layers.push(layer);
      return layer;
    }
    if (last.kind === 'dense') {
      fail('E_UNSUPPORTED', `${describeNode(node)} follows a dense layer with no activation between them: put an activation between them, or ${remedy}`);
    }
    if (last.kind === 'conv') {
      const composed = composeWindows(convWindow(last), convWindow(layer));
      if (composed === undefined) {
        fail(
          'E_UNSUPPORTED',
          `${describeNode(node)} follows the convolution before it with no activation between them, and the two compose into one convolution only when it reads none of its zero padding: ` +
            `export it without padding, put an activation between them, or ${remedy}`,
        );
      }
      this.layers[this.layers.length - 1] = composed;
      return composed;
    }
    const composed = composeWindows(this.pendingPoolWindow(node), convWindow(layer));
    if (composed === undefined) {
      const pool = this.pendingPool!.node;
      fail(
        'E_UNSUPPORTED',
        `${describeNode(pool)} averages the activations that ${describeNode(node)} reads, and the two do not compose exactly: the convolution reads zero padding where ` +
          `the pool's windows would still reach activations (the pool drops a last row or column, or its windows overlap) or a shift after the pool: ` +
          `pool right after the convolution before the activation, export the convolution without padding, or ${splitAfter(pool)} so that the convolution is the first encrypted layer`,
      );
    }
    this.layers.push(composed);
    return composed;
  }

  /**
   * The pending average pool as a window operator, when it is one: a single pool whose every
   * output of a channel averages its whole window (zero padding counted) with the same
   * scale and shift, which per-channel maps folded into it keep.
   */
  private pendingPoolWindow(conv: GraphNode): WindowOp {
    const { node, shape } = this.pendingPool!;
    const refuse = () =>
      fail(
        'E_UNSUPPORTED',
        `${describeNode(node)} averages the activations that ${describeNode(conv)} reads, but not as one window average per channel (padding left out of the average, ` +
          `pools in a row, or scales that differ across a channel), so it folds into no convolution: pool right after the convolution before the activation, or ${splitAfter(node)} ` +
          `so that the convolution is the first encrypted layer`,
      );
    if (shape === undefined) return refuse();
    const map = this.last as SparseLinear;
    const area = shape.kernel[0] * shape.kernel[1];
    const perChannel = map.outputs / shape.image[0];
    const same = (a: number, b: number) => Math.abs(a - b) <= 1e-12 * Math.max(Math.abs(a), Math.abs(b));
    const scale = new Float64Array(shape.image[0]).map((_, c) => map.values[c * perChannel]![0]! * area);
    const shift = new Float64Array(shape.image[0]).map((_, c) => map.bias[c * perChannel]!);
    const channelOf = (r: number) => Math.floor(r / perChannel);
    if (!map.values.every((values, r) => values.every((v) => same(v * area, scale[channelOf(r)]!)) && same(map.bias[r]!, shift[channelOf(r)]!))) refuse();
    return poolWindow(shape.image, shape.kernel, shape.stride, shape.pads, scale, shift);
  }

  /** The remedy that makes the node reading `input` the first encrypted layer. */
  private splitAtInput(input: string): string {
    const from = this.graph.producer.get(input);
    return from?.proto.name ? `split after ${describeNode(from)} (--split ${shellWord(from.proto.name)})` : `split at its input (--split ${shellWord(input)})`;
  }

  /**
   * How the convolution reads the features: as stored, or — tf2onnx's NHWC input behind a
   * Transpose to NCHW — channel-major after the device transposes the image.
   */
  private inputLayout(node: GraphNode, input: string, [channels, height, width]: readonly [number, number, number]): InputLayout {
    const { gather } = this.exprOf(input, node);
    const features = imageDims(this.shapes.shapeOf(this.features));
    const nhwc = features !== undefined && features[0] === height && features[1] === width && features[2] === channels;
    if (nhwc && sameOrder(gather, transposeGather([height, width, channels], [2, 0, 1]))) return 'nhwc';
    if (gather === undefined || isIdentity(gather)) return 'nchw';
    return fail('E_UNSUPPORTED', `${describeNode(node)} reads the features '${this.features}' transposed other than NHWC to NCHW: ${splitAfter(node)} to keep the convolution in the plaintext extractor`);
  }

  /**
   * AveragePool and GlobalAveragePool: linear. Right after a convolution, the pool merges
   * into it where that is exact (always when unpadded); otherwise it stays pending as a
   * sparse map that folds into the next dense layer or convolution, or becomes a dense layer
   * of its own when an activation follows.
   */
  private pool(node: GraphNode): void {
    const input = node.inputs[0]!;
    const expr = this.exprOf(input, node);
    const shape = this.shapes.shapeOf(input);
    const image = imageDims(shape);
    if (image === undefined) {
      fail('E_UNSUPPORTED', `${describeNode(node)} pools '${input}' of ${shape ? `shape [${shape.join(', ')}]` : 'unknown shape'}: average pooling in the classifier head needs a 2-D input [N, C, H, W] of known sizes`);
    }
    if (expr.gather !== undefined && !isIdentity(expr.gather)) {
      fail('E_UNSUPPORTED', `${describeNode(node)} pools a transposed tensor: ${splitAfter(node)} to keep it in the plaintext extractor`);
    }
    const [, height, width] = image;
    let kernel: [number, number] = [height, width];
    let stride: [number, number] = [1, 1];
    let pads: Pads = [0, 0, 0, 0];
    let countIncludePad = false;
    if (node.op === 'AveragePool') {
      const k = intsAttribute(node.proto, 'kernel_shape') ?? [];
      const s = intsAttribute(node.proto, 'strides') ?? [1, 1];
      const dilations = intsAttribute(node.proto, 'dilations') ?? [];
      if (k.length !== 2 || s.length !== 2 || dilations.some((d) => d !== 1)) {
        fail('E_UNSUPPORTED', `${describeNode(node)}: kernel [${k.join(', ')}], strides [${s.join(', ')}], dilations [${dilations.join(', ')}]: only 2-D undilated pooling is supported`);
      }
      kernel = [k[0]!, k[1]!];
      stride = [s[0]!, s[1]!];
      pads = windowPads(describeNode(node), stringAttribute(node.proto, 'auto_pad', 'NOTSET'), intsAttribute(node.proto, 'pads'), [height, width], kernel, stride);
      if (pads[0] >= kernel[0] || pads[2] >= kernel[0] || pads[1] >= kernel[1] || pads[3] >= kernel[1]) {
        fail('E_UNSUPPORTED', `${describeNode(node)}: pads [${pads.join(', ')}] reach a whole ${kernel.join('×')} window beyond the input`);
      }
      const ceil = [0, 1].some((a) => {
        const span = [height, width][a]! + pads[a]! + pads[a + 2]! - kernel[a]!;
        return Math.ceil(span / stride[a]!) !== Math.floor(span / stride[a]!);
      });
      if (intAttribute(node.proto, 'ceil_mode', 0) === 1 && ceil) {
        fail('E_UNSUPPORTED', `${describeNode(node)} has ceil_mode=1 with windows that run past the input: export it with ceil_mode=0, or ${splitAfter(node)} to keep it in the plaintext extractor`);
      }
      countIncludePad = intAttribute(node.proto, 'count_include_pad', 0) === 1;
    }
    const { map } = poolMatrix(image, kernel, stride, pads, countIncludePad);
    if (this.last !== undefined) this.materialize(expr, map, node);
    const last = this.last;
    // Zero padding counted in every window (or none): a window operator, which may merge.
    const uniform = countIncludePad || pads.every((p) => p === 0);
    const window = poolWindow(image, kernel, stride, pads, filled(image[0], 1), filled(image[0], 0));
    const merged = uniform && last?.kind === 'conv' && this.layers.at(-1) === last ? composeWindows(convWindow(last), window) : undefined;
    if (merged !== undefined) {
      this.layers[this.layers.length - 1] = merged;
      this.last = merged;
    } else {
      this.pendingPool = { node, shape: last?.kind === 'sparse' ? undefined : { image, kernel, stride, pads } };
      this.last = last?.kind === 'sparse' ? composeSparse(map, last) : map;
    }
    this.width = map.outputs;
    this.rebase(node.outputs[0]!);
  }

  /** A pending average pool that cannot fold into a dense layer becomes one. */
  private flush(): void {
    const pool = this.last;
    if (pool?.kind !== 'sparse') return;
    if (pool.outputs * pool.inputs > MAX_POOL_WEIGHTS) {
      fail(
        'E_UNSUPPORTED',
        `${describeNode(this.pendingPool!.node)}: an activation follows this average pool, so it folds into no neighbouring layer, and as a dense layer of its own it would have ` +
          `${pool.outputs}×${pool.inputs} weights: pool before the activation, or ${splitAfter(this.pendingPool!.node)} to keep it in the plaintext extractor`,
      );
    }
    const weights = new Float64Array(pool.outputs * pool.inputs);
    pool.cols.forEach((cols, r) => cols.forEach((c, k) => (weights[r * pool.inputs + c] = pool.values[r]![k]!)));
    const layer: MutableDense = { kind: 'dense', inputs: pool.inputs, outputs: pool.outputs, weights, bias: pool.bias };
    this.layers.push(layer);
    this.outputOf.set(layer, this.outputOf.get(pool)!);
    this.last = layer;
  }

  /** The dense layer a Gemm or MatMul computes, weights row-major outputs × inputs. */
  private denseWeights(node: GraphNode, input: string): MutableDense {
    const constant = (name: string | undefined) => {
      if (!name || !this.graph.isConstant(name)) return undefined;
      const tensor = this.graph.constants.get(name)!;
      return { dims: tensorDims(tensor), values: tensorValues(tensor, describeNode(node)) };
    };
    const matrix = (c: ReturnType<typeof constant>, what: string) => {
      if (c === undefined || c.dims.length !== 2) {
        fail('E_UNSUPPORTED', `${describeNode(node)}: the ${what} must be a constant matrix${c ? `, got shape [${c.dims.join(', ')}]` : ''}`);
      }
      return { rows: c.dims[0]!, cols: c.dims[1]!, values: c.values };
    };
    const transpose = (m: { rows: number; cols: number; values: Float64Array }) => {
      const out = new Float64Array(m.values.length);
      for (let r = 0; r < m.rows; r++) for (let c = 0; c < m.cols; c++) out[c * m.rows + r] = m.values[r * m.cols + c]!;
      return out;
    };
    if (node.op === 'Gemm') {
      if (node.inputs[0] !== input) fail('E_UNSUPPORTED', `${describeNode(node)} has the data as its B operand: a dense layer's input must be A`);
      if (intAttribute(node.proto, 'transA', 0) !== 0) fail('E_UNSUPPORTED', `${describeNode(node)} transposes its input (transA=1): a dense layer reads one sample per row`);
      const b = matrix(constant(node.inputs[1]), 'weight operand B');
      const alpha = floatAttribute(node.proto, 'alpha', 1);
      const beta = floatAttribute(node.proto, 'beta', 1);
      // transB=1 stores B as outputs × inputs already (PyTorch's Linear); otherwise inputs × outputs.
      const transB = intAttribute(node.proto, 'transB', 0) === 1;
      const [outputs, inputs] = transB ? [b.rows, b.cols] : [b.cols, b.rows];
      const weights = (transB ? Float64Array.from(b.values) : transpose(b)).map((w) => alpha * w);
      const c = node.inputs[2] ? constant(node.inputs[2]) : undefined;
      if (node.inputs[2] && c === undefined) fail('E_UNSUPPORTED', `${describeNode(node)}: the bias C must be a constant`);
      if (c !== undefined && c.values.length !== 1 && (c.values.length !== outputs || c.dims.filter((d) => d !== 1).length !== 1)) {
        fail('E_UNSUPPORTED', `${describeNode(node)}: bias C of shape [${c.dims.join(', ')}] is not one value per output`);
      }
      const bias = filled(outputs, 0).map((_, r) => beta * (c === undefined ? 0 : c.values.length === 1 ? c.values[0]! : c.values[r]!));
      return { kind: 'dense', inputs, outputs, weights, bias };
    }
    const inputShape = this.shapes.shapeOf(input);
    if (node.inputs[0] === input) {
      // x · W with W stored inputs × outputs (tf2onnx, Keras, CNTK).
      const w = matrix(constant(node.inputs[1]), 'weight operand');
      return { kind: 'dense', inputs: w.rows, outputs: w.cols, weights: transpose(w), bias: filled(w.cols, 0) };
    }
    // W · x with W stored outputs × inputs (CNTK writes the input on the right): x must be one column.
    const w = matrix(constant(node.inputs[0]), 'weight operand');
    if (inputShape !== undefined && !(inputShape.length === 1 || (inputShape.length === 2 && inputShape[1] === 1))) {
      fail('E_UNSUPPORTED', `${describeNode(node)} multiplies weights by '${input}' of shape [${inputShape.join(', ')}]: with the input on the right it must be a vector [n] or a column [n, 1]`);
    }
    return { kind: 'dense', inputs: w.cols, outputs: w.rows, weights: Float64Array.from(w.values), bias: filled(w.rows, 0) };
  }

  /**
   * Turns the expression `expr` of the last layer's output into layers, before the layer
   * `next` (undefined at the graph output). Degree ≤ 1: folds into that last layer. Higher:
   * one polynomial activation, with any per-feature scaling and offset folded into `next`.
   * A reordered expression reorders `next`'s columns (or, at the output, the last layer's rows).
   */
  private materialize(expr: Expr, next: MutableDense | SparseLinear | MutableConv | undefined, node: GraphNode | undefined): void {
    const poly = inBaseOrder(expr.poly, expr.gather);
    const gather = expr.gather === undefined || isIdentity(expr.gather) ? undefined : expr.gather;
    if (gather !== undefined && next?.kind === 'dense') permuteColumns(next, gather);
    const last = this.last!;
    if (poly.degree <= 1 && last.kind !== 'add') {
      this.foldBackward(last, poly, node);
    } else if (poly.degree <= 1) {
      // A residual add's sum is no layer's own output: an affine map after it folds forward.
      const identity = poly.coeff(0).every((v) => v === 0) && poly.coeff(1).every((v) => v === 1);
      if (!identity && next === undefined) fail('E_UNSUPPORTED', 'the graph output scales or shifts the output of a residual add: nothing follows to fold that into; end the head with a dense layer');
      if (!identity) this.foldForward(next!, poly.coeff(1), poly.coeff(0), node!);
    } else {
      const scalars = poly.uniform();
      if (scalars !== undefined) {
        this.flush();
        this.pushPoly(scalars, { base: expr.base, poly });
      } else {
        // p_j(x) = s_j·q(x) + t_j with one polynomial q: s and t fold into the next layer.
        const high = poly.coeffs.slice(1);
        const sameShape = high.every(isUniform);
        const s = sameShape ? filled(poly.width, 1) : poly.coeff(poly.degree);
        const q = high.map((c) => c.map((v, j) => v / s[j]!));
        if (!sameShape && (s.some((v) => v === 0) || !q.every((c) => c.every((v) => Math.abs(v - c[0]!) <= 1e-9 * Math.max(1, Math.abs(c[0]!)))))) {
          fail('E_UNSUPPORTED', `${node ? describeNode(node) : 'the graph output'}: the elementwise operations before it are not one polynomial activation applied alike to every feature`);
        }
        if (next === undefined) {
          fail('E_UNSUPPORTED', 'the head ends with an activation that differs per feature (a per-feature scale or offset after it): nothing follows to fold it into');
        }
        this.flush();
        const coeffs = [0, ...q.map((c) => c[0]!)];
        this.pushPoly(coeffs, { base: expr.base, poly: VecPoly.of(poly.width, coeffs.map((c) => filled(poly.width, c))) });
        this.foldForward(next, s, poly.coeff(0), node!);
      }
    }
    if (gather !== undefined && next === undefined) this.permuteRows(gather);
  }

  private pushPoly(coeffs: number[], output: LayerOutput): void {
    const layer: Layer = { kind: 'poly', coeffs };
    this.layers.push(layer);
    this.outputOf.set(layer, output);
  }

  /** layer ← a ⊙ layer + b (a, b the affine expression's coefficients), for the last layer. */
  private foldBackward(layer: MutableDense | MutableConv | SparseLinear, affine: VecPoly, node: GraphNode | undefined): void {
    const [b, a] = [affine.coeff(0), affine.coeff(1)];
    const output = this.outputOf.get(layer)!;
    this.outputOf.set(layer, { base: output.base, poly: output.poly.scale(a).add(VecPoly.constant(b)) });
    if (layer.kind === 'conv') {
      const positions = a.length / layer.outChannels;
      const perChannel = (v: Float64Array) => v.every((x, j) => x === v[j - (j % positions)]);
      if (!perChannel(a) || !perChannel(b)) {
        fail(
          'E_UNSUPPORTED',
          `${node ? describeNode(node) : 'the graph output'} scales or shifts the convolution's outputs differently across the positions of a channel: ` +
            `only per-channel constants (a bias, a batch norm) fold into a convolution`,
        );
      }
      const taps = layer.weights.length / layer.outChannels;
      for (let o = 0; o < layer.outChannels; o++) {
        const [ao, bo] = [a[o * positions]!, b[o * positions]!];
        for (let k = o * taps; k < (o + 1) * taps; k++) layer.weights[k]! *= ao;
        layer.bias[o] = ao * layer.bias[o]! + bo;
      }
      return;
    }
    for (let r = 0; r < layer.outputs; r++) {
      if (layer.kind === 'dense') {
        for (let c = 0; c < layer.inputs; c++) layer.weights[r * layer.inputs + c]! *= a[r]!;
      } else {
        layer.values[r] = layer.values[r]!.map((v) => v * a[r]!);
      }
      layer.bias[r] = a[r]! * layer.bias[r]! + b[r]!;
    }
  }

  /** layer(x) ← layer(s ⊙ x + t): W ← W·diag(s), b ← b + W·t. */
  private foldForward(layer: MutableDense | SparseLinear | MutableConv, s: Float64Array, t: Float64Array, node: GraphNode): void {
    if (layer.kind === 'conv') return this.foldIntoConv(layer, s, t, node);
    if (layer.kind === 'sparse') {
      layer.cols.forEach((cols, r) =>
        cols.forEach((c, k) => {
          layer.bias[r]! += layer.values[r]![k]! * t[c]!;
          layer.values[r]![k]! *= s[c]!;
        }),
      );
      return;
    }
    for (let r = 0; r < layer.outputs; r++) {
      for (let c = 0; c < layer.inputs; c++) {
        const k = r * layer.inputs + c;
        layer.bias[r]! += layer.weights[k]! * t[c]!;
        layer.weights[k]! *= s[c]!;
      }
    }
  }

  /**
   * conv(x) ← conv(s ⊙ x + t) for s and t constant per input channel: W ← W·s, b ← b + W·t.
   * The shift is exact only where the convolution reads no zero padding (which stays zero,
   * unshifted).
   */
  private foldIntoConv(conv: MutableConv, s: Float64Array, t: Float64Array, node: GraphNode): void {
    const { inChannels: channels, inHeight: height, inWidth: width, outChannels, kernel: [kh, kw], stride: [sh, sw], pads: [top, left] } = conv;
    const positions = height * width;
    const perChannel = (v: Float64Array) => v.every((x, j) => x === v[j - (j % positions)]);
    const remedy = `${this.splitAtInput(node.inputs[0]!)} so that it is the first encrypted layer`;
    if (!perChannel(s) || !perChannel(t)) {
      fail('E_UNSUPPORTED', `${describeNode(node)} reads the activation's outputs scaled or shifted differently across the positions of a channel: only per-channel constants fold into a convolution; ${remedy}`);
    }
    const { outHeight, outWidth } = convGeometry(conv, describeNode(node));
    const readsPadding = top > 0 || left > 0 || (outHeight - 1) * sh + kh - top > height || (outWidth - 1) * sw + kw - left > width;
    if (readsPadding && t.some((v) => v !== 0)) {
      fail(
        'E_UNSUPPORTED',
        `${describeNode(node)} reads the activation's outputs shifted per channel (a batch norm after the activation, say) and reads zero padding, which stays unshifted: ` +
          `move the shift before the activation, export the convolution without padding, or ${remedy}`,
      );
    }
    const taps = kh * kw;
    for (let o = 0; o < outChannels; o++) {
      for (let c = 0; c < channels; c++) {
        const [sc, tc] = [s[c * positions]!, t[c * positions]!];
        for (let k = (o * channels + c) * taps; k < (o * channels + c + 1) * taps; k++) {
          conv.bias[o]! += conv.weights[k]! * tc;
          conv.weights[k]! *= sc;
        }
      }
    }
  }

  /** The graph output reorders the last layer's outputs: output j is the layer's output gather[j]. */
  private permuteRows(gather: Int32Array): void {
    this.flush();
    const layer = this.last!;
    if (layer.kind !== 'dense') fail('E_UNSUPPORTED', `the graph output transposes the convolution's output: end the head with a dense layer`);
    const weights = new Float64Array(layer.weights.length);
    gather.forEach((g, j) => weights.set(layer.weights.subarray(g * layer.inputs, (g + 1) * layer.inputs), j * layer.inputs));
    layer.weights = weights;
    layer.bias = Float64Array.from(gather, (g) => layer.bias[g]!);
  }
}

/**
 * Converts the nodes between `features` and `output` into the engine's layers. `nodes`
 * are the head's nodes in topological order; they may read only the features, each
 * other's outputs and constants.
 */
export function buildHead(
  graph: Graph,
  shapes: ShapeInference,
  features: string,
  output: string,
  nodes: readonly GraphNode[],
  options: HeadOptions = {},
): Head {
  return new HeadBuilder(graph, shapes, features, output, nodes, options).build();
}
