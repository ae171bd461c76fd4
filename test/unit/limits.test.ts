import { describe, expect, it } from 'vitest';
import { createSlotQueue, resolveLimits, withSlot } from '../../src/limits.js';
import { registryRedirect } from '../../src/middleware.js';
import { buildConfig } from '../../src/server/config.js';
import { defaultMaxConnections } from '../../src/server/connection-limits.js';
import { AZURITE_KEY } from '../helpers/constants.js';

const signer = { name: 't', sign: () => ({ url: 'https://cdn.example/x', expiresAt: Date.now() + 60_000 }) };
const base = () => ({
  upstream: 'http://127.0.0.1:5000',
  signer: { azure: { account: 'devstoreaccount1', accountKey: AZURITE_KEY, container: 'registry' } },
});

describe('limits: defaults and validation', () => {
  it('defaults an operator can live with: 1000 pending authorizations, no upload cap, pools 128/256/256', () => {
    expect(resolveLimits(undefined)).toEqual({ maxPendingAuthorizations: 1_000, maxUploadsPerClient: 0, upstreamSockets: { authorize: 128, uploads: 256, passThrough: 256 } });
    expect(resolveLimits({ upstreamSockets: { uploads: 8 } }).upstreamSockets).toEqual({ authorize: 128, uploads: 8, passThrough: 256 });
  });

  it.each([
    [{ maxPendingAuthorizations: 0 }, /limits\.maxPendingAuthorizations: 0 is not a positive whole number; write e\.g\. 1000/],
    [{ maxUploadsPerClient: -1 }, /limits\.maxUploadsPerClient: -1 is not a whole number >= 0.*0 turns the cap off/],
    [{ upstreamSockets: { authorize: 1.5 } }, /limits\.upstreamSockets\.authorize: 1\.5/],
    [{ upstreamSockets: { probes: 4 } }, /limits\.upstreamSockets\.probes: unknown pool; known: authorize, uploads, passThrough/],
    [{ maxConnections: 10 }, /limits\.maxConnections: unknown option/],
  ])('registryRedirect refuses %j at construction, naming the key', (limits, message) => {
    expect(() => registryRedirect({ upstream: 'http://127.0.0.1:5000', signer, limits: limits as never })).toThrow(message);
  });

  it('YAML: limits and timeouts.keepAlive are read, with defaults', () => {
    const config = buildConfig(base());
    expect(config.timeouts.keepAlive).toBe(5_000);
    expect(config.limits).toEqual({ ...resolveLimits(undefined), maxConnections: undefined });
    const set = buildConfig({ ...base(), timeouts: { keepAlive: '30s' }, limits: { maxConnections: 0, maxUploadsPerClient: 8, upstreamSockets: { authorize: 32 } } });
    expect(set.timeouts.keepAlive).toBe(30_000);
    expect(set.limits).toMatchObject({ maxConnections: 0, maxUploadsPerClient: 8, upstreamSockets: { authorize: 32, uploads: 256 } });
  });

  it.each([
    [{ limits: { maxConnections: -5 } }, /limits\.maxConnections/],
    [{ limits: { maxConnection: 5 } }, /maxConnection/],
    [{ limits: { maxPendingAuthorizations: 0 } }, /limits\.maxPendingAuthorizations: 0/],
    [{ limits: { upstreamSockets: { passThrough: 'many' } } }, /limits\.upstreamSockets\.passThrough/],
    [{ timeouts: { keepAlive: 0 } }, /timeouts\.keepAlive/],
  ])('YAML: %j is refused, naming the key', (extra, message) => {
    expect(() => buildConfig({ ...base(), ...extra })).toThrow(message);
  });
});

describe('defaultMaxConnections', () => {
  const limits = (soft: string) => `Limit                     Soft Limit           Hard Limit           Units\nMax open files            ${soft}                 524288               files\n`;
  it('half of what the open-file limit leaves after a reserve', () => {
    expect(defaultMaxConnections(limits('1024'))).toBe(448);
    expect(defaultMaxConnections(limits('65536'))).toBe(32_704);
  });
  it('no limit when the open-file limit is unlimited or unknown', () => {
    expect(defaultMaxConnections(limits('unlimited'))).toBeUndefined();
    expect(defaultMaxConnections('')).toBeUndefined();
  });
});

describe('slot queue', () => {
  it('runs up to `concurrency` at once, then in arrival order; a withdrawn waiter never runs', () => {
    const q = createSlotQueue(2);
    const ran: number[] = [];
    for (let i = 0; i < 2; i++) q.acquire(() => ran.push(i));
    q.acquire(() => ran.push(2));
    const withdraw = q.acquire(() => ran.push(3));
    q.acquire(() => ran.push(4));
    expect(ran).toEqual([0, 1]);
    withdraw();
    q.release();
    expect(ran).toEqual([0, 1, 2]);
    q.release();
    expect(ran).toEqual([0, 1, 2, 4]);
    expect(q.active).toBe(2);
  });

  it('withSlot: a waiter past its deadline is withdrawn with the caller\'s error; the time left is passed on', async () => {
    const q = createSlotQueue(1);
    let release!: () => void;
    const first = withSlot(q, 1_000, () => new Promise<string>((r) => (release = () => r('first'))), () => new Error('late'));
    const late = withSlot(q, 50, () => Promise.resolve('never'), () => new Error('late'));
    await expect(late).rejects.toThrow('late');
    const left: number[] = [];
    const third = withSlot(q, 1_000, (ms) => (left.push(ms), Promise.resolve('third')), () => new Error('late'));
    release();
    await expect(first).resolves.toBe('first');
    await expect(third).resolves.toBe('third');
    expect(left[0]).toBeGreaterThan(0);
    expect(left[0]).toBeLessThanOrEqual(1_000);
    expect(q.active).toBe(0);
  });
});
