/**
 * An ONNX graph indexed for analysis: nodes in topological order, each tensor's producer
 * and consumers, the constants (initializers, Constant nodes, and layout ops on constants,
 * folded). Identity and inference Dropout are removed on the way in: their consumers read
 * the tensor they pass through.
 */
import { fail } from './errors';
import { foldConstant } from './fold';
import {
  attribute,
  type IGraphProto,
  type INodeProto,
  type ITensorProto,
  type IValueInfoProto,
  DataType,
  floatAttribute,
  int,
} from './proto';

export interface GraphNode {
  readonly proto: INodeProto;
  readonly op: string;
  /** How messages name the node: its name, or the op and first output for unnamed ones. */
  readonly label: string;
  /** Data inputs; '' for an omitted optional input. Aliases of removed nodes are resolved. */
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  /** Outer-scope tensors read by subgraphs (If, Loop, Scan bodies). */
  readonly implicitInputs: readonly string[];
}

export function describeNode(node: GraphNode): string {
  return `node ${node.label} (${node.op})`;
}

/** Ops that pass their first input through unchanged at inference. */
const PASS_THROUGH = new Set(['Identity', 'Dropout']);

/** Every tensor name the node's subgraphs read, as written (aliases unresolved). */
export function subgraphInputs(node: INodeProto): string[] {
  const names: string[] = [];
  const visit = (graph: IGraphProto) => {
    for (const inner of graph.node ?? []) {
      names.push(...(inner.input ?? []));
      subgraphs(inner).forEach(visit);
    }
  };
  subgraphs(node).forEach(visit);
  return names;
}

function subgraphs(node: INodeProto): IGraphProto[] {
  return (node.attribute ?? []).flatMap((a) => [...(a.g ? [a.g] : []), ...(a.graphs ?? [])]);
}

/**
 * The tensor a Constant node defines, from whichever of its numeric value attributes is
 * set; undefined for sparse and string constants, which stay opaque tensors.
 */
function constantTensor(node: INodeProto): ITensorProto | undefined {
  const value = attribute(node, 'value');
  if (value?.t) return value.t;
  if (attribute(node, 'value_float')) return { dims: [], dataType: DataType.FLOAT, floatData: [floatAttribute(node, 'value_float', 0)] };
  const floats = attribute(node, 'value_floats');
  if (floats) return { dims: [floats.floats?.length ?? 0], dataType: DataType.FLOAT, floatData: floats.floats ?? [] };
  const i = attribute(node, 'value_int');
  if (i) return { dims: [], dataType: DataType.INT64, int64Data: [int(i.i)] };
  const ints = attribute(node, 'value_ints');
  if (ints) return { dims: [ints.ints?.length ?? 0], dataType: DataType.INT64, int64Data: ints.ints ?? [] };
  return undefined;
}

export class Graph {
  readonly nodes: GraphNode[];
  readonly producer = new Map<string, GraphNode>();
  readonly consumers = new Map<string, GraphNode[]>();
  readonly constants = new Map<string, ITensorProto>();
  /** The model's data inputs (initializers that older exporters also list as inputs excluded). */
  readonly inputs: IValueInfoProto[];
  /** The graph outputs, with their names resolved through removed pass-through nodes. */
  readonly outputs: { readonly name: string; readonly info: IValueInfoProto }[];
  readonly valueInfo = new Map<string, IValueInfoProto>();
  /** Outputs of removed pass-through nodes → the tensor they pass on. */
  private readonly alias = new Map<string, string>();

  constructor(readonly proto: IGraphProto) {
    for (const init of proto.initializer ?? []) this.constants.set(init.name ?? '', init);
    this.inputs = (proto.input ?? []).filter((i) => !this.constants.has(i.name ?? ''));
    for (const info of [...(proto.valueInfo ?? []), ...(proto.output ?? [])]) this.valueInfo.set(info.name ?? '', info);
    for (const info of this.inputs) this.valueInfo.set(info.name ?? '', info);

    const raw = (proto.node ?? []).map((node, index) => ({
      node,
      label: node.name ? `'${node.name}'` : `#${index} producing '${node.output?.[0] ?? ''}'`,
    }));
    const used = new Set<string>([...(proto.output ?? []).map((o) => o.name ?? '')]);
    for (const { node } of raw) for (const name of [...(node.input ?? []), ...subgraphInputs(node)]) used.add(name);
    // A Dropout whose mask is read is not a pass-through; everything else in PASS_THROUGH is.
    const alias = this.alias;
    const kept = raw.filter(({ node }) => {
      const passes = PASS_THROUGH.has(node.opType ?? '') && !(node.domain ?? '') && !(node.output ?? []).slice(1).some((o) => o && used.has(o));
      if (passes) alias.set(node.output?.[0] ?? '', node.input?.[0] ?? '');
      return !passes;
    });
    const resolve = (name: string) => this.resolve(name);

    const known = new Set<string>([...this.constants.keys(), ...this.inputs.map((i) => i.name ?? '')]);
    const allOutputs = new Set(kept.flatMap(({ node }) => node.output ?? []));
    const nodes = kept.map(({ node, label }): GraphNode => {
      const outputs = node.output ?? [];
      // Subgraphs also read their own tensors: keep only names the outer graph defines.
      const outer = subgraphInputs(node)
        .map(resolve)
        .filter((n) => n !== '' && !outputs.includes(n) && (allOutputs.has(n) || known.has(n)));
      return { proto: node, op: node.opType ?? '', label, inputs: (node.input ?? []).map(resolve), outputs, implicitInputs: [...new Set(outer)] };
    });
    this.nodes = topologicalOrder(nodes, known);
    for (const node of this.nodes) {
      for (const out of node.outputs) if (out) this.producer.set(out, node);
      for (const input of new Set([...node.inputs, ...node.implicitInputs])) {
        if (input) this.consumers.set(input, [...(this.consumers.get(input) ?? []), node]);
      }
      const constant = node.op === 'Constant' && !node.proto.domain ? constantTensor(node.proto) : foldConstant(node, this.constants);
      if (constant !== undefined) this.constants.set(node.outputs[0] ?? '', constant);
    }
    this.outputs = (proto.output ?? []).map((info) => {
      const name = resolve(info.name ?? '');
      if (!this.producer.has(name) && !known.has(name)) fail('E_GRAPH', `graph output '${info.name}' is produced by no node`);
      return { name, info };
    });
  }

  /** The tensor a name stands for once pass-through nodes are removed. */
  resolve(name: string): string {
    let current = name;
    for (let hops = 0; this.alias.has(current); hops++) {
      if (hops > this.alias.size) fail('E_GRAPH', `tensor '${name}' is defined by a cycle of Identity/Dropout nodes`);
      current = this.alias.get(current)!;
    }
    return current;
  }

  isConstant(name: string): boolean {
    return this.constants.has(name);
  }

  /** Every node needed to compute `targets`, in topological order. */
  ancestors(targets: readonly string[]): GraphNode[] {
    const needed = new Set<GraphNode>();
    const stack = [...targets];
    while (stack.length > 0) {
      const node = this.producer.get(stack.pop()!);
      if (node === undefined || needed.has(node)) continue;
      needed.add(node);
      stack.push(...node.inputs, ...node.implicitInputs);
    }
    return this.nodes.filter((n) => needed.has(n));
  }

  /** Every node that reads `source`, directly or not, in topological order. */
  descendants(source: string): GraphNode[] {
    const reached = new Set<GraphNode>();
    const stack = [source];
    while (stack.length > 0) {
      for (const node of this.consumers.get(stack.pop()!) ?? []) {
        if (reached.has(node)) continue;
        reached.add(node);
        stack.push(...node.outputs);
      }
    }
    return this.nodes.filter((n) => reached.has(n));
  }
}

/**
 * ONNX requires nodes in topological order, but not every exporter complies: order them
 * (stably), and refuse inputs nothing provides and cycles.
 */
function topologicalOrder(nodes: GraphNode[], known: ReadonlySet<string>): GraphNode[] {
  const producerOf = new Map<string, GraphNode>();
  for (const node of nodes) for (const out of node.outputs) if (out) producerOf.set(out, node);
  for (const node of nodes) {
    for (const input of [...node.inputs, ...node.implicitInputs]) {
      if (input && !known.has(input) && !producerOf.has(input)) {
        fail('E_GRAPH', `${describeNode(node)} reads tensor '${input}', which no node, graph input or initializer provides`);
      }
    }
  }
  const order: GraphNode[] = [];
  const state = new Map<GraphNode, 'visiting' | 'done'>();
  const visit = (node: GraphNode) => {
    const s = state.get(node);
    if (s === 'done') return;
    if (s === 'visiting') fail('E_GRAPH', `${describeNode(node)} is part of a cycle`);
    state.set(node, 'visiting');
    for (const input of [...node.inputs, ...node.implicitInputs]) {
      const before = producerOf.get(input);
      if (before && !known.has(input)) visit(before);
    }
    state.set(node, 'done');
    order.push(node);
  };
  nodes.forEach(visit);
  return order;
}
