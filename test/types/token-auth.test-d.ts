import type { KeyObject } from 'node:crypto';
import { describe, expectTypeOf, it } from 'vitest';
import type { DecisionCacheOptions, RegistryRedirectOptions, TokenAlgorithm, TokenAuthOptions } from '../../src/index.js';

describe('token mode public types', () => {
  it('tokenAuth and decisionCache are optional proxy-mode options', () => {
    expectTypeOf<RegistryRedirectOptions['tokenAuth']>().toEqualTypeOf<TokenAuthOptions | undefined>();
    expectTypeOf<RegistryRedirectOptions['decisionCache']>().toEqualTypeOf<DecisionCacheOptions | false | undefined>();
  });

  it('issuer, service and realm are required; keys accept PEM text, Buffers or KeyObjects', () => {
    expectTypeOf<Pick<TokenAuthOptions, 'issuer' | 'service' | 'realm'>>().toEqualTypeOf<{ issuer: string; service: string; realm: string }>();
    expectTypeOf<KeyObject>().toExtend<NonNullable<TokenAuthOptions['publicKeys']>[number]>();
    expectTypeOf<Buffer>().toExtend<NonNullable<TokenAuthOptions['rootCertBundle']>>();
  });

  it('algorithms exclude none and HS*', () => {
    expectTypeOf<'RS256'>().toExtend<TokenAlgorithm>();
    expectTypeOf<'ES256'>().toExtend<TokenAlgorithm>();
    expectTypeOf<'none'>().not.toExtend<TokenAlgorithm>();
    expectTypeOf<'HS256'>().not.toExtend<TokenAlgorithm>();
  });
});
