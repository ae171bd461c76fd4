import { describe, expectTypeOf, it } from 'vitest';
import type { RegistryRedirectOptions, UpstreamTlsOptions } from '../../src/index.js';

describe('upstreamTLS types', () => {
  it('takes https.Agent TLS options and nothing else', () => {
    expectTypeOf<RegistryRedirectOptions['upstreamTLS']>().toEqualTypeOf<UpstreamTlsOptions | undefined>();
    expectTypeOf<{ ca: Buffer; cert: string; key: string; rejectUnauthorized: false }>().toExtend<UpstreamTlsOptions>();
    // @ts-expect-error agent-level settings are not TLS options
    const pooled: UpstreamTlsOptions = { keepAlive: true };
    void pooled;
  });
});
