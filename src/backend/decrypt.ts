import {
  BgvContext,
  bgvKeySetInfo,
  BgvOwnerKeys,
  containerScheme,
  decryptBgvResult,
  decryptResult,
  HeContext,
  HeError,
  keySetInfo,
  OwnerKeys,
  type SealRuntime,
} from '../he';
import { secretKeyContext, unwrapSecret } from '../node/kek';
import type { Store } from '../store/types';

/** A decrypted result, as the backend keeps it. */
export interface Decrypted {
  /** The scheme of the key pair and the result. */
  readonly scheme: 'ckks' | 'bgv';
  readonly scores: Float64Array;
  /** BGV: the smallest remaining noise budget over the CRT components, in bits. CKKS has none: null. */
  readonly noiseBudgetBits: number | null;
}

/**
 * What the backend decrypts with: in this thread (DecryptionAgent) or in a pool of worker
 * threads (DecryptionPool). Rejects with HeError when the ciphertext itself is refused;
 * any other rejection (a worker that died, a store that is down) says nothing about the
 * ciphertext.
 */
export interface Decryptor {
  /** How many decryptions it runs at once. */
  readonly concurrency: number;
  /** The caller gives `result` up: a pool moves its memory to a worker thread, leaving it empty. */
  decrypt(keyId: string, result: Uint8Array): Promise<Decrypted>;
  dispose(): Promise<void>;
}

/** An unwrapped key pair with the context it lives in. */
type Opened = { scheme: 'ckks'; he: HeContext; owner: OwnerKeys } | { scheme: 'bgv'; ctx: BgvContext; owner: BgvOwnerKeys };

/**
 * The Decryption Agent: opens results under the key pair they name, CKKS or BGV as the
 * stored key set says. Contexts (0.25–1.5 s each to create; a BGV parameter set has one
 * per CRT component) are shared per parameter set and unwrapped keys kept per key id,
 * until dispose() frees them.
 */
export class DecryptionAgent implements Decryptor {
  /** One at a time: it decrypts on the calling thread. */
  readonly concurrency = 1;
  private readonly contexts = new Map<string, HeContext | BgvContext>();
  /** Promises, so that concurrent first requests for a key open it once. */
  private readonly keys = new Map<string, Promise<Opened>>();

  constructor(
    private readonly runtime: SealRuntime,
    private readonly store: Store,
    private readonly kek: Buffer,
  ) {}

  private open(keyId: string): Promise<Opened> {
    let opened = this.keys.get(keyId);
    if (opened === undefined) {
      opened = this.load(keyId);
      this.keys.set(keyId, opened);
      opened.catch(() => this.keys.delete(keyId));
    }
    return opened;
  }

  private context<T extends HeContext | BgvContext>(params: object, create: () => T): T {
    const key = JSON.stringify(params);
    let context = this.contexts.get(key);
    if (context === undefined) {
      context = create();
      this.contexts.set(key, context);
    }
    return context as T;
  }

  private async load(keyId: string): Promise<Opened> {
    const record = await this.store.getKeyPair(keyId);
    if (record === null) throw new HeError('E_KEYS', `no key pair ${keyId}`);
    const secret = unwrapSecret(this.kek, record.wrappedSecretKey, secretKeyContext(keyId));
    if (containerScheme(record.deviceKeys, 'deviceKeys') === 'bgv') {
      const { params } = bgvKeySetInfo(record.deviceKeys);
      const ctx = this.context(params, () => BgvContext.create(this.runtime, params));
      return { scheme: 'bgv', ctx, owner: BgvOwnerKeys.load(ctx, secret, record.deviceKeys) };
    }
    const { params } = keySetInfo(record.deviceKeys);
    const he = this.context(params, () => HeContext.create(this.runtime, params));
    return { scheme: 'ckks', he, owner: OwnerKeys.load(he, secret, record.deviceKeys) };
  }

  /**
   * The scores of an encrypted result made under `keyId`, and for BGV the noise budget it
   * has left. A result of the other scheme than the key pair's is refused. Throws HeError
   * on bad data.
   */
  async decrypt(keyId: string, result: Uint8Array): Promise<Decrypted> {
    const opened = await this.open(keyId);
    try {
      if (opened.scheme === 'bgv') {
        const { scores, noiseBudgetBits } = decryptBgvResult(opened.ctx, opened.owner, result);
        return { scheme: 'bgv', scores, noiseBudgetBits };
      }
      return { scheme: 'ckks', scores: decryptResult(opened.he, opened.owner, result), noiseBudgetBits: null };
    } catch (error) {
      // The container is read (and its checksums computed) once when the result decrypts;
      // only a refused one is read again, to say when it is of the other scheme.
      if (!(error instanceof HeError)) throw error;
      const scheme = containerScheme(result, 'result');
      if (scheme !== opened.scheme) throw new HeError('E_PARAMS', `the result is a ${scheme.toUpperCase()} result; key ${keyId} is a ${opened.scheme.toUpperCase()} key`);
      throw error;
    }
  }

  async dispose(): Promise<void> {
    for (const opened of this.keys.values()) (await opened.catch(() => null))?.owner.dispose();
    for (const context of this.contexts.values()) context.dispose();
    this.keys.clear();
    this.contexts.clear();
  }
}
