import { describe, expectTypeOf, it } from 'vitest';
import type { RegistryRedirectOptions, RolloutDecision, RolloutPolicy, RolloutRule } from '../../src/index.js';

describe('rollout types', () => {
  it('a policy needs a default; rules need an action', () => {
    expectTypeOf<{ rules: [] }>().not.toExtend<RolloutPolicy>();
    expectTypeOf<{ default: 'proxy' }>().toExtend<RolloutPolicy>();
    expectTypeOf<{ default: { action: 'redirect'; signer: 'cdn' } }>().toExtend<RolloutPolicy>();
    expectTypeOf<{ percent: 5 }>().not.toExtend<RolloutRule>();
    expectTypeOf<{ percent: 5; action: 'redirect'; signer: 'cdn' }>().toExtend<RolloutRule>();
    expectTypeOf<{ action: 'maybe' }>().not.toExtend<RolloutRule>();
  });

  it('the options accept the issue-4 keys', () => {
    expectTypeOf<RegistryRedirectOptions['rollout']>().toEqualTypeOf<RolloutPolicy | undefined>();
    expectTypeOf<RegistryRedirectOptions['trustedProxies']>().toEqualTypeOf<readonly string[] | undefined>();
    expectTypeOf<RolloutDecision['action']>().toEqualTypeOf<'redirect' | 'proxy'>();
  });
});
