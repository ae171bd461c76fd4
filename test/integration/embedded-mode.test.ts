import http from 'node:http';
import express from 'express';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { registryRedirect } from '../../src/index.js';
import { azureSigner } from '../../src/signers/azure.js';
import type { BlobTarget, EmbeddedAuthorize, Signer } from '../../src/types.js';
import { AZURITE_KEY } from '../helpers/constants.js';

const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;
const azure = azureSigner({ account: 'devstoreaccount1', accountKey: AZURITE_KEY, container: 'registry', endpoint: 'http://127.0.0.2:10000/devstoreaccount1' });

/** A tiny Node registry: repo `team/app` holds D1 for user alice; D2 exists only in `team/other`. */
function hostRegistry(signer: Signer = azure, onAuthorize?: (t: BlobTarget) => void) {
  const membership: Record<string, string[]> = { 'team/app': [D1], 'team/other': [D2] };
  const authorize: EmbeddedAuthorize = (req, target) => {
    onAuthorize?.(target);
    if (req.headers.authorization !== 'Bearer alice') return undefined;
    return membership[target.repository]?.includes(target.digest) ? { size: 1234 } : undefined;
  };
  const app = express();
  app.use(registryRedirect({ signer, authorize }));
  // The host registry's own routes answer whatever the middleware hands on with next().
  app.get('/v2/{*rest}', (req, res) => {
    if (req.headers.authorization !== 'Bearer alice') {
      res.status(401).set('WWW-Authenticate', 'Bearer realm="host"').json({ errors: [{ code: 'UNAUTHORIZED' }] });
      return;
    }
    res.status(200).set('X-Served-By', 'host-registry').send('bytes-from-host');
  });
  app.head('/v2/{*rest}', (_req, res) => {
    res.status(200).set('X-Served-By', 'host-registry').end();
  });
  return app;
}

describe('embedded mode inside an Express 5 app', () => {
  it('grants -> 307 to the signed URL with the registry headers', async () => {
    const res = await request(hostRegistry()).get(`/v2/team/app/blobs/${D1}`).set('Authorization', 'Bearer alice').redirects(0);
    expect(res.status).toBe(307);
    expect(res.headers.location).toMatch(/^http:\/\/127\.0\.0\.2:10000\/devstoreaccount1\/registry\/docker\/registry\/v2\/blobs\/sha256\/11\//);
    expect(res.headers['docker-content-digest']).toBe(D1);
    expect(res.headers['content-length']).toBe('0');
    expect(res.headers['cache-control']).toBe('no-store');
  });

  it('no grant (unauthenticated) -> next(): the host registry answers with its own 401', async () => {
    const res = await request(hostRegistry()).get(`/v2/team/app/blobs/${D1}`).redirects(0);
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toBe('Bearer realm="host"');
    expect(res.headers.location).toBeUndefined();
  });

  it('cross-repository digest -> no grant -> the host answers, never a 307', async () => {
    const res = await request(hostRegistry()).get(`/v2/team/app/blobs/${D2}`).set('Authorization', 'Bearer alice').redirects(0);
    expect(res.status).toBe(200);
    expect(res.headers['x-served-by']).toBe('host-registry');
    expect(res.headers.location).toBeUndefined();
  });

  it('unmatched routes, HEAD and malformed paths go to next() without calling authorize', async () => {
    const seen: BlobTarget[] = [];
    const app = hostRegistry(azure, (t) => seen.push(t));
    for (const path of ['/v2/', '/v2/team/app/manifests/latest', `/v2/Team/app/blobs/${D1}`, '/v2/team/app/blobs/uploads/']) {
      const res = await request(app).get(path).set('Authorization', 'Bearer alice').redirects(0);
      expect(res.headers['x-served-by']).toBe('host-registry');
    }
    const head = await request(app).head(`/v2/team/app/blobs/${D1}`).set('Authorization', 'Bearer alice').redirects(0);
    expect(head.headers['x-served-by']).toBe('host-registry');
    expect(seen).toEqual([]);
  });

  it('signer failure -> next(): the host registry serves the bytes', async () => {
    const broken: Signer = { name: 'broken', sign: () => Promise.reject(new Error('storage down')) };
    const res = await request(hostRegistry(broken)).get(`/v2/team/app/blobs/${D1}`).set('Authorization', 'Bearer alice').redirects(0);
    expect(res.status).toBe(200);
    expect(res.text).toBe('bytes-from-host');
  });

  it('a hook answering with a non-native thenable is awaited, never taken for a grant', async () => {
    const app = express();
    // Resolves to "no": a thenable object must not be mistaken for a grant object.
    const thenable = { then: (resolve: (v: undefined) => void) => resolve(undefined) };
    app.use(registryRedirect({ signer: azure, authorize: () => thenable as unknown as undefined }));
    app.get('/v2/{*rest}', (_req, res) => { res.status(404).send('host says no'); });
    const res = await request(app).get(`/v2/team/app/blobs/${D1}`).redirects(0);
    expect(res.status).toBe(404);
    expect(res.headers.location).toBeUndefined();
  });

  it('a synchronous hook and a synchronous signer answer within the same call (no promise on the hot path)', async () => {
    const mw = registryRedirect({ signer: azure, authorize: () => ({ size: 1 }) });
    const endedSynchronously: boolean[] = [];
    const server = http.createServer((req, res) => {
      mw(req, res, () => res.end());
      endedSynchronously.push(res.writableEnded);
    });
    const res = await request(server).get(`/v2/team/app/blobs/${D1}`).redirects(0);
    expect(res.status).toBe(307);
    expect(endedSynchronously).toEqual([true]);
  });

  it('a throwing authorize hook never crashes the app: the host answers', async () => {
    const app = express();
    app.use(registryRedirect({ signer: azure, authorize: () => { throw new Error('db down'); } }));
    app.get('/v2/{*rest}', (_req, res) => { res.status(200).send('host'); });
    const res = await request(app).get(`/v2/team/app/blobs/${D1}`).redirects(0);
    expect(res.status).toBe(200);
    expect(res.text).toBe('host');
  });
});
