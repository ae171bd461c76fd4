import { describe, expectTypeOf, it } from 'vitest';
import { azureSigner } from '../../src/signers/azure.js';
import { cloudfrontSigner } from '../../src/signers/cloudfront.js';
import { gcsSigner } from '../../src/signers/gcs.js';
import { s3Signer, type S3SignerOptions } from '../../src/signers/s3.js';
import {
  cachedSigner,
  defineSigner,
  hmacSigner,
  originSigner,
  createOriginHandler,
  type OriginSigner,
  type CacheResult,
  type CachedSignerOptions,
  type HmacSignerOptions,
  type SignedUrl,
  type Signer,
  type SignRequest,
} from '../../src/index.js';

describe('signer factories', () => {
  it('all return the Signer contract', () => {
    expectTypeOf(s3Signer).returns.toEqualTypeOf<Signer>();
    expectTypeOf(gcsSigner).returns.toEqualTypeOf<Signer>();
    expectTypeOf(cloudfrontSigner).returns.toEqualTypeOf<Signer>();
    expectTypeOf(hmacSigner).returns.toEqualTypeOf<Signer>();
    expectTypeOf(azureSigner).returns.toEqualTypeOf<Signer>();
    expectTypeOf(cachedSigner).returns.toEqualTypeOf<Signer>();
    expectTypeOf(originSigner).returns.toEqualTypeOf<OriginSigner>();
    expectTypeOf<OriginSigner>().toExtend<Signer>();
    expectTypeOf(createOriginHandler).parameter(0).toEqualTypeOf<OriginSigner['origin']>();
  });

  it('options mirror the config keys and take a layout function', () => {
    expectTypeOf<S3SignerOptions>().toHaveProperty('forcePathStyle').toEqualTypeOf<boolean | undefined>();
    expectTypeOf<S3SignerOptions['layout']>().toExtend<'distribution' | 'oci-per-repo' | ((repository: string, digest: string) => string) | undefined>();
    expectTypeOf<HmacSignerOptions['preset']>().toEqualTypeOf<'cloudflare' | 'nginx-secure-link' | 'google-cdn' | undefined>();
    // @ts-expect-error bucket is required
    s3Signer({ region: 'us-east-1' });
  });

  it('defineSigner keeps the signer type; sign may be sync or async', () => {
    const sync = defineSigner({ name: 'a', sign: (r: SignRequest) => ({ url: r.digest, expiresAt: 0 }) });
    expectTypeOf(sync.sign).returns.toEqualTypeOf<{ url: string; expiresAt: number }>();
    const asyncSigner = defineSigner({ name: 'b', sign: async (): Promise<SignedUrl> => ({ url: 'x', expiresAt: 0 }) });
    expectTypeOf(asyncSigner).toExtend<Signer>();
    // @ts-expect-error sign must return { url, expiresAt }
    defineSigner({ name: 'c', sign: () => 'https://x' });
  });

  it('the cache reports hit, miss or refresh', () => {
    expectTypeOf<CachedSignerOptions['onResult']>().toEqualTypeOf<((result: CacheResult, signer: string) => void) | undefined>();
    expectTypeOf<CacheResult>().toEqualTypeOf<'hit' | 'miss' | 'refresh'>();
  });
});
