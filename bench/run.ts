import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { backendTable, benchBackend } from './backend';
import { benchBrowser, browserTable } from './browser';
import { benchConv, CONV_MODELS, convTable } from './conv';
import { benchHe, heTable } from './he';
import { benchPaper } from './paper';
import { paperTable } from './paper-report';

const SUITES = {
  he: { run: (quick: boolean) => benchHe({ quick }), table: heTable },
  backend: { run: (quick: boolean) => benchBackend({ quick }), table: backendTable },
  browser: { run: (quick: boolean) => benchBrowser({ quick }), table: browserTable },
  paper: { run: (quick: boolean) => benchPaper({ quick }), table: paperTable },
  conv: { run: (quick: boolean, model?: string) => benchConv({ quick, model }), table: convTable },
} as const;

const usage = `usage: npm run bench -- <suite> [--quick] [--out FILE] [--model NAME (conv only: one model's rows)]
suites: ${Object.keys(SUITES).join(', ')}`;

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { quick: { type: 'boolean', default: false }, out: { type: 'string' }, model: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n${usage}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  const name = positionals[0];
  if (positionals.length !== 1 || !(name! in SUITES)) {
    process.stderr.write(`${name === undefined ? 'no suite given' : `unknown suite '${positionals.join(' ')}'`}\n${usage}\n`);
    return 2;
  }
  if (values.model !== undefined && name !== 'conv') {
    process.stderr.write(`--model chooses rows of the conv suite only, not of '${name}'\n${usage}\n`);
    return 2;
  }
  if (values.model !== undefined && !CONV_MODELS.includes(values.model)) {
    process.stderr.write(`no conv benchmark rows for model '${values.model}': choose one of ${CONV_MODELS.join(', ')}\n`);
    return 2;
  }
  const suite = SUITES[name as keyof typeof SUITES];
  const out = values.out ?? `bench/results/${name}.json`;
  const report = await suite.run(values.quick!, values.model);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify({ suite: name, quick: values.quick, ...report }, null, 2)}\n`);
  process.stdout.write(`${suite.table(report as { results: Record<string, unknown>[] })}\n\nwrote ${out}\n`);
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
