import type { LayerShape } from './circuit';
import { describeConv } from './conv';

const SUPERSCRIPTS = ['', '', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸'];

/** A polynomial activation as it is written by hand: [0, 2, 1] → "x²+2x". */
export function polynomialText(coeffs: readonly number[]): string {
  const terms: string[] = [];
  for (let d = coeffs.length - 1; d >= 0; d--) {
    const c = coeffs[d]!;
    if (c === 0) continue;
    const magnitude = Math.abs(c) === 1 && d > 0 ? '' : String(Number(Math.abs(c).toPrecision(4)));
    const term = `${magnitude}${d > 0 ? 'x' : ''}${SUPERSCRIPTS[d] ?? `^${d}`}`;
    terms.push(terms.length === 0 ? `${c < 0 ? '−' : ''}${term}` : `${c < 0 ? '−' : '+'}${term}`);
  }
  return terms.length === 0 ? '0' : terms.join('');
}

/** Each layer in words: "conv 1×28×28 → 5×13×13 (5×5, stride 2)", "845→100", "x²", "+layer 3". */
export function layerNames(layers: readonly LayerShape[]): string[] {
  return layers.map((l) => (l.kind === 'poly' ? polynomialText(l.coeffs) : l.kind === 'conv' ? describeConv(l) : l.kind === 'add' ? `+layer ${l.from}` : `${l.inputs}→${l.outputs}`));
}

/** "1600→512→x²+2x→10", or "conv 1×28×28 → 5×13×13 (5×5, stride 2)→x²→100→x²→10". */
export function describeLayers(layers: readonly LayerShape[]): string {
  return layers
    .map((l, i) =>
      l.kind === 'poly' ? polynomialText(l.coeffs) : l.kind === 'conv' ? describeConv(l) : l.kind === 'add' ? `+layer ${l.from}` : i === 0 ? `${l.inputs}→${l.outputs}` : String(l.outputs),
    )
    .join('→');
}
