/** Stable codes for every model or data file this module refuses; callers branch on `code`, people read `message`. */
export type ModelErrorCode =
  | 'E_FORMAT' // not an ONNX model / IDX file, or a field holds an impossible value
  | 'E_TRUNCATED' // the bytes end before the data they declare
  | 'E_GRAPH' // a well-formed file whose graph is inconsistent (missing tensors, cycles)
  | 'E_UNSUPPORTED' // an op or construct the classifier head cannot be expressed with
  | 'E_ACTIVATION' // a non-polynomial activation (ReLU, …) in the head: approximate it first
  | 'E_SPLIT'; // the split point does not exist or does not leave a dense head

export class ModelError extends Error {
  readonly code: ModelErrorCode;
  constructor(code: ModelErrorCode, message: string) {
    super(message);
    this.name = 'ModelError';
    this.code = code;
  }
}

export function fail(code: ModelErrorCode, message: string): never {
  throw new ModelError(code, message);
}
