import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { backendRuns, backendTable, benchBackend, type BackendRunSpec } from './backend';
import { benchBrowser, browserModel, browserResultsFile, browserTable } from './browser';
import { benchConv, CONV_MODELS, convTable } from './conv';
import { benchHe, heTable } from './he';
import { benchPaper } from './paper';
import { paperTable } from './paper-report';

/** What a suite is given: --quick, --model (conv: its rows; browser: the model streamed), --input (conv), the backend's runs. */
interface SuiteArgs {
  quick: boolean;
  model?: string;
  input?: 'encrypted' | 'plain';
  backendRuns: BackendRunSpec[];
}

/* eslint-disable @typescript-eslint/no-explicit-any */
const SUITES: Record<string, { run: (a: SuiteArgs) => Promise<any>; table: (report: any) => string; bare?: boolean }> = {
  he: { run: (a) => benchHe({ quick: a.quick }), table: heTable },
  // The backend's JSON is { machine, runs } and nothing else (issue 14's format).
  backend: { run: (a) => benchBackend({ runs: a.backendRuns, postgresUrl: process.env.SEALED_EDGE_BENCH_DATABASE_URL || undefined }), table: backendTable, bare: true },
  browser: { run: (a) => benchBrowser({ quick: a.quick, named: a.model }), table: browserTable },
  paper: { run: (a) => benchPaper({ quick: a.quick }), table: paperTable },
  conv: { run: (a) => benchConv({ quick: a.quick, model: a.model, input: a.input }), table: convTable },
};

/** Options of the backend suite only. */
const BACKEND_OPTIONS = ['store', 'instances', 'devices', 'seconds', 'kill', 'decrypt-workers'] as const;

const usage = `usage: npm run bench -- <suite> [--quick] [--out FILE] [--model NAME (conv: one model's rows)]
       npm run bench -- conv [--quick] [--out FILE] [--model NAME] [--input encrypted|plain (the rows of that input only)]
       npm run bench -- browser [--quick] [--out FILE] [--model mnist|colour]
         (colour: models/colour-poly-square.onnx on its 200 test PNGs → bench/results/browser-colour.json)
       npm run bench -- backend [--store sqlite|postgres] [--instances N] [--devices D] [--seconds S] [--kill] [--decrypt-workers N]
         (no run options: the session of three runs, SQLite 1 instance, PostgreSQL 1, PostgreSQL 2 with --kill;
          PostgreSQL runs use SEALED_EDGE_BENCH_DATABASE_URL's server, else a throwaway durable cluster)
suites: ${Object.keys(SUITES).join(', ')}`;

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        quick: { type: 'boolean', default: false },
        out: { type: 'string' },
        model: { type: 'string' },
        input: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        store: { type: 'string' },
        instances: { type: 'string' },
        devices: { type: 'string' },
        seconds: { type: 'string' },
        kill: { type: 'boolean' },
        'decrypt-workers': { type: 'string' },
      },
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
  if (values.model !== undefined && name !== 'conv' && name !== 'browser') {
    process.stderr.write(`--model is an option of the conv and browser suites only, not of '${name}'\n${usage}\n`);
    return 2;
  }
  if (values.model !== undefined && name === 'conv' && !CONV_MODELS.includes(values.model)) {
    process.stderr.write(`no conv benchmark rows for model '${values.model}': choose one of ${CONV_MODELS.join(', ')}\n`);
    return 2;
  }
  if (values.input !== undefined && name !== 'conv') {
    process.stderr.write(`--input is an option of the conv suite only, not of '${name}'\n${usage}\n`);
    return 2;
  }
  if (values.input !== undefined && values.input !== 'encrypted' && values.input !== 'plain') {
    process.stderr.write(`--input must be 'encrypted' or 'plain', got '${values.input}'\n${usage}\n`);
    return 2;
  }
  let out = values.out ?? `bench/results/${name}.json`;
  if (name === 'browser') {
    let model;
    try {
      model = browserModel(values.model ?? 'mnist');
    } catch (error) {
      process.stderr.write(`${(error as Error).message}\n${usage}\n`);
      return 2;
    }
    out = values.out ?? browserResultsFile(model);
  }
  const given = BACKEND_OPTIONS.filter((option) => values[option] !== undefined);
  if (given.length > 0 && name !== 'backend') {
    process.stderr.write(`--${given[0]} is an option of the backend suite only, not of '${name}'\n${usage}\n`);
    return 2;
  }
  let runs: BackendRunSpec[] = [];
  if (name === 'backend') {
    try {
      runs = backendRuns(values, values.quick!);
    } catch (error) {
      process.stderr.write(`${(error as Error).message}\n${usage}\n`);
      return 2;
    }
  }
  const suite = SUITES[name!]!;
  const report = await suite.run({ quick: values.quick!, model: values.model, input: values.input as SuiteArgs['input'], backendRuns: runs });
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(suite.bare ? report : { suite: name, quick: values.quick, ...report }, null, 2)}\n`);
  process.stdout.write(`${suite.table(report)}\n\nwrote ${out}\n`);
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
