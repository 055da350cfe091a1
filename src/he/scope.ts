/** Anything backed by WASM memory that must be freed explicitly. */
export interface Deletable {
  delete(): void;
}

/**
 * Owns SEAL objects created during one piece of work. WASM memory never shrinks, so
 * every object created in a scope is deleted when the scope is disposed; hot loops call
 * `free` early to keep the peak low.
 */
export class Scope {
  private readonly owned = new Set<Deletable>();

  track<T extends Deletable>(object: T): T {
    this.owned.add(object);
    return object;
  }

  /** Deletes one object now. */
  free(object: Deletable): void {
    if (this.owned.delete(object)) object.delete();
  }

  /** Hands an object over to the caller, who must delete it. */
  release<T extends Deletable>(object: T): T {
    this.owned.delete(object);
    return object;
  }

  dispose(): void {
    for (const object of this.owned) object.delete();
    this.owned.clear();
  }
}

/** Runs `work` in a fresh scope and frees everything it tracked, whatever happens. */
export function withScope<T>(work: (scope: Scope) => T): T {
  const scope = new Scope();
  try {
    return work(scope);
  } finally {
    scope.dispose();
  }
}

/** Anything of ours that frees its SEAL objects on `dispose`. */
export interface Disposable {
  dispose(): void;
}

/** A context, key set and classifier opened by `openClassifier`, freed together by `dispose`. */
export interface OpenedClassifier<C, K, L> {
  context: C;
  keys: K;
  classifier: L;
  contextMs: number;
  keysMs: number;
  dispose(): void;
}

/**
 * Opens a scheme's context, device key set and classifier in turn, timing the first two;
 * if a step fails, what the steps before it opened is disposed. `dispose` frees all three
 * once, however often it is called.
 */
export function openClassifier<C extends Disposable, K extends Disposable, L extends Disposable>(
  createContext: () => C,
  loadKeys: (context: C) => K,
  loadClassifier: (context: C, keys: K) => L,
): OpenedClassifier<C, K, L> {
  const t0 = performance.now();
  const context = createContext();
  const t1 = performance.now();
  let keys: K | undefined;
  let disposed = false;
  try {
    keys = loadKeys(context);
    const keysMs = performance.now() - t1;
    const classifier = loadClassifier(context, keys);
    return {
      context,
      keys,
      classifier,
      contextMs: t1 - t0,
      keysMs,
      dispose() {
        if (disposed) return;
        disposed = true;
        classifier.dispose();
        keys!.dispose();
        context.dispose();
      },
    };
  } catch (error) {
    keys?.dispose();
    context.dispose();
    throw error;
  }
}
