/**
 * Threat: an upstream that accepts connections and never answers (hung, overloaded, blackholed by a
 * half-dead load balancer) makes every blob GET wait for an authorizing HEAD, and every other
 * request for its response. Without bounds, requests queue behind the busy connection pool with no
 * deadline while they wait for a socket (the request's own socket timeout starts only once it has
 * one), and pending authorizations pile up without limit, with the memory that holds them.
 * Invariants:
 * - every timeout counts from when the request arrived, waiting for a free upstream connection
 *   included: a 504 comes within `timeouts.authorize` / `timeouts.upstream`, never a multiple;
 * - beyond `limits.maxPendingAuthorizations`, a blob GET is answered at once with 503, `Retry-After`
 *   and an OCI error body, and never reaches the upstream;
 * - the upstream sees no more connections than the pool allows;
 * - once the burst is over, the queue is empty again (the next request gets a 504, not a 503).
 */
import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { buildConfig } from '../../src/server/config.js';
import { startServer } from '../../src/server/server.js';
import type { RunningServer } from '../../src/server/server.js';
import { AZURITE_ACCOUNT_KEY } from '../support/azurite.js';

const AUTHORIZE_MS = 1_000;
const MAX_PENDING = 50;
const PROBE_SOCKETS = 16;
const PASS_SOCKETS = 16;

/** A TCP server that accepts and then says nothing, ever. */
interface HungUpstream {
  url: string;
  /** Connections accepted so far, and the most open at once (both resettable). */
  accepted: number;
  maxOpen: number;
  readonly open: number;
  close(): Promise<void>;
}

async function startHungUpstream(): Promise<HungUpstream> {
  const sockets = new Set<net.Socket>();
  const state = { accepted: 0, maxOpen: 0 };
  const server = net.createServer((socket) => {
    state.accepted++;
    sockets.add(socket);
    state.maxOpen = Math.max(state.maxOpen, sockets.size);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    socket.resume(); // read and drop the request; never write
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get accepted() {
      return state.accepted;
    },
    set accepted(n: number) {
      state.accepted = n;
    },
    get maxOpen() {
      return state.maxOpen;
    },
    set maxOpen(n: number) {
      state.maxOpen = n;
    },
    get open() {
      return sockets.size;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  elapsedMs: number;
}

/** When the proxies under test accepted each connection, by the client's port (same process, same clock). */
const acceptedAt = new Map<number, number>();

function recordAccepts(s: RunningServer): RunningServer {
  s.server.on('connection', (socket) => {
    if (socket.remotePort !== undefined) acceptedAt.set(socket.remotePort, performance.now());
  });
  return s;
}

/**
 * One request on its own connection, bounded. Elapsed time is measured from when the server
 * accepted the connection: a burst larger than the listen backlog has some connections wait in the
 * kernel (a SYN or ACK retransmitted a second later) before the server could have done anything.
 */
function get(base: string, path: string, timeoutMs = 8_000): Promise<Answer> {
  return new Promise((resolve, reject) => {
    let port = 0;
    const req = http.get(`${base}${path}`, { agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        const since = acceptedAt.get(port);
        if (since === undefined) reject(new Error(`connection from port ${port} was never accepted`));
        else resolve({ status: res.statusCode ?? 0, headers: res.headers, body, elapsedMs: performance.now() - since });
      });
    });
    req.on('socket', (socket) => socket.once('connect', () => (port = socket.localPort ?? 0)));
    req.on('timeout', () => req.destroy(new Error(`no answer to ${path} within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

const SIGNER = { azure: { account: 'devstoreaccount1', accountKey: AZURITE_ACCOUNT_KEY, container: 'registry', endpoint: 'http://127.0.0.2:10000/devstoreaccount1' } };

const digest = (i: number) => `sha256:${i.toString(16).padStart(64, '0')}`;

let hung: HungUpstream;
let server: RunningServer;
/** The same, with every limit at its default. */
let defaults: RunningServer;

async function proxyFor(limits?: Record<string, unknown>, timeoutMs = AUTHORIZE_MS): Promise<RunningServer> {
  return recordAccepts(await startServer(
    buildConfig({
      listen: '127.0.0.1:0',
      upstream: hung.url,
      signer: SIGNER,
      timeouts: { authorize: `${timeoutMs}ms`, upstream: `${timeoutMs}ms`, shutdown: '1s' },
      log: { requests: false },
      ...(limits && { limits }),
    }),
    silentLogger,
  ));
}

beforeAll(async () => {
  hung = await startHungUpstream();
});

afterAll(async () => {
  await server?.close();
  await defaults?.close();
  await hung?.close();
});

describe(`limits set low (maxPendingAuthorizations ${MAX_PENDING}, pools of ${PROBE_SOCKETS})`, () => {
  beforeAll(async () => {
    server = await proxyFor({ maxPendingAuthorizations: MAX_PENDING, upstreamSockets: { authorize: PROBE_SOCKETS, passThrough: PASS_SOCKETS } });
  });

  describe('a hung upstream: blob GETs fail fast, with a bounded queue', () => {
    it(`200 blob GETs at once: ${MAX_PENDING} wait (each 504 within the authorize timeout, socket wait included), the rest get 503 + Retry-After at once`, async () => {
      hung.accepted = 0;
      hung.maxOpen = 0;
      const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => get(server.url, `/v2/team/app/blobs/${digest(i)}`)));

      const refused = answers.filter((a) => a.status === 503);
      const timedOut = answers.filter((a) => a.status === 504);
      expect(refused.length + timedOut.length).toBe(200);
      expect(timedOut.length).toBe(MAX_PENDING);
      expect(refused.length).toBe(200 - MAX_PENDING);

      for (const a of refused) {
        // Fast: well before the authorize timeout (on a busy shared machine, still far from it).
        expect(a.elapsedMs).toBeLessThan(AUTHORIZE_MS * 0.7);
        expect(a.headers['retry-after']).toBe('1');
        expect(a.headers.location).toBeUndefined();
        expect(JSON.parse(a.body)).toMatchObject({ errors: [{ code: 'UNAVAILABLE' }] });
      }
      // 50 pending, 16 sockets: 34 of them waited for a socket, and still answered within the timeout.
      for (const a of timedOut) {
        expect(a.elapsedMs).toBeGreaterThanOrEqual(AUTHORIZE_MS * 0.9);
        expect(a.elapsedMs).toBeLessThan(AUTHORIZE_MS * 2.5);
        expect(a.headers.location).toBeUndefined();
        expect(JSON.parse(a.body)).toMatchObject({ errors: [{ code: 'UNAVAILABLE' }] });
      }
      // The probe pool bounds what the upstream sees at once (+2: closes still on their way), and a
      // probe withdrawn from the queue opens nothing (far fewer connections than pending probes).
      expect(hung.maxOpen).toBeLessThanOrEqual(PROBE_SOCKETS + 2);
      expect(hung.accepted).toBeLessThan(MAX_PENDING);
    });

    it('once the burst is over the queue is empty: the next blob GET waits its own timeout again (504, not 503)', async () => {
      const a = await get(server.url, `/v2/team/app/blobs/${digest(1_000)}`);
      expect(a.status).toBe(504);
      expect(a.elapsedMs).toBeLessThan(AUTHORIZE_MS * 2.5);
    });
  });

  describe('a hung upstream: pass-through requests time out from arrival, not from getting a socket', () => {
    it(`40 manifest GETs with a pool of ${PASS_SOCKETS}: every one 504 within the upstream timeout, at most ${PASS_SOCKETS} upstream connections at once`, async () => {
      hung.accepted = 0;
      hung.maxOpen = 0;
      const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => get(server.url, `/v2/team/app/manifests/t${i}`)));
      expect(hung.maxOpen).toBeLessThanOrEqual(PASS_SOCKETS + 2);
      expect(hung.accepted).toBeLessThan(40);
      for (const a of answers) {
        expect(a.status).toBe(504);
        expect(a.elapsedMs).toBeGreaterThanOrEqual(AUTHORIZE_MS * 0.9);
        expect(a.elapsedMs).toBeLessThan(AUTHORIZE_MS * 2.5);
        expect(JSON.parse(a.body)).toMatchObject({ errors: [{ code: 'UNAVAILABLE' }] });
      }
    });

    it('requests queued for a pass-through socket never reach the upstream after their deadline', async () => {
      // Everything above has been answered; wait for the timed-out connections to be gone, then make
      // sure no request left over from the queue opens a connection afterwards.
      await new Promise((r) => setTimeout(r, 300));
      const before = hung.accepted;
      await new Promise((r) => setTimeout(r, 500));
      expect(hung.accepted).toBe(before);
      expect(hung.open).toBeLessThanOrEqual(PROBE_SOCKETS + PASS_SOCKETS);
    });
  });
});

// Longer than above: with several hundred requests in one process (client and server share its
// event loop), answering them all takes a while on a starved machine; the gap to a second wave
// must stay far larger than that.
const DEFAULTS_TIMEOUT_MS = 3_000;

/**
 * Every answer came from the first round of timers: with timeouts counted only once a connection is
 * free, the requests beyond the pool would time out a whole timeout later, in a second wave. The
 * spread is what is asserted (a CPU-starved test machine delays all of them alike), with a bound.
 */
function expectOneWave(answers: Answer[]): void {
  const elapsed = answers.map((a) => a.elapsedMs);
  const first = Math.min(...elapsed);
  const last = Math.max(...elapsed);
  expect(first).toBeGreaterThanOrEqual(DEFAULTS_TIMEOUT_MS * 0.9);
  expect(last - first).toBeLessThan(DEFAULTS_TIMEOUT_MS * 0.6);
  expect(last).toBeLessThan(DEFAULTS_TIMEOUT_MS * 2);
}

describe('a hung upstream with default limits: more requests than the pools hold still time out once', () => {
  beforeAll(async () => {
    defaults = await proxyFor(undefined, DEFAULTS_TIMEOUT_MS);
  });

  // 400 is more than any default pool (and more than the 256 connections one shared pool had):
  // requests waiting for a connection must not start their timeout only once they have one.
  it('400 blob GETs: every one 504 within the authorize timeout', async () => {
    const answers = await Promise.all(Array.from({ length: 400 }, (_, i) => get(defaults.url, `/v2/team/app/blobs/${digest(10_000 + i)}`)));
    expect(answers.filter((a) => a.status !== 504).length).toBe(0);
    expectOneWave(answers);
  });

  it('400 manifest GETs: every one 504 within the upstream timeout', async () => {
    const answers = await Promise.all(Array.from({ length: 400 }, (_, i) => get(defaults.url, `/v2/team/app/manifests/d${i}`)));
    expect(answers.filter((a) => a.status !== 504).length).toBe(0);
    expectOneWave(answers);
  });
});
