/** Stable codes for everything the store refuses; callers branch on `code`, people read `message`. */
export type StoreErrorCode =
  | 'E_INVALID' // an argument is malformed or out of range; nothing was written
  | 'E_NOT_FOUND' // the model version, device, … does not exist
  | 'E_CONFLICT' // the id, key id, token hash, … is already taken
  | 'E_SCHEMA' // the database's schema is newer than this code, or not a sealed-edge database
  | 'E_OPEN' // the database file cannot be opened (missing directory, not a database, no WAL)
  | 'E_BUSY' // another connection held the lock past the busy timeout
  | 'E_CORRUPT' // SQLite reports a malformed database
  | 'E_CLOSED' // a method called after close()
  | 'E_UNAVAILABLE' // the database server cannot be reached now (refused, dropped or shutting down); a write under way was committed whole or not at all: retry it
  | 'E_DB'; // any other database failure (I/O error, disk full, read-only file)

export class StoreError extends Error {
  readonly code: StoreErrorCode;
  constructor(code: StoreErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreError';
    this.code = code;
  }
}

export function fail(code: StoreErrorCode, message: string, cause?: unknown): never {
  throw new StoreError(code, message, cause === undefined ? undefined : { cause });
}
