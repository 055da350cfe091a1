/**
 * The classifier head: the part of the graph after the split, converted to the engine's
 * layer list. Each tensor of the head is tracked as an elementwise polynomial (VecPoly) of
 * the current "base": the output of the last dense layer, or the features before the
 * first one. A dense op (Gemm, MatMul) first turns the expression it reads into layers —
 * affine parts fold into a neighbouring dense layer, the rest becomes one polynomial
 * activation — and then starts a new base. So a bias Add, a batch norm, x²+2x written as
 * Mul/Add or Pow, and scalings all reduce to dense and poly layers, whatever the exporter.
 */
import type { Layer } from '../he';
import type { Activation } from './approx';
import { fail } from './errors';
import { describeNode, type Graph, type GraphNode } from './graph';
import { MAX_POLY_DEGREE, VecPoly, isUniform } from './polynomial';
import { floatAttribute, intAttribute, tensorDims, tensorValues } from './proto';
import { type Shape, ShapeInference } from './shapes';

export interface HeadOptions {
  /** Polynomials (coeffs[i] multiplies x^i) that stand in for these activations; others are refused. */
  readonly approximations?: Partial<Record<Activation, readonly number[]>>;
}

export interface Head {
  readonly layers: Layer[];
  /** Nodes that are left out of the head on purpose (a trailing Softmax). */
  readonly dropped: GraphNode[];
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

/** Ops that only compute shapes (for a dynamic Reshape): skipped when their values are known. */
const SHAPE_OPS = new Set(['Shape', 'Gather', 'Concat', 'Unsqueeze', 'Squeeze', 'Slice', 'Cast', 'ConstantOfShape']);
/** Ops that rearrange a vector without changing it: identities on the head's per-sample vector. */
const RESHAPES = new Set(['Flatten', 'Reshape', 'Squeeze', 'Unsqueeze', 'Transpose']);

interface Expr {
  readonly base: string;
  readonly poly: VecPoly;
}

interface MutableDense {
  kind: 'dense';
  inputs: number;
  outputs: number;
  weights: Float64Array;
  bias: Float64Array;
}

const filled = (width: number, value: number) => new Float64Array(width).fill(value);

class HeadBuilder {
  private readonly layers: Layer[] = [];
  private readonly exprs = new Map<string, Expr>();
  private readonly shapeTensors = new Set<string>();
  private readonly dropped: GraphNode[] = [];
  private readonly processed = new Set<GraphNode>();
  private readonly members: ReadonlySet<GraphNode>;
  private base: string;
  private lastDense: MutableDense | undefined;
  private width: number | undefined;

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
  }

  build(): Head {
    for (const node of this.nodes) {
      // Marked before the visit: a node's own reads do not keep its inputs live.
      this.processed.add(node);
      this.visit(node);
    }
    if (this.lastDense === undefined) {
      fail('E_SPLIT', `the head after the split at '${this.features}' has no dense layer (Gemm or MatMul): split before a dense layer`);
    }
    this.materialize(this.exprOf(this.output, undefined), undefined, undefined);
    return { layers: this.layers, dropped: this.dropped };
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
    const out = node.outputs[0]!;
    switch (op) {
      case 'Gemm':
      case 'MatMul':
        return this.dense(node, data);
      case 'Add':
      case 'Sub':
      case 'Mul':
      case 'Div':
        return this.set(node, out, this.binary(node));
      case 'Sum':
        return this.set(node, out, node.inputs.map((name) => this.operand(node, name)).reduce((a, b) => a.add(b)));
      case 'Neg':
        return this.set(node, out, this.operand(node, node.inputs[0]!).scale(filled(this.width!, -1)));
      case 'Pow':
        return this.set(node, out, this.pow(node));
      case 'BatchNormalization':
        return this.set(node, out, this.batchNorm(node));
      case 'Softmax':
      case 'LogSoftmax':
        if (out !== this.output) {
          fail('E_UNSUPPORTED', `${describeNode(node)} is inside the classifier head; only a Softmax at the very end can be left out (the backend takes the argmax of the scores)`);
        }
        this.dropped.push(node);
        return this.set(node, out, this.exprOf(node.inputs[0]!, node).poly);
    }
    if (RESHAPES.has(op)) return this.set(node, out, this.reshape(node));
    if (Object.hasOwn(NON_POLYNOMIAL, op)) return this.set(node, out, this.activation(node));
    fail('E_UNSUPPORTED', `${describeNode(node)}: ${op} is not supported in the classifier head (dense layers: Gemm, MatMul [+ Add]; activations: polynomials of Add/Sub/Mul/Pow with constants; BatchNormalization after a dense layer). Split after it with --split to keep it in the plaintext extractor`);
  }

  private exprOf(name: string, node: GraphNode | undefined): Expr {
    if (node !== undefined && name === this.features) this.requireWidth(node);
    const expr = this.exprs.get(name);
    if (expr === undefined) {
      const where = node ? describeNode(node) : 'the graph output';
      fail('E_UNSUPPORTED', `${where} reads '${name}', which the classifier head does not compute: the head must be a chain from the features to the output`);
    }
    if (expr.base !== this.base) {
      fail('E_UNSUPPORTED', `${node ? describeNode(node) : 'the graph output'} reads '${name}' from before the last dense layer: skip connections in the classifier head are not supported`);
    }
    return expr;
  }

  /** A data input as a polynomial of the base, or a constant as a constant polynomial. */
  private operand(node: GraphNode, name: string): VecPoly {
    if (this.graph.isConstant(name)) return VecPoly.constant(this.vectorConstant(node, name));
    return this.exprOf(name, node).poly;
  }

  private requireWidth(node: GraphNode): number {
    if (this.width === undefined) {
      fail('E_SPLIT', `${describeNode(node)} comes before the first dense layer of the head: split at the input of a dense layer (Gemm or MatMul)`);
    }
    return this.width;
  }

  /**
   * A constant operand broadcast to the head's vector: a scalar, or one value per feature
   * laid out along the data tensor's feature axis. Anything else would broadcast the data
   * to a bigger tensor or mix samples, which no per-sample vector can express.
   */
  private vectorConstant(node: GraphNode, name: string): Float64Array {
    const width = this.requireWidth(node);
    const tensor = this.graph.constants.get(name)!;
    const values = tensorValues(tensor, describeNode(node));
    if (values.length === 1) return filled(width, values[0]!);
    const dims = tensorDims(tensor);
    const data = node.inputs.find((n) => this.exprs.has(n));
    const shape = data === undefined ? undefined : this.shapes.shapeOf(data);
    if (values.length === width && this.alongFeatureAxis(dims, shape, width)) return Float64Array.from(values);
    fail(
      'E_UNSUPPORTED',
      `${describeNode(node)} combines the head's ${width} features${shape ? ` (shape [${shape.join(', ')}])` : ''} with constant '${name}' of shape [${dims.join(', ')}]: ` +
        `only scalars and one value per feature are supported`,
    );
  }

  private alongFeatureAxis(dims: readonly number[], shape: Shape | undefined, width: number): boolean {
    const big = dims.flatMap((d, i) => (d === 1 ? [] : [dims.length - i]));
    if (big.length !== 1 || dims[dims.length - big[0]!] !== width) return false;
    if (shape === undefined) return true;
    const featureAxisFromEnd = [...shape].reverse().findIndex((d) => d === width) + 1;
    return dims.length <= shape.length && featureAxisFromEnd === big[0];
  }

  private set(node: GraphNode, out: string, poly: VecPoly): void {
    if (poly.degree > MAX_POLY_DEGREE) {
      fail('E_UNSUPPORTED', `${describeNode(node)} raises the activation's degree to ${poly.degree}, above the engine's ${MAX_POLY_DEGREE}`);
    }
    this.exprs.set(out, { base: this.base, poly });
    this.foldEagerly(out);
  }

  /**
   * A per-feature affine map of the last dense layer's output (its bias Add, a batch
   * norm) folds into that layer at once when nothing else still reads the layer's output,
   * so the polynomial that may follow is a plain scalar one of the folded output.
   */
  private foldEagerly(tensor: string): void {
    const { poly } = this.exprs.get(tensor)!;
    if (this.lastDense === undefined || poly.degree > 1 || poly.uniform() !== undefined) return;
    for (const [name, expr] of this.exprs) {
      if (name !== tensor && expr.base === this.base && this.isLive(name)) return;
    }
    this.foldBackward(this.lastDense, poly);
    this.rebase(tensor);
  }

  private isLive(name: string): boolean {
    if (name === this.output) return true;
    return (this.graph.consumers.get(name) ?? []).some((c) => this.members.has(c) && !this.processed.has(c));
  }

  private rebase(tensor: string): void {
    this.base = tensor;
    this.exprs.set(tensor, { base: tensor, poly: VecPoly.identity(this.width!) });
  }

  private binary(node: GraphNode): VecPoly {
    const [a, b] = [node.inputs[0]!, node.inputs[1]!];
    const [pa, pb] = [this.operand(node, a), this.operand(node, b)];
    switch (node.op) {
      case 'Add':
        return pa.add(pb);
      case 'Sub':
        return pa.add(pb.scale(filled(this.width!, -1)));
      case 'Mul':
        return pa.mul(pb);
      default: {
        if (!this.graph.isConstant(b)) {
          fail('E_UNSUPPORTED', `${describeNode(node)} divides by a computed tensor, which is not a polynomial: only division by constants is supported`);
        }
        const divisor = pb.coeff(0);
        if (divisor.some((d) => d === 0)) fail('E_UNSUPPORTED', `${describeNode(node)} divides by zero`);
        return pa.scale(divisor.map((d) => 1 / d));
      }
    }
  }

  private pow(node: GraphNode): VecPoly {
    const exponent = node.inputs[1]!;
    if (!this.graph.isConstant(exponent)) fail('E_UNSUPPORTED', `${describeNode(node)} has a computed exponent: only constant integer exponents are polynomials`);
    const values = tensorValues(this.graph.constants.get(exponent)!, describeNode(node));
    const k = values[0]!;
    if (values.length !== 1 || !Number.isInteger(k) || k < 1 || k > MAX_POLY_DEGREE) {
      fail('E_UNSUPPORTED', `${describeNode(node)} raises to the power [${Array.from(values).join(', ')}]: only a scalar integer exponent from 1 to ${MAX_POLY_DEGREE} is a polynomial`);
    }
    return this.exprOf(node.inputs[0]!, node).poly.pow(k);
  }

  private batchNorm(node: GraphNode): VecPoly {
    const width = this.requireWidth(node);
    const [scale, shift, mean, variance] = node.inputs.slice(1, 5).map((name) => {
      if (!this.graph.isConstant(name)) fail('E_UNSUPPORTED', `${describeNode(node)} has a computed parameter '${name}': batch norm folds only with constant statistics`);
      const values = tensorValues(this.graph.constants.get(name)!, describeNode(node));
      if (values.length !== width) fail('E_UNSUPPORTED', `${describeNode(node)}: parameter '${name}' has ${values.length} values, the head has ${width} features`);
      return values;
    });
    if (intAttribute(node.proto, 'training_mode', 0) === 1) {
      fail('E_UNSUPPORTED', `${describeNode(node)} is exported in training mode: export the model in eval mode`);
    }
    const shape = this.shapes.shapeOf(node.inputs[0]!);
    if (shape !== undefined && (shape.length !== 2 || shape[1] !== width)) {
      fail('E_UNSUPPORTED', `${describeNode(node)} normalizes a tensor of shape [${shape.join(', ')}]: in the head, batch norm must act on [batch, ${width}]`);
    }
    const epsilon = floatAttribute(node.proto, 'epsilon', 1e-5);
    const a = scale!.map((s, j) => s / Math.sqrt(variance![j]! + epsilon));
    const b = shift!.map((t, j) => t - a[j]! * mean![j]!);
    return this.exprOf(node.inputs[0]!, node).poly.scale(a).add(VecPoly.constant(b));
  }

  private reshape(node: GraphNode): VecPoly {
    const width = this.requireWidth(node);
    const shape = this.shapes.shapeOf(node.outputs[0]!);
    if (shape !== undefined) {
      const sized = shape.filter((d) => typeof d === 'number' && d !== 1);
      if (sized.length !== 1 || sized[0] !== width) {
        fail('E_UNSUPPORTED', `${describeNode(node)} turns the head's ${width} features into shape [${shape.join(', ')}]: only reshapes that keep one vector per sample are supported`);
      }
    }
    return this.exprOf(node.inputs[0]!, node).poly;
  }

  private activation(node: GraphNode): VecPoly {
    const fn = NON_POLYNOMIAL[node.op];
    const approximation = fn === undefined ? undefined : this.options.approximations?.[fn];
    if (approximation === undefined) {
      const hint = fn
        ? `replace it by a polynomial approximation (--activation cryptodl-${fn}-3, say) or retrain with a polynomial activation (training/: --activation x2+2x)`
        : 'retrain with a polynomial activation (training/: --activation x2+2x)';
      fail('E_ACTIVATION', `${describeNode(node)} is a ${node.op} in the classifier head, which homomorphic encryption cannot evaluate: ${hint}`);
    }
    this.requireWidth(node);
    return this.exprOf(node.inputs[0]!, node).poly.compose(approximation);
  }

  private dense(node: GraphNode, data: string[]): void {
    if (data.length !== 1) fail('E_UNSUPPORTED', `${describeNode(node)} multiplies two computed tensors: a dense layer needs constant weights`);
    const [input] = data as [string];
    const { inputs, outputs, weights, bias } = this.denseWeights(node, input);
    if (this.width !== undefined && inputs !== this.width) {
      fail('E_GRAPH', `${describeNode(node)} has ${inputs} inputs, but the layer before it has ${this.width} outputs`);
    }
    const featureShape = this.shapes.shapeOf(this.features);
    const featureCount = featureShape?.filter((d) => typeof d === 'number' && d !== 1);
    if (this.width === undefined && featureCount?.length === 1 && featureCount[0] !== inputs) {
      fail('E_GRAPH', `${describeNode(node)} has ${inputs} inputs, but the features '${this.features}' have shape [${featureShape!.join(', ')}]`);
    }
    const layer: MutableDense = { kind: 'dense', inputs, outputs, weights, bias };
    if (this.lastDense !== undefined) this.materialize(this.exprOf(input, node), layer, node);
    else if (input !== this.features) {
      fail('E_SPLIT', `${describeNode(node)} is the first dense layer but reads '${input}', not the features '${this.features}': split at its input`);
    }
    this.layers.push(layer);
    this.lastDense = layer;
    this.width = outputs;
    this.rebase(node.outputs[0]!);
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
   * Turns the expression `expr` of the last dense layer's output into layers, before the
   * dense layer `next` (undefined at the graph output). Degree ≤ 1: folds into that last
   * layer. Higher: one polynomial activation, with any per-feature scaling and offset
   * folded into `next`.
   */
  private materialize(expr: Expr, next: MutableDense | undefined, node: GraphNode | undefined): void {
    const { poly } = expr;
    if (poly.degree <= 1) {
      this.foldBackward(this.lastDense!, poly);
      return;
    }
    const scalars = poly.uniform();
    if (scalars !== undefined) {
      this.layers.push({ kind: 'poly', coeffs: scalars });
      return;
    }
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
    this.layers.push({ kind: 'poly', coeffs: [0, ...q.map((c) => c[0]!)] });
    this.foldForward(next, s, poly.coeff(0));
  }

  /** layer ← a ⊙ layer + b (a, b the affine expression's coefficients). */
  private foldBackward(layer: MutableDense, affine: VecPoly): void {
    const [b, a] = [affine.coeff(0), affine.coeff(1)];
    for (let r = 0; r < layer.outputs; r++) {
      for (let c = 0; c < layer.inputs; c++) layer.weights[r * layer.inputs + c]! *= a[r]!;
      layer.bias[r] = a[r]! * layer.bias[r]! + b[r]!;
    }
  }

  /** layer(x) ← layer(s ⊙ x + t): W ← W·diag(s), b ← b + W·t. */
  private foldForward(layer: MutableDense, s: Float64Array, t: Float64Array): void {
    for (let r = 0; r < layer.outputs; r++) {
      for (let c = 0; c < layer.inputs; c++) {
        const k = r * layer.inputs + c;
        layer.bias[r]! += layer.weights[k]! * t[c]!;
        layer.weights[k]! *= s[c]!;
      }
    }
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
