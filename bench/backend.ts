import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fetchBundle, NodeDevice } from '../src/node/device-client';
import { nodeSeal } from '../src/node/seal';
import { startServeProcess } from '../src/node/serve-process';
import { addDevice, openWorkspace, signingKey } from '../src/protect/workspace';
import { protectHead } from '../tests/backend/helpers';
import { makeHead, makeInputs } from '../tests/he/helpers';
import { machine, round, table } from './machine';

const DEVICES = 20;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/**
 * POST /api/v1/inferences under load: the backend (`sealed-edge serve`, its own process)
 * against 20 simulated devices on loopback for `seconds`. Each request carries a real
 * encrypted result of the MNIST head (113 KiB), a fresh idempotency key and an ECDSA
 * signature; the backend verifies, decrypts, takes the argmax and commits before it
 * answers. Afterwards the database must hold each acknowledged result exactly once.
 */
export async function benchBackend(options: { quick: boolean }): Promise<Record<string, unknown>> {
  const seconds = options.quick ? 10 : 30;
  const root = mkdtempSync(join(tmpdir(), 'sealed-edge-bench-'));
  const data = join(root, 'data');
  const env = { ...process.env, SEALED_EDGE_KEK: 'ef'.repeat(32), SEALED_EDGE_OPERATOR_TOKEN: 'benchmark-operator-token' };
  const ws = await openWorkspace(data, env);
  const runtime = await nodeSeal();
  await protectHead(ws, makeHead([1600, 512, 10], 'realistic', 1600), 'mnist-head', root);
  const tokens = [];
  for (let i = 0; i < DEVICES; i++) tokens.push((await addDevice(ws, `bench-${i}`)).token);
  const ownerKey = (await signingKey(ws)).publicKey;
  await ws.close();

  // The per-device rate limit is raised so that the backend's capacity is what is measured.
  const server = await startServeProcess(['--port', '0', '--data', data, '--static', join(root, 'public'), '--rate', '1000'], env);
  const latencies: number[] = [];
  const statuses: Record<number, number> = {};
  let acknowledged = 0;
  try {
    const devices = await Promise.all(tokens.map((t) => NodeDevice.enroll(server.url, t)));
    const bundle = await fetchBundle(`${server.url}/models/mnist-head/v1/`, ownerKey);
    await devices[0]!.load(runtime, bundle);
    const results = makeInputs(1600, 4, 'realistic', 2).map((x) => devices[0]!.classify(x));
    devices[0]!.unload();
    // The devices post these precomputed results: the load is on the backend alone.
    devices.forEach((device) => device.attach(bundle));
    const deadline = performance.now() + seconds * 1000;
    await Promise.all(
      devices.map(async (device, d) => {
        for (let k = 0; performance.now() < deadline; k++) {
          const { body, headers } = await device.request(results[k % results.length]!, `bench-${d}-${k}-${Date.now()}`);
          const t = performance.now();
          const { status } = await device.post(body, headers);
          latencies.push(performance.now() - t);
          statuses[status] = (statuses[status] ?? 0) + 1;
          if (status === 201) acknowledged++;
        }
      }),
    );
  } finally {
    await server.stop('SIGTERM');
  }
  const check = await openWorkspace(data, env);
  const stored = await check.store.countResults();
  const integrity = await check.store.integrityCheck();
  await check.close();
  rmSync(root, { recursive: true, force: true });
  latencies.sort((a, b) => a - b);
  return {
    machine: machine(),
    results: [
      {
        case: 'POST /api/v1/inferences',
        devices: DEVICES,
        seconds,
        requests: latencies.length,
        statuses,
        throughputPerSecond: round(latencies.length / seconds, 1),
        latencyMs: { p50: round(percentile(latencies, 50)), p99: round(percentile(latencies, 99)), max: round(latencies[latencies.length - 1]!) },
        acknowledged,
        stored,
        lostOrDuplicated: stored - acknowledged,
        integrityCheck: integrity,
        bodyBytes: 'MNIST head result, ~155 KB JSON',
      },
    ],
  };
}

export function backendTable(report: { results: Record<string, unknown>[] }): string {
  return table(
    ['case', 'devices', 's', 'requests', 'req/s', 'p50 ms', 'p99 ms', 'acknowledged', 'stored', 'integrity'],
    report.results.map((r) => {
      const l = r.latencyMs as { p50: number; p99: number };
      return [r.case as string, r.devices as number, r.seconds as number, r.requests as number, r.throughputPerSecond as number, l.p50, l.p99, r.acknowledged as number, r.stored as number, r.integrityCheck as string];
    }),
  );
}
