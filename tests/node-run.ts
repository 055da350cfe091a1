import { spawn } from 'node:child_process';

export interface NodeRun {
  /** The exit code; null when the process was killed (its time ran out). */
  readonly code: number | null;
  readonly out: string;
  readonly err: string;
}

/**
 * Runs `node ...args` in a child process and resolves with its exit code and output.
 * Asynchronous on purpose: a test worker blocked in spawnSync for more than a minute (a
 * protect on a busy machine) cannot answer Vitest's RPC, which then reports an unhandled
 * "Timeout calling onTaskUpdate".
 */
export function runNode(args: readonly string[], options: { env?: NodeJS.ProcessEnv; timeout?: number } = {}): Promise<NodeRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env: options.env ?? process.env });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeout ?? 120_000);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

/** `sealed-edge ...args` (bin/sealed-edge.mjs), as runNode. */
export function runCli(args: readonly string[], options: { env?: NodeJS.ProcessEnv; timeout?: number } = {}): Promise<NodeRun> {
  return runNode(['bin/sealed-edge.mjs', ...args], options);
}
