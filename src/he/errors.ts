/** Stable codes for everything the engine refuses; callers branch on `code`, people read `message`. */
export type HeErrorCode =
  | 'E_PARAMS' // no parameter set meets the request, or data was made under other parameters
  | 'E_SHAPE' // a vector or matrix has the wrong dimensions
  | 'E_FORMAT' // not a sealed-edge container, or an unknown kind
  | 'E_VERSION' // a container written by an unsupported format version
  | 'E_TRUNCATED' // the data ends before its declared length
  | 'E_CORRUPT' // checksums or SEAL's own structure checks fail
  | 'E_KEYS' // keys that do not belong to this classifier, or a missing Galois key
  | 'E_UNSUPPORTED' // a valid request this engine does not implement
  | 'E_RANGE' // values that the planned parameters cannot hold
  | 'E_DISPOSED'; // an object used after dispose()

export class HeError extends Error {
  readonly code: HeErrorCode;
  constructor(code: HeErrorCode, message: string) {
    super(message);
    this.name = 'HeError';
    this.code = code;
  }
}

export function fail(code: HeErrorCode, message: string): never {
  throw new HeError(code, message);
}
