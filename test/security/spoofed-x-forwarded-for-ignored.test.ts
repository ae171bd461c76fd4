/**
 * Prevents: a client choosing its own network (and so its rollout rule, signer, or percent bucket)
 * by sending X-Forwarded-For. The header counts only from configured trusted proxies, and even then
 * only the right-most untrusted hop is the client: entries the client wrote are never read.
 * Real proxy server (startServer from a config), real sockets from distinct loopback addresses.
 */
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/server/config.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { silentLogger } from '../../src/log.js';
import { BASIC, digestOf, startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.js';
import { AZURITE_ACCOUNT_KEY as AZURITE_KEY } from '../support/azurite.js';

const BLOB = Buffer.from('blob bytes for the spoofing test');
const DIGEST = digestOf(BLOB);
const TRUSTED_PROXY = '127.0.0.3';

/** One blob GET from `localAddress`, with extra raw header lines. */
function blobGet(base: string, localAddress: string, headers: Array<[string, string]>): Promise<{ status: number; location?: string }> {
  const url = new URL(`${base}/v2/team/app/blobs/${DIGEST}`);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, path: url.pathname, localAddress, agent: false, timeout: 10_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, location: res.headers.location }));
    });
    req.setHeader('Authorization', BASIC);
    // Repeated header lines (several X-Forwarded-For) need the raw form.
    const grouped = new Map<string, string[]>();
    for (const [k, v] of headers) grouped.set(k, [...(grouped.get(k) ?? []), v]);
    for (const [k, v] of grouped) req.setHeader(k, v.length === 1 ? v[0]! : v);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

let upstream: FakeUpstream;
const running: RunningServer[] = [];

async function proxy(trustedProxies: string[] | undefined): Promise<string> {
  const azure = (container: string) => ({ azure: { account: 'devstoreaccount1', accountKey: AZURITE_KEY, container, endpoint: 'http://127.0.0.2:10000/devstoreaccount1' } });
  const config = buildConfig({
    listen: '127.0.0.1:0',
    upstream: upstream.url,
    signer: azure('public'),
    signers: { vpc: azure('vpc') },
    ...(trustedProxies ? { trustedProxies } : {}),
    rollout: {
      // Only VPC clients get redirects (to VPC-only storage); everyone else is proxied.
      rules: [{ name: 'vpc', networks: ['10.0.0.0/8'], action: 'redirect', signer: 'vpc' }],
      default: 'proxy',
    },
    log: { requests: false },
  });
  const server = await startServer(config, silentLogger);
  running.push(server);
  return server.url;
}

beforeAll(async () => {
  upstream = await startFakeUpstream();
  upstream.blobs.set('team/app', new Map([[DIGEST, BLOB]]));
});
afterAll(async () => {
  await Promise.all(running.map((r) => r.close()));
  await upstream.close();
});

describe('spoofed X-Forwarded-For is ignored', () => {
  let base: string;
  beforeAll(async () => {
    base = await proxy([`${TRUSTED_PROXY}/32`]);
  });

  it('positive control: the trusted proxy reporting a VPC client gets the VPC redirect', async () => {
    const res = await blobGet(base, TRUSTED_PROXY, [['X-Forwarded-For', '10.1.2.3']]);
    expect(res.status).toBe(307);
    expect(res.location).toContain('/devstoreaccount1/vpc/');
  });

  it.each<[string, string, Array<[string, string]>]>([
    ['an untrusted peer claiming a VPC address', '127.0.0.1', [['X-Forwarded-For', '10.1.2.3']]],
    ['an untrusted peer with several header lines', '127.0.0.1', [['X-Forwarded-For', '10.1.2.3'], ['X-Forwarded-For', '10.4.5.6']]],
    ['a client that prepended a VPC address before the trusted proxy appended its real one', TRUSTED_PROXY, [['X-Forwarded-For', '10.1.2.3, 198.51.100.9']]],
    ['a client hiding behind a malformed entry', TRUSTED_PROXY, [['X-Forwarded-For', '10.1.2.3, not-an-ip']]],
    ['an IPv4-mapped spoof from an untrusted peer', '127.0.0.1', [['X-Forwarded-For', '::ffff:10.1.2.3']]],
    ['X-Real-IP is not a client address source', '127.0.0.1', [['X-Real-IP', '10.1.2.3']]],
    ['Forwarded is not a client address source', TRUSTED_PROXY, [['Forwarded', 'for=10.1.2.3']]],
  ])('%s is proxied, never redirected to VPC storage', async (_why, from, headers) => {
    const res = await blobGet(base, from, headers);
    expect(res.status).toBe(200);
    expect(res.location).toBeUndefined();
  });

  it('without trustedProxies the header is never read, whoever sends it', async () => {
    const noTrust = await proxy(undefined);
    for (const from of ['127.0.0.1', TRUSTED_PROXY]) {
      const res = await blobGet(noTrust, from, [['X-Forwarded-For', '10.1.2.3']]);
      expect(res.status).toBe(200);
      expect(res.location).toBeUndefined();
    }
  });
});
