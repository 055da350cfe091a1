import { decryptResult, HeContext, HeError, keySetInfo, OwnerKeys, type SealRuntime } from '../he';
import { unwrapSecret } from '../protect/kek';
import type { Store } from './store/types';

/** The AES-GCM associated data a SEAL secret key is wrapped under. */
export function secretKeyContext(keyId: string): string {
  return `seal-secret-key:${keyId}`;
}

/**
 * The Decryption Agent: opens results under the key pair they name. Contexts (0.25–1.5 s
 * to create) are shared per parameter set and unwrapped keys kept per key id, until
 * dispose() frees them.
 */
export class DecryptionAgent {
  private readonly contexts = new Map<string, HeContext>();
  /** Promises, so that concurrent first requests for a key open it once. */
  private readonly keys = new Map<string, Promise<{ he: HeContext; owner: OwnerKeys }>>();

  constructor(
    private readonly runtime: SealRuntime,
    private readonly store: Store,
    private readonly kek: Buffer,
  ) {}

  private open(keyId: string): Promise<{ he: HeContext; owner: OwnerKeys }> {
    let opened = this.keys.get(keyId);
    if (opened === undefined) {
      opened = this.load(keyId);
      this.keys.set(keyId, opened);
      opened.catch(() => this.keys.delete(keyId));
    }
    return opened;
  }

  private async load(keyId: string): Promise<{ he: HeContext; owner: OwnerKeys }> {
    const record = await this.store.getKeyPair(keyId);
    if (record === null) throw new HeError('E_KEYS', `no key pair ${keyId}`);
    const { params } = keySetInfo(record.deviceKeys);
    const contextKey = JSON.stringify(params);
    let he = this.contexts.get(contextKey);
    if (he === undefined) {
      he = HeContext.create(this.runtime, params);
      this.contexts.set(contextKey, he);
    }
    const secret = unwrapSecret(this.kek, record.wrappedSecretKey, secretKeyContext(keyId));
    return { he, owner: OwnerKeys.load(he, secret, record.deviceKeys) };
  }

  /** The scores of an encrypted result made under `keyId`. Throws HeError on bad data. */
  async decrypt(keyId: string, result: Uint8Array): Promise<Float64Array> {
    const { he, owner } = await this.open(keyId);
    return decryptResult(he, owner, result);
  }

  async dispose(): Promise<void> {
    for (const opened of this.keys.values()) (await opened.catch(() => null))?.owner.dispose();
    for (const he of this.contexts.values()) he.dispose();
    this.keys.clear();
    this.contexts.clear();
  }
}
