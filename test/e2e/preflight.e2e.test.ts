/**
 * Credentials proven at start: `serve` signs a GET for an object that cannot exist and asks the
 * real storage once. Azurite verifies SAS, the S3 gate verifies SigV4: a wrong key is refused
 * there, a right one gets "not found". Storage down: a warning, not ready, retried.
 */
import { Writable } from 'node:stream';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { runCheck } from '../../src/server/check.js';
import { buildConfig } from '../../src/server/config.js';
import { PreflightError, preflightSigner } from '../../src/server/preflight.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.js';
import { AZURITE_ACCOUNT_KEY, startAzurite, type RunningAzurite } from '../support/azurite.js';
import { startCli } from '../support/cli.js';
import { request, waitFor } from '../support/http.js';
import { freePort } from '../support/ports.js';
import { requireBinary } from '../support/binaries.js';
import { startNginx, type RunningNginx } from '../support/nginx.js';
import { startS3Gate, type RunningS3Gate } from '../support/s3-gate.js';

const WRONG_KEY = Buffer.alloc(64, 7).toString('base64');

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { lines, logger: pino({ level: 'info' }, sink) };
}

let upstream: FakeUpstream;
let azurite: RunningAzurite;
let s3: RunningS3Gate;
let work: string;
const servers: RunningServer[] = [];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'rr-preflight-'));
  [upstream, azurite, s3] = await Promise.all([startFakeUpstream(), startAzurite(), startS3Gate()]);
  await azurite.containerClient('registry').createIfNotExists();
}, 40_000);
afterAll(async () => {
  for (const s of servers) await s.close();
  await upstream?.close();
  await azurite?.stop();
  await s3?.stop();
  if (work) await rm(work, { recursive: true, force: true });
}, 20_000);

const azure = (opts: { key?: string; container?: string; endpoint?: string } = {}) => ({
  azure: { account: 'devstoreaccount1', accountKey: opts.key ?? AZURITE_ACCOUNT_KEY, container: opts.container ?? 'registry', endpoint: opts.endpoint ?? azurite.endpoint },
});
const s3Block = (secretAccessKey: string, accessKeyId = s3.accessKeyId) => ({
  s3: { bucket: s3.bucket, region: s3.region, endpoint: s3.endpoint, forcePathStyle: true, accessKeyId, secretAccessKey },
});

async function start(raw: Record<string, unknown>, logger = pino({ level: 'silent' }), retryMs?: number): Promise<RunningServer> {
  const running = await startServer(buildConfig({ listen: '127.0.0.1:0', upstream: upstream.url, log: { requests: false }, ...raw }), logger, retryMs === undefined ? {} : { preflightRetryMs: retryMs });
  servers.push(running);
  return running;
}

describe('preflight against Azurite (SAS verified for real)', () => {
  it('the right key starts: storage answers 404 BlobNotFound for the missing object, /readyz lists it as proven', async () => {
    azurite.requests.length = 0;
    const { lines, logger } = capture();
    const running = await start({ signer: azure() }, logger);
    expect(running.preflight?.results()).toEqual([
      expect.objectContaining({ label: 'signer', kind: 'azure', outcome: 'proven', status: 404, code: 'BlobNotFound', storage: `${azurite.endpoint}/registry` }),
    ]);
    expect(azurite.requests).toHaveLength(1);
    expect(azurite.requests[0]!.url).toMatch(/^\/devstoreaccount1\/registry\/docker\/registry\/v2\/blobs\/sha256\/[0-9a-f]{2}\/[0-9a-f]{64}\/data\?.*sig=/);
    const ready = await request(`${running.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body.toString())).toMatchObject({ ready: true, storage: { signer: 'proven' } });
    const line = lines.find((l) => String(l.msg).startsWith('preflight:'));
    expect(line).toMatchObject({ level: 30, signer: 'signer', kind: 'azure', outcome: 'proven', storage: `${azurite.endpoint}/registry` });
    expect(JSON.stringify(lines)).not.toMatch(/sig=|AccountKey|Eby8vdM02/);
  });

  it('a wrong key fails the start with one line naming the signer and the fix', async () => {
    const error = await start({ signer: azure(), signers: { mirror: azure({ key: WRONG_KEY }) } }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(PreflightError);
    const message = (error as Error).message;
    expect(message.split('\n')).toHaveLength(1);
    expect(message).toMatch(/^signers\.mirror \(azure\): storage at http:\/\/127\.0\.0\.2:\d+\/devstoreaccount1\/registry refused the signed URL: 403 (?:AuthenticationFailed|AuthorizationFailure) .*; check signer\.azure\.accountKey/);
    expect(message).not.toMatch(/sig=/);
  });

  it('a container that does not exist (yet) is a warning naming the container; the start continues', async () => {
    const r = await preflightSigner(buildConfig({ upstream: upstream.url, signer: azure({ container: 'nosuchcontainer' }), preflight: 'off' }).signer, 'signer');
    expect(r).toMatchObject({ outcome: 'inconclusive', status: 404, code: 'ContainerNotFound' });
    expect(r.hint).toMatch(/the container does not exist \(yet\).*check signer\.azure\.container/);
    const { lines, logger } = capture();
    const running = await start({ signer: azure({ container: 'notyet' }) }, logger);
    expect(lines.find((l) => String(l.msg).startsWith('preflight:'))).toMatchObject({ level: 40, outcome: 'inconclusive', code: 'ContainerNotFound' });
    expect((await request(`${running.url}/readyz`)).status).toBe(200);
  });

  it('preflight: warn starts with a wrong key, logs it once, and /readyz stays not ready', async () => {
    const { lines, logger } = capture();
    const running = await start({ signer: azure({ key: WRONG_KEY }), preflight: 'warn' }, logger);
    for (let i = 0; i < 3; i++) {
      const res = await request(`${running.url}/readyz`);
      expect(res.status).toBe(503);
      expect(JSON.parse(res.body.toString())).toMatchObject({ ready: false, upstream: 'reachable', signers: { default: 'healthy' }, storage: { signer: 'refused' } });
    }
    expect(lines.filter((l) => String(l.msg).startsWith('preflight:'))).toEqual([expect.objectContaining({ level: 40, outcome: 'refused', code: expect.stringMatching(/^(AuthenticationFailed|AuthorizationFailure)$/) })]);
    expect(lines.filter((l) => String(l.msg).startsWith('not ready'))).toEqual([expect.objectContaining({ level: 40, msg: 'not ready: signer: storage refused' })]);
  });

  it('preflight: off asks storage nothing', async () => {
    azurite.requests.length = 0;
    const running = await start({ signer: azure({ key: WRONG_KEY }), preflight: 'off' });
    expect(running.preflight).toBeUndefined();
    expect(azurite.requests).toHaveLength(0);
    expect(JSON.parse((await request(`${running.url}/readyz`)).body.toString())).not.toHaveProperty('storage');
  });

  it('storage down at start: a warning, not ready, start continues; ready once storage answers (logged once per change)', async () => {
    await azurite.stopEmulator();
    const { lines, logger } = capture();
    let running: RunningServer;
    try {
      running = await start({ signer: azure() }, logger, 200);
      expect(running.preflight?.results()[0]).toMatchObject({ outcome: 'unreachable', status: 502 });
      for (let i = 0; i < 4; i++) {
        const res = await request(`${running.url}/readyz`);
        expect(res.status).toBe(503);
        expect(JSON.parse(res.body.toString())).toMatchObject({ ready: false, storage: { signer: 'unreachable' } });
      }
      expect(lines.filter((l) => String(l.msg).startsWith('not ready'))).toHaveLength(1);
      expect(lines.find((l) => String(l.msg).startsWith('preflight:'))).toMatchObject({ level: 40, outcome: 'unreachable' });
    } finally {
      await azurite.startEmulator();
    }
    await waitFor(async () => (await request(`${running.url}/readyz`)).status === 200, { timeoutMs: 10_000, label: '/readyz 200 after storage came back' });
    for (let i = 0; i < 3; i++) expect((await request(`${running.url}/readyz`)).status).toBe(200);
    expect(lines.filter((l) => String(l.msg).startsWith('not ready'))).toHaveLength(1);
    expect(lines.filter((l) => l.msg === 'ready again')).toHaveLength(1);
    expect(lines.filter((l) => String(l.msg).startsWith('preflight:')).map((l) => l.outcome)).toEqual(['unreachable', 'proven']);
  }, 30_000);

  it('nothing listening at the endpoint: unreachable, start continues', async () => {
    const port = await freePort('127.0.0.2');
    const running = await start({ signer: azure({ endpoint: `http://127.0.0.2:${port}/devstoreaccount1` }) });
    expect(running.preflight?.results()[0]).toMatchObject({ outcome: 'unreachable' });
    expect(running.preflight?.results()[0]!.detail).toMatch(/ECONNREFUSED/);
    expect((await request(`${running.url}/readyz`)).status).toBe(503);
  });

  it('serve (the real CLI) exits 1 with the one line on stderr', async () => {
    const port = await freePort();
    const file = join(work, 'wrong-key.yaml');
    await writeFile(
      file,
      `listen: 127.0.0.1:${port}\nupstream: ${upstream.url}\nsigner:\n  azure:\n    account: devstoreaccount1\n    accountKey: \${AZURE_STORAGE_KEY}\n    container: registry\n    endpoint: ${azurite.endpoint}\nlog:\n  format: json\n`,
    );
    const cli = startCli(['serve', '--config', file], { PATH: process.env.PATH, AZURE_STORAGE_KEY: WRONG_KEY });
    expect(await cli.exited).toBe(1);
    expect(cli.output()).toMatch(/registry-redirect: signer \(azure\): storage at .* refused the signed URL: 403 (?:AuthenticationFailed|AuthorizationFailure) .*check signer\.azure\.accountKey/);
    expect(cli.output()).not.toContain('listening');
  }, 20_000);

  it('plain check does the same: ok for the right key, FAIL for a wrong one', async () => {
    const file = join(work, 'check.yaml');
    await writeFile(file, `upstream: ${upstream.url}\nsigner:\n  azure:\n    account: devstoreaccount1\n    accountKey: \${AZURE_STORAGE_KEY}\n    container: registry\n    endpoint: ${azurite.endpoint}\n`);
    const run = async (key: string) => {
      const lines: string[] = [];
      const code = await runCheck({ config: file }, (l) => void lines.push(l), { AZURE_STORAGE_KEY: key });
      return { code, text: lines.join('\n') };
    };
    const good = await run(AZURITE_ACCOUNT_KEY);
    expect(good.text).toMatch(/^ok {4}signer \(azure\): signed GET .*; storage at .* accepted the signature \(a missing object answered 404 BlobNotFound/);
    expect(good.code).toBe(0);
    const bad = await run(WRONG_KEY);
    expect(bad.text).toMatch(/^FAIL {2}signer \(azure\): storage at .* refused the signed URL: 403 (?:AuthenticationFailed|AuthorizationFailure)/);
    expect(bad.code).toBe(1);
    const malformed = await run('not-base64!');
    expect(malformed.text).toMatch(/^FAIL {2}config .*: signer\.azure\.accountKey: not a base64 account key/);
    expect(malformed.code).toBe(1);
  });
});

describe('preflight on reload', () => {
  it('a reload whose key storage refuses is rejected (the old configuration keeps serving); a good one replaces the results', async () => {
    const file = join(work, 'reload.yaml');
    const yaml = (key: string, extra = '') =>
      `listen: 127.0.0.1:0\nupstream: ${upstream.url}\nreload:\n  watch: false\nlog:\n  requests: false\nsigner:\n  azure:\n    account: devstoreaccount1\n    accountKey: "${key}"\n    container: registry\n    endpoint: ${azurite.endpoint}\n${extra}`;
    await writeFile(file, yaml(AZURITE_ACCOUNT_KEY));
    const running = await startServer(buildConfig(parse(yaml(AZURITE_ACCOUNT_KEY))), pino({ level: 'silent' }), { configPath: file });
    servers.push(running);
    await writeFile(file, yaml(WRONG_KEY));
    const rejected = await running.reload('test');
    expect(rejected).toMatchObject({ ok: false, error: expect.stringMatching(/^signer \(azure\): storage at .* refused the signed URL: 403/) });
    expect((await request(`${running.url}/readyz`)).status).toBe(200);
    await writeFile(file, yaml(AZURITE_ACCOUNT_KEY, `signers:\n  mirror: { azure: { account: devstoreaccount1, accountKey: "${AZURITE_ACCOUNT_KEY}", container: registry, endpoint: ${azurite.endpoint} } }\n`));
    expect(await running.reload('test')).toMatchObject({ ok: true });
    const ready = await request(`${running.url}/readyz`);
    expect(JSON.parse(ready.body.toString())).toMatchObject({ ready: true, storage: { signer: 'proven', 'signers.mirror': 'proven' } });
  });
});

describe('preflight against the SigV4-verifying S3 gate', () => {
  it('the right secret starts: 404 NoSuchKey proves it', async () => {
    const running = await start({ signer: s3Block(s3.secretAccessKey) });
    expect(running.preflight?.results()[0]).toMatchObject({ kind: 's3', outcome: 'proven', status: 404, code: 'NoSuchKey', storage: `${s3.endpoint}/${s3.bucket}` });
    const verdict = s3.requests.at(-1)!.verdict;
    expect(verdict).toMatchObject({ ok: true, code: 'OK' });
  });

  it('a wrong secret fails the start: SignatureDoesNotMatch, naming secretAccessKey', async () => {
    await expect(start({ signer: s3Block('not-the-secret') })).rejects.toThrow(
      /^signer \(s3\): storage at http:\/\/127\.0\.0\.2:\d+\/registry refused the signed URL: 403 SignatureDoesNotMatch .*; check signer\.s3\.secretAccessKey/,
    );
  });

  it('an unknown access key id fails the start: InvalidAccessKeyId', async () => {
    await expect(start({ signer: s3Block('whatever', 'AKIANOSUCHKEY') })).rejects.toThrow(/^signer \(s3\): .*403 InvalidAccessKeyId .*check signer\.s3\.accessKeyId/);
  });
});

describe.skipIf(!requireBinary('nginx'))('preflight against a CDN token checker (nginx secure_link, the hmac signer)', () => {
  const KEY = 'cdn-secret-for-the-preflight';
  let nginx: RunningNginx;
  beforeAll(async () => {
    const root = await mkdtemp(join(work, 'cdn-root-'));
    nginx = await startNginx({
      host: '127.0.0.3',
      server: `
    root ${root};
    location / {
      secure_link $arg_md5,$arg_expires;
      secure_link_md5 "$secure_link_expires$uri ${KEY}";
      if ($secure_link = "") { return 403; }
      if ($secure_link = "0") { return 410; }
    }`,
    });
  });
  afterAll(() => nginx?.stop());
  const hmac = (key: string) => ({ hmac: { preset: 'nginx-secure-link', baseUrl: nginx.url, key } });

  it('the right key: nginx checks the token, then answers 404 for the missing file: proven', async () => {
    const running = await start({ signer: hmac(KEY) });
    expect(running.preflight?.results()[0]).toMatchObject({ kind: 'hmac', outcome: 'proven', status: 404, storage: nginx.url });
  });

  it('a wrong key: a bare 403, which a CDN also sends for hidden objects: a warning naming the key, the start continues', async () => {
    const { lines, logger } = capture();
    const running = await start({ signer: hmac('not-the-key') }, logger);
    expect(running.preflight?.results()[0]).toMatchObject({ kind: 'hmac', outcome: 'inconclusive', status: 403 });
    const line = lines.find((l) => String(l.msg).startsWith('preflight:'));
    expect(line).toMatchObject({ level: 40, outcome: 'inconclusive' });
    expect(String(line!.msg)).toMatch(/the CDN refused the token or hides missing objects behind 403: check the key and the preset; prove it with check --repository R --digest D/);
    expect((await request(`${running.url}/readyz`)).status).toBe(200);
  });
});
