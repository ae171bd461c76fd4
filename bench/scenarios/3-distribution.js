// Scenario 3: registry-redirect in front of distribution 2.8 (upstream mode, decision cache on)
// vs distribution's own 307 path (s3-aws driver against s3rver, redirect enabled), same blobs.
// Also the uncached path: one authorizing HEAD to distribution per request, against that 307 (3b)
// and against distribution (filesystem storage) answering the same HEAD directly (3c, target 7).
import { readFileSync } from 'node:fs';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { S3RVER_KEYS, azureBlock, s3Block } from '../lib/lib.js';
import { compareRounds } from '../lib/load.js';
import { registryObjects, startRegistry, startS3rver } from '../lib/peers.js';
import { expectRedirect, startServe } from '../lib/servers.js';
import { summarize } from './1-fast-path.js';

export const title = 'In front of distribution 2.8 vs its own 307 path (s3 driver, s3rver)';
const fmtRps = (s) => `${Math.round(s.rps).toLocaleString('en-US')} req/s`;

/**
 * Copies the part of a filesystem registry's tree that `repository` needs (its links, and the
 * blobs of `image`) into the bucket: distribution's s3 driver cannot push to s3rver (no
 * ListMultipartUploads), so the bucket is seeded the way a shared storage would be.
 */
async function seedBucket(s3, storageRoot, repository, image) {
  const hexes = [image.manifest, image.config, ...image.layers].map((b) => b.digest.slice(7));
  const keep = (key) => key.includes(`/repositories/${repository}/`) || hexes.some((h) => key.includes(`/blobs/sha256/${h.slice(0, 2)}/${h}/`));
  const client = new S3Client({ endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { ...S3RVER_KEYS } }); // a copy: the SDK writes into it
  const objects = registryObjects(storageRoot, keep);
  for (const o of objects) await client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: o.key, Body: readFileSync(o.file) }));
  client.destroy();
  return objects.length;
}

export async function run(ctx) {
  const fs = await ctx.shared.registry();
  const s3 = await startS3rver({ dir: ctx.dir });
  const copied = await seedBucket(s3, fs.storageRoot, 'bench/small', fs.small);
  const distribution = await startRegistry({
    dir: ctx.dir,
    name: 'registry-s3',
    redirect: true,
    storage: { s3: { accesskey: S3RVER_KEYS.accessKeyId, secretkey: S3RVER_KEYS.secretAccessKey, region: 'us-east-1', regionendpoint: s3.endpoint, bucket: s3.bucket, secure: false, v4auth: true } },
  });
  const signer = s3Block(s3.endpoint) ?? azureBlock();
  const signerLabel = signer.s3 ? 's3 signer' : 'azure signer (no s3 signer in this build; only the 307 is measured, not followed)';
  // This distribution redirects blob HEADs too (307 to s3rver): the documented opt-in that takes
  // its 3xx on the probe as a grant. Without it every request would pass through to distribution.
  const cached = await startServe({ upstream: distribution.url, signer, log: { level: 'warn', requests: false }, authorize: { acceptUpstreamRedirect: true } }, { dir: ctx.dir, name: 'serve-s3-cached' });
  const uncached = await startServe({ upstream: distribution.url, signer, log: { level: 'warn', requests: false }, authorize: { acceptUpstreamRedirect: true, cache: { ttl: 0 } } }, { dir: ctx.dir, name: 'serve-s3-uncached' });

  const image = fs.small;
  const paths = [image.config, ...image.layers].map((b) => `/v2/bench/small/blobs/${b.digest}`);
  const own = await expectRedirect(distribution.url, paths[0]);
  if (!own.headers.location.startsWith(s3.endpoint)) throw new Error(`distribution redirected to ${own.headers.location}, not to s3rver`);
  // The proxy's own 307 carries Docker-Content-Digest and Cache-Control: no-store; distribution's
  // (s3 driver) neither, so a relayed 307 (the probe not taken as a grant) fails here instead of
  // being benchmarked as the proxy's.
  const isOurs = (res) => res.headers['cache-control'] === 'no-store' && res.headers['docker-content-digest'] !== undefined;
  if (isOurs(own)) throw new Error("distribution's own 307 looks like the proxy's: cannot tell a relayed one apart");
  for (const origin of [cached.origin, uncached.origin]) {
    if (!isOurs(await expectRedirect(origin, paths[0]))) throw new Error(`${origin}: relayed distribution's 307 instead of answering its own`);
  }
  ctx.log(`scenario 3: seeded ${copied} objects into s3rver; distribution ${distribution.url} redirects to ${s3.endpoint}; proxies with ${signerLabel}`);

  // Every variant is charged with the CPU of the whole path: proxy + distribution + s3rver.
  const path = () => [distribution.proc.pid, s3.proc.pid];
  const parts = { distribution: () => [distribution.proc.pid], s3rver: () => [s3.proc.pid] };
  const variants = [
    { name: 'distribution', origin: distribution.url, paths, pids: path, parts },
    { name: 'proxy-cached', origin: cached.origin, paths, pids: () => [...cached.pids(), ...path()], parts: { proxy: cached.pids, ...parts } },
    { name: 'proxy-uncached', origin: uncached.origin, paths, pids: () => [...uncached.pids(), ...path()], parts: { proxy: uncached.pids, ...parts } },
  ];
  const s = await compareRounds({ variants, baseline: 'distribution', rounds: ctx.rounds, seconds: ctx.seconds, connections: ctx.connections, log: ctx.log });

  // Target 7: the proxy with the decision cache off in front of the filesystem distribution (each
  // blob GET: one HEAD upstream, then the 307) vs that HEAD sent straight to distribution. Both run
  // under the same node:http client (wrk and autocannon cannot run HEAD; see load.js).
  const uncachedFs = await startServe({ upstream: fs.url, signer: azureBlock(), log: { level: 'warn', requests: false }, authorize: { cache: { ttl: 0 } } }, { dir: ctx.dir, name: 'serve-fs-uncached' });
  await expectRedirect(uncachedFs.origin, paths[0]);
  const fsParts = { distribution: fs.pids };
  const headVariants = [
    { name: 'distribution-head', origin: fs.url, paths, method: 'HEAD', tool: 'node', pids: fs.pids, parts: fsParts },
    { name: 'proxy-uncached-fs', origin: uncachedFs.origin, paths, tool: 'node', pids: () => [...uncachedFs.pids(), ...fs.pids()], parts: { proxy: uncachedFs.pids, ...fsParts } },
  ];
  ctx.log(`scenario 3 (uncached path): proxy with the decision cache off in front of ${fs.url} vs HEAD straight to it (node:http client)`);
  const h = await compareRounds({ variants: headVariants, baseline: 'distribution-head', rounds: ctx.rounds, seconds: ctx.seconds, connections: ctx.connections, log: ctx.log });
  const by = (v) => v.cpuUsPerRequestBy ?? {};
  return {
    rows: [
      {
        id: '3a',
        title: 'proxy (upstream mode, decision cache on) vs distribution s3 307: req/s',
        ours: fmtRps(s['proxy-cached']),
        baseline: fmtRps(s.distribution),
        value: s['proxy-cached'].rpsRatio,
        unit: 'x',
        target: { op: '>=', value: 5 },
        note: `distribution 2.8.2, s3-aws driver on s3rver, redirect on; proxy: ${signerLabel}`,
      },
      {
        id: '3b',
        title: 'proxy, decision cache off (one upstream HEAD per request) vs distribution 307',
        ours: fmtRps(s['proxy-uncached']),
        baseline: fmtRps(s.distribution),
        value: s['proxy-uncached'].rpsRatio,
        unit: 'x',
        note: 'reported, no target: every request waits for distribution to answer a HEAD, so it cannot beat distribution',
      },
      {
        id: '3c',
        title: 'proxy, decision cache off (one upstream HEAD per request) vs that HEAD straight to distribution (filesystem)',
        ours: fmtRps(h['proxy-uncached-fs']),
        baseline: fmtRps(h['distribution-head']),
        value: h['proxy-uncached-fs'].rpsRatio,
        unit: 'x',
        target: { op: '>=', value: 0.9 },
        note: `node:http keep-alive client, ${ctx.connections} connections; CPU per request: proxy ${by(h['proxy-uncached-fs']).proxy?.toFixed(0)} µs + distribution ${by(h['proxy-uncached-fs']).distribution?.toFixed(0)} µs, vs distribution alone ${by(h['distribution-head']).distribution?.toFixed(0)} µs; rounds ${h['proxy-uncached-fs'].rpsRatioRange.map((r) => r.toFixed(2)).join('-')}x`,
      },
    ],
    details: { seededObjects: copied, ...summarize(s), uncachedPath: summarize(h) },
  };
}
