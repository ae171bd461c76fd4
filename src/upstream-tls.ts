import type { AgentOptions } from 'node:https';
import { RegistryRedirectError } from './errors.js';
import type { UpstreamTlsOptions } from './types.js';

/** The keys of {@link UpstreamTlsOptions}: TLS settings an `https.Agent` takes, nothing else. */
export const UPSTREAM_TLS_KEYS = ['ca', 'cert', 'key', 'passphrase', 'pfx', 'rejectUnauthorized', 'servername', 'minVersion', 'maxVersion', 'ciphers', 'checkServerIdentity'] as const;

/** Checks `upstreamTLS` at construction: only TLS keys, only for an https upstream. */
export function validateUpstreamTls(tls: unknown, upstream: URL | undefined): asserts tls is UpstreamTlsOptions | undefined {
  if (tls === undefined) return;
  if (tls === null || typeof tls !== 'object' || Array.isArray(tls)) {
    throw new RegistryRedirectError('CONFIG_INVALID', 'registryRedirect: upstreamTLS must be an object such as { ca: readFileSync("upstream-ca.pem") }');
  }
  const known: readonly string[] = UPSTREAM_TLS_KEYS;
  for (const key of Object.keys(tls)) {
    if (!known.includes(key)) {
      throw new RegistryRedirectError('CONFIG_INVALID', `registryRedirect: unknown upstreamTLS.${key}; known: ${known.join(', ')}`);
    }
  }
  if (!upstream) {
    throw new RegistryRedirectError('CONFIG_INVALID', 'registryRedirect: `upstreamTLS` needs `upstream` (proxy mode): it says how to trust the upstream registry');
  }
  if (upstream.protocol !== 'https:') {
    throw new RegistryRedirectError('CONFIG_INVALID', `registryRedirect: upstreamTLS is set but upstream ${upstream.origin} is plain http; write an https:// upstream or drop upstreamTLS`);
  }
  const r = (tls as UpstreamTlsOptions).rejectUnauthorized;
  if (r !== undefined && typeof r !== 'boolean') {
    throw new RegistryRedirectError('CONFIG_INVALID', `registryRedirect: upstreamTLS.rejectUnauthorized must be true or false, got ${JSON.stringify(r)}`);
  }
}

/**
 * The TLS part of the options of every agent that reaches the upstream (the authorizing HEAD's,
 * pass-through's and uploads' pools): the caller's trust (a private CA, a client certificate for
 * mTLS) and nothing about pooling. `rejectUnauthorized` is `true` unless explicitly `false`, so a
 * spread of unrelated options can never turn verification off by accident.
 */
export function upstreamAgentOptions(tls: UpstreamTlsOptions | undefined): AgentOptions {
  if (!tls) return {};
  const out: AgentOptions = {};
  for (const key of UPSTREAM_TLS_KEYS) {
    if (tls[key] !== undefined) (out as Record<string, unknown>)[key] = tls[key];
  }
  out.rejectUnauthorized = tls.rejectUnauthorized !== false;
  return out;
}

// OpenSSL's verification results (as Node names them) and Node's own TLS errors: what a private
// CA, an expired or misnamed certificate, or https spoken to a plain-http port look like.
const TLS_CODE = /^(ERR_TLS_|ERR_SSL_|ERR_OSSL_|CERT_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|HOSTNAME_MISMATCH$|INVALID_CA$|INVALID_PURPOSE$|PATH_LENGTH_EXCEEDED$|EPROTO$)/;
const UNTRUSTED = /^(UNABLE_TO_GET_ISSUER_CERT|UNABLE_TO_GET_ISSUER_CERT_LOCALLY|UNABLE_TO_VERIFY_LEAF_SIGNATURE|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|CERT_UNTRUSTED)$/;

function tlsHint(code: string): string {
  if (UNTRUSTED.test(code)) return 'the upstream\'s certificate is not signed by a trusted CA: set upstreamTLS.ca to the CA that signed it (library: upstreamTLS: { ca }), or NODE_EXTRA_CA_CERTS';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID' || code === 'HOSTNAME_MISMATCH') return 'the upstream\'s certificate does not name the host in `upstream`: write the name it was issued for';
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') return 'the upstream\'s certificate is outside its validity period: renew it (or check the clocks)';
  return 'the TLS handshake with the upstream failed: check that `upstream` is an https port and upstreamTLS (CA, client certificate) matches the upstream\'s TLS settings';
}

/**
 * The `detail` of a 502 for an upstream that could not be reached. A TLS failure names its code
 * and the fix, so "certificate signed by a private CA" is visible to whoever pulls, not only in
 * the proxy's log. Nothing secret is in it: the upstream's certificate is public.
 */
export function upstreamFailureDetail(err: unknown): { reason: string; tls?: string; hint?: string } {
  // The probe wraps the socket error in RegistryRedirectError; pass-through gets it bare.
  const inner = (err instanceof RegistryRedirectError ? err.cause : err) as NodeJS.ErrnoException | undefined;
  const reason = inner?.code || 'error';
  if (!TLS_CODE.test(reason)) return { reason };
  return { reason, tls: inner?.message ?? reason, hint: tlsHint(reason) };
}
