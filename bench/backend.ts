import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { defaultDecryptWorkers } from '../src/backend/decrypt-pool';
import type { Layer } from '../src/he';
import { loadBundleClassifier, NodeDevice, readBundle } from '../src/node/device-client';
import { nodeSeal } from '../src/node/seal';
import { type ServeProcess, startServeProcess } from '../src/node/serve-process';
import { addDevice, openWorkspace, signingKey } from '../src/protect/workspace';
import { openStore } from '../src/store/open';
import type { KeyPairRecord, ModelVersion, SigningKeyRecord } from '../src/store/types';
import type { VerifiedBundle } from '../src/model/bundle';
import { protectHead } from '../tests/backend/helpers';
import { makeHead, makeInputs } from '../tests/he/helpers';
import { machine, round, table } from './machine';

/** One run of the load and fault test: which store, how many instances and devices, how long, and whether an instance is killed. */
export interface BackendRunSpec {
  store: 'sqlite' | 'postgres';
  instances: number;
  devices: number;
  seconds: number;
  kill: boolean;
  /** Decryption threads per instance (serve --decrypt-workers); default one per core but one. */
  decryptWorkers?: number;
}

/** What a run measured; the database is read afterwards for `stored`, `decrypted`, `lost` and `duplicated`. */
export interface BackendRun {
  store: 'sqlite' | 'postgres';
  instances: number;
  decryptWorkers: number;
  devices: number;
  seconds: number;
  /** Results the devices got a receipt for (201, or 200 for a retry already stored). */
  acknowledged: number;
  /** Rows in the database afterwards. */
  stored: number;
  /** Of those, decrypted (once: a result is written once). */
  decrypted: number;
  acceptedPerS: number;
  /** From a frame's first attempt to its receipt, retries on other instances included. */
  p50Ms: number;
  p99Ms: number;
  /** Acknowledged results not in the database (or under another id than the receipt's). */
  lost: number;
  /** Rows beyond one per frame (same device and idempotency key, or the same body). */
  duplicated: number;
  /** Index of the instance SIGKILLed mid-run and restarted, or null. */
  killedInstance: number | null;
}

export interface BackendBenchOptions {
  runs: BackendRunSpec[];
  /**
   * A PostgreSQL server URL whose user may CREATE DATABASE: each PostgreSQL run gets a
   * fresh database there, dropped afterwards. Without it, a throwaway durable cluster
   * (scripts/test-postgres.sh, fsync on) is started for the PostgreSQL runs and stopped.
   */
  postgresUrl?: string;
  /** The encrypted head: 'mnist' (1600→512→10, the real one) or 'small' (256→64→10, for the bench's own test). */
  head?: 'mnist' | 'small';
  /** Progress lines (stderr by default). */
  log?: (line: string) => void;
}

const SCRIPT = fileURLToPath(new URL('../scripts/test-postgres.sh', import.meta.url));
const MODEL_ID = 'bench-head';
/** A device waits this long for an answer before it tries the next instance. */
const REQUEST_TIMEOUT_MS = 10_000;
/** After the clock stops, a device keeps retrying its last frame this long at most. */
const RETRY_GRACE_MS = 60_000;
/** Claims of a killed instance are taken again after this (serve --claim-timeout). */
const CLAIM_TIMEOUT_S = 5;
const DRAIN_TIMEOUT_MS = 180_000;
export const DEFAULT_SESSION: readonly BackendRunSpec[] = [
  { store: 'sqlite', instances: 1, devices: 20, seconds: 30, kill: false },
  { store: 'postgres', instances: 1, devices: 20, seconds: 30, kill: false },
  { store: 'postgres', instances: 2, devices: 20, seconds: 30, kill: true },
];

/**
 * The runs the command line asks for: the session of DEFAULT_SESSION when no run option
 * is given (10 s each with --quick), else one run (defaults: sqlite, 1 instance, 20
 * devices, 30 s). A RangeError says what is wrong with an option.
 */
export function backendRuns(
  values: { store?: string; instances?: string; devices?: string; seconds?: string; kill?: boolean; 'decrypt-workers'?: string },
  quick: boolean,
): BackendRunSpec[] {
  const seconds = quick ? 10 : 30;
  const int = (raw: string | undefined, name: string, fallback: number): number => {
    if (raw === undefined) return fallback;
    if (!/^\d+$/.test(raw)) throw new RangeError(`--${name} must be an integer, got '${raw}'`);
    return Number(raw);
  };
  const decryptWorkers = values['decrypt-workers'] === undefined ? undefined : int(values['decrypt-workers'], 'decrypt-workers', 0);
  if ([values.store, values.instances, values.devices, values.seconds, values.kill].every((v) => v === undefined)) {
    return DEFAULT_SESSION.map((run) => checkRunSpec({ ...run, seconds, decryptWorkers }));
  }
  return [
    checkRunSpec({
      store: (values.store ?? 'sqlite') as BackendRunSpec['store'],
      instances: int(values.instances, 'instances', 1),
      devices: int(values.devices, 'devices', 20),
      seconds: int(values.seconds, 'seconds', seconds),
      kill: values.kill ?? false,
      decryptWorkers,
    }),
  ];
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

/** The checks of a run spec, with the reason; the CLI and benchBackend both use them. */
export function checkRunSpec(spec: BackendRunSpec): BackendRunSpec {
  const int = (v: unknown, name: string, min: number, max: number) => {
    if (!Number.isInteger(v) || (v as number) < min || (v as number) > max) throw new RangeError(`--${name} must be an integer from ${min} to ${max}, got ${String(v)}`);
  };
  if (spec.store !== 'sqlite' && spec.store !== 'postgres') throw new RangeError(`--store must be sqlite or postgres, got ${String(spec.store)}`);
  int(spec.instances, 'instances', 1, 16);
  int(spec.devices, 'devices', 1, 1000);
  int(spec.seconds, 'seconds', 1, 3600);
  if (spec.decryptWorkers !== undefined) int(spec.decryptWorkers, 'decrypt-workers', 0, 256);
  if (typeof spec.kill !== 'boolean') throw new RangeError('kill must be true or false');
  return spec;
}

/**
 * The owner's backend under load and under a crash: `sealed-edge serve` instances (each its
 * own process) on one store, SQLite or PostgreSQL, and simulated devices on loopback
 * posting real encrypted results of the MNIST head, made before the clock starts, to the
 * instances in turn (device d's k-th frame to instance (d + k) mod N), each with a fresh
 * idempotency key and its ECDSA signature. A device that gets no answer (or a 5xx) tries
 * the next instance with the same body and key. With `kill`, instance 0 is SIGKILLed
 * half-way and restarted on its port; its claims are taken again after 5 s. When the clock
 * stops, the devices finish their frame, decryption is let finish, the instances stop,
 * and the database is read: every acknowledged result must be there once and decrypted.
 */
export async function benchBackend(options: BackendBenchOptions): Promise<{ machine: Record<string, unknown>; runs: BackendRun[] }> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const specs = options.runs.map(checkRunSpec);
  const root = mkdtempSync(join(tmpdir(), 'sealed-edge-bench-backend-'));
  const env: NodeJS.ProcessEnv = { ...process.env, SEALED_EDGE_KEK: 'ef'.repeat(32), SEALED_EDGE_OPERATOR_TOKEN: 'benchmark-operator-token' };
  delete env.SEALED_EDGE_DATABASE_URL;
  let cluster: { url: string; dir: string } | null = null;
  try {
    // The model, its keys and the devices' ciphertexts, once, before any clock.
    const template = await openWorkspace(join(root, 'template'), env);
    const head: Layer[] = options.head === 'small' ? makeHead([256, 64, 10], 'realistic', 404) : makeHead([1600, 512, 10], 'realistic', 1600);
    const inputs = (head[0] as { inputs: number }).inputs;
    log(`backend bench: protecting the ${inputs}-input head…`);
    await protectHead(template, head, MODEL_ID, root);
    const owner = await signingKey(template);
    const version = (await template.store.latestModelVersion(MODEL_ID))!;
    const keyPair = (await template.store.getKeyPair(version.keyId))!;
    const signing = (await template.store.activeSigningKey())!;
    await template.close();
    const bundle = await readBundle(join(root, 'public', 'models', MODEL_ID, 'v1'), owner.publicKey);
    const classifier = loadBundleClassifier(await nodeSeal(), bundle);
    const ciphertexts = makeInputs(inputs, 4, 'realistic', 2).map((x) => classifier.evaluate(x).result);
    classifier.dispose();

    const runs: BackendRun[] = [];
    for (const [i, spec] of specs.entries()) {
      let location: string;
      let drop = async () => undefined as void;
      if (spec.store === 'postgres') {
        let server = options.postgresUrl ?? cluster?.url;
        if (server === undefined) {
          log('backend bench: starting a durable PostgreSQL cluster (scripts/test-postgres.sh, fsync on)…');
          const out = execFileSync('bash', [SCRIPT], { encoding: 'utf8', env: { ...process.env, SEALED_EDGE_POSTGRES_DURABLE: '1' } });
          cluster = { url: /SEALED_EDGE_TEST_DATABASE_URL=(\S+)/.exec(out)![1]!, dir: /SEALED_EDGE_TEST_POSTGRES_DIR=(\S+)/.exec(out)![1]! };
          server = cluster.url;
        }
        const name = `sealed_edge_bench_${process.pid}_${i}`;
        const admin = new pg.Client({ connectionString: server });
        await admin.connect();
        await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        await admin.query(`CREATE DATABASE ${name}`);
        await admin.end();
        const url = new URL(server);
        url.pathname = `/${name}`;
        location = url.toString();
        drop = async () => {
          const again = new pg.Client({ connectionString: server });
          await again.connect();
          await again.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
          await again.end();
        };
      } else {
        mkdirSync(join(root, `run-${i}`));
        location = join(root, `run-${i}`, 'sealed-edge.db');
      }
      try {
        log(`backend bench: ${describeRun(spec)}…`);
        const postmaster = spec.store === 'postgres' && cluster !== null ? postmasterPid((cluster as { dir: string }).dir) : null;
        const run = await oneRun(spec, { root: join(root, `run-${i}`), location, env, version, keyPair, signing, bundle, ciphertexts, log, postmaster });
        runs.push(run);
        log(`backend bench: ${run.acknowledged} acknowledged (${run.acceptedPerS}/s), ${run.stored} stored, ${run.decrypted} decrypted, ${run.lost} lost, ${run.duplicated} duplicated`);
      } finally {
        await drop();
      }
    }
    return { machine: machine(), runs };
  } finally {
    if (cluster !== null) execFileSync('bash', [SCRIPT, 'stop', (cluster as { dir: string }).dir]);
    rmSync(root, { recursive: true, force: true });
  }
}

function describeRun(spec: BackendRunSpec): string {
  return `${spec.store}, ${spec.instances} instance${spec.instances === 1 ? '' : 's'}, ${spec.devices} devices, ${spec.seconds} s${spec.kill ? ', one instance killed' : ''}`;
}

interface RunContext {
  root: string;
  location: string;
  env: NodeJS.ProcessEnv;
  version: ModelVersion;
  keyPair: KeyPairRecord;
  signing: SigningKeyRecord;
  bundle: VerifiedBundle;
  ciphertexts: Uint8Array[];
  log: (line: string) => void;
  /** The PostgreSQL server the bench started (its postmaster's pid), whose CPU it reads; null for SQLite or a server given by URL. */
  postmaster: number | null;
}

async function oneRun(spec: BackendRunSpec, ctx: RunContext): Promise<BackendRun> {
  const data = join(ctx.root, 'data');
  mkdirSync(data, { recursive: true });
  // The run's store gets the template's signing key and model version (same keys, same bundle) and its own devices.
  const ws = await openWorkspace(data, ctx.env, ctx.location);
  await ws.store.addSigningKey({ id: ctx.signing.id, publicKey: ctx.signing.publicKey, wrappedPrivateKey: ctx.signing.wrappedPrivateKey });
  const { modelId, keyId, bundleDir, manifestSha256, outputs, protectMetrics } = ctx.version;
  await ws.store.addModelVersion({ modelId, keyId, bundleDir, manifestSha256, outputs, protectMetrics }, { keyId, wrappedSecretKey: ctx.keyPair.wrappedSecretKey, deviceKeys: ctx.keyPair.deviceKeys });
  const tokens: string[] = [];
  for (let d = 0; d < spec.devices; d++) tokens.push((await addDevice(ws, `bench-${d}`)).token);
  await ws.close();

  const decryptWorkers = spec.decryptWorkers ?? defaultDecryptWorkers();
  // The rate limit is raised so that capacity is measured; on PostgreSQL the shared buckets are still taken on every request.
  const args = (port: number) => ['--port', String(port), '--data', data, '--store', ctx.location, '--rate', '100000', '--claim-timeout', String(CLAIM_TIMEOUT_S), '--decrypt-workers', String(decryptWorkers)];
  const instances: ServeProcess[] = [];
  try {
    for (let n = 0; n < spec.instances; n++) instances.push(await startServeProcess(args(0), ctx.env));
    const urls = instances.map((s) => s.url);
    const devices = await Promise.all(tokens.map((t, d) => NodeDevice.enroll(urls[d % urls.length]!, t)));
    for (const device of devices) device.attach(ctx.bundle);
    const requests = new RequestBodies(ctx.bundle, ctx.ciphertexts);
    // CPU time from here: each instance's (every thread, until its results are decrypted) and the devices'.
    const cpuFrom = instances.map((instance) => processCpuMs(instance.child.pid));
    const serverFrom = ctx.postmaster === null ? null : serverCpuMs(ctx.postmaster);
    const cpuKilled: Array<number | null> = [];
    const devicesCpu = process.cpuUsage();

    const acked = new Map<string, number>();
    const latencies: number[] = [];
    const refused: Record<number, number> = {};
    const started = performance.now();
    const deadline = started + spec.seconds * 1000;
    let killedInstance: number | null = null;
    const killing = spec.kill
      ? (async () => {
          await sleep((spec.seconds * 1000) / 2);
          const victim = instances[0]!;
          const port = Number(new URL(victim.url).port);
          cpuKilled.push(cpuSince(processCpuMs(victim.child.pid), cpuFrom[0]!));
          await victim.stop('SIGKILL');
          killedInstance = 0;
          instances[0] = await startServeProcess(args(port), ctx.env);
          cpuFrom[0] = 0;
        })()
      : Promise.resolve();
    await Promise.all(
      devices.map(async (device, d) => {
        for (let k = 0; performance.now() < deadline; k++) {
          const key = `bench-${d}-${k}`;
          const body = requests.body(key, (d + k) % ctx.ciphertexts.length);
          const headers = await device.signedHeaders(body);
          const first = performance.now();
          for (let attempt = 0; ; attempt++) {
            const target = urls[(d + k + attempt) % urls.length]!;
            let status = 0;
            let answer: { receipt?: { resultId?: number } } = {};
            try {
              ({ status, answer } = await post(target, headers, body));
            } catch {
              status = 0; // no answer: the instance is down or hung
            }
            if (status === 200 || status === 201) {
              acked.set(`${device.deviceId}|${key}`, answer.receipt?.resultId ?? -1);
              latencies.push(performance.now() - first);
              break;
            }
            if (status !== 0 && status < 500) {
              refused[status] = (refused[status] ?? 0) + 1;
              break;
            }
            if (performance.now() > deadline + RETRY_GRACE_MS) break;
            // Every instance tried once: wait a little before the next round.
            if ((attempt + 1) % urls.length === 0) await sleep(100);
          }
        }
      }),
    );
    const elapsed = (performance.now() - started) / 1000;
    const devicesCpuMs = (({ user, system }) => (user + system) / 1000)(process.cpuUsage(devicesCpu));
    await killing;
    if (Object.keys(refused).length > 0) process.stderr.write(`backend bench: refused answers ${JSON.stringify(refused)} (a bug: every request is valid)\n`);

    // Decryption finishes (a killed instance's claims are taken again), then the database is read.
    const check = await openStore(ctx.location);
    try {
      const drainBy = Date.now() + DRAIN_TIMEOUT_MS;
      while ((await check.listResults({ state: 'pending', limit: 1 })).length > 0 && Date.now() < drainBy) await sleep(200);
      const instancesCpu = [...cpuKilled, ...instances.map((instance, n) => cpuSince(processCpuMs(instance.child.pid), cpuFrom[n]!))];
      const serverCpu = ctx.postmaster === null ? null : cpuSince(serverCpuMs(ctx.postmaster), serverFrom);
      if (acked.size > 0 && instancesCpu.every((ms) => ms !== null)) {
        const per = (ms: number) => round(ms / acked.size, 2);
        ctx.log(
          `backend bench: CPU per acknowledged result: instances ${per(instancesCpu.reduce<number>((a, b) => a + b!, 0))} ms (every thread, until decrypted${spec.kill ? '; the restarted instance from its start' : ''}), devices ${per(devicesCpuMs)} ms` +
            (serverCpu === null ? '' : `, PostgreSQL server ${per(serverCpu)} ms (every process of the cluster)`),
        );
      }
      for (const instance of instances) await instance.stop('SIGTERM');
      const rows = await check.listResults({ limit: 10_000_000 });
      const byKey = new Map<string, number[]>();
      for (const r of rows) byKey.set(`${r.deviceId}|${r.idempotencyKey}`, [...(byKey.get(`${r.deviceId}|${r.idempotencyKey}`) ?? []), r.id]);
      const bodies = new Set(rows.map((r) => r.bodySha256));
      let lost = 0;
      for (const [key, id] of acked) if (!(byKey.get(key) ?? []).includes(id)) lost++;
      latencies.sort((a, b) => a - b);
      return {
        store: spec.store,
        instances: spec.instances,
        decryptWorkers,
        devices: spec.devices,
        seconds: spec.seconds,
        acknowledged: acked.size,
        stored: rows.length,
        decrypted: rows.filter((r) => r.state === 'decrypted').length,
        acceptedPerS: round(acked.size / Math.max(elapsed, spec.seconds), 1),
        p50Ms: round(percentile(latencies, 50)),
        p99Ms: round(percentile(latencies, 99)),
        lost,
        duplicated: Math.max(rows.length - byKey.size, rows.length - bodies.size),
        killedInstance,
      };
    } finally {
      await check.close();
    }
  } finally {
    for (const instance of instances) await instance.stop('SIGKILL');
  }
}

/**
 * The devices' request bodies, as NodeDevice.request() writes them, made from parts built
 * before the clock starts: per request only the idempotency key is new, so the simulated
 * devices do not spend the cores the instances share on base64 and JSON of each
 * ciphertext again (a real device encodes its one result once).
 */
class RequestBodies {
  private readonly head: Buffer;
  private readonly tails: Buffer[];

  constructor(bundle: VerifiedBundle, ciphertexts: Uint8Array[]) {
    const { modelId, version, keyId } = bundle.manifest;
    const prefix = JSON.stringify({ modelId, version, keyId, idempotencyKey: '' });
    this.head = Buffer.from(prefix.slice(0, -2));
    this.tails = ciphertexts.map((c) => Buffer.from(`",${JSON.stringify({ result: Buffer.from(c).toString('base64') }).slice(1)}`));
  }

  /** The body for ciphertext `index` under `key` (characters JSON needs no escape for). */
  body(key: string, index: number): Buffer {
    return Buffer.concat([this.head, Buffer.from(key), this.tails[index]!]);
  }
}

/** Keep-alive connections to the instances, as a device (or a load balancer) keeps them. */
const agent = new Agent({ keepAlive: true });

/** POSTs a result to an instance: its status and JSON answer, or a rejection when it gives none within REQUEST_TIMEOUT_MS. */
function post(target: string, headers: Record<string, string>, body: Buffer): Promise<{ status: number; answer: { receipt?: { resultId?: number } } }> {
  return new Promise((resolve, reject) => {
    const req = request(`${target}/api/v1/inferences`, { method: 'POST', agent, headers: { ...headers, 'content-length': String(body.length) }, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, answer: JSON.parse(Buffer.concat(chunks).toString('utf8')) as { receipt?: { resultId?: number } } });
        } catch (error) {
          reject(error as Error);
        }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** CPU time (user and system, every thread) a process has used, in ms, from /proc (Linux; null elsewhere or once it has exited). */
function processCpuMs(pid: number | undefined): number | null {
  try {
    const fields = statFields(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
  } catch {
    return null;
  }
}

/** The pid of the postmaster of the cluster in `dir` (scripts/test-postgres.sh's layout), or null when it cannot be read. */
function postmasterPid(dir: string): number | null {
  try {
    const pid = Number(readFileSync(join(dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/**
 * CPU time, in ms, of a PostgreSQL cluster from /proc: the postmaster's own and that of
 * the children it has reaped (connections that closed), plus each live child's
 * (connections, WAL writer, checkpointer, …). Null when the postmaster is gone.
 */
function serverCpuMs(postmaster: number): number | null {
  let ticks = 0;
  try {
    const fields = statFields(readFileSync(`/proc/${postmaster}/stat`, 'utf8'));
    ticks += Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
  } catch {
    return null;
  }
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let fields: string[];
    try {
      fields = statFields(readFileSync(`/proc/${entry}/stat`, 'utf8'));
    } catch {
      continue; // exited meanwhile: its time is in the postmaster's reaped children
    }
    if (Number(fields[1]) === postmaster) ticks += Number(fields[11]) + Number(fields[12]);
  }
  return (ticks * 1000) / CLOCK_TICKS;
}

/** The fields of a /proc/PID/stat line after the command name (fields[1] is the parent's pid, [11] and [12] user and system time). */
function statFields(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** /proc's unit of CPU time (USER_HZ): 100 per second on Linux. */
const CLOCK_TICKS = 100;

function cpuSince(now: number | null, from: number | null): number | null {
  return now === null || from === null ? null : now - from;
}

export function backendTable(report: { runs: BackendRun[] }): string {
  return table(
    ['store', 'instances', 'workers', 'devices', 's', 'acknowledged', 'stored', 'decrypted', 'accepted/s', 'p50 ms', 'p99 ms', 'lost', 'duplicated', 'killed'],
    report.runs.map((r) => [
      r.store,
      r.instances,
      r.decryptWorkers,
      r.devices,
      r.seconds,
      r.acknowledged,
      r.stored,
      r.decrypted,
      r.acceptedPerS,
      r.p50Ms,
      r.p99Ms,
      r.lost,
      r.duplicated,
      r.killedInstance === null ? '—' : `#${r.killedInstance}`,
    ]),
  );
}
