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
