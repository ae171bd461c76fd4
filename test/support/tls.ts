/**
 * A throwaway PKI for TLS tests, made by the real `openssl` binary: a CA, and leaf certificates
 * it signs for server and client use. Everything lives in a temp dir (`remove()` deletes it).
 * Keys are P-256 (fast to make); leaves carry `subjectAltName` (Go clients ignore the CN) and
 * both server and client `extendedKeyUsage`.
 *
 * @module
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A certificate and its key, as PEM files. */
export interface IssuedCert {
  cert: string;
  key: string;
}

/** A test CA. */
export interface TestCa {
  dir: string;
  /** PEM certificate of the CA. */
  cert: string;
  key: string;
  /**
   * Issue a leaf signed by this CA, named `name` in the dir. `san` defaults to
   * `IP:127.0.0.1, DNS:localhost`.
   */
  issue(name: string, opts?: { san?: string[]; days?: number }): IssuedCert;
  remove(): void;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'], timeout: 20_000 });
}

/** A self-signed server certificate (no CA), for `DEPTH_ZERO_SELF_SIGNED_CERT`. */
export function makeSelfSigned(dir: string, name = 'self-signed'): IssuedCert {
  const out = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  openssl(
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', out.key, '-out', out.cert, '-days', '2', '-subj', `/CN=${name}`,
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-addext', 'keyUsage=critical,digitalSignature', '-addext', 'extendedKeyUsage=serverAuth'],
    dir,
  );
  return out;
}

/** Make a CA named `name` (its CN) in a fresh temp dir, or in `dir`. */
export function makeTestCa(name = 'registry-redirect test CA', dir = mkdtempSync(join(tmpdir(), 'rr-pki-'))): TestCa {
  const file = (base: string) => join(dir, base);
  const slug = name.replace(/[^A-Za-z0-9]+/g, '-').toLowerCase();
  const cert = file(`${slug}.crt`);
  const key = file(`${slug}.key`);
  openssl(
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '3', '-subj', `/CN=${name}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
    dir,
  );
  let serial = 1;
  return {
    dir,
    cert,
    key,
    issue(leaf, opts = {}) {
      const out: IssuedCert = { cert: file(`${leaf}.crt`), key: file(`${leaf}.key`) };
      const csr = file(`${leaf}.csr`);
      const ext = file(`${leaf}.ext`);
      writeFileSync(
        ext,
        `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=${(opts.san ?? ['IP:127.0.0.1', 'DNS:localhost']).join(',')}\n`,
      );
      openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', out.key, '-out', csr, '-subj', `/CN=${leaf}`], dir);
      openssl(['x509', '-req', '-in', csr, '-CA', cert, '-CAkey', key, '-set_serial', String(serial++ + Date.now()), '-out', out.cert, '-days', String(opts.days ?? 2), '-extfile', ext], dir);
      return out;
    },
    remove() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
