import type { IncomingMessage, ServerResponse } from 'node:http';
import type { BlobTarget } from '../types.js';

/** The caller may read the blob in this repository and it exists there. */
export interface Grant {
  /** Blob size in bytes, when known. */
  readonly size: number | undefined;
  /** The digest storage holds the blob under (validated): the object key is built from it. */
  readonly digest: string;
}

/**
 * What an authorizer concluded for one blob GET:
 * - a {@link Grant}: redirect may proceed;
 * - `'deny'`: not a positive answer; the request is forwarded unchanged so the upstream (or host
 *   registry) gives its own answer (401/403/404 reach the client as they are);
 * - `'answered'`: the authorizer already wrote a response (an error or a challenge).
 */
export type AuthOutcome = Grant | 'deny' | 'answered';

/**
 * One authorization strategy (upstream HEAD probe, embedded hook, ...). `path` is the request
 * path without its query string. A strategy that knows the answer at once (a synchronous embedded
 * hook) returns it directly, so the request never waits a microtask for it.
 */
export type Authorizer = (req: IncomingMessage, res: ServerResponse, target: BlobTarget, path: string) => AuthOutcome | Promise<AuthOutcome>;
