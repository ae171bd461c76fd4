import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { createClientIpResolver } from '../../src/client-ip.js';
import { compilePolicy, credentialSubject, parseSize, stickyBucket, type RolloutPolicy } from '../../src/rollout.js';

interface Req {
  ip?: string;
  headers?: Record<string, string>;
}
function req({ ip = '203.0.113.1', headers = {} }: Req = {}): IncomingMessage {
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  return { socket: { remoteAddress: ip }, headers: lower } as unknown as IncomingMessage;
}

const signerNames = ['default', 's3', 'cdn'];
const compile = (policy: RolloutPolicy | undefined, trusted: string[] = []) =>
  compilePolicy(policy, { signerNames, clientIp: createClientIpResolver(trusted) });
const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
const jwt = (claims: object) => `Bearer ${Buffer.from('{"alg":"RS256"}').toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.c2ln`;

describe('no policy', () => {
  it('redirects every authorized blob with the default signer', () => {
    const p = compile(undefined);
    expect(p.mode).toBe('enforce');
    expect(p.decide(req(), 'any/repo', undefined)).toEqual({ action: 'redirect', signer: 'default', reason: 'default' });
  });
});

describe('rule evaluation (first match wins)', () => {
  // The issue's example policy, extended with the other conditions.
  const policy: RolloutPolicy = {
    rules: [
      { name: 'offline-nodes', networks: ['10.99.0.0/16'], action: 'proxy' },
      { name: 'vpc', networks: ['10.0.0.0/8', 'fd00::/8'], action: 'redirect', signer: 's3' },
      { repositories: ['internal/**', '!internal/public/**'], action: 'proxy' },
      { name: 'resumes', range: true, action: 'proxy' },
      { name: 'tiny', minSize: '1MiB', action: 'redirect', signer: 'cdn' },
      { name: 'no-regclient', userAgents: { deny: ['^regclient/'] }, percent: 100, action: 'redirect' },
    ],
    default: 'proxy',
  };
  const p = compile(policy);
  const MB = 2 ** 20;

  it.each<[string, Req, string, number | undefined, string, string, string]>([
    ['offline network beats the VPC rule (order)', { ip: '10.99.1.1' }, 'team/app', MB, 'proxy', 'none', 'rule:offline-nodes'],
    ['VPC client -> s3', { ip: '10.1.2.3' }, 'team/app', MB, 'redirect', 's3', 'rule:vpc'],
    ['VPC client over IPv6 -> s3', { ip: 'fd00::5' }, 'team/app', MB, 'redirect', 's3', 'rule:vpc'],
    ['VPC client on a dual-stack socket -> s3', { ip: '::ffff:10.1.2.3' }, 'internal/x', MB, 'redirect', 's3', 'rule:vpc'],
    ['internal repo from outside -> proxy', { ip: '198.51.100.1' }, 'internal/secret/db', MB, 'proxy', 'none', 'rules[2]'],
    ['the globstar prefix itself matches', { ip: '198.51.100.1' }, 'internal', MB, 'proxy', 'none', 'rules[2]'],
    ['excluded internal/public falls through to the next rules', { ip: '198.51.100.1' }, 'internal/public/web', MB, 'redirect', 'cdn', 'rule:tiny'],
    ['ranged request -> proxy', { headers: { Range: 'bytes=10-' } }, 'team/app', MB, 'proxy', 'none', 'rule:resumes'],
    ['big blob -> cdn', {}, 'team/app', MB, 'redirect', 'cdn', 'rule:tiny'],
    ['small blob skips minSize, reaches the UA rule', { headers: { 'User-Agent': 'containerd/2.0' } }, 'team/app', 10, 'redirect', 'default', 'rule:no-regclient'],
    ['unknown size never matches minSize', { headers: { 'User-Agent': 'skopeo/1.9' } }, 'team/app', undefined, 'redirect', 'default', 'rule:no-regclient'],
    ['denied user agent (case-insensitive) -> default', { headers: { 'User-Agent': 'RegClient/regctl (v0.5)' } }, 'team/app', 10, 'proxy', 'none', 'default'],
  ])('%s', (_why, r, repository, size, action, signer, reason) => {
    expect(p.decide(req(r), repository, size)).toEqual({ action, signer, reason });
  });

  it('range: false matches only requests without Range', () => {
    const q = compile({ rules: [{ range: false, action: 'redirect' }], default: 'proxy' });
    expect(q.decide(req(), 'a', 1).action).toBe('redirect');
    expect(q.decide(req({ headers: { Range: 'bytes=0-' } }), 'a', 1).action).toBe('proxy');
  });

  it('userAgents as a plain list is an allow list; a missing header does not match it', () => {
    const q = compile({ rules: [{ userAgents: ['^containerd/', '^docker/'], action: 'redirect' }], default: 'proxy' });
    expect(q.decide(req({ headers: { 'User-Agent': 'docker/27.0 go/1.22' } }), 'a', 1).action).toBe('redirect');
    expect(q.decide(req({ headers: { 'User-Agent': 'crane/0.20' } }), 'a', 1).action).toBe('proxy');
    expect(q.decide(req(), 'a', 1).action).toBe('proxy');
  });

  it('repositories as { include, exclude }', () => {
    const q = compile({ rules: [{ repositories: { include: ['team/*'], exclude: ['team/legacy'] }, action: 'redirect' }], default: 'proxy' });
    expect(q.decide(req(), 'team/app', 1).action).toBe('redirect');
    expect(q.decide(req(), 'team/legacy', 1).action).toBe('proxy');
    expect(q.decide(req(), 'team/app/sub', 1).action).toBe('proxy'); // `*` stays in one segment
  });

  it('a default with a signer', () => {
    expect(compile({ default: { action: 'redirect', signer: 'cdn' } }).decide(req(), 'a', 1)).toEqual({ action: 'redirect', signer: 'cdn', reason: 'default' });
  });

  it('the override header forces proxy, whatever the rules say', () => {
    const q = compile({ rules: [{ action: 'redirect' }], default: 'redirect', overrideHeader: 'X-Registry-Redirect-Bypass' });
    expect(q.decide(req(), 'a', 1).action).toBe('redirect');
    expect(q.decide(req({ headers: { 'X-Registry-Redirect-Bypass': '1' } }), 'a', 1)).toEqual({ action: 'proxy', signer: 'none', reason: 'override_header' });
  });

  it('the override header is off by default', () => {
    const q = compile({ default: 'redirect' });
    expect(q.decide(req({ headers: { 'X-Registry-Redirect-Bypass': '1' } }), 'a', 1).action).toBe('redirect');
  });

  it('networks use the client address behind trusted proxies only', () => {
    const q = compile({ rules: [{ networks: ['10.0.0.0/8'], action: 'proxy' }], default: 'redirect' }, ['127.0.0.1/32']);
    expect(q.decide(req({ ip: '127.0.0.1', headers: { 'X-Forwarded-For': '10.1.1.1' } }), 'a', 1).action).toBe('proxy');
    expect(q.decide(req({ ip: '198.51.100.1', headers: { 'X-Forwarded-For': '10.1.1.1' } }), 'a', 1).action).toBe('redirect');
  });

  it('shadow mode is reported', () => {
    expect(compile({ default: 'redirect', mode: 'shadow' }).mode).toBe('shadow');
  });
});

describe('sticky percent', () => {
  const ips = Array.from({ length: 10_000 }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);

  it('10 000 synthetic clients at 30% -> 30% +- 2%, and every client always gets the same answer', () => {
    const p = compile({ rules: [{ percent: 30, action: 'redirect' }], default: 'proxy' });
    const first = ips.map((ip) => p.decide(req({ ip }), 'team/app', 1).action);
    const share = first.filter((a) => a === 'redirect').length / ips.length;
    expect(share).toBeGreaterThanOrEqual(0.28);
    expect(share).toBeLessThanOrEqual(0.32);
    // Same client, another repository, another request object, a second compile (another replica).
    const again = compile({ rules: [{ percent: 30, action: 'redirect' }], default: 'proxy' });
    const second = ips.map((ip) => again.decide(req({ ip }), 'other/repo', 99).action);
    expect(second).toEqual(first);
  });

  it('raising the percentage keeps every client that was already in (monotone)', () => {
    const at = (percent: number) => compile({ rules: [{ percent, action: 'redirect' }], default: 'proxy' });
    const five = at(5);
    const twenty = at(20);
    const inAtFive = ips.filter((ip) => five.decide(req({ ip }), 'a', 1).action === 'redirect');
    expect(inAtFive.length).toBeGreaterThan(350);
    for (const ip of inAtFive) expect(twenty.decide(req({ ip }), 'a', 1).action).toBe('redirect');
  });

  it('0% matches nobody and 100% everybody', () => {
    const zero = compile({ rules: [{ percent: 0, action: 'redirect' }], default: 'proxy' });
    const all = compile({ rules: [{ percent: 100, action: 'redirect' }], default: 'proxy' });
    for (const ip of ips.slice(0, 500)) {
      expect(zero.decide(req({ ip }), 'a', 1).action).toBe('proxy');
      expect(all.decide(req({ ip }), 'a', 1).action).toBe('redirect');
    }
  });

  it('a different seed draws a different cohort of the same size', () => {
    const a = compile({ rules: [{ percent: 30, action: 'redirect' }], default: 'proxy' });
    const b = compile({ rules: [{ percent: 30, action: 'redirect' }], default: 'proxy', seed: '2026-05' });
    const inA = ips.filter((ip) => a.decide(req({ ip }), 'x', 1).action === 'redirect');
    const inB = ips.filter((ip) => b.decide(req({ ip }), 'x', 1).action === 'redirect');
    expect(Math.abs(inB.length - 3_000)).toBeLessThan(200);
    const overlap = inA.filter((ip) => inB.includes(ip)).length;
    expect(overlap / inA.length).toBeLessThan(0.4); // independent cohorts overlap ~30%
  });

  it('stickyBucket is a fixed function (replicas and versions agree)', () => {
    expect([stickyBucket('ip:10.0.0.1'), stickyBucket('ip:10.0.0.2'), stickyBucket('user:alice', 's')]).toEqual([
      stickyBucket('ip:10.0.0.1'),
      stickyBucket('ip:10.0.0.2'),
      stickyBucket('user:alice', 's'),
    ]);
    for (const key of ips.slice(0, 1000)) {
      const b = stickyBucket(key);
      expect(b).toBeGreaterThanOrEqual(0);
      expect(b).toBeLessThan(10_000);
      expect(Number.isInteger(b)).toBe(true);
    }
  });

  describe("clientKey: 'subject'", () => {
    const p = compile({ rules: [{ percent: 50, action: 'redirect' }], default: 'proxy', clientKey: 'subject' });
    const users = Array.from({ length: 400 }, (_, i) => `user${i}`);

    it('the same user gets the same answer from any address and with any password', () => {
      for (const user of users) {
        const a = p.decide(req({ ip: '198.51.100.1', headers: { Authorization: basic(user, 'pw-1') } }), 'a', 1).action;
        const b = p.decide(req({ ip: '203.0.113.77', headers: { Authorization: basic(user, 'rotated-pw') } }), 'a', 1).action;
        const c = p.decide(req({ ip: '10.0.0.9', headers: { Authorization: jwt({ sub: user, exp: 1 }) } }), 'a', 1).action;
        expect(new Set([a, b, c]).size).toBe(1);
      }
      const share = users.filter((u) => p.decide(req({ headers: { Authorization: basic(u, 'x') } }), 'a', 1).action === 'redirect').length / users.length;
      expect(share).toBeGreaterThan(0.4);
      expect(share).toBeLessThan(0.6);
    });

    it('the key is the subject, never the secret', () => {
      expect(credentialSubject(basic('alice', 'hunter2'))).toBe('sub:alice');
      expect(credentialSubject(jwt({ sub: 'svc-ci', secret: 'x' }))).toBe('sub:svc-ci');
      expect(credentialSubject('Bearer opaque-token-value')).toBeUndefined();
      expect(credentialSubject(basic('', 'only-password'))).toBeUndefined();
      expect(credentialSubject(undefined)).toBeUndefined();
      expect(credentialSubject('Bearer a.!!!.c')).toBeUndefined();
    });

    it('anonymous pulls and opaque tokens fall back to the client address', () => {
      const byIp = compile({ rules: [{ percent: 50, action: 'redirect' }], default: 'proxy' });
      for (const ip of ips.slice(0, 300)) {
        expect(p.decide(req({ ip, headers: { Authorization: 'Bearer opaque' } }), 'a', 1).action).toBe(byIp.decide(req({ ip }), 'a', 1).action);
      }
    });
  });

  it('a custom clientKey function', () => {
    const p = compile({ rules: [{ percent: 50, action: 'redirect' }], default: 'proxy', clientKey: (r) => r.headers['x-tenant'] as string | undefined });
    const answers = new Set(['198.51.100.1', '203.0.113.2', '10.0.0.3'].map((ip) => p.decide(req({ ip, headers: { 'X-Tenant': 'acme' } }), 'a', 1).action));
    expect(answers.size).toBe(1);
  });
});

describe('validation at construction names the key and the fix', () => {
  it.each<[string, unknown, RegExp]>([
    ['missing default', { rules: [] }, /rollout\.default: write "redirect" \(rules are exceptions\) or "proxy"/],
    ['bad action', { rules: [{ action: 'redirct' }], default: 'proxy' }, /rollout\.rules\[0\]\.action: write "redirect" or "proxy"/],
    ['unknown rule key with a hint', { rules: [{ action: 'proxy', network: ['10.0.0.0/8'] }], default: 'proxy' }, /rollout\.rules\[0\]\.network: unknown key; did you mean "networks"\?/],
    ['percent out of range', { rules: [{ percent: 130, action: 'redirect' }], default: 'proxy' }, /rollout\.rules\[0\]\.percent: write a number from 0 to 100/],
    ['percent as text', { rules: [{ percent: '30%', action: 'redirect' }], default: 'proxy' }, /rollout\.rules\[0\]\.percent: write a number from 0 to 100/],
    ['bad CIDR', { rules: [{ networks: ['10.0.0.0/8', '10.0.0/8'], action: 'proxy' }], default: 'redirect' }, /rollout\.rules\[0\]\.networks\[1\]: "10\.0\.0\/8" is not an IP address or CIDR/],
    ['empty networks', { rules: [{ networks: [], action: 'proxy' }], default: 'redirect' }, /rollout\.rules\[0\]\.networks: empty/],
    ['bad regex', { rules: [{ userAgents: ['^docker/(('], action: 'proxy' }], default: 'redirect' }, /rollout\.rules\[0\]\.userAgents\[0\]: "\^docker\/\(\(" is not a regular expression/],
    ['bad size', { rules: [{ minSize: '10 lots', action: 'redirect' }], default: 'proxy' }, /rollout\.rules\[0\]\.minSize: "10 lots" is not a size/],
    ['unknown signer with a hint', { rules: [{ percent: 1, action: 'redirect', signer: 'cnd' }], default: 'proxy' }, /rollout\.rules\[0\]\.signer: unknown signer "cnd"; did you mean "cdn"\? Define it under `signers:`/],
    ['signer on a proxy rule', { rules: [{ action: 'proxy', signer: 'cdn' }], default: 'redirect' }, /rollout\.rules\[0\]\.signer: a signer only applies to action "redirect"/],
    ['unknown default signer', { default: { action: 'redirect', signer: 'nope' } }, /rollout\.default\.signer: unknown signer "nope"/],
    ['bad override header', { default: 'redirect', overrideHeader: 'X Bypass' }, /rollout\.overrideHeader: write an HTTP header name/],
    ['bad mode', { default: 'redirect', mode: 'dry-run' }, /rollout\.mode: write "enforce" \(default\) or "shadow"/],
    ['reserved rule name', { rules: [{ name: 'default', action: 'proxy' }], default: 'redirect' }, /rollout\.rules\[0\]\.name: "default" is reserved/],
    ['duplicate rule name', { rules: [{ name: 'a', action: 'proxy' }, { name: 'a', action: 'proxy' }], default: 'redirect' }, /rollout\.rules\[1\]\.name: "a" is used by another rule/],
    ['empty glob', { rules: [{ repositories: [''], action: 'proxy' }], default: 'redirect' }, /rollout\.rules\[0\]\.repositories\[0\]: empty glob/],
  ])('%s', (_why, policy, message) => {
    expect(() => compile(policy as RolloutPolicy)).toThrow(message);
  });
});

describe('parseSize', () => {
  it.each<[number | string, number]>([
    [0, 0],
    [1024, 1024],
    ['512', 512],
    ['1KB', 1000],
    ['1KiB', 1024],
    ['8MiB', 8 * 2 ** 20],
    ['1.5 GB', 1.5e9],
    ['2gib', 2 * 2 ** 30],
  ])('%j -> %i', (text, bytes) => {
    expect(parseSize(text, 'minSize')).toBe(bytes);
  });
  it.each([-1, 1.5, '1 XB', 'MB', ''])('rejects %j', (value) => {
    expect(() => parseSize(value, 'minSize')).toThrow(/minSize: .* is not a size/);
  });
});
