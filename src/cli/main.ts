import { parseArgs } from 'node:util';
import { approxCommand } from './approx';
import { runDemo } from './demo';
import { deployCommand } from './deploy';
import { UsageError } from './errors';
import { inspectCommand } from './inspect';
import { deviceCommand, modelCommand, serveCommand } from './owner';
import { protectCommand } from './protect';
import { startCommand } from './start';

const USAGE = `usage: sealed-edge <command> [options]

commands:
  start [--port 8080] [--data DIR] [--model MODEL.onnx] [--scheme ckks|bgv] [--id mnist] [--kiosk-origin URL]…
      The demo (npm start): protects the model if it has no bundle yet, builds the kiosk
      with the owner's key pinned, provisions a device and serves kiosk, bundle and cockpit.
      --scheme bgv: the paper's scheme (model id mnist-bgv unless --id is given).
      --kiosk-origin: as for serve, for a kiosk also deployed elsewhere (sealed-edge deploy).
      --demo FILE|DIR: the demo stream the kiosk loops over, an IDX file of images (uint8
      [N, H, W] or [N, H, W, C]) or a folder of PNG/JPEG files (default: 100 MNIST digits).
      The input spec flags and --calibration are passed to protect (see protect).
  demo [--head mnist|small|last] [--security 128|192|256] [--inputs N]
      Encrypts a classifier head with the owner's secret key, evaluates it on encrypted
      inputs as a device would, decrypts the scores as the backend would, and prints them
      next to the float model's.
  approx --fn relu|sigmoid|tanh --method taylor|chebyshev|least-squares|cryptodl --degree 2..8
         --interval -l,l [--json]
      Fits a polynomial of the given degree to an activation on [-l, l] and prints its
      power-basis coefficients with the max and RMS errors.
  inspect MODEL.onnx [--split NODE|input] [--activation METHOD-FN-DEGREE] [--json]
      Splits an ONNX CNN into its plaintext feature extractor and its encrypted head and
      prints the extractor's input and output shapes, the head's layers and every split
      point the model can be imported at. The split is where the flattened features enter
      the first dense layer, or after NODE, or at the model's input (--split input: no
      extractor, the head may start with a convolution). --activation (e.g.
      cryptodl-relu-3, fitted on [-6, 6]) replaces that activation in the head by a
      polynomial approximation.
  protect MODEL.onnx [--id ID] [--split NODE|input] [--security 128|192|256] [--input encrypted|plain]
          [--scheme ckks|bgv] [--calibration IMAGES.idx|DIR] [--activation METHOD-FN-DEGREE]
          [--channels 1|3] [--input-size HxW] [--layout nchw|nhwc] [--scale 255|1]
          [--mean m|r,g,b] [--std s|r,g,b] [--fit center-crop|resize|letterbox]
          [--digitize|--no-digitize] [--out DIR] [--data DIR] [--store URL|FILE] [--json]
      Splits the model, generates a key pair, encrypts the head's weights and publishes a
      signed bundle as a new version under DIR/ID/vN (default public/models); prints the
      time to encrypt, the bundle size and the peak memory. --scheme bgv (the paper's
      scheme; default ckks) calibrates its fixed point on the extractor's features of 300
      images (default: the first MNIST training images; --calibration: an IDX file of
      uint8 [N, H, W] or [N, H, W, C] images or a folder of PNG/JPEG files), plans CRT
      moduli and chain, and verifies the noise budget with one real evaluation before
      publishing; CKKS calibrates its first prime on them too.
      The input spec (recorded in the signed manifest; the kiosk applies exactly it):
      channels, size and layout default to the ONNX input's; --scale: the divisor of
      0–255 pixels before (x − mean) / std; --mean/--std: one value or one per channel;
      --fit: how another size is fitted (default center-crop); --digitize: MNIST-style
      centring (the default, with MNIST's mean and std, for 1×28×28 inputs). Any other
      input needs --mean, --std and --calibration. Contradictions are refused.
  serve [--port 8080] [--host 127.0.0.1] [--data DIR] [--store URL|FILE] [--static DIR] [--rate N]
        [--decrypt-workers N] [--kiosk-origin URL]… [--claim-timeout SECONDS]
      Runs the decryption backend: device enrollment and encrypted results, the operators'
      API and cockpit (/cockpit), and DIR as a static host with COOP/COEP headers.
      --kiosk-origin (repeatable): the origin of a kiosk served from another host (such as
      https://kiosk.example); its browser may call the device API (CORS), no other may.
      --rate: requests per second each device may send (default 10).
      --decrypt-workers: worker threads that decrypt stored results (default: one per
      core but one; 0 decrypts on the event loop).
      --claim-timeout: a pending result claimed this long ago by an instance that died is
      taken again by another (default 60).
  deploy MODEL_ID --out DIR [--models DIR] [--data DIR] [--base PATH] [--backend URL] [--force]
      Writes one folder any static host serves as is: the kiosk built with the owner's key
      pinned, opening MODEL_ID's signed bundle (copied from --models, default public/models,
      under DIR/models/MODEL_ID/) and calling the backend at URL (default: its own origin).
      --base /path/ pins the path it is served at (default ./: any path). DIR must be new
      or empty unless --force replaces it; nothing is written if anything is refused.
  device add NAME | list | revoke ID   [--data DIR] [--store URL|FILE] [--json]
      Provisions a device (prints its one-time enrollment token), lists or revokes devices.
  model list [ID] | retire ID VERSION   [--data DIR] [--store URL|FILE] [--json]
      Lists protected model versions; a retired version's results are refused.
  help
      Shows this text.

The owner's data directory (--data, default ./data) holds the database, the key-encryption
key (or set SEALED_EDGE_KEK) and the operator token (or set SEALED_EDGE_OPERATOR_TOKEN).
--store postgres://USER:PASSWORD@HOST:PORT/DATABASE (or SEALED_EDGE_DATABASE_URL) keeps the
database in PostgreSQL instead, shared by several backend instances; --store FILE names
another SQLite file.`;

type Command = (args: string[]) => Promise<number>;

const COMMANDS: Record<string, Command> = {
  approx: approxCommand,
  inspect: inspectCommand,
  protect: protectCommand,
  start: startCommand,
  serve: serveCommand,
  deploy: deployCommand,
  device: deviceCommand,
  model: modelCommand,
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
    // The layers' typed errors (HeError, ModelError, StoreError, KeyError, BundleError)
    // all carry a stable E_ code: refused input, reported in one line.
    const code = (error as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('E_')) {
      process.stderr.write(`sealed-edge ${name}: ${code}: ${(error as Error).message}\n`);
      return 1;
    }
    throw error;
  }
}
