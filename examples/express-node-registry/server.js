#!/usr/bin/env node
/**
 * Runs the example registry from environment variables:
 *
 *   LISTEN                   host:port to listen on (default 127.0.0.1:5000)
 *   AZURE_STORAGE_ACCOUNT    storage account (Azurite: devstoreaccount1)              required
 *   AZURE_STORAGE_KEY        account key; omit to use Azure AD (managed identity, az login)
 *   AZURE_STORAGE_CONTAINER  container for blobs and metadata (default registry; created if missing)
 *   AZURE_STORAGE_ENDPOINT   blob endpoint the registry talks to (default https://<account>.blob.core.windows.net)
 *   AZURE_REDIRECT_ENDPOINT  blob endpoint put in redirect URLs, if clients reach storage by another
 *                            name than the registry does (default AZURE_STORAGE_ENDPOINT)
 *   REGISTRY_USERS           JSON: {"alice":{"password":"...","repositories":["team/*"]}}; unset: open registry
 *   REGISTRY_ANONYMOUS_PULL  "true": anyone may pull
 *
 * SIGTERM/SIGINT: stop accepting, finish in-flight requests, exit 0.
 */
import { DefaultAzureCredential } from '@azure/identity';
import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';
import { azureSigner } from 'registry-redirect/azure';
import { createRegistry } from './registry.js';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`node-registry: set ${name} (see the header of server.js)`);
    process.exit(2);
  }
  return value;
}

const account = required('AZURE_STORAGE_ACCOUNT');
const accountKey = process.env.AZURE_STORAGE_KEY || undefined;
const containerName = process.env.AZURE_STORAGE_CONTAINER || 'registry';
const endpoint = process.env.AZURE_STORAGE_ENDPOINT || `https://${account}.blob.core.windows.net`;
const redirectEndpoint = process.env.AZURE_REDIRECT_ENDPOINT || endpoint;
const users = process.env.REGISTRY_USERS ? JSON.parse(process.env.REGISTRY_USERS) : undefined;
const [, host = '127.0.0.1', port = '5000'] = /^(?:\[?([^\]]*)\]?):(\d+)$/.exec(process.env.LISTEN ?? '') ?? [];

const credential = accountKey ? new StorageSharedKeyCredential(account, accountKey) : new DefaultAzureCredential();
const container = new BlobServiceClient(endpoint, credential).getContainerClient(containerName);
await container.createIfNotExists();

const registry = await createRegistry({
  container,
  signer: azureSigner({ account, accountKey, container: containerName, endpoint: redirectEndpoint, expiry: '20m' }),
  users,
  anonymousPull: process.env.REGISTRY_ANONYMOUS_PULL === 'true',
});
if (!users) console.warn('node-registry: REGISTRY_USERS is not set: anyone may push and pull');

const server = registry.app.listen(Number(port), host || '127.0.0.1', () => {
  const { address, port: bound } = server.address();
  console.log(`node-registry listening on http://${address.includes(':') ? `[${address}]` : address}:${bound} (blobs in ${containerName} at ${endpoint})`);
});

function stop() {
  server.close(() => {
    void registry.close().then(() => process.exit(0));
  });
  server.closeIdleConnections();
  setTimeout(() => server.closeAllConnections(), 10_000).unref();
}
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
