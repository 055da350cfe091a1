/**
 * Hand-written SVG bar charts for the benchmark report: grouped bars on a logarithmic
 * axis (the figures side by side span several orders of magnitude). No dependencies.
 */

export interface Series {
  readonly name: string;
  readonly color: string;
}

export interface BarGroup {
  readonly label: string;
  /** One value per series; null leaves a gap (no figure). */
  readonly values: readonly (number | null)[];
}

export interface BarChart {
  readonly title: string;
  /** Unit of the values, shown on the axis, e.g. "s" or "MB". */
  readonly unit: string;
  readonly series: readonly Series[];
  readonly groups: readonly BarGroup[];
}

const BAR = 18;
const GROUP_GAP = 22;
const LEFT = 78;
const RIGHT = 16;
/** Room above the plot for the title, the legend and the tallest bars' value labels. */
const TOP = 96;
const PLOT_HEIGHT = 260;
const BOTTOM = 64;
/** Approximate advance of a character of the 11 px labels and of the 14 px bold title. */
const CHAR_WIDTH = 6.5;
const TITLE_CHAR_WIDTH = 8.5;

const legendEntryWidth = (s: Series) => 24 + s.name.length * CHAR_WIDTH;

export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/**
 * Decades [lo, hi] (powers of ten) that enclose every positive value, the smallest strictly
 * above lo so that its bar has a height.
 */
export function logRange(values: readonly number[]): [number, number] {
  const positive = values.filter((v) => v > 0 && Number.isFinite(v));
  if (positive.length === 0) return [0, 1];
  const lo = Math.ceil(Math.log10(Math.min(...positive))) - 1;
  return [lo, Math.max(lo + 1, Math.ceil(Math.log10(Math.max(...positive))))];
}

/** An axis label for 10^e: 0.001 … 1,000,000, then 1e7. */
export function decadeLabel(e: number): string {
  if (e < -3 || e > 6) return `1e${e}`;
  return e < 0 ? (10 ** e).toFixed(-e) : (10 ** e).toLocaleString('en-US');
}

/** A short label for a bar's value: three significant digits, thousands separated. */
export function valueLabel(v: number): string {
  if (v >= 1000) return Math.round(v).toLocaleString('en-US');
  return String(Number(v.toPrecision(3)));
}

export function barChartSvg(chart: BarChart): string {
  const bars = chart.series.length * BAR;
  const longestLabel = Math.max(...chart.groups.flatMap((g) => g.label.split('\n').map((l) => l.length)));
  const perGroup = Math.max(bars, longestLabel * CHAR_WIDTH);
  const legendWidth = chart.series.reduce((w, s) => w + legendEntryWidth(s), 0);
  const width = Math.ceil(
    Math.max(LEFT + chart.groups.length * (perGroup + GROUP_GAP), LEFT + chart.title.length * TITLE_CHAR_WIDTH, LEFT + legendWidth) + RIGHT,
  );
  const height = TOP + PLOT_HEIGHT + BOTTOM;
  const [lo, hi] = logRange(chart.groups.flatMap((g) => g.values.filter((v): v is number => v !== null)));
  const y = (v: number) => TOP + PLOT_HEIGHT - ((Math.log10(v) - lo) / (hi - lo)) * PLOT_HEIGHT;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${LEFT}" y="18" font-size="14" font-weight="bold">${escapeXml(chart.title)}</text>`,
  ];
  let legendX = LEFT;
  for (const s of chart.series) {
    out.push(`<rect x="${legendX}" y="28" width="12" height="12" fill="${s.color}"/>`);
    out.push(`<text x="${legendX + 16}" y="38">${escapeXml(s.name)}</text>`);
    legendX += legendEntryWidth(s);
  }
  for (let e = lo; e <= hi; e++) {
    const gy = y(10 ** e).toFixed(1);
    out.push(`<line x1="${LEFT}" y1="${gy}" x2="${width - RIGHT}" y2="${gy}" stroke="#dddddd"/>`);
    out.push(`<text x="${LEFT - 6}" y="${gy}" dy="4" text-anchor="end">${escapeXml(decadeLabel(e))}</text>`);
  }
  out.push(
    `<text transform="translate(14 ${TOP + PLOT_HEIGHT / 2}) rotate(-90)" text-anchor="middle">${escapeXml(`${chart.unit} (log scale)`)}</text>`,
    `<line x1="${LEFT}" y1="${TOP + PLOT_HEIGHT}" x2="${width - RIGHT}" y2="${TOP + PLOT_HEIGHT}" stroke="#333333"/>`,
  );
  chart.groups.forEach((group, g) => {
    const x0 = LEFT + GROUP_GAP / 2 + g * (perGroup + GROUP_GAP);
    const firstBar = x0 + (perGroup - bars) / 2;
    group.values.forEach((v, k) => {
      if (v === null || !(v > 0)) return;
      const x = firstBar + k * BAR;
      const top = y(v);
      const title = `${chart.series[k]!.name}, ${group.label.replace(/\n/g, ' ')}: ${valueLabel(v)} ${chart.unit}`;
      out.push(
        `<rect x="${x + 1}" y="${top.toFixed(1)}" width="${BAR - 2}" height="${(TOP + PLOT_HEIGHT - top).toFixed(1)}" fill="${chart.series[k]!.color}"><title>${escapeXml(title)}</title></rect>`,
        `<text transform="translate(${x + BAR / 2 + 3} ${(top - 3).toFixed(1)}) rotate(-90)" font-size="9">${escapeXml(valueLabel(v))}</text>`,
      );
    });
    const lines = group.label.split('\n');
    lines.forEach((line, i) => {
      out.push(`<text x="${x0 + perGroup / 2}" y="${TOP + PLOT_HEIGHT + 16 + i * 13}" text-anchor="middle">${escapeXml(line)}</text>`);
    });
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
