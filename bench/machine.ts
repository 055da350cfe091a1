import { spawn } from 'node:child_process';
import { cpus, platform, release, totalmem } from 'node:os';
import { createRequire } from 'node:module';

/** What the figures were measured on: written at the top of every benchmark's JSON. */
export function machine(): Record<string, unknown> {
  const require = createRequire(import.meta.url);
  const seal = require('node-seal/package.json') as { version: string };
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGB: Math.round(totalmem() / 2 ** 30),
    os: `${platform()} ${release()}`,
    node: process.version,
    nodeSeal: seal.version,
    threads: 1,
    date: new Date().toISOString(),
  };
}

export function summary(samples: number[]): { median: number; min: number; max: number } {
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { median: round(median), min: round(sorted[0]!), max: round(sorted[sorted.length - 1]!) };
}

export function round(v: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/** Prints rows as an aligned text table. */
export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  return cells.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')).join('\n');
}

/**
 * Another CPU-bound program beside a benchmark: a Node child process spinning in a busy
 * loop (no affinity: the OS schedules it like any program). `stop()` kills it and resolves
 * once it has exited; it is also killed if this process exits first.
 */
export function busyLoop(): { pid: number; stop: () => Promise<void> } {
  const child = spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
  const kill = () => child.kill('SIGKILL');
  process.once('exit', kill);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  return {
    pid: child.pid!,
    async stop() {
      process.off('exit', kill);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/**
 * Runs one benchmark step (`script` with `spec` as JSON) in a fresh Node process and
 * returns the JSON it printed; its stderr is passed on when `echo` (progress of long steps).
 */
export function runCase<T>(script: string, spec: object, env: NodeJS.ProcessEnv, echo = false): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify(spec)], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (echo) process.stderr.write(d);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(JSON.parse(stdout) as T);
      else reject(new Error(`benchmark step ${script} ${JSON.stringify(spec)} failed (exit ${code}):\n${stderr}`));
    });
  });
}
