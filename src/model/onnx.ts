/**
 * Import of a trained ONNX CNN: split it into the plaintext feature extractor (a new ONNX
 * model for onnxruntime) and the classifier head (the engine's layer list).
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
import { fail } from './errors';
import { describeNode, Graph, type GraphNode, subgraphInputs } from './graph';
import { buildHead, type HeadOptions } from './head';
import { DataType, decodeModel, type IModelProto, type INodeProto, type ModelProto, onnx } from './proto';
import { declaredShape, type Shape, ShapeInference, UNKNOWN } from './shapes';

/** The name of the extractor's single output. */
export const FEATURES = 'features';

export interface ImportOptions extends HeadOptions {
  /**
   * Where to split: a node name (the head starts after it) or a tensor name. Reshapes
   * right after it go to the extractor. Automatic when absent: where the flattened
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

export interface ImportedModel {
  /** The feature extractor as an ONNX model: the original input, one output named `features`. */
  readonly extractor: Uint8Array;
  readonly input: TensorSpec;
  /** The extractor's output, which the head reads flattened row-major. */
  readonly features: TensorSpec;
  /** The classifier head for the engine: dense weights row-major outputs × inputs. */
  readonly head: Layer[];
  /** The tensor of the original graph that became `features`. */
  readonly splitTensor: string;
  /** Nodes of the original graph left out of both parts (a trailing Softmax), described. */
  readonly dropped: string[];
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

/** The original graph truncated to compute `split`, output as `features`, unused initializers dropped. */
function buildExtractor(model: ModelProto, graph: Graph, split: string, shape: Shape | null): Uint8Array {
  const nodes = graph.ancestors([split]);
  if (graph.inputs.some((i) => i.name === FEATURES) && split !== FEATURES) {
    fail('E_UNSUPPORTED', `the model's input is named '${FEATURES}', the name the extractor's output needs: rename the input`);
  }
  const names = new Set(nodes.flatMap((n) => [...n.inputs, ...n.outputs]));
  const rename = new Map<string, string>();
  if (split !== FEATURES && names.has(FEATURES)) {
    let fresh = `${FEATURES}_0`;
    for (let i = 1; names.has(fresh); i++) fresh = `${FEATURES}_${i}`;
    rename.set(FEATURES, fresh);
  }
  const renamed = (name: string) => rename.get(name) ?? name;
  const isInput = !graph.producer.has(split);
  if (!isInput) rename.set(split, FEATURES);

  const protos: INodeProto[] = nodes.map((n) => ({ ...n.proto, input: n.inputs.map(renamed), output: n.outputs.map(renamed) }));
  // Subgraphs still name the outputs of removed Identity/Dropout nodes: restore those as Identity.
  const aliases = [...new Set(nodes.flatMap((n) => subgraphInputs(n.proto)))].filter((name) => graph.resolve(name) !== name);
  protos.push(...aliases.map((name) => ({ opType: 'Identity', name: `${name}_identity`, input: [renamed(graph.resolve(name))], output: [name] })));
  if (isInput) protos.push({ opType: 'Identity', name: `${FEATURES}_identity`, input: [split], output: [FEATURES] });

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

/** Splits an ONNX model into its plaintext feature extractor and its classifier head. */
export function importOnnx(bytes: Uint8Array, options: ImportOptions = {}): ImportedModel {
  const source = options.source ?? 'the model';
  const model = decodeModel(bytes, source);
  const graph = new Graph(model.graph!);
  if (graph.outputs.length !== 1) {
    fail('E_UNSUPPORTED', `${source} has ${graph.outputs.length} outputs; a classifier has one, its scores`);
  }
  const output = graph.outputs[0]!.name;
  const shapes = new ShapeInference(graph);
  const split = options.split === undefined ? automaticSplit(graph, output) : namedSplit(graph, output, shapes, options.split);
  const head = buildHead(graph, shapes, split, output, headNodes(graph, split, output), options);

  const extractorInputs = new Set(graph.ancestors([split]).flatMap((n) => n.inputs));
  const inputs = graph.inputs.filter((i) => extractorInputs.has(i.name ?? '') || i.name === split);
  if (inputs.length !== 1) {
    fail('E_UNSUPPORTED', `the feature extractor reads ${inputs.length} inputs (${inputs.map((i) => `'${i.name}'`).join(', ')}); a CNN has one, its image`);
  }
  const featureShape = shapes.shapeOf(split) ?? null;
  return {
    extractor: buildExtractor(model, graph, split, featureShape),
    input: { name: inputs[0]!.name ?? '', shape: declaredShape(inputs[0]) ?? null },
    features: { name: FEATURES, shape: featureShape },
    head: head.layers,
    splitTensor: split,
    dropped: head.dropped.map(describeNode),
  };
}
