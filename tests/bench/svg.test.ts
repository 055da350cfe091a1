import { describe, expect, it } from 'vitest';
import { barChartSvg, decadeLabel, escapeXml, logRange, valueLabel } from '../../bench/svg';

describe('SVG bar charts', () => {
  it('spans whole decades around the positive values', () => {
    expect(logRange([0.011, 2902.6])).toEqual([-2, 4]);
    expect(logRange([10])).toEqual([0, 1]);
    expect(logRange([1, 1000])).toEqual([-1, 3]);
    expect(logRange([5, 0, -1])).toEqual([0, 1]);
    expect(logRange([])).toEqual([0, 1]);
  });

  it('labels decades and values readably', () => {
    expect([-2, 0, 3, 7, -4].map(decadeLabel)).toEqual(['0.01', '1', '1,000', '1e7', '1e-4']);
    expect([2902.6, 513.43, 0.012345, 19.2].map(valueLabel)).toEqual(['2,903', '513', '0.0123', '19.2']);
    expect(escapeXml(`a<b & "c"`)).toBe('a&lt;b &amp; &quot;c&quot;');
  });

  it('draws one bar per value on a log axis, leaves gaps for missing figures, escapes text', () => {
    const svg = barChartSvg({
      title: 'time <per image>',
      unit: 's',
      series: [
        { name: 'paper', color: '#888888' },
        { name: 'ours', color: '#1f77b4' },
      ],
      groups: [
        { label: 'x²+2x\n128-bit', values: [1000, 1] },
        { label: 'last layer', values: [10, null] },
      ],
    });
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    expect(svg).toContain('time &lt;per image&gt;');
    expect(svg).not.toContain('<per image>');
    const bars = [...svg.matchAll(/<rect x="[\d.]+" y="([\d.]+)" width="16" height="([\d.]+)" fill="([^"]+)"><title>([^<]+)<\/title>/g)];
    expect(bars.map((b) => b[4])).toEqual(['paper, x²+2x 128-bit: 1,000 s', 'ours, x²+2x 128-bit: 1 s', 'paper, last layer: 10 s']);
    // Decades 10^-1 … 10^3 share the plot's 260 px, 65 px each.
    expect(bars.map((b) => Number(b[2]))).toEqual([260, 65, 130]);
    expect(svg).toContain('>x²+2x</text>');
    expect(svg).toContain('>128-bit</text>');
  });
});
