/**
 * The backend's load and fault benchmark, run tiny so that its code path cannot rot (the
 * benchmark itself is not run in tests): two devices for a few seconds against one
 * instance on SQLite, and against two instances on PostgreSQL with one killed and
 * restarted; its command-line options; serve --claim-timeout, which the kill run needs.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { backendRuns, backendTable, benchBackend, DEFAULT_SESSION } from '../../bench/backend';
import { parseClaimTimeout } from '../../src/cli/owner';
import { POSTGRES_URL } from '../backend/store-engines';

const FIELDS = ['store', 'instances', 'decryptWorkers', 'devices', 'seconds', 'acknowledged', 'stored', 'decrypted', 'acceptedPerS', 'p50Ms', 'p99Ms', 'lost', 'duplicated', 'killedInstance'];

describe('npm run bench -- backend, tiny', () => {
  it('one instance on SQLite: every acknowledged result stored once and decrypted; the report has exactly the issue’s fields', async () => {
    const report = await benchBackend({ runs: [{ store: 'sqlite', instances: 1, devices: 2, seconds: 2, kill: false, decryptWorkers: 1 }], head: 'small', log: () => undefined });
    expect(Object.keys(report)).toEqual(['machine', 'runs']);
    expect(report.machine).toMatchObject({ cores: expect.any(Number), node: process.version });
    const [run] = report.runs;
    expect(Object.keys(run!)).toEqual(FIELDS);
    expect(run).toMatchObject({ store: 'sqlite', instances: 1, decryptWorkers: 1, devices: 2, seconds: 2, lost: 0, duplicated: 0, killedInstance: null });
    expect(run!.acknowledged).toBeGreaterThan(0);
    expect(run!.stored).toBe(run!.acknowledged);
    expect(run!.decrypted).toBe(run!.stored);
    expect(run!.acceptedPerS).toBeGreaterThan(0);
    expect(run!.p99Ms).toBeGreaterThanOrEqual(run!.p50Ms);
    const printed = backendTable(report);
    expect(printed.split('\n')[0]).toMatch(/^store +instances +workers +devices +s +acknowledged +stored +decrypted +accepted\/s +p50 ms +p99 ms +lost +duplicated +killed$/);
    expect(printed.split('\n')[1]).toMatch(/^sqlite +1 +1 +2 +2 /);
  }, 180_000);

  it.runIf(POSTGRES_URL !== undefined)('two instances on PostgreSQL, one SIGKILLed and restarted mid-run: nothing lost, nothing twice, all decrypted', async () => {
    const report = await benchBackend({
      runs: [{ store: 'postgres', instances: 2, devices: 2, seconds: 4, kill: true, decryptWorkers: 1 }],
      postgresUrl: POSTGRES_URL,
      head: 'small',
      log: () => undefined,
    });
    const [run] = report.runs;
    expect(run).toMatchObject({ store: 'postgres', instances: 2, lost: 0, duplicated: 0, killedInstance: 0 });
    expect(run!.acknowledged).toBeGreaterThan(0);
    // A frame the killed instance stored but never answered is stored without a receipt: never the reverse.
    expect(run!.stored).toBeGreaterThanOrEqual(run!.acknowledged);
    expect(run!.decrypted).toBe(run!.stored);
  }, 240_000);
});

describe('the backend benchmark’s options', () => {
  it('runs the three-run session without run options, one run with them, and refuses bad values', () => {
    expect(backendRuns({}, false)).toEqual(DEFAULT_SESSION.map((run) => ({ ...run, decryptWorkers: undefined })));
    expect(backendRuns({}, true).map((run) => run.seconds)).toEqual([10, 10, 10]);
    expect(backendRuns({ store: 'postgres', instances: '3', devices: '50', seconds: '20', kill: true, 'decrypt-workers': '2' }, false)).toEqual([
      { store: 'postgres', instances: 3, devices: 50, seconds: 20, kill: true, decryptWorkers: 2 },
    ]);
    expect(backendRuns({ kill: true }, false)).toEqual([{ store: 'sqlite', instances: 1, devices: 20, seconds: 30, kill: true, decryptWorkers: undefined }]);
    expect(() => backendRuns({ store: 'mysql' }, false)).toThrow(/--store must be sqlite or postgres, got mysql/);
    expect(() => backendRuns({ instances: '0' }, false)).toThrow(/--instances must be an integer from 1 to 16, got 0/);
    expect(() => backendRuns({ devices: 'ten' }, false)).toThrow(/--devices must be an integer, got 'ten'/);
    expect(() => backendRuns({ seconds: '1.5' }, false)).toThrow(/--seconds must be an integer/);
    expect(() => backendRuns({ 'decrypt-workers': '300' }, false)).toThrow(/--decrypt-workers must be an integer from 0 to 256/);
  });

  it('the bench command refuses a bad backend option, or a backend option given to another suite, with exit 2 before running anything', () => {
    const run = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'bench/run.ts', ...args], { encoding: 'utf8', timeout: 60_000 });
    const bad = run(['backend', '--instances', '0']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/^--instances must be an integer from 1 to 16, got 0\nusage:/);
    const elsewhere = run(['he', '--kill']);
    expect(elsewhere.status).toBe(2);
    expect(elsewhere.stderr).toMatch(/^--kill is an option of the backend suite only, not of 'he'/);
  }, 120_000);

  it('serve --claim-timeout takes seconds from 0.1 to 86400', () => {
    expect(parseClaimTimeout(undefined)).toBeUndefined();
    expect(parseClaimTimeout('5')).toBe(5000);
    expect(parseClaimTimeout('0.25')).toBe(250);
    for (const bad of ['0', '-1', 'five', '1e3', '86401', '']) expect(() => parseClaimTimeout(bad), bad).toThrow(/--claim-timeout must be seconds from 0.1 to 86400, got '/);
  });
});
