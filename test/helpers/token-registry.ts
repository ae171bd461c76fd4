/**
 * A real token-auth registry for security tests: the harness token server, distribution 2.8.2
 * with `auth: token`, and a recording front in front of it, so a test can tell whether the proxy
 * asked the upstream at all. Blobs are pushed over the HTTP API (no skopeo needed).
 */
import { randomBytes } from 'node:crypto';
import { azureSigner } from '../../src/signers/azure.js';
import type { Signer, TokenAuthOptions } from '../../src/types.js';
import { AZURITE_ACCOUNT_KEY } from '../support/azurite.js';
import { startRegistry } from '../support/registry.js';
import type { RunningRegistry } from '../support/registry.js';
import { startTokenServer } from '../support/token-auth.js';
import type { AccessEntry, RunningTokenServer } from '../support/token-auth.js';
import { pushBlob, startRecordingFront } from './registry-api.js';
import type { RecordingFront } from './registry-api.js';

/** Storage endpoint the signer points at: nothing listens there, tests only read the Location. */
export const STORAGE_ENDPOINT = 'http://127.0.0.2:10000/devstoreaccount1';

export function testSigner(endpoint = STORAGE_ENDPOINT): Signer {
  return azureSigner({ account: 'devstoreaccount1', accountKey: AZURITE_ACCOUNT_KEY, container: 'registry', endpoint });
}

export interface TokenRegistry {
  tokens: RunningTokenServer;
  registry: RunningRegistry;
  /** Recording reverse proxy in front of the registry: point the proxy's `upstream` here. */
  front: RecordingFront;
  /** `Bearer <jwt>` signed by the trusted key, for `access`. */
  bearer(access: AccessEntry[], expiresInSec?: number): string;
  /** `tokenAuth` options matching the registry's `auth.token` settings. */
  tokenAuth(): TokenAuthOptions;
  /** Pushes random bytes into `repository`; returns the digest. */
  push(repository: string, size?: number): Promise<string>;
  stop(): Promise<void>;
}

/** Starts token server, registry and front. `users` may log in at the token server (and get everything they ask for). */
export async function startTokenRegistry(opts: { users?: Record<string, string> } = {}): Promise<TokenRegistry> {
  const tokens = await startTokenServer({ users: opts.users ?? {} });
  let registry: RunningRegistry | undefined;
  let front: RecordingFront | undefined;
  try {
    registry = await startRegistry({ auth: tokens.registryAuth });
    front = await startRecordingFront(registry.url);
  } catch (err) {
    await registry?.stop();
    await tokens.stop();
    throw err;
  }
  const reg = registry;
  const bearer = (access: AccessEntry[], expiresInSec?: number) =>
    `Bearer ${tokens.signer.mint({ service: tokens.service, access, ...(expiresInSec !== undefined && { expiresInSec }) })}`;
  return {
    tokens,
    registry: reg,
    front,
    bearer,
    tokenAuth: () => ({ issuer: tokens.issuer, service: tokens.service, realm: tokens.realm, publicKeys: [tokens.signer.certPem], algorithms: ['RS256'] }),
    push: (repository, size = 256) =>
      pushBlob(reg.url, repository, randomBytes(size), bearer([{ type: 'repository', name: repository, actions: ['pull', 'push'] }])),
    async stop() {
      await front?.close();
      await reg.stop();
      await tokens.stop();
    },
  };
}
