import { describe, expectTypeOf, it } from 'vitest';
import type { PushAction, PushOptions, PushRule, RedirectObserver, RegistryRedirectOptions, UploadAction } from '../../src/index.js';

describe('push option', () => {
  it('is an optional middleware option with the config block\'s keys', () => {
    expectTypeOf<RegistryRedirectOptions['push']>().toEqualTypeOf<PushOptions | undefined>();
    expectTypeOf<PushOptions['endpoint']>().toEqualTypeOf<string | URL>();
    expectTypeOf<PushOptions['mode']>().toEqualTypeOf<'steer' | 'redirect' | undefined>();
    expectTypeOf<PushOptions['default']>().toEqualTypeOf<PushAction | undefined>();
    expectTypeOf<PushAction>().toEqualTypeOf<'steer' | 'proxy'>();
  });

  it('rules take the rollout conditions that make sense for an upload POST, and no signer', () => {
    expectTypeOf<PushRule>().toHaveProperty('networks');
    expectTypeOf<PushRule>().toHaveProperty('repositories');
    expectTypeOf<PushRule>().toHaveProperty('percent');
    expectTypeOf<PushRule>().toHaveProperty('userAgents');
    expectTypeOf<PushRule>().not.toHaveProperty('signer');
    expectTypeOf<PushRule>().not.toHaveProperty('minSize');
    expectTypeOf<PushRule>().not.toHaveProperty('range');
  });

  it('observers may count upload decisions', () => {
    expectTypeOf<NonNullable<RedirectObserver['upload']>>().parameters.toEqualTypeOf<[UploadAction, string]>();
  });
});
