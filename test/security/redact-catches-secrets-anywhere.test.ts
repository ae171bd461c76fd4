/**
 * Threat: a signature or credential that an SDK or a custom signer quotes in an error message
 * reaches the logs because it does not sit in a URL query (`?sig=` / `&sig=`): `boom sig=Secret`,
 * `x-amz-signature=abc` at the start of the text, after `;` or `,`, in quotes, percent-encoded.
 * Invariant: every secret-carrying parameter is redacted wherever it stands, in `redact()` and in
 * the `signer failed` line a real middleware writes, while ordinary words that merely end in a
 * parameter name (`design=`, `xsig=`) are left alone.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redact } from '../../src/log.js';
import type { Signer } from '../../src/types.js';
import { BASIC, digestOf, startFakeUpstream } from '../helpers/fake-upstream.js';
import type { FakeUpstream } from '../helpers/fake-upstream.js';
import { recordingLogger, startProxy } from '../helpers/proxy-server.js';
import type { RunningProxy } from '../helpers/proxy-server.js';
import { request } from '../support/http.js';

const SECRET = 'Secret0123456789abcdef';

const positions: Array<[string, string]> = [
  ['start of the text', `sig=${SECRET}`],
  ['after a space', `boom sig=${SECRET}`],
  ['after a tab', `boom\tsig=${SECRET}`],
  ['after a newline', `boom\nsignature=${SECRET}`],
  ['after ;', `se=2030;sig=${SECRET};sp=r`],
  ['after ,', `a=1,x-amz-signature=${SECRET},b=2`],
  ['after ( ', `failed (X-Amz-Signature=${SECRET})`],
  ['in double quotes', `"x-amz-signature=${SECRET}"`],
  ['in single quotes', `'X-Goog-Signature=${SECRET}'`],
  ['S3 credential at the start', `X-Amz-Credential=${SECRET}/20300101/us-east-1/s3/aws4_request`],
  ['session token after a space', `with X-Amz-Security-Token=${SECRET}`],
  ['CloudFront Signature after a space', `url Signature=${SECRET}&Key-Pair-Id=K2`],
  ['CloudFront Policy after a space', `Policy=${SECRET}`],
  ['CDN token after a space', `token=${SECRET}`],
  ['CDN verify after a space', `verify=1700000000-${SECRET}`],
  ['nginx secure_link md5 after a space', `md5=${SECRET}&expires=1`],
  ['percent-encoded in a quoted URL', `url=https%3A%2F%2Fa%2Fb%3Fsv%3D1%26sig%3D${SECRET}`],
  ['after =, as a quoted URL value', `Location=https://a/b?sv=1&sig=${SECRET}`],
  ['upper case', `BOOM SIG=${SECRET}`],
];

describe('redact() catches secret parameters anywhere in a text', () => {
  it.each(positions)('%s', (_where, text) => {
    const out = redact(text);
    expect(out).not.toContain(SECRET);
    expect(out).not.toContain(SECRET.slice(0, 10));
    expect(out).toContain('REDACTED');
  });

  it.each([
    ['a longer name ending in a parameter name', 'design=blue xsig=1 mysignature=2 subtoken=3'],
    ['a parameter name without a value sign', 'the signature is invalid; token expired'],
  ])('leaves %s alone', (_what, text) => {
    expect(redact(text)).toBe(text);
  });
});

describe('a signer error quoting a signature is logged redacted (real middleware)', () => {
  let upstream: FakeUpstream;
  const proxies: RunningProxy[] = [];
  const data = Buffer.from('layer bytes');
  const digest = digestOf(data);

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    upstream.blobs.set('team/app', new Map([[digest, data]]));
  });
  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await upstream?.close();
  });

  it.each(positions)('%s', async (_where, message) => {
    const logger = recordingLogger();
    const signer: Signer = {
      name: 'custom',
      sign: () => {
        throw new Error(message);
      },
    };
    const proxy = await startProxy({ upstream: upstream.url, signer, logger });
    proxies.push(proxy);
    const res = await request(`${proxy.url}/v2/team/app/blobs/${digest}`, { headers: { authorization: BASIC } });
    expect(res.status).toBe(200); // served from upstream instead (onSignerError: proxy)
    expect(logger.text()).toContain('signer failed');
    expect(logger.text()).not.toContain(SECRET.slice(0, 10));
  });
});
