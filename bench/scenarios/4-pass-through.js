// Scenario 4: pass-through overhead. Manifest GETs and a blob upload (POST, then one PUT with the
// whole body) through the proxy vs straight to distribution; the proxy's RSS is sampled from /proc
// during the upload to show it streams (a buffered body would grow it by the body's size).
import { createHash } from 'node:crypto';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { azureBlock } from '../lib/lib.js';
import { compareRounds, median } from '../lib/load.js';
import { pseudoRandomBytes } from '../lib/peers.js';
import { cpuOf, httpRequest, rssBytes, sampleRss } from '../lib/procs.js';
import { findNginx, nginxProxy } from '../lib/nginx.js';
import { startFixture, startServe } from '../lib/servers.js';
import { summarize } from './1-fast-path.js';

export const title = 'Pass-through: manifest GET and blob upload, proxy vs direct';
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const MiB = 2 ** 20;
const fmtRps = (s) => `${Math.round(s.rps).toLocaleString('en-US')} req/s`;

/** PUT `body` to `url`, 1 MiB per write with backpressure (a client streaming a layer). */
function put(url, body, digest) {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    target.searchParams.set('digest', digest);
    const req = http.request(target, { method: 'PUT', agent: false, headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.setTimeout(120_000, () => req.destroy(new Error('upload timed out')));
    let offset = 0;
    const write = () => {
      while (offset < body.length) {
        const chunk = body.subarray(offset, offset + MiB);
        offset += chunk.length;
        if (!req.write(chunk)) return void req.once('drain', write);
      }
      req.end();
    };
    write();
  });
}

/** One upload with `pid`'s RSS sampled every 10 ms: seconds, RSS before, peak growth, samples taken. */
async function sampledUpload(origin, pid, body, digest) {
  const before = rssBytes(pid);
  const sampler = sampleRss([pid], 10);
  const seconds = await upload(origin, 'bench/upload', body, digest);
  const { peak, samples } = sampler.stop();
  return { seconds, before, growth: peak - before, peak, samples };
}

/** One monolithic upload (POST then PUT ?digest=); returns seconds for the PUT (the bytes). */
async function upload(origin, repository, body, digest) {
  const post = await httpRequest(`${origin}/v2/${repository}/blobs/uploads/`, { method: 'POST', headers: { 'Content-Length': '0' } });
  if (post.status !== 202 || !post.headers.location) throw new Error(`upload POST ${origin}: ${post.status} ${post.body.toString().slice(0, 200)}`);
  const location = new URL(post.headers.location, origin);
  if (location.origin !== origin) throw new Error(`upload Location ${location.origin} does not point at ${origin}`);
  const t0 = performance.now();
  const status = await put(location.href, body, digest);
  const seconds = (performance.now() - t0) / 1_000;
  if (status !== 201) throw new Error(`upload PUT ${origin}: status ${status}`);
  return seconds;
}

export async function run(ctx) {
  const registry = await ctx.shared.registry();
  // serve's defaults (access log on), as a user runs it.
  const proxy = await startServe({ upstream: registry.url, signer: azureBlock(), log: { level: 'info' } }, { dir: ctx.dir, name: 'serve-s4' });
  const nginx = findNginx() && !ctx.smoke ? await nginxProxy({ dir: ctx.dir, upstream: registry.url }) : undefined;
  // The floor of any Node pass-through on this machine: node:http forwarding and nothing else.
  const floor = ctx.smoke ? undefined : await startFixture('forward', { upstream: registry.url });
  const manifestPath = '/v2/bench/small/manifests/v1';
  // The pass-through mix a pull makes besides blobs: the manifest, the API check, the tags list.
  const paths = [manifestPath, '/v2/', '/v2/bench/small/tags/list'];
  const headers = { Accept: MANIFEST };
  for (const origin of [registry.url, proxy.origin, ...(nginx ? [nginx.origin] : []), ...(floor ? [floor.origin] : [])]) {
    const res = await httpRequest(origin + manifestPath, { headers });
    if (res.status !== 200 || res.headers['docker-content-digest'] !== registry.small.manifest.digest) throw new Error(`${origin}${manifestPath}: ${res.status}`);
  }
  const connections = 16;
  ctx.log(`scenario 4: manifest, /v2/ and tags GETs (-c${connections}), ${ctx.rounds} rounds x ${ctx.seconds} s; then ${ctx.uploads} upload(s) of ${ctx.uploadMiB} MiB each way`);
  const variants = [
    { name: 'direct', origin: registry.url, paths, headers, pids: () => [registry.proc.pid] },
    { name: 'proxy', origin: proxy.origin, paths, headers, pids: () => [proxy.proc.pid, registry.proc.pid], parts: { front: () => [proxy.proc.pid], distribution: () => [registry.proc.pid] } },
    ...(nginx ? [{ name: 'nginx', origin: nginx.origin, paths, headers, pids: () => [nginx.proc.pid, registry.proc.pid], parts: { front: () => [nginx.proc.pid], distribution: () => [registry.proc.pid] } }] : []),
    ...(floor ? [{ name: 'floor', origin: floor.origin, paths, headers, pids: () => [floor.proc.pid, registry.proc.pid], parts: { front: () => [floor.proc.pid], distribution: () => [registry.proc.pid] } }] : []),
  ];
  const s = await compareRounds({ variants, baseline: 'direct', rounds: ctx.rounds, seconds: ctx.seconds, connections, log: ctx.log });
  const passRows = [
    {
      id: '4a',
      title: 'manifest, /v2/ and tags GETs through serve (default config) vs straight to distribution: req/s',
      ours: fmtRps(s.proxy),
      baseline: fmtRps(s.direct),
      value: s.proxy.rpsRatio,
      unit: 'x',
      target: { op: '>=', value: 0.9 },
      note: `-c${connections}; CPU per request: serve ${s.proxy.cpuUsPerRequestBy.front.toFixed(0)} µs, distribution behind it ${s.proxy.cpuUsPerRequestBy.distribution.toFixed(0)} µs, distribution alone ${s.direct.cpuUsPerRequest.toFixed(0)} µs`,
    },
  ];
  if (s.nginx) {
    passRows.push(
      {
        id: '4e',
        title: 'the same through nginx proxy_pass (keepalive upstream, 1 worker) vs straight to distribution',
        ours: fmtRps(s.nginx),
        baseline: fmtRps(s.direct),
        value: s.nginx.rpsRatio,
        unit: 'x',
        note: `CPU per request in nginx ${s.nginx.cpuUsPerRequestBy.front.toFixed(0)} µs`,
      },
      {
        id: '4f',
        title: "serve's pass-through ratio / nginx's (same run)",
        ours: `${s.proxy.rpsRatio.toFixed(2)}x`,
        baseline: `${s.nginx.rpsRatio.toFixed(2)}x`,
        value: s.proxy.rpsRatio / s.nginx.rpsRatio,
        unit: 'x',
        target: { op: '>=', value: 0.95 },
      },
      {
        id: '4g',
        title: 'CPU per pass-through request in the front: serve / nginx',
        ours: `${s.proxy.cpuUsPerRequestBy.front.toFixed(0)} µs`,
        baseline: `${s.nginx.cpuUsPerRequestBy.front.toFixed(0)} µs`,
        value: s.proxy.cpuUsPerRequestBy.front / s.nginx.cpuUsPerRequestBy.front,
        unit: 'x',
        target: { op: '<=', value: 2 },
      },
    );
  }
  if (s.floor) {
    passRows.push({
      id: '4h',
      title: 'floor: the smallest node:http keepalive forwarder (no deadlines, errors or header rewriting) vs straight to distribution',
      ours: fmtRps(s.floor),
      baseline: fmtRps(s.direct),
      value: s.floor.rpsRatio,
      unit: 'x',
      note: `CPU per request in the forwarder ${s.floor.cpuUsPerRequestBy.front.toFixed(0)} µs${s.nginx ? ` (${(s.floor.cpuUsPerRequestBy.front / s.nginx.cpuUsPerRequestBy.front).toFixed(1)}x nginx's)` : ''}; serve spends ${(s.proxy.cpuUsPerRequestBy.front / s.floor.cpuUsPerRequestBy.front).toFixed(2)}x the floor`,
    });
  }

  const body = pseudoRandomBytes('upload', ctx.uploadMiB * MiB);
  const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
  // Warm-up: the blob exists afterwards, so every measured upload does the same work upstream.
  await upload(registry.url, 'bench/upload', body, digest);
  const direct = [];
  const proxied = [];
  const viaNginx = [];
  // CPU seconds of the front per upload, to say where the time goes when the ratio is missed.
  const proxyCpu = [];
  const nginxCpu = [];
  let rssGrowth = 0;
  const rssBase = rssBytes(proxy.proc.pid);
  // One unmeasured upload each way first: the proxy's upload path (and distribution's) is not yet
  // compiled by the JIT after the manifest rounds, and the first upload ran ~20% slower than the rest.
  if (!ctx.smoke) {
    await upload(registry.url, 'bench/upload', body, digest);
    await upload(proxy.origin, 'bench/upload', body, digest);
    if (nginx) await upload(nginx.origin, 'bench/upload', body, digest);
  }
  for (let i = 0; i < ctx.uploads; i++) {
    direct.push(await upload(registry.url, 'bench/upload', body, digest));
    globalThis.gc?.();
    const cpuBefore = cpuOf([proxy.proc.pid]);
    const { seconds, before, growth, peak, samples } = await sampledUpload(proxy.origin, proxy.proc.pid, body, digest);
    proxyCpu.push(cpuOf([proxy.proc.pid]) - cpuBefore);
    proxied.push(seconds);
    if (nginx) {
      const nginxBefore = cpuOf([nginx.proc.pid]);
      viaNginx.push(await upload(nginx.origin, 'bench/upload', body, digest));
      nginxCpu.push(cpuOf([nginx.proc.pid]) - nginxBefore);
    }
    rssGrowth = Math.max(rssGrowth, growth);
    ctx.log(`  upload ${i + 1}/${ctx.uploads}: direct ${(ctx.uploadMiB / direct.at(-1)).toFixed(0)} MiB/s, proxy ${(ctx.uploadMiB / proxied.at(-1)).toFixed(0)} MiB/s${nginx ? `, nginx ${(ctx.uploadMiB / viaNginx.at(-1)).toFixed(0)} MiB/s` : ''}; proxy RSS ${(before / MiB).toFixed(1)} -> peak ${(peak / MiB).toFixed(1)} MiB (${samples} samples)`);
  }
  // Streaming means memory does not follow the body: one upload four times as large.
  const bigMiB = ctx.uploadMiB * 4;
  const bigBody = pseudoRandomBytes('upload-big', bigMiB * MiB);
  const bigDigest = `sha256:${createHash('sha256').update(bigBody).digest('hex')}`;
  const { seconds: bigSeconds, before: bigBefore, growth: bigGrowth } = await sampledUpload(proxy.origin, proxy.proc.pid, bigBody, bigDigest);
  ctx.log(`  upload of ${bigMiB} MiB through the proxy: ${(bigMiB / bigSeconds).toFixed(0)} MiB/s; proxy RSS ${(bigBefore / MiB).toFixed(1)} MiB, growth ${(bigGrowth / MiB).toFixed(1)} MiB`);
  // The same upload as the first request of a fresh process: 4d follows the uploads above, whose
  // freed chunk memory the allocator keeps and reuses; here the process has none yet.
  const fresh = await startServe({ upstream: registry.url, signer: azureBlock(), log: { level: 'info' } }, { dir: ctx.dir, name: 'serve-s4-fresh' });
  const { seconds: freshSeconds, before: freshBefore, growth: freshGrowth } = await sampledUpload(fresh.origin, fresh.proc.pid, bigBody, bigDigest);
  const freshAfter = rssBytes(fresh.proc.pid);
  await fresh.proc.stop();
  ctx.log(`  upload of ${bigMiB} MiB through a fresh proxy: ${(bigMiB / freshSeconds).toFixed(0)} MiB/s; proxy RSS ${(freshBefore / MiB).toFixed(1)} MiB, growth ${(freshGrowth / MiB).toFixed(1)} MiB, after ${(freshAfter / MiB).toFixed(1)} MiB`);
  const mibps = (secs) => ctx.uploadMiB / median(secs);
  const uploadRatio = median(proxied.map((p, i) => direct[i] / p));
  const msPerMiB = (cpu) => (median(cpu) * 1_000) / ctx.uploadMiB;
  const nginxUpload = nginx ? `; nginx ${median(viaNginx.map((p, i) => direct[i] / p)).toFixed(2)}x; front CPU per MiB: serve ${msPerMiB(proxyCpu).toFixed(2)} ms, nginx ${msPerMiB(nginxCpu).toFixed(2)} ms` : `; front CPU per MiB: serve ${msPerMiB(proxyCpu).toFixed(2)} ms`;
  return {
    rows: [
      ...passRows,
      {
        id: '4b',
        title: `${ctx.uploadMiB} MiB blob upload through the proxy vs direct: throughput`,
        ours: `${mibps(proxied).toFixed(0)} MiB/s`,
        baseline: `${mibps(direct).toFixed(0)} MiB/s`,
        value: uploadRatio,
        unit: 'x',
        target: { op: '>=', value: 0.9 },
        note: `median of ${ctx.uploads} alternating upload pair(s)${ctx.smoke ? '' : ' after one unmeasured warm-up upload each way'}; monolithic PUT, 1 MiB writes${nginxUpload}`,
      },
      {
        id: '4c',
        title: `proxy RSS growth during ${ctx.uploadMiB} MiB uploads (largest)`,
        ours: `+${(rssGrowth / MiB).toFixed(1)} MiB (from ${(rssBase / MiB).toFixed(0)} MiB)`,
        baseline: `body ${ctx.uploadMiB} MiB`,
        value: rssGrowth / MiB,
        unit: 'MiB',
        note: 'peak VmRSS (sampled every 10 ms) minus VmRSS before the upload; chunk buffers wait for a GC (at most ~28 MiB of them, see 4i), so RSS rises, then stops',
      },
      {
        id: '4d',
        title: `proxy RSS growth during one ${bigMiB} MiB upload (flat = does not follow the body)`,
        ours: `+${(bigGrowth / MiB).toFixed(1)} MiB`,
        baseline: `body ${bigMiB} MiB`,
        value: bigGrowth / MiB,
        unit: 'MiB',
        // A buffering proxy would grow by the whole body; a streaming one by a bounded amount, whatever the size.
        target: { op: '<=', value: 32 },
        note: `target: at most 32 MiB whatever the body (a buffering proxy adds the whole body); compare with 4c: ${ctx.uploadMiB} MiB -> +${(rssGrowth / MiB).toFixed(1)} MiB, ${bigMiB} MiB -> +${(bigGrowth / MiB).toFixed(1)} MiB`,
      },
      {
        id: '4i',
        title: `proxy RSS growth during one ${bigMiB} MiB upload, the first request of a fresh process`,
        ours: `+${(freshGrowth / MiB).toFixed(1)} MiB (from ${(freshBefore / MiB).toFixed(0)} MiB, ${(freshAfter / MiB).toFixed(0)} MiB after)`,
        baseline: `body ${bigMiB} MiB`,
        value: freshGrowth / MiB,
        unit: 'MiB',
        // The same bound as 4d: a process that has not uploaded yet has no freed chunk memory to reuse.
        target: { op: '<=', value: 32 },
        note: "the body chunks (one 64 KiB buffer per socket read) wait for a GC; serve's read-buffer valve runs a minor GC when they hold more than 28 MiB (src/read-buffers.ts), where V8 alone waits for up to ~64 MiB",
      },
    ],
    details: { manifests: summarize(s), uploads: { mib: ctx.uploadMiB, directSeconds: direct, proxySeconds: proxied, nginxSeconds: viaNginx, proxyCpuSeconds: proxyCpu, nginxCpuSeconds: nginxCpu, proxyRssBase: rssBase, proxyRssGrowthBytes: rssGrowth, bigMiB, bigSeconds, bigRssGrowthBytes: bigGrowth, freshSeconds, freshRssBefore: freshBefore, freshRssGrowthBytes: freshGrowth, freshRssAfter: freshAfter } },
  };
}
