import { describe, expect, it } from 'vitest';
import { errorForLog, redact, urlForLog } from '../../src/log.js';

describe('redact (credentials and signatures never logged)', () => {
  it.each([
    ['https://a.blob.core.windows.net/c/k?sv=2024&sig=abc%2Fdef%3D&se=1', 'sig=abc'],
    ['https://s3/b/k?X-Amz-Credential=AKIA/x&X-Amz-Signature=0123456789abcdef', '0123456789abcdef'],
    ['https://storage.googleapis.com/b/k?X-Goog-Signature=deadbeefdeadbeef', 'deadbeefdeadbeef'],
    ['https://cdn/k?Expires=1&Signature=AbCdEf0123456789~&Key-Pair-Id=K2', 'AbCdEf0123456789'],
    ['DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0a2V5MTIz==;', 'c2VjcmV0a2V5MTIz'],
    ['failed with Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig', 'eyJhbGciOiJSUzI1NiJ9'],
    ['authorization: Basic dXNlcjpwYXNzd29yZA==', 'dXNlcjpwYXNzd29yZA'],
  ])('removes the secret from %s', (text, secret) => {
    const out = redact(text);
    expect(out).not.toContain(secret);
    expect(out).toContain('REDACTED');
  });

  it('urlForLog drops the query', () => {
    expect(urlForLog('https://h/p?sig=x')).toBe('https://h/p?REDACTED');
    expect(urlForLog('https://h/p')).toBe('https://h/p');
  });

  it('errorForLog keeps code and redacted message only', () => {
    const err = Object.assign(new Error('GET https://h/p?sig=SECRETSIG failed'), { code: 'E1', request: { headers: { authorization: 'x' } } });
    expect(errorForLog(err)).toEqual({ code: 'E1', message: 'GET https://h/p?sig=REDACTED failed' });
  });
});
