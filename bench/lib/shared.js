// Peers several scenarios share, started on first use: a filesystem distribution with two images
// pushed by skopeo (a small one, and one of about `imageMiB` for the offload pull).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { makeOciImage, skopeoPush, startRegistry } from './peers.js';

const closers = [];
let registryPromise;

export function shared(ctx) {
  return {
    /** distribution (filesystem storage, no redirects) with `bench/small:v1` and `bench/big:v1`. */
    registry() {
      registryPromise ??= (async () => {
        const registry = await startRegistry({ dir: ctx.dir, name: 'registry-fs' });
        closers.push(() => registry.proc.stop());
        const small = makeOciImage(join(ctx.dir, 'image-small'), [48 * 1024, 96 * 1024], 'small');
        await skopeoPush(small, `docker://${registry.hostPort}/bench/small:v1`);
        // About imageMiB in four layers, like a typical application image.
        const layer = Math.round((ctx.imageMiB * 2 ** 20) / 4);
        mkdirSync(join(ctx.dir, 'image-big'), { recursive: true });
        const big = makeOciImage(join(ctx.dir, 'image-big'), [layer, layer, layer, layer], 'big');
        const pushed = await skopeoPush(big, `docker://${registry.hostPort}/bench/big:v1`);
        ctx.log(`  registry ${registry.url}: pushed bench/small (${small.layers.length} layers) and bench/big (${(big.blobBytes / 2 ** 20).toFixed(1)} MiB, ${pushed.seconds.toFixed(1)} s)`);
        return { ...registry, small, big };
      })();
      return registryPromise;
    },
  };
}

export async function closeShared() {
  while (closers.length) await closers.pop()();
  registryPromise = undefined;
}
