/**
 * Origin mode opens files named by URL paths, so its path gate is fuzzed like the blob path parser
 * (fast-check). Invariants: the gate never throws; whatever it accepts is exactly the key the
 * layout builds from a grammar-valid digest (and repository), byte for byte, so nothing was
 * decoded, normalised or dropped; no accepted key has a `.`/`..` segment, `%`, `\`, an empty
 * segment, or a registry internal (`_uploads`, `_manifests`, `_layers`, `repositories/`, zot's
 * `.uploads`, `index.json`), and a distribution key is always under `blobs/`. End to end, with a valid token, random paths against a real root
 * that holds a secret outside and registry internals inside never return their bytes.
 */
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveLayout } from '../../src/layouts.js';
import { createOriginHandler, parseOriginKey } from '../../src/origin/server.js';
import { isValidDigest } from '../../src/routes.js';
import { originSigner } from '../../src/signers/origin.js';

const HEX = '0123456789abcdef';
const hex = (n: number) => fc.string({ unit: fc.constantFrom(...HEX), minLength: n, maxLength: n });
const segment = fc.oneof(
  fc.constantFrom('docker', 'registry', 'v2', 'blobs', 'sha256', 'sha512', 'sha384', 'md5', 'data', 'repositories', '_uploads', '_manifests', '_layers', '.uploads', 'index.json'),
  fc.constantFrom('..', '.', '', '%2e%2e', '%2E%2E', '%2f', '%2F', '%5c', '\\', '%00', 'link', 'team', 'app', 'A', 'é'),
  hex(2),
  hex(64),
  hex(128),
  hex(64).map((h) => h.toUpperCase()),
);
const path = fc.array(segment, { minLength: 1, maxLength: 10 }).map((s) => s.join('/'));
const distributionLike = fc
  .tuple(fc.constantFrom('sha256', 'sha512', 'sha384'), hex(64), fc.constantFrom('', '/', '/..', '%2f..', '/data/..'))
  .map(([alg, h, tail]) => `docker/registry/v2/blobs/${alg}/${h.slice(0, 2)}/${h}/data${tail}`);
const anything = fc.oneof(path, distributionLike, fc.string({ unit: 'grapheme-ascii', maxLength: 200 }));

const layouts = (['distribution', 'oci-per-repo'] as const).map((layout) => ({ layout, keyOf: resolveLayout(layout) }));
const FORBIDDEN = /(^|\/)(\.|\.\.)?(\/|$)|%|\\|(^|\/)(_uploads|_manifests|_layers|\.uploads|index\.json)(\/|$)/;

describe('parseOriginKey (fast-check)', () => {
  it('accepts only keys the layout derives from a valid digest, byte for byte', () => {
    fc.assert(
      fc.property(anything, (key) => {
        for (const origin of layouts) {
          const target = parseOriginKey(origin, key);
          if (!target) continue;
          expect(isValidDigest(target.digest)).toBe(true);
          expect(target.key).toBe(key);
          expect(FORBIDDEN.test(key), key).toBe(false);
          // distribution keeps repositories/ (links, uploads, manifests) beside blobs/: only blobs/ is served.
          if (origin.layout === 'distribution') expect(key.startsWith('docker/registry/v2/blobs/')).toBe(true);
        }
      }),
      { numRuns: 3_000 },
    );
  });
});

describe('the origin handler on a real root, every random path with a valid token', () => {
  let dir: string;
  let server: http.Server;
  let base: string;
  let query: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'origin-fuzz-'));
    const root = join(dir, 'root');
    await mkdir(join(root, 'docker/registry/v2/repositories/team/app/_uploads/x'), { recursive: true });
    await writeFile(join(root, 'docker/registry/v2/repositories/team/app/_uploads/x/data'), 'INTERNAL-UPLOAD');
    await writeFile(join(dir, 'secret'), 'OUTSIDE-SECRET');
    await mkdir(join(root, 'docker/registry/v2/blobs/sha256/aa'), { recursive: true });
    await symlink(dir, join(root, 'docker/registry/v2/blobs/sha256/aa', 'a'.repeat(64)));
    const signer = originSigner({ root, key: 'fuzz-key-0123456789abcdef', baseUrl: 'http://127.0.0.1:1/_origin' });
    const handle = createOriginHandler(signer.origin);
    server = http.createServer((req, res) => {
      if (!handle(req, res)) {
        res.writeHead(418);
        res.end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    query = new URL((signer.sign({ repository: 'team/app', digest: `sha256:${'a'.repeat(64)}`, method: 'GET' }) as { url: string }).url).search;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await rm(dir, { recursive: true, force: true });
  });

  const get = (path: string): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      const [host, port] = base.split(':');
      const req = http.request({ host, port, path, agent: false }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });

  it('never answers 200 and never returns internal or outside bytes', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(path, distributionLike).filter((p) => !/[^\x21-\x7e]/.test(p)), async (p) => {
        const res = await get(`/_origin/${p}${query}`);
        expect(res.status).not.toBe(200);
        expect(res.body).not.toMatch(/INTERNAL-UPLOAD|OUTSIDE-SECRET/);
      }),
      { numRuns: 300 },
    );
  });
});
