/**
 * Property-based fuzzing (fast-check) of the rollout rule engine, which runs on every authorized
 * blob GET with client-controlled input (addresses, X-Forwarded-For, User-Agent, Range, arbitrary
 * headers). Invariants: a compiled policy never throws on any request; it only ever answers with
 * a configured signer or `none`, and a bounded reason (a metric label); it is deterministic
 * (sticky: the same client always gets the same answer); raising `percent` never drops a client
 * who was in; the override header can only ever turn a redirect off.
 */
import type { IncomingMessage } from 'node:http';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createClientIpResolver } from '../../src/client-ip.js';
import { compilePolicy, type RolloutPolicy, type RolloutRule } from '../../src/rollout.js';

const SIGNERS = ['default', 'cdn', 'vpc'] as const;
const TRUSTED = ['127.0.0.1/32', '10.0.0.0/16', '::1/128'];

const action = fc.constantFrom('redirect' as const, 'proxy' as const);
const rule: fc.Arbitrary<RolloutRule> = fc
  .record(
    {
      name: fc.stringMatching(/^[A-Za-z0-9_.-]{1,12}$/),
      percent: fc.integer({ min: 0, max: 10_000 }).map((n) => n / 100),
      repositories: fc.oneof(
        fc.array(fc.constantFrom('team/**', '*', 'internal/**', '!internal/public/**', 'a/*/c', '**'), { minLength: 1, maxLength: 3 }),
        fc.record({ include: fc.constantFrom(['**'], ['team/*']), exclude: fc.constantFrom(['secret/**'], []) }),
      ),
      networks: fc.array(fc.constantFrom('10.0.0.0/8', '192.168.1.7', 'fd00::/8', '0.0.0.0/0', '::/0', '203.0.113.0/24'), { minLength: 1, maxLength: 3 }),
      userAgents: fc.oneof(
        fc.array(fc.constantFrom('^containerd/', 'skopeo', '^docker/', '.*'), { minLength: 1, maxLength: 2 }),
        fc.record({ deny: fc.constantFrom(['^regclient/'], ['(a+)+$'], ['(a|aa)+$', '^(a*)*b$']) }),
      ),
      minSize: fc.oneof(fc.integer({ min: 0, max: 1 << 30 }), fc.constantFrom('1MiB', '10MB', '0B')),
      range: fc.boolean(),
    },
    { requiredKeys: [] },
  )
  .chain((conditions) =>
    action.chain((act) =>
      (act === 'redirect' ? fc.option(fc.constantFrom(...SIGNERS), { nil: undefined }) : fc.constant(undefined)).map((signer) => ({
        ...conditions,
        action: act,
        ...(signer === undefined ? {} : { signer }),
      })),
    ),
  );

const policy: fc.Arbitrary<RolloutPolicy> = fc.record(
  {
    // Rule names must be unique (compile refuses duplicates): keep a generated name only once.
    rules: fc.array(rule, { maxLength: 6 }).map((rules) => {
      const seen = new Set<string>();
      return rules.map((r) => {
        if (r.name === undefined || !seen.has(r.name)) {
          if (r.name !== undefined) seen.add(r.name);
          return r;
        }
        const { name: _dropped, ...rest } = r;
        return rest;
      });
    }),
    default: fc.oneof(action, fc.constantFrom(...SIGNERS).map((signer) => ({ action: 'redirect' as const, signer }))),
    clientKey: fc.constantFrom('ip' as const, 'subject' as const),
    seed: fc.string({ maxLength: 8 }),
    overrideHeader: fc.constant('X-Bypass'),
  },
  { requiredKeys: ['default'] },
);

const junk = fc.string({ unit: 'binary', maxLength: 200 });
const address = fc.oneof(fc.ipV4(), fc.ipV6(), fc.constantFrom('127.0.0.1', '::ffff:10.0.3.4', '', 'not-an-ip', '::1'), junk);
const request = fc.record({
  remoteAddress: fc.option(address, { nil: undefined }),
  xff: fc.option(fc.oneof(fc.array(address, { maxLength: 5 }).map((a) => a.join(', ')), junk, fc.array(junk, { maxLength: 3 })), { nil: undefined }),
  userAgent: fc.option(fc.oneof(junk, fc.constantFrom('containerd/2.0', 'skopeo/1.9.3', 'regclient/regctl (v0.8)', 'a'.repeat(5000) + '!', 'a'.repeat(26) + '!')), { nil: undefined }),
  range: fc.option(fc.oneof(junk, fc.constant('bytes=0-')), { nil: undefined }),
  authorization: fc.option(fc.oneof(junk, fc.constant('Basic YWxpY2U6cHc='), fc.constant('Bearer a.b.c'), fc.constant('Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJib2IifQ.')), { nil: undefined }),
  bypass: fc.boolean(),
  repository: fc.oneof(fc.constantFrom('team/app', 'internal/x', 'internal/public/y', 'a/b/c', 'secret/z'), junk),
  size: fc.option(fc.oneof(fc.integer({ min: -5, max: Number.MAX_SAFE_INTEGER }), fc.constant(Number.NaN), fc.constant(Infinity)), { nil: undefined }),
});

type Req = fc.Arbitrary<typeof request extends fc.Arbitrary<infer T> ? T : never> extends fc.Arbitrary<infer U> ? U : never;

function toIncoming(r: Req): IncomingMessage {
  const headers: Record<string, string | string[] | undefined> = {};
  if (r.xff !== undefined) headers['x-forwarded-for'] = r.xff;
  if (r.userAgent !== undefined) headers['user-agent'] = r.userAgent;
  if (r.range !== undefined) headers.range = r.range;
  if (r.authorization !== undefined) headers.authorization = r.authorization;
  if (r.bypass) headers['x-bypass'] = '1';
  return { headers, socket: { remoteAddress: r.remoteAddress } } as unknown as IncomingMessage;
}

const clientIp = createClientIpResolver(TRUSTED);
const compile = (p: RolloutPolicy) => compilePolicy(p, { signerNames: SIGNERS, clientIp });
const REASON = /^(default|override_header|rules\[\d\]|rule:[A-Za-z0-9_.-]{1,12})$/;

describe('rollout rule engine (fast-check)', () => {
  it('never throws; answers only with configured signers and bounded reasons', () => {
    fc.assert(
      fc.property(policy, fc.array(request, { minLength: 1, maxLength: 8 }), (p, requests) => {
        const compiled = compile(p);
        for (const r of requests) {
          const started = performance.now();
          const d = compiled.decide(toIncoming(r), r.repository, r.size);
          // Linear-time user-agent matching: a near-miss against (a+)+$ must not stall a decision.
          expect(performance.now() - started).toBeLessThan(100);
          expect(['redirect', 'proxy']).toContain(d.action);
          if (d.action === 'redirect') expect(SIGNERS).toContain(d.signer);
          else expect(d.signer).toBe('none');
          expect(d.reason).toMatch(REASON);
        }
      }),
      { numRuns: 400 },
    );
  });

  it('is deterministic: the same request always gets the same decision (sticky)', () => {
    fc.assert(
      fc.property(policy, request, (p, r) => {
        const a = compile(p).decide(toIncoming(r), r.repository, r.size);
        const b = compile(p).decide(toIncoming(r), r.repository, r.size);
        expect(b).toEqual(a);
      }),
      { numRuns: 300 },
    );
  });

  it('the override header can only turn a redirect off', () => {
    fc.assert(
      fc.property(policy, request, (p, r) => {
        const d = compile({ ...p, overrideHeader: 'X-Bypass' }).decide(toIncoming({ ...r, bypass: true }), r.repository, r.size);
        expect(d).toMatchObject({ action: 'proxy', reason: 'override_header' });
      }),
      { numRuns: 200 },
    );
  });

  it('raising percent never drops a client who was in', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10_000 }), fc.integer({ min: 0, max: 10_000 }), request, fc.string({ maxLength: 6 }), (x, y, r, seed) => {
        const [low, high] = x <= y ? [x / 100, y / 100] : [y / 100, x / 100];
        const at = (percent: number) => compile({ rules: [{ percent, action: 'redirect' }], default: 'proxy', seed }).decide(toIncoming(r), r.repository, r.size).action;
        if (at(low) === 'redirect') expect(at(high)).toBe('redirect');
        expect(compile({ rules: [{ percent: 0, action: 'redirect' }], default: 'proxy', seed }).decide(toIncoming(r), r.repository, r.size).action).toBe('proxy');
        expect(compile({ rules: [{ percent: 100, action: 'redirect' }], default: 'proxy', seed }).decide(toIncoming(r), r.repository, r.size).action).toBe('redirect');
      }),
      { numRuns: 300 },
    );
  });

  it('a leading unconditional proxy rule proxies everything, whatever the client sends', () => {
    fc.assert(
      fc.property(policy, request, (p, r) => {
        const rest = (p.rules ?? []).filter((x) => x.name !== 'kill');
        const d = compile({ ...p, rules: [{ action: 'proxy', name: 'kill' }, ...rest] }).decide(toIncoming({ ...r, bypass: false }), r.repository, r.size);
        expect(d).toEqual({ action: 'proxy', signer: 'none', reason: 'rule:kill' });
      }),
      { numRuns: 200 },
    );
  });
});
