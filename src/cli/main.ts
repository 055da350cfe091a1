import { parseArgs } from 'node:util';
import { HeError } from '../he';
import { approxCommand } from './approx';
import { runDemo } from './demo';
import { UsageError } from './errors';

const USAGE = `usage: sealed-edge <command> [options]

commands:
  demo [--head mnist|small|last] [--security 128|192|256] [--inputs N]
      Encrypts a classifier head with the owner's secret key, evaluates it on encrypted
      inputs as a device would, decrypts the scores as the backend would, and prints them
      next to the float model's.
  approx --fn relu|sigmoid|tanh --method taylor|chebyshev|least-squares|cryptodl --degree 2..8
         --interval -l,l [--json]
      Fits a polynomial of the given degree to an activation on [-l, l] and prints its
      power-basis coefficients with the max and RMS errors.
  help
      Shows this text.`;

type Command = (args: string[]) => Promise<number>;

const COMMANDS: Record<string, Command> = {
  approx: approxCommand,
  demo: async (args) => {
    const { values } = parseArgs({
      args,
      options: {
        head: { type: 'string', default: 'mnist' },
        security: { type: 'string', default: '128' },
        inputs: { type: 'string', default: '3' },
      },
    });
    const security = Number(values.security);
    if (security !== 128 && security !== 192 && security !== 256) {
      throw new UsageError(`--security must be 128, 192 or 256, got '${values.security}'`);
    }
    const inputs = Number(values.inputs);
    if (!Number.isInteger(inputs) || inputs < 1 || inputs > 1000) {
      throw new UsageError(`--inputs must be an integer from 1 to 1000, got '${values.inputs}'`);
    }
    await runDemo({ head: values.head!, security, inputs }, (line) => process.stdout.write(`${line}\n`));
    return 0;
  },
  help: async () => {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  },
};

/** Runs one command; returns the exit code (2 for usage errors, 1 for refused input). */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const command = name === undefined ? undefined : COMMANDS[name];
  if (command === undefined) {
    process.stderr.write(`${name === undefined ? 'no command given' : `unknown command '${name}'`}\n\n${USAGE}\n`);
    return 2;
  }
  try {
    return await command(rest);
  } catch (error) {
    if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`sealed-edge ${name}: ${(error as Error).message}\n`);
      return 2;
    }
    if (error instanceof HeError) {
      process.stderr.write(`sealed-edge ${name}: ${error.code}: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}
