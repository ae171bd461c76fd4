import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { compileRollout } from '../../src/index.js';

const req = (ip: string, xff?: string) => ({ socket: { remoteAddress: ip }, headers: xff ? { 'x-forwarded-for': xff } : {} }) as unknown as IncomingMessage;

describe('compileRollout (public): the policy as the middleware compiles it', () => {
  it('decides with named signers and trusted proxies', () => {
    const policy = compileRollout(
      { rules: [{ networks: ['10.0.0.0/8'], action: 'redirect', signer: 'cdn' }], default: 'proxy' },
      { signers: ['cdn'], trustedProxies: ['127.0.0.1/32'] },
    );
    expect(policy.decide(req('127.0.0.1', '10.1.2.3'), 'team/app', 1)).toEqual({ action: 'redirect', signer: 'cdn', reason: 'rules[0]' });
    expect(policy.decide(req('203.0.113.9', '10.1.2.3'), 'team/app', 1)).toEqual({ action: 'proxy', signer: 'none', reason: 'default' });
  });

  it('refuses unknown signers and invalid rules with the key path', () => {
    expect(() => compileRollout({ rules: [{ action: 'redirect', signer: 'cdn' }], default: 'proxy' })).toThrow(/rollout\.rules\[0\]\.signer: unknown signer "cdn"/);
    expect(() => compileRollout({ rules: [{ userAgents: ['(?=x)'], action: 'proxy' }], default: 'redirect' })).toThrow(/rollout\.rules\[0\]\.userAgents\[0\]: .* RE2/);
  });
});
