/**
 * Import of a trained ONNX CNN: split it into the plaintext feature extractor (a new ONNX
 * model for onnxruntime) and the encrypted head (the engine's layer list). The split may
 * be anywhere down to the model's input (`--split input`): then the head starts with the
 * first convolution, and splitOnnx returns no extractor (importOnnx a pass-through one).
 *
 * Exporters write the same dense layer differently — PyTorch as Flatten + Gemm(transB=1),
 * tf2onnx/Keras as Transpose to NHWC + Reshape + MatMul + Add with weights stored
 * inputs × outputs, CNTK as Reshape + MatMul (input on either side) + Add — and the head
 * builder reduces them all to row-major outputs × inputs weights (see head.ts). The
 * extractor is the original graph cut at the features, so whatever order the exporter
 * flattens in (NCHW or NHWC), the extractor's output and the head's weights agree.
 *
 * Takes bytes, not paths: no platform imports, so the kiosk can use it too.
 */
import type { Layer } from '../he';
import { fail, ModelError } from './errors';
import { describeNode, Graph, type GraphNode, subgraphInputs } from './graph';
import { buildHead, type Head, type HeadOptions, type InputLayout, splitAfterBlock } from './head';
import { DataType, decodeModel, type IModelProto, type INodeProto, type IValueInfoProto, type ModelProto, onnx } from './proto';
import { declaredShape, type Shape, ShapeInference, UNKNOWN } from './shapes';

/** The name of the extractor's single output. */
export const FEATURES = 'features';

/** The split that encrypts the whole model: the head starts at the model's input. */
export const INPUT_SPLIT = 'input';

export interface ImportOptions extends HeadOptions {
  /**
   * Where to split: a node name (the head starts after it), a tensor name, or `input`
   * (INPUT_SPLIT: the head starts at the model's input, no extractor). Reshapes right after
   * a named node or tensor go to the extractor. Automatic when absent: where the flattened
   * features enter the first dense layer after the last convolution or pooling.
   */
  readonly split?: string;
  /** Names the model in error messages (a file name, say). */
  readonly source?: string;
}

export interface TensorSpec {
  readonly name: string;
  /** Dimensions: numbers, symbolic names such as a batch 'N', '?' when unknown; null if even the rank is unknown. */
  readonly shape: Shape | null;
}

/** The model split in two: the plaintext extractor, if any, and the encrypted head. */
export interface OnnxSplit {
  /**
   * The feature extractor as an ONNX model: the original input, one output named
   * `features`. Null when the head starts at the model's input: the device only
   * preprocesses and encrypts the image.
   */
  readonly extractor: Uint8Array | null;
  readonly input: TensorSpec;
  /** What the head reads: the extractor's output, or the model's input when there is no extractor. */
  readonly features: TensorSpec;
  /**
   * How the head reads `features`: 'nchw', flattened row-major as stored; 'nhwc', an image
   * [N, H, W, C] the device transposes to channel-major C×H×W before packing (a tf2onnx
   * export's input, split at `input`). Only without an extractor: an extractor ends with
   * that transpose itself.
   */
  readonly layout: InputLayout;
  /**
   * The encrypted head for the engine: convolutions (weights OIHW), dense layers (weights
   * row-major outputs × inputs) and polynomial activations, a convolution or a dense layer
   * first.
   */
  readonly head: Layer[];
  /** The tensor of the original graph that the head starts at. */
  readonly splitTensor: string;
  /** Nodes of the original graph left out of both parts (a trailing Softmax), described. */
  readonly dropped: string[];
}

/**
 * The split with an extractor always: at the model's input, a one-node model that passes
 * the image on (an Identity, or a Transpose to NCHW for an 'nhwc' head), so `layout` is
 * always 'nchw'.
 */
export interface ImportedModel extends OnnxSplit {
  readonly extractor: Uint8Array;
}

/** Ops that look at a neighbourhood of pixels: the automatic split never puts them in the head. */
const SPATIAL = new Set([
  'Conv', 'ConvTranspose', 'ConvInteger', 'QLinearConv', 'MaxPool', 'AveragePool', 'LpPool', 'GlobalAveragePool',
  'GlobalMaxPool', 'GlobalLpPool', 'MaxRoiPool', 'Resize', 'Upsample', 'LRN', 'InstanceNormalization',
  'SpaceToDepth', 'DepthToSpace',
]);
/** Ops that only rearrange the features: a named split moves past them into the extractor. */
const REARRANGE = new Set(['Flatten', 'Reshape', 'Squeeze', 'Unsqueeze', 'Transpose']);

function isDense(graph: Graph, node: GraphNode): boolean {
  if (node.op === 'Gemm') return true;
  return node.op === 'MatMul' && node.inputs.filter((i) => graph.isConstant(i)).length === 1;
}

function denseInput(graph: Graph, node: GraphNode): string {
  return node.op === 'Gemm' ? node.inputs[0]! : node.inputs.find((i) => !graph.isConstant(i))!;
}

/** Named nodes near the output, for error messages that have to suggest a split. */
function nodeHint(graph: Graph, output: string): string {
  const names = graph
    .ancestors([output])
    .filter((n) => n.proto.name)
    .slice(-10)
    .map((n) => `'${n.proto.name}' (${n.op})`);
  return names.length > 0 ? `; nodes near the output: ${names.join(', ')}` : '';
}

function automaticSplit(graph: Graph, output: string): string {
  const region = new Set<GraphNode>();
  const stack = [output];
  while (stack.length > 0) {
    const node = graph.producer.get(stack.pop()!);
    if (node === undefined || region.has(node) || SPATIAL.has(node.op)) continue;
    region.add(node);
    stack.push(...node.inputs.filter((i) => i && !graph.isConstant(i)));
  }
  const first = graph.nodes.find((n) => region.has(n) && isDense(graph, n));
  if (first === undefined) {
    fail('E_SPLIT', `found no dense layer (Gemm, or MatMul with constant weights) after the last convolution or pooling: name the split with --split${nodeHint(graph, output)}`);
  }
  return denseInput(graph, first);
}

function namedSplit(graph: Graph, output: string, shapes: ShapeInference, name: string): string {
  const node = (graph.proto.node ?? []).find((n: INodeProto) => n.name === name);
  if (name === INPUT_SPLIT) {
    if (node !== undefined) {
      fail('E_SPLIT', `'${INPUT_SPLIT}' names both the model's input and node '${name}': split at that node by its output tensor '${node.output?.[0] ?? ''}'`);
    }
    if (graph.inputs.length !== 1) {
      fail('E_SPLIT', `--split ${INPUT_SPLIT} needs a model with one input, its image; this one has ${graph.inputs.length}`);
    }
    return graph.inputs[0]!.name ?? '';
  }
  const tensor = graph.resolve(node ? (node.output?.[0] ?? '') : name);
  const isInput = graph.inputs.some((i) => i.name === tensor);
  if (!node && !graph.producer.has(tensor) && !isInput) {
    fail('E_SPLIT', `the model has no node or tensor named '${name}'${nodeHint(graph, output)}`);
  }
  const onPath = new Set(graph.ancestors([output]));
  if (tensor !== output && !graph.descendants(tensor).some((n) => onPath.has(n))) {
    fail('E_SPLIT', `'${name}' does not lead to the model's output '${output}': split on the path to it`);
  }
  let current = tensor;
  for (;;) {
    // Shape computations that read the tensor (a dynamic Reshape's) go along with the reshape.
    const readers = (graph.consumers.get(current) ?? []).filter((n) => onPath.has(n) && !n.outputs.every((o) => shapes.values.has(o)));
    const [next] = readers;
    if (readers.length !== 1 || !REARRANGE.has(next!.op) || next!.inputs[0] !== current) return current;
    current = next!.outputs[0]!;
  }
}

/**
 * The head's nodes: those on a path from the split to the output, which must read nothing
 * from the extractor's side except the features (and constants).
 */
function headNodes(graph: Graph, split: string, output: string): GraphNode[] {
  const onPath = new Set(graph.ancestors([output]));
  const nodes = graph.descendants(split).filter((n) => onPath.has(n));
  const inHead = new Set(nodes.flatMap((n) => n.outputs));
  for (const node of nodes) {
    for (const input of [...node.inputs, ...node.implicitInputs]) {
      if (input && input !== split && !inHead.has(input) && !graph.isConstant(input)) {
        const from = graph.producer.get(input);
        if (node.op === 'Add' && node.inputs.every((i) => i && !graph.isConstant(i))) {
          const earlier = from ? `split earlier, where an encrypted layer computes '${input}' (sealed-edge inspect lists the split points), or ` : '';
          fail(
            'E_SPLIT',
            `${describeNode(node)} in the head adds '${input}'${from ? ` from ${describeNode(from)}` : ''}, which is computed before the split at '${split}', to a tensor of the head: ` +
              `the skip of a residual add must be an encrypted layer's output; ${earlier}${splitAfterBlock(graph, node)}`,
          );
        }
        fail(
          'E_SPLIT',
          `${describeNode(node)} in the head reads '${input}'${from ? ` from ${describeNode(from)}` : ''}, which is computed before the split at '${split}': ` +
            'the head may read only the features; split after that tensor',
        );
      }
    }
  }
  return nodes;
}

function shapeProto(shape: Shape | null) {
  if (shape === null) return undefined;
  return { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : d === UNKNOWN ? {} : { dimParam: d })) };
}

/**
 * The original graph truncated to compute `split`, output as `features`, unused
 * initializers dropped. A last node makes `features` where `split` cannot simply be
 * renamed: an Identity at the model's input, a Transpose to NCHW (`nchw`) for a head that
 * reads an NHWC image channel-major.
 */
function buildExtractor(model: ModelProto, graph: Graph, split: string, shape: Shape | null, nchw: boolean): Uint8Array {
  const nodes = graph.ancestors([split]);
  const isInput = !graph.producer.has(split);
  const lastNode = isInput || nchw;
  if (graph.inputs.some((i) => i.name === FEATURES) && (split !== FEATURES || lastNode)) {
    fail('E_UNSUPPORTED', `the model's input is named '${FEATURES}', the name the extractor's output needs: rename the input`);
  }
  const names = new Set(nodes.flatMap((n) => [...n.inputs, ...n.outputs]));
  const rename = new Map<string, string>();
  if (names.has(FEATURES) && (split !== FEATURES || lastNode)) {
    let fresh = `${FEATURES}_0`;
    for (let i = 1; names.has(fresh); i++) fresh = `${FEATURES}_${i}`;
    rename.set(FEATURES, fresh);
  }
  const renamed = (name: string) => rename.get(name) ?? name;
  if (!lastNode) rename.set(split, FEATURES);

  const protos: INodeProto[] = nodes.map((n) => ({ ...n.proto, input: n.inputs.map(renamed), output: n.outputs.map(renamed) }));
  // Subgraphs still name the outputs of removed Identity/Dropout nodes: restore those as Identity.
  const aliases = [...new Set(nodes.flatMap((n) => subgraphInputs(n.proto)))].filter((name) => graph.resolve(name) !== name);
  protos.push(...aliases.map((name) => ({ opType: 'Identity', name: `${name}_identity`, input: [renamed(graph.resolve(name))], output: [name] })));
  if (nchw) {
    const perm = { name: 'perm', type: onnx.AttributeProto.AttributeType.INTS, ints: [0, 3, 1, 2] };
    protos.push({ opType: 'Transpose', name: `${FEATURES}_nchw`, input: [renamed(split)], output: [FEATURES], attribute: [perm] });
  } else if (isInput) {
    protos.push({ opType: 'Identity', name: `${FEATURES}_identity`, input: [split], output: [FEATURES] });
  }

  const used = new Set(protos.flatMap((p) => [...(p.input ?? []), ...subgraphInputs(p)]));
  const produced = new Set(protos.flatMap((p) => p.output ?? []));
  const proto = graph.proto;
  const elemType = graph.valueInfo.get(split)?.type?.tensorType?.elemType ?? DataType.FLOAT;
  const extractor: IModelProto = {
    irVersion: model.irVersion,
    opsetImport: model.opsetImport,
    producerName: model.producerName,
    producerVersion: model.producerVersion,
    domain: model.domain,
    modelVersion: model.modelVersion,
    docString: model.docString,
    metadataProps: model.metadataProps,
    functions: model.functions,
    graph: {
      name: proto.name,
      docString: proto.docString,
      node: protos,
      initializer: (proto.initializer ?? []).filter((t) => used.has(t.name ?? '')),
      sparseInitializer: (proto.sparseInitializer ?? []).filter((t) => used.has(t.values?.name ?? '')),
      input: (proto.input ?? []).filter((i) => !graph.isConstant(i.name ?? '') || used.has(i.name ?? '')),
      output: [{ name: FEATURES, type: { tensorType: { elemType, shape: shapeProto(shape) } } }],
      valueInfo: (proto.valueInfo ?? []).filter((v) => produced.has(renamed(v.name ?? '')) && renamed(v.name ?? '') !== FEATURES).map((v) => ({ ...v, name: renamed(v.name ?? '') })),
    },
  };
  return onnx.ModelProto.encode(extractor).finish();
}

/** A decoded model, indexed for splitting. */
interface Parsed {
  readonly model: ModelProto;
  readonly graph: Graph;
  readonly shapes: ShapeInference;
  readonly output: string;
}

function parse(bytes: Uint8Array, source: string): Parsed {
  const model = decodeModel(bytes, source);
  const graph = new Graph(model.graph!);
  if (graph.outputs.length !== 1) {
    fail('E_UNSUPPORTED', `${source} has ${graph.outputs.length} outputs; a classifier has one, its scores`);
  }
  return { model, graph, shapes: new ShapeInference(graph), output: graph.outputs[0]!.name };
}

interface Split {
  readonly tensor: string;
  readonly head: Head;
  /** The model input the extractor (or, without one, the head) reads. */
  readonly input: IValueInfoProto;
}

function split({ graph, shapes, output }: Parsed, options: ImportOptions): Split {
  const tensor = options.split === undefined ? automaticSplit(graph, output) : namedSplit(graph, output, shapes, options.split);
  const head = buildHead(graph, shapes, tensor, output, headNodes(graph, tensor, output), options);
  const extractorInputs = new Set(graph.ancestors([tensor]).flatMap((n) => n.inputs));
  const inputs = graph.inputs.filter((i) => extractorInputs.has(i.name ?? '') || i.name === tensor);
  if (inputs.length !== 1) {
    fail('E_UNSUPPORTED', `the feature extractor reads ${inputs.length} inputs (${inputs.map((i) => `'${i.name}'`).join(', ')}); a CNN has one, its image`);
  }
  return { tensor, head, input: inputs[0]! };
}

function assemble(bytes: Uint8Array, options: ImportOptions, passThrough: true): ImportedModel;
function assemble(bytes: Uint8Array, options: ImportOptions, passThrough: false): OnnxSplit;
/** The split and its extractor; at the model's input, none, or a pass-through one (`passThrough`). */
function assemble(bytes: Uint8Array, options: ImportOptions, passThrough: boolean): OnnxSplit {
  const parsed = parse(bytes, options.source ?? 'the model');
  const { tensor, head, input } = split(parsed, options);
  const shape = parsed.shapes.shapeOf(tensor) ?? null;
  const common = {
    input: { name: input.name ?? '', shape: declaredShape(input) ?? null },
    head: head.layers,
    splitTensor: tensor,
    dropped: head.dropped.map(describeNode),
  };
  if (!passThrough && !parsed.graph.producer.has(tensor)) {
    return { ...common, extractor: null, features: { name: tensor, shape }, layout: head.layout };
  }
  const nchw = head.layout === 'nhwc';
  const featureShape = nchw && shape !== null ? [0, 3, 1, 2].map((axis) => shape[axis]!) : shape;
  return {
    ...common,
    extractor: buildExtractor(parsed.model, parsed.graph, tensor, featureShape, nchw),
    features: { name: FEATURES, shape: featureShape },
    layout: 'nchw',
  };
}

/** Splits an ONNX model into its plaintext feature extractor, if any, and its encrypted head. */
export function splitOnnx(bytes: Uint8Array, options: ImportOptions = {}): OnnxSplit {
  return assemble(bytes, options, false);
}

/** Splits an ONNX model into its plaintext feature extractor and its encrypted head (see ImportedModel). */
export function importOnnx(bytes: Uint8Array, options: ImportOptions = {}): ImportedModel {
  return assemble(bytes, options, true);
}

/**
 * Every split the model can be imported at, as `--split` takes them: `input`, then the
 * nodes on the path to the output (by name, or by output tensor when unnamed) after which
 * the rest is a head the engine can take (with these approximations).
 */
export function splitPoints(bytes: Uint8Array, options: HeadOptions & { readonly source?: string } = {}): string[] {
  const parsed = parse(bytes, options.source ?? 'the model');
  const onPath = parsed.graph.ancestors([parsed.output]);
  const candidates = [
    INPUT_SPLIT,
    ...onPath.filter((n) => n.op !== 'Constant' && !n.outputs.every((o) => parsed.shapes.values.has(o))).map((n) => n.proto.name || n.outputs[0]!),
  ];
  return candidates.filter((name) => {
    try {
      split(parsed, { ...options, split: name });
      return true;
    } catch (error) {
      if (error instanceof ModelError) return false;
      throw error;
    }
  });
}
