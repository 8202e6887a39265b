/** The store could not be reached or answered with an error; the operation may be retried. */
export class StoreUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreUnavailableError';
  }
}

/** The record the operation needs does not exist. */
export class NotFoundError extends Error {
  constructor(what: string) {
    super(`${what} not found`);
    this.name = 'NotFoundError';
  }
}

/** The operation conflicts with the current state (duplicate id/hash/address, rotating an inactive key). */
export class ConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConflictError';
  }
}

/**
 * The write would leave the account with more active keys than the limit
 * (`limits.keysPerAccount`). A ConflictError, so callers that already map
 * conflicts keep working; the HTTP layer answers 409 naming the limit.
 */
export class KeyLimitError extends ConflictError {
  constructor(
    readonly account: string,
    readonly limit: number,
  ) {
    super(`account ${account} already has ${limit} active keys, the most allowed (limits.keysPerAccount); revoke one first`);
    this.name = 'KeyLimitError';
  }
}

/** A list cursor that no page of this store handed out. */
export class InvalidCursorError extends Error {
  constructor() {
    super('cursor is not one a previous page returned');
    this.name = 'InvalidCursorError';
  }
}

/** A command that only reads or changes keys was pointed at a SQLite store that does not exist; nothing was created. */
export class StoreMissingError extends Error {
  constructor(readonly path: string) {
    super(`no key store at ${path}: run from the directory that holds it, set KEYGATE_HOME (or --home), or name it with --db.path`);
    this.name = 'StoreMissingError';
  }
}
